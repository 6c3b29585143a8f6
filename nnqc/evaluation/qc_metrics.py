"""How well predicted quality matches true quality (paper §3.4): Pearson r, MAE (± sd), DSC_SEM."""
from __future__ import annotations

from typing import Sequence

import numpy as np


def pearson_r(true: Sequence[float], predicted: Sequence[float]) -> float:
    """Pearson correlation; NaN when either side is constant or there are fewer than two values."""
    true, predicted = np.asarray(true, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if true.size < 2 or np.ptp(true) == 0 or np.ptp(predicted) == 0:
        return float("nan")
    return float(np.corrcoef(true, predicted)[0, 1])


def regression_summary(true: Sequence[float], predicted: Sequence[float]) -> dict:
    """{"r", "mae", "mae_sd", "n"} of predicted against true values."""
    errors = np.abs(np.asarray(true, dtype=np.float64) - np.asarray(predicted, dtype=np.float64))
    return {"r": pearson_r(true, predicted), "mae": float(errors.mean()) if errors.size else float("nan"),
            "mae_sd": float(errors.std()) if errors.size else float("nan"), "n": int(errors.size)}


def sem_dice_summary(per_sample: np.ndarray, region_names: Sequence[str]) -> dict:
    """Mean (± sd) over samples of DSC_SEM for each region, and their average over regions.

    per_sample: (N, C) DSC between predicted and true SEMs.
    """
    per_sample = np.asarray(per_sample, dtype=np.float64).reshape(-1, len(region_names))
    summary = {name: {"mean": float(per_sample[:, i].mean()), "sd": float(per_sample[:, i].std())}
               for i, name in enumerate(region_names)} if len(per_sample) else {}
    summary["mean"] = float(per_sample.mean()) if per_sample.size else float("nan")
    return summary
