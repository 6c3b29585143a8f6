"""The evaluated regions of a dataset, read from its nnU-Net dataset.json.

nnU-Net declares region-based training by giving a list of labels for a class (BraTS: whole tumour =
[1, 2, 3]); otherwise every foreground label is its own class. QC evaluates exactly these classes.
"""
from collections.abc import Sequence

import numpy as np

DEFAULT_NSD_TOLERANCE_MM = 1.0


def _label_entries(dataset_json: dict) -> list[tuple[str, tuple[int, ...], bool]]:
    """(name, label values, given as a list) for every entry of dataset.json's "labels", validated."""
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ValueError('dataset.json needs a non-empty "labels" dictionary, e.g. {"background": 0, "tumor": 1}')
    if "ignore" in labels:
        raise ValueError("dataset.json declares an 'ignore' label. QC targets are computed against dense "
                         "reference segmentations, so datasets with an ignore label are not supported.")
    entries = []
    for name, value in labels.items():
        as_list = isinstance(value, (list, tuple))
        values = tuple(value) if as_list else (value,)
        if not values or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 0
                                 for v in values):
            raise ValueError(f'dataset.json "labels" entry {name!r} must be a non-negative int or a non-empty '
                             f"list of them, got {value!r}")
        entries.append((name, tuple(int(v) for v in values), as_list))
    return entries


def _is_background(name: str, values: tuple[int, ...]) -> bool:
    return name == "background" or values == (0,)


def get_regions(dataset_json: dict) -> tuple[list[str], list[tuple[int, ...]]]:
    """Region names and the label values each region is the union of, in dataset.json order.

    Region-based datasets (any foreground entry given as a list) give one region per foreground entry;
    label-based datasets give one single-label region per foreground label.
    """
    foreground = [(name, values, as_list) for name, values, as_list in _label_entries(dataset_json)
                  if not _is_background(name, values)]
    if not foreground:
        raise ValueError('dataset.json "labels" declares no foreground label, so there is nothing to evaluate')
    for name, values, _ in foreground:
        if 0 in values:
            raise ValueError(f'dataset.json "labels" entry {name!r} contains the background value 0: {values}')
    region_based = any(as_list for _, _, as_list in foreground)
    if not region_based:
        seen: dict[int, str] = {}
        for name, (value,), _ in foreground:
            if value in seen:
                raise ValueError(f'dataset.json "labels" gives value {value} to both {seen[value]!r} and {name!r}')
            seen[value] = name
    return [name for name, _, _ in foreground], [values for _, values, _ in foreground]


def allowed_labels(dataset_json: dict) -> tuple[int, ...]:
    """Every label value a segmentation of this dataset may contain, background 0 included, sorted."""
    values = {0}
    for _, entry_values, _ in _label_entries(dataset_json):
        values.update(entry_values)
    return tuple(sorted(values))


def nsd_tolerance_mm(dataset_json: dict) -> float:
    """The NSD tolerance of the dataset (dataset.json "nsd_tolerance_mm", 1 mm when absent)."""
    tolerance = dataset_json.get("nsd_tolerance_mm", DEFAULT_NSD_TOLERANCE_MM)
    try:
        tolerance = float(tolerance)
    except (TypeError, ValueError):
        raise ValueError(f'dataset.json "nsd_tolerance_mm" must be a number, got {tolerance!r}') from None
    if not np.isfinite(tolerance) or tolerance < 0:
        raise ValueError(f'dataset.json "nsd_tolerance_mm" must be finite and >= 0, got {tolerance}')
    return tolerance


def region_masks(seg: np.ndarray, regions: Sequence[Sequence[int]]) -> np.ndarray:
    """Boolean masks (C, *seg.shape): voxel v is in region c when seg[v] is one of the region's labels."""
    seg = np.asarray(seg)
    if not (np.issubdtype(seg.dtype, np.integer) or seg.dtype == bool):
        raise TypeError(f"a segmentation must hold integer labels, got dtype {seg.dtype}")
    masks = np.empty((len(regions), *seg.shape), dtype=bool)
    for mask, labels in zip(masks, regions):
        labels = tuple(labels)
        if len(labels) == 1:
            np.equal(seg, labels[0], out=mask)
        else:
            mask[...] = np.isin(seg, labels)
    return masks
