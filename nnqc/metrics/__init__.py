"""Exact QC metrics (numpy/scipy only): regions, multi-class and regional DSC, NSD, error maps."""
from nnqc.metrics.dice import binary_dice, multiclass_dice, region_dice
from nnqc.metrics.quality import quality_targets
from nnqc.metrics.regions import allowed_labels, get_regions, nsd_tolerance_mm, region_masks
from nnqc.metrics.sem import segmentation_error_maps
from nnqc.metrics.surface_dice import region_surface_dice, surface_dice

__all__ = [
    "allowed_labels", "binary_dice", "get_regions", "multiclass_dice", "nsd_tolerance_mm", "quality_targets",
    "region_dice", "region_masks", "region_surface_dice", "segmentation_error_maps", "surface_dice",
]
