"""Is a case like those the model was trained on? Named reasons when it is not.

A QC model's number is only as good as its training data covers the case: an image from another scanner or
anatomy still gets a confident prediction. These checks compare what the plans, nnU-Net's fingerprint and each
fold's training_range.json (nnqc.calibration.fold_coverage) record about the training data with the same
statistics of one case, and name every way the case lies outside:

- `spacing`: an axis's voxel spacing more than SPACING_TOLERANCE (10 %) below the smallest or above the largest
  training spacing on that axis (nnU-Net resamples to the target spacing, so small excursions are harmless;
  coarser images lose detail the model never had to do without, finer ones are resampled more than any seen);
- `cropped_size`: after cropping to the non-zero region and resampling, the case is larger than the network
  input along an axis, so the centre crop cuts it and the network does not see all of it;
- `intensity`: for an image channel, the median intensity of the image's non-zero region (the voxels non-zero in
  any channel, which nnU-Net crops to) lies outside the range of the training subjects' medians, widened on
  both sides by INTENSITY_TOLERANCE (10 %) of a training subject's typical 0.5-99.5 percentile span. The
  statistics are of the image alone: judged on the voxels the assessed segmentation labels (nnU-Net's
  fingerprint describes the references' foreground), every segmentation that strays onto other tissue or the
  background looked like an image from another scanner (measured on the demo: 18 of 56 held-out cases from the
  training distribution, 0 with the image's own statistics);
- `labels`: labels present in the segmentation that no training candidate (of some fold) contained.

A check that cannot be made (training labels or intensities not recorded, an image without non-zero voxels) is
listed under `not_checked`, so its absence from the reasons is never read as a pass.
"""
from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from nnqc.preprocessing.intensity_statistics import IMAGE_INTENSITIES_PROPERTY

SPACING_TOLERANCE = 0.1
INTENSITY_TOLERANCE = 0.1


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
    order (what nnQCPredictor.preprocess_arrays returns as data.shape[1:]); image_intensities: per image channel,
    image_intensity_statistics of the raw image; labels: the labels present in the segmentation (0 = background
    is ignored).
    """
    spacing: Sequence[float]
    preprocessed_shape: Sequence[int]
    image_intensities: Sequence[dict | None]
    labels: Collection[int]


@dataclass
class TrainingCoverage:
    """What the training data covered beyond the plans and the fingerprint: the labels its candidates held and,
    per channel, the range of its subjects' image intensities (training_intensity_range); None where not known,
    with the reason."""
    labels: Collection[int] | None = None
    intensities: dict | None = None
    labels_unknown: str = "not recorded"
    intensities_unknown: str = "not recorded"


def training_intensity_range(per_subject: Sequence[Sequence[dict | None]]) -> dict[str, dict]:
    """Per channel ("0", "1", ...) of the training subjects' image_intensity_statistics: the smallest and largest
    median, the median 0.5-99.5 percentile span (the scale of the intensities, which sets the tolerance) and the
    number of subjects they come from."""
    summary = {}
    for c in range(len(per_subject[0]) if per_subject else 0):
        known = [s[c] for s in per_subject if s[c] is not None]
        if not known:
            continue
        medians = [k["median"] for k in known]
        summary[str(c)] = {"median_min": float(min(medians)), "median_max": float(max(medians)),
                           "typical_span": float(np.median([k["percentile_99_5"] - k["percentile_00_5"]
                                                            for k in known])),
                           "num_subjects": len(known)}
    return summary


def case_statistics(segmentation: np.ndarray, properties: dict, preprocessed_shape: Sequence[int]
                    ) -> CaseStatistics:
    """CaseStatistics from the segmentation nnU-Net's reader returns (1, *S) and the properties of its images
    after nnQCPreprocessor.run_case_npy (which records their image_intensity_statistics), with the shape after
    preprocessing."""
    labels = {int(v) for v in np.unique(segmentation) if v != 0}
    return CaseStatistics([float(s) for s in properties["spacing"]], [int(s) for s in preprocessed_shape],
                          properties[IMAGE_INTENSITIES_PROPERTY], labels)


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
        reference = training.get(str(c))
        if statistics is None or reference is None:
            why = "the image has no non-zero voxel" if statistics is None else "no training statistics"
            not_checked.append(f"intensity of channel {name}: {why}")
            continue
        tolerance = INTENSITY_TOLERANCE * reference["typical_span"]
        low, high = reference["median_min"] - tolerance, reference["median_max"] + tolerance
        if not low <= statistics["median"] <= high:
            reasons.append(Reason("intensity", f"channel {name}: median image intensity {statistics['median']:.4g} "
                                               f"outside the training subjects' {reference['median_min']:.4g}-"
                                               f"{reference['median_max']:.4g} (tolerance {tolerance:.3g})"))
    return reasons, not_checked


def out_of_training_range(case: CaseStatistics, plans: dict, fingerprint: dict,
                          coverage: TrainingCoverage | None = None, configuration: str = "3d_fullres",
                          channel_names: Sequence[str] | None = None) -> RangeCheck:
    """Every named way `case` lies outside the training data.

    plans: the model's plans.json (network input = the configuration's patch_size); fingerprint: nnU-Net's
    dataset_fingerprint.json of the QC dataset (per-subject spacings); coverage: the labels and image
    intensities of the training data (unknown: those checks are listed as not made).
    """
    coverage = coverage or TrainingCoverage()
    check = RangeCheck()
    if fingerprint.get("spacings"):
        check.reasons += _spacing_reasons(case.spacing, fingerprint["spacings"])
    else:
        check.not_checked.append("spacing: the fingerprint lists no training spacings")
    check.reasons += _cropped_size_reasons(case.preprocessed_shape,
                                           plans["configurations"][configuration]["patch_size"])
    if coverage.intensities is None:
        check.not_checked.append(f"intensity: the training subjects' intensities are not known "
                                 f"({coverage.intensities_unknown})")
    else:
        reasons, not_checked = _intensity_reasons(case.image_intensities, coverage.intensities, channel_names)
        check.reasons += reasons
        check.not_checked += not_checked
    if coverage.labels is None:
        check.not_checked.append(f"labels: the labels of the training segmentations are not known "
                                 f"({coverage.labels_unknown})")
    else:
        unseen = sorted(set(case.labels) - set(coverage.labels) - {0})
        if unseen:
            check.reasons.append(Reason("labels", f"label(s) {', '.join(map(str, unseen))} never present in a "
                                                  f"training segmentation"))
    return check
