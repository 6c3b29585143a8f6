"""When two images share one voxel grid: the single rule nnQC applies everywhere (conversion, preprocessing,
prediction, evaluation).

A grid is size, spacing, origin and direction in ITK's (x, y, z) order. Two grids agree when the sizes are
equal and, with the one tolerance GEOMETRY_TOLERANCE = 1e-4:
- spacings agree to 1e-4 of their value (relative),
- direction cosines agree to 1e-4 (absolute: they are unit vectors),
- origins agree to 1e-4 of max(1 mm, the largest |origin| coordinate) (relative to the values' magnitude, with
  the same tolerance in mm near zero).
That is far below a voxel and far above what storing a header as float32 changes, so files written by different
tools for the same grid agree, while a shifted, rescaled or rotated grid does not.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import SimpleITK as sitk

GEOMETRY_TOLERANCE = 1e-4
GRID_FIELDS = ("size", "spacing", "origin", "direction")


def grid_mismatches(mine: Mapping, theirs: Mapping) -> list[str]:
    """The grid fields (see GRID_FIELDS) in which `mine` differs from `theirs`, with both values; empty when they
    agree. A field missing (or None) on either side is not compared; a size mismatch is reported alone."""
    def known(field):
        return mine.get(field) is not None and theirs.get(field) is not None

    if known("size") and tuple(int(s) for s in mine["size"]) != tuple(int(s) for s in theirs["size"]):
        return [f"size {tuple(int(s) for s in mine['size'])} != {tuple(int(s) for s in theirs['size'])}"]
    problems = []
    for field in GRID_FIELDS[1:]:
        if not known(field):
            continue
        a, b = np.asarray(mine[field], dtype=np.float64), np.asarray(theirs[field], dtype=np.float64)
        if a.shape != b.shape:
            problems.append(f"{field} has {a.size} values, not {b.size}")
            continue
        if field == "spacing":
            agree = np.allclose(a, b, rtol=GEOMETRY_TOLERANCE, atol=0)
        elif field == "direction":
            agree = np.allclose(a, b, rtol=0, atol=GEOMETRY_TOLERANCE)
        else:
            scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
            agree = np.allclose(a, b, rtol=0, atol=GEOMETRY_TOLERANCE * scale)
        if not agree:
            problems.append(f"{field} {tuple(np.round(a, 6).tolist())} != {tuple(np.round(b, 6).tolist())}")
    return problems


def grid_of_image(image: sitk.Image | sitk.ImageFileReader) -> dict:
    """The grid of a SimpleITK image or of a header read with ImageFileReader.ReadImageInformation."""
    return {"size": tuple(int(s) for s in image.GetSize()), "spacing": tuple(image.GetSpacing()),
            "origin": tuple(image.GetOrigin()), "direction": tuple(image.GetDirection())}


def grid_of_properties(properties: dict) -> dict:
    """The grid (as far as it is known) from the properties nnU-Net's readers return: SimpleITKIO's sitk_stuff,
    NibabelIO's affine, else the spacing alone."""
    if "sitk_stuff" in properties:
        stuff = properties["sitk_stuff"]
        return {"spacing": stuff["spacing"], "origin": stuff["origin"], "direction": stuff["direction"]}
    if "nibabel_stuff" in properties:
        affine = np.asarray(properties["nibabel_stuff"]["original_affine"], dtype=np.float64)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        direction = affine[:3, :3] / np.where(spacing > 0, spacing, 1)
        return {"spacing": spacing, "origin": affine[:3, 3], "direction": direction.ravel()}
    return {"spacing": tuple(properties["spacing"])[::-1]}


def properties_mismatch(properties: dict, reference_properties: dict) -> str | None:
    """Why an image read by nnU-Net's readers does not share the reference's grid, or None when it does."""
    problems = grid_mismatches(grid_of_properties(properties), grid_of_properties(reference_properties))
    return "; ".join(problems) or None


def image_mismatch(image: sitk.Image | sitk.ImageFileReader, reference: sitk.Image | sitk.ImageFileReader
                   ) -> str | None:
    """Why two SimpleITK images (or headers read with ReadImageInformation) do not share one grid, or None."""
    return "; ".join(grid_mismatches(grid_of_image(image), grid_of_image(reference))) or None
