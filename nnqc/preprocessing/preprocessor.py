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

import blosc2
import numpy as np
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, load_pickle
from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
from nnunetv2.preprocessing.resampling.default_resampling import compute_new_shape
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
from nnqc.preprocessing.plans_manager import NORMALIZATION_SCHEMES, lookup, nnQCPlansManager
from nnqc.preprocessing.qc_dataset import (
    QCDatasetError,
    candidates_by_subject,
    qc_raw_folder,
    resolve_dataset_name,
)
from nnqc.preprocessing.readers import candidate_reader_writer
from nnqc.preprocessing.splits import write_splits
from nnqc.process_pool import map_unordered
from nnqc.qc_data.targets_table import TARGETS_CSV

PREPROCESSED_CANDIDATES_FOLDER = "candidates"
SUBJECT_OUTPUT_SUFFIXES = (".b2nd", "_seg.b2nd", ".pkl")  # the .pkl goes last: it marks a complete subject
# per subject, INPUTS_RECORD_FOLDER/SUBJ.json: the fingerprints of the files its outputs were made from. In a folder
# of their own: nnU-Net infers the dataset class from the one file ending (besides .pkl) of the data folder
INPUTS_RECORD_FOLDER = "inputs"
INPUTS_RECORD_FORMAT = 1
TEMPORARY_FOLDER_PREFIX = ".tmp_"  # scratch folders in which a subject's outputs are written together


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
            scheme = lookup(NORMALIZATION_SCHEMES, configuration_manager.normalization_schemes[c],
                             "normalization scheme")
            normalizer = scheme(use_mask_for_norm=configuration_manager.use_mask_for_norm[c],
                                intensityproperties=foreground_intensity_properties_per_channel[str(c)])
            data[c] = normalizer.run(data[c], seg[0])
        return data

    def preprocess_candidate(self, candidate_file: str, subject_properties: dict, preprocessed_shape: Sequence[int],
                             plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                             labels: Sequence[int]) -> np.ndarray:
        """Read a candidate file and bring it onto its preprocessed subject's grid: uint8 (1, *shape)."""
        seg, properties = candidate_reader_writer(plans_manager)().read_seg(candidate_file)
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
        """qc_targets.csv, gt_segmentations/ (as nnU-Net) and splits_final.json (folds by subject, see
        nnqc.preprocessing.splits). The copies are renewed when their bytes differ from the source's, whatever the
        modification times say."""
        targets_source, targets_copy = join(raw_folder, TARGETS_CSV), join(preprocessed_folder, TARGETS_CSV)
        if not is_complete_copy(targets_source, targets_copy):
            copy_atomically(targets_source, targets_copy)

        gt_folder = join(preprocessed_folder, "gt_segmentations")
        os.makedirs(gt_folder, exist_ok=True)
        for subject, files in dataset.items():
            target = join(gt_folder, subject + file_ending)
            if not is_complete_copy(files["label"], target):
                copy_atomically(files["label"], target)

        write_splits(raw_folder, preprocessed_folder, list(dataset))
