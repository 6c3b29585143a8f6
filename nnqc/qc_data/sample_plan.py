"""Which samples a QC conversion makes: a pure function of the subjects, the external folders and the options.

Every generated sample has its own seed derived from (base seed, sample id), so any sample can be regenerated
alone and a conversion can be split into parts, killed and restarted, and still end bit-identical to one run.
"""
import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from nnqc.qc_data.external import ExternalSource
from nnqc.qc_data.generators import BOUNDARY_FAMILIES, CLASSIC_FAMILIES, DEGRADATION_FAMILIES

SEGGEN_SOURCE = "seggen"
DEGRADE_SOURCE = "degrade"
EXTERNAL_GENERATOR = "external"
EXTERNAL_SEED = -1


@dataclass(frozen=True)
class SampleSpec:
    """One planned QC sample: what to generate (or ingest) and under which id and seed."""
    sample: str
    subject: str
    source: str
    generator: str
    seed: int
    external_file: str | None = None


def make_sample_id(subject: str, source: str, k: int) -> str:
    return f"{subject}__{source}__{k:03d}"


def derive_seed(base_seed: int, sample: str) -> int:
    """Per-sample seed from the base seed and the sample id alone, independent of the plan around it."""
    entropy = [int(base_seed), zlib.crc32(sample.encode("utf-8"))]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


FAMILY_GROUPS = {"classic": CLASSIC_FAMILIES, "boundary": BOUNDARY_FAMILIES, "all": DEGRADATION_FAMILIES}
DEFAULT_FAMILIES = CLASSIC_FAMILIES


def degradation_families(names: Sequence[str] | None = None) -> tuple[str, ...]:
    """Family names, or the groups 'classic' (the paper's kind, whole DSC range; the default), 'boundary' (real
    segmenters' boundary errors, top of the range) and 'all', in the order given, each family once."""
    if names is None:
        return DEFAULT_FAMILIES
    chosen: list[str] = []
    for name in names:
        group = FAMILY_GROUPS.get(name, (name,) if name in DEGRADATION_FAMILIES else None)
        if group is None:
            raise ValueError(f"unknown degradation family {name!r}; valid: {', '.join(FAMILY_GROUPS)}, "
                             f"{', '.join(DEGRADATION_FAMILIES)}")
        chosen += [f for f in group if f not in chosen]
    if not chosen:
        raise ValueError("no degradation family chosen")
    return tuple(chosen)


def plan_samples(subjects: Sequence[str], externals: Sequence[ExternalSource], num_seggen: int,
                 num_degradations: int, base_seed: int, families: Sequence[str] | None = None) -> list[SampleSpec]:
    """Per subject (sorted): one sample per external folder holding it, then `num_seggen` SegGen samples, then
    `num_degradations` degradations cycling through the families (continued across subjects so that every
    family is used equally often overall)."""
    families = degradation_families(families)
    plan = []
    for i, subject in enumerate(sorted(subjects)):
        for source in externals:
            if subject in source.files:
                plan.append(SampleSpec(make_sample_id(subject, source.tag, 0), subject, source.tag,
                                       EXTERNAL_GENERATOR, EXTERNAL_SEED, source.files[subject]))
        for k in range(num_seggen):
            sample = make_sample_id(subject, SEGGEN_SOURCE, k)
            plan.append(SampleSpec(sample, subject, SEGGEN_SOURCE, SEGGEN_SOURCE, derive_seed(base_seed, sample)))
        for k in range(num_degradations):
            sample = make_sample_id(subject, DEGRADE_SOURCE, k)
            family = families[(i * num_degradations + k) % len(families)]
            plan.append(SampleSpec(sample, subject, DEGRADE_SOURCE, family, derive_seed(base_seed, sample)))
    return plan


def subjects_of_part(subjects: Sequence[str], num_parts: int, part_id: int) -> list[str]:
    """Round robin over the sorted subjects, so a subject's samples (and its image copy) stay in one part."""
    return sorted(subjects)[part_id::num_parts]


def spec_of_row(row: dict) -> SampleSpec:
    """The spec of a row of qc_targets.csv (without the external file, which the QC dataset holds as candidate)."""
    return SampleSpec(row["sample"], row["subject"], row["source"], row["generator"], int(row["seed"]))
