"""The cross-validation folds of a QC dataset (splits_final.json): by subject, the source dataset's folds when it
has them, nnU-Net's seeded split otherwise."""
from collections.abc import Sequence

from batchgenerators.utilities.file_and_folder_operations import isfile, join, load_json
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnqc import paths
from nnqc.atomic_files import write_json_atomically

NUM_FOLDS = 5
SPLIT_SEED = 12345


def splits_of_source_dataset(qc_dataset_json: dict, subjects: Sequence[str]) -> list[dict] | None:
    """The folds of the source dataset (nnUNet_preprocessed/SOURCE/splits_final.json) restricted to these
    subjects, when that file exists and places every subject in exactly one validation fold.

    Keeps QC folds aligned with the segmenter's: no QC model is validated on cases its candidates' segmenter
    trained on, and groups the source kept together (e.g. the frames of one ACDC patient) stay together.
    """
    source = qc_dataset_json.get("nnqc", {}).get("source_dataset")
    if not source or not paths.nnUNet_preprocessed():
        return None
    file = join(paths.nnUNet_preprocessed(), source, "splits_final.json")
    if not isfile(file):
        return None
    wanted = set(subjects)
    splits = [{"train": sorted(set(f["train"]) & wanted), "val": sorted(set(f["val"]) & wanted)}
              for f in load_json(file)]
    validated = [s for f in splits for s in f["val"]]
    if sorted(validated) != sorted(wanted) or any(not f["train"] or not f["val"] for f in splits):
        print(f"WARNING: {file} does not validate each subject exactly once: not reusing it")
        return None
    return splits


def write_splits(raw_folder: str, preprocessed_folder: str, subjects: Sequence[str]) -> None:
    """splits_final.json with folds by subject, unless the existing one splits exactly these subjects."""
    subjects = sorted(subjects)
    splits_file = join(preprocessed_folder, "splits_final.json")
    if isfile(splits_file):
        existing = load_json(splits_file)
        if all(sorted(f["train"] + f["val"]) == subjects and not set(f["train"]) & set(f["val"])
               for f in existing):
            return
        print(f"{splits_file} does not split exactly this dataset's subjects: writing new folds")
    if len(subjects) < 2:
        print(f"WARNING: {len(subjects)} subject(s): no cross-validation folds written")
        return
    splits = splits_of_source_dataset(load_json(join(raw_folder, "dataset.json")), subjects)
    if splits is not None:
        print("Using the source dataset's cross-validation folds (its splits_final.json)")
    else:
        num_folds = min(NUM_FOLDS, len(subjects))
        if num_folds < NUM_FOLDS:
            print(f"WARNING: only {len(subjects)} subjects: writing {num_folds} folds instead of {NUM_FOLDS}")
        splits = generate_crossval_split(subjects, seed=SPLIT_SEED, n_splits=num_folds)
    write_json_atomically(splits_file, [{k: [str(s) for s in v] for k, v in fold.items()} for fold in splits])
