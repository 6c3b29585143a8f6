"""nnU-Net's own trainer, with snapshots: at chosen epochs it segments its fold's validation cases.

The validation cases of a fold are exactly the subjects its model never trained on, so every snapshot is an
out-of-fold candidate, and snapshots from early to final epochs span poor to good segmentations (paper §2.2).
Predictions go through nnU-Net's sliding-window predictor and export, into the source's geometry, one file per
case written atomically; a state file records which snapshot epochs are complete so that resumed training
skips them. With test images (the source's imagesTs), every snapshot of every fold also segments them, into
OUT/test/<tag>_ep<E>_fold<F>: the folds of one snapshot are an ensemble over the same unseen cases.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnqc.atomic_files import replace_atomically
from nnqc.preprocessing.plans_manager import nnQCPlansManager
from nnqc.segmenters.nnunet_steps import SegmenterPreprocessor
from nnqc.segmenters.snapshot_state import SnapshotState


def snapshot_folder_name(tag: str, epoch: int) -> str:
    """OUT/<subset tag>_ep<E>: one candidate source per channel subset and snapshot epoch."""
    return f"{tag}_ep{epoch}"


TEST_FOLDER = "test"


def test_folder_name(tag: str, epoch: int, fold: int) -> str:
    """OUT/test/<subset tag>_ep<E>_fold<F>: the test images segmented by one fold's model at one snapshot."""
    return f"{snapshot_folder_name(tag, epoch)}_fold{fold}"


class SnapshotMixin:
    """Mixed into an nnU-Net trainer class (see `with_snapshots`); `configure_snapshots` before training."""

    snapshot_epochs: tuple[int, ...] = ()
    snapshot_output: str = ""
    snapshot_tag: str = ""
    snapshot_state_file: str = ""
    snapshot_mirroring: bool = True
    snapshot_test_images: dict[str, list[str]] = {}

    def configure_snapshots(self, epochs: tuple[int, ...], output_folder: str, tag: str, state_file: str,
                            use_mirroring: bool = True, test_images: dict[str, list[str]] | None = None) -> None:
        self.snapshot_epochs, self.snapshot_output, self.snapshot_tag = tuple(epochs), output_folder, tag
        self.snapshot_state_file, self.snapshot_mirroring = state_file, use_mirroring
        self.snapshot_test_images = dict(test_images or {})
        # nnU-Net resolves its reader/writer and resampling by walking its packages; nnQC's plans manager uses
        # explicit tables of the same classes
        self.plans_manager = nnQCPlansManager(self.plans_manager.plans)
        self.configuration_manager = self.plans_manager.get_configuration(self.configuration_name)

    def done_snapshots(self) -> list[int]:
        return SnapshotState.load(self.snapshot_state_file).done

    def _record_done(self, epoch: int, training_cases: list[str], cases: list[str]) -> None:
        state = SnapshotState.load(self.snapshot_state_file)
        state.mark_done(epoch, training_cases, cases)
        state.save(self.snapshot_state_file)

    def on_epoch_end(self) -> None:
        super().on_epoch_end()  # counts the epoch: current_epoch is now the number of completed epochs
        epoch = self.current_epoch
        if epoch in self.snapshot_epochs and epoch not in self.done_snapshots():
            self.write_snapshot(epoch)

    @torch.inference_mode()
    def write_snapshot(self, epoch: int) -> list[str]:
        """Segment this fold's validation cases with the current weights into OUT/<tag>_ep<epoch>/."""
        if self.is_ddp:
            raise RuntimeError("snapshots are written by single-process training")
        folder = join(self.snapshot_output, snapshot_folder_name(self.snapshot_tag, epoch))
        os.makedirs(folder, exist_ok=True)
        self.set_deep_supervision_enabled(False)
        self.network.eval()
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=self.snapshot_mirroring,
                                    perform_everything_on_device=self.device.type == "cuda", device=self.device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        predictor.manual_initialization(self.network, self.plans_manager, self.configuration_manager, None,
                                        self.dataset_json, type(self).__name__, self.inference_allowed_mirroring_axes)
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        tr_keys, val_keys = self.do_split()
        overlap = sorted(set(tr_keys) & set(val_keys))
        if overlap:  # fold "all", or a split file that validates on training cases: not out of fold
            raise RuntimeError(f"fold {self.fold} trains on its validation case(s) {overlap[:5]}: its snapshots "
                               f"would not be out of fold")
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        writer = self.plans_manager.image_reader_writer_class()
        ending = self.dataset_json["file_ending"]
        written = []
        for key in val_keys:
            data, _, _, properties = dataset.load_case(key)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # blosc2 arrays come back read-only
                data = torch.from_numpy(np.ascontiguousarray(data[:]))
            logits = predictor.predict_sliding_window_return_logits(data).cpu()
            segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits, self.plans_manager, self.configuration_manager, self.label_manager, properties)
            path = join(folder, key + ending)
            replace_atomically(path, lambda p, s=segmentation, pr=properties: writer.write_seg(s, p, pr))
            written.append(path)
        self.print_to_log_file(f"snapshot at epoch {epoch}: {len(written)} validation case(s) -> {folder}")
        if self.snapshot_test_images:
            self.write_test_predictions(predictor, epoch)
        self._record_done(epoch, list(tr_keys), list(val_keys))
        self.set_deep_supervision_enabled(self.enable_deep_supervision)
        self.network.train()
        return written


    def test_predictions_folder(self, epoch: int) -> str:
        return join(self.snapshot_output, TEST_FOLDER, test_folder_name(self.snapshot_tag, epoch, self.fold))

    def missing_test_predictions(self, epoch: int) -> list[str]:
        folder, ending = self.test_predictions_folder(epoch), self.dataset_json["file_ending"]
        return [c for c in self.snapshot_test_images if not os.path.isfile(join(folder, c + ending))]

    def write_test_predictions(self, predictor: nnUNetPredictor, epoch: int) -> None:
        """Segment the test images with the current weights (nnU-Net's preprocessing, sliding window and export)."""
        folder = self.test_predictions_folder(epoch)
        os.makedirs(folder, exist_ok=True)
        preprocessor = SegmenterPreprocessor(verbose=False)
        writer = self.plans_manager.image_reader_writer_class()
        for case in self.missing_test_predictions(epoch):
            data, _, properties = preprocessor.run_case(self.snapshot_test_images[case], None, self.plans_manager,
                                                        self.configuration_manager, self.dataset_json)
            logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(data)).cpu()
            segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits, self.plans_manager, self.configuration_manager, self.label_manager, properties)
            replace_atomically(join(folder, case + self.dataset_json["file_ending"]),
                               lambda p, s=segmentation, pr=properties: writer.write_seg(s, p, pr))
        self.print_to_log_file(f"snapshot at epoch {epoch}: {len(self.snapshot_test_images)} test case(s) -> "
                               f"{folder}")


def with_snapshots(trainer_class: type[nnUNetTrainer]) -> type[nnUNetTrainer]:
    """`trainer_class` with snapshots mixed in. The subclass keeps the trainer's name, so its model folder and
    checkpoints read as that trainer's (usable by nnU-Net's own commands afterwards)."""
    if not (isinstance(trainer_class, type) and issubclass(trainer_class, nnUNetTrainer)):
        raise TypeError(f"{trainer_class!r} is not an nnU-Net trainer class (a subclass of nnUNetTrainer)")
    return type(trainer_class.__name__, (SnapshotMixin, trainer_class), {"__module__": trainer_class.__module__})
