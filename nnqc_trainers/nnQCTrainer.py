"""nnQCTrainer: QCResUNet trained on nnU-Net's trainer machinery (SPEC §4-5, paper §2.3.3, §3.5).

A training example is (subject images, one candidate) at the plan's fixed input shape. The network sees the
z-scored images plus the candidate's C region masks and learns the stored DSC and NSD (MAE) and the SEMs
recomputed from the augmented reference and candidate (Dice + BCE, weighted by λ).
"""
from __future__ import annotations

import math
from time import time

import numpy as np
import pandas as pd
import torch
from batchgenerators.dataloading.nondet_multi_threaded_augmenter import NonDetMultiThreadedAugmenter
from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
from batchgenerators.utilities.file_and_folder_operations import join, maybe_mkdir_p, save_json
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.default_n_proc_DA import get_allowed_n_proc_DA
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn
from torch import distributed as dist

from nnqc.evaluation.qc_metrics import regression_summary, sem_dice_summary
from nnqc.metrics.regions import get_regions
from nnqc.network_architecture.build import build_network
from nnqc.preprocessing.preprocessor import nnQCPlansManager
from nnqc.qc_data.targets_table import read_targets
from nnqc.sampling import balanced_subset
from nnqc.training.data_loader import iterate_batches, nnQCDataLoader
from nnqc.training.logger import nnQCLocalLogger
from nnqc.training.loss import QCLoss
from nnqc.training.lr_schedule import ExponentialDecayLR
from nnqc.training.qc_inputs import network_input, sem_targets
from nnqc.training.transforms import qc_training_transforms


def sem_dice_per_sample(sem_logits: torch.Tensor, sem_target: torch.Tensor) -> torch.Tensor:
    """(B, C) Dice between predicted (logit > 0, i.e. p > 0.5) and true SEMs; 1 where both are empty."""
    predicted = sem_logits > 0
    axes = tuple(range(2, sem_logits.ndim))
    overlap = (predicted & sem_target).sum(axes).double()
    total = predicted.sum(axes).double() + sem_target.sum(axes).double()
    return torch.where(total > 0, 2 * overlap / total.clamp(min=1), torch.ones_like(total))


class nnQCTrainer(nnUNetTrainer):
    """Paper defaults: Adam, lr 2.1e-4, weight decay 1e-4, batch 4 (plans), 100 epochs, lr × 0.9 per epoch down
    to 1e-6, λ = 1. An epoch is nnU-Net's 250 iterations (1000 balanced examples at batch 4)."""

    network_class_name: str | None = None  # None: the network the plans name
    network_kwargs_overrides: dict = {}
    # variants change settings here rather than in __init__ (nnU-Net records __init__'s exact signature)
    hyperparameters: dict = {}

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 2.1e-4
        self.weight_decay = 1e-4
        self.lr_decay = 0.9
        self.min_lr = 1e-6
        self.num_epochs = 100
        self.num_iterations_per_epoch = 250
        self.num_val_samples_per_epoch = 200
        self.sem_loss_weight = 1.0
        self.grad_clip = 12.0
        self.enable_deep_supervision = False
        self.save_every = 1
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

    # ---- network, loss, optimiser -------------------------------------------------------------------------------
    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = False) -> nn.Module:
        """The plans' network (or this trainer's replacement), built by explicit import."""
        return build_network(cls.network_class_name or configuration_manager.network_arch_class_name,
                             configuration_manager.network_arch_init_kwargs,
                             configuration_manager.network_arch_init_kwargs_req_import,
                             **cls.network_kwargs_overrides)

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """QCResUNet has no deep supervision."""

    def plot_network_architecture(self) -> None:
        n = sum(p.numel() for p in self.network.parameters())
        self.print_to_log_file(f"network: {type(self.network).__name__}, {n / 1e6:.2f} M parameters")

    def _build_loss(self) -> nn.Module:
        return QCLoss(self.sem_loss_weight, ddp=self.is_ddp)

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, ExponentialDecayLR(optimizer, self.initial_lr, self.lr_decay, self.min_lr)

    # ---- data ---------------------------------------------------------------------------------------------------
    def _samples_of(self, subjects) -> pd.DataFrame:
        targets = read_targets(join(self.preprocessed_dataset_folder_base, "qc_targets.csv"))
        return targets[targets["subject"].isin(set(subjects))].reset_index(drop=True)

    def balanced_validation_samples(self) -> pd.DataFrame:
        """The fold's validation samples, deterministically resampled to equal DSC-bin counts (SPEC §4)."""
        _, val_keys = self.do_split()
        samples = self._samples_of(val_keys)
        return samples.iloc[balanced_subset(samples["dsc"].to_numpy())].reset_index(drop=True)

    def _this_rank(self, samples: pd.DataFrame) -> pd.DataFrame:
        return samples.iloc[dist.get_rank()::dist.get_world_size()] if self.is_ddp else samples

    def get_dataloaders(self):
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        tr_keys, val_keys = self.do_split()
        patch_size = self.configuration_manager.patch_size
        _, dummy_2d, _, mirror_axes = self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        transforms = qc_training_transforms(patch_size, dummy_2d=dummy_2d, mirror_axes=mirror_axes)
        loader = nnQCDataLoader(self.dataset_class(self.preprocessed_dataset_folder, tr_keys),
                                self._samples_of(tr_keys), self.preprocessed_dataset_folder, self.batch_size,
                                patch_size, transforms)
        n_proc = get_allowed_n_proc_DA()
        if n_proc == 0:
            train = SingleThreadedAugmenter(loader, None)
        else:
            train = NonDetMultiThreadedAugmenter(loader, None, n_proc, num_cached=max(6, n_proc // 2), seeds=None,
                                                 pin_memory=self.device.type == "cuda", wait_time=0.002)
        # a fixed subset of the balanced validation set, the same every epoch
        val_samples = self.balanced_validation_samples()
        if len(val_samples) > self.num_val_samples_per_epoch:
            keep = np.random.default_rng(0).choice(len(val_samples), self.num_val_samples_per_epoch, replace=False)
            val_samples = val_samples.iloc[np.sort(keep)]
        val_samples = self._this_rank(val_samples)
        self.num_val_iterations_per_epoch = max(1, math.ceil(len(val_samples) / self.batch_size))
        dataset_val = self.dataset_class(self.preprocessed_dataset_folder, val_keys)

        def validation_batches():
            while True:
                yield from iterate_batches(dataset_val, val_samples, self.preprocessed_dataset_folder,
                                           self.batch_size, patch_size)

        return train, validation_batches()

    # ---- steps --------------------------------------------------------------------------------------------------
    def perturb_images(self, images: torch.Tensor) -> torch.Tensor:
        """Hook for training-time input perturbations beyond augmentation (see nnQCTrainer_ModalityDropout)."""
        return images

    def _forward(self, batch: dict, train: bool):
        images = batch["data"].to(self.device, non_blocking=True)
        reference = batch["reference"].to(self.device, non_blocking=True)
        candidate = batch["candidate"].to(self.device, non_blocking=True)
        quality = batch["quality"].to(self.device, non_blocking=True)
        if train:
            images = self.perturb_images(images)
        x = network_input(images, candidate, self.regions)
        sem_target = sem_targets(reference, candidate, self.regions)
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            regression, sem_logits = self.network(x)
            terms = self.loss(regression, sem_logits, quality, sem_target)
        return regression, sem_logits, sem_target, terms

    def train_step(self, batch: dict) -> dict:
        self.optimizer.zero_grad(set_to_none=True)
        _, _, _, terms = self._forward(batch, train=True)
        loss = terms["loss"]
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        with torch.no_grad():
            regression, sem_logits, sem_target, terms = self._forward(batch, train=False)
        n = len(batch["samples"])
        out = {"loss": terms["loss"].detach().cpu().numpy(), "samples": list(batch["samples"]),
               "true": batch["quality"].numpy(),
               "predicted": (regression.float().clamp(0, 1).cpu().numpy() if regression is not None
                             else np.full((n, 2), np.nan, dtype=np.float32)),
               "sem_dice": (sem_dice_per_sample(sem_logits, sem_target).cpu().numpy() if sem_logits is not None
                            else np.full((n, len(self.regions)), np.nan))}
        return out

    def _gather(self, outputs: list[dict]) -> dict:
        """Per-sample validation outputs of all batches (of all ranks), concatenated; batches may be ragged."""
        if self.is_ddp:
            everything = [None] * dist.get_world_size()
            dist.all_gather_object(everything, outputs)
            outputs = [o for rank in everything for o in rank]
        return {"loss": np.array([o["loss"] for o in outputs]),
                "samples": [s for o in outputs for s in o["samples"]],
                **{k: np.concatenate([o[k] for o in outputs]) for k in ("true", "predicted", "sem_dice")}}

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        out = self._gather(val_outputs)
        dsc = regression_summary(out["true"][:, 0], out["predicted"][:, 0])
        nsd = regression_summary(out["true"][:, 1], out["predicted"][:, 1])
        sem = np.nanmean(out["sem_dice"], axis=0)
        epoch = self.current_epoch
        self.logger.log("val_losses", float(np.mean(out["loss"])), epoch)
        self.logger.log("mean_fg_dice", float(np.nanmean(sem)) if np.isfinite(sem).any() else float("nan"), epoch)
        self.logger.log("dice_per_class_or_region", [float(v) for v in sem], epoch)
        for key, value in (("val_dsc_r", dsc["r"]), ("val_dsc_mae", dsc["mae"]), ("val_nsd_r", nsd["r"]),
                           ("val_nsd_mae", nsd["mae"])):
            self.logger.log(key, value, epoch)

    def _score(self) -> float:
        """checkpoint_best criterion: validation DSC r (DSC_SEM for the SEM-only ablation)."""
        r = self.logger.get_value("val_dsc_r", step=-1)
        return r if np.isfinite(r) else self.logger.get_value("mean_fg_dice", step=-1)

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
        if np.isfinite(score) and (self._best_score is None or score > self._best_score):
            self._best_score = score
            self._best_ema = score  # stored in checkpoints by nnU-Net
            self.print_to_log_file(f"New best validation score: {score:.4f}")
            self.save_checkpoint(join(self.output_folder, "checkpoint_best.pth"))
        if self.local_rank == 0:
            self.logger.plot_progress_png(self.output_folder)
        self.current_epoch += 1

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        self._best_score = self._best_ema

    # ---- final validation ---------------------------------------------------------------------------------------
    def perform_actual_validation(self, save_probabilities: bool = False) -> dict | None:
        """Predict the whole deterministically balanced validation set of the fold and write per-sample
        predictions (validation/qc_predictions.csv) and a summary (validation/summary.json)."""
        self.network.eval()
        if self.dataset_class is None:
            self.dataset_class = infer_dataset_class(self.preprocessed_dataset_folder)
        _, val_keys = self.do_split()
        samples = self.balanced_validation_samples()
        dataset = self.dataset_class(self.preprocessed_dataset_folder, val_keys)
        outputs = [self.validation_step(batch) for batch in
                   iterate_batches(dataset, self._this_rank(samples), self.preprocessed_dataset_folder,
                                   self.batch_size, self.configuration_manager.patch_size)]
        out = self._gather(outputs) if outputs else None
        if self.local_rank != 0 or out is None:
            return None
        table = samples.set_index("sample").loc[out["samples"]].reset_index()
        table = table[["sample", "subject", "source", "dsc", "nsd"]].copy()
        table["predicted_dsc"], table["predicted_nsd"] = out["predicted"][:, 0], out["predicted"][:, 1]
        for i, name in enumerate(self.region_names):
            table[f"dsc_sem_{name}"] = out["sem_dice"][:, i]
        summary = {"fold": self.fold, "num_samples": len(table), "trainer": type(self).__name__,
                   "dsc": regression_summary(table["dsc"], table["predicted_dsc"]),
                   "nsd": regression_summary(table["nsd"], table["predicted_nsd"]),
                   "dsc_sem": sem_dice_summary(out["sem_dice"], self.region_names)}
        folder = join(self.output_folder, "validation")
        maybe_mkdir_p(folder)
        table.to_csv(join(folder, "qc_predictions.csv"), index=False)
        save_json(summary, join(folder, "summary.json"), sort_keys=False)
        self.print_to_log_file(f"final validation on {len(table)} balanced samples: DSC r {summary['dsc']['r']:.4f} "
                               f"MAE {summary['dsc']['mae']:.4f}, NSD r {summary['nsd']['r']:.4f} MAE "
                               f"{summary['nsd']['mae']:.4f}, DSC_SEM {summary['dsc_sem']['mean']:.4f}")
        return summary

