"""Validation split over DistributedDataParallel ranks so that it cannot hang and counts every sample once.

A collective call blocks until every rank makes it: ranks that run different numbers of validation steps, each
with a collective inside, wait for each other forever. So validation makes no collective call per step (the loss
is local, the network runs unwrapped) and every rank gets the same number of samples: its strided share, padded
with repeats of a real sample that are flagged and dropped before any metric is computed. Ranks exchange their
per-sample outputs once, after the last step.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from torch import distributed as dist

PADDING_COLUMN = "is_padding"


def shard_for_rank(samples: pd.DataFrame, rank: int, world_size: int) -> pd.DataFrame:
    """Rows rank, rank + world_size, ... of `samples`, padded to ceil(len / world_size) rows with repeats of
    the first sample; column `is_padding` flags the repeats. Every rank gets the same number of rows."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of {world_size} ranks")
    per_rank = math.ceil(len(samples) / world_size)
    shard = samples.iloc[rank::world_size].assign(**{PADDING_COLUMN: False})
    missing = per_rank - len(shard)
    if missing > 0:
        shard = pd.concat([shard, samples.iloc[[0] * missing].assign(**{PADDING_COLUMN: True})])
    return shard.reset_index(drop=True)


def drop_padding(per_sample: dict, is_padding: np.ndarray) -> dict:
    """Per-sample outputs (arrays or lists, one entry per row of the shards) without the padded rows."""
    keep = np.flatnonzero(~np.asarray(is_padding, dtype=bool))
    return {key: value[keep] if isinstance(value, np.ndarray) else [value[i] for i in keep]
            for key, value in per_sample.items()}


def gather_outputs(outputs: Sequence[dict], is_ddp: bool) -> dict:
    """Per-sample validation outputs ("samples", "true", "predicted", "sem_dice", PADDING_COLUMN) of all batches
    of all ranks, exchanged in one collective call after the last step, padding dropped; batches may be ragged.
    "loss" holds the per-batch losses."""
    if is_ddp:
        everything = [None] * dist.get_world_size()
        dist.all_gather_object(everything, outputs)
        outputs = [o for rank in everything for o in rank]
    per_sample = {"samples": [s for o in outputs for s in o["samples"]],
                  **{k: np.concatenate([o[k] for o in outputs]) for k in ("true", "predicted", "sem_dice")}}
    padding = np.concatenate([o[PADDING_COLUMN] for o in outputs])
    return {"loss": np.array([o["loss"] for o in outputs], dtype=np.float64), **drop_padding(per_sample, padding)}
