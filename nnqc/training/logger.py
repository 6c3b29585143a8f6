"""nnU-Net's local training logger, extended with the QC validation metrics and drawn in progress.png."""
from __future__ import annotations

import os

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402

QC_KEYS = ("val_dsc_r", "val_dsc_mae", "val_nsd_r", "val_nsd_mae")


class nnQCLocalLogger(LocalLogger):
    """Adds per-epoch DSC/NSD Pearson r and MAE. nnU-Net's "pseudo dice" keys hold DSC_SEM (mean and per
    region), so its moving average and checkpoint bookkeeping keep working."""

    def __init__(self, verbose: bool = False):
        super().__init__(verbose)
        for key in QC_KEYS:
            self.my_fantastic_logging[key] = []

    def log(self, key, value, epoch: int) -> None:
        """nnU-Net's, with numpy scalars stored as Python numbers: checkpoints then hold plain data only."""
        super().log(key, value.item() if isinstance(value, np.generic) else value, epoch)

    def load_checkpoint(self, checkpoint: dict) -> None:
        self.my_fantastic_logging = {**{k: [] for k in QC_KEYS}, **checkpoint}

    def plot_progress_png(self, output_folder: str) -> None:
        log = self.my_fantastic_logging
        epochs = min(len(v) for v in log.values())
        if epochs == 0:
            return
        x = list(range(epochs))
        fig, axes = plt.subplots(4, 1, figsize=(12, 20))
        ax = axes[0]
        ax.plot(x, log["train_losses"][:epochs], "b-", label="loss_tr")
        ax.plot(x, log["val_losses"][:epochs], "r-", label="loss_val")
        ax.set_ylabel("loss")
        ax.legend(loc="upper left")
        ax2 = ax.twinx()
        ax2.plot(x, log["mean_fg_dice"][:epochs], "g:", label="DSC_SEM")
        ax2.plot(x, log["ema_fg_dice"][:epochs], "g-", label="DSC_SEM (mov. avg.)")
        ax2.set_ylabel("DSC_SEM")
        ax2.legend(loc="upper right")
        ax = axes[1]
        ax.plot(x, log["val_dsc_r"][:epochs], "b-", label="DSC r")
        ax.plot(x, log["val_nsd_r"][:epochs], "m-", label="NSD r")
        ax.plot(x, log["val_dsc_mae"][:epochs], "b--", label="DSC MAE")
        ax.plot(x, log["val_nsd_mae"][:epochs], "m--", label="NSD MAE")
        ax.set_ylabel("validation")
        ax.legend(loc="best")
        ax = axes[2]
        ax.plot(x, [e - s for e, s in zip(log["epoch_end_timestamps"][:epochs], log["epoch_start_timestamps"])], "b-")
        ax.set_ylabel("epoch time [s]")
        ax = axes[3]
        ax.plot(x, log["lrs"][:epochs], "b-")
        ax.set_ylabel("learning rate")
        for ax in axes:
            ax.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(os.path.join(output_folder, "progress.png"))
        plt.close(fig)
