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
from nnqc.cpu_features import cpu_has_native_bf16
from nnqc.metrics.regions import allowed_labels, get_regions, nsd_tolerance_mm
from nnqc.metrics.sem import decode_sem_bits, encode_sem_bits
from nnqc.preprocessing.preprocessor import QCDatasetError, geometry_mismatch, nnQCPlansManager, nnQCPreprocessor
from nnqc.trainer_lookup import get_trainer_class
from nnqc.training.data_loader import centre_crop_or_pad, undo_centre_crop_or_pad
from nnqc.training.qc_inputs import network_input

SUMMARY_CSV, SUMMARY_JSON, SETTINGS_JSON = "qc_summary.csv", "qc_summary.json", "predict_settings.json"
CASE_RESULTS_FOLDER = "qc_cases"
DEFAULT_FLAG_BELOW = 0.7


class CaseError(RuntimeError):
    """A problem with one case: the case is skipped and listed in the summary with this reason."""


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
        self.trainer_name = self.configuration_name = None
        self.folds: list = []
        self.preprocessor = nnQCPreprocessor(verbose=verbose)

    # ---- model --------------------------------------------------------------------------------------------------
    def initialize_from_trained_model_folder(self, model_training_output_dir: str, use_folds=None,
                                             checkpoint_name: str = "checkpoint_final.pth") -> None:
        """Like nnUNetPredictor's: the folder holds plans.json, dataset.json and fold_X/checkpoint_name."""
        if not isdir(model_training_output_dir):
            raise FileNotFoundError(f"model folder {model_training_output_dir} does not exist: train first")
        if use_folds is None:
            use_folds = sorted(d[5:] for d in subdirs(model_training_output_dir, prefix="fold_", join=False)
                               if isfile(join(model_training_output_dir, d, checkpoint_name)))
            if not use_folds:
                raise FileNotFoundError(f"no fold_X/{checkpoint_name} in {model_training_output_dir}")
        self.folds = [f if f == "all" else int(f) for f in use_folds]
        self.dataset_json = load_json(join(model_training_output_dir, "dataset.json"))
        self.plans_manager = nnQCPlansManager(load_json(join(model_training_output_dir, "plans.json")))
        self.region_names, self.regions = get_regions(self.dataset_json)
        self.fold_weights = []
        for fold in self.folds:
            path = join(model_training_output_dir, f"fold_{fold}", checkpoint_name)
            if not isfile(path):
                raise FileNotFoundError(f"checkpoint {path} does not exist")
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
            self.trainer_name = checkpoint["trainer_name"]
            self.configuration_name = checkpoint["init_args"]["configuration"]
            self.fold_weights.append(checkpoint["network_weights"])
        self.configuration_manager = self.plans_manager.get_configuration(self.configuration_name)
        trainer_class = get_trainer_class(self.trainer_name)
        self.network = trainer_class.build_network_architecture(self.plans_manager, self.configuration_manager,
                                                                0, 0, False).to(self.device).eval()

    # ---- preprocessing ------------------------------------------------------------------------------------------
    def preprocess_arrays(self, images: np.ndarray, segmentation: np.ndarray, properties: dict, name: str = "case"
                          ) -> tuple[np.ndarray, np.ndarray, dict]:
        """images (M, *S) and segmentation (1, *S) as nnU-Net's readers return them, with their properties
        ("spacing" at least) -> preprocessed images, candidate and the properties needed to export."""
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
        properties = dict(properties)
        data, _, properties = self.preprocessor.run_case_npy(images, None, properties, self.plans_manager,
                                                             self.configuration_manager, self.dataset_json)
        try:
            candidate = self.preprocessor.candidate_to_subject_grid(
                segmentation, properties, data.shape[1:], self.plans_manager, self.configuration_manager,
                allowed_labels(self.dataset_json), name)
        except QCDatasetError as e:
            raise CaseError(str(e)) from e
        return data, candidate, properties

    def preprocess_files(self, case: CaseFiles) -> tuple[np.ndarray, np.ndarray, dict]:
        rw = self.plans_manager.image_reader_writer_class()
        try:
            images, properties = rw.read_images(case.images)
            segmentation, seg_properties = rw.read_seg(case.segmentation)
        except Exception as e:  # nnU-Net's readers raise plain errors on unreadable or inconsistent files
            raise CaseError(f"{case.case}: cannot read its files: {type(e).__name__}: {e}") from e
        if images.ndim != 4 or len(properties["spacing"]) != 3 or (
                "sitk_stuff" in properties and len(properties["sitk_stuff"]["spacing"]) != 3):
            raise CaseError(f"{case.case}: {case.images[0]} is not a 3D image")
        mismatch = geometry_mismatch(seg_properties, properties)
        if segmentation.shape[1:] != images.shape[1:] or mismatch:
            raise CaseError(f"{case.case}: the segmentation {case.segmentation} does not share the image geometry"
                            f" ({mismatch or f'shape {segmentation.shape[1:]} != {images.shape[1:]}'})")
        return self.preprocess_arrays(images, segmentation, properties, case.case)

    # ---- prediction ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_preprocessed(self, data: np.ndarray, candidate: np.ndarray) -> dict:
        """Ensemble over the loaded folds in preprocessed space: per-fold DSC/NSD and majority-voted SEMs."""
        patch = self.configuration_manager.patch_size
        images = torch.from_numpy(centre_crop_or_pad(data.astype(np.float32, copy=False), patch))[None]
        labels = torch.from_numpy(centre_crop_or_pad(candidate.astype(np.int16), patch))[None]
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
            sem = undo_centre_crop_or_pad((votes * 2 > len(self.fold_weights)).cpu().numpy(), data.shape[1:])
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

    def predict_from_arrays(self, images: np.ndarray, segmentation: np.ndarray, properties: dict) -> dict:
        """Quality of one case from numpy arrays (M, *S) and (1, *S) with nnU-Net-style properties.

        Returns predicted dsc, dsc_sd, nsd, nsd_sd, and sem: (C, *S) bool in the input's grid (None for
        networks without SEMs).
        """
        data, candidate, properties = self.preprocess_arrays(images, segmentation, properties)
        result = self.predict_preprocessed(data, candidate)
        sem = result["sem"]
        if sem is not None:
            bits = self.restore_to_input_geometry(encode_sem_bits(sem), properties)
            sem = decode_sem_bits(bits, len(self.regions))
        return {**self._ensemble(result), "sem": sem}

    @staticmethod
    def _ensemble(result: dict) -> dict:
        dsc, nsd = result["dsc_per_fold"], result["nsd_per_fold"]
        return {"dsc": float(np.mean(dsc)), "dsc_sd": float(np.std(dsc)), "nsd": float(np.mean(nsd)),
                "nsd_sd": float(np.std(nsd))}

    def _finish_case(self, case: str, result: dict, properties: dict, output_folder: str, save_maps: bool,
                     flag_below: float) -> None:
        """Summary row, SEM volumes and the SEM map in the input geometry; the row is written last, so a case
        counts as done only once its map is in place."""
        row = {"case": case, **{f"predicted_{k}": v for k, v in self._ensemble(result).items()}}
        row["flagged"] = bool(row["predicted_dsc"] < flag_below) if np.isfinite(row["predicted_dsc"]) else False
        if result["sem"] is not None:
            bits = self.restore_to_input_geometry(encode_sem_bits(result["sem"]), properties)
            voxel_ml = float(np.prod(properties["spacing"])) / 1000
            for c, name in enumerate(self.region_names):
                row[f"sem_volume_ml_{name}"] = float(((bits >> c) & 1).sum() * voxel_ml)
            if save_maps:
                rw = self.plans_manager.image_reader_writer_class()
                replace_atomically(join(output_folder, case + self.dataset_json["file_ending"]),
                                   lambda p: rw.write_seg(bits, p, properties))
        row["status"] = "ok"
        self._write_case_result(output_folder, row)

    @staticmethod
    def _write_case_result(output_folder: str, row: dict) -> None:
        if row["status"] != "ok":
            print(f"WARNING: skipping {row['case']}: {row['status'][len('skipped: '):]}")
        write_text_atomically(join(output_folder, CASE_RESULTS_FOLDER, row["case"] + ".json"), json.dumps(row))

    def predict_from_files(self, images_folder: str, segmentations_folder: str, output_folder: str,
                           save_maps: bool = True, flag_below: float = DEFAULT_FLAG_BELOW, num_parts: int = 1,
                           part_id: int = 0, continue_prediction: bool = False,
                           num_processes_preprocessing: int = 0, num_threads_export: int = 1) -> pd.DataFrame:
        """Assess every case of SEGMENTATIONS (CASE + file ending) with its images (CASE_XXXX + file ending).

        Per-case problems skip the case and list it with the reason; results per case are kept in
        OUT/qc_cases/ so that --continue_prediction and -num_parts/-part_id runs merge into one summary.
        With num_processes_preprocessing > 0, cases are read and preprocessed ahead in worker processes while
        the network runs; num_threads_export > 1 restores and writes maps in background threads.
        """
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
        os.makedirs(join(output_folder, CASE_RESULTS_FOLDER), exist_ok=True)
        self._write_settings(output_folder, images_folder, segmentations_folder, save_maps, flag_below)
        for case in sorted(problems)[part_id::num_parts]:
            self._write_case_result(output_folder, {"case": case, "status": f"skipped: {problems[case]}"})
        todo = [c for c in cases[part_id::num_parts] if not (
            continue_prediction and isfile(join(output_folder, CASE_RESULTS_FOLDER, c.case + ".json"))
            and (not save_maps or isfile(join(output_folder, c.case + file_ending))))]

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
                        prepared = pending.popleft().result()
                        if i + ahead < len(todo):
                            pending.append(preprocessing.submit(_preprocess_in_worker, todo[i + ahead]))
                    else:
                        prepared = _preprocess_or_error(self, case)
                    if isinstance(prepared, CaseError):
                        raise prepared
                    data, candidate, properties = prepared
                    result = self.predict_preprocessed(data, candidate)
                except CaseError as e:
                    self._write_case_result(output_folder, {"case": case.case, "status": f"skipped: {e}"})
                    continue
                args = (case.case, result, properties, output_folder, save_maps, flag_below)
                if export is not None:
                    exports.append(export.submit(self._finish_case, *args))
                else:
                    self._finish_case(*args)
            for future in exports:
                future.result()
        return self.write_summary(output_folder)

    def _write_settings(self, output_folder: str, images_folder: str, segmentations_folder: str, save_maps: bool,
                        flag_below: float) -> None:
        settings = {"images_folder": os.path.abspath(images_folder),
                    "segmentations_folder": os.path.abspath(segmentations_folder),
                    "dataset": self.plans_manager.dataset_name, "configuration": self.configuration_name,
                    "folds": self.folds, "trainer": self.trainer_name, "plans": self.plans_manager.plans_name,
                    "flag_below": flag_below, "maps_written": save_maps, "precision": self.precision,
                    "file_ending": self.dataset_json["file_ending"], "region_names": self.region_names,
                    "regions": [list(r) for r in self.regions],
                    "nsd_tolerance_mm": nsd_tolerance_mm(self.dataset_json), "dataset_json": self.dataset_json}
        write_text_atomically(join(output_folder, SETTINGS_JSON), json.dumps(settings, indent=2))

    def write_summary(self, output_folder: str) -> pd.DataFrame:
        """qc_summary.csv/.json from every case result in OUT, worst predicted DSC first, skipped cases last."""
        folder = join(output_folder, CASE_RESULTS_FOLDER)
        rows = []
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json") and not name.startswith("."):
                with open(join(folder, name)) as f:
                    rows.append(json.load(f))
        columns = ["case", "predicted_dsc", "predicted_dsc_sd", "predicted_nsd", "predicted_nsd_sd", "flagged",
                   *[f"sem_volume_ml_{n}" for n in self.region_names], "status"]
        table = pd.DataFrame(rows, columns=columns)
        table["_ok"] = table["status"] == "ok"
        table = table.sort_values(["_ok", "predicted_dsc", "case"], ascending=[False, True, True], kind="stable")
        table = table.drop(columns="_ok").reset_index(drop=True)
        write_text_atomically(join(output_folder, SUMMARY_CSV), table.to_csv(index=False))
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
    """The preprocessed case, or its CaseError as a value (so it crosses process boundaries intact)."""
    try:
        return predictor.preprocess_files(case)
    except CaseError as e:
        return e


def _preprocess_in_worker(case: CaseFiles):
    return _preprocess_or_error(_WORKER_PREDICTOR, case)
