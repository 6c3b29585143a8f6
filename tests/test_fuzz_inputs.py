"""Fuzzing the input checks of nnQC_predict and nnQC_convert (generators and oracle: benchmarks/fuzz_inputs.py).

Mutated NIfTI and NRRD cases (headers, bodies, voxel values, shapes, grids) go through nnQCPredictor.preprocess_files
with the tiny trained model of the shared pipeline, and through nnQC_convert's subject checks; each must be refused
with CaseError / ConversionError naming the case or file, or accepted and valid by an independent re-read. Any
other exception, or an invalid input accepted, fails. A bounded, derandomized run (the same examples every time);
benchmarks/benchmark_fuzz_inputs.py runs thousands. The regression cases below are the crashes and silent
acceptances the fuzzing found, each pinned to the reason it must now be refused with.
"""
import os
import sys
from collections import Counter

import pytest
from conftest import QC_ID, TRAINER
from hypothesis import HealthCheck, given, settings

from nnqc.metrics.regions import allowed_labels
from nnqc.run.predict import model_folder

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import fuzz_inputs as fuzz  # noqa: E402  (shared with the benchmark, which lives outside the package)

NUM_CASE_EXAMPLES = 200
NUM_LAYOUT_EXAMPLES = 200
FUZZ_SETTINGS = settings(deadline=None, derandomize=True, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def model(trained_pipeline):
    """The shared pipeline's trained model (fold 0), its channel count and labels; loaded once (nnU-Net's folder
    variables point at the pipeline while it loads)."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in trained_pipeline.env().items():
            patch.setenv(key, value)
        predictor = fuzz.preprocessing_predictor(model_folder(QC_ID, TRAINER, "nnQCPlans", "3d_fullres"))
    return predictor, len(predictor.dataset_json["channel_names"]), tuple(allowed_labels(predictor.dataset_json))


def _judge(outcomes, example) -> None:
    wrong = [o for o in outcomes if o.outcome not in ("accepted", "refused")]
    assert not wrong, f"{example.describe()}:\n" + "\n".join(f"{o.check}: {o.outcome}: {o.message}" for o in wrong)


@pytest.mark.parametrize("file_format", fuzz.FORMATS)
def test_the_valid_case_is_accepted_by_both_checks(model, tmp_path, file_format):
    predictor, num_channels, labels = model
    example = fuzz.Example(file_format, ())
    with fuzz.quiet_readers():
        outcomes = fuzz.run_example(example, str(tmp_path / "case"), predictor, num_channels, labels)
    assert [(o.check, o.outcome) for o in outcomes] == [("predict", "accepted"), ("convert", "accepted")], outcomes


def _m(stage, kind, target, *params, channel=0):
    return fuzz.Mutation(stage, kind, target, channel, params)


# (format, mutations, words of predict's refusal, words of convert's refusal); None: that check accepts
REGRESSIONS = {
    # convert read only the header of NRRD images: NaN, cut or unreadable bodies were accepted
    "NaN in an NRRD image": (".nrrd", [_m("array", "nan", "image", 0.3, channel=1)], "NaN", "NaN"),
    "truncated NRRD image": (".nrrd", [_m("body", "truncate", "image", "payload", 0.5, channel=2)],
                             "cannot be read whole", "cannot be read whole"),
    "NRRD byte skip past the end": (".nrrd (raw)", [_m("nrrd", "set", "image", "byte skip", "100000")],
                                    "cannot be read whole", "cannot be read whole"),
    # predict: int(NaN) / int(inf) in the training-range statistics, before the label check
    "NaN in an NRRD segmentation": (".nrrd", [_m("array", "nan", "segmentation", 0.5)], "NaN", "NaN"),
    "Inf in an NRRD segmentation": (".nrrd (raw)", [_m("array", "posinf", "segmentation", 0.5)], "NaN", "NaN"),
    # predict: nnU-Net's reader only warns when channels have other origins or directions
    "a channel with another origin": (".nii.gz", [_m("array", "origin", "image", 0, 5.0, channel=3)],
                                      "does not share the grid", "origin"),
    "a channel with another direction": (".nii", [_m("array", "flip", "image", 2, channel=2)],
                                         "does not share the grid", "direction"),
    # both: nibabel read voxels from byte 0, ITK from byte 348; the NaN check looked at the wrong bytes
    "vox_offset 0": (".nii.gz", [_m("nifti", "vox_offset", "image", 0.0)], "vox_offset", "vox_offset"),
    # convert: scaled int16 overflows to inf in ITK's float32, and integer files were not checked
    "scl_slope overflowing float32": (".nii.gz", [_m("array", "dtype", "image", "int16"),
                                                  _m("nifti", "scl_slope", "image", 1e38)],
                                      "NaN or infinite", "NaN or infinite voxel(s) after its scaling"),
    # both: ITK's header reader gave spacing -0.5, its image reader 0.5 with a flipped axis
    "negative pixdim": (".nii", [_m("nifti", "pixdim", "every file", 3, -0.5)], "spacing", "spacing"),
    # both: a zero-length axis in the header; ITK read one slice of what follows
    "an axis of length 0": (".nii.gz", [_m("nifti", "dim", "every file", 3, 3, 0)], "axis of length 0",
                            "axis of length 0"),
    # both: a sheared NRRD grid was accepted as if it were orthogonal
    "sheared NRRD grid": (".nrrd", [_m("nrrd", "set", "every file", "space directions",
                                       "(1,0.5,0) (0,0.9,0) (0,0,1.3)")], "not orthonormal", "not orthonormal"),
    # both: SimpleITK's NRRD reader (teem) overran a 1 kB buffer: the process died (segmentation fault)
    "NRRD header line over 1 kB": (".nrrd (raw)", [_m("nrrd", "set long", "segmentation", "kinds", 3000)],
                                   "would crash", "would crash"),
    "ASCII NRRD word over 1 kB": (".nrrd", [_m("nrrd", "ascii body", "every file", 1100, 0.5)], "would crash",
                                  "would crash"),
    "ASCII NRRD, numbers only": (".nrrd", [_m("nrrd", "ascii body", "every file", 0, 0.0)], None, None),
    # predict: resampled to no voxel (ValueError deep in nnU-Net) or to terabytes (MemoryError)
    "spacing resampled to no voxel": (".nii.gz", [_m("array", "spacing", "every file", 0, 1e-3)],
                                      "no voxel is left", None),
    "spacing resampled to terabytes": (".nii", [_m("nifti", "pixdim", "every file", 2, 1e9)], "more than", None),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_found_crashes_are_refused_by_name(model, tmp_path, name):
    predictor, num_channels, labels = model
    file_format, mutations, predict_words, convert_words = REGRESSIONS[name]
    example = fuzz.Example(file_format, tuple(mutations))
    with fuzz.quiet_readers():
        outcomes = fuzz.run_example(example, str(tmp_path / "case"), predictor, num_channels, labels)
    _judge(outcomes, example)
    for outcome, words in zip(outcomes, (predict_words, convert_words)):
        if words is None:
            assert outcome.outcome == "accepted", outcome
        else:
            assert outcome.outcome == "refused" and words in outcome.message, outcome


def test_fuzzed_cases_are_assessed_or_refused_by_name(model, tmp_path):
    predictor, num_channels, labels = model
    counts = Counter()

    @settings(FUZZ_SETTINGS, max_examples=NUM_CASE_EXAMPLES)
    @given(fuzz.examples(num_channels))
    def one(example):
        outcomes = fuzz.run_example(example, str(tmp_path / "case"), predictor, num_channels, labels)
        counts.update((o.check, o.outcome) for o in outcomes)
        _judge(outcomes, example)

    with fuzz.quiet_readers():
        one()
    # the examples reach both sides of both checks (a check refusing everything would pass the oracle)
    for check in ("predict", "convert"):
        assert counts[(check, "accepted")] >= 10 and counts[(check, "refused")] >= 10, counts


def test_fuzzed_folder_layouts_are_accepted_or_refused_by_name(tmp_path):
    counts = Counter()

    @settings(FUZZ_SETTINGS, max_examples=NUM_LAYOUT_EXAMPLES)
    @given(fuzz.layouts(4))
    def one(layout):
        outcome = fuzz.run_layout(layout, str(tmp_path / "layout"), 4)
        counts[outcome.outcome] += 1
        assert outcome.outcome in ("accepted", "refused"), f"{layout}: {outcome.outcome}: {outcome.message}"

    one()
    assert counts["accepted"] >= 10 and counts["refused"] >= 10, counts
