"""nnQC_convert on bad input: every defect is refused in one error naming the case and the file, nothing is
written, and the input folders stay byte-identical. One tiny source dataset is built once; each case copies it
(or an external candidate folder) and breaks one thing."""
import os
import shutil
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from helpers import read_image as _read
from helpers import tree_hashes as _tree_hash
from helpers import use_nnunet_folders
from helpers import write_like as _write
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero

from dataset_conversion.phantoms import write_phantom_dataset
from nnqc.qc_data.dataset_io import readable_message
from nnqc.qc_data.targets_table import TARGETS_CSV, target_rows
from nnqc.run.convert import convert_entry

pytestmark = pytest.mark.filterwarnings("ignore:Candidate folder")

SOURCE_ID = 93
SHAPE = (20, 24, 20)
SUBJECTS = ["case_0000", "case_0001", "case_0002"]
BROKEN = "case_0001"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input")
    patch = pytest.MonkeyPatch()
    use_nnunet_folders(patch, nnUNet_raw=root / "raw")
    folder = write_phantom_dataset(SOURCE_ID, "Tiny", len(SUBJECTS), "brats", SHAPE, (1.0, 1.0, 1.0), seed=1)
    externals = str(root / "externals")
    os.makedirs(externals)
    for s in SUBJECTS:  # another segmenter's output: the references themselves
        shutil.copyfile(os.path.join(folder, "labelsTr", s + ".nii.gz"), os.path.join(externals, s + ".nii.gz"))
    yield root, folder, externals
    patch.undo()


def _run(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Exit code (0 when the entry point returns) and stderr of nnQC_convert."""
    monkeypatch.setattr(sys, "argv", ["nnQC_convert", *map(str, args)])
    try:
        convert_entry()
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def _reference(dataset):
    return os.path.join(dataset, "labelsTr", BROKEN + ".nii.gz")


def _image(dataset, channel=1):
    return os.path.join(dataset, "imagesTr", f"{BROKEN}_{channel:04d}.nii.gz")


def _candidate(externals):
    return os.path.join(externals, BROKEN + ".nii.gz")


def _save_nibabel(array, path):
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)


# each defect: (where it is: "source" or "externals", break it -> the file to be named, expected words)
def four_d(path):
    array, _ = _read(path)
    _save_nibabel(np.stack([array, array], axis=-1).transpose(2, 1, 0, 3), path)
    return path


def two_d(path):
    array, _ = _read(path)
    _save_nibabel(np.ascontiguousarray(array[SHAPE[0] // 2].T), path)
    return path


def foreign_label(path):
    array, image = _read(path)
    array[0, 0, :2] = 7
    _write(array, image, path)
    return path


def float_label(path):
    array, image = _read(path)
    array = array.astype(np.float32)
    array[array == 2] = 1.5
    _write(array, image, path)
    return path


def truncated(path):
    """An interrupted copy: a third of the bytes arrived (on these tiny files the cut lies inside the header)."""
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(content[:len(content) // 3])
    return path


def nan_voxels(path):
    array, image = _read(path)
    array = array.astype(np.float32)
    array[SHAPE[0] // 2, SHAPE[1] // 2, :3] = np.nan
    _write(array, image, path)
    return path


def other_spacing(path):
    array, image = _read(path)
    _write(array, image, path, spacing=(1.0, 1.2, 1.0))
    return path


def other_origin(path):
    array, image = _read(path)
    _write(array, image, path, origin=tuple(o + 3.0 for o in image.GetOrigin()))
    return path


def other_direction(path):
    array, image = _read(path)
    _write(array, image, path, direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    return path


CASES = {
    "4D reference": ("source", lambda d: four_d(_reference(d)), "is a 4D image"),
    "2D reference": ("source", lambda d: two_d(_reference(d)), "is a 2D image"),
    "4D candidate": ("externals", lambda d: four_d(_candidate(d)), "is a 4D image"),
    "4D image": ("source", lambda d: four_d(_image(d)), "is a 4D image"),
    "2D image": ("source", lambda d: two_d(_image(d)), "is a 2D image"),
    "2D candidate": ("externals", lambda d: two_d(_candidate(d)), "is a 2D image"),
    "reference label outside dataset.json": ("source", lambda d: foreign_label(_reference(d)), "labels [7]"),
    "candidate label outside dataset.json": ("externals", lambda d: foreign_label(_candidate(d)), "labels [7]"),
    "float reference labels": ("source", lambda d: float_label(_reference(d)), "non-integer"),
    "float candidate labels": ("externals", lambda d: float_label(_candidate(d)), "non-integer"),
    "image spacing mismatch": ("source", lambda d: other_spacing(_image(d)), "spacing"),
    "image origin mismatch": ("source", lambda d: other_origin(_image(d)), "origin"),
    "image direction mismatch": ("source", lambda d: other_direction(_image(d)), "direction"),
    "candidate spacing mismatch": ("externals", lambda d: other_spacing(_candidate(d)), "spacing"),
    "candidate origin mismatch": ("externals", lambda d: other_origin(_candidate(d)), "origin"),
    "candidate direction mismatch": ("externals", lambda d: other_direction(_candidate(d)), "direction"),
    "truncated reference": ("source", lambda d: truncated(_reference(d)), "truncated"),
    "truncated image": ("source", lambda d: truncated(_image(d)), "truncated"),
    "truncated candidate": ("externals", lambda d: truncated(_candidate(d)), "truncated"),
    "NaN in an image": ("source", lambda d: nan_voxels(_image(d)), "NaN"),
}


def _missing_channel(dataset):
    path = _image(dataset, 2)
    os.remove(path)
    return path


def _image_without_segmentation(dataset):
    for c in range(4):
        shutil.copyfile(_image(dataset, c), os.path.join(dataset, "imagesTr", f"case_0009_{c:04d}.nii.gz"))
    return os.path.join(dataset, "imagesTr", "case_0009_0000.nii.gz")


def _segmentation_without_images(dataset):
    shutil.copyfile(_reference(dataset), os.path.join(dataset, "labelsTr", "case_0009.nii.gz"))
    return os.path.join(dataset, "imagesTr", "case_0009_0000.nii.gz")


LAYOUT_CASES = {
    "missing channel": (_missing_channel, BROKEN, "is missing"),
    "image without segmentation": (_image_without_segmentation, "case_0009", "has no reference"),
    "segmentation without images": (_segmentation_without_images, "case_0009", "is missing"),
}


def _copies(source, tmp_path):
    _, folder, externals = source
    dataset = str(tmp_path / os.path.basename(folder))
    shutil.copytree(folder, dataset)
    candidates = str(tmp_path / "candidates")
    shutil.copytree(externals, candidates)
    return dataset, candidates


def _assert_refused(monkeypatch, capsys, dataset, candidates, target_id, words, case, file):
    before = {"source": _tree_hash(dataset), "externals": _tree_hash(candidates)}
    code, err = _run(monkeypatch, capsys, "-s", dataset, "-d", target_id, "--candidates", candidates,
                     "--seggen", 1, "--degradations", 1, "-np", 1)
    assert code == 1
    problem = [line for line in err.splitlines() if file in line]
    assert problem, err
    assert words in problem[0] and case in problem[0], err
    assert "Traceback" not in err and ".cxx" not in err
    assert {"source": _tree_hash(dataset), "externals": _tree_hash(candidates)} == before
    raw = os.environ["nnUNet_raw"]
    assert not [n for n in os.listdir(raw) if n.startswith(f"Dataset{target_id:03d}_")]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_is_refused_by_case_and_file(source, tmp_path, monkeypatch, capsys, name):
    where, damage, words = CASES[name]
    dataset, candidates = _copies(source, tmp_path)
    file = damage(dataset if where == "source" else candidates)
    _assert_refused(monkeypatch, capsys, dataset, candidates, 130, words, BROKEN, file)


@pytest.mark.parametrize("name", sorted(LAYOUT_CASES))
def test_bad_layout_is_refused_by_case_and_file(source, tmp_path, monkeypatch, capsys, name):
    damage, case, words = LAYOUT_CASES[name]
    dataset, candidates = _copies(source, tmp_path)
    file = damage(dataset)
    _assert_refused(monkeypatch, capsys, dataset, candidates, 131, words, case, file)


def test_empty_segmentation_is_converted(source, tmp_path, monkeypatch, capsys):
    """An empty reference is valid: SegGen of nothing is nothing (DSC and NSD 1, both empty), the external
    candidate that has foreground scores 0, and the subject is reported with no foreground outside the view."""
    dataset, candidates = _copies(source, tmp_path)
    array, image = _read(_reference(dataset))
    _write(np.zeros_like(array), image, _reference(dataset))
    before = {"source": _tree_hash(dataset), "externals": _tree_hash(candidates)}
    code, err = _run(monkeypatch, capsys, "-s", dataset, "-d", 132, "--candidates", candidates, "--seggen", 1,
                     "--no_degradations", "-np", 1)
    assert code == 0, err
    folder = os.path.join(os.environ["nnUNet_raw"], "Dataset132_TinyQC")
    _, rows = target_rows(os.path.join(folder, TARGETS_CSV))
    by_sample = {r["sample"]: r for r in rows}
    seggen, external = by_sample[f"{BROKEN}__seggen__000"], by_sample[f"{BROKEN}__candidates__000"]
    assert seggen["dsc"] == 1.0 and seggen["nsd"] == 1.0
    assert external["dsc"] == 0.0
    assert seggen["reference_outside_view"] == 0.0 and seggen["candidate_outside_view"] == 0.0
    assert {"source": _tree_hash(dataset), "externals": _tree_hash(candidates)} == before


def test_candidate_outside_the_view_is_warned_about_by_name(source, tmp_path, monkeypatch, capsys):
    dataset, candidates = _copies(source, tmp_path)
    path = _candidate(candidates)
    array, image = _read(path)
    images = np.stack([_read(_image(dataset, c))[0] for c in range(4)]).astype(np.float32)
    _, _, bbox = crop_to_nonzero(images)
    outside = np.ones(array.shape, dtype=bool)
    outside[tuple(slice(lo, hi) for lo, hi in bbox)] = False
    added = np.flatnonzero(outside)[:max(2, int(np.count_nonzero(array)) // 10)]
    array.ravel()[added] = 1  # 1/11 of the foreground outside the images' non-zero box
    _write(array, image, path)
    code, err = _run(monkeypatch, capsys, "-s", dataset, "-d", 133, "--candidates", candidates, "--seggen", 1,
                     "--no_degradations", "-np", 1)
    assert code == 0, err
    folder = os.path.join(os.environ["nnUNet_raw"], "Dataset133_TinyQC")
    _, rows = target_rows(os.path.join(folder, TARGETS_CSV))
    row = next(r for r in rows if r["sample"] == f"{BROKEN}__candidates__000")
    assert row["candidate_outside_view"] == pytest.approx(len(added) / np.count_nonzero(array), abs=1e-12)
    warned = [line for line in err.splitlines() if "warning" in line and "outside the network's view" in line]
    assert len(warned) == 1 and f"{BROKEN}__candidates__000" in warned[0]  # the others lose nothing
    code, out = _run_verify(monkeypatch, capsys, folder)
    assert code == 0 and "outside the network's view" in out


def _run_verify(monkeypatch, capsys, folder):
    monkeypatch.setattr(sys, "argv", ["nnQC_convert", "--verify", "-d", folder, "-np", "1"])
    with pytest.raises(SystemExit) as exit_info:
        convert_entry()
    return exit_info.value.code, capsys.readouterr().out


def _convert_into(monkeypatch, capsys, dataset, candidates, target_id, name):
    return _run(monkeypatch, capsys, "-s", dataset, "-d", target_id, "-n", name, "--candidates", candidates,
                "--seggen", 1, "--no_degradations", "-np", 1)


def test_target_folder_equal_to_inside_around_or_linked_to_an_input(source, tmp_path, monkeypatch, capsys):
    root, folder, externals = source
    raw = os.environ["nnUNet_raw"]
    inputs = {"source": folder, "externals": externals}
    before = {k: _tree_hash(v) for k, v in inputs.items()}

    # equal: the QC dataset would be the source dataset itself
    code, err = _convert_into(monkeypatch, capsys, folder, externals, SOURCE_ID, "Tiny")
    assert code == 1 and f"is the input folder {folder}" in err

    # around: the candidates folder lies inside the QC dataset folder
    target = os.path.join(raw, "Dataset140_AroundQC")
    inner = os.path.join(target, "preds")
    shutil.copytree(externals, inner)
    around = _tree_hash(target)
    code, err = _convert_into(monkeypatch, capsys, folder, inner, 140, "AroundQC")
    assert code == 1 and f"holds the input folder {inner}" in err
    assert _tree_hash(target) == around

    # linked: the QC dataset folder is a symbolic link to the candidates folder
    link = os.path.join(raw, "Dataset141_LinkedQC")
    os.symlink(externals, link)
    code, err = _convert_into(monkeypatch, capsys, folder, externals, 141, "LinkedQC")
    assert code == 1 and f"is the input folder {externals}" in err and "through a link" in err

    # inside: nnUNet_raw (and so the QC dataset) lies inside the candidates folder
    outer = str(tmp_path / "outer")
    shutil.copytree(externals, outer)
    os.makedirs(os.path.join(outer, "raw"))
    outer_hash = _tree_hash(outer)
    monkeypatch.setenv("nnUNet_raw", os.path.join(outer, "raw"))
    code, err = _convert_into(monkeypatch, capsys, folder, outer, 142, "InsideQC")
    assert code == 1 and f"lies inside the input folder {outer}" in err
    assert _tree_hash(outer) == outer_hash

    assert {k: _tree_hash(v) for k, v in inputs.items()} == before


def test_a_failing_sample_names_sample_subject_and_files(source, tmp_path, monkeypatch, capsys):
    """Images that are zero everywhere pass the file checks but leave nnU-Net nothing to crop to: the sample
    that needs their view fails in one line naming it, its subject and the images."""
    dataset, candidates = _copies(source, tmp_path)
    for c in range(4):
        array, image = _read(_image(dataset, c))
        _write(np.zeros_like(array), image, _image(dataset, c))
    before = {"source": _tree_hash(dataset), "externals": _tree_hash(candidates)}
    code, err = _run(monkeypatch, capsys, "-s", dataset, "-d", 134, "--candidates", candidates, "--seggen", 1,
                     "--no_degradations", "-np", 1)
    assert code == 1
    line = next(line for line in err.splitlines() if "error" in line)
    assert f"Sample {BROKEN}__candidates__000 (subject {BROKEN})" in line and _image(dataset, 0) in line
    assert "zero everywhere" in line and "Traceback" not in err
    assert {"source": _tree_hash(dataset), "externals": _tree_hash(candidates)} == before


def test_simpleitk_messages_lose_their_cpp_source_location(tmp_path):
    path = str(tmp_path / "garbage.nrrd")
    with open(path, "wb") as f:
        f.write(b"not an image")
    with pytest.raises(RuntimeError) as error:
        sitk.ReadImage(path)
    assert ".cxx" in str(error.value)  # what SimpleITK says ...
    message = readable_message(error.value)
    assert ".cxx" not in message and "\n" not in message and path in message  # ... and what nnQC shows
