"""Folders of segmentations produced by other segmenters, ingested as QC candidates (SPEC §4 source (a)).

A folder holds CASE + file_ending per case, as nnU-Net writes predictions (other files nnU-Net leaves there,
such as plans.json or probability .npz files, are ignored). Each folder is one source, named by a tag.
"""
import os
import re
import warnings
from dataclasses import dataclass
from typing import Sequence

from nnqc.atomic_files import is_temporary_name
from nnqc.qc_data.dataset_io import ConversionError, Geometry, check_labels, read_label_map

# sources the converter generates itself; an external tag may not take these names
RESERVED_TAGS: tuple[str, ...] = ("seggen", "degrade", "external")


@dataclass(frozen=True)
class ExternalSource:
    tag: str
    folder: str
    files: dict[str, str]  # subject -> candidate file


def sanitize_tag(text: str) -> str:
    """A tag safe inside sample ids '{subject}__{source}__{k:03d}': letters, digits, '-' and single '_'."""
    tag = re.sub(r"[^A-Za-z0-9_-]+", "-", text)
    tag = re.sub(r"_{2,}", "_", tag).strip("-_")
    return tag


def index_candidate_folder(folder: str, subjects: Sequence[str], file_ending: str,
                           warn_missing: bool = True) -> dict[str, str]:
    """Map subject -> candidate file. A file without a subject is an error naming it; a subject without a file
    is skipped with a warning (unless the folder holds a part of the subjects by design: a fold's validation)."""
    if not os.path.isdir(folder):
        raise ConversionError(f"Candidate folder {folder} does not exist")
    known = set(subjects)
    files = {}
    for name in sorted(os.listdir(folder)):
        if not name.endswith(file_ending) or is_temporary_name(name):
            continue
        case = name[:-len(file_ending)]
        if case not in known:
            raise ConversionError(f"Candidate file {os.path.join(folder, name)} has no subject: {case!r} is not a "
                                  f"case of the source dataset's labelsTr")
        files[case] = os.path.join(folder, name)
    missing = [s for s in subjects if s not in files]
    if len(missing) == len(known):
        raise ConversionError(f"Candidate folder {folder} holds no file ending with {file_ending} for any subject")
    if missing and warn_missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        warnings.warn(f"Candidate folder {folder} has no segmentation for {len(missing)} subject(s) ({shown}); "
                      f"they get no candidate from this folder", stacklevel=2)
    return files


def external_sources(folders: Sequence[str], tags: Sequence[str] | None, subjects: Sequence[str],
                     file_ending: str, partial_folders: Sequence[str] = ()) -> list[ExternalSource]:
    """One source per folder, tagged by `tags` or by the sanitized folder name; tags must be distinct.
    `partial_folders` hold some of the subjects by design (a fold's validation cases): no warning for the rest."""
    partial = {os.path.abspath(f) for f in partial_folders}
    if tags is not None and len(tags) != len(folders):
        raise ConversionError(f"{len(tags)} candidate tags given for {len(folders)} candidate folders")
    sources = []
    for i, folder in enumerate(folders):
        folder = os.path.abspath(folder)
        raw_tag = tags[i] if tags is not None else os.path.basename(os.path.normpath(folder))
        tag = sanitize_tag(raw_tag)
        if not tag:
            raise ConversionError(f"Candidate folder {folder}: tag {raw_tag!r} has no usable character; "
                                  f"give one with --candidate_tags")
        if tag in RESERVED_TAGS:
            raise ConversionError(f"Candidate folder {folder}: tag {tag!r} is reserved "
                                  f"({', '.join(RESERVED_TAGS)}); give another with --candidate_tags")
        clash = [s for s in sources if s.tag == tag]
        if clash:
            raise ConversionError(f"Candidate folders {clash[0].folder} and {folder} both get the tag {tag!r}; "
                                  f"give distinct tags with --candidate_tags")
        sources.append(ExternalSource(tag=tag, folder=folder, files=index_candidate_folder(
            folder, subjects, file_ending, warn_missing=folder not in partial)))
    return sources


def check_external_candidate(path: str, reference_geometry: Geometry, allowed_labels: Sequence[int]) -> None:
    """A candidate must be readable, share its reference's geometry and hold only the dataset's labels."""
    array, geometry = read_label_map(path)
    problems = geometry.mismatches(reference_geometry)
    if problems:
        raise ConversionError(f"Candidate {path} does not match the geometry of its subject's reference: "
                              f"{'; '.join(problems)}")
    check_labels(array, allowed_labels, path)
