"""Writing nnU-Net raw datasets safely, shared by the dataset converters and the phantom generator.

Every file appears complete or not at all (nnqc.atomic_files), dataset.json is written last so an interrupted
conversion never looks like a finished dataset, and a dataset folder is never silently mixed with the files of an
earlier conversion.
"""
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from nnunetv2.dataset_conversion.generate_dataset_json import generate_dataset_json

from nnqc.paths import require


def prepare_raw_dataset_folder(dataset_id: int, name: str, raw_folder: str | None = None,
                               overwrite: bool = False) -> str:
    """Create (empty) $nnUNet_raw/DatasetXXX_name and return its path.

    Refuses an id that another dataset name already uses (nnU-Net could no longer tell them apart) and an
    existing non-empty folder unless `overwrite`, in which case that folder is replaced.
    """
    if not 0 < int(dataset_id) < 1000:
        raise ValueError(f"dataset id must be in 1..999, got {dataset_id}")
    if not name or os.sep in name or "/" in name or name.startswith("."):
        raise ValueError(f"invalid dataset name {name!r}")
    raw = raw_folder if raw_folder is not None else require("nnUNet_raw")
    dataset_name = f"Dataset{int(dataset_id):03d}_{name}"
    prefix = dataset_name[:len("Dataset000_")]
    if os.path.isdir(raw):
        clashes = sorted(d for d in os.listdir(raw)
                         if d.startswith(prefix) and d != dataset_name and os.path.isdir(os.path.join(raw, d)))
        if clashes:
            raise FileExistsError(f"dataset id {dataset_id} is already used by {clashes[0]} in {raw}; "
                                  f"choose another id")
    folder = os.path.join(raw, dataset_name)
    if os.path.isdir(folder) and os.listdir(folder):
        if not overwrite:
            raise FileExistsError(f"{folder} already exists and is not empty; pass overwrite=True "
                                  f"(--overwrite) to replace it")
        shutil.rmtree(folder)
    os.makedirs(folder, exist_ok=True)
    return folder


def write_dataset_json_atomic(folder: str, **generate_dataset_json_kwargs: Any) -> None:
    """nnU-Net's generate_dataset_json, written to a scratch folder inside `folder` and then moved in place."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".dataset_json.") as scratch:
        generate_dataset_json(scratch, **generate_dataset_json_kwargs)
        os.replace(os.path.join(scratch, "dataset.json"), os.path.join(folder, "dataset.json"))


def run_cases(function: Callable[..., Any], arguments: Sequence[tuple], num_processes: int) -> list:
    """function(*args) for every args tuple, in order; in a spawn pool as nnU-Net does when num_processes > 1."""
    if num_processes <= 1 or len(arguments) <= 1:
        return [function(*args) for args in arguments]
    with multiprocessing.get_context("spawn").Pool(min(num_processes, len(arguments))) as pool:
        return pool.starmap(function, arguments)
