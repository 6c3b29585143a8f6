"""QCResUNet's multi-task loss (paper §2.3.3): MAE(DSC) + MAE(NSD) + λ (Dice + BCE) on the SEM logits, the MAE of
every region's DSC and NSD (beyond the paper), and optional terms that teach the order of the samples in a batch
rather than each value alone."""
from __future__ import annotations

import torch
from nnunetv2.training.loss.compound_losses import DC_and_BCE_loss
from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
from torch import nn

RANKING_TERMS = ("none", "pearson", "margin")


def pearson_loss(predicted: torch.Tensor, true: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - Pearson r over the batch, per column (B, K) -> (K,); 0 for a column whose targets do not vary (no
    order to learn there). The authors' released recipe adds this term to the MAE."""
    p = predicted - predicted.mean(0, keepdim=True)
    t = true - true.mean(0, keepdim=True)
    r = (p * t).sum(0) / (p.norm(dim=0) * t.norm(dim=0) + eps)
    return torch.where(t.norm(dim=0) > eps, 1 - r, torch.zeros_like(r))


def margin_ranking_loss(predicted: torch.Tensor, true: torch.Tensor, margin: float = 0.02,
                        min_gap: float = 0.01) -> torch.Tensor:
    """Pairwise margin ranking over the batch, per column (B, K) -> (K,): for every pair whose true values
    differ by at least `min_gap`, the better one should be predicted at least `margin` (capped at the true
    gap) above the other. 0 for a column without such a pair."""
    gap = true[:, None, :] - true[None, :, :]                      # (B, B, K): i better than j when > 0
    predicted_gap = predicted[:, None, :] - predicted[None, :, :]
    ordered = gap >= min_gap
    wanted = torch.clamp(gap, max=margin)
    hinge = torch.relu(wanted - predicted_gap) * ordered
    pairs = ordered.sum((0, 1))
    return torch.where(pairs > 0, hinge.sum((0, 1)) / pairs.clamp(min=1), torch.zeros_like(pairs, dtype=hinge.dtype))


class QCLoss(nn.Module):
    """Either term is left out when the network has no such output (regressor baselines, SEM-only ablation).

    The SEM term is nnU-Net's region loss: BCE with logits plus a batch soft Dice over every voxel of the
    batch (paper eq. for L_DSC), background-free because each SEM channel is a binary foreground. With
    `ranking` 'pearson' or 'margin', `ranking_weight` times that term (summed over DSC and NSD) is added.

    Per region (a regression of 2 + 2C columns, nnqc.network_architecture.regression_outputs): mae_region_dsc and
    mae_region_nsd are the MAEs averaged over the C regions, each weighted by `region_weight`; averaged, so that
    all regions together weigh as much as the subject-level value whatever C, and the balance against λ (the SEM
    term) is the paper's for every dataset. The ranking terms stay on the subject-level columns.
    """

    def __init__(self, sem_weight: float = 1.0, ddp: bool = False, ranking: str = "none",
                 ranking_weight: float = 0.0, region_weight: float = 1.0):
        super().__init__()
        if ranking not in RANKING_TERMS:
            raise ValueError(f"unknown ranking term {ranking!r}; valid: {', '.join(RANKING_TERMS)}")
        self.sem_weight = sem_weight
        self.ranking = ranking
        self.ranking_weight = ranking_weight
        self.region_weight = region_weight
        self.sem_loss = DC_and_BCE_loss({}, {"batch_dice": True, "do_bg": True, "smooth": 1e-5, "ddp": ddp},
                                        use_ignore_label=False, dice_class=MemoryEfficientSoftDiceLoss)

    def forward(self, regression: torch.Tensor | None, sem_logits: torch.Tensor | None, quality: torch.Tensor,
                sem_target: torch.Tensor) -> dict[str, torch.Tensor]:
        terms = {}
        if regression is not None:
            predicted, true = regression.float(), quality.float()
            if true.shape[1] < predicted.shape[1]:
                raise ValueError(f"{predicted.shape[1]} regression outputs but {true.shape[1]} quality targets")
            errors = (predicted - true[:, :predicted.shape[1]]).abs().mean(0)
            terms["mae_dsc"], terms["mae_nsd"] = errors[0], errors[1]
            if errors.numel() > 2:  # per region: C DSCs, then C NSDs
                region_dsc, region_nsd = errors[2:].view(2, -1)
                terms["mae_region_dsc"], terms["mae_region_nsd"] = region_dsc.mean(), region_nsd.mean()
            if self.ranking != "none" and len(true) > 1:
                ranking = (pearson_loss if self.ranking == "pearson" else margin_ranking_loss)(predicted[:, :2],
                                                                                               true[:, :2])
                terms["ranking"] = ranking.sum()
        if sem_logits is not None:
            terms["sem"] = self.sem_loss(sem_logits, sem_target.to(sem_logits.dtype))
        total = sum(terms.get(k, 0) for k in ("mae_dsc", "mae_nsd")) + self.sem_weight * terms.get("sem", 0) \
            + self.ranking_weight * terms.get("ranking", 0) \
            + self.region_weight * (terms.get("mae_region_dsc", 0) + terms.get("mae_region_nsd", 0))
        terms["loss"] = total
        return terms
