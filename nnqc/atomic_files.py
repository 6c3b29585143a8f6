"""Writing files so that they exist whole or not at all.

Every writer here writes to a hidden temporary sibling of the destination, flushes it to disk (fsync) and then
renames it over the destination with os.replace (atomic within one folder), then syncs the folder where the OS
allows it; so neither a killed run nor a power cut leaves a half-written file under a final name, and readers
that skip hidden files never see a partial one.
"""
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

import numpy as np
import SimpleITK as sitk

_TEMPORARY_NAME = re.compile(r"\..+\.\d+\.tmp(\..+)?")


def temporary_path_for(path: str) -> str:
    """'.name.PID.tmp.ext' next to `path`: hidden, unique per process, and with the full extension of `path`
    ('.nii.gz', not '.gz') because SimpleITK and matplotlib choose the file format from it."""
    folder, name = os.path.split(path)
    extension = "." + name.split(".", 1)[1] if "." in name else ""
    return os.path.join(folder, f".{name}.{os.getpid()}.tmp{extension}")


def is_temporary_name(name: str) -> bool:
    """True for a file name that temporary_path_for produces (a leftover when its writer was killed)."""
    return _TEMPORARY_NAME.fullmatch(name) is not None


def _fsync_file(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_folder(folder: str) -> None:
    """Make a rename in `folder` durable; skipped where folders cannot be opened (Windows)."""
    try:
        descriptor = os.open(folder or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def replace_atomically(path: str, write: Callable[[str], None]) -> None:
    """Call write(temporary path), fsync the result and move it to `path`; the temporary never outlives the
    call. Without the fsync a crash shortly after the rename can leave `path` empty on journaling filesystems."""
    temporary = temporary_path_for(path)
    try:
        write(temporary)
        _fsync_file(temporary)
        os.replace(temporary, path)
        _fsync_folder(os.path.dirname(path))
    finally:
        # also after success: renaming a hard link onto another link of the same file leaves both names
        if os.path.lexists(temporary):
            os.remove(temporary)


def write_text_atomically(path: str, text: str) -> None:
    """UTF-8, line endings exactly as given (byte-identical output on every platform)."""
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8", newline="") as f:
            f.write(text)
    replace_atomically(path, write)


def write_bytes_atomically(path: str, data: bytes) -> None:
    def write(temporary: str) -> None:
        with open(temporary, "wb") as f:
            f.write(data)
    replace_atomically(path, write)


def write_json_atomically(path: str, obj: Any) -> None:
    """JSON as nnU-Net writes it (save_json): indent 4, keys in their given order, no trailing newline.

    Values must be JSON types; nnU-Net's recursive_fix_for_json_export converts numpy values beforehand.
    """
    def write(temporary: str) -> None:
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=4, sort_keys=False)
    replace_atomically(path, write)


def copy_atomically(source: str, destination: str) -> None:
    """Byte-exact copy (every image header field is kept); the source is only read."""
    replace_atomically(destination, lambda temporary: shutil.copyfile(source, temporary))


def link_or_copy(source: str, destination: str) -> None:
    """Hard link when both lie on one filesystem (no extra space), byte-exact copy otherwise."""
    def write(temporary: str) -> None:
        try:
            os.link(source, temporary)
        except OSError:
            shutil.copyfile(source, temporary)
    replace_atomically(destination, write)


def is_complete_copy(source: str, destination: str) -> bool:
    """True when `destination` is a finished link or copy of `source`: the same file (inode), or the same bytes.
    Sizes alone are not enough: a re-converted uncompressed image keeps its size."""
    if not os.path.isfile(destination):
        return False
    if os.path.samefile(source, destination):
        return True
    return os.path.getsize(source) == os.path.getsize(destination) and _same_bytes(source, destination)


def _same_bytes(a: str, b: str) -> bool:
    """Byte comparison that always reads both files: filecmp.cmp caches its answers by path, size and mtime, so
    a file replaced by one of the same size and mtime would compare as before."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            block_a, block_b = fa.read(1 << 20), fb.read(1 << 20)
            if block_a != block_b:
                return False
            if not block_a:
                return True


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks: how shipped models and calibration sources are checked."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_npz_atomically(path: str, **arrays: np.ndarray) -> None:
    """np.savez_compressed of the named arrays to exactly `path` (no '.npz' appended)."""
    def write(temporary: str) -> None:
        with open(temporary, "wb") as f:
            np.savez_compressed(f, **arrays)
    replace_atomically(path, write)


def write_image_atomically(image: sitk.Image, path: str) -> None:
    """sitk.WriteImage with compression, as nnU-Net writes images; the format follows the extension of `path`."""
    replace_atomically(path, lambda temporary: sitk.WriteImage(image, temporary, useCompression=True))
