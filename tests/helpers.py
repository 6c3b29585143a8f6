"""Set-up shared by the tests: nnU-Net's folder variables, NIfTI images written and read with SimpleITK, JSON files,
and fingerprints of folder trees that prove inputs are never written."""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence

import numpy as np
import pytest
import SimpleITK as sitk

NNUNET_FOLDERS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


def use_nnunet_folders(monkeypatch: pytest.MonkeyPatch, **folders: str | os.PathLike) -> dict[str, str]:
    """Point nnU-Net's folder variables named in `folders` at those folders (created) and unset the others, until
    the monkeypatch is undone; returns {variable: folder}."""
    unknown = set(folders) - set(NNUNET_FOLDERS)
    if unknown:
        raise ValueError(f"not nnU-Net folder variables: {sorted(unknown)}")
    used = {}
    for name in NNUNET_FOLDERS:
        if name in folders:
            used[name] = str(folders[name])
            os.makedirs(used[name], exist_ok=True)
            monkeypatch.setenv(name, used[name])
        else:
            monkeypatch.delenv(name, raising=False)
    return used


def read_image(path: str | os.PathLike) -> tuple[np.ndarray, sitk.Image]:
    """The image's array (z, y, x) and the SimpleITK image (for its geometry)."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def write_image(array: np.ndarray, path: str | os.PathLike, spacing: Sequence[float] | None = None,
                origin: Sequence[float] | None = None, direction: Sequence[float] | None = None) -> None:
    """A compressed image of `array` (z, y, x) with the given geometry (SimpleITK's x, y, z order)."""
    image = sitk.GetImageFromArray(array)
    if spacing is not None:
        image.SetSpacing([float(s) for s in spacing])
    if origin is not None:
        image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path), True)


def write_like(array: np.ndarray, reference: sitk.Image, path: str | os.PathLike,
               spacing: Sequence[float] | None = None, direction: Sequence[float] | None = None,
               origin: Sequence[float] | None = None) -> None:
    """A compressed image of `array` in the geometry of `reference`, with the given parts of it replaced."""
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(reference)
    if spacing is not None:
        image.SetSpacing(spacing)
    if direction is not None:
        image.SetDirection(direction)
    if origin is not None:
        image.SetOrigin(origin)
    sitk.WriteImage(image, str(path), True)


def write_json(path: str | os.PathLike, data) -> None:
    """A JSON file (dataset.json, settings, records) as the tests' inputs."""
    with open(path, "w") as f:
        json.dump(data, f)


def tree_hashes(*folders: str | os.PathLike) -> dict:
    """sha256 of every file (and the names of every folder) under the folders: to prove inputs are not written."""
    found = {}
    for folder in folders:
        for root, dirs, files in os.walk(folder):
            found[root] = sorted(dirs)
            for name in files:
                with open(os.path.join(root, name), "rb") as f:
                    found[os.path.join(root, name)] = hashlib.sha256(f.read()).hexdigest()
    return found
