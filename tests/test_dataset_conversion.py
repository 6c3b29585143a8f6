"""Dataset converters (BraTS 2021, ACDC) on small fake source folders, and the synthetic phantoms."""
import filecmp
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import write_image as _write
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from scipy.spatial.transform import Rotation

from dataset_conversion import Dataset027_ACDC, Dataset137_BraTS2021, phantoms
from dataset_conversion.Dataset027_ACDC import convert_acdc, patient_grouped_splits, patient_of_case
from dataset_conversion.Dataset137_BraTS2021 import convert_brats2021
from dataset_conversion.phantoms import make_acdc_phantom, make_brats_phantom, write_phantom_dataset

OBLIQUE = tuple(Rotation.from_rotvec([0.3, -0.2, 0.1]).as_matrix().ravel())
RADIOLOGICAL = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)


def _snapshot(folder: str) -> dict:
    """Every file under `folder` with its size, mtime and content, to prove a source is never written to."""
    found = {}
    for root, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(root, f)
            with open(path, "rb") as handle:
                found[os.path.relpath(path, folder)] = (os.path.getsize(path), os.stat(path).st_mtime_ns,
                                                        handle.read())
    return found


def _load_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- BraTS 2021

BRATS_GEOMETRIES = {  # case -> (spacing, origin, direction), SimpleITK (x, y, z) order
    "BraTS2021_00000": ((1.0, 1.0, 1.0), (-0.0, -239.0, 0.0), RADIOLOGICAL),
    "BraTS2021_00002": ((0.9, 1.1, 1.6), (12.5, -30.25, 7.0), OBLIQUE),
}


@pytest.fixture
def brats_source(tmp_path):
    rng = np.random.default_rng(0)
    source = tmp_path / "BraTS2021_TrainingData"
    segs = {}
    for case, (spacing, origin, direction) in BRATS_GEOMETRIES.items():
        os.makedirs(source / case)
        for modality in ("t1", "t1ce", "t2", "flair"):
            _write(rng.integers(0, 1000, (6, 7, 8)).astype(np.int16), str(source / case / f"{case}_{modality}.nii.gz"),
                   spacing, origin, direction)
        seg = rng.choice(np.array([0, 1, 2, 4], dtype=np.uint8), (6, 7, 8))
        _write(seg, str(source / case / f"{case}_seg.nii.gz"), spacing, origin, direction)
        segs[case] = seg
    (source / "name_mapping.csv").write_text("not a case\n")
    return str(source), segs


def test_brats_conversion_remaps_labels_and_preserves_geometry(brats_source, tmp_path):
    source, segs = brats_source
    before = _snapshot(source)
    out = convert_brats2021(source, 137, raw_folder=str(tmp_path / "raw"), num_processes=1)
    assert os.path.basename(out) == "Dataset137_BraTS2021"
    assert _snapshot(source) == before

    for case, seg in segs.items():
        for channel, modality in enumerate(("t1", "t1ce", "t2", "flair")):
            assert filecmp.cmp(os.path.join(source, case, f"{case}_{modality}.nii.gz"),
                               os.path.join(out, "imagesTr", f"{case}_{channel:04d}.nii.gz"), shallow=False)
        label = sitk.ReadImage(os.path.join(out, "labelsTr", f"{case}.nii.gz"))
        array = sitk.GetArrayFromImage(label)
        assert array.dtype == np.uint8
        expected = np.select([seg == 1, seg == 2, seg == 4], [2, 1, 3], 0)  # NCR -> 2, ED -> 1, ET -> 3
        np.testing.assert_array_equal(array, expected)
        source_seg = sitk.ReadImage(os.path.join(source, case, f"{case}_seg.nii.gz"))
        assert label.GetSpacing() == source_seg.GetSpacing()
        assert label.GetOrigin() == source_seg.GetOrigin()
        np.testing.assert_allclose(label.GetDirection(), source_seg.GetDirection(), rtol=0, atol=1e-6)
    # axis-aligned frames survive rewriting bit for bit
    radiological = sitk.ReadImage(os.path.join(out, "labelsTr", "BraTS2021_00000.nii.gz"))
    assert radiological.GetDirection() == RADIOLOGICAL

    dataset_json = _load_json(os.path.join(out, "dataset.json"))
    assert dataset_json["labels"] == {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3],
                                      "enhancing_tumor": 3}
    assert dataset_json["regions_class_order"] == [1, 2, 3]
    assert dataset_json["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert dataset_json["numTraining"] == 2
    assert dataset_json["file_ending"] == ".nii.gz"
    assert dataset_json["nsd_tolerance_mm"] == 1.0
    assert sorted(os.listdir(out)) == ["dataset.json", "imagesTr", "labelsTr"]  # no temporary file left

    with pytest.raises(FileExistsError, match="overwrite"):
        convert_brats2021(source, 137, raw_folder=str(tmp_path / "raw"), num_processes=1)
    with pytest.raises(FileExistsError, match="Dataset137_BraTS2021"):  # the id is taken by another name
        write_phantom_dataset(137, "Other", 1, "acdc", (4, 16, 16), raw_folder=str(tmp_path / "raw"))


def test_brats_missing_modality_names_the_case_and_writes_nothing(brats_source, tmp_path):
    source, _ = brats_source
    os.remove(os.path.join(source, "BraTS2021_00002", "BraTS2021_00002_t2.nii.gz"))
    with pytest.raises(FileNotFoundError, match=r"BraTS2021_00002.*BraTS2021_00002_t2\.nii\.gz"):
        convert_brats2021(source, 137, raw_folder=str(tmp_path / "raw"), num_processes=1)
    assert not os.path.exists(tmp_path / "raw" / "Dataset137_BraTS2021")


def test_brats_unexpected_label_names_the_case(brats_source, tmp_path):
    source, segs = brats_source
    bad = segs["BraTS2021_00002"].copy()
    bad[0, 0, 0] = 3
    spacing, origin, direction = BRATS_GEOMETRIES["BraTS2021_00002"]
    _write(bad, os.path.join(source, "BraTS2021_00002", "BraTS2021_00002_seg.nii.gz"), spacing, origin, direction)
    with pytest.raises(ValueError, match=r"BraTS2021_00002.*\[3\]"):
        convert_brats2021(source, 137, raw_folder=str(tmp_path / "raw"), num_processes=1)
    out = tmp_path / "raw" / "Dataset137_BraTS2021"
    assert not os.path.exists(out / "dataset.json")
    assert not os.path.exists(out / "labelsTr" / "BraTS2021_00002.nii.gz")


def test_brats_command_line_uses_nnunet_raw(brats_source, tmp_path, monkeypatch):
    source, _ = brats_source
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "env_raw"))
    Dataset137_BraTS2021.main(["-i", source, "-d", "138", "-np", "1"])
    assert os.path.isfile(tmp_path / "env_raw" / "Dataset138_BraTS2021" / "dataset.json")


# ---------------------------------------------------------------- ACDC

ACDC_SPACING = (1.5625, 1.5625, 10.0)


@pytest.fixture
def acdc_source(tmp_path):
    """training/ with two patients (two frames each), testing/ with one patient, one frame annotated."""
    rng = np.random.default_rng(1)
    source = tmp_path / "ACDC" / "database"
    layout = {("training", "patient001"): {"01": True, "12": True},
              ("training", "patient002"): {"01": True, "10": True},
              ("testing", "patient101"): {"01": True, "14": False}}
    for (part, patient), frames in layout.items():
        folder = source / part / patient
        os.makedirs(folder)
        (folder / "Info.cfg").write_text("ED: 1\nES: 12\n")
        direction = OBLIQUE if patient == "patient002" else RADIOLOGICAL
        # stands in for the 4D cine, which the converter must ignore
        _write(rng.integers(0, 300, (5, 10, 12)).astype(np.int16), str(folder / f"{patient}_4d.nii.gz"),
               ACDC_SPACING, (1.0, 2.0, 3.0), RADIOLOGICAL)
        for frame, annotated in frames.items():
            case = f"{patient}_frame{frame}"
            _write(rng.integers(0, 300, (5, 10, 12)).astype(np.int16), str(folder / f"{case}.nii.gz"),
                   ACDC_SPACING, (-100.5, 37.0, -8.25), direction)
            if annotated:
                _write(rng.integers(0, 4, (5, 10, 12)).astype(np.uint8), str(folder / f"{case}_gt.nii.gz"),
                       ACDC_SPACING, (-100.5, 37.0, -8.25), direction)
    return str(source)


def test_acdc_conversion_copies_frames_exactly(acdc_source, tmp_path):
    before = _snapshot(acdc_source)
    out = convert_acdc(acdc_source, 27, raw_folder=str(tmp_path / "raw"), num_processes=1)
    assert os.path.basename(out) == "Dataset027_ACDC"
    assert _snapshot(acdc_source) == before

    training = ["patient001_frame01", "patient001_frame12", "patient002_frame01", "patient002_frame10"]
    assert sorted(os.listdir(os.path.join(out, "imagesTr"))) == [f"{c}_0000.nii.gz" for c in training]
    assert sorted(os.listdir(os.path.join(out, "labelsTr"))) == [f"{c}.nii.gz" for c in training]
    assert sorted(os.listdir(os.path.join(out, "imagesTs"))) == ["patient101_frame01_0000.nii.gz",
                                                                 "patient101_frame14_0000.nii.gz"]
    assert os.listdir(os.path.join(out, "labelsTs")) == ["patient101_frame01.nii.gz"]
    for part, case in [("Tr", c) for c in training] + [("Ts", "patient101_frame01")]:
        folder = os.path.join(acdc_source, "training" if part == "Tr" else "testing", patient_of_case(case))
        image_out = os.path.join(out, f"images{part}", f"{case}_0000.nii.gz")
        assert filecmp.cmp(os.path.join(folder, f"{case}.nii.gz"), image_out, shallow=False)
        assert filecmp.cmp(os.path.join(folder, f"{case}_gt.nii.gz"),
                           os.path.join(out, f"labels{part}", f"{case}.nii.gz"), shallow=False)
        source_image, written = sitk.ReadImage(os.path.join(folder, f"{case}.nii.gz")), sitk.ReadImage(image_out)
        assert written.GetSpacing() == source_image.GetSpacing()
        assert written.GetOrigin() == source_image.GetOrigin()
        assert written.GetDirection() == source_image.GetDirection()

    dataset_json = _load_json(os.path.join(out, "dataset.json"))
    assert dataset_json["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert "regions_class_order" not in dataset_json
    assert dataset_json["channel_names"] == {"0": "cineMRI"}
    assert dataset_json["numTraining"] == 4
    assert dataset_json["nsd_tolerance_mm"] == 1.0


def test_acdc_errors_name_the_case(acdc_source, tmp_path):
    frame = os.path.join(acdc_source, "training", "patient002", "patient002_frame10_gt.nii.gz")
    _write(np.full((5, 10, 12), 5, np.uint8), frame, ACDC_SPACING, (0.0, 0.0, 0.0), RADIOLOGICAL)
    with pytest.raises(ValueError, match=r"patient002_frame10.*\[5\]"):
        convert_acdc(acdc_source, 27, raw_folder=str(tmp_path / "raw"), num_processes=1)
    assert not os.path.exists(tmp_path / "raw" / "Dataset027_ACDC" / "dataset.json")

    os.remove(frame)
    with pytest.raises(FileNotFoundError, match="patient002_frame10"):
        convert_acdc(acdc_source, 28, raw_folder=str(tmp_path / "raw"), num_processes=1)
    with pytest.raises(FileNotFoundError, match="training"):
        convert_acdc(os.path.join(acdc_source, "training"), 29, raw_folder=str(tmp_path / "raw"))


def test_acdc_command_line_writes_patient_grouped_splits(acdc_source, tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "pre"))
    Dataset027_ACDC.main(["-i", acdc_source, "-np", "1"])
    splits = _load_json(str(tmp_path / "pre" / "Dataset027_ACDC" / "splits_final.json"))
    assert len(splits) == 5
    for split in splits:
        train_patients = {patient_of_case(c) for c in split["train"]}
        assert not train_patients & {patient_of_case(c) for c in split["val"]}


def test_patient_grouped_splits_cover_every_case_once():
    cases = [f"patient{p:03d}_frame{f:02d}" for p in range(1, 13) for f in (1, 11)]
    splits = patient_grouped_splits(cases, num_folds=5, seed=3)
    validation = [c for split in splits for c in split["val"]]
    assert sorted(validation) == sorted(cases)
    for split in splits:
        assert sorted(split["train"] + split["val"]) == sorted(cases)
        assert not {patient_of_case(c) for c in split["train"]} & {patient_of_case(c) for c in split["val"]}
    assert splits == patient_grouped_splits(cases, num_folds=5, seed=3)


# ---------------------------------------------------------------- phantoms

def test_phantoms_are_reproducible_bit_for_bit():
    for make, shape in ((make_brats_phantom, (32, 40, 32)), (make_acdc_phantom, (6, 48, 48))):
        images_a, seg_a = make(shape, rng=np.random.default_rng(7))
        images_b, seg_b = make(shape, rng=7)
        assert images_a.dtype == np.float32 and seg_a.dtype == np.uint8
        assert images_a.tobytes() == images_b.tobytes() and seg_a.tobytes() == seg_b.tobytes()
        images_c, seg_c = make(shape, rng=8)
        assert not np.array_equal(images_a, images_c)


def test_brats_phantom_labels_brain_and_lesion_visibility():
    shape = (48, 64, 48)
    with_enhancing = 0
    for seed in range(6):
        images, seg = make_brats_phantom(shape, (1.0, 1.0, 1.0), seed)
        assert images.shape == (4, *shape) and seg.shape == shape
        assert set(np.unique(seg).tolist()) <= {0, 1, 2, 3}
        brain = images[0] > 0
        assert all(np.array_equal(images[c] > 0, brain) for c in range(4))  # skull-stripped, zero background
        assert np.all(images >= 0) and np.array_equal(images, np.rint(images))
        assert np.all(brain[seg > 0]) and np.count_nonzero(seg) > 0
        t1, t1ce, t2, flair = images
        edema = seg == 1
        assert flair[edema].mean() > 1.3 * flair[brain].mean()
        assert t2[edema].mean() > 1.3 * t2[brain].mean()
        if np.any(seg == 3):
            with_enhancing += 1
            assert t1ce[seg == 3].mean() > 1.2 * t1ce[brain].mean()
            if np.any(seg == 2):
                assert t1ce[seg == 2].mean() < t1ce[brain].mean() < t1ce[seg == 3].mean()
    assert with_enhancing >= 4


def test_brats_phantom_extent_scales_with_shape():
    """The cropped brain takes the same fraction of the volume as at full size (see the full-size test)."""
    shape = np.array([62, 96, 96])
    low, high = np.array([0.85, 0.67, 0.55]), np.array([0.99, 0.79, 0.66])
    for seed in range(4):
        images, _ = make_brats_phantom(tuple(shape), rng=seed)
        occupied = np.argwhere(images.any(0))
        fraction = (occupied.max(0) - occupied.min(0) + 1) / shape
        assert np.all(fraction >= low - 1 / shape) and np.all(fraction <= high + 1 / shape), fraction


def test_brats_phantom_lesion_size_sets_the_lesion_volume():
    """Same seed, larger lesion_size: a larger whole tumour; the default is BraTS-like (0.18-0.42)."""
    shape = (48, 56, 48)
    for seed in range(3):
        _, default = make_brats_phantom(shape, rng=seed)
        _, explicit = make_brats_phantom(shape, rng=seed, lesion_size=(0.18, 0.42))
        _, large = make_brats_phantom(shape, rng=seed, lesion_size=(0.5, 0.6))
        assert np.array_equal(default, explicit)
        assert np.count_nonzero(large) > 1.5 * np.count_nonzero(default)
    with pytest.raises(ValueError, match="lesion_size"):
        make_brats_phantom(shape, rng=0, lesion_size=(0.6, 0.3))


def test_brats_phantom_full_size_crops_like_brats():
    images, seg = make_brats_phantom((155, 240, 240), (1.0, 1.0, 1.0), rng=11)
    cropped, _, bbox = crop_to_nonzero(images, seg[None].astype(np.int8))  # nnU-Net's own crop
    extent = np.array(cropped.shape[1:])
    assert np.all(extent >= (130, 160, 130)) and np.all(extent <= (155, 190, 160)), extent
    assert tuple(int(np.ceil(e / 32) * 32) for e in extent) == (160, 192, 160)
    whole_tumor_cm3 = np.count_nonzero(seg) / 1000
    assert 3 < whole_tumor_cm3 < 400


def test_acdc_phantom_is_cardiac_and_anisotropic():
    spacing = (10.0, 1.5, 1.5)
    image, seg = make_acdc_phantom((10, 128, 128), spacing, rng=4)
    assert image.shape == (1, 10, 128, 128)
    assert set(np.unique(seg).tolist()) == {0, 1, 2, 3}
    assert image.min() > 0 or np.count_nonzero(image) > 0.9 * image.size  # cine MRI has no zero background
    blood, muscle = image[0][seg == 3].mean(), image[0][seg == 2].mean()
    assert blood > 2 * muscle

    lv_area_mm2 = (seg == 3).sum((1, 2)) * spacing[1] * spacing[2]
    assert 25 < 2 * np.sqrt(lv_area_mm2[0] / np.pi) < 75  # basal LV diameter in mm
    assert lv_area_mm2[0] > lv_area_mm2[len(lv_area_mm2) // 2] > lv_area_mm2[-1]  # tapers towards the apex
    # the myocardium surrounds the LV cavity in every slice that has one
    for z in np.flatnonzero(lv_area_mm2):
        lv = seg[z] == 3
        ring = np.zeros_like(lv)
        ring[1:-1, 1:-1] = lv[:-2, 1:-1] | lv[2:, 1:-1] | lv[1:-1, :-2] | lv[1:-1, 2:]
        assert np.all(np.isin(seg[z][ring], (2, 3)))
    # thick slices: labels change far more between neighbouring slices than between neighbouring rows
    heart = np.any(seg > 0, axis=0)
    through_plane = np.mean(seg[1:, heart] != seg[:-1, heart])
    in_plane = np.mean((seg[:, 1:] != seg[:, :-1])[:, heart[1:] & heart[:-1]])
    assert through_plane > 3 * in_plane


def test_write_phantom_dataset_is_a_valid_nnunet_dataset(tmp_path):
    raw = str(tmp_path / "raw")
    spacing = (2.0, 1.0, 1.5)
    out = write_phantom_dataset(501, "BraTSPhantom", 3, "brats", (16, 24, 20), spacing, seed=5, num_test=1,
                                raw_folder=raw, oblique=True, num_processes=1)
    assert out == os.path.join(raw, "Dataset501_BraTSPhantom")
    assert sorted(os.listdir(out)) == ["dataset.json", "imagesTr", "imagesTs", "labelsTr", "labelsTs"]
    assert len(os.listdir(os.path.join(out, "imagesTr"))) == 12
    assert os.listdir(os.path.join(out, "labelsTs")) == ["case_0003.nii.gz"]
    verify_dataset_integrity(out, num_processes=1)

    dataset_json = _load_json(os.path.join(out, "dataset.json"))
    assert dataset_json["labels"] == {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3],
                                      "enhancing_tumor": 3}
    assert dataset_json["regions_class_order"] == [1, 2, 3]
    assert dataset_json["channel_names"] == {"0": "T1", "1": "T1ce", "2": "T2", "3": "FLAIR"}
    assert dataset_json["numTraining"] == 3 and dataset_json["nsd_tolerance_mm"] == 1.0

    for case, tilted in (("case_0000", False), ("case_0001", True)):
        label = sitk.ReadImage(os.path.join(out, "labelsTr", f"{case}.nii.gz"))
        assert label.GetSize() == (20, 24, 16) and label.GetSpacing() == spacing[::-1]
        assert np.abs(label.GetOrigin()).max() > 1
        direction = np.array(label.GetDirection()).reshape(3, 3)
        np.testing.assert_allclose(direction @ direction.T, np.eye(3), atol=1e-6)
        assert np.allclose(direction, np.eye(3)) != tilted
        for channel in range(4):
            image = sitk.ReadImage(os.path.join(out, "imagesTr", f"{case}_{channel:04d}.nii.gz"))
            assert (image.GetOrigin(), image.GetDirection(), image.GetSpacing()) == \
                   (label.GetOrigin(), label.GetDirection(), label.GetSpacing())

    # same seed: identical files; `oblique` changes headers only, never the voxels
    again = write_phantom_dataset(502, "BraTSPhantom", 3, "brats", (16, 24, 20), spacing, seed=5, num_test=1,
                                  raw_folder=raw, oblique=True)
    straight = write_phantom_dataset(503, "BraTSPhantom", 3, "brats", (16, 24, 20), spacing, seed=5,
                                     raw_folder=raw, oblique=False)
    for name in ("case_0001_0001.nii.gz", "case_0002_0003.nii.gz"):
        assert filecmp.cmp(os.path.join(out, "imagesTr", name), os.path.join(again, "imagesTr", name), shallow=False)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(out, "imagesTr", name))),
                                      sitk.GetArrayFromImage(sitk.ReadImage(os.path.join(straight, "imagesTr",
                                                                                         name))))
    with pytest.raises(FileExistsError, match="overwrite"):
        write_phantom_dataset(503, "BraTSPhantom", 1, "brats", (16, 24, 20), raw_folder=raw)
    write_phantom_dataset(503, "BraTSPhantom", 1, "brats", (16, 24, 20), raw_folder=raw, overwrite=True)
    assert len(os.listdir(os.path.join(straight, "labelsTr"))) == 1  # no stale cases left behind


def test_phantom_command_line_writes_acdc_like_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path / "raw"))
    phantoms.main(["-d", "504", "-n", "2", "--kind", "acdc", "--shape", "5", "32", "32", "-np", "1"])
    out = tmp_path / "raw" / "Dataset504_ACDCPhantom"
    dataset_json = _load_json(str(out / "dataset.json"))
    assert dataset_json["labels"] == {"background": 0, "RV": 1, "MYO": 2, "LV": 3}
    assert dataset_json["channel_names"] == {"0": "cineMRI"} and "regions_class_order" not in dataset_json
    label = sitk.ReadImage(str(out / "labelsTr" / "case_0001.nii.gz"))
    assert label.GetSpacing() == (1.5, 1.5, 10.0) and label.GetSize() == (32, 32, 5)
    assert set(np.unique(sitk.GetArrayFromImage(label)).tolist()) <= {0, 1, 2, 3}
