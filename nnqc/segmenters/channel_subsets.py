"""Channel subsets of a multi-channel dataset ("0", "t1,flair", "all"): parsing, naming, and the derived
dataset.json of an nnU-Net dataset that holds only those channels."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

ALL = "all"


@dataclass(frozen=True)
class ChannelSubset:
    channels: tuple[int, ...]   # indices into the source's channel_names, in source order
    tag: str                    # folder-safe name, e.g. "T1", "T1ce+T2", "all"


def _tag(names: Sequence[str]) -> str:
    return "+".join(re.sub(r"[^A-Za-z0-9-]+", "-", n).strip("-") or "ch" for n in names)


def parse_subset(text: str, channel_names: dict) -> ChannelSubset:
    """'all', or comma-separated channel indices or names (case-insensitive) of dataset.json's channel_names."""
    names = [str(channel_names[k]) for k in sorted(channel_names, key=int)]
    if text.strip().lower() == ALL:
        return ChannelSubset(tuple(range(len(names))), ALL)
    by_name = {n.lower(): i for i, n in enumerate(names)}
    chosen = set()
    for token in (t.strip() for t in text.split(",")):
        if token.isdigit() and int(token) < len(names):
            chosen.add(int(token))
        elif token.lower() in by_name:
            chosen.add(by_name[token.lower()])
        else:
            described = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
            raise ValueError(f"channel subset {text!r}: {token!r} is neither a channel index nor a channel name "
                             f"of the source dataset ({described})")
    channels = tuple(sorted(chosen))
    if len(channels) == len(names):
        return ChannelSubset(channels, ALL)
    return ChannelSubset(channels, _tag([names[c] for c in channels]))


def parse_subsets(texts: Sequence[str] | None, channel_names: dict) -> list[ChannelSubset]:
    """The requested subsets, duplicates removed; by default every single channel and all of them (a
    single-channel dataset such as ACDC gets 'all' only)."""
    if not texts:
        n = len(channel_names)
        texts = [ALL] if n == 1 else [*map(str, range(n)), ALL]
    subsets: list[ChannelSubset] = []
    for text in texts:
        subset = parse_subset(text, channel_names)
        if subset not in subsets:
            subsets.append(subset)
    return subsets


def derived_dataset_json(source_json: dict, subset: ChannelSubset) -> dict:
    """The source's dataset.json with only the subset's channels, renumbered from 0; everything else kept."""
    derived = {k: v for k, v in source_json.items() if k != "dataset"}
    names = [source_json["channel_names"][k] for k in sorted(source_json["channel_names"], key=int)]
    derived["channel_names"] = {str(i): names[c] for i, c in enumerate(subset.channels)}
    derived["nnqc_channel_subset"] = {"tag": subset.tag, "source_channels": list(subset.channels)}
    return derived
