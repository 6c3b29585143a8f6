"""Input file checks: truncated, corrupt, non-3D and NaN files are refused by name; good files pass."""
import gzip
import os

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from nnqc.input_files import InputFileError, check_input_file


def _nifti(path, array, dtype=np.float32):
    nib.save(nib.Nifti1Image(array.astype(dtype), np.diag([1.0, 1.2, 2.5, 1.0])), str(path))
    return str(path)


@pytest.fixture
def volume():
    return np.random.default_rng(0).normal(size=(20, 24, 16)).astype(np.float32)


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_whole_files_pass(tmp_path, volume, ending):
    check_input_file(_nifti(tmp_path / f"a{ending}", volume))
    check_input_file(_nifti(tmp_path / f"l{ending}", volume > 0, np.uint8))


@pytest.mark.parametrize("ending", [".nii.gz", ".nii"])
def test_truncated_file_is_refused_though_simpleitk_reads_it(tmp_path, volume, ending):
    path = _nifti(tmp_path / f"a{ending}", volume)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3 if ending == ".nii.gz" else len(data) - 100])
    with pytest.raises(InputFileError, match="truncated") as error:
        check_input_file(path)
    assert path in str(error.value)


def test_corrupt_stream_is_refused(tmp_path, volume):
    path = _nifti(tmp_path / "a.nii.gz", volume)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # garbage in the deflate stream, trailer kept
    data[-4:] = b"\0\0\0\0"
    open(path, "wb").write(bytes(data))
    with pytest.raises(InputFileError, match="corrupt|truncated"):
        check_input_file(path)


def test_multi_member_gzip_is_judged_by_its_real_length(tmp_path, volume):
    path = _nifti(tmp_path / "a.nii", volume)
    data = open(path, "rb").read()
    with open(str(tmp_path / "m.nii.gz"), "wb") as f:  # two gzip members: the trailer holds only the second's size
        f.write(gzip.compress(data[:1000]) + gzip.compress(data[1000:]))
    check_input_file(str(tmp_path / "m.nii.gz"))
    assert np.array_equal(nib.load(str(tmp_path / "m.nii.gz")).get_fdata(), volume)


def test_nan_is_found_where_simpleitk_loses_it(tmp_path, volume):
    volume[3, 4, 5] = np.nan
    volume[0, 0, 0] = np.inf
    path = _nifti(tmp_path / "a.nii.gz", volume)
    assert not np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(path))).any()  # why the check exists
    with pytest.raises(InputFileError, match="2 NaN or infinite"):
        check_input_file(path)
    check_input_file(path, check_nan=False)


@pytest.mark.parametrize("shape, dims", [((20, 24), "2D"), ((20, 24, 16, 3), "4D")])
def test_non_3d_is_refused_as_such(tmp_path, shape, dims):
    path = _nifti(tmp_path / "a.nii.gz", np.zeros(shape))
    with pytest.raises(InputFileError, match=f"is a {dims} image"):
        check_input_file(path)


def test_trailing_singleton_axis_is_3d(tmp_path):
    check_input_file(_nifti(tmp_path / "a.nii.gz", np.zeros((20, 24, 16, 1))))


def test_other_formats_are_checked_through_simpleitk(tmp_path):
    good = str(tmp_path / "a.mha")
    sitk.WriteImage(sitk.Image([8, 9, 10], sitk.sitkUInt8), good)
    check_input_file(good)
    flat = str(tmp_path / "b.mha")
    sitk.WriteImage(sitk.Image([8, 9], sitk.sitkUInt8), flat)
    with pytest.raises(InputFileError, match="2D"):
        check_input_file(flat)
    with pytest.raises(InputFileError, match="does not exist"):
        check_input_file(str(tmp_path / "missing.nii.gz"))
    not_nifti = tmp_path / "c.nii.gz"
    not_nifti.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(InputFileError):
        check_input_file(str(not_nifti))
    assert os.path.isfile(good)


def test_whole_gzip_files_are_judged_by_their_trailer_without_decompressing(tmp_path, volume, monkeypatch):
    # the header's voxel offset counts: without it the trailer never matches and every file is decompressed
    from nnqc import input_files

    image = sitk.GetImageFromArray(volume.astype(np.int16))
    sitk.WriteImage(image, str(tmp_path / "itk.nii.gz"), True)
    nifti = _nifti(tmp_path / "nib.nii.gz", volume, np.int16)

    def must_not_decompress(path):
        raise AssertionError(f"{path} was decompressed")

    monkeypatch.setattr(input_files, "_decompressed_length", must_not_decompress)
    check_input_file(str(tmp_path / "itk.nii.gz"))
    check_input_file(nifti)
