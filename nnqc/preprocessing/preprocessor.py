"""nnQC preprocessing: nnU-Net's DefaultPreprocessor for every subject, the same crop and resampling for
every candidate segmentation of that subject.

A QC dataset stores images and reference once per subject and only a label map per sample, so the cost is
driven by subjects: a subject is read, normalized and resampled once, and each of its candidates is then
only read, cropped with the subject's bounding box and resampled as a segmentation. Outputs are written
atomically and reruns skip what is already up to date.

"Up to date" is decided from content, not modification times: each subject's inputs/SUBJ.json records the size
and SHA-256 of every file its outputs and its candidates' outputs were made from (images, reference, plans,
dataset.json; each candidate file), and what no longer matches is redone. A file replaced by another one with an
older or the same mtime is redone; one only touched (same bytes) is not. Hashing reads each compressed input
once per run, about 1 GB/s: 0.01 s for a BraTS-sized phantom subject's 10 MB, which takes 2 s to preprocess
(benchmarks/benchmark_preprocess.py). A folder preprocessed before these records existed is redone once.
"""
import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import partial
from typing import Callable

import blosc2
import numpy as np
import pandas as pd
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, load_pickle
from nnunetv2.imageio.base_reader_writer import BaseReaderWriter
from nnunetv2.imageio.reader_writer_registry import LIST_OF_IO_CLASSES
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.preprocessing.normalization.map_channel_name_to_normalization import (
    channel_name_to_normalization_mapping,
)
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape, resample_data_or_seg_to_shape
from nnunetv2.preprocessing.resampling.no_resampling import no_resampling_hack
from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet
from nnunetv2.utilities.crossval_split import generate_crossval_split
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets
from tqdm import tqdm

from nnqc import paths
from nnqc.atomic_files import (
    copy_atomically,
    file_sha256,
    is_complete_copy,
    is_temporary_name,
    save_npz_atomically,
    write_json_atomically,
)
from nnqc.geometry import properties_mismatch
from nnqc.metrics.regions import allowed_labels
from nnqc.preprocessing.intensity_statistics import IMAGE_INTENSITIES_PROPERTY, image_intensity_statistics
from nnqc.process_pool import map_unordered
from nnqc.qc_data.targets_table import read_targets

CANDIDATES_FOLDER = "candidatesTr"
CANDIDATE_FILE_ENDING = ".nii.gz"
QC_TARGETS_FILE = "qc_targets.csv"
PREPROCESSED_CANDIDATES_FOLDER = "candidates"
SUBJECT_OUTPUT_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")  # the .pkl goes last: it marks a complete subject
# per subject, INPUTS_RECORD_FOLDER/SUBJ.json: the fingerprints of the files its outputs were made from. In a folder
# of their own: nnU-Net infers the dataset class from the one file ending (besides .pkl) of the data folder
INPUTS_RECORD_FOLDER = "inputs"
INPUTS_RECORD_FORMAT = 1
TEMPORARY_FOLDER_PREFIX = ".tmp_"  # scratch folders in which a subject's outputs are written together
NUM_FOLDS = 5
SPLIT_SEED = 12345


class QCDatasetError(RuntimeError):
    """A QC dataset that cannot be planned or preprocessed as it is; the message names the file or case."""


# nnU-Net resolves the class and function names stored in plans by walking its packages. nnQC resolves them
# from these explicit tables of the objects nnU-Net ships, so nothing is imported by name.
READER_WRITERS = {rw.__name__: rw for rw in LIST_OF_IO_CLASSES}
RESAMPLING_FUNCTIONS = {fn.__name__: fn for fn in (resample_data_or_seg_to_shape, resample_torch_fornnunet,
                                                   no_resampling_hack)}
NORMALIZATION_SCHEMES = {cls.__name__: cls for cls in channel_name_to_normalization_mapping.values()}
LABEL_MANAGERS = {LabelManager.__name__: LabelManager}


def _lookup(table: dict, name: str, what: str):
    if name not in table:
        raise QCDatasetError(f"Unknown {what} {name!r} in the plans. nnQC supports: {sorted(table)}")
    return table[name]


class nnQCConfigurationManager(ConfigurationManager):
    """nnU-Net's ConfigurationManager with resampling functions taken from an explicit table."""

    def _resampling_fn(self, key: str) -> Callable:
        fn = _lookup(RESAMPLING_FUNCTIONS, self.configuration[key], "resampling function")
        return partial(fn, **self.configuration[key + "_kwargs"])

    @property
    def resampling_fn_data(self) -> Callable:
        return self._resampling_fn("resampling_fn_data")

    @property
    def resampling_fn_seg(self) -> Callable:
        return self._resampling_fn("resampling_fn_seg")

    @property
    def resampling_fn_probabilities(self) -> Callable:
        return self._resampling_fn("resampling_fn_probabilities")

    @property
    def preprocessor_class(self) -> type[DefaultPreprocessor]:
        return _lookup({c.__name__: c for c in (DefaultPreprocessor, nnQCPreprocessor)}, self.preprocessor_name,
                       "preprocessor")


class nnQCPlansManager(PlansManager):
    """nnU-Net's PlansManager with the reader/writer and label manager taken from explicit tables."""

    def get_configuration(self, configuration_name: str) -> nnQCConfigurationManager:
        if configuration_name not in self.plans["configurations"]:
            raise QCDatasetError(f"Configuration {configuration_name!r} is not in plans {self.plans_name} "
                                 f"(available: {self.available_configurations})")
        return nnQCConfigurationManager(self._internal_resolve_configuration_inheritance(configuration_name))

    @property
    def image_reader_writer_class(self) -> type[BaseReaderWriter]:
        return _lookup(READER_WRITERS, self.plans["image_reader_writer"], "image reader/writer")

    @property
    def label_manager_class(self) -> type[LabelManager]:
        return _lookup(LABEL_MANAGERS, self.plans.get("label_manager", "LabelManager"), "label manager")


def reader_writer_from_dataset_json(dataset_json: dict, example_file: str) -> type[BaseReaderWriter]:
    """The reader/writer nnU-Net would pick for this dataset: the declared override, else the first class
    supporting the file ending that can open `example_file`."""
    declared = dataset_json.get("overwrite_image_reader_writer")
    if declared is not None and declared != "None":
        return _lookup(READER_WRITERS, declared, "image reader/writer (overwrite_image_reader_writer)")
    ending = dataset_json["file_ending"].lower()
    for rw in LIST_OF_IO_CLASSES:
        if ending in rw.supported_file_endings:
            try:
                rw().read_images((example_file,))
            except Exception:
                continue
            return rw
    raise QCDatasetError(f"No nnU-Net reader/writer can read {example_file} (file ending {ending})")


def resolve_dataset_name(dataset_name_or_id: int | str) -> str:
    """DatasetXXX_Name for an id or name, with an nnQC error when it cannot be found."""
    try:
        return maybe_convert_to_dataset_name(dataset_name_or_id)
    except (RuntimeError, ValueError) as e:
        raise QCDatasetError(f"Dataset {dataset_name_or_id} not found: {e}") from e


def qc_raw_folder(dataset_name: str) -> str:
    """The raw folder of a QC dataset, checked to be one (it has candidatesTr/ and qc_targets.csv)."""
    folder = join(paths.require("nnUNet_raw"), dataset_name)
    if not isdir(folder):
        raise QCDatasetError(f"Dataset {dataset_name} not found in nnUNet_raw ({folder} does not exist)")
    for name in ("dataset.json", QC_TARGETS_FILE, CANDIDATES_FOLDER):
        if not os.path.exists(join(folder, name)):
            raise QCDatasetError(f"{dataset_name} is not an nnQC dataset: {name} is missing in {folder}. "
                                 f"Build QC datasets with nnQC_convert.")
    return folder


def read_qc_targets(raw_folder: str) -> pd.DataFrame:
    """qc_targets.csv through the one reader (nnqc.qc_data.targets_table), errors as QCDatasetError."""
    try:
        return read_targets(join(raw_folder, QC_TARGETS_FILE))
    except (OSError, ValueError) as e:
        raise QCDatasetError(str(e)) from None


def candidate_file(raw_folder: str, sample: str) -> str:
    return join(raw_folder, CANDIDATES_FOLDER, sample + CANDIDATE_FILE_ENDING)


def candidates_by_subject(raw_folder: str, subjects: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """{subject: [(sample, candidate file), ...]} from qc_targets.csv, every subject and file checked."""
    targets = read_qc_targets(raw_folder)
    known = set(subjects)
    unknown = sorted(set(targets["subject"]) - known)
    if unknown:
        raise QCDatasetError(f"{join(raw_folder, QC_TARGETS_FILE)} names subjects without images in imagesTr: "
                             f"{unknown[:5]}")
    grouped: dict[str, list[tuple[str, str]]] = {s: [] for s in subjects}
    missing = []
    for sample, subject in zip(targets["sample"], targets["subject"]):
        file = candidate_file(raw_folder, sample)
        if not isfile(file):
            missing.append(file)
        grouped[subject].append((sample, file))
    if missing:
        raise QCDatasetError(f"{len(missing)} candidate file(s) listed in {QC_TARGETS_FILE} are missing, "
                             f"e.g. {missing[:3]}")
    return grouped


def input_fingerprint(path: str) -> list:
    """[file name, size, SHA-256 of the bytes]: what an output was made from, independent of modification times
    (a restored backup or a copy keeps or sets any mtime)."""
    return [os.path.basename(path), os.path.getsize(path), file_sha256(path)]


def _read_inputs_record(path: str) -> dict:
    """A subject's inputs record; empty (everything redone) when missing, unreadable or of another format."""
    try:
        record = load_json(path)
    except (OSError, ValueError):
        return {}
    if not isinstance(record, dict) or record.get("format") != INPUTS_RECORD_FORMAT:
        return {}
    return record


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


class nnQCPreprocessor(DefaultPreprocessor):
    """DefaultPreprocessor for subjects plus the identical crop and resampling for their candidates.

    Subjects are written in nnU-Net 2.8.1's own format (SUBJ.b2nd, SUBJ_seg.b2nd, SUBJ.pkl); the candidates
    of a subject go to candidates/SAMPLE.npz (key "seg", uint8, shape (1, *subject's preprocessed shape)).
    """

    def __init__(self, verbose: bool = False):
        super().__init__(verbose=verbose)

    def run_case_npy(self, data: np.ndarray, seg: np.ndarray | None, properties: dict, plans_manager: PlansManager,
                     configuration_manager: ConfigurationManager, dataset_json: dict | str):
        """nnU-Net's, after recording the raw images' intensity statistics in the properties: training subjects
        and predicted cases get them from this one place, for the training-range check."""
        properties[IMAGE_INTENSITIES_PROPERTY] = image_intensity_statistics(data)
        return super().run_case_npy(data, seg, properties, plans_manager, configuration_manager, dataset_json)

    def _normalize(self, data: np.ndarray, seg: np.ndarray, configuration_manager: ConfigurationManager,
                   foreground_intensity_properties_per_channel: dict) -> np.ndarray:
        for c in range(data.shape[0]):
            scheme = _lookup(NORMALIZATION_SCHEMES, configuration_manager.normalization_schemes[c],
                             "normalization scheme")
            normalizer = scheme(use_mask_for_norm=configuration_manager.use_mask_for_norm[c],
                                intensityproperties=foreground_intensity_properties_per_channel[str(c)])
            data[c] = normalizer.run(data[c], seg[0])
        return data

    @staticmethod
    def candidate_reader_writer(plans_manager: PlansManager) -> type[BaseReaderWriter]:
        """The subject's reader when it reads candidate files (same axes handling), SimpleITK otherwise."""
        rw = plans_manager.image_reader_writer_class
        return rw if CANDIDATE_FILE_ENDING in rw.supported_file_endings else SimpleITKIO

    def preprocess_candidate(self, candidate_file: str, subject_properties: dict, preprocessed_shape: Sequence[int],
                             plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                             labels: Sequence[int]) -> np.ndarray:
        """Read a candidate file and bring it onto its preprocessed subject's grid: uint8 (1, *shape)."""
        seg, properties = self.candidate_reader_writer(plans_manager)().read_seg(candidate_file)
        mismatch = properties_mismatch(properties, subject_properties)
        if mismatch is not None:
            raise QCDatasetError(f"Candidate {candidate_file} does not share its subject's geometry: {mismatch}")
        return self.candidate_to_subject_grid(seg, subject_properties, preprocessed_shape, plans_manager,
                                              configuration_manager, labels, f"Candidate {candidate_file}")

    @staticmethod
    def candidate_to_subject_grid(seg: np.ndarray, subject_properties: dict, preprocessed_shape: Sequence[int],
                                  plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                  labels: Sequence[int], name: str) -> np.ndarray:
        """A label map (1, *S) in its subject's input grid, with the subject's transpose, crop and segmentation
        resampling (the identical preprocessing at training and prediction time): uint8 (1, *shape)."""
        transpose = plans_manager.transpose_forward
        seg = seg.transpose([0, *[i + 1 for i in transpose]])
        expected_shape = tuple(int(i) for i in subject_properties["shape_before_cropping"])
        if seg.shape[1:] != expected_shape:
            raise QCDatasetError(f"{name} has shape {seg.shape[1:]} but its subject has "
                                 f"{expected_shape} (after transpose {transpose})")
        as_uint8 = seg.astype(np.uint8)
        if not np.array_equal(as_uint8, seg):
            raise QCDatasetError(f"{name} holds values that are not labels in 0..255")
        present = np.flatnonzero(np.bincount(as_uint8.ravel(), minlength=256))
        invalid = sorted(set(present.tolist()) - set(labels))
        if invalid:
            raise QCDatasetError(f"{name} holds labels {invalid}; dataset.json allows {list(labels)}")
        seg = as_uint8[(slice(None), *bounding_box_to_slice(subject_properties["bbox_used_for_cropping"]))]
        original_spacing = [subject_properties["spacing"][i] for i in transpose]
        target_spacing = configuration_manager.spacing
        new_shape = compute_new_shape(seg.shape[1:], original_spacing, target_spacing)
        seg = configuration_manager.resampling_fn_seg(seg, new_shape, original_spacing, target_spacing)
        if tuple(seg.shape[1:]) != tuple(preprocessed_shape):
            raise QCDatasetError(f"{name} preprocesses to {seg.shape[1:]}, its subject to "
                                 f"{tuple(preprocessed_shape)}")
        return np.ascontiguousarray(seg, dtype=np.uint8)

    def run_subject(self, output_folder: str, subject: str, image_files: list[str], label_file: str,
                    candidates: list[tuple[str, str]], plans_manager: PlansManager,
                    configuration_manager: ConfigurationManager, dataset_json: dict,
                    extra_inputs: Sequence[str], extra_fingerprints: Sequence[list] | None = None
                    ) -> tuple[bool, int]:
        """Preprocess one subject (unless up to date) and those of its candidates that need it. `extra_inputs`
        (plans, dataset.json) count as inputs of the subject; `extra_fingerprints`, theirs computed once by the
        caller for all subjects.

        Returns (whether the subject was preprocessed, number of candidates written).
        """
        try:
            if extra_fingerprints is None:
                extra_fingerprints = [input_fingerprint(f) for f in extra_inputs]
            return self._run_subject(output_folder, subject, image_files, label_file, candidates, plans_manager,
                                     configuration_manager, dataset_json, list(extra_fingerprints))
        except QCDatasetError:
            raise
        except Exception as e:
            raise QCDatasetError(f"Preprocessing subject {subject} failed: {type(e).__name__}: {e}") from e

    def _run_subject(self, output_folder, subject, image_files, label_file, candidates, plans_manager,
                     configuration_manager, dataset_json, extra_fingerprints) -> tuple[bool, int]:
        outputs = [join(output_folder, subject + s) for s in SUBJECT_OUTPUT_SUFFIXES]
        record_file = join(output_folder, INPUTS_RECORD_FOLDER, subject + ".json")
        record = _read_inputs_record(record_file)
        subject_inputs = [input_fingerprint(f) for f in (*image_files, label_file)] + [list(f) for f in
                                                                                       extra_fingerprints]
        redo_subject = record.get("subject") != subject_inputs or not all(isfile(f) for f in outputs)
        if redo_subject:
            # the record and the .pkl first: an interrupted redo leaves an incomplete subject, never a current one
            for f in (record_file, *reversed(outputs)):
                if isfile(f):
                    os.remove(f)
            temporary_folder = tempfile.mkdtemp(dir=output_folder, prefix=TEMPORARY_FOLDER_PREFIX)
            try:
                self.run_case_save(join(temporary_folder, subject), image_files, label_file, plans_manager,
                                   configuration_manager, dataset_json)
                for f in outputs:
                    os.replace(join(temporary_folder, os.path.basename(f)), f)
            finally:
                shutil.rmtree(temporary_folder, ignore_errors=True)
            record = {"format": INPUTS_RECORD_FORMAT, "subject": subject_inputs, "candidates": {}}
            write_json_atomically(record_file, record)

        candidates_folder = join(output_folder, PREPROCESSED_CANDIDATES_FOLDER)
        candidate_inputs = {sample: input_fingerprint(file) for sample, file in candidates}
        recorded = record.get("candidates", {})
        todo = [(sample, file) for sample, file in candidates
                if redo_subject or recorded.get(sample) != candidate_inputs[sample]
                or not isfile(join(candidates_folder, sample + ".npz"))]
        if todo:
            properties = load_pickle(outputs[-1])
            preprocessed_shape = blosc2.open(urlpath=outputs[1], mode="r").shape[1:]
            labels = allowed_labels(dataset_json)
            for sample, file in todo:
                seg = self.preprocess_candidate(file, properties, preprocessed_shape, plans_manager,
                                                configuration_manager, labels)
                save_npz_atomically(join(candidates_folder, sample + ".npz"), seg=seg)
        # recorded after the outputs: a candidate interrupted before this line is redone on the next run
        if recorded != candidate_inputs:
            write_json_atomically(record_file, {**record, "candidates": candidate_inputs})
        return redo_subject, len(todo)

    def run(self, dataset_name_or_id: int | str, configuration_name: str, plans_identifier: str,
            num_processes: int, clean: bool = False) -> None:
        """Preprocess all subjects and candidates of a QC dataset (skipping what is up to date unless clean)."""
        dataset_name = resolve_dataset_name(dataset_name_or_id)
        raw_folder = qc_raw_folder(dataset_name)
        preprocessed_folder = join(paths.require("nnUNet_preprocessed"), dataset_name)
        plans_file = join(preprocessed_folder, plans_identifier + ".json")
        dataset_json_file = join(preprocessed_folder, "dataset.json")
        for f in (plans_file, dataset_json_file):
            if not isfile(f):
                raise QCDatasetError(f"{f} is missing: plan the dataset first (nnQC_plan_and_preprocess)")
        plans_manager = nnQCPlansManager(plans_file)
        configuration_manager = plans_manager.get_configuration(configuration_name)
        dataset_json = load_json(dataset_json_file)

        dataset = get_filenames_of_train_images_and_targets(raw_folder, dataset_json)
        subjects = sorted(dataset)
        candidates = candidates_by_subject(raw_folder, subjects)

        output_folder = join(preprocessed_folder, configuration_manager.data_identifier)
        if clean and isdir(output_folder):
            shutil.rmtree(output_folder)
        candidates_folder = join(output_folder, PREPROCESSED_CANDIDATES_FOLDER)
        os.makedirs(candidates_folder, exist_ok=True)
        os.makedirs(join(output_folder, INPUTS_RECORD_FOLDER), exist_ok=True)
        self._remove_stale_outputs(output_folder, subjects, {s for c in candidates.values() for s, _ in c})

        extra_inputs = (plans_file, dataset_json_file)
        extra_fingerprints = [input_fingerprint(f) for f in extra_inputs]  # once, not once per subject
        jobs = [(output_folder, s, dataset[s]["images"], dataset[s]["label"], candidates[s], plans_manager,
                 configuration_manager, dataset_json, extra_inputs, extra_fingerprints) for s in subjects]
        num_candidates = sum(len(c) for c in candidates.values())
        print(f"Preprocessing {len(subjects)} subjects and {num_candidates} candidates of {dataset_name} "
              f"({configuration_name}) with {num_processes} process(es)")
        try:
            results = self._run_jobs(jobs, num_processes)
        finally:  # workers stopped by an error leave their temporary files behind
            self._remove_temporaries(output_folder)
        print(f"Subjects preprocessed: {sum(r[0] for r in results)} (others up to date), "
              f"candidates written: {sum(r[1] for r in results)}")

        self._write_dataset_files(raw_folder, preprocessed_folder, dataset, dataset_json["file_ending"])

    def _run_jobs(self, jobs: list[tuple], num_processes: int) -> list[tuple[bool, int]]:
        progress = tqdm(desc="Preprocessing subjects", total=len(jobs), disable=not self.show_progress_bar)
        results = []
        for result in map_unordered(self._run_job, jobs, num_processes):
            results.append(result)
            progress.update()
        progress.close()
        return results

    def _run_job(self, job: tuple) -> tuple[bool, int]:
        return self.run_subject(*job)

    @staticmethod
    def _remove_temporaries(output_folder: str) -> None:
        for folder in (output_folder, join(output_folder, PREPROCESSED_CANDIDATES_FOLDER),
                       join(output_folder, INPUTS_RECORD_FOLDER)):
            for name in os.listdir(folder):
                path = join(folder, name)
                if name.startswith(TEMPORARY_FOLDER_PREFIX) or is_temporary_name(name):
                    if isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    elif isfile(path):
                        os.remove(path)

    @classmethod
    def _remove_stale_outputs(cls, output_folder: str, subjects: Sequence[str], samples: set[str]) -> None:
        """Drop leftovers of interrupted runs and outputs of subjects or samples no longer in the dataset."""
        cls._remove_temporaries(output_folder)
        subjects = set(subjects)
        candidates_folder = join(output_folder, PREPROCESSED_CANDIDATES_FOLDER)
        records_folder = join(output_folder, INPUTS_RECORD_FOLDER)
        for folder in (output_folder, candidates_folder, records_folder):
            for name in os.listdir(folder):
                path = join(folder, name)
                if folder == candidates_folder and name.endswith(".npz") and name[:-4] not in samples:
                    os.remove(path)
                elif folder == output_folder and isfile(path):
                    identifier = next((name[:-len(s)] for s in sorted(SUBJECT_OUTPUT_SUFFIXES, key=len, reverse=True)
                                       if name.endswith(s)), None)
                    if identifier is not None and identifier not in subjects:
                        os.remove(path)
                elif folder == records_folder and name.endswith(".json") and name[:-5] not in subjects:
                    os.remove(path)

    @staticmethod
    def _write_dataset_files(raw_folder: str, preprocessed_folder: str, dataset: dict, file_ending: str) -> None:
        """qc_targets.csv, gt_segmentations/ (as nnU-Net) and splits_final.json (folds by subject). The copies
        are renewed when their bytes differ from the source's, whatever the modification times say."""
        targets_source, targets_copy = join(raw_folder, QC_TARGETS_FILE), join(preprocessed_folder, QC_TARGETS_FILE)
        if not is_complete_copy(targets_source, targets_copy):
            copy_atomically(targets_source, targets_copy)

        gt_folder = join(preprocessed_folder, "gt_segmentations")
        os.makedirs(gt_folder, exist_ok=True)
        for subject, files in dataset.items():
            target = join(gt_folder, subject + file_ending)
            if not is_complete_copy(files["label"], target):
                copy_atomically(files["label"], target)

        subjects = sorted(dataset)
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
