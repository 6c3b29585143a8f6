"""The layout of the regression head's outputs: the paper's subject-level (DSC, NSD), then per region.

Columns: 0 = subject-level DSC, 1 = subject-level NSD, 2 .. 2 + C - 1 = the DSC of each region, 2 + C .. 2 + 2C - 1
= the NSD of each region (the order of qc_targets.csv: nnqc.qc_data.targets_table.target_value_columns). A model
trained before nnQC predicted regions has the first two only; both layouts load and predict.
"""
from __future__ import annotations

from collections.abc import Mapping

SUBJECT_OUTPUTS = 2
REGRESSION_WEIGHT_KEY = "regression.fc.weight"


def regression_output_count(num_regions: int, per_region: bool = True) -> int:
    """2 + 2C with per-region outputs, 2 without."""
    return SUBJECT_OUTPUTS + (2 * num_regions if per_region else 0)


def check_regression_outputs(num_outputs: int, num_regions: int) -> None:
    """Only the two layouts above have a meaning; any other count is a mistake in the plans or the checkpoint."""
    if num_outputs not in (SUBJECT_OUTPUTS, regression_output_count(num_regions)):
        raise ValueError(f"num_regression_outputs must be {SUBJECT_OUTPUTS} (subject-level DSC and NSD) or "
                         f"{regression_output_count(num_regions)} (also DSC and NSD of each of the {num_regions} "
                         f"region(s)), got {num_outputs}")


def has_per_region_outputs(num_outputs: int | None, num_regions: int) -> bool:
    """Whether a head with `num_outputs` columns predicts every region's DSC and NSD."""
    return num_outputs is not None and num_outputs == regression_output_count(num_regions) and num_regions > 0


def regression_outputs_in_weights(state_dict: Mapping) -> int | None:
    """The number of regression outputs of a network's saved weights (None for a network without a regression
    head, the SEM-only ablation). A DDP-saved 'module.' prefix is allowed."""
    for key in (REGRESSION_WEIGHT_KEY, "module." + REGRESSION_WEIGHT_KEY):
        if key in state_dict:
            return int(state_dict[key].shape[0])
    return None
