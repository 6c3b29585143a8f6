"""Is a case like those the model was trained on? Named reasons when it is not.

A QC model's number is only as good as its training data covers the case: an image from another scanner or
anatomy still gets a confident prediction. These checks compare what nnU-Net's fingerprint and the plans record
about the training subjects with the same statistics of one case, and name every way the case lies outside:

- `spacing`: an axis's voxel spacing more than SPACING_TOLERANCE (10 %) below the smallest or above the largest
  training spacing on that axis (nnU-Net resamples to the target spacing, so small excursions are harmless;
  coarser images lose detail the model never had to do without, finer ones are resampled more than any seen);
- `cropped_size`: after cropping to the non-zero region and resampling, the case is larger than the network
  input along an axis, so the centre crop cuts it and the network does not see all of it;
- `intensity`: for an image channel, the median foreground intensity lies outside the central 99 % of the
  training foreground (its 0.5–99.5 percentiles), or the case's own 0.5 or 99.5 percentile lies beyond the
  training foreground's minimum or maximum (the bulk of the case is brighter or darker than any training
  voxel). Raw intensities are compared, as the fingerprint stores them; foreground means the voxels the assessed
  segmentation labels, as nnU-Net's fingerprint uses the reference's labelled voxels;
- `labels`: labels present in the segmentation that no training segmentation contained.

A check that cannot be made (an empty segmentation has no foreground intensities; training labels unknown) is
listed under `not_checked`, so its absence from the reasons is never read as a pass.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

SPACING_TOLERANCE = 0.1
PERCENTILES = {"percentile_00_5": 0.5, "median": 50.0, "percentile_99_5": 99.5}


@dataclass(frozen=True)
class Reason:
    """One way a case lies outside the training range: a short name (spacing, cropped_size, intensity,
    labels) and what exactly, in words."""
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.name}: {self.detail}"


@dataclass
class RangeCheck:
    reasons: list[Reason] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)

    @property
    def in_range(self) -> bool:
        return not self.reasons

    def to_dict(self) -> dict:
        return {"out_of_training_range": [str(r) for r in self.reasons], "not_checked": list(self.not_checked)}


@dataclass
class CaseStatistics:
    """What the checks need to know about one case.

    spacing: the input's spacing in nnU-Net's axis order (properties["spacing"], as the fingerprint stores
    training spacings); preprocessed_shape: the shape after cropping and resampling, in the plans' transposed
    order (what nnQCPredictor.preprocess_arrays returns as data.shape[1:]); foreground_intensities: per image
    channel, {"percentile_00_5", "median", "percentile_99_5"} or None when the segmentation is empty;
    labels: the labels present in the segmentation (0 = background is ignored).
    """
    spacing: Sequence[float]
    preprocessed_shape: Sequence[int]
    foreground_intensities: Sequence[dict | None]
    labels: Collection[int]


def foreground_intensity_statistics(images: np.ndarray, segmentation: np.ndarray) -> list[dict | None]:
    """Per channel of images (M, *S): percentiles of the voxels the segmentation (1, *S) or (*S) labels;
    None for every channel when it labels nothing."""
    foreground = np.asarray(segmentation).reshape(images.shape[1:]) > 0
    if not foreground.any():
        return [None] * images.shape[0]
    statistics = []
    for channel in images:
        values = np.percentile(channel[foreground].astype(np.float64), list(PERCENTILES.values()))
        statistics.append(dict(zip(PERCENTILES, map(float, values))))
    return statistics


def case_statistics(images: np.ndarray, segmentation: np.ndarray, properties: dict,
                    preprocessed_shape: Sequence[int]) -> CaseStatistics:
    """CaseStatistics from the arrays nnU-Net's reader returns (images (M, *S), segmentation (1, *S)) and their
    properties, with the shape after preprocessing."""
    labels = {int(v) for v in np.unique(segmentation) if v != 0}
    return CaseStatistics([float(s) for s in properties["spacing"]], [int(s) for s in preprocessed_shape],
                          foreground_intensity_statistics(images, segmentation), labels)


def _spacing_reasons(spacing: Sequence[float], training_spacings: Sequence[Sequence[float]]) -> list[Reason]:
    training = np.asarray(training_spacings, dtype=np.float64)
    low, high = training.min(axis=0), training.max(axis=0)
    reasons = []
    for axis, value in enumerate(spacing):
        if value < low[axis] * (1 - SPACING_TOLERANCE) or value > high[axis] * (1 + SPACING_TOLERANCE):
            reasons.append(Reason("spacing", f"spacing {value:g} mm on axis {axis} outside the training range "
                                             f"{low[axis]:g}-{high[axis]:g} mm"))
    return reasons


def _cropped_size_reasons(preprocessed_shape: Sequence[int], network_input: Sequence[int]) -> list[Reason]:
    cut = [(axis, int(s), int(n)) for axis, (s, n) in enumerate(zip(preprocessed_shape, network_input)) if s > n]
    if not cut:
        return []
    text = ", ".join(f"axis {axis}: {s} > {n} voxels" for axis, s, n in cut)
    return [Reason("cropped_size", f"the cropped case exceeds the network input ({text}); the network does not "
                                   f"see {', '.join(f'{s - n}' for _, s, n in cut)} voxel(s) of it")]


def _intensity_reasons(case: Sequence[dict | None], training: dict, channel_names: Sequence[str] | None
                       ) -> tuple[list[Reason], list[str]]:
    reasons, not_checked = [], []
    for c, statistics in enumerate(case):
        name = channel_names[c] if channel_names else str(c)
        reference = training.get(str(c), training.get(c))
        if statistics is None or reference is None:
            why = "the segmentation labels no voxel" if statistics is None else "no training statistics"
            not_checked.append(f"intensity of channel {name}: {why}")
            continue
        low, high = reference["percentile_00_5"], reference["percentile_99_5"]
        if not low <= statistics["median"] <= high:
            reasons.append(Reason("intensity", f"channel {name}: median foreground intensity "
                                               f"{statistics['median']:.4g} outside the training's 0.5-99.5 "
                                               f"percentiles {low:.4g}-{high:.4g}"))
        elif statistics["percentile_00_5"] < reference["min"] or statistics["percentile_99_5"] > reference["max"]:
            reasons.append(Reason("intensity", f"channel {name}: foreground 0.5-99.5 percentiles "
                                               f"{statistics['percentile_00_5']:.4g}-"
                                               f"{statistics['percentile_99_5']:.4g} beyond the training's "
                                               f"range {reference['min']:.4g}-{reference['max']:.4g}"))
    return reasons, not_checked


def out_of_training_range(case: CaseStatistics, plans: dict, fingerprint: dict,
                          training_labels: Collection[int] | None = None, configuration: str = "3d_fullres",
                          channel_names: Sequence[str] | None = None, labels_unknown_reason: str = "") -> RangeCheck:
    """Every named way `case` lies outside the training data.

    plans: the model's plans.json (network input = the configuration's patch_size); fingerprint: nnU-Net's
    dataset_fingerprint.json of the QC dataset (per-subject spacings, foreground intensity properties per
    channel; the plans' copy of the latter is used when the fingerprint lacks it); training_labels: labels that
    occur in the training segmentations (None: not checked, for labels_unknown_reason).
    """
    check = RangeCheck()
    if fingerprint.get("spacings"):
        check.reasons += _spacing_reasons(case.spacing, fingerprint["spacings"])
    else:
        check.not_checked.append("spacing: the fingerprint lists no training spacings")
    check.reasons += _cropped_size_reasons(case.preprocessed_shape,
                                           plans["configurations"][configuration]["patch_size"])
    training_intensities = (fingerprint.get("foreground_intensity_properties_per_channel")
                            or plans.get("foreground_intensity_properties_per_channel") or {})
    reasons, not_checked = _intensity_reasons(case.foreground_intensities, training_intensities, channel_names)
    check.reasons += reasons
    check.not_checked += not_checked
    if training_labels is None:
        check.not_checked.append("labels: the labels of the training segmentations are not known"
                                 + (f" ({labels_unknown_reason})" if labels_unknown_reason else ""))
    else:
        unseen = sorted(set(case.labels) - set(training_labels) - {0})
        if unseen:
            check.reasons.append(Reason("labels", f"label(s) {', '.join(map(str, unseen))} never present in a "
                                                  f"training segmentation"))
    return check
