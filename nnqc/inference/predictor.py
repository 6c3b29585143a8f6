"""nnQCPredictor: segmentation quality without ground truth, shaped like nnU-Net's nnUNetPredictor.

Per case: preprocessing identical to training (nnU-Net's DefaultPreprocessor for the images, the same crop
and segmentation resampling for the assessed segmentation), one forward pass per fold, the ensemble (mean
and sd of DSC and NSD, majority vote of the SEMs, paper §3.1), and the SEMs restored to the input's exact
geometry as one bit-encoded label map (bit c set where region c is predicted wrong).
"""
from __future__ import annotations

import json
import multiprocessing
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice
from batchgenerators.utilities.file_and_folder_operations import isdir, isfile, join, load_json, subdirs
from nnunetv2.utilities.helpers import dummy_context
from tqdm import tqdm

from nnqc.atomic_files import replace_atomically, write_text_atomically
from nnqc.calibration.calibrated_quality import CALIBRATED_COLUMNS, calibrated_quality
from nnqc.calibration.calibration_file import (
    CALIBRATION_FILE,
    Calibration,
    CalibrationError,
    calibration_folds,
    load_or_build_calibration,
    read_calibration_file,
)
from nnqc.calibration.conformal import DEFAULT_ALPHA, check_alpha
from nnqc.calibration.decision import FAIL, REVIEW
from nnqc.calibration.fold_coverage import TRAINING_RANGE_FILE, ensemble_coverage
from nnqc.calibration.training_range import TrainingCoverage, case_statistics, out_of_training_range
from nnqc.checkpoint_files import UnsafeCheckpointError, load_checkpoint
from nnqc.cpu_features import cpu_has_native_bf16
from nnqc.error_messages import one_line
from nnqc.evaluation.report import EVALUATION_CSV, EVALUATION_JSON, REPORT_HTML, RISK_COVERAGE_PNG, SCATTER_PNGS
from nnqc.geometry import properties_mismatch
from nnqc.inference.case_failures import (
    ERROR,
    ERRORS_LOG,
    CaseError,
    DeviceUnusableError,
    device_is_unusable,
    errors_log_text,
    recover_after,
    status_kind,
    unexpected,
)
from nnqc.inference.input_fingerprints import CASE_RESULTS_FOLDER, changed_inputs, input_fingerprints
from nnqc.inference.input_folder import check_input_folders
from nnqc.input_files import InputFileError, check_input_file, check_same_grid, resampling_problem
from nnqc.metrics.regions import allowed_labels, get_regions, nsd_tolerance_mm
from nnqc.metrics.sem import decode_sem_bits, encode_sem_bits
from nnqc.model_sharing.model_metadata import METADATA_FILE
from nnqc.preprocessing.cropping import (
    Window,
    crop_or_pad_to_window,
    foreground_window,
    undo_crop_or_pad_to_window,
    window_covers,
)
from nnqc.preprocessing.preprocessor import QCDatasetError, nnQCPlansManager, nnQCPreprocessor
from nnqc.trainer_lookup import get_trainer_class
from nnqc.training.qc_inputs import network_input
from nnqc.trusted_classes import UntrustedClassError

SUMMARY_CSV, SUMMARY_JSON, SETTINGS_JSON = "qc_summary.csv", "qc_summary.json", "predict_settings.json"
DEFAULT_FLAG_BELOW = 0.7
# what a run's results depend on: --continue_prediction must use the same, and -num_parts runs merge only when
# their settings (and number of parts) agree
CONTRACT_SETTINGS = ("images_folder", "segmentations_folder", "model_folder", "dataset", "trainer", "plans",
                     "configuration", "folds", "checkpoint", "flag_below", "maps_written", "precision", "alpha",
                     "recalibration", "calibration")
# the outputs of nnQC_evaluate and the report describe one set of predictions: a run that changes it removes them
EVALUATION_OUTPUTS = (EVALUATION_CSV, EVALUATION_JSON, *SCATTER_PNGS.values(), RISK_COVERAGE_PNG, REPORT_HTML)
FINGERPRINT_FILE = "dataset_fingerprint.json"


@dataclass
class CaseFiles:
    case: str
    images: list[str]
    segmentation: str


def find_cases(images_folder: str, segmentations_folder: str, file_ending: str, num_channels: int
               ) -> tuple[list[CaseFiles], dict[str, str]]:
    """Cases with a segmentation, and {case: reason} for those that cannot be assessed (missing images,
    missing channels, or images without a segmentation)."""
    segmentations = sorted(f[:-len(file_ending)] for f in os.listdir(segmentations_folder)
                           if f.endswith(file_ending) and not f.startswith("."))
    images = {f[:-len(file_ending)] for f in os.listdir(images_folder) if f.endswith(file_ending)}
    image_cases = {name[:-5] for name in images if len(name) > 5 and name[-5] == "_" and name[-4:].isdigit()}
    cases, problems = [], {}
    for case in segmentations:
        files = [join(images_folder, f"{case}_{c:04d}{file_ending}") for c in range(num_channels)]
        missing = [os.path.basename(f) for f in files if not isfile(f)]
        if len(missing) == num_channels:
            problems[case] = f"no images in {images_folder} (expected {case}_0000{file_ending}, ...)"
        elif missing:
            problems[case] = f"missing channel file(s) {', '.join(missing)}"
        else:
            cases.append(CaseFiles(case, files, join(segmentations_folder, case + file_ending)))
    for case in sorted(image_cases - set(segmentations)):
        problems[case] = f"no segmentation {case}{file_ending} in {segmentations_folder}"
    return cases, problems


def check_output_folder(output_folder: str, *input_folders: str) -> None:
    """Outputs never go into (or above) an input folder: inputs are never written."""
    out = os.path.realpath(output_folder)
    for folder in input_folders:
        inp = os.path.realpath(folder)
        if out == inp or out.startswith(inp + os.sep) or inp.startswith(out + os.sep):
            raise ValueError(f"the output folder {output_folder} must not be, contain or lie inside the input "
                             f"folder {folder}")


def forward_precision(device: torch.device, fp32: bool = False) -> str:
    """How the network runs: "cuda autocast" (CUDA's default mixed precision) on a GPU, "bf16" autocast on a CPU
    with native bf16 (AMX, AVX-512 BF16; emulated bf16 would be slower than fp32), "fp32" otherwise or when asked."""
    if fp32:
        return "fp32"
    if device.type == "cuda":
        return "cuda autocast"
    if device.type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


class nnQCPredictor:
    """Load a trained nnQC model folder, then predict from files (nnQC_predict) or from numpy arrays."""

    def __init__(self, device: torch.device = torch.device("cuda"), verbose: bool = False, allow_tqdm: bool = True,
                 fp32: bool = False):
        """fp32: full precision everywhere; otherwise the forward passes run under CUDA's autocast on a GPU and
        bf16 autocast on CPUs that compute bf16 natively (about twice as fast, outputs within 0.01)."""
        self.device, self.verbose, self.allow_tqdm = device, verbose, allow_tqdm
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
            use_folds = sorted(d[5:] for d in subdirs(model_training_output_dir, prefix="fold_", join=False)
                               if isfile(join(model_training_output_dir, d, checkpoint_name)))
            if not use_folds:
                raise FileNotFoundError(f"no fold_X/{checkpoint_name} in {model_training_output_dir}")
        self.folds = [f if f == "all" else int(f) for f in use_folds]
        self.model_folder, self.checkpoint_name = os.path.abspath(model_training_output_dir), checkpoint_name
        self.dataset_json = load_json(join(model_training_output_dir, "dataset.json"))
        self.plans_manager = nnQCPlansManager(load_json(join(model_training_output_dir, "plans.json")))
        self.region_names, self.regions = get_regions(self.dataset_json)
        self.fold_weights = []
        for fold in self.folds:
            path = join(model_training_output_dir, f"fold_{fold}", checkpoint_name)
            checkpoint = load_checkpoint(path)  # data only: a shared model runs no code
            try:
                trainer_name, configuration_name = checkpoint["trainer_name"], checkpoint["init_args"]["configuration"]
            except (KeyError, TypeError) as e:
                raise UnsafeCheckpointError(f"{path} is not an nnQC checkpoint (no {e})") from None
            self.trainer_class = get_trainer_class(trainer_name, source=path)
            self.trainer_name, self.configuration_name = trainer_name, configuration_name
            self.fold_weights.append(checkpoint["network_weights"])
        self.configuration_manager = self.plans_manager.get_configuration(self.configuration_name)
        try:
            self.network = self.trainer_class.build_network_architecture(
                self.plans_manager, self.configuration_manager, 0, 0, False).to(self.device).eval()
        except UntrustedClassError as e:  # its message starts with "plans.json:": say which one
            raise UntrustedClassError(join(self.model_folder, str(e))) from None
        fingerprint_file = join(model_training_output_dir, FINGERPRINT_FILE)
        self.fingerprint = load_json(fingerprint_file) if isfile(fingerprint_file) else {}
        metadata_file = join(model_training_output_dir, METADATA_FILE)
        if not self.fingerprint.get("spacings") and isfile(metadata_file):
            # an installed model: its nnqc_model.json has the training spacings' range (the fingerprint stays home)
            spacing_range = load_json(metadata_file).get("training_spacing_range")
            if spacing_range:
                self.fingerprint = {**self.fingerprint, "spacings": [spacing_range["min"], spacing_range["max"]]}
        self.training_coverage = ensemble_coverage(self.model_folder, self.folds)
        self.load_calibration(recalibrate)

    def load_calibration(self, recalibrate: bool = True) -> None:
        """Calibration from the out-of-fold predictions of the loaded folds (of every cross-validation fold for
        fold_all, which has no held-out data of its own), built or refreshed in calibration.json.

        An exported model ships calibration.json without the predictions it was built from: it is used as
        shipped when it was built from exactly these folds. A model without any calibration data still predicts;
        calibration_status says why there are no intervals."""
        folds = (calibration_folds(self.model_folder) if "all" in self.folds
                 else sorted(f for f in self.folds if f != "all"))
        self.calibration = None
        try:
            data = load_or_build_calibration(self.model_folder, folds)
            how = "built or checked against the out-of-fold predictions"
        except CalibrationError as e:
            data = self._shipped_calibration(folds)
            if data is None:
                self.calibration_status = {"available": False, "reason": one_line(e)}
                return
            how = "as shipped with the model (its out-of-fold predictions are not in the model folder)"
        self.calibration = Calibration(data, recalibrate=recalibrate)
        self.calibration_status = {"available": True, "built_from": data["built_from"], "how": how,
                                   "num_samples": data["num_samples"], "saved": data.get("saved", True)}
        if "all" in self.folds:
            self.calibration_status["note"] = ("fold_all has no held-out data: calibrated on the cross-validation "
                                               "folds' out-of-fold predictions")

    def _shipped_calibration(self, folds: list[int]) -> dict | None:
        path = join(self.model_folder, CALIBRATION_FILE)
        if not folds or not isfile(path):
            return None
        data = read_calibration_file(path)  # a damaged one stops loading, naming the file: a broken model
        sources = data.get("built_from", {}).get("sources", [])
        if data.get("built_from", {}).get("folds") != folds or any(isfile(join(self.model_folder, s["file"]))
                                                                  for s in sources):
            return None  # built from other folds, or its sources are here and no longer match it
        return data

    def calibration_warnings(self, alpha: float) -> list[str]:
        """The Mondrian bins whose calibration samples are too few for a finite interval at 1 - alpha."""
        return self.calibration.shortfall(alpha) if self.calibration is not None else []

    # ---- preprocessing ------------------------------------------------------------------------------------------
    def preprocess_arrays(self, images: np.ndarray, segmentation: np.ndarray, properties: dict, name: str = "case"
                          ) -> tuple[np.ndarray, np.ndarray, dict]:
        """images (M, *S) and segmentation (1, *S) as nnU-Net's readers return them, with their properties
        ("spacing" at least) -> preprocessed images, candidate and the properties needed to export.

        The properties also say what the network will see (see `network_view`): "nnqc_window",
        "foreground_outside_view" and "partial_view".
        """
        if images.ndim != 4 or segmentation.ndim != 4:
            raise CaseError(f"{name}: expected 3D images and segmentation, got shapes {images.shape[1:]} and "
                            f"{segmentation.shape[1:]}")
        if images.shape[1:] != segmentation.shape[1:]:
            raise CaseError(f"{name}: image shape {images.shape[1:]} differs from segmentation shape "
                            f"{segmentation.shape[1:]}")
        if not np.all(np.isfinite(images)):
            raise CaseError(f"{name}: the image holds NaN or infinite values")
        expected = len(self.dataset_json["channel_names"])
        if images.shape[0] != expected:
            raise CaseError(f"{name}: {images.shape[0]} image channels, the model expects {expected}")
        problem = resampling_problem(images, properties["spacing"], self.configuration_manager.spacing,
                                     self.plans_manager.transpose_forward)
        if problem:
            raise CaseError(f"{name}: {problem}")
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
        """The window the network sees of a preprocessed case, and the fraction of the segmentation's foreground
        (input voxels) outside it: cut by the crop to the images' non-zero box or outside the window.

        A case larger than the fixed input gets the window centred on the candidate's foreground (see
        nnqc.preprocessing.cropping.foreground_window). An input voxel counts as seen when its centre falls inside
        the window mapped back through the resampling.
        """
        window = foreground_window(candidate[0] != 0, self.configuration_manager.patch_size)
        transposed = segmentation[0].transpose(self.plans_manager.transpose_forward) != 0
        total = int(np.count_nonzero(transposed))
        cropped = transposed[bounding_box_to_slice(properties["bbox_used_for_cropping"])]
        seen = []
        for (lo, hi), n_input, n_preprocessed in zip(window, cropped.shape, candidate.shape[1:]):
            factor = n_input / n_preprocessed
            start, stop = (int(np.clip(np.ceil(v * factor - 0.5), 0, n_input)) for v in (lo, hi))
            seen.append(slice(start, stop))
        inside = int(np.count_nonzero(cropped[tuple(seen)]))
        outside = 1 - inside / total if total else 0.0
        return {"nnqc_window": window, "foreground_outside_view": float(outside),
                "partial_view": bool(outside > 0 or not window_covers(window, candidate.shape[1:]))}

    def preprocess_files(self, case: CaseFiles) -> tuple[np.ndarray, np.ndarray, dict]:
        try:  # SimpleITK reads truncated files and NaN without complaint, and 2D/4D files as something else
            for file in (case.segmentation, *case.images):
                check_input_file(file)
            check_same_grid(case.images)  # nnU-Net's reader only warns when the channels' origins differ
        except InputFileError as e:
            raise CaseError(f"{case.case}: {e}") from None
        rw = self.plans_manager.image_reader_writer_class()
        fingerprints = input_fingerprints([*case.images, case.segmentation])
        try:
            images, properties = rw.read_images(case.images)
            segmentation, seg_properties = rw.read_seg(case.segmentation)
        except Exception as e:  # nnU-Net's readers raise plain errors on unreadable or inconsistent files
            raise CaseError(f"{case.case}: cannot read its files ({case.segmentation}, {case.images[0]}, ...): "
                            f"{one_line(e, with_type=True)}") from None
        if images.ndim != 4 or len(properties["spacing"]) != 3:
            raise CaseError(f"{case.case}: {case.images[0]} is not a 3D image")
        if segmentation.shape[1:] != images.shape[1:]:
            raise CaseError(f"{case.case}: the segmentation {case.segmentation} does not share the image geometry "
                            f"(shape {segmentation.shape[1:]} != {images.shape[1:]})")
        mismatch = properties_mismatch(seg_properties, properties)
        if mismatch:
            raise CaseError(f"{case.case}: the segmentation {case.segmentation} does not share the image geometry "
                            f"({mismatch})")
        data, candidate, properties = self.preprocess_arrays(images, segmentation, properties, case.case)
        properties["nnqc_inputs"] = fingerprints
        return data, candidate, properties

    # ---- prediction ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_preprocessed(self, data: np.ndarray, candidate: np.ndarray, window: Window | None = None) -> dict:
        """Ensemble over the loaded folds in preprocessed space: per-fold DSC/NSD and majority-voted SEMs.

        window: the part of the case the network sees (default: as network_view chooses it); the SEMs come back
        in the whole preprocessed case, zero outside the window."""
        if window is None:
            window = foreground_window(candidate[0] != 0, self.configuration_manager.patch_size)
        images = torch.from_numpy(crop_or_pad_to_window(data.astype(np.float32, copy=False), window))[None]
        labels = torch.from_numpy(crop_or_pad_to_window(candidate.astype(np.int16), window))[None]
        x = network_input(images, labels, self.regions).to(self.device)
        regression, votes = [], None
        for weights in self.fold_weights:
            self.network.load_state_dict(weights)
            with self.forward_context():
                reg, sem = self.network(x)
            if reg is not None:
                regression.append(reg[0].float().clamp(0, 1).cpu().numpy())
            if sem is not None:
                wrong = (sem[0] > 0).to(torch.uint8)
                votes = wrong if votes is None else votes + wrong
        sem = None
        if votes is not None:  # strict majority: a tie between an even number of folds is not an error
            sem = undo_crop_or_pad_to_window((votes * 2 > len(self.fold_weights)).cpu().numpy(), data.shape[1:],
                                             window)
        regression = np.array(regression) if regression else np.full((1, 2), np.nan)
        return {"dsc_per_fold": regression[:, 0], "nsd_per_fold": regression[:, 1], "sem": sem}

    def forward_context(self):
        """The autocast context of the forward passes for self.precision (see forward_precision)."""
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        if self.precision == "cuda autocast":
            return torch.autocast("cuda")
        return dummy_context()

    def restore_to_input_geometry(self, label_map: np.ndarray, properties: dict) -> np.ndarray:
        """Undo resampling, cropping and transposition of a preprocessed label map (*S') -> input array."""
        spacing = [properties["spacing"][i] for i in self.plans_manager.transpose_forward]
        resampled = self.configuration_manager.resampling_fn_seg(
            label_map[None], properties["shape_after_cropping_and_before_resampling"],
            self.configuration_manager.spacing, spacing)[0]
        full = np.zeros(properties["shape_before_cropping"], dtype=label_map.dtype)
        full[bounding_box_to_slice(properties["bbox_used_for_cropping"])] = resampled
        return full.transpose(self.plans_manager.transpose_backward)

    def predict_from_arrays(self, images: np.ndarray, segmentation: np.ndarray, properties: dict,
                            alpha: float = DEFAULT_ALPHA, flag_below: float = DEFAULT_FLAG_BELOW) -> dict:
        """Quality of one case from numpy arrays (M, *S) and (1, *S) with nnU-Net-style properties.

        Returns predicted dsc, dsc_sd, nsd, nsd_sd, sem: (C, *S) bool in the input's grid (None for networks
        without SEMs), what the network saw: foreground_outside_view (fraction of the segmentation's
        foreground it did not see) and partial_view (it saw less than the whole case), and "calibrated": the
        calibrated columns of the summary (see calibrated_row).
        """
        data, candidate, properties = self.preprocess_arrays(images, segmentation, properties)
        result = self.predict_preprocessed(data, candidate, properties["nnqc_window"])
        sem = result["sem"]
        if sem is not None:
            bits = self.restore_to_input_geometry(encode_sem_bits(sem), properties)
            sem = decode_sem_bits(bits, len(self.regions))
        ensemble = self._ensemble(result)
        return {**ensemble, "sem": sem, "partial_view": properties["partial_view"],
                "foreground_outside_view": properties["foreground_outside_view"],
                "calibrated": self.calibrated_row(ensemble["dsc"], ensemble["nsd"], properties, check_alpha(alpha),
                                                  flag_below)}

    @staticmethod
    def _ensemble(result: dict) -> dict:
        dsc, nsd = result["dsc_per_fold"], result["nsd_per_fold"]
        return {"dsc": float(np.mean(dsc)), "dsc_sd": float(np.std(dsc)), "nsd": float(np.mean(nsd)),
                "nsd_sd": float(np.std(nsd))}

    def calibrated_row(self, predicted_dsc: float, predicted_nsd: float, properties: dict,
                       alpha: float = DEFAULT_ALPHA, flag_below: float = DEFAULT_FLAG_BELOW) -> dict:
        """CALIBRATED_COLUMNS of one case (JSON-ready): recalibrated DSC/NSD, intervals at coverage 1 - alpha,
        the training-range check and the decision. A partial view is never a `pass` (the network did not see all
        of the segmentation), only `fail` when even its interval's upper bound is below the threshold. Without a
        calibration the calibrated values are missing and the decision is empty; the range check still runs."""
        check = out_of_training_range(properties["nnqc_case_statistics"], self.plans_manager.plans,
                                      self.fingerprint, self.training_coverage, self.configuration_name,
                                      list(self.dataset_json["channel_names"].values()))
        if self.calibration is None:
            return {**{c: None for c in CALIBRATED_COLUMNS}, "interval_finite": False,
                    "out_of_training_range": "; ".join(map(str, check.reasons)),
                    "not_checked": "; ".join(check.not_checked), "decision": ""}
        table = calibrated_quality(self.calibration, [predicted_dsc], [predicted_nsd], alpha, flag_below, [check])
        row = json.loads(table.to_json(orient="records"))[0]  # numpy -> Python, NaN -> None
        if properties["partial_view"] and row["decision"] != FAIL:
            row["decision"] = REVIEW
        return row

    def _finish_case(self, case: str, result: dict, properties: dict, output_folder: str, save_maps: bool,
                     flag_below: float, alpha: float = DEFAULT_ALPHA) -> None:
        """Summary row, SEM volumes and the SEM map in the input geometry; the row is written last, so a case
        counts as done only once its map is in place. Any failure skips the case with its reason."""
        try:
            row = {"case": case, **{f"predicted_{k}": v for k, v in self._ensemble(result).items()}}
            row["flagged"] = bool(row["predicted_dsc"] < flag_below) if np.isfinite(row["predicted_dsc"]) else False
            row["partial_view"] = properties["partial_view"]
            row["foreground_outside_view"] = properties["foreground_outside_view"]
            row.update(self.calibrated_row(row["predicted_dsc"], row["predicted_nsd"], properties, alpha,
                                           flag_below))
            if result["sem"] is not None:
                bits = self.restore_to_input_geometry(encode_sem_bits(result["sem"]), properties)
                voxel_ml = float(np.prod(properties["spacing"])) / 1000
                for c, name in enumerate(self.region_names):
                    row[f"sem_volume_ml_{name}"] = float(((bits >> c) & 1).sum() * voxel_ml)
                if save_maps:
                    rw = self.plans_manager.image_reader_writer_class()
                    replace_atomically(self._map_file(output_folder, case),
                                       lambda p: rw.write_seg(bits, p, properties))
            row["status"] = "ok"
            row["inputs"] = properties.get("nnqc_inputs", {})
        except Exception as e:
            self._record_error(output_folder, case, unexpected(e, f"{case}: writing its results failed"))
            return
        self._write_case_result(output_folder, row)

    def _map_file(self, output_folder: str, case: str) -> str:
        return join(output_folder, case + self.dataset_json["file_ending"])

    def _skip(self, output_folder: str, case: str, reason: str) -> None:
        """List the case as skipped with its reason; an error map of an earlier run of it goes."""
        if isfile(self._map_file(output_folder, case)):
            os.remove(self._map_file(output_folder, case))
        self._write_case_result(output_folder, {"case": case, "status": f"skipped: {reason}"})

    def _record_error(self, output_folder: str, case: str, error: Exception) -> None:
        """List the case as failed unexpectedly, with its traceback (for qc_errors.log); its old map goes."""
        if isfile(self._map_file(output_folder, case)):
            os.remove(self._map_file(output_folder, case))
        self._write_case_result(output_folder, {"case": case, "status": f"{ERROR}: {error}",
                                                "traceback": getattr(error, "details", "")})

    @staticmethod
    def _write_case_result(output_folder: str, row: dict) -> None:
        kind = status_kind(row["status"])
        if kind == ERROR:
            print(f"ERROR: {row['case']}: {row['status'][len(ERROR) + 2:]} (traceback in {ERRORS_LOG})")
        elif kind != "ok":
            print(f"WARNING: skipping {row['case']}: {row['status'][len('skipped: '):]}")
        write_text_atomically(join(output_folder, CASE_RESULTS_FOLDER, row["case"] + ".json"), json.dumps(row))

    @staticmethod
    def _say_partial_view(case: str, properties: dict, data_shape) -> None:
        if not properties["partial_view"]:
            return
        patch = tuple(int(hi - lo) for lo, hi in properties["nnqc_window"])
        larger = any(s > p for s, p in zip(data_shape, patch))
        print(f"NOTE: {case}: "
              + (f"larger than the network's input ({'x'.join(map(str, data_shape))} > {'x'.join(map(str, patch))} "
                 f"voxels after preprocessing): the window is centred on the segmentation's foreground; "
                 if larger else "")
              + f"{100 * properties['foreground_outside_view']:.1f} % of the segmentation's foreground lies outside "
                f"the network's view (outside the images' non-zero box or the window): DSC/NSD are predicted from "
                f"the part it sees, the error map is empty outside it (partial_view in the summary)")

    def predict_from_files(self, images_folder: str, segmentations_folder: str, output_folder: str,
                           save_maps: bool = True, flag_below: float = DEFAULT_FLAG_BELOW, num_parts: int = 1,
                           part_id: int = 0, continue_prediction: bool = False,
                           num_processes_preprocessing: int = 0, num_threads_export: int = 1,
                           alpha: float = DEFAULT_ALPHA) -> pd.DataFrame:
        """Assess every case of SEGMENTATIONS (CASE + file ending) with its images (CASE_XXXX + file ending).

        Every per-case problem, of any kind, skips the case and lists it with the reason; the summary is always
        written. Results per case are kept in OUT/qc_cases/ so that --continue_prediction (with the same settings
        only) and -num_parts/-part_id runs merge into one summary; any other run into a used OUT replaces its
        results, so the summary holds exactly this run's cases.
        With num_processes_preprocessing > 0, cases are read and preprocessed ahead in worker processes while
        the network runs; num_threads_export > 1 restores and writes maps in background threads.
        alpha: the intervals' coverage is 1 - alpha (with a calibration; see load_calibration).
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
        settings = self._settings(images_folder, segmentations_folder, save_maps, flag_below, num_parts, alpha)
        if self.calibration is None:
            print(f"WARNING: no calibration, so no intervals and no pass/review/fail decisions: "
                  f"{self.calibration_status['reason']}")
        for line in settings["calibration_warnings"]:
            print(f"WARNING: calibration: {line}")
        self._prepare_output_folder(output_folder, settings, {c.case for c in cases} | set(problems),
                                    continue_prediction)
        for case in sorted(problems)[part_id::num_parts]:
            self._skip(output_folder, case, problems[case])
        todo = [c for c in cases[part_id::num_parts]
                if not (continue_prediction and self._is_done(output_folder, c.case, save_maps))]
        try:
            self._predict_cases(todo, output_folder, save_maps, flag_below, num_processes_preprocessing,
                                num_threads_export, alpha)
        finally:  # also after an error no case caught (e.g. interrupted): the summary holds what is done
            table = self.write_summary(output_folder)
        return table

    def _is_done(self, output_folder: str, case: str, save_maps: bool) -> bool:
        """An earlier run of the same settings assessed the case from the files that are there now (skipped and
        failed cases, and those whose inputs changed or whose run recorded none, are assessed again)."""
        file = join(output_folder, CASE_RESULTS_FOLDER, case + ".json")
        if not isfile(file) or (save_maps and not isfile(self._map_file(output_folder, case))):
            return False
        with open(file) as f:
            record = json.load(f)
        if record.get("status") != "ok":
            return False
        changed = changed_inputs(record.get("inputs") or {})
        if changed or not record.get("inputs"):
            print(f"NOTE: {case}: " + (f"{', '.join(changed)} changed since it was assessed" if changed else
                                       "its earlier result records no input fingerprints") + ": assessed again")
            return False
        return True

    def _predict_cases(self, todo: list[CaseFiles], output_folder: str, save_maps: bool, flag_below: float,
                       num_processes_preprocessing: int, num_threads_export: int,
                       alpha: float = DEFAULT_ALPHA) -> None:
        with ExitStack() as stack:
            preprocessing = stack.enter_context(ProcessPoolExecutor(
                num_processes_preprocessing, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_preprocessing_worker,
                initargs=(self.plans_manager.plans, self.configuration_name, self.dataset_json))
            ) if num_processes_preprocessing > 0 else None
            export = stack.enter_context(ThreadPoolExecutor(num_threads_export)) if num_threads_export > 1 else None
            if preprocessing is not None:  # keep a few cases ahead, not the whole folder in memory
                ahead = num_processes_preprocessing + 1
                pending = deque(preprocessing.submit(_preprocess_in_worker, c) for c in todo[:ahead])
            exports = []
            for i, case in enumerate(tqdm(todo, desc="nnQC predict", disable=not self.allow_tqdm)):
                try:
                    if preprocessing is not None:
                        future = pending.popleft()
                        if i + ahead < len(todo):
                            pending.append(preprocessing.submit(_preprocess_in_worker, todo[i + ahead]))
                        try:
                            prepared = future.result()
                        except BrokenProcessPool:
                            # a worker died (often: out of memory); the rest is preprocessed here
                            print("WARNING: a preprocessing worker process died (out of memory?); preprocessing "
                                  "the remaining cases in this process")
                            preprocessing = None
                            prepared = _preprocess_or_error(self, case)
                    else:
                        prepared = _preprocess_or_error(self, case)
                    if isinstance(prepared, Exception):
                        raise prepared
                    data, candidate, properties = prepared
                    self._say_partial_view(case.case, properties, data.shape[1:])
                    result = self.predict_preprocessed(data, candidate, properties["nnqc_window"])
                except CaseError as e:
                    self._skip(output_folder, case.case, str(e))
                    continue
                except Exception as e:  # a bug, out of memory, ...: recorded as an error, the others go on
                    failure = unexpected(e, f"{case.case} ({case.segmentation}): prediction failed")
                    self._record_error(output_folder, case.case, failure)
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

    def _settings(self, images_folder: str, segmentations_folder: str, save_maps: bool, flag_below: float,
                  num_parts: int, alpha: float = DEFAULT_ALPHA) -> dict:
        calibrated = self.calibration is not None
        return {"images_folder": os.path.abspath(images_folder),
                "segmentations_folder": os.path.abspath(segmentations_folder),
                "model_folder": self.model_folder, "checkpoint": self.checkpoint_name,
                "dataset": self.plans_manager.dataset_name, "configuration": self.configuration_name,
                "folds": self.folds, "trainer": self.trainer_name, "plans": self.plans_manager.plans_name,
                "flag_below": flag_below, "maps_written": save_maps, "num_parts": num_parts,
                "precision": self.precision,
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

    @staticmethod
    def settings_differences(earlier: dict, settings: dict) -> list[str]:
        """The contract settings (CONTRACT_SETTINGS) in which `settings` differ from an earlier run's."""
        missing = "(not recorded)"
        return [f"{key} {earlier.get(key, missing)} -> {settings[key]}" for key in CONTRACT_SETTINGS
                if json.loads(json.dumps(earlier.get(key, missing))) != json.loads(json.dumps(settings[key]))]

    def _prepare_output_folder(self, output_folder: str, settings: dict, run_cases: set[str],
                               continue_prediction: bool) -> None:
        """Check --continue_prediction against the earlier run's settings, then remove the results that are not
        this run's: all of them for a new run; for a continued run or another part of the same -num_parts run,
        those of cases no longer among the inputs. Settings are written last."""
        settings_file = join(output_folder, SETTINGS_JSON)
        earlier = load_json(settings_file) if isfile(settings_file) else None
        differences = self.settings_differences(earlier, settings) if earlier is not None else []
        if continue_prediction and differences:
            raise ValueError(f"--continue_prediction into {output_folder}, whose earlier run used other settings: "
                             f"{'; '.join(differences)}. Use another output folder, or run without "
                             f"--continue_prediction to replace its results.")
        same_run = earlier is not None and not differences and (
            continue_prediction or (settings["num_parts"] > 1 and earlier.get("num_parts") == settings["num_parts"]))
        case_folder = join(output_folder, CASE_RESULTS_FOLDER)
        os.makedirs(case_folder, exist_ok=True)
        earlier_cases = {f[:-5] for f in os.listdir(case_folder) if f.endswith(".json") and not f.startswith(".")}
        stale = earlier_cases - run_cases if same_run else earlier_cases
        earlier_ending = (earlier or settings).get("file_ending", settings["file_ending"])
        for case in sorted(stale):
            for file in (join(output_folder, case + earlier_ending), join(case_folder, case + ".json")):
                if isfile(file):
                    os.remove(file)
        if stale or not same_run:
            for name in EVALUATION_OUTPUTS:
                if isfile(join(output_folder, name)):
                    os.remove(join(output_folder, name))
        write_text_atomically(settings_file, json.dumps(settings, indent=2))

    def write_summary(self, output_folder: str) -> pd.DataFrame:
        """qc_summary.csv/.json from every case result in OUT, worst predicted DSC first, skipped cases last."""
        folder = join(output_folder, CASE_RESULTS_FOLDER)
        rows = []
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json") and not name.startswith("."):
                with open(join(folder, name)) as f:
                    rows.append(json.load(f))
        columns = ["case", "predicted_dsc", "predicted_dsc_sd", "predicted_nsd", "predicted_nsd_sd", "flagged",
                   "partial_view", "foreground_outside_view", *CALIBRATED_COLUMNS,
                   *[f"sem_volume_ml_{n}" for n in self.region_names], "status"]
        table = pd.DataFrame(rows, columns=columns)
        table["_ok"] = table["status"] == "ok"
        table = table.sort_values(["_ok", "predicted_dsc", "case"], ascending=[False, True, True], kind="stable")
        table = table.drop(columns="_ok").reset_index(drop=True)
        write_text_atomically(join(output_folder, SUMMARY_CSV), table.to_csv(index=False))
        errors = errors_log_text(rows)
        if errors:
            write_text_atomically(join(output_folder, ERRORS_LOG), errors)
        elif isfile(join(output_folder, ERRORS_LOG)):
            os.remove(join(output_folder, ERRORS_LOG))
        settings = load_json(join(output_folder, SETTINGS_JSON))
        settings.pop("dataset_json", None)
        cases = json.loads(table.to_json(orient="records"))
        write_text_atomically(join(output_folder, SUMMARY_JSON),
                              json.dumps({"cases": cases, "settings": settings}, indent=2))
        return table


_WORKER_PREDICTOR = None


def _init_preprocessing_worker(plans: dict, configuration_name: str, dataset_json: dict) -> None:
    """A preprocessing-only predictor per worker process (no network)."""
    global _WORKER_PREDICTOR
    predictor = nnQCPredictor(torch.device("cpu"), allow_tqdm=False)
    predictor.plans_manager = nnQCPlansManager(plans)
    predictor.configuration_name = configuration_name
    predictor.configuration_manager = predictor.plans_manager.get_configuration(configuration_name)
    predictor.dataset_json = dataset_json
    predictor.region_names, predictor.regions = get_regions(dataset_json)
    _WORKER_PREDICTOR = predictor


def _preprocess_or_error(predictor: nnQCPredictor, case: CaseFiles):
    """The preprocessed case, or its failure as a value naming the case and its file (so that it crosses process
    boundaries intact): a CaseError for a named input problem, an UnexpectedCaseError with its traceback else."""
    try:
        return predictor.preprocess_files(case)
    except CaseError as e:
        return e
    except Exception as e:
        return unexpected(e, f"{case.case} ({case.segmentation}): preprocessing failed")


def _preprocess_in_worker(case: CaseFiles):
    return _preprocess_or_error(_WORKER_PREDICTOR, case)
