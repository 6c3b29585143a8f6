"""nnQC_plan_and_preprocess: fingerprint, planning and preprocessing of QC datasets."""
import json
import os
import shutil
import sys
import time

import blosc2
import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import load_json, load_pickle
from helpers import NNUNET_FOLDERS, use_nnunet_folders, write_image, write_json
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class, nnUNetDatasetBlosc2
from scipy.ndimage import binary_erosion

from dataset_conversion.phantoms import make_acdc_phantom, make_brats_phantom
from nnqc.experiment_planning.plan_and_preprocess import extract_fingerprint, plan, plan_and_preprocess, preprocess
from nnqc.experiment_planning.planner import nnQCPlanner
from nnqc.metrics.dice import multiclass_dice, region_dice
from nnqc.metrics.regions import get_regions
from nnqc.preprocessing.qc_dataset import QCDatasetError
from nnqc.run.plan_and_preprocess import plan_and_preprocess_entry

BRATS_LABELS = {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": 3}
ACDC_LABELS = {"background": 0, "RV": 1, "MYO": 2, "LV": 3}


class SmallSampleFingerprintExtractor(DatasetFingerprintExtractor):
    """nnU-Net samples 1e8 foreground intensities per dataset, i.e. millions per subject of a tiny dataset;
    a few thousand keep these tests fast and change nothing that planning uses."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_foreground_voxels_for_intensitystats = 30000


# ----------------------------------------------------------------------------------------------------------
# tiny QC datasets written the way nnQC_convert lays them out


def _ellipsoid(shape, center, radii):
    grid = np.indices(shape, dtype=np.float64)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, center, radii)) <= 1


def _write(array: np.ndarray, file: str, spacing, origin, direction) -> None:
    """An image with its spacing given in the array's (z, y, x) order."""
    write_image(array, file, spacing[::-1], origin, direction)


def _brain_subject(rng, shape):
    center = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    brain = _ellipsoid(shape, center, np.array(shape) * rng.uniform(0.36, 0.44, 3))
    tumor_center = center + rng.uniform(-3, 3, 3)
    seg = np.zeros(shape, np.uint8)
    seg[_ellipsoid(shape, tumor_center, (7, 8, 7))] = 2
    seg[_ellipsoid(shape, tumor_center, (4, 5, 4))] = 1
    seg[_ellipsoid(shape, tumor_center, (2, 3, 2))] = 3
    seg[~brain] = 0
    images = [np.where(brain, rng.normal(100 + 20 * c, 10, shape) + 30 * (seg > 0), 0).astype(np.float32)
              for c in range(2)]
    return images, seg


def _candidates(reference: np.ndarray) -> dict[str, np.ndarray]:
    eroded = reference * binary_erosion(reference > 0, iterations=1)
    shifted = np.roll(reference, (1, 3, -2), axis=(0, 1, 2))
    dropped = np.where(reference == 3, 0, reference)
    return {"identity": reference.copy(), "erode_dilate": eroded.astype(np.uint8),
            "seggen": shifted, "drop_region": dropped.astype(np.uint8)}


def write_qc_dataset(raw: str, dataset_id: int, kind: str, num_subjects: int, seed: int = 0) -> str:
    """A QC dataset: imagesTr/labelsTr once per subject, candidatesTr/ and qc_targets.csv per sample."""
    name = f"Dataset{dataset_id:03d}_{kind}QC"
    folder = os.path.join(raw, name)
    for sub in ("imagesTr", "labelsTr", "candidatesTr"):
        os.makedirs(os.path.join(folder, sub))
    rng = np.random.default_rng(seed)
    labels = BRATS_LABELS if kind == "Brain" else ACDC_LABELS
    dataset_json = {"channel_names": {"0": "T1", "1": "FLAIR"} if kind == "Brain" else {"0": "cineMRI"},
                    "labels": labels, "numTraining": num_subjects, "file_ending": ".nii.gz",
                    "nsd_tolerance_mm": 1.0,
                    "nnqc": {"source_dataset": f"Dataset{dataset_id - 400:03d}_{kind}"}}
    if kind == "Brain":
        dataset_json["regions_class_order"] = [1, 2, 3]
    write_json(os.path.join(folder, "dataset.json"), dataset_json)
    region_names, regions = get_regions(dataset_json)
    rows = []
    for i in range(num_subjects):
        subject = f"{kind.lower()}_{i:03d}"
        if kind == "Brain":
            images, seg = _brain_subject(rng, (30, 36, 32))
            spacing, direction = (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1)
        else:  # in-plane spacings differ between subjects, so preprocessing resamples
            spacing, direction = (10.0, *rng.choice([1.4, 1.5, 1.6], 2)), (-1, 0, 0, 0, -1, 0, 0, 0, 1)
            images, seg = make_acdc_phantom((10, 48, 44), spacing, rng)
        origin = tuple(float(o) for o in rng.uniform(-50, 50, 3))
        for c, image in enumerate(images):
            _write(image, os.path.join(folder, "imagesTr", f"{subject}_{c:04d}.nii.gz"), spacing, origin, direction)
        _write(seg, os.path.join(folder, "labelsTr", f"{subject}.nii.gz"), spacing, origin, direction)
        for k, (generator, candidate) in enumerate(_candidates(seg).items()):
            sample = f"{subject}__degrade__{k:03d}"
            _write(candidate, os.path.join(folder, "candidatesTr", f"{sample}.nii.gz"), spacing, origin, direction)
            row = {"sample": sample, "subject": subject, "source": "degrade", "generator": generator, "seed": k,
                   "dsc": multiclass_dice(seg, candidate), "nsd": np.nan}
            row.update({f"dsc_{n}": d for n, d in zip(region_names, region_dice(seg, candidate, regions))})
            row.update({f"nsd_{n}": np.nan for n in region_names})
            rows.append(row)
    pd.DataFrame(rows).sort_values("sample").to_csv(os.path.join(folder, "qc_targets.csv"), index=False)
    return name


@pytest.fixture(scope="module")
def nnunet_folders(tmp_path_factory):
    base = tmp_path_factory.mktemp("nnunet")
    with pytest.MonkeyPatch.context() as mp:
        folders = use_nnunet_folders(mp, **{k: base / k for k in NNUNET_FOLDERS})
        mp.setenv("nnUNet_def_n_proc", "1")
        yield folders


@pytest.fixture(scope="module")
def brain(nnunet_folders):
    """A brain QC dataset at 1 mm, planned and preprocessed with two worker processes."""
    name = write_qc_dataset(nnunet_folders["nnUNet_raw"], 901, "Brain", num_subjects=6)
    plan_and_preprocess([901], num_processes=2, fingerprint_extractor_class=SmallSampleFingerprintExtractor)
    pre = os.path.join(nnunet_folders["nnUNet_preprocessed"], name)
    return {"name": name, "raw": os.path.join(nnunet_folders["nnUNet_raw"], name), "pre": pre,
            "plans": load_json(os.path.join(pre, "nnQCPlans.json")), "data": os.path.join(pre, "nnQCPlans_3d_fullres")}


def _output_mtimes(folder: str) -> dict[str, int]:
    return {os.path.relpath(os.path.join(d, f), folder): os.stat(os.path.join(d, f)).st_mtime_ns
            for d, _, files in os.walk(folder) for f in files}


# ----------------------------------------------------------------------------------------------------------
# planner


@pytest.mark.parametrize("shape", [(155, 182, 145), (140, 170, 138), (150, 190, 155)])
def test_topology_of_brats_sized_subjects_is_160x192x160_with_five_isotropic_strides(shape):
    topology = nnQCPlanner.network_topology((1.0, 1.0, 1.0), shape)
    assert topology["input_shape"] == [160, 192, 160]
    assert topology["strides"] == [[2, 2, 2]] * 5
    assert topology["stem_kernel_size"] == [7, 7, 7]
    assert topology["kernel_sizes"] == [[3, 3, 3]] * 4


def test_topology_truncates_or_pads_to_five_downsamplings():
    large = nnQCPlanner.network_topology((1.0, 1.0, 1.0), (300, 300, 300))  # nnU-Net pools 6 times
    assert large["strides"] == [[2, 2, 2]] * 5 and large["input_shape"] == [320, 320, 320]
    small = nnQCPlanner.network_topology((1.0, 1.0, 1.0), (30, 20, 40))
    assert len(small["strides"]) == 5 and small["strides"][-1] == [1, 1, 1]
    divisor = np.prod(small["strides"], axis=0)
    assert all(s % d == 0 and s >= o for s, d, o in zip(small["input_shape"], divisor, (30, 20, 40)))


def test_topology_of_acdc_like_spacing_is_anisotropic():
    topology = nnQCPlanner.network_topology((10.0, 1.5625, 1.5625), (10, 180, 200))
    assert topology["strides"][0] == [1, 2, 2] and topology["stem_kernel_size"] == [1, 7, 7]
    assert [2, 2, 2] in topology["strides"]  # the slice axis is pooled once in-plane resolution caught up
    assert topology["kernel_sizes"][0] == [3, 3, 3]
    divisor = np.prod(topology["strides"], axis=0)
    assert divisor[0] < divisor[1] and topology["input_shape"][0] == 10
    assert all(s % d == 0 for s, d in zip(topology["input_shape"], divisor))


def test_covering_shape_is_the_largest_resampled_crop():
    shape = nnQCPlanner.shape_covering_all_subjects([(2.0, 1.0, 1.0), (1.0, 1.0, 0.5)],
                                                    [(10, 40, 30), (30, 20, 60)], (1.0, 1.0, 1.0))
    assert shape.tolist() == [30, 40, 30]


def test_brain_plans(brain):
    plans = brain["plans"]
    assert list(plans["configurations"]) == ["3d_fullres"]
    configuration = plans["configurations"]["3d_fullres"]
    assert configuration["batch_size"] == 4 and configuration["spacing"] == [1.0, 1.0, 1.0]
    architecture = configuration["architecture"]
    assert architecture["network_class_name"] == "nnqc.network_architecture.qcresunet.QCResUNet"
    kwargs = architecture["arch_kwargs"]
    assert kwargs["input_channels"] == 2 + 3 and kwargs["num_regions"] == 3
    assert len(kwargs["strides"]) == 5 and len(kwargs["kernel_sizes"]) == 4
    assert set(architecture["_kw_requires_import"]) == {"norm_op", "nonlin", "decoder_nonlin"}
    assert plans["nnqc"]["regions"] == {"whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing_tumor": [3]}
    # the fixed shape covers every preprocessed subject and suits the strides
    input_shape = np.array(configuration["patch_size"])
    divisor = np.prod(kwargs["strides"], axis=0)
    assert np.all(input_shape % divisor == 0)
    for file in os.listdir(brain["data"]):
        if file.endswith("_seg.b2nd"):
            assert np.all(np.array(blosc2.open(os.path.join(brain["data"], file)).shape[1:]) <= input_shape)


def test_plans_build_a_qcresunet_that_takes_the_fixed_shape(brain):
    import torch

    from nnqc.network_architecture.build import build_network

    architecture = brain["plans"]["configurations"]["3d_fullres"]["architecture"]
    network = build_network(architecture["network_class_name"], architecture["arch_kwargs"],
                            architecture["_kw_requires_import"])
    input_shape = brain["plans"]["nnqc"]["input_shape"]
    with torch.no_grad():
        regression, sems = network(torch.zeros(1, 5, *input_shape))
    assert regression.shape == (1, 2 + 2 * 3) and sems.shape == (1, 3, *input_shape)


def test_full_size_brats_phantoms_are_planned_160x192x160(nnunet_folders):
    """Two BraTS-sized phantoms (240 x 240 x 155 at 1 mm, brain extent as in BraTS), fingerprint and plan."""
    name = "Dataset909_FullBrainQC"
    folder = os.path.join(nnunet_folders["nnUNet_raw"], name)
    for sub in ("imagesTr", "labelsTr", "candidatesTr"):
        os.makedirs(os.path.join(folder, sub))
    geometry = ((1.0, 1.0, 1.0), (-120.0, -120.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    rows = []
    for i in range(2):
        subject = f"full_{i:03d}"
        images, seg = make_brats_phantom(rng=i)
        for c, image in enumerate(images):  # uncompressed: faster to write and read
            _write(image, os.path.join(folder, "imagesTr", f"{subject}_{c:04d}.nii"), *geometry)
        _write(seg, os.path.join(folder, "labelsTr", f"{subject}.nii"), *geometry)
        _write(seg, os.path.join(folder, "candidatesTr", f"{subject}__seggen__000.nii.gz"), *geometry)
        rows.append({"sample": f"{subject}__seggen__000", "subject": subject, "source": "seggen",
                     "generator": "seggen", "seed": 0, "dsc": 1.0, "nsd": 1.0})
    write_json(os.path.join(folder, "dataset.json"),
               {"channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}, "labels": BRATS_LABELS,
                "regions_class_order": [1, 2, 3], "numTraining": 2, "file_ending": ".nii"})
    pd.DataFrame(rows).to_csv(os.path.join(folder, "qc_targets.csv"), index=False)
    del images, seg

    plan_and_preprocess([909], num_processes=2, no_pp=True, fingerprint_extractor_class=SmallSampleFingerprintExtractor)
    plans = load_json(os.path.join(nnunet_folders["nnUNet_preprocessed"], name, "nnQCPlans.json"))
    configuration = plans["configurations"]["3d_fullres"]
    assert configuration["spacing"] == [1.0, 1.0, 1.0]
    assert configuration["patch_size"] == [160, 192, 160]
    assert configuration["architecture"]["arch_kwargs"]["strides"] == [[2, 2, 2]] * 5
    assert configuration["architecture"]["arch_kwargs"]["input_channels"] == 7
    fingerprint = load_json(os.path.join(nnunet_folders["nnUNet_preprocessed"], name, "dataset_fingerprint.json"))
    assert plans["nnqc"]["shape_covering_all_subjects"] == np.max(fingerprint["shapes_after_crop"], 0).tolist()


def test_acdc_like_dataset_gets_anisotropic_plans(nnunet_folders):
    write_qc_dataset(nnunet_folders["nnUNet_raw"], 902, "Heart", num_subjects=5, seed=1)
    plan_and_preprocess([902], num_processes=1, fingerprint_extractor_class=SmallSampleFingerprintExtractor)
    name = "Dataset902_HeartQC"
    pre = os.path.join(nnunet_folders["nnUNet_preprocessed"], name)
    configuration = load_json(os.path.join(pre, "nnQCPlans.json"))["configurations"]["3d_fullres"]
    assert configuration["spacing"][0] == 10.0
    assert configuration["architecture"]["arch_kwargs"]["strides"][0] == [1, 2, 2]
    assert configuration["architecture"]["arch_kwargs"]["stem_kernel_size"] == [1, 7, 7]
    # in-plane spacings differ between subjects, so candidates are resampled like their reference: an
    # identical candidate gives the reference's preprocessed labels
    data = os.path.join(pre, "nnQCPlans_3d_fullres")
    targets = pd.read_csv(os.path.join(pre, "qc_targets.csv"), dtype={"sample": str, "subject": str})
    resampled = set()
    for sample, subject in zip(targets["sample"], targets["subject"]):
        candidate = np.load(os.path.join(data, "candidates", sample + ".npz"))["seg"]
        reference = blosc2.open(os.path.join(data, subject + "_seg.b2nd"))[:]
        properties = load_pickle(os.path.join(data, subject + ".pkl"))
        if tuple(properties["shape_after_cropping_and_before_resampling"]) != reference.shape[1:]:
            resampled.add(subject)
        assert candidate.shape == reference.shape and candidate.dtype == np.uint8
        if sample.endswith("000"):
            assert np.array_equal(candidate, np.maximum(reference, 0))
    assert resampled


# ----------------------------------------------------------------------------------------------------------
# preprocessing


def test_subjects_equal_nnunet_default_preprocessor(brain):
    from nnunetv2.preprocessing.preprocessors.default_preprocessor import DefaultPreprocessor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(brain["plans"])
    configuration_manager = plans_manager.get_configuration("3d_fullres")
    dataset_json = load_json(os.path.join(brain["pre"], "dataset.json"))
    for subject in ("brain_000", "brain_003"):
        images = [os.path.join(brain["raw"], "imagesTr", f"{subject}_{c:04d}.nii.gz") for c in range(2)]
        label = os.path.join(brain["raw"], "labelsTr", f"{subject}.nii.gz")
        data, seg, properties = DefaultPreprocessor(verbose=False).run_case(
            images, label, plans_manager, configuration_manager, dataset_json)
        ours = blosc2.open(os.path.join(brain["data"], subject + ".b2nd"))[:]
        ours_seg = blosc2.open(os.path.join(brain["data"], subject + "_seg.b2nd"))[:]
        ours_properties = load_pickle(os.path.join(brain["data"], subject + ".pkl"))
        assert np.array_equal(ours, data.astype(np.float32))
        assert np.array_equal(ours_seg, seg.astype(np.int16))
        assert ours_properties["bbox_used_for_cropping"] == properties["bbox_used_for_cropping"]
        assert ours_properties["shape_before_cropping"] == properties["shape_before_cropping"]


def test_candidates_keep_their_dice_after_preprocessing(brain):
    targets = pd.read_csv(os.path.join(brain["pre"], "qc_targets.csv"), dtype={"sample": str, "subject": str})
    assert len(targets) == 24
    low_dice_seen = False
    for sample, subject, dsc in zip(targets["sample"], targets["subject"], targets["dsc"]):
        candidate = np.load(os.path.join(brain["data"], "candidates", sample + ".npz"))["seg"]
        reference = blosc2.open(os.path.join(brain["data"], subject + "_seg.b2nd"))[:]
        assert candidate.dtype == np.uint8 and candidate.shape == reference.shape
        assert abs(multiclass_dice(np.maximum(reference, 0), candidate) - dsc) <= 0.01, sample
        low_dice_seen |= dsc < 0.8
    assert low_dice_seen  # the check compares genuinely different candidates, not only identities


def test_splits_are_by_subject(brain):
    splits = load_json(os.path.join(brain["pre"], "splits_final.json"))
    subjects = sorted(f"brain_{i:03d}" for i in range(6))
    assert len(splits) == 5
    assert sorted(s for fold in splits for s in fold["val"]) == subjects  # each subject validated once
    for fold in splits:
        assert not set(fold["train"]) & set(fold["val"])
        assert sorted(fold["train"] + fold["val"]) == subjects
    assert sorted(os.listdir(os.path.join(brain["pre"], "gt_segmentations"))) == [s + ".nii.gz" for s in subjects]


def test_rerun_skips_work_and_clean_redoes_it(brain):
    before = _output_mtimes(brain["pre"])
    plan_and_preprocess([901], num_processes=1, fingerprint_extractor_class=SmallSampleFingerprintExtractor)
    assert _output_mtimes(brain["pre"]) == before

    preprocess(901, num_processes=1, clean=True)
    after_clean = _output_mtimes(brain["data"])
    assert all(after_clean[k] != before[os.path.join("nnQCPlans_3d_fullres", k)] for k in after_clean)


def test_rerun_redoes_what_changed_in_content_whatever_the_modification_times(nnunet_folders, brain):
    """Up to date is decided from the inputs' bytes: a file replaced by one with an older or the same mtime is
    redone, a touched one is not; a changed candidate is redone alone, a changed image redoes its subject and the
    subject's candidates."""
    name = "Dataset910_BrainQC"
    raw = os.path.join(nnunet_folders["nnUNet_raw"], name)
    pre = os.path.join(nnunet_folders["nnUNet_preprocessed"], name)
    shutil.copytree(brain["raw"], raw)
    shutil.copytree(brain["pre"], pre)  # a copied dataset is as up to date as its original
    data = os.path.join(pre, "nnQCPlans_3d_fullres")
    before = _output_mtimes(pre)
    preprocess(910, num_processes=1)
    assert _output_mtimes(pre) == before

    # touched, same bytes: nothing is redone
    candidate = os.path.join(raw, "candidatesTr", "brain_002__degrade__001.nii.gz")
    image = os.path.join(raw, "imagesTr", "brain_004_0001.nii.gz")
    for f in (candidate, image):
        os.utime(f, (time.time() + 100, time.time() + 100))
    preprocess(910, num_processes=1)
    assert _output_mtimes(pre) == before

    # the candidate replaced by the identity candidate's file, with an older mtime than before
    old = os.stat(candidate)
    shutil.copyfile(os.path.join(raw, "candidatesTr", "brain_002__degrade__000.nii.gz"), candidate)
    os.utime(candidate, ns=(old.st_atime_ns, old.st_mtime_ns - 3600 * 10 ** 9))
    # an image rewritten with other intensities, keeping its mtime exactly
    old = os.stat(image)
    original = sitk.ReadImage(image)
    brighter = sitk.GetImageFromArray(sitk.GetArrayFromImage(original) * 1.5 + 7)
    brighter.CopyInformation(original)
    sitk.WriteImage(brighter, image, useCompression=True)
    os.utime(image, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert os.stat(image).st_mtime_ns == old.st_mtime_ns
    subject_data = blosc2.open(os.path.join(data, "brain_004.b2nd"))[:]

    preprocess(910, num_processes=1)
    after = _output_mtimes(pre)
    changed = sorted(k for k in after if after[k] != before[k])
    expected = ["nnQCPlans_3d_fullres/candidates/brain_002__degrade__001.npz",
                "nnQCPlans_3d_fullres/inputs/brain_002.json", "nnQCPlans_3d_fullres/inputs/brain_004.json"] + \
        [f"nnQCPlans_3d_fullres/candidates/brain_004__degrade__{k:03d}.npz" for k in range(4)] + \
        [f"nnQCPlans_3d_fullres/brain_004{s}" for s in (".b2nd", ".pkl", "_seg.b2nd")]
    assert sorted(after) == sorted(before) and changed == sorted(expected)
    # redone from the new content
    redone = np.load(os.path.join(data, "candidates", "brain_002__degrade__001.npz"))["seg"]
    reference = blosc2.open(os.path.join(data, "brain_002_seg.b2nd"))[:]
    assert np.array_equal(redone, np.maximum(reference, 0))
    assert not np.array_equal(blosc2.open(os.path.join(data, "brain_004.b2nd"))[:], subject_data)
    # the records live apart: nnU-Net infers the dataset class from the data folder's one file ending
    assert infer_dataset_class(data) is nnUNetDatasetBlosc2


def test_input_fingerprint_tells_same_size_same_mtime_files_apart(tmp_path):
    from nnqc.preprocessing.preprocessor import input_fingerprint

    path = str(tmp_path / "image.nii")
    with open(path, "wb") as f:
        f.write(b"A" * 4096)
    first = input_fingerprint(path)
    stat = os.stat(path)
    with open(path, "wb") as f:
        f.write(b"A" * 4095 + b"B")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = input_fingerprint(path)
    assert first[:2] == second[:2] == ["image.nii", 4096] and first != second
    os.utime(path, (time.time() + 100, time.time() + 100))
    assert input_fingerprint(path) == second


# ----------------------------------------------------------------------------------------------------------
# errors


def _copy_dataset(folders, source: str, dataset_id: int) -> tuple[str, str]:
    name = f"Dataset{dataset_id:03d}_BrainQC"
    raw = os.path.join(folders["nnUNet_raw"], name)
    shutil.copytree(os.path.join(folders["nnUNet_raw"], source), raw)
    pre = os.path.join(folders["nnUNet_preprocessed"], name)
    os.makedirs(pre)
    for f in ("dataset.json", "nnQCPlans.json", "dataset_fingerprint.json"):
        shutil.copy(os.path.join(folders["nnUNet_preprocessed"], source, f), pre)
    return raw, pre


def test_missing_or_non_qc_dataset_fails_with_exit_code(nnunet_folders, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["nnQC_plan_and_preprocess", "-d", "977"])
    with pytest.raises(SystemExit) as exit_info:
        plan_and_preprocess_entry()
    assert exit_info.value.code != 0 and "977" in capsys.readouterr().err

    plain = os.path.join(nnunet_folders["nnUNet_raw"], "Dataset978_Plain")
    os.makedirs(os.path.join(plain, "imagesTr"))
    write_json(os.path.join(plain, "dataset.json"), {"labels": ACDC_LABELS})
    with pytest.raises(QCDatasetError, match="not an nnQC dataset.*qc_targets.csv"):
        extract_fingerprint(978)


def test_missing_candidate_is_named(nnunet_folders, brain):
    raw, _ = _copy_dataset(nnunet_folders, brain["name"], 903)
    os.remove(os.path.join(raw, "candidatesTr", "brain_001__degrade__002.nii.gz"))
    with pytest.raises(QCDatasetError, match="brain_001__degrade__002"):
        plan_and_preprocess([903], num_processes=1, fingerprint_extractor_class=SmallSampleFingerprintExtractor)


@pytest.mark.parametrize("defect", ["shape", "spacing", "origin", "labels"])
def test_inconsistent_candidate_is_named(nnunet_folders, brain, defect):
    dataset_id = {"shape": 904, "spacing": 905, "origin": 906, "labels": 907}[defect]
    raw, pre = _copy_dataset(nnunet_folders, brain["name"], dataset_id)
    file = os.path.join(raw, "candidatesTr", "brain_005__degrade__001.nii.gz")
    image = sitk.ReadImage(file)
    array = sitk.GetArrayFromImage(image)
    if defect == "shape":
        broken = sitk.GetImageFromArray(array[:-1])
        broken.CopyInformation(sitk.ReadImage(file)[:, :, :-1])
    else:
        broken = sitk.GetImageFromArray(np.where(array > 0, 7, 0).astype(np.uint8) if defect == "labels" else array)
        broken.CopyInformation(image)
        if defect == "spacing":
            broken.SetSpacing((1.0, 1.0, 1.2))
        elif defect == "origin":
            broken.SetOrigin(tuple(o + 5 for o in image.GetOrigin()))
    sitk.WriteImage(broken, file, useCompression=True)
    with pytest.raises(QCDatasetError, match="brain_005__degrade__001"):
        preprocess(dataset_id, num_processes=1)
    if defect != "labels":  # header checks catch geometry before any fingerprinting
        with pytest.raises(QCDatasetError, match="brain_005__degrade__001"):
            extract_fingerprint(dataset_id, check_dataset_integrity=True)
    # nothing half-written is left behind
    data = os.path.join(pre, "nnQCPlans_3d_fullres")
    assert not [f for d, _, files in os.walk(data) for f in files if f.startswith(".")]
    assert not [d for d in os.listdir(data) if d.startswith(".")]


def test_plan_only_writes_3d_fullres_plans(nnunet_folders, brain):
    _, pre = _copy_dataset(nnunet_folders, brain["name"], 908)
    os.remove(os.path.join(pre, "nnQCPlans.json"))
    plans = plan(908)
    assert plans["configurations"]["3d_fullres"]["patch_size"] == brain["plans"]["configurations"]["3d_fullres"][
        "patch_size"]
    assert not os.path.exists(os.path.join(pre, "nnQCPlans_3d_fullres"))


def test_qc_folds_follow_the_source_dataset_splits(tmp_path, monkeypatch):
    from nnqc.preprocessing.splits import splits_of_source_dataset

    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    (tmp_path / "Dataset027_ACDC").mkdir()
    # two frames per patient, kept in the same fold by the source split
    source_splits = [{"train": ["p2_f1", "p2_f2", "p3_f1", "p3_f2"], "val": ["p1_f1", "p1_f2"]},
                     {"train": ["p1_f1", "p1_f2", "p3_f1", "p3_f2"], "val": ["p2_f1", "p2_f2"]},
                     {"train": ["p1_f1", "p1_f2", "p2_f1", "p2_f2"], "val": ["p3_f1", "p3_f2"]}]
    (tmp_path / "Dataset027_ACDC" / "splits_final.json").write_text(json.dumps(source_splits))
    dataset_json = {"nnqc": {"source_dataset": "Dataset027_ACDC"}}
    subjects = ["p1_f1", "p1_f2", "p2_f1", "p2_f2", "p3_f1"]  # p3_f2 has no QC sample
    splits = splits_of_source_dataset(dataset_json, subjects)
    assert [f["val"] for f in splits] == [["p1_f1", "p1_f2"], ["p2_f1", "p2_f2"], ["p3_f1"]]
    assert all(not set(f["train"]) & set(f["val"]) for f in splits)
    # a subject the source split does not validate: fall back to nnQC's own folds
    assert splits_of_source_dataset(dataset_json, subjects + ["p4_f1"]) is None
    assert splits_of_source_dataset({"nnqc": {"source_dataset": "Dataset999_None"}}, subjects) is None
