"""Whole-case QC training examples: (subject images, one candidate) at the plan's fixed input shape.

Unlike nnU-Net's patch loader, QC sees the whole case: every array is centre-cropped or zero-padded to the
fixed shape, and batches are drawn evenly over the DSC bins (SPEC §4).
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from batchgenerators.dataloading.data_loader import SlimDataLoaderBase
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset

from nnqc.preprocessing.cropping import centre_crop_or_pad
from nnqc.sampling import BalancedBatchSampler
from nnqc.training.validation_shards import PADDING_COLUMN

CANDIDATES_FOLDER = "candidates"
SUBJECT_QUALITY_COLUMNS = ("dsc", "nsd")


def load_candidate(preprocessed_folder: str, sample: str) -> np.ndarray:
    """The preprocessed candidate label map (1, *S) of a sample."""
    path = os.path.join(preprocessed_folder, CANDIDATES_FOLDER, sample + ".npz")
    try:
        with np.load(path) as f:
            return f["seg"]
    except (OSError, KeyError, ValueError) as e:
        raise RuntimeError(f"cannot read the preprocessed candidate {path}: {e}") from e


def load_example(dataset: nnUNetBaseDataset, preprocessed_folder: str, subject: str, sample: str,
                 patch_size: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images (M, *P) float32 and the stacked [reference, candidate] label maps (2, *P) int16."""
    data, seg, _, _ = dataset.load_case(subject)
    candidate = load_candidate(preprocessed_folder, sample)
    if candidate.shape[1:] != seg.shape[1:]:
        raise RuntimeError(f"sample {sample}: candidate shape {candidate.shape[1:]} differs from its subject "
                           f"{subject}'s {seg.shape[1:]}; rerun nnQC_plan_and_preprocess --clean")
    images = centre_crop_or_pad(np.asarray(data, dtype=np.float32), patch_size)
    labels = np.concatenate((np.asarray(seg, dtype=np.int16), candidate.astype(np.int16)))
    return images, centre_crop_or_pad(labels, patch_size)


def collate(examples: Sequence[tuple[np.ndarray, np.ndarray]], rows: pd.DataFrame, transforms=None,
            quality_columns: Sequence[str] = SUBJECT_QUALITY_COLUMNS) -> dict:
    """Stack examples into a batch dict; `transforms` (batchgeneratorsv2) run per example on image and
    labels together, so spatial transforms move images, reference and candidate identically. "quality" holds the
    targets of `quality_columns` (the trainer's: subject level, then per region)."""
    images, labels = [], []
    for image, label in examples:
        image, label = torch.from_numpy(image), torch.from_numpy(label)
        if transforms is not None:
            out = transforms(image=image, segmentation=label)
            image, label = out["image"], out["segmentation"]
        images.append(image)
        labels.append(label)
    labels = torch.stack(labels)
    return {"data": torch.stack(images), "reference": labels[:, :1], "candidate": labels[:, 1:],
            "quality": torch.from_numpy(rows[list(quality_columns)].to_numpy(np.float32, copy=True)),
            "samples": list(rows["sample"]),
            # validation shards of distributed ranks are padded with repeated samples that must not count
            PADDING_COLUMN: (rows[PADDING_COLUMN].to_numpy(bool, copy=True) if PADDING_COLUMN in rows
                             else np.zeros(len(rows), dtype=bool))}


class nnQCDataLoader(SlimDataLoaderBase):
    """Endless training batches, each drawn evenly over the DSC bins, afresh at every call.

    The sampler is created lazily in the process that draws from it: nnU-Net's augmenter copies this
    object into each worker, and a sampler seeded before that copy would make every worker draw the same.
    """

    def __init__(self, dataset: nnUNetBaseDataset, samples: pd.DataFrame, preprocessed_folder: str,
                 batch_size: int, patch_size: Sequence[int], transforms=None, seed: int | None = None,
                 quality_columns: Sequence[str] = SUBJECT_QUALITY_COLUMNS,
                 bin_edges: Sequence[float] | None = None):
        super().__init__(dataset, batch_size, None)
        if len(samples) == 0:
            raise RuntimeError("no QC samples for the training subjects of this fold")
        self.samples = samples.reset_index(drop=True)
        self.preprocessed_folder = preprocessed_folder
        self.patch_size = tuple(patch_size)
        self.transforms = transforms
        self.quality_columns = tuple(quality_columns)
        self.seed = seed
        self.bin_edges = None if bin_edges is None else tuple(bin_edges)
        self._sampler, self._pid = None, None

    def generate_train_batch(self) -> dict:
        if self._sampler is None or self._pid != os.getpid():
            seed = None if self.seed is None else self.seed + self.thread_id
            self._sampler = BalancedBatchSampler(self.samples["dsc"].to_numpy(), self.batch_size, seed=seed,
                                                 edges=self.bin_edges)
            self._pid = os.getpid()
        rows = self.samples.iloc[self._sampler.sample_batch()]
        examples = [load_example(self._data, self.preprocessed_folder, r.subject, r.sample, self.patch_size)
                    for r in rows.itertuples()]
        return collate(examples, rows, self.transforms, self.quality_columns)


def iterate_batches(dataset: nnUNetBaseDataset, samples: pd.DataFrame, preprocessed_folder: str, batch_size: int,
                    patch_size: Sequence[int], quality_columns: Sequence[str] = SUBJECT_QUALITY_COLUMNS):
    """Deterministic, unaugmented batches over `samples` in order (validation)."""
    for start in range(0, len(samples), batch_size):
        rows = samples.iloc[start:start + batch_size]
        examples = [load_example(dataset, preprocessed_folder, r.subject, r.sample, patch_size)
                    for r in rows.itertuples()]
        yield collate(examples, rows, quality_columns=quality_columns)


class nnQCValidationLoader(SlimDataLoaderBase):
    """The batches of iterate_batches over `samples`, in order, again and again: one pass per validation epoch.

    Deterministic in a single producer, so that a background worker (one: with several, nnU-Net's shared queue
    would interleave their batches by chance) hands the trainer exactly the batches the main process would load.
    """

    def __init__(self, dataset: nnUNetBaseDataset, samples: pd.DataFrame, preprocessed_folder: str, batch_size: int,
                 patch_size: Sequence[int], quality_columns: Sequence[str] = SUBJECT_QUALITY_COLUMNS):
        super().__init__(dataset, batch_size, None)
        if len(samples) == 0:
            raise RuntimeError("no QC samples for the validation subjects of this fold")
        self.samples = samples
        self.preprocessed_folder = preprocessed_folder
        self.patch_size = tuple(patch_size)
        self.quality_columns = tuple(quality_columns)
        self._batches = None

    def __len__(self) -> int:
        """Batches in one pass."""
        return -(-len(self.samples) // self.batch_size)

    def generate_train_batch(self) -> dict:
        if self._batches is None:
            self._batches = self._cycle()
        return next(self._batches)

    def _cycle(self):
        while True:
            yield from iterate_batches(self._data, self.samples, self.preprocessed_folder, self.batch_size,
                                       self.patch_size, self.quality_columns)
