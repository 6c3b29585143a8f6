"""Validation split over DistributedDataParallel ranks so that it cannot hang and counts every sample once.

A collective call blocks until every rank makes it: ranks that run different numbers of validation steps, each
with a collective inside, wait for each other forever. So validation makes no collective call per step (the loss
is local, the network runs unwrapped) and every rank gets the same number of samples: its strided share, padded
with repeats of a real sample that are flagged and dropped before any metric is computed. Ranks exchange their
per-sample outputs once, after the last step.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

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
