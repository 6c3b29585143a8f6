"""Time nnQC's surface Dice against DeepMind's `surface_distance` on one brain-sized region pair.

Run: python benchmarks/benchmark_metrics.py
Prints the median time of each implementation and the largest absolute difference of their NSDs.
"""
import argparse
import time
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from nnqc.metrics import surface_dice

BRAIN_SHAPE = (160, 192, 160)


def smooth_noise(shape: tuple[int, ...], sigma: float, rng: np.random.Generator) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return noise / noise.std()


def blob(shape: tuple[int, ...], centre: Sequence[float], radii_vox: Sequence[float],
         roughness: np.ndarray) -> np.ndarray:
    """An ellipsoid whose boundary is made irregular by a smooth noise field."""
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    ellipsoid_radius = np.sqrt(sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii_vox)))
    return ellipsoid_radius + 0.15 * roughness < 1


def region_pair(seed: int, radii_vox: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A reference blob and an imperfect candidate of it: shifted, resized, partly different boundary."""
    rng = np.random.default_rng(seed)
    centre = np.array(BRAIN_SHAPE) / 2
    roughness = smooth_noise(BRAIN_SHAPE, 4, rng)
    reference = blob(BRAIN_SHAPE, centre, radii_vox, roughness)
    candidate_roughness = roughness + 0.5 * smooth_noise(BRAIN_SHAPE, 3, rng)
    candidate = blob(BRAIN_SHAPE, centre + rng.uniform(-2, 2, 3), np.array(radii_vox) * rng.uniform(0.93, 1.07, 3),
                     candidate_roughness)
    return reference, candidate


def median_seconds(function, arguments: tuple, repeats: int) -> tuple[float, float]:
    """Median wall time of function(*arguments) and its value."""
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = function(*arguments)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), value


def deepmind_surface_dice(mask_a: np.ndarray, mask_b: np.ndarray, spacing, tolerance_mm: float) -> float:
    import surface_distance

    distances = surface_distance.compute_surface_distances(mask_a, mask_b, spacing)
    return surface_distance.compute_surface_dice_at_tolerance(distances, tolerance_mm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=3, help="number of random region pairs")
    parser.add_argument("--radii", type=float, nargs=3, default=(28.0, 32.0, 26.0),
                        help="blob radii in voxels (default: a glioma's whole tumour at 1 mm)")
    args = parser.parse_args()
    try:
        import surface_distance
    except ImportError:
        surface_distance = None
        print("surface_distance (DeepMind) is not installed: timing nnQC only")
    if surface_distance is not None and not hasattr(np, "Inf"):
        np.Inf = np.inf  # the reference package predates NumPy 2

    for spacing in ((1.0, 1.0, 1.0), (2.0, 0.9, 0.9)):
        for tolerance in (1.0, 2.0):
            ours_times, reference_times, max_difference = [], [], 0.0
            for seed in range(args.pairs):
                reference, candidate = region_pair(seed, args.radii)
                arguments = (reference, candidate, spacing, tolerance)
                seconds, ours = median_seconds(surface_dice, arguments, args.repeats)
                ours_times.append(seconds)
                if surface_distance is not None:
                    seconds, theirs = median_seconds(deepmind_surface_dice, arguments, max(1, args.repeats // 2))
                    reference_times.append(seconds)
                    max_difference = max(max_difference, abs(ours - theirs))
            line = (f"{BRAIN_SHAPE} spacing {spacing} tau {tolerance} mm: nnQC {np.median(ours_times):.4f} s")
            if reference_times:
                line += (f", DeepMind {np.median(reference_times):.4f} s, "
                         f"max |difference| {max_difference:.2e} (NSD {ours:.4f})")
            print(line)


if __name__ == "__main__":
    main()
