"""nnQCPredictor: segmentation quality without ground truth, shaped like nnU-Net's nnUNetPredictor.

Per case: preprocessing identical to training (nnU-Net's DefaultPreprocessor for the images, the same crop
and segmentation resampling for the assessed segmentation), one forward pass per fold, the ensemble (mean
and sd of DSC and NSD, majority vote of the SEMs, paper §3.1), and the SEMs restored to the input's exact
geometry as one bit-encoded label map (bit c set where region c is predicted wrong).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import numpy as np
import pandas as pd
import torch
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json
from tqdm import tqdm

from nnqc.atomic_files import replace_atomically
from nnqc.calibration.calibrated_quality import calibrated_case_row
from nnqc.calibration.calibration_file import Calibration
from nnqc.calibration.conformal import DEFAULT_ALPHA, check_alpha
from nnqc.calibration.fold_coverage import TRAINING_RANGE_FILE, ensemble_coverage
from nnqc.calibration.fusion import Fusion
from nnqc.calibration.region_quality import NO_PER_REGION_OUTPUTS, region_case_columns
from nnqc.calibration.training_range import TrainingCoverage, case_statistics, out_of_training_range
from nnqc.inference import forward
from nnqc.inference.case_failures import CaseError, DeviceUnusableError, device_is_unusable, recover_after, unexpected
from nnqc.inference.cases import CaseFiles, check_case_arrays, find_cases, read_case
from nnqc.inference.ensemble_members import agreement_columns, check_member_folders, fused_columns, member_files
from nnqc.inference.input_folder import check_input_folders
from nnqc.inference.model_loading import (
    FINGERPRINT_FILE,
    autocast_context,
    build_network,
    find_folds,
    forward_precision,
    load_fold_checkpoints,
    load_model_calibration,
    training_fingerprint,
)
from nnqc.inference.output_folder import (
    case_is_done,
    check_output_folder,
    map_file,
    prepare_output_folder,
    record_case_error,
    settings_differences,
    skip_case,
    write_case_result,
    write_qc_summary,
)
from nnqc.inference.preprocessing_workers import CasePreprocessing
from nnqc.inference.worst_slices import DEFAULT_NUM_WORST_SLICES, worst_slices
from nnqc.metrics.regions import allowed_labels, get_regions, nsd_tolerance_mm
from nnqc.metrics.sem import decode_sem_bits, encode_sem_bits
from nnqc.model_sharing.model_metadata import METADATA_FILE
from nnqc.network_architecture.regression_outputs import has_per_region_outputs
from nnqc.preprocessing.cropping import Window, foreground_window
from nnqc.preprocessing.plans_manager import nnQCPlansManager
from nnqc.preprocessing.preprocessor import nnQCPreprocessor
from nnqc.preprocessing.qc_dataset import QCDatasetError
from nnqc.training.final_validation import mirroring_label

DEFAULT_FLAG_BELOW = 0.7


class nnQCPredictor:
    """Load a trained nnQC model folder, then predict from files (nnQC_predict) or from numpy arrays."""

    def __init__(self, device: torch.device = torch.device("cuda"), verbose: bool = False, allow_tqdm: bool = True,
                 fp32: bool = False, use_mirroring: bool = True,
                 num_worst_slices: int = DEFAULT_NUM_WORST_SLICES):
        """fp32: full precision everywhere; otherwise the forward passes run under CUDA's autocast on a GPU and
        bf16 autocast on CPUs that compute bf16 natively (about twice as fast, outputs within 0.01).
        use_mirroring: test-time mirroring over the axes the model was trained to mirror (8 forward passes per
        fold instead of 1), as nnUNetPredictor and as the final validation that calibrates the model; it ranks
        real segmenters' outputs better (documentation/benchmarks.md). num_worst_slices: per case and region, how
        many slices with the most predicted error the summary lists (nnqc.inference.worst_slices)."""
        self.device, self.verbose, self.allow_tqdm = device, verbose, allow_tqdm
        self.use_mirroring = use_mirroring
        self.ensemble_members: list[str] = []
        self.fusion: Fusion | None = None
        self.fusion_file: str | None = None
        if num_worst_slices < 1:
            raise ValueError(f"num_worst_slices must be at least 1, got {num_worst_slices}")
        self.num_worst_slices = num_worst_slices
        # whether the loaded model predicts every region's DSC and NSD (models trained before it did not)
        self.per_region_outputs = False
        self.mirror_axes: tuple[int, ...] = ()
        self.precision = forward_precision(device, fp32)
        self.network = self.fold_weights = self.plans_manager = self.configuration_manager = None
        self.dataset_json = self.regions = self.region_names = None
        self.trainer_name = self.configuration_name = self.model_folder = self.checkpoint_name = None
        self.trainer_class: type | None = None
        self.folds: list = []
        self.preprocessor = nnQCPreprocessor(verbose=verbose)
        # calibrated decisions (see nnqc.calibration): None when the model has no out-of-fold predictions, with
        # the reason in calibration_status
        self.calibration: Calibration | None = None
        self.calibration_status: dict = {"available": False, "reason": "no model loaded"}
        self.fingerprint: dict = {}
        # the labels and image intensities every loaded fold trained on
        self.training_coverage = TrainingCoverage(labels_unknown="no model loaded",
                                                  intensities_unknown="no model loaded")

    # ---- model --------------------------------------------------------------------------------------------------
    def initialize_from_trained_model_folder(self, model_training_output_dir: str, use_folds=None,
                                             checkpoint_name: str = "checkpoint_final.pth",
                                             recalibrate: bool = True) -> None:
        """Like nnUNetPredictor's: the folder holds plans.json, dataset.json and fold_X/checkpoint_name; the
        calibration comes from the folds' out-of-fold predictions (see load_calibration)."""
        if not isdir(model_training_output_dir):
            raise FileNotFoundError(f"model folder {model_training_output_dir} does not exist: train first")
        if use_folds is None:
            use_folds = find_folds(model_training_output_dir, checkpoint_name)
        self.folds = [f if f == "all" else int(f) for f in use_folds]
        self.model_folder, self.checkpoint_name = os.path.abspath(model_training_output_dir), checkpoint_name
        self.dataset_json = load_json(join(model_training_output_dir, "dataset.json"))
        self.plans_manager = nnQCPlansManager(load_json(join(model_training_output_dir, "plans.json")))
        self.region_names, self.regions = get_regions(self.dataset_json)
        checkpoints = load_fold_checkpoints(model_training_output_dir, self.folds, checkpoint_name)
        self.trainer_class, self.fold_weights = checkpoints.trainer_class, checkpoints.weights
        self.mirror_axes = checkpoints.mirror_axes if self.use_mirroring else ()
        self.trainer_name, self.configuration_name = checkpoints.trainer_name, checkpoints.configuration_name
        self.configuration_manager = self.plans_manager.get_configuration(self.configuration_name)
        self.per_region_outputs = has_per_region_outputs(checkpoints.num_regression_outputs, len(self.regions))
        self.network = build_network(self.trainer_class, self.plans_manager, self.configuration_manager,
                                     self.model_folder, self.device, checkpoints.num_regression_outputs)
        self.fingerprint = training_fingerprint(model_training_output_dir)
        self.training_coverage = ensemble_coverage(self.model_folder, self.folds)
        self.load_calibration(recalibrate)

    def load_calibration(self, recalibrate: bool = True) -> None:
        """Calibration from the out-of-fold predictions of the loaded folds (of every cross-validation fold for
        fold_all, which has no held-out data of its own), built or refreshed in calibration.json.

        An exported model ships calibration.json without the predictions it was built from: it is used as
        shipped when it was built from exactly these folds. A model without any calibration data still predicts;
        calibration_status says why there are no intervals."""
        self.calibration = None  # also when loading fails below
        self.calibration, self.calibration_status = load_model_calibration(self.model_folder, self.folds,
                                                                           recalibrate)

    def calibration_warnings(self, alpha: float) -> list[str]:
        """The Mondrian bins whose calibration samples are too few for a finite interval at 1 - alpha, and a
        calibration made from predictions mirrored otherwise than these."""
        if self.calibration is None:
            return []
        mismatch = self.calibration.mirroring_mismatch(mirroring_label(self.mirror_axes))
        return ([mismatch] if mismatch else []) + self.calibration.shortfall(alpha)

    # ---- preprocessing ------------------------------------------------------------------------------------------
    def preprocess_arrays(self, images: np.ndarray, segmentation: np.ndarray, properties: dict, name: str = "case"
                          ) -> tuple[np.ndarray, np.ndarray, dict]:
        """images (M, *S) and segmentation (1, *S) as nnU-Net's readers return them, with their properties
        ("spacing" at least) -> preprocessed images, candidate and the properties needed to export.

        The properties also say what the network will see (see `network_view`): "nnqc_window",
        "foreground_outside_view" and "partial_view".
        """
        check_case_arrays(images, segmentation, properties["spacing"], name, len(self.dataset_json["channel_names"]),
                          self.configuration_manager.spacing, self.plans_manager.transpose_forward)
        properties = dict(properties)
        data, _, properties = self.preprocessor.run_case_npy(images, None, properties, self.plans_manager,
                                                             self.configuration_manager, self.dataset_json)
        # for the training-range checks; it pickles, so it crosses the preprocessing workers with the data
        properties["nnqc_case_statistics"] = case_statistics(segmentation, properties, data.shape[1:])
        try:
            candidate = self.preprocessor.candidate_to_subject_grid(
                segmentation, properties, data.shape[1:], self.plans_manager, self.configuration_manager,
                allowed_labels(self.dataset_json), name)
        except QCDatasetError as e:
            raise CaseError(str(e)) from e
        properties.update(self.network_view(segmentation, candidate, properties))
        return data, candidate, properties

    def network_view(self, segmentation: np.ndarray, candidate: np.ndarray, properties: dict) -> dict:
        """The window the network sees of a preprocessed case and the fraction of the segmentation's foreground
        outside it (see nnqc.inference.forward.network_view)."""
        return forward.network_view(segmentation, candidate, properties, self.configuration_manager.patch_size,
                                    self.plans_manager.transpose_forward)

    def preprocess_files(self, case: CaseFiles) -> tuple[np.ndarray, np.ndarray, dict]:
        """preprocess_arrays of a case's files, after checking them (a CaseError names what is wrong)."""
        images, segmentation, properties, fingerprints = read_case(
            case, self.plans_manager.image_reader_writer_class())
        data, candidate, properties = self.preprocess_arrays(images, segmentation, properties, case.case)
        properties["nnqc_inputs"] = fingerprints
        return data, candidate, properties

    # ---- prediction ---------------------------------------------------------------------------------------------
    def predict_preprocessed(self, data: np.ndarray, candidate: np.ndarray, window: Window | None = None) -> dict:
        """Ensemble over the loaded folds in preprocessed space: per-fold DSC/NSD and majority-voted SEMs.

        window: the part of the case the network sees (default: as network_view chooses it); the SEMs come back
        in the whole preprocessed case, zero outside the window."""
        if window is None:
            window = foreground_window(candidate[0] != 0, self.configuration_manager.patch_size)
        return forward.predict_folds(self.network, self.fold_weights, data, candidate, window, self.regions,
                                     self.device, self.forward_context, self.mirror_axes)

    def forward_context(self):
        """The autocast context of the forward passes for self.precision (see forward_precision)."""
        return autocast_context(self.precision)

    def restore_to_input_geometry(self, label_map: np.ndarray, properties: dict) -> np.ndarray:
        """Undo resampling, cropping and transposition of a preprocessed label map (*S') -> input array."""
        return forward.restore_to_input_geometry(label_map, properties, self.plans_manager,
                                                 self.configuration_manager)

    def predict_from_arrays(self, images: np.ndarray, segmentation: np.ndarray, properties: dict,
                            alpha: float = DEFAULT_ALPHA, flag_below: float = DEFAULT_FLAG_BELOW) -> dict:
        """Quality of one case from numpy arrays (M, *S) and (1, *S) with nnU-Net-style properties.

        Returns predicted dsc, dsc_sd, nsd, nsd_sd, sem: (C, *S) bool in the input's grid (None for networks
        without SEMs), what the network saw: foreground_outside_view (fraction of the segmentation's
        foreground it did not see) and partial_view (it saw less than the whole case), "calibrated": the
        calibrated columns of the summary (see calibrated_row), "regions": the per-region columns (see
        region_row) and "worst_slices" (None without SEMs; see nnqc.inference.worst_slices).
        """
        data, candidate, properties = self.preprocess_arrays(images, segmentation, properties)
        result = self.predict_preprocessed(data, candidate, properties["nnqc_window"])
        sem, slices = result["sem"], None
        if sem is not None:
            bits = self.restore_to_input_geometry(encode_sem_bits(sem), properties)
            sem = decode_sem_bits(bits, len(self.regions))
            slices = worst_slices(bits, self.region_names, properties["spacing"], self.num_worst_slices)
        ensemble = forward.ensemble_quality(result)
        return {**ensemble, "sem": sem, "partial_view": properties["partial_view"],
                "foreground_outside_view": properties["foreground_outside_view"],
                "calibrated": self.calibrated_row(ensemble["dsc"], ensemble["nsd"], properties, check_alpha(alpha),
                                                  flag_below),
                "regions": self.region_row(result, properties, check_alpha(alpha), flag_below),
                "worst_slices": slices}

    def calibrated_row(self, predicted_dsc: float, predicted_nsd: float, properties: dict,
                       alpha: float = DEFAULT_ALPHA, flag_below: float = DEFAULT_FLAG_BELOW) -> dict:
        """CALIBRATED_COLUMNS of one case (JSON-ready): recalibrated DSC/NSD, intervals at coverage 1 - alpha,
        the training-range check and the decision (see calibrated_case_row; the range check runs without a
        calibration too)."""
        return calibrated_case_row(self.calibration, predicted_dsc, predicted_nsd, self.range_check(properties),
                                   properties["partial_view"], alpha, flag_below)

    def range_check(self, properties: dict):
        """The case's training-range check (see nnqc.calibration.training_range)."""
        return out_of_training_range(properties["nnqc_case_statistics"], self.plans_manager.plans,
                                     self.fingerprint, self.training_coverage, self.configuration_name,
                                     list(self.dataset_json["channel_names"].values()))

    def region_row(self, result: dict, properties: dict, alpha: float = DEFAULT_ALPHA,
                   flag_below: float = DEFAULT_FLAG_BELOW) -> dict:
        """The per-region columns of one case (JSON-ready): each region's predicted, calibrated DSC and NSD, its
        intervals and decision, and the worst region (see nnqc.calibration.region_quality); empty for a model
        without per-region outputs."""
        regions = forward.region_ensemble(result, len(self.regions))
        return region_case_columns(self.calibration, self.region_names, *(regions or (None, None)),
                                   self.range_check(properties), properties["partial_view"], alpha, flag_below)

    # ---- a folder of cases --------------------------------------------------------------------------------------
    def predict_from_files(self, images_folder: str, segmentations_folder: str, output_folder: str,
                           save_maps: bool = True, flag_below: float = DEFAULT_FLAG_BELOW, num_parts: int = 1,
                           part_id: int = 0, continue_prediction: bool = False,
                           num_processes_preprocessing: int = 0, num_threads_export: int = 1,
                           alpha: float = DEFAULT_ALPHA, ensemble_members: Sequence[str] = (),
                           fusion_file: str | None = None) -> pd.DataFrame:
        """Assess every case of SEGMENTATIONS (CASE + file ending) with its images (CASE_XXXX + file ending).

        Every per-case problem, of any kind, skips the case and lists it with the reason; the summary is always
        written. Results per case are kept in OUT/qc_cases/ so that --continue_prediction (with the same settings
        only) and -num_parts/-part_id runs merge into one summary; any other run into a used OUT replaces its
        results, so the summary holds exactly this run's cases.
        With num_processes_preprocessing > 0, cases are read and preprocessed ahead in worker processes while
        the network runs; num_threads_export > 1 restores and writes maps in background threads.
        alpha: the intervals' coverage is 1 - alpha (with a calibration; see load_calibration).
        ensemble_members: folders of the segmenter's ensemble members (each holding every case): the agreement
        columns; fusion_file (nnQC_evaluate's qc_fusion.json): the fused DSC, its interval and the decision from
        them (see nnqc.inference.ensemble_members).
        """
        alpha = check_alpha(alpha)
        check_input_folders(images_folder, segmentations_folder, self.dataset_json)
        for folder in (images_folder, segmentations_folder):
            if not isdir(folder):
                raise FileNotFoundError(f"input folder {folder} does not exist")
        check_output_folder(output_folder, images_folder, segmentations_folder)
        if not 0 <= part_id < num_parts:
            raise ValueError(f"-part_id must lie in [0, {num_parts - 1}]")
        file_ending = self.dataset_json["file_ending"]
        cases, problems = find_cases(images_folder, segmentations_folder, file_ending,
                                     len(self.dataset_json["channel_names"]))
        if not cases and not problems:
            raise FileNotFoundError(f"no segmentation ({file_ending}) in {segmentations_folder}")
        if fusion_file is not None and not ensemble_members:
            raise ValueError("--fusion needs --ensemble_members: the fused DSC combines nnQC's with the agreement")
        self.ensemble_members = [os.path.abspath(f) for f in ensemble_members]
        if self.ensemble_members:
            check_member_folders(self.ensemble_members, {c.case: c.segmentation for c in cases}, file_ending)
        self.fusion = Fusion.load(fusion_file) if fusion_file is not None else None
        self.fusion_file = os.path.abspath(fusion_file) if fusion_file is not None else None
        settings = self._settings(images_folder, segmentations_folder, save_maps, flag_below, num_parts, alpha)
        if self.calibration is None:
            print(f"WARNING: no calibration, so no intervals and no pass/review/fail decisions: "
                  f"{self.calibration_status['reason']}")
        for line in settings["calibration_warnings"]:
            print(f"WARNING: calibration: {line}")
        if not self.per_region_outputs:
            print(f"NOTE: {NO_PER_REGION_OUTPUTS}")
        prepare_output_folder(output_folder, settings, {c.case for c in cases} | set(problems), continue_prediction)
        for case in sorted(problems)[part_id::num_parts]:
            skip_case(output_folder, case, problems[case], file_ending)
        todo = [c for c in cases[part_id::num_parts]
                if not (continue_prediction and case_is_done(output_folder, c.case, file_ending, save_maps))]
        try:
            self._predict_cases(todo, output_folder, save_maps, flag_below, num_processes_preprocessing,
                                num_threads_export, alpha)
        finally:  # also after an error no case caught (e.g. interrupted): the summary holds what is done
            table = self.write_summary(output_folder)
        return table

    def _predict_cases(self, todo: list[CaseFiles], output_folder: str, save_maps: bool, flag_below: float,
                       num_processes_preprocessing: int, num_threads_export: int,
                       alpha: float = DEFAULT_ALPHA) -> None:
        """Preprocess (ahead in workers, see CasePreprocessing), predict and finish each case (in export threads
        with num_threads_export > 1); a case's failure is recorded and the others go on, unless the device can
        run nothing after it."""
        file_ending = self.dataset_json["file_ending"]
        with ExitStack() as stack:
            preprocessing = stack.enter_context(CasePreprocessing(self, todo, num_processes_preprocessing))
            export = stack.enter_context(ThreadPoolExecutor(num_threads_export)) if num_threads_export > 1 else None
            exports = []
            for i, case in enumerate(tqdm(todo, desc="nnQC predict", disable=not self.allow_tqdm)):
                try:
                    prepared = preprocessing.prepared(i)
                    if isinstance(prepared, Exception):
                        raise prepared
                    data, candidate, properties = prepared
                    note = forward.partial_view_note(case.case, properties, data.shape[1:])
                    if note is not None:
                        print(note)
                    result = self.predict_preprocessed(data, candidate, properties["nnqc_window"])
                    if self.ensemble_members:
                        result["agreement"] = agreement_columns(
                            case.segmentation, member_files(self.ensemble_members, case.case, file_ending))
                except CaseError as e:
                    skip_case(output_folder, case.case, str(e), file_ending)
                    continue
                except Exception as e:  # a bug, out of memory, ...: recorded as an error, the others go on
                    failure = unexpected(e, f"{case.case} ({case.segmentation}): prediction failed")
                    record_case_error(output_folder, case.case, failure, file_ending)
                    if device_is_unusable(failure):
                        raise DeviceUnusableError(
                            f"{failure}: the device cannot run anything after this error, so the run stops here; "
                            f"the cases done so far are in the summary (--continue_prediction goes on from "
                            f"them)") from e
                    recover_after(failure, self.device)
                    continue
                args = (case.case, result, properties, output_folder, save_maps, flag_below, alpha)
                if export is not None:
                    exports.append(export.submit(self._finish_case, *args))
                else:
                    self._finish_case(*args)
            for future in exports:
                future.result()

    def _finish_case(self, case: str, result: dict, properties: dict, output_folder: str, save_maps: bool,
                     flag_below: float, alpha: float = DEFAULT_ALPHA) -> None:
        """Summary row, SEM volumes and the SEM map in the input geometry; the row is written last, so a case
        counts as done only once its map is in place. Any failure records the case as an error."""
        file_ending = self.dataset_json["file_ending"]
        try:
            row = {"case": case, **{f"predicted_{k}": v for k, v in forward.ensemble_quality(result).items()}}
            row["flagged"] = bool(row["predicted_dsc"] < flag_below) if np.isfinite(row["predicted_dsc"]) else False
            row["partial_view"] = properties["partial_view"]
            row["foreground_outside_view"] = properties["foreground_outside_view"]
            row.update(self.calibrated_row(row["predicted_dsc"], row["predicted_nsd"], properties, alpha,
                                           flag_below))
            if "agreement" in result:
                row.update(result["agreement"])
                if self.fusion is not None:
                    reasons = [row["out_of_training_range"]] if row.get("out_of_training_range") else []
                    row.update(fused_columns(self.fusion, row, alpha, flag_below, reasons))
            row.update(self.region_row(result, properties, alpha, flag_below))
            row["worst_slices"] = None
            if result["sem"] is not None:
                bits = self.restore_to_input_geometry(encode_sem_bits(result["sem"]), properties)
                row.update(forward.sem_volumes_ml(bits, self.region_names, properties["spacing"]))
                row["worst_slices"] = worst_slices(bits, self.region_names, properties["spacing"],
                                                   self.num_worst_slices)
                if save_maps:
                    rw = self.plans_manager.image_reader_writer_class()
                    replace_atomically(map_file(output_folder, case, file_ending),
                                       lambda p: rw.write_seg(bits, p, properties))
            row["status"] = "ok"
            row["inputs"] = properties.get("nnqc_inputs", {})
        except Exception as e:
            record_case_error(output_folder, case, unexpected(e, f"{case}: writing its results failed"), file_ending)
            return
        write_case_result(output_folder, row)

    def _settings(self, images_folder: str, segmentations_folder: str, save_maps: bool, flag_below: float,
                  num_parts: int, alpha: float = DEFAULT_ALPHA) -> dict:
        """predict_settings.json: what the run's results depend on (CONTRACT_SETTINGS) and what they were
        checked against, so that continued and partial runs merge only results made alike."""
        calibrated = self.calibration is not None
        return {"images_folder": os.path.abspath(images_folder),
                "segmentations_folder": os.path.abspath(segmentations_folder),
                "model_folder": self.model_folder, "checkpoint": self.checkpoint_name,
                "dataset": self.plans_manager.dataset_name, "configuration": self.configuration_name,
                "folds": self.folds, "trainer": self.trainer_name, "plans": self.plans_manager.plans_name,
                "flag_below": flag_below, "maps_written": save_maps, "num_parts": num_parts,
                "precision": self.precision, "test_time_mirroring": list(self.mirror_axes),
                "ensemble_members": self.ensemble_members, "fusion": self.fusion_file,
                "per_region_outputs": self.per_region_outputs, "num_worst_slices": self.num_worst_slices,
                "file_ending": self.dataset_json["file_ending"], "region_names": self.region_names,
                "regions": [list(r) for r in self.regions],
                "nsd_tolerance_mm": nsd_tolerance_mm(self.dataset_json),
                "alpha": alpha, "coverage": 1 - alpha,
                "recalibration": bool(calibrated and self.calibration.recalibrate),
                "calibration": self.calibration_status, "calibration_warnings": self.calibration_warnings(alpha),
                "training_range_checked_against": {
                    "spacing": FINGERPRINT_FILE if isfile(join(self.model_folder, FINGERPRINT_FILE))
                    else METADATA_FILE if self.fingerprint.get("spacings") else None,
                    "cropped_size": "plans.json", "intensity and labels": f"fold_X/{TRAINING_RANGE_FILE}"},
                "training_coverage": {"labels": sorted(self.training_coverage.labels)
                                      if self.training_coverage.labels is not None else None,
                                      "image_intensities": self.training_coverage.intensities},
                "dataset_json": self.dataset_json}

    settings_differences = staticmethod(settings_differences)

    def write_summary(self, output_folder: str) -> pd.DataFrame:
        """qc_summary.csv/.json from every case result in OUT, worst predicted DSC first, skipped cases last."""
        return write_qc_summary(output_folder, self.region_names)
