"""Does a folder of cases fit the model? Checked once, before the first case, for the whole folder.

A case that lacks one channel file is skipped with its reason (the predictor's per-case check), but a folder
whose files name other channels than the model was trained on (two of four, or five), or that holds no file
with the model's file ending, is the wrong folder or the wrong model: nothing useful can be predicted, and
using the first channels of a five-channel folder would be silently wrong.
"""
from __future__ import annotations

import os
import re
from collections import Counter

_CHANNEL_FILE = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})$")


class InputFolderError(ValueError):
    """An input folder that does not match the model; the message names the folder and what the model expects."""


def _visible_files(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if not f.startswith(".") and os.path.isfile(os.path.join(folder, f)))


def _endings(files: list[str]) -> str:
    counts = Counter("." + f.split(".", 1)[1] if "." in f else "(no extension)" for f in files)
    return ", ".join(f"{ending} ({n})" for ending, n in counts.most_common(5))


def _channel_list(channel_names: dict) -> str:
    return ", ".join(f"{int(k)}: {v}" for k, v in sorted(channel_names.items(), key=lambda kv: int(kv[0])))


def _found_channels(found: list[int], expected: int, example: str, file_ending: str) -> str:
    if found == list(range(len(found))) and len(found) < expected:
        last = f" ... {example}_{found[-1]:04d}{file_ending}" if len(found) > 1 else ""
        return f"{example}_0000{file_ending}{last} only"
    return f"channel files {', '.join(f'_{c:04d}' for c in found)} ({len(found)} channels, e.g. {example})"


def check_input_folders(images_folder: str, segmentations_folder: str, dataset_json: dict) -> None:
    """Raise InputFolderError unless the images use the model's file ending and, over the whole folder, name
    exactly the model's channels CASE_0000 ... CASE_{M-1}; the segmentations must use the file ending too."""
    for folder in (images_folder, segmentations_folder):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"input folder {folder} does not exist")
    file_ending, channel_names = dataset_json["file_ending"], dataset_json["channel_names"]
    expected = len(channel_names)
    wanted = (f"the model expects {expected} channel(s) ({_channel_list(channel_names)}) as CASE_0000{file_ending}"
              + (f" ... CASE_{expected - 1:04d}{file_ending}" if expected > 1 else ""))
    images = _visible_files(images_folder)
    with_ending = [f[:-len(file_ending)] for f in images if f.endswith(file_ending)]
    if not with_ending:
        found = f"it holds {_endings(images)}" if images else "it is empty"
        raise InputFolderError(f"{images_folder} does not match the model: {wanted}; {found}")
    channels: dict[int, str] = {}
    for stem in with_ending:
        match = _CHANNEL_FILE.fullmatch(stem)
        if match is not None:
            channels.setdefault(int(match["channel"]), match["case"])
    if sorted(channels) != list(range(expected)):
        if not channels:
            raise InputFolderError(f"{images_folder} does not match the model: {wanted}; no file there is named "
                                   f"CASE_XXXX{file_ending} (e.g. {with_ending[0]}{file_ending})")
        found = sorted(channels)
        example = channels[found[0]]
        raise InputFolderError(f"{images_folder} does not match the model: {wanted}; the input folder has "
                               f"{_found_channels(found, expected, example, file_ending)}")
    segmentations = _visible_files(segmentations_folder)
    if segmentations and not any(f.endswith(file_ending) for f in segmentations):
        raise InputFolderError(f"{segmentations_folder} does not match the model: the model reads {file_ending} "
                               f"segmentations; it holds {_endings(segmentations)}")
