"""A segmenter's own nnU-Net world: the source dataset restricted to a channel subset, in folders of its own.

nnU-Net refuses two raw datasets with one id, and reads nnUNet_raw / nnUNet_preprocessed / nnUNet_results once
at import. So each channel subset gets its own three roots under the work folder (WORK/<tag>/nnUNet_raw, ...),
in which the derived dataset keeps the source's name and id: images and references are hard links of the
source's files (copies only across filesystems), dataset.json lists the subset's channels, and nnU-Net's own
planning, preprocessing and training run there in a process whose environment points at those roots.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from batchgenerators.utilities.file_and_folder_operations import join

from nnqc.atomic_files import link_or_copy, write_json_atomically
from nnqc.qc_data.dataset_io import SourceDataset
from nnqc.segmenters.channel_subsets import ChannelSubset, derived_dataset_json

ROOT_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


@dataclass(frozen=True)
class SegmenterRoots:
    """The three nnU-Net folders of one channel subset's segmenters, and the dataset's name inside them."""
    folder: str
    dataset_name: str

    def root(self, variable: str) -> str:
        return join(self.folder, variable)

    def environment(self) -> dict[str, str]:
        return {variable: self.root(variable) for variable in ROOT_VARIABLES}

    @property
    def raw_dataset(self) -> str:
        return join(self.root("nnUNet_raw"), self.dataset_name)

    @property
    def preprocessed_dataset(self) -> str:
        return join(self.root("nnUNet_preprocessed"), self.dataset_name)

    def model_folder(self, trainer_name: str, plans_identifier: str, configuration: str) -> str:
        return join(self.root("nnUNet_results"), self.dataset_name,
                    f"{trainer_name}__{plans_identifier}__{configuration}")


def _same_file(a: str, b: str) -> bool:
    return os.path.isfile(b) and os.path.samefile(a, b)


def write_derived_dataset(source: SourceDataset, subset: ChannelSubset, roots: SegmenterRoots) -> int:
    """Link the subset's channels and the references into the derived raw dataset; returns the number of files
    linked now (0 when everything was in place). Idempotent; the source is only read."""
    ending = source.file_ending
    pairs = []
    for subject, files in source.cases.items():
        pairs += [(files.images[c], join(roots.raw_dataset, "imagesTr", f"{subject}_{i:04d}{ending}"))
                  for i, c in enumerate(subset.channels)]
        pairs.append((files.reference, join(roots.raw_dataset, "labelsTr", subject + ending)))
    for folder in ("imagesTr", "labelsTr"):
        os.makedirs(join(roots.raw_dataset, folder), exist_ok=True)
    linked = 0
    for src, dst in pairs:
        if not _same_file(src, dst):
            link_or_copy(src, dst)
            linked += 1
    dataset_json = derived_dataset_json(source.dataset_json, subset)
    dataset_json["numTraining"] = len(source.cases)
    json_file = join(roots.raw_dataset, "dataset.json")
    current = None
    if os.path.isfile(json_file):
        with open(json_file, encoding="utf-8") as f:
            current = json.load(f)
    if current != dataset_json:
        write_json_atomically(json_file, dataset_json)
    return linked


def test_images_in(dataset_folder: str, file_ending: str, num_channels: int) -> dict[str, list[str]]:
    """A raw dataset's imagesTs cases (nnU-Net's test images, no references needed): case -> its channel files in
    channel order. A case missing a channel is refused by name; no imagesTs folder gives no case."""
    folder = join(dataset_folder, "imagesTs")
    if not os.path.isdir(folder):
        return {}
    channel_file = re.compile(r"(.+)_(\d{4})" + re.escape(file_ending))
    channels: dict[str, dict[int, str]] = {}
    for name in sorted(os.listdir(folder)):
        match = channel_file.fullmatch(name)
        if match and not name.startswith("."):
            channels.setdefault(match.group(1), {})[int(match.group(2))] = join(folder, name)
    cases = {}
    for case, files in channels.items():
        missing = [c for c in range(num_channels) if c not in files]
        if missing:
            raise ValueError(f"test case {case} in {folder} lacks channel(s) {missing} "
                             f"({case}_{missing[0]:04d}{file_ending})")
        cases[case] = [files[c] for c in range(num_channels)]
    return cases


def write_derived_test_images(source: SourceDataset, subset: ChannelSubset, roots: SegmenterRoots) -> int:
    """Link the subset's channels of the source's test images into the derived imagesTs (idempotent); returns
    the number of test cases."""
    cases = test_images_in(source.folder, source.file_ending, source.num_channels)
    folder = join(roots.raw_dataset, "imagesTs")
    os.makedirs(folder, exist_ok=True)
    for case, files in cases.items():
        for i, c in enumerate(subset.channels):
            target = join(folder, f"{case}_{i:04d}{source.file_ending}")
            if not _same_file(files[c], target):
                link_or_copy(files[c], target)
    return len(cases)
