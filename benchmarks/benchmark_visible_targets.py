"""Are the stored targets of a QC dataset the targets of what the network sees?

nnU-Net's preprocessing crops every subject (and so every candidate) to the bounding box of the images'
non-zero mask. Foreground outside that box never reaches the network, so a target that counts it cannot be
learnt. For every sample of a raw QC dataset this recomputes the subject-level DSC of candidate and reference
cropped exactly as nnunetv2's crop_to_nonzero crops them, compares it with the DSC stored in qc_targets.csv, and
prints the share of samples whose visible DSC differs by more than 0.01 (overall, per generator family, per
source) and the mean / max fraction of candidate foreground outside the view.

It reads the dataset's files only (qc_targets.csv, imagesTr, labelsTr, candidatesTr), so it also judges a QC
dataset converted by older code. Without --folder it first builds one: BraTS-like phantoms at 1 mm whose brain
does not fill the image, converted with SegGen and degradations as nnQC_convert makes them.

    python benchmarks/benchmark_visible_targets.py [--subjects 12] [--shape 96 112 96] [--keep DIR]
    python benchmarks/benchmark_visible_targets.py --folder $nnUNet_raw/Dataset501_BraTSQC
"""
import argparse
import csv
import os
import shutil
import tempfile
from collections import defaultdict

import numpy as np

DSC_DIFFERENCE = 0.01


def build_qc_dataset(work: str, num_subjects: int, shape: tuple[int, ...], num_seggen: int, num_degradations: int,
                     num_processes: int) -> str:
    """Phantom source dataset and its QC dataset under work/raw; returns the QC dataset's folder."""
    os.environ["nnUNet_raw"] = os.path.join(work, "raw")
    os.makedirs(os.environ["nnUNet_raw"], exist_ok=True)
    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.qc_data.conversion import convert_dataset

    source = write_phantom_dataset(811, "VisibleBraTS", num_subjects, "brats", shape, (1.0, 1.0, 1.0), seed=0,
                                   num_processes=num_processes)
    result = convert_dataset(source, 812, None, (), None, num_seggen, num_degradations, None, 0, num_processes,
                             verbose=False)
    return result.folder


def _read_array(path: str) -> np.ndarray:
    import SimpleITK as sitk
    return sitk.GetArrayFromImage(sitk.ReadImage(path))


def view_box(image_files: list[str]) -> tuple[slice, ...]:
    """The box nnU-Net's preprocessing crops the subject to (crop_to_nonzero of the stacked channels)."""
    from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

    data = np.stack([_read_array(f) for f in image_files]).astype(np.float32)
    _, _, bbox = crop_to_nonzero(data)
    return tuple(slice(int(lo), int(hi)) for lo, hi in bbox)


def measure(folder: str) -> list[dict]:
    """One record per sample: stored DSC, visible DSC, fraction of candidate foreground outside the view."""
    import json

    from nnqc.metrics.dice import multiclass_dice

    with open(os.path.join(folder, "dataset.json"), encoding="utf-8") as f:
        dataset_json = json.load(f)
    ending = dataset_json["file_ending"]
    channels = len(dataset_json["channel_names"])
    with open(os.path.join(folder, "qc_targets.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    records = []
    subject, box, reference = None, None, None
    for row in sorted(rows, key=lambda r: (r["subject"], r["sample"])):
        if row["subject"] != subject:
            subject = row["subject"]
            box = view_box([os.path.join(folder, "imagesTr", f"{subject}_{c:04d}{ending}") for c in range(channels)])
            reference = _read_array(os.path.join(folder, "labelsTr", subject + ending))
        candidate = _read_array(os.path.join(folder, "candidatesTr", row["sample"] + ".nii.gz"))
        total = int(np.count_nonzero(candidate))
        inside = int(np.count_nonzero(candidate[box]))
        records.append({"sample": row["sample"], "source": row["source"], "generator": row["generator"],
                        "stored": float(row["dsc"]), "visible": multiclass_dice(reference[box], candidate[box]),
                        "outside": (total - inside) / total if total else 0.0})
    return records


def summarise(records: list[dict]) -> str:
    def line(name: str, group: list[dict]) -> str:
        differ = [r for r in group if abs(r["visible"] - r["stored"]) > DSC_DIFFERENCE]
        largest = max((r["visible"] - r["stored"] for r in group), key=abs, default=0.0)
        outside = np.array([r["outside"] for r in group])
        return (f"  {name:<22} {len(group):>4} samples  |visible - stored DSC| > {DSC_DIFFERENCE}: {len(differ):>3} "
                f"({100 * len(differ) / len(group):5.1f} %), largest {largest:+.3f}; foreground outside the view: "
                f"mean {100 * outside.mean():5.1f} %, max {100 * outside.max():5.1f} %")

    lines = ["Visible vs stored DSC (view = nnU-Net's crop to the images' non-zero box)",
             line("all", records), "per generator family:"]
    by_generator, by_source = defaultdict(list), defaultdict(list)
    for r in records:
        by_generator[r["generator"]].append(r)
        by_source[r["source"]].append(r)
    lines += [line(g, by_generator[g]) for g in sorted(by_generator)]
    lines.append("per source:")
    lines += [line(s, by_source[s]) for s in sorted(by_source)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", default=None, help="an existing raw QC dataset (default: build one)")
    parser.add_argument("--subjects", type=int, default=12)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 112, 96))
    parser.add_argument("--seggen", type=int, default=1)
    parser.add_argument("--degradations", type=int, default=6)
    parser.add_argument("-np", type=int, default=1)
    parser.add_argument("--keep", default=None, help="build the dataset here and keep it")
    args = parser.parse_args()
    work = None
    folder = args.folder
    if folder is None:
        work = args.keep or tempfile.mkdtemp(prefix="nnqc_visible_")
        folder = build_qc_dataset(work, args.subjects, tuple(args.shape), args.seggen, args.degradations, args.np)
    try:
        print(f"{folder}")
        print(summarise(measure(folder)))
    finally:
        if work is not None and args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
