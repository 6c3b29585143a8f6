"""nnqc.atomic_files: temporary names, whole-or-absent writes, byte formats as nnU-Net writes them."""
import gzip
import json
import os

import numpy as np
import pytest
import SimpleITK as sitk
from batchgenerators.utilities.file_and_folder_operations import save_json

from nnqc.atomic_files import (
    copy_atomically,
    is_complete_copy,
    is_temporary_name,
    link_or_copy,
    replace_atomically,
    save_npz_atomically,
    temporary_path_for,
    write_bytes_atomically,
    write_image_atomically,
    write_json_atomically,
    write_text_atomically,
)


def test_temporary_name_is_a_hidden_sibling_with_the_full_extension(tmp_path):
    path = str(tmp_path / "case_0003__seggen__000.nii.gz")
    temporary = temporary_path_for(path)
    folder, name = os.path.split(temporary)
    assert folder == str(tmp_path)
    assert name == f".case_0003__seggen__000.nii.gz.{os.getpid()}.tmp.nii.gz"
    assert is_temporary_name(name)
    assert os.path.basename(temporary_path_for(str(tmp_path / "README"))) == f".README.{os.getpid()}.tmp"
    assert is_temporary_name(os.path.basename(temporary_path_for(str(tmp_path / "README"))))
    for final in ("case_0003.nii.gz", "splits_final.json", ".hidden", "a.tmp.nii.gz", "case.12.nii.gz"):
        assert not is_temporary_name(final)


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "qc_summary.csv"
    path.write_text("old\n")

    def fail(temporary):
        with open(temporary, "w") as f:
            f.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        replace_atomically(str(path), fail)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["qc_summary.csv"]
    write_text_atomically(str(path), "new\r\nline\n")
    assert path.read_bytes() == b"new\r\nline\n"  # line endings are not translated
    assert os.listdir(tmp_path) == ["qc_summary.csv"]


def test_json_bytes_equal_nnunet_save_json(tmp_path):
    content = {"z": [1, 2.5, "é"], "a": {"nested": True, "none": None}, "m": [[1, 2], [3]]}
    ours, theirs = tmp_path / "ours.json", tmp_path / "theirs.json"
    write_json_atomically(str(ours), content)
    save_json(content, str(theirs), sort_keys=False)
    assert ours.read_bytes() == theirs.read_bytes()
    assert list(json.loads(ours.read_text())) == ["z", "a", "m"]  # key order kept


def test_image_is_compressed_and_exact(tmp_path):
    array = np.random.default_rng(0).integers(0, 4, (5, 6, 7)).astype(np.uint8)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((1.0, -2.0, 3.0))
    path = tmp_path / "seg.nii.gz"
    write_image_atomically(image, str(path))
    with gzip.open(path) as f:  # the temporary's extension made SimpleITK write gzipped NIfTI
        assert len(f.read()) > array.size
    back = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    assert back.GetSpacing() == pytest.approx((0.7, 0.8, 2.5)) and back.GetOrigin() == (1.0, -2.0, 3.0)
    assert os.listdir(tmp_path) == ["seg.nii.gz"]


def test_npz_goes_to_exactly_the_path(tmp_path):
    seg = np.arange(24, dtype=np.int8).reshape(2, 3, 4)
    save_npz_atomically(str(tmp_path / "sample"), seg=seg)  # no '.npz' appended
    assert os.listdir(tmp_path) == ["sample"]
    with np.load(tmp_path / "sample") as loaded:
        assert list(loaded) == ["seg"]
        np.testing.assert_array_equal(loaded["seg"], seg)
        assert loaded["seg"].dtype == np.int8


def test_copy_and_link_are_byte_exact_and_repeatable(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(bytes(range(256)) * 10)
    out = tmp_path / "out"
    out.mkdir()
    copy_atomically(str(source), str(out / "copy.bin"))
    assert (out / "copy.bin").read_bytes() == source.read_bytes()
    assert os.stat(out / "copy.bin").st_ino != os.stat(source).st_ino
    for _ in range(2):  # the second time the destination already is a link to the same file
        link_or_copy(str(source), str(out / "link.bin"))
    assert os.stat(out / "link.bin").st_ino == os.stat(source).st_ino
    assert sorted(os.listdir(out)) == ["copy.bin", "link.bin"]
    # rewriting a linked destination replaces the name; the shared file (the source) stays as it was
    write_bytes_atomically(str(out / "link.bin"), b"new")
    assert (out / "link.bin").read_bytes() == b"new"
    assert source.read_bytes() == bytes(range(256)) * 10


def test_file_is_synced_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor):
        target = os.readlink(f"/proc/self/fd/{descriptor}") if os.path.exists("/proc/self/fd") else str(descriptor)
        events.append(("fsync", os.path.basename(target)))
        real_fsync(descriptor)

    def replace(source, destination):
        events.append(("replace", os.path.basename(destination)))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    path = tmp_path / "out.txt"
    write_text_atomically(str(path), "content")
    assert path.read_text() == "content"
    temporary = os.path.basename(temporary_path_for(str(path)))
    assert events[0] == ("fsync", temporary)  # the data is on disk before the new name points at it
    assert events[1] == ("replace", "out.txt")
    if os.path.exists("/proc/self/fd"):
        assert events[2] == ("fsync", os.path.basename(tmp_path))  # and the rename itself is made durable


def test_complete_copy_compares_content_or_inode_not_size(tmp_path):
    source = tmp_path / "image.nii"
    source.write_bytes(b"A" * 1000)
    copy = tmp_path / "copy.nii"
    assert not is_complete_copy(str(source), str(copy))
    copy_atomically(str(source), str(copy))
    assert is_complete_copy(str(source), str(copy))
    # a re-converted uncompressed image keeps its size but not its content: the old copy is stale
    source.write_bytes(b"B" * 1000)
    assert os.path.getsize(source) == os.path.getsize(copy)
    assert not is_complete_copy(str(source), str(copy))
    link = tmp_path / "link.nii"
    link_or_copy(str(source), str(link))
    assert is_complete_copy(str(source), str(link))


def test_complete_copy_reads_the_bytes_again_after_a_same_size_same_mtime_replacement(tmp_path):
    """filecmp.cmp would answer from its cache keyed by size and mtime: a stale copy would pass as complete."""
    source, copy = tmp_path / "labels.nii", tmp_path / "copy.nii"
    source.write_bytes(b"A" * 1000)
    copy_atomically(str(source), str(copy))
    assert is_complete_copy(str(source), str(copy))
    stat = os.stat(source)
    source.write_bytes(b"A" * 999 + b"B")
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.stat(source).st_mtime_ns == stat.st_mtime_ns
    assert not is_complete_copy(str(source), str(copy))
