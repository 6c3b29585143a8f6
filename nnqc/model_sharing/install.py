"""Install an exported nnQC model zip into nnUNet_results, checked before anything is written.

The archive must hold one model, laid out as nnU-Net lays out results (DatasetXXX_Name/TRAINER__PLANS__CONFIG/),
with no absolute paths, no '..', no links or other special files, no duplicate names, and exactly the files
its nnqc_model.json lists (plans.json, dataset.json, each listed fold's checkpoints, ...). Files are extracted
into a hidden folder beside the target, their SHA-256 compared with the metadata, and the folder is then
renamed into place: a failed or interrupted install never leaves a half-installed model under the model's name.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass

from batchgenerators.utilities.file_and_folder_operations import isdir, join

from nnqc.model_sharing.model_metadata import CALIBRATION_FILE, METADATA_FILE, fold_folder
from nnqc.paths import require

_DATASET_FOLDER = re.compile(r"Dataset\d{3}_[^/\\]+")


class ModelArchiveError(ValueError):
    """An archive that is not an installable nnQC model; the message names the archive and what is wrong."""


@dataclass
class ModelArchive:
    """A checked archive: where its model goes and which members to extract."""
    zip_file: str
    dataset: str
    model: str
    metadata: dict
    members: dict[str, zipfile.ZipInfo]  # path relative to the model folder -> member


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if "\\" in name:
        return "a backslash in its path"
    parts = name.rstrip("/").split("/")
    if any(part in ("", ".", "..") for part in parts):
        return "a '..', '.' or empty path component"
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no file type recorded (DOS-made archives), a plain file
    if kind == stat.S_IFLNK:
        return "a symbolic link"
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        return "a special file type (not a regular file)"
    return None


def check_archive(zip_file: str) -> ModelArchive:
    """Everything about the archive that can be checked without extracting it; ModelArchiveError otherwise."""
    if not os.path.isfile(zip_file):
        raise FileNotFoundError(f"model archive {zip_file} does not exist")
    try:
        with zipfile.ZipFile(zip_file) as archive:
            infos = archive.infolist()
            return _check_members(zip_file, archive, infos)
    except zipfile.BadZipFile as e:
        raise ModelArchiveError(f"{zip_file} is not a readable zip file: {e}") from e


def _check_members(zip_file: str, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo]) -> ModelArchive:
    def refuse(why: str) -> ModelArchiveError:
        return ModelArchiveError(f"{zip_file} is not an installable nnQC model: {why}")

    seen = set()
    for info in infos:
        problem = _member_problem(info)
        if problem is not None:
            raise refuse(f"member {info.filename!r} has {problem}")
        if info.filename.rstrip("/") in seen:
            raise refuse(f"member {info.filename!r} occurs twice")
        seen.add(info.filename.rstrip("/"))
    files = [info for info in infos if not info.is_dir()]
    if not files:
        raise refuse("the archive is empty")
    tops = {tuple(info.filename.split("/")[:2]) for info in files if info.filename.count("/") >= 2}
    if len(tops) != 1:
        raise refuse("expected exactly one model folder DatasetXXX_Name/TRAINER__PLANS__CONFIGURATION/, found "
                     + (", ".join(sorted("/".join(t) for t in tops)) or "none"))
    dataset, model = tops.pop()
    if not _DATASET_FOLDER.fullmatch(dataset):
        raise refuse(f"{dataset!r} is not an nnU-Net dataset folder name (DatasetXXX_Name)")
    identity = model.split("__")
    if len(identity) != 3 or not all(identity):
        raise refuse(f"{model!r} is not a model folder name (TRAINER__PLANS__CONFIGURATION)")
    prefix = f"{dataset}/{model}/"
    for info in infos:
        if not (info.filename.startswith(prefix) or prefix.startswith(info.filename.rstrip("/") + "/")):
            raise refuse(f"member {info.filename!r} lies outside the model folder {prefix}")
    members = {info.filename[len(prefix):]: info for info in files}
    if METADATA_FILE not in members:
        raise refuse(f"no {prefix}{METADATA_FILE} (was it written by nnQC_export_model_to_zip?)")
    try:
        metadata = json.loads(archive.read(members[METADATA_FILE]))
        listed, folds, checkpoints = dict(metadata["files"]), list(metadata["folds"]), list(metadata["checkpoints"])
    except (ValueError, KeyError, TypeError) as e:
        raise refuse(f"{METADATA_FILE} is not valid nnQC model metadata ({type(e).__name__}: {e})") from e
    trainer, plans, configuration = identity
    stated = (metadata.get("dataset"), metadata.get("trainer"), metadata.get("plans"), metadata.get("configuration"))
    if stated != (dataset, trainer, plans, configuration):
        raise refuse(f"its folder {prefix} does not match its metadata (dataset {stated[0]}, trainer {stated[1]}, "
                     f"plans {stated[2]}, configuration {stated[3]})")
    if not folds or not checkpoints:
        raise refuse(f"{METADATA_FILE} lists no folds or no checkpoints")
    required = ["plans.json", "dataset.json", *[f"{fold_folder(f)}/{c}" for f in folds for c in checkpoints]]
    if metadata.get("calibration"):
        required.append(CALIBRATION_FILE)
    for name in required:
        if name not in listed:
            raise refuse(f"{METADATA_FILE} does not list {name}, which the model needs")
    missing = [name for name in listed if name not in members]
    if missing:
        raise refuse(f"missing {', '.join(prefix + m for m in missing)} (listed in its {METADATA_FILE})")
    unexpected = [name for name in members if name != METADATA_FILE and name not in listed]
    if unexpected:
        raise refuse(f"unexpected {', '.join(prefix + u for u in unexpected)} (not listed in its {METADATA_FILE})")
    return ModelArchive(zip_file, dataset, model, metadata, members)


def _extract(archive_path: str, checked: ModelArchive, destination: str) -> None:
    """Write every member below `destination`, comparing each file's SHA-256 with the metadata."""
    with zipfile.ZipFile(archive_path) as archive:
        for name, info in checked.members.items():
            target = join(destination, *name.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            digest = hashlib.sha256()
            try:
                with archive.open(info) as source, open(target, "xb") as out:
                    for chunk in iter(lambda s=source: s.read(1 << 20), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except zipfile.BadZipFile as e:
                raise ModelArchiveError(f"{archive_path}: {info.filename} is corrupt ({e})") from e
            expected = checked.metadata["files"].get(name)
            if expected is not None and digest.hexdigest() != expected:
                raise ModelArchiveError(f"{archive_path}: {info.filename} does not match the SHA-256 its "
                                        f"{METADATA_FILE} lists (corrupt or altered)")


def install_model_from_zip(zip_file: str, results_folder: str | None = None, overwrite: bool = False) -> str:
    """Install the model into RESULTS (default nnUNet_results) and return its model folder.

    An installed model of the same dataset, trainer, plans and configuration is replaced only with
    overwrite=True, and then only once the new one is complete.
    """
    results_folder = results_folder or require("nnUNet_results")
    checked = check_archive(zip_file)
    dataset_folder = join(results_folder, checked.dataset)
    target = join(dataset_folder, checked.model)
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"a model is already installed at {target}; pass --overwrite to replace it")
    needed = sum(info.file_size for info in checked.members.values())
    os.makedirs(results_folder, exist_ok=True)
    free = shutil.disk_usage(results_folder).free
    if needed > free:
        raise OSError(f"installing {zip_file} needs {needed / 1e9:.2f} GB, {results_folder} has "
                      f"{free / 1e9:.2f} GB free")
    created_dataset_folder = not isdir(dataset_folder)
    os.makedirs(dataset_folder, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{checked.model}.installing-", dir=dataset_folder)
    try:
        _extract(zip_file, checked, staging)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's folder is private; an installed model is not
        if os.path.lexists(target):
            previous = tempfile.mkdtemp(prefix=f".{checked.model}.replaced-", dir=dataset_folder)
            os.rename(target, join(previous, checked.model))
            try:
                os.rename(staging, target)
            except OSError:
                os.rename(join(previous, checked.model), target)
                raise
            shutil.rmtree(previous)
        else:
            os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_dataset_folder and isdir(dataset_folder) and not os.listdir(dataset_folder):
            os.rmdir(dataset_folder)
        raise
    return target


def other_dataset_names(results_folder: str, dataset: str) -> list[str]:
    """Other folders of RESULTS with the dataset's id (which nnU-Net's -d ID look-up would find ambiguous)."""
    prefix = dataset[:len("DatasetXXX_")]
    return sorted(d for d in os.listdir(results_folder) if d.startswith(prefix) and d != dataset
                  and isdir(join(results_folder, d)))
