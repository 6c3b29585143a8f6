"""What the network sees of a preprocessed case, the forward passes of the folds and their ensemble, and the SEMs
restored to the input's exact geometry.

The ensemble follows the paper (§3.1): mean and sd of the folds' DSC and NSD, and a strict majority vote of their
SEMs. The network sees one window of the fixed patch size; a case larger than that gets the window centred on the
segmentation's foreground, and what lies outside it is reported, not guessed.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import torch
from acvl_utils.cropping_and_padding.bounding_boxes import bounding_box_to_slice

from nnqc.network_architecture.inputs import network_input
from nnqc.network_architecture.regression_outputs import has_per_region_outputs
from nnqc.preprocessing.cropping import (
    Window,
    crop_or_pad_to_window,
    foreground_window,
    undo_crop_or_pad_to_window,
    window_covers,
)


def network_view(segmentation: np.ndarray, candidate: np.ndarray, properties: dict, patch_size: Sequence[int],
                 transpose_forward: Sequence[int]) -> dict:
    """The window the network sees of a preprocessed case, and the fraction of the segmentation's foreground
    (input voxels) outside it: cut by the crop to the images' non-zero box or outside the window.

    A case larger than the fixed input gets the window centred on the candidate's foreground (see
    nnqc.preprocessing.cropping.foreground_window). An input voxel counts as seen when its centre falls inside
    the window mapped back through the resampling.
    """
    window = foreground_window(candidate[0] != 0, patch_size)
    transposed = segmentation[0].transpose(transpose_forward) != 0
    total = int(np.count_nonzero(transposed))
    cropped = transposed[bounding_box_to_slice(properties["bbox_used_for_cropping"])]
    seen = []
    for (lo, hi), n_input, n_preprocessed in zip(window, cropped.shape, candidate.shape[1:]):
        factor = n_input / n_preprocessed
        start, stop = (int(np.clip(np.ceil(v * factor - 0.5), 0, n_input)) for v in (lo, hi))
        seen.append(slice(start, stop))
    inside = int(np.count_nonzero(cropped[tuple(seen)]))
    outside = 1 - inside / total if total else 0.0
    return {"nnqc_window": window, "foreground_outside_view": float(outside),
            "partial_view": bool(outside > 0 or not window_covers(window, candidate.shape[1:]))}


def partial_view_note(case: str, properties: dict, data_shape: Sequence[int]) -> str | None:
    """The note printed for a case the network saw only partly (None when it saw all of it)."""
    if not properties["partial_view"]:
        return None
    patch = tuple(int(hi - lo) for lo, hi in properties["nnqc_window"])
    larger = any(s > p for s, p in zip(data_shape, patch))
    return (f"NOTE: {case}: "
            + (f"larger than the network's input ({'x'.join(map(str, data_shape))} > {'x'.join(map(str, patch))} "
               f"voxels after preprocessing): the window is centred on the segmentation's foreground; "
               if larger else "")
            + f"{100 * properties['foreground_outside_view']:.1f} % of the segmentation's foreground lies outside "
              f"the network's view (outside the images' non-zero box or the window): DSC/NSD are predicted from "
              f"the part it sees, the error map is empty outside it (partial_view in the summary)")


def mirrorings(mirror_axes: Sequence[int]) -> list[tuple[int, ...]]:
    """Every combination of the mirror axes, the identity first: nnU-Net's test-time mirroring (8 for 3 axes)."""
    return [c for k in range(len(mirror_axes) + 1) for c in itertools.combinations(sorted(mirror_axes), k)]


def mirrored_forward(network: torch.nn.Module, x: torch.Tensor, mirror_axes: Sequence[int],
                     forward_context: Callable) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(DSC/NSD, SEM logits) of a batch, averaged over the mirrorings of its spatial axes (each SEM mirrored back
    first); without mirror axes one plain forward pass."""
    regression = logits = None
    flips = mirrorings(mirror_axes)
    for axes in flips:
        dims = [a + 2 for a in axes]
        with forward_context():
            reg, sem = network(torch.flip(x, dims) if dims else x)
        if reg is not None:
            reg = reg.float()
            regression = reg if regression is None else regression + reg
        if sem is not None:
            sem = torch.flip(sem.float(), dims) if dims else sem.float()
            logits = sem if logits is None else logits + sem
    return (None if regression is None else regression / len(flips),
            None if logits is None else logits / len(flips))


@torch.inference_mode()
def predict_folds(network: torch.nn.Module, fold_weights: Sequence[dict], data: np.ndarray, candidate: np.ndarray,
                  window: Window, regions, device: torch.device, forward_context: Callable,
                  mirror_axes: Sequence[int] = ()) -> dict:
    """Per-fold DSC/NSD and majority-voted SEMs of one preprocessed case, each fold's weights loaded in turn into
    the network (with `mirror_axes`, each fold's outputs averaged over the mirrorings); the SEMs come back in the
    whole preprocessed case, zero outside the window."""
    images = torch.from_numpy(crop_or_pad_to_window(data.astype(np.float32, copy=False), window))[None]
    labels = torch.from_numpy(crop_or_pad_to_window(candidate.astype(np.int16), window))[None]
    x = network_input(images, labels, regions).to(device)
    regression, votes = [], None
    for weights in fold_weights:
        network.load_state_dict(weights)
        reg, sem = mirrored_forward(network, x, mirror_axes, forward_context)
        if reg is not None:
            regression.append(reg[0].clamp(0, 1).cpu().numpy())
        if sem is not None:
            wrong = (sem[0] > 0).to(torch.uint8)
            votes = wrong if votes is None else votes + wrong
    sem = None
    if votes is not None:  # strict majority: a tie between an even number of folds is not an error
        sem = undo_crop_or_pad_to_window((votes * 2 > len(fold_weights)).cpu().numpy(), data.shape[1:], window)
    regression = np.array(regression) if regression else np.full((1, 2), np.nan)
    return {"dsc_per_fold": regression[:, 0], "nsd_per_fold": regression[:, 1], "sem": sem,
            "regression_per_fold": regression}


def ensemble_quality(result: dict) -> dict:
    """Mean and sd over the folds of the predicted DSC and NSD (as Python floats)."""
    dsc, nsd = result["dsc_per_fold"], result["nsd_per_fold"]
    return {"dsc": float(np.mean(dsc)), "dsc_sd": float(np.std(dsc)), "nsd": float(np.mean(nsd)),
            "nsd_sd": float(np.std(nsd))}


def region_ensemble(result: dict, num_regions: int) -> tuple[list[float], list[float]] | None:
    """Mean over the folds of each region's predicted DSC and NSD; None for a model without per-region outputs."""
    regression = result.get("regression_per_fold")
    if regression is None or not has_per_region_outputs(regression.shape[1], num_regions):
        return None
    means = np.mean(regression[:, 2:], axis=0)
    return [float(v) for v in means[:num_regions]], [float(v) for v in means[num_regions:]]


def restore_to_input_geometry(label_map: np.ndarray, properties: dict, plans_manager,
                              configuration_manager) -> np.ndarray:
    """Undo resampling, cropping and transposition of a preprocessed label map (*S') -> input array."""
    spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
    resampled = configuration_manager.resampling_fn_seg(
        label_map[None], properties["shape_after_cropping_and_before_resampling"],
        configuration_manager.spacing, spacing)[0]
    full = np.zeros(properties["shape_before_cropping"], dtype=label_map.dtype)
    full[bounding_box_to_slice(properties["bbox_used_for_cropping"])] = resampled
    return full.transpose(plans_manager.transpose_backward)


def sem_volumes_ml(bits: np.ndarray, region_names: Sequence[str], spacing: Sequence[float]) -> dict[str, float]:
    """{sem_volume_ml_REGION: millilitres predicted wrong} of a bit-encoded SEM map in the input geometry."""
    voxel_ml = float(np.prod(spacing)) / 1000
    return {f"sem_volume_ml_{name}": float(((bits >> c) & 1).sum() * voxel_ml) for c, name in enumerate(region_names)}
