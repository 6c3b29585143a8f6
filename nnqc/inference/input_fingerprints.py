"""Results tied to the inputs they were computed from: each assessed case records the size and SHA-256 of its
image and segmentation files, so that a file changed or replaced afterwards (whatever its modification time) is
noticed by --continue_prediction, which assesses the case again, and by nnQC_evaluate, which refuses to compare."""
from __future__ import annotations

import json
import os

from nnqc.atomic_files import file_sha256
from nnqc.output_files import CASE_RESULTS_FOLDER


def input_fingerprints(files: list[str]) -> dict[str, dict]:
    """{absolute path: {"size", "sha256"}} of the files a case was assessed from."""
    return {os.path.abspath(f): {"size": os.path.getsize(f), "sha256": file_sha256(f)} for f in files}


def changed_inputs(recorded: dict[str, dict]) -> list[str]:
    """The recorded files that are gone or no longer hold the bytes they held (size first: it costs nothing)."""
    changed = []
    for path, fingerprint in recorded.items():
        if not os.path.isfile(path) or os.path.getsize(path) != fingerprint["size"] \
                or file_sha256(path) != fingerprint["sha256"]:
            changed.append(path)
    return changed


def changed_since_prediction(output_folder: str, cases: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """({case: changed files}, cases whose result records no fingerprints) for assessed cases of an nnQC_predict
    output folder (results written before fingerprints were recorded cannot be checked)."""
    changed, unverified = {}, []
    for case in cases:
        try:
            with open(os.path.join(output_folder, CASE_RESULTS_FOLDER, case + ".json")) as f:
                recorded = json.load(f).get("inputs")
        except (OSError, ValueError):
            recorded = None
        if not recorded:
            unverified.append(case)
        elif changed_inputs(recorded):
            changed[case] = changed_inputs(recorded)
    return changed, unverified
