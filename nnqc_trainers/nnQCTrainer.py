"""nnQCTrainer: QCResUNet trained on nnU-Net's trainer machinery (SPEC §4-5, paper §2.3.3, §3.5).

A training example is (subject images, one candidate) at the plan's fixed input shape. The network sees the
z-scored images plus the candidate's C region masks and learns the stored DSC and NSD (MAE) and the SEMs
recomputed from the augmented reference and candidate (Dice + BCE, weighted by λ).

Multi-process training (DistributedDataParallel, nnU-Net's way) cannot hang in validation: validation makes no
collective call per step and every rank runs the same number of steps (see nnqc.training.validation_shards).
"""
from __future__ import annotations

import math
from time import time

import numpy as np
import pandas as pd
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import join, load_pickle
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from nnqc.calibration.fold_coverage import write_fold_coverage
from nnqc.cpu_features import cpu_has_native_bf16
from nnqc.evaluation.qc_metrics import regression_summary
from nnqc.inference.forward import mirrored_forward
from nnqc.metrics.regions import get_regions
from nnqc.network_architecture.build import build_network
from nnqc.network_architecture.inputs import network_input
from nnqc.network_architecture.regression_outputs import regression_output_count
from nnqc.preprocessing.plans_manager import nnQCPlansManager
from nnqc.qc_data.targets_table import read_targets, target_value_columns
from nnqc.sampling import balanced_subset
from nnqc.training.cpu_bf16 import instance_norms_in_fp32
from nnqc.training.data_loader import iterate_batches, nnQCDataLoader, nnQCValidationLoader
from nnqc.training.final_validation import predictions_table, summary_line, write_final_validation
from nnqc.training.loader_memory import LoaderPlan, plan_data_loading
from nnqc.training.logger import nnQCLocalLogger
from nnqc.training.loss import QCLoss
from nnqc.training.lr_schedule import ExponentialDecayLR
from nnqc.training.precision import StepPrecision, describe_precision, step_precision
from nnqc.training.qc_inputs import sem_targets
from nnqc.training.transforms import qc_training_transforms
from nnqc.training.validation_shards import PADDING_COLUMN, gather_outputs, shard_for_rank
from nnqc.trusted_classes import import_object
from nnqc_trainers.checkpoint_restore import CheckpointRestore


def sem_dice_per_sample(sem_logits: torch.Tensor, sem_target: torch.Tensor) -> torch.Tensor:
    """(B, C) Dice between predicted (logit > 0, i.e. p > 0.5) and true SEMs; 1 where both are empty."""
    predicted = sem_logits > 0
    axes = tuple(range(2, sem_logits.ndim))
    overlap = (predicted & sem_target).sum(axes).double()
    total = predicted.sum(axes).double() + sem_target.sum(axes).double()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))


class nnQCTrainer(CheckpointRestore, nnUNetTrainer):
    """Paper defaults: Adam, lr 2.1e-4, weight decay 1e-4, batch 4 (plans), 100 epochs, lr × 0.9 per epoch down
    to 1e-6, λ = 1. An epoch is one pass over the fold's balanced training samples (the training samples
    resampled to equal DSC-bin counts): their number divided by the batch size, as the paper's 98 048 samples
    at batch 4 make 24 512 iterations; batches themselves are drawn afresh from all training samples.

    On a CPU with native bf16 (AMX or AVX-512 BF16, detected at run time) the network runs under bf16 autocast,
    its instance norms in fp32; `cpu_bf16_autocast = False` (a hyperparameter, or nnQC_train --fp32) or
    NNQC_CPU_BF16=0 keeps it all in fp32. On CUDA it runs under fp16 autocast with a gradient scaler (nnU-Net's
    way) unless `cuda_mixed_precision = False` (or nnQC_train --fp32). The loss is always computed in fp32."""

    network_class_name: str | None = None  # None: the network the plans name
    network_kwargs_overrides: dict = {}
    # the logged validation value that checkpoint_best follows: one metric for the whole run, NaN never wins
    best_checkpoint_metric: str = "val_dsc_r"
    # variants change settings here rather than in __init__ (nnU-Net records __init__'s exact signature)
    hyperparameters: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.is_ddp and device.type != "cuda":
            # nnU-Net's DDP assumes one GPU per rank; ranks on the CPU (gloo) keep the device they were given
            self.device = device
            self.grad_scaler = None
        self.initial_lr = 2.1e-4
        self.weight_decay = 1e-4
        self.lr_decay = 0.9
        self.min_lr = 1e-6
        self.num_epochs = 100
        self.num_iterations_per_epoch: int | None = None  # None: one pass over the balanced training samples
        self.num_val_samples_per_epoch = 200
        self.sem_loss_weight = 1.0
        # weight of the per-region MAEs (each averaged over the regions; see nnqc.training.loss.QCLoss)
        self.region_loss_weight = 1.0
        self.ranking_loss = "none"  # or "pearson" / "margin" (nnqc.training.loss), weighted by ranking_loss_weight
        self.ranking_loss_weight = 0.0
        # interior DSC-bin edges that training batches are balanced over (nnqc.sampling); None: 10 equal bins
        self.dsc_bin_edges: tuple[float, ...] | None = None
        # the axes validation_step averages mirrorings over: the final validation's (nnQC_predict's default
        # test-time mirroring, so that calibration sees predictions made as the ones it calibrates); none per epoch
        self.validation_mirror_axes: tuple[int, ...] = ()
        self.grad_clip = 12.0
        self.enable_deep_supervision = False
        self.save_every = 1
        self.cpu_bf16_autocast = True  # where the CPU has native bf16
        self.cuda_mixed_precision = True  # fp16 autocast + gradient scaler on CUDA (False: fp32, see --fp32)
        # plans classes that resolve reader, resampling and normalization from explicit tables, not by name
        self.plans_manager = nnQCPlansManager(self.plans_manager.plans)
        self.configuration_manager = self.plans_manager.get_configuration(configuration)
        self.region_names, self.regions = get_regions(dataset_json)
        self.logger.local_logger = nnQCLocalLogger()
        self._best_score = None
        for name, value in self.hyperparameters.items():
            if not hasattr(self, name):
                raise AttributeError(f"{type(self).__name__}.hyperparameters sets unknown attribute {name!r}")
            setattr(self, name, value)
        if not self.step_precision().grad_scaler:
            self.grad_scaler = None  # nnU-Net creates one for every CUDA trainer

    # ---- network, loss, optimiser, precision ---------------------------------------------------------------------
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = False) -> nn.Module:
        """The plans' network (allow-listed: see nnqc.trusted_classes), or the one this trainer's code names, with
        per-region outputs (2 + 2C regression outputs) whatever plans made before them say."""
        return cls.build_qc_network(plans_manager, configuration_manager)

    @classmethod
    def build_qc_network(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                         num_regression_outputs: int | None = None) -> nn.Module:
        """The network with `num_regression_outputs` (default 2 + 2C; 2 rebuilds a model trained before per-region
        outputs existed, see nnqc.network_architecture.regression_outputs)."""
        kwargs = configuration_manager.network_arch_init_kwargs
        if num_regression_outputs is None:
            num_regression_outputs = regression_output_count(int(kwargs["num_regions"]))
        return build_network(import_object(cls.network_class_name) if cls.network_class_name
                             else configuration_manager.network_arch_class_name,
                             kwargs, configuration_manager.network_arch_init_kwargs_req_import,
                             **{"num_regression_outputs": num_regression_outputs, **cls.network_kwargs_overrides})

    def initialize(self) -> None:
        """nnU-Net's, plus a validation loss without collective calls, and DDP on CPU ranks (gloo): nnU-Net
        wraps the network for one GPU per rank, which a CPU module refuses."""
        cpu_ranks = self.is_ddp and self.device.type != "cuda"
        if cpu_ranks:
            self.is_ddp = False
        try:
            super().initialize()
        finally:
            self.is_ddp = self.is_ddp or cpu_ranks
        # acts only under CPU bf16 autocast (see nnqc.training.cpu_bf16)
        instance_norms_in_fp32(self._unwrapped_network())
        if cpu_ranks:
            self._set_batch_size_and_oversample()  # the global batch split over the ranks, as nnU-Net does
            self.network = DistributedDataParallel(self.network)
            self.loss = self._build_loss()
        self.validation_loss = QCLoss(self.sem_loss_weight, ddp=False, ranking=self.ranking_loss,
                                      ranking_weight=self.ranking_loss_weight, region_weight=self.region_loss_weight)

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """QCResUNet has no deep supervision."""

    def plot_network_architecture(self) -> None:
        n = sum(p.numel() for p in self.network.parameters())
        self.print_to_log_file(f"network: {type(self._unwrapped_network()).__name__}, {n / 1e6:.2f} M parameters")
        self.print_to_log_file(f"precision: {self.precision_description()}")

    def _build_loss(self) -> nn.Module:
        # training steps run in lockstep on all ranks, so the batch Dice may gather over them (nnU-Net's way)
        return QCLoss(self.sem_loss_weight, ddp=self.is_ddp, ranking=self.ranking_loss,
                      ranking_weight=self.ranking_loss_weight, region_weight=self.region_loss_weight)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, ExponentialDecayLR(optimizer, self.initial_lr, self.lr_decay, self.min_lr)

    def _unwrapped_network(self) -> nn.Module:
        """The network without its DDP wrapper: called directly it makes no collective call."""
        return self.network.module if isinstance(self.network, DistributedDataParallel) else self.network

    def uses_cpu_bf16(self) -> bool:
        """bf16 autocast on the CPU: asked for, on a CPU device, and the CPU computes bf16 natively."""
        return self.cpu_bf16_autocast and self.device.type == "cpu" and cpu_has_native_bf16()

    def step_precision(self) -> StepPrecision:
        """Autocast and loss scaling of a step on this device with this trainer's settings."""
        return step_precision(self.device.type, self.cuda_mixed_precision, self.uses_cpu_bf16())

    def active_grad_scaler(self):
        """The gradient scaler a training step uses: none unless this step runs under fp16 autocast (an attribute
        set after __init__, e.g. by nnQC_train --fp32, turns it off too)."""
        return self.grad_scaler if self.step_precision().grad_scaler else None

    def precision_description(self) -> str:
        """What runs in which precision on this device, for the training log (see describe_precision)."""
        return describe_precision(self.device.type, self.cuda_mixed_precision, self.cpu_bf16_autocast,
                                  self.uses_cpu_bf16())

    def _autocast(self):
        precision = self.step_precision()
        if precision.autocast_device is None:
            return dummy_context()
        return autocast(precision.autocast_device, dtype=precision.autocast_dtype)

    # ---- data ---------------------------------------------------------------------------------------------------
    def quality_columns(self) -> list[str]:
        """The qc_targets.csv columns the regression learns: subject-level DSC and NSD, then per region."""
        return target_value_columns(self.region_names)

    def _samples_of(self, subjects) -> pd.DataFrame:
        path = join(self.preprocessed_dataset_folder_base, "qc_targets.csv")
        targets = read_targets(path)
        missing = [c for c in self.quality_columns() if c not in targets.columns]
        if missing:
            raise RuntimeError(f"{path} lacks the per-region targets {missing}: rerun nnQC_convert and "
                               f"nnQC_plan_and_preprocess")
        return targets[targets["subject"].isin(set(subjects))].reset_index(drop=True)

    def validation_samples(self) -> pd.DataFrame:
        """All QC samples of the fold's validation subjects, in their natural distribution."""
        _, val_keys = self.do_split()
        samples = self._samples_of(val_keys)
        if len(samples) == 0:
            raise RuntimeError(f"fold {self.fold}: qc_targets.csv has no samples of the validation subjects "
                               f"{sorted(val_keys)[:5]}")
        return samples

    def balanced_validation_samples(self) -> pd.DataFrame:
        """The fold's validation samples, deterministically resampled to equal DSC-bin counts (SPEC §4)."""
        samples = self.validation_samples()
        return samples.iloc[balanced_subset(samples["dsc"].to_numpy())].reset_index(drop=True)

    def epoch_length(self, training_samples: pd.DataFrame) -> int:
        """Iterations in one pass over the balanced training samples at the (global) batch size."""
        balanced = len(balanced_subset(training_samples["dsc"].to_numpy()))
        return max(1, math.ceil(balanced / self.configuration_manager.batch_size))

    def _validation_batch_size(self) -> int:
        """The same on every rank (nnU-Net gives ranks unequal shares of the batch when it does not divide)."""
        return math.ceil(self.configuration_manager.batch_size / dist.get_world_size()) if self.is_ddp \
            else self.batch_size

    def _this_rank(self, samples: pd.DataFrame) -> pd.DataFrame:
        """This rank's share of `samples`, padded so that every rank gets as many (see validation_shards)."""
        if self.is_ddp:
            return shard_for_rank(samples, dist.get_rank(), dist.get_world_size())
        return samples.assign(**{PADDING_COLUMN: False})

    def get_dataloaders(self):
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        tr_keys, val_keys = self.do_split()
        patch_size = self.configuration_manager.patch_size
        _, dummy_2d, _, mirror_axes = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = qc_training_transforms(patch_size, dummy_2d=dummy_2d, mirror_axes=mirror_axes)
        training_samples = self._samples_of(tr_keys)
        if self.local_rank == 0:
            self.record_training_coverage(tr_keys, training_samples)
        loader = nnQCDataLoader(self.dataset_class(self.preprocessed_dataset_folder, tr_keys), training_samples,
                                self.preprocessed_dataset_folder, self.batch_size, patch_size, transforms,
                                quality_columns=self.quality_columns(), bin_edges=self.dsc_bin_edges)
        if self.dsc_bin_edges is not None:
            self.print_to_log_file(f"training batches balanced over the DSC bins with edges {list(self.dsc_bin_edges)}")
        if self.num_iterations_per_epoch is None:
            self.num_iterations_per_epoch = self.epoch_length(training_samples)
            self.print_to_log_file(
                f"one epoch = one pass over the fold's {len(balanced_subset(training_samples['dsc'].to_numpy()))} "
                f"balanced training samples (of {len(training_samples)}): {self.num_iterations_per_epoch} "
                f"iterations of batch {self.configuration_manager.batch_size}")
        # a fixed subset of the balanced validation set, the same every epoch
        val_samples = self.balanced_validation_samples()
        if len(val_samples) > self.num_val_samples_per_epoch:
            keep = np.random.default_rng(0).choice(len(val_samples), self.num_val_samples_per_epoch, replace=False)
            val_samples = val_samples.iloc[np.sort(keep)]
        val_samples = self._this_rank(val_samples)
        batch_size = self._validation_batch_size()
        # equal on every rank: the shares are padded to one length
        self.num_val_iterations_per_epoch = math.ceil(len(val_samples) / batch_size)
        val_loader = nnQCValidationLoader(self.dataset_class(self.preprocessed_dataset_folder, val_keys), val_samples,
                                          self.preprocessed_dataset_folder, batch_size, patch_size,
                                          quality_columns=self.quality_columns())
        plan = self.loader_plan()
        if plan is None:
            return SingleThreadedAugmenter(loader, None), SingleThreadedAugmenter(val_loader, None)
        pin = self.device.type == "cuda"
        train = NonDetMultiThreadedAugmenter(loader, None, plan.train_workers, num_cached=plan.train_cached,
                                             seeds=None, pin_memory=pin, wait_time=0.002)
        # one worker: its batches arrive in the order the main process would load them (see nnQCValidationLoader)
        val = NonDetMultiThreadedAugmenter(val_loader, None, plan.val_workers, num_cached=plan.val_cached, seeds=None,
                                           pin_memory=pin, wait_time=0.002)
        return train, val

    def loader_plan(self) -> LoaderPlan | None:
        """Background workers and queue depths for whole-case batches, logged (see
        nnqc.training.loader_memory.plan_data_loading); None for loading in the main process."""
        plan, lines = plan_data_loading(self.batch_size, self.configuration_manager.patch_size,
                                        len(self.dataset_json["channel_names"]), self.device.type == "cuda")
        for line in lines:
            self.print_to_log_file(line)
        return plan

    def record_training_coverage(self, subjects, training_samples: pd.DataFrame) -> None:
        """fold_X/training_range.json: the labels and image intensities this fold trains on, which nnQC_predict
        checks every case against (see nnqc.calibration.fold_coverage)."""
        properties = [load_pickle(join(self.preprocessed_dataset_folder, f"{s}.pkl")) for s in subjects]
        record = write_fold_coverage(self.output_folder, training_samples, properties)
        for what in ("labels", "intensities"):
            if f"{what}_unknown" in record:
                self.print_to_log_file(f"WARNING: the training data's {what} are not known, so nnQC_predict cannot "
                                       f"check cases against them: {record[f'{what}_unknown']}")

    # ---- steps --------------------------------------------------------------------------------------------------
    def perturb_images(self, images: torch.Tensor) -> torch.Tensor:
        """Hook for training-time input perturbations beyond augmentation (see nnQCTrainer_ModalityDropout)."""
        return images

    def _inputs(self, batch: dict, train: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Network input, (B, 2 + 2C) true DSC/NSD (subject level, then per region) and (B, C) true SEMs of a batch,
        on the device."""
        images = batch["data"].to(self.device, non_blocking=True)
        reference = batch["reference"].to(self.device, non_blocking=True)
        candidate = batch["candidate"].to(self.device, non_blocking=True)
        quality = batch["quality"].to(self.device, non_blocking=True)
        if train:
            images = self.perturb_images(images)
        return network_input(images, candidate, self.regions), quality, sem_targets(reference, candidate, self.regions)

    def _run_network(self, network: nn.Module, x: torch.Tensor):
        """(regression, SEM logits) under this trainer's autocast, returned in fp32 (the loss is computed in fp32)."""
        with self._autocast():
            regression, sem_logits = network(x)
        return (None if regression is None else regression.float(),
                None if sem_logits is None else sem_logits.float())

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        x, quality, sem_target = self._inputs(batch, train=True)
        regression, sem_logits = self._run_network(self.network, x)
        loss = self.loss(regression, sem_logits, quality, sem_target)["loss"]
        scaler = self.active_grad_scaler()
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            scaler.step(self.optimizer)
            scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        """Per-sample outputs of one batch; the unwrapped network and a local loss, so no collective call. The
        loss covers the batch's real samples only (NaN for a batch of padding)."""
        with torch.no_grad():
            x, quality, sem_target = self._inputs(batch, train=False)
            regression, sem_logits = mirrored_forward(self._unwrapped_network(), x, self.validation_mirror_axes,
                                                      self._autocast)
            real = torch.from_numpy(~np.asarray(batch[PADDING_COLUMN], dtype=bool)).to(self.device)
            loss = float("nan")
            if real.any():
                loss = float(self.validation_loss(None if regression is None else regression[real],
                                                  None if sem_logits is None else sem_logits[real],
                                                  quality[real], sem_target[real])["loss"])
        n = len(batch["samples"])
        return {"loss": loss, "samples": list(batch["samples"]), "true": batch["quality"].numpy(),
                PADDING_COLUMN: np.asarray(batch[PADDING_COLUMN], dtype=bool),
                "predicted": (regression.clamp(0, 1).cpu().numpy() if regression is not None
                              else np.full((n, 2), np.nan, dtype=np.float32)),  # (n, 2 + 2C) or (n, 2)
                "sem_dice": (sem_dice_per_sample(sem_logits, sem_target).cpu().numpy() if sem_logits is not None
                             else np.full((n, len(self.regions)), np.nan))}

    def _gather(self, outputs: list[dict]) -> dict:
        """Per-sample validation outputs of all batches of all ranks (see validation_shards.gather_outputs)."""
        return gather_outputs(outputs, self.is_ddp)

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        out = self._gather(val_outputs)
        dsc = regression_summary(out["true"][:, 0], out["predicted"][:, 0])
        nsd = regression_summary(out["true"][:, 1], out["predicted"][:, 1])
        sem = np.nanmean(out["sem_dice"], axis=0) if np.isfinite(out["sem_dice"]).any() \
            else np.full(len(self.regions), np.nan)
        epoch = self.current_epoch
        losses = out["loss"][np.isfinite(out["loss"])]
        self.logger.log("val_losses", float(losses.mean()) if losses.size else float("nan"), epoch)
        self.logger.log("mean_fg_dice", float(np.nanmean(sem)) if np.isfinite(sem).any() else float("nan"), epoch)
        self.logger.log("dice_per_class_or_region", [float(v) for v in sem], epoch)
        for key, value in (("val_dsc_r", dsc["r"]), ("val_dsc_mae", dsc["mae"]), ("val_nsd_r", nsd["r"]),
                           ("val_nsd_mae", nsd["mae"])):
            self.logger.log(key, value, epoch)

    def _score(self) -> float:
        """checkpoint_best criterion: always the same logged metric (validation DSC r by default)."""
        return float(self.logger.get_value(self.best_checkpoint_metric, step=-1))

    def on_epoch_end(self) -> None:
        self.logger.log("epoch_end_timestamps", time(), self.current_epoch)
        get = lambda key: self.logger.get_value(key, step=-1)  # noqa: E731
        self.print_to_log_file(f"train_loss {get('train_losses'):.4f}  val_loss {get('val_losses'):.4f}")
        self.print_to_log_file(f"val DSC r {get('val_dsc_r'):.4f} MAE {get('val_dsc_mae'):.4f} | NSD r "
                               f"{get('val_nsd_r'):.4f} MAE {get('val_nsd_mae'):.4f} | DSC_SEM "
                               f"{[round(v, 4) for v in get('dice_per_class_or_region')]}")
        self.print_to_log_file(f"Epoch time: {get('epoch_end_timestamps') - get('epoch_start_timestamps'):.2f} s")
        epoch = self.current_epoch
        if (epoch + 1) % self.save_every == 0 and epoch != self.num_epochs - 1:
            self.save_checkpoint(join(self.output_folder, "checkpoint_latest.pth"))
        score = self._score()
        if not np.isfinite(score):
            self.print_to_log_file(f"{self.best_checkpoint_metric} is {score}: checkpoint_best not updated")
        elif self._best_score is None or score > self._best_score:
            self._best_score = score
            self._best_ema = score  # stored in checkpoints by nnU-Net
            self.print_to_log_file(f"New best {self.best_checkpoint_metric}: {score:.4f}")
            self.save_checkpoint(join(self.output_folder, "checkpoint_best.pth"))
        if self.local_rank == 0:
            self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1

    def on_train_end(self) -> None:
        super().on_train_end()
        if self._best_score is None:
            self.print_to_log_file(f"WARNING: {self.best_checkpoint_metric} was never finite, so no "
                                   f"checkpoint_best.pth was written; use checkpoint_final.pth")

    # ---- final validation ---------------------------------------------------------------------------------------
    def predict_samples(self, samples: pd.DataFrame) -> pd.DataFrame:
        """Predictions of the current network for `samples` (validation subjects), split over the ranks; every
        rank must call it, rank 0 gets the table (same rows and order as `samples`), the others None. Columns:
        predicted_dsc, predicted_nsd, dsc_sem_<region>."""
        self.network.eval()
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        _, val_keys = self.do_split()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        outputs = [self.validation_step(batch) for batch in
                   iterate_batches(dataset, self._this_rank(samples), self.preprocessed_dataset_folder,
                                   self._validation_batch_size(), self.configuration_manager.patch_size,
                                   self.quality_columns())]
        out = self._gather(outputs)
        if self.local_rank != 0:
            return None
        return predictions_table(out, samples, self.region_names, self.fold)

    def perform_actual_validation(self, save_probabilities: bool = False) -> dict | None:
        """Predict every validation sample of the fold and write validation/qc_predictions_all.csv (all of them:
        the out-of-fold predictions for calibration), qc_predictions.csv and summary.json (the balanced subset:
        the reported figures); see nnqc.training.final_validation. Each prediction is averaged over the mirrorings
        of the axes the model may mirror at inference, as nnQC_predict does by default. Rank 0 returns the summary,
        the others None."""
        samples = self.validation_samples()
        axes = tuple(sorted(self.inference_allowed_mirroring_axes or ()))
        self.validation_mirror_axes = axes
        try:
            predicted = self.predict_samples(samples)
        finally:
            self.validation_mirror_axes = ()
        if predicted is None:
            return None
        summary = write_final_validation(self.output_folder, samples, predicted, self.region_names, self.fold,
                                         type(self).__name__, axes)
        self.print_to_log_file(summary_line(summary))
        return summary
