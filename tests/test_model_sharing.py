"""Sharing trained models: export to zip, checked install, nnQC_predict -m, the input folder check."""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import warnings
import zipfile

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
import torch
from batchgenerators.utilities.file_and_folder_operations import join, load_json
from conftest import QC_ID, TRAINER

from nnqc.calibration.calibration_file import OUT_OF_FOLD_PREDICTIONS, CorruptCalibrationData, build_calibration
from nnqc.inference.input_folder import InputFolderError, check_input_folders
from nnqc.inference.predictor import nnQCPredictor
from nnqc.model_sharing.export import export_model_folder_to_zip
from nnqc.model_sharing.install import ModelArchiveError, install_model_from_zip
from nnqc.model_sharing.model_metadata import METADATA_FILE, describe_model, load_model_metadata
from nnqc.run.predict import model_folder

DATASET, MODEL = "Dataset042_Tiny", "nnQCTrainer__nnQCPlans__3d_fullres"
PREFIX = f"{DATASET}/{MODEL}/"
BRATS_CHANNELS = {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
DATASET_JSON = {"channel_names": BRATS_CHANNELS, "file_ending": ".nii.gz",
                "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3},
                "regions_class_order": [1, 2, 3], "nsd_tolerance_mm": 1.0}


def sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def listing(folder) -> list[str]:
    return sorted(os.path.relpath(join(root, f), folder) for root, dirs, files in os.walk(folder) for f in files + dirs)


def write(path, content: bytes | str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)


@pytest.fixture
def fake_model(tmp_path) -> str:
    """A model folder as training leaves it; the checkpoints are stand-in bytes (export and install never load
    them), so that these tests need no training."""
    folder = str(tmp_path / "results" / DATASET / MODEL)
    plans = {"dataset_name": DATASET, "plans_name": "nnQCPlans",
             "configurations": {"3d_fullres": {"patch_size": [32, 40, 48]}}}
    write(join(folder, "plans.json"), json.dumps(plans))
    write(join(folder, "dataset.json"), json.dumps(DATASET_JSON))
    write(join(folder, "dataset_fingerprint.json"), "{}")
    for fold, r in ((0, 0.91), (1, 0.87)):
        for checkpoint in ("checkpoint_final.pth", "checkpoint_best.pth", "checkpoint_latest.pth"):
            write(join(folder, f"fold_{fold}", checkpoint), os.urandom(2000))
        write(join(folder, f"fold_{fold}", "progress.png"), b"png")
        write(join(folder, f"fold_{fold}", "debug.json"), "{}")
        write(join(folder, f"fold_{fold}", "training_range.json"), '{"labels": [1, 2, 3]}')
        write(join(folder, f"fold_{fold}", "training_log_2026_1_1_00_00_00.txt"), "log")
        write(join(folder, f"fold_{fold}", "validation", "qc_predictions.csv"), "sample,dsc\n")
        summary = {"fold": fold, "num_samples": 40, "trainer": "nnQCTrainer", "dsc": {"r": r, "mae": 0.05},
                   "nsd": {"r": r - 0.1, "mae": 0.07}, "dsc_sem": {"mean": 0.6}}
        write(join(folder, f"fold_{fold}", "validation", "summary.json"), json.dumps(summary))
    write(join(folder, "fold_2", "checkpoint_latest.pth"), b"an unfinished fold")
    return folder


def write_out_of_fold(model: str, fold: int, n: int = 40) -> str:
    """Valid out-of-fold predictions of one fold (what its final validation writes)."""
    rng = np.random.default_rng(fold)
    predicted = rng.uniform(0.1, 0.9, n)
    true = np.clip(predicted + rng.normal(0, 0.05, n), 0, 1)
    table = pd.DataFrame({"sample": [f"f{fold}_{i}" for i in range(n)], "subject": [f"s{fold}_{i // 4}" for i in
                                                                                    range(n)],
                          "dsc": true, "nsd": true, "predicted_dsc": predicted, "predicted_nsd": predicted})
    path = join(model, f"fold_{fold}", OUT_OF_FOLD_PREDICTIONS)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    table.to_csv(path, index=False)
    return path


def calibration_of_folds(tmp_path, folds) -> str:
    """calibration.json text as load_or_build_calibration writes it, built from synthetic folds elsewhere."""
    elsewhere = str(tmp_path / "calibration_source")
    for fold in folds:
        write_out_of_fold(elsewhere, fold)
    return json.dumps(build_calibration(elsewhere, folds))


def test_export_holds_what_prediction_needs_and_nothing_else(fake_model, tmp_path, capsys):
    out = str(tmp_path / "model.zip")
    metadata = export_model_folder_to_zip(fake_model, out)
    # a model without out-of-fold predictions is exported as it is, and the export says so
    assert "calibration: none: no out-of-fold predictions" in capsys.readouterr().out
    with zipfile.ZipFile(out) as archive:
        names = sorted(archive.namelist())
        stored = json.loads(archive.read(PREFIX + METADATA_FILE))
        for name in names:
            if name != PREFIX + METADATA_FILE:  # every file is listed with its checksum
                assert hashlib.sha256(archive.read(name)).hexdigest() == stored["files"][name[len(PREFIX):]]
    # fold_2 has no checkpoint_final.pth: not a trained fold
    assert names == sorted(PREFIX + n for n in ("plans.json", "dataset.json", METADATA_FILE,
                                                "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth",
                                                "fold_0/training_range.json", "fold_1/training_range.json"))
    assert stored == json.loads(json.dumps(metadata))
    assert (stored["dataset"], stored["trainer"], stored["plans"], stored["configuration"]) == (
        DATASET, "nnQCTrainer", "nnQCPlans", "3d_fullres")
    assert stored["folds"] == [0, 1] and stored["checkpoints"] == ["checkpoint_final.pth"]
    assert stored["channel_names"] == BRATS_CHANNELS and stored["file_ending"] == ".nii.gz"
    assert stored["regions"] == {"whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]}
    assert stored["network_input_shape"] == [32, 40, 48] and stored["calibration"] is None
    assert stored["validation"]["0"]["dsc"]["r"] == 0.91
    assert stored["validation"]["1"]["nsd"]["r"] == pytest.approx(0.77)
    assert stored["nnqc_version"]

    # the calibration when there is one, the logs and other checkpoints only when asked
    write(join(fake_model, "calibration.json"), calibration_of_folds(tmp_path, [1]))
    metadata = export_model_folder_to_zip(fake_model, out, folds=["1"], checkpoints=["checkpoint_final.pth",
                                                                                      "checkpoint_best.pth"],
                                          training_logs=True)
    with zipfile.ZipFile(out) as archive:
        names = sorted(n[len(PREFIX):] for n in archive.namelist())
    assert names == sorted(["plans.json", "dataset.json", METADATA_FILE, "calibration.json",
                            "fold_1/checkpoint_final.pth", "fold_1/checkpoint_best.pth",
                            "fold_1/training_range.json", "fold_1/progress.png",
                            "fold_1/debug.json", "fold_1/training_log_2026_1_1_00_00_00.txt"])
    assert metadata["calibration"] == "calibration.json" and metadata["folds"] == [1]
    assert "calibration: calibration.json as it is (built from fold(s) 1;" in capsys.readouterr().out


def export_cli(tmp_path, monkeypatch, capsys, out: str) -> tuple[int, str]:
    """nnQC_export_model_to_zip on the fake model: (exit code, stderr)."""
    from nnqc.run.export_model import export_model_to_zip_entry

    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setattr(sys, "argv", ["nnQC_export_model_to_zip", "-d", DATASET, "-o", out])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        export_model_to_zip_entry()
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("damage", ["not_csv", "missing_column", "nan_prediction"])
def test_a_damaged_out_of_fold_file_stops_the_export_naming_it(fake_model, tmp_path, monkeypatch, capsys, damage):
    write_out_of_fold(fake_model, 0)
    path = write_out_of_fold(fake_model, 1)
    if damage == "not_csv":
        write(path, b"sample,subject,dsc\n\"unterminated,\x00\xff\n" + os.urandom(64))
    else:
        table = pd.read_csv(path)
        table = table.drop(columns="nsd") if damage == "missing_column" else table.assign(predicted_dsc=np.nan)
        table.to_csv(path, index=False)
    out = str(tmp_path / "model.zip")
    with pytest.raises(CorruptCalibrationData, match=f"fold_1/{OUT_OF_FOLD_PREDICTIONS}"):
        export_model_folder_to_zip(fake_model, out)
    # with fold 0's predictions gone no calibration can be built, and fold 1's damaged file still stops the export
    os.remove(join(fake_model, "fold_0", OUT_OF_FOLD_PREDICTIONS))
    with pytest.raises(CorruptCalibrationData, match=f"fold_1/{OUT_OF_FOLD_PREDICTIONS}"):
        export_model_folder_to_zip(fake_model, out)
    code, err = export_cli(tmp_path, monkeypatch, capsys, out)
    assert code == 1 and err.count("\n") == 1 and err.startswith("nnQC_export_model_to_zip: error: ")
    assert join(fake_model, "fold_1", OUT_OF_FOLD_PREDICTIONS) in err
    assert not os.path.exists(out) and not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    assert not os.path.exists(join(fake_model, "calibration.json"))  # nothing built from the damaged file


@pytest.mark.parametrize("with_predictions", [False, True])
@pytest.mark.parametrize("damage", ["not_json", "not_a_calibration", "truncated"])
def test_a_damaged_calibration_json_stops_the_export_naming_it(fake_model, tmp_path, monkeypatch, capsys, damage,
                                                              with_predictions):
    if with_predictions:  # even where it could be rebuilt: the export does not replace a damaged file silently
        for fold in (0, 1):
            write_out_of_fold(fake_model, fold)
    good = calibration_of_folds(tmp_path, [0, 1])
    text = {"not_json": "{\"format_version\": 1, ", "not_a_calibration": '{"coverage": 0.9}',
            "truncated": json.dumps({k: v for k, v in json.loads(good).items() if k != "conformal"})}[damage]
    path = join(fake_model, "calibration.json")
    write(path, text)
    out = str(tmp_path / "model.zip")
    with pytest.raises(CorruptCalibrationData, match="calibration.json"):
        export_model_folder_to_zip(fake_model, out)
    code, err = export_cli(tmp_path, monkeypatch, capsys, out)
    assert code == 1 and err.count("\n") == 1 and f"error: {path}: " in err
    assert not os.path.exists(out) and not [f for f in os.listdir(tmp_path) if f.startswith(".")]
    with open(path) as f:
        assert f.read() == text  # left as it was found
    # with the damaged file gone, the same model exports
    os.remove(path)
    metadata = export_model_folder_to_zip(fake_model, out)
    assert metadata["calibration"] == ("calibration.json" if with_predictions else None)


def test_export_refuses_a_fold_without_its_checkpoint(fake_model, tmp_path):
    out = str(tmp_path / "model.zip")
    with pytest.raises(FileNotFoundError, match="fold_2/checkpoint_final.pth"):
        export_model_folder_to_zip(fake_model, out, folds=["0", "2"])
    with pytest.raises(FileNotFoundError, match="fold_3"):
        export_model_folder_to_zip(fake_model, out, folds=["3"])
    assert not os.path.exists(out) and not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_install_extracts_checked_files_and_refuses_to_overwrite(fake_model, tmp_path):
    archive = str(tmp_path / "model.zip")
    export_model_folder_to_zip(fake_model, archive)
    results = str(tmp_path / "other_results")
    installed = install_model_from_zip(archive, results)
    assert installed == join(results, DATASET, MODEL)
    assert listing(results) == sorted([DATASET, f"{DATASET}/{MODEL}", *[f"{DATASET}/{MODEL}/{n}" for n in (
        "plans.json", "dataset.json", METADATA_FILE, "fold_0", "fold_1", "fold_0/checkpoint_final.pth",
        "fold_1/checkpoint_final.pth", "fold_0/training_range.json", "fold_1/training_range.json")]])
    for name in ("plans.json", "fold_0/checkpoint_final.pth", "fold_1/checkpoint_final.pth",
                 "fold_1/training_range.json"):
        assert sha256(join(installed, name)) == sha256(join(fake_model, name))
    assert stat.S_IMODE(os.stat(installed).st_mode) & 0o055  # readable by others, not mkdtemp's private 0700

    # the installed model describes itself: its stored validation figures stand in for the missing summaries
    metadata = load_model_metadata(installed, [0, 1])
    assert metadata["validation"]["0"]["dsc"]["r"] == 0.91 and metadata["exported_with"]
    text = describe_model(metadata)
    assert "Dataset042_Tiny" in text and "fold 0: DSC r 0.910" in text and "fold 1: DSC r 0.870" in text
    assert "0: T1, 1: T1ce, 2: T2, 3: FLAIR" in text
    metadata["validation"]["1"]["dsc"]["r"] = float("nan")  # a fold whose predictions were all one value
    assert "fold 1: DSC r n/a" in describe_model(metadata)

    with pytest.raises(FileExistsError, match="--overwrite"):
        install_model_from_zip(archive, results)
    before = {name: sha256(join(installed, name)) for name in listing(installed) if "." in name}
    # a corrupt replacement leaves the installed model as it was
    rewrite(archive, str(tmp_path / "altered.zip"), replace={PREFIX + "fold_1/checkpoint_final.pth": b"tampered"})
    with pytest.raises(ModelArchiveError, match="SHA-256"):
        install_model_from_zip(str(tmp_path / "altered.zip"), results, overwrite=True)
    assert {name: sha256(join(installed, name)) for name in listing(installed) if "." in name} == before
    write(join(fake_model, "fold_0", "checkpoint_final.pth"), b"retrained")
    export_model_folder_to_zip(fake_model, archive)
    install_model_from_zip(archive, results, overwrite=True)
    with open(join(installed, "fold_0", "checkpoint_final.pth"), "rb") as f:
        assert f.read() == b"retrained"
    assert not [f for f in os.listdir(join(results, DATASET)) if f.startswith(".")]  # no staging left behind


def rewrite(source: str, destination: str, drop=(), replace=None, add=()) -> None:
    """A copy of an archive without the members in `drop`, with `replace` {name: bytes} and extra members."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(destination, "w") as dst, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name that one bad archive holds
        for info in src.infolist():
            if info.filename in drop:
                continue
            dst.writestr(info, (replace or {}).get(info.filename, src.read(info)))
        for info, data in add:
            dst.writestr(info, data)


def symlink_member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


BAD_ARCHIVES = {
    "parent_path": ({"add": [(f"{PREFIX}../../../evil.txt", b"x")]}, "'..'"),
    "leading_parent": ({"add": [("../evil.txt", b"x")]}, "'..'"),
    "absolute_path": ({"add": [("/tmp/evil.txt", b"x")]}, "absolute path"),
    "symlink": ({"add": [(symlink_member(PREFIX + "fold_0/link"), b"/etc/passwd")]}, "symbolic link"),
    "missing_checkpoint": ({"drop": [PREFIX + "fold_1/checkpoint_final.pth"]}, "missing .*fold_1/checkpoint_final.pth"),
    "unlisted_file": ({"add": [(PREFIX + "fold_0/extra.py", b"import os")]}, "unexpected .*fold_0/extra.py"),
    "outside_model_folder": ({"add": [(f"{DATASET}/notes.txt", b"x")]}, "outside the model folder"),
    "second_model": ({"add": [(f"{DATASET}/Other__nnQCPlans__3d_fullres/plans.json", b"{}")]}, "exactly one model"),
    "no_metadata": ({"drop": [PREFIX + METADATA_FILE]}, "no .*nnqc_model.json"),
    "altered_checkpoint": ({"replace": {PREFIX + "fold_0/checkpoint_final.pth": b"tampered"}}, "SHA-256"),
    "duplicate_member": ({"add": [(PREFIX + "plans.json", b"{}")]}, "occurs twice"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ARCHIVES))
def test_bad_archives_are_refused_by_name_and_nothing_is_installed(fake_model, tmp_path, kind):
    good = str(tmp_path / "model.zip")
    export_model_folder_to_zip(fake_model, good)
    changes, message = BAD_ARCHIVES[kind]
    bad = str(tmp_path / f"{kind}.zip")
    rewrite(good, bad, **changes)
    results = tmp_path / "other_results"
    results.mkdir()
    with pytest.raises(ModelArchiveError, match=message) as error:
        install_model_from_zip(bad, str(results))
    assert bad in str(error.value)
    assert listing(results) == []  # not even the dataset folder or a staging folder
    assert not os.path.exists(tmp_path / "evil.txt")


def test_a_file_that_is_not_a_zip_is_refused(tmp_path):
    fake = tmp_path / "model.zip"
    fake.write_text("not a zip")
    with pytest.raises(ModelArchiveError, match="not a readable zip"):
        install_model_from_zip(str(fake), str(tmp_path / "results"))
    assert not os.path.exists(tmp_path / "results" / DATASET)


def case_files(folder, case: str, channels, ending=".nii.gz") -> None:
    for c in channels:
        write(join(folder, f"{case}_{c:04d}{ending}"), b"")


@pytest.mark.parametrize("channels, ending, message", [
    ((0, 1), ".nii.gz", r"expects 4 channel\(s\) \(0: T1, 1: T1ce, 2: T2, 3: FLAIR\).*the input folder has "
                        r"a_0000.nii.gz ... a_0001.nii.gz only"),
    ((0,), ".nii.gz", r"has a_0000.nii.gz only"),
    ((0, 1, 2, 3, 4), ".nii.gz", r"expects 4 channel.*channel files _0000, _0001, _0002, _0003, _0004 \(5 channels"),
    ((1, 2, 3, 4), ".nii.gz", r"channel files _0001, _0002, _0003, _0004"),
    ((0, 1, 2, 3), ".mha", r"CASE_0000.nii.gz.*it holds .mha \(8\)"),
])
def test_input_folder_must_match_the_models_channels_and_file_ending(tmp_path, channels, ending, message):
    images, segs = tmp_path / "images", tmp_path / "segs"
    segs.mkdir()
    for case in ("a", "b"):
        case_files(images, case, channels, ending)
        write(join(segs, case + ending), b"")
    with pytest.raises(InputFolderError, match=message):
        check_input_folders(str(images), str(segs), DATASET_JSON)


def test_input_folder_check_leaves_single_cases_to_the_per_case_check(tmp_path):
    images, segs = tmp_path / "images", tmp_path / "segs"
    case_files(images, "a", range(4))
    case_files(images, "b", (0, 1, 3))  # one case lacks a channel: that case is skipped later, the folder is fine
    write(join(segs, "a.nii.gz"), b"")
    check_input_folders(str(images), str(segs), DATASET_JSON)
    os.remove(join(segs, "a.nii.gz"))
    write(join(segs, "a.nrrd"), b"")
    with pytest.raises(InputFolderError, match=r"segs does not match the model: the model reads .nii.gz.*\.nrrd"):
        check_input_folders(str(images), str(segs), DATASET_JSON)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputFolderError, match="it is empty"):
        check_input_folders(str(empty), str(segs), DATASET_JSON)


def run_module(module: str, env: dict, *args) -> subprocess.CompletedProcess:
    """The module's command line; the timeout (far above its seconds) turns a hang into a failure."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=600)


@pytest.fixture(scope="module")
def test_cases(trained_pipeline, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("sharing_inputs")
    images, segs = base / "images", base / "segs"
    shutil.copytree(join(trained_pipeline.source_folder, "imagesTs"), images)
    shutil.copytree(join(trained_pipeline.source_folder, "labelsTs"), segs)
    return {"images": str(images), "segs": str(segs)}


def test_round_trip_predicts_identically_from_the_installed_model(trained_pipeline, test_cases, tmp_path):
    env = trained_pipeline.env()
    archive = str(tmp_path / "shared.zip")
    result = run_module("nnqc.run.export_model", env, "-d", str(QC_ID), "-tr", TRAINER, "-f", "0", "-o", archive)
    assert result.returncode == 0, result.stderr
    # plans, dataset.json, fold 0's checkpoint and training labels, the metadata and the calibration built from
    # the out-of-fold predictions of fold 0's final validation
    assert "exported 6 files" in result.stdout
    with zipfile.ZipFile(archive) as zipped:
        assert any(n.endswith("/calibration.json") for n in zipped.namelist())
        assert any(n.endswith("/fold_0/training_range.json") for n in zipped.namelist())

    other = {"nnUNet_results": str(tmp_path / "elsewhere"), "nnUNet_raw": "", "nnUNet_preprocessed": ""}
    result = run_module("nnqc.run.install_model", other, archive)
    assert result.returncode == 0, result.stderr
    installed = join(other["nnUNet_results"], "Dataset701_PhantomQC", f"{TRAINER}__nnQCPlans__3d_fullres")
    assert f"installed to {installed}" in result.stdout
    result = run_module("nnqc.run.install_model", other, archive)
    assert result.returncode == 1 and "--overwrite" in result.stderr

    common = ["-i", test_cases["images"], "-s", test_cases["segs"], "-f", "0", "-device", "cpu"]
    original, copy = str(tmp_path / "from_original"), str(tmp_path / "from_installed")
    result = run_module("nnqc.run.predict", env, *common, "-o", original, "-d", str(QC_ID), "-tr", TRAINER)
    assert result.returncode == 0, result.stderr
    result = run_module("nnqc.run.predict", other, *common, "-o", copy, "-m", installed)
    assert result.returncode == 0, result.stderr
    # the model's metadata comes first, with the validation figures stored in the archive
    summary = load_json(join(trained_pipeline.results, "Dataset701_PhantomQC", f"{TRAINER}__nnQCPlans__3d_fullres",
                             "fold_0", "validation", "summary.json"))
    assert result.stdout.startswith(f"nnQC model Dataset701_PhantomQC: trainer {TRAINER}")
    r = summary["dsc"]["r"]
    assert np.isfinite(r) and f"fold 0: DSC r {r:.3f}" in result.stdout

    pd.testing.assert_frame_equal(pd.read_csv(join(original, "qc_summary.csv")),
                                  pd.read_csv(join(copy, "qc_summary.csv")), check_exact=True)
    maps = sorted(f for f in os.listdir(original) if f.endswith(".nii.gz"))
    assert maps and maps == sorted(f for f in os.listdir(copy) if f.endswith(".nii.gz"))
    for name in maps:
        a, b = sitk.ReadImage(join(original, name)), sitk.ReadImage(join(copy, name))
        assert np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
        assert (a.GetSpacing(), a.GetOrigin(), a.GetDirection()) == (b.GetSpacing(), b.GetOrigin(), b.GetDirection())

    # an input folder with other channels than the shared model's is refused before the first case
    two_channels = tmp_path / "two_channels"
    two_channels.mkdir()
    for f in os.listdir(test_cases["images"]):
        if f.endswith(("_0000.nii.gz", "_0001.nii.gz")):
            shutil.copy(join(test_cases["images"], f), two_channels)
    out = str(tmp_path / "refused")
    result = run_module("nnqc.run.predict", other, "-i", str(two_channels), "-s", test_cases["segs"], "-o", out,
                        "-m", installed, "-device", "cpu")
    assert result.returncode == 1
    assert "the model expects 4 channel(s) (0: T1, 1: T1ce, 2: T2, 3: FLAIR)" in result.stderr
    assert "_0001.nii.gz only" in result.stderr and not os.path.exists(out)


def test_predictor_api_checks_the_input_folder_first(pipeline_env, test_cases, tmp_path):
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"), (0,))
    five = tmp_path / "five_channels"
    shutil.copytree(test_cases["images"], five)
    for f in os.listdir(five):
        if f.endswith("_0003.nii.gz"):
            shutil.copy(five / f, five / f.replace("_0003", "_0004"))
    out = tmp_path / "out"
    with pytest.raises(InputFolderError, match=r"\(5 channels"):
        predictor.predict_from_files(str(five), test_cases["segs"], str(out))
    assert not out.exists()
