"""QCResUNet's multi-task loss (paper §2.3.3): MAE(DSC) + MAE(NSD) + λ (Dice + BCE) on the SEM logits."""
from __future__ import annotations

import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn


class QCLoss(nn.Module):
    """Either term is left out when the network has no such output (regressor baselines, SEM-only ablation).

    The SEM term is nnU-Net's region loss: BCE with logits plus a batch soft Dice over every voxel of the
    batch (paper eq. for L_DSC), background-free because each SEM channel is a binary foreground.
    """

    def __init__(self, sem_weight: float = 1.0, ddp: bool = False):
        super().__init__()
        self.sem_weight = sem_weight
        self.sem_loss = DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": ddp},
                                        use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)

    def forward(self, regression: torch.Tensor | None, sem_logits: torch.Tensor | None, quality: torch.Tensor,
                sem_target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {}
        if regression is not None:
            errors = (regression.float() - quality.float()).abs().mean(0)
            terms["mae_dsc"], terms["mae_nsd"] = errors[0], errors[1]
        if sem_logits is not None:
            terms["sem"] = self.sem_loss(sem_logits, sem_target.to(sem_logits.dtype))
        total = sum(terms.get(k, 0) for k in ("mae_dsc", "mae_nsd")) + self.sem_weight * terms.get("sem", 0)
        terms["loss"] = total
        return terms
