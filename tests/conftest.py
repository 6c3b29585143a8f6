"""A tiny trained nnQC pipeline shared by the training, prediction and evaluation tests, and time limits.

Built once per test run in a temporary folder (shared by pytest-xdist's workers): phantom source dataset ->
nnQC_convert -> plan and preprocess -> two folds of nnQCTrainer_2epochs on CPU.

Every test's setup and call run under a time limit (DEFAULT_TIME_LIMIT_S, or @pytest.mark.time_limit(seconds)
for tests of code that must not hang), so that a hang fails the test that hangs instead of stopping the suite.
"""
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from helpers import use_nnunet_folders
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

SOURCE_ID, QC_ID = 700, 701
TRAINER = "nnQCTrainer_2epochs"
# far above any test's time on 2 shared cores (the slowest setup, the trained pipeline, takes about 2 minutes):
# a limit for hangs, not a timing assertion
DEFAULT_TIME_LIMIT_S = 1200


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "time_limit(seconds): fail the test when its setup or call runs longer "
                                       f"(default {DEFAULT_TIME_LIMIT_S} s)")


# The files that take longest (seconds on 2 cores, from --durations), longest first. They are collected first and
# run_tests.sh keeps that order (--no-loadscope-reorder; pytest-xdist would otherwise start the files with the most
# tests first), so that its two workers start them early and finish together instead of one worker starting a long
# file last. Within a file the order stays as written.
LONGEST_FILES = ("test_make_candidates.py", "test_model_sharing.py", "test_bf16.py", "test_convert.py",
                 "test_plan_and_preprocess.py", "test_predict_calibration.py", "test_fuzz_inputs.py", "test_predict.py",
                 "test_training_ddp.py", "test_install.py", "test_training.py", "test_test_time_mirroring.py",
                 "test_region_quality.py", "test_time_budget.py", "test_model_safety.py", "test_evaluate.py",
                 "test_process_pool.py")


def pytest_collection_modifyitems(session, config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FILES)))  # stable: the rest keep their order


def _time_limit(item) -> float:
    marker = item.get_closest_marker("time_limit")
    return float(marker.args[0]) if marker is not None else DEFAULT_TIME_LIMIT_S


def run_with_time_limit(item, phase: str):
    """Fail the phase from a SIGALRM handler when it outlives the limit; blocking waits (locks, pipes, process
    joins) are interrupted by the signal. Where SIGALRM does not exist (Windows), nothing is limited."""
    if not hasattr(signal, "setitimer"):
        yield
        return
    seconds = _time_limit(item)

    def expire(signum, frame):
        pytest.fail(f"{item.nodeid}: {phase} still running after {seconds:g} s (a hang?)", pytrace=True)

    previous = signal.signal(signal.SIGALRM, expire)
    start = time.monotonic()
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # a limit around this one (nested use) keeps running
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    yield from run_with_time_limit(item, "setup")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield from run_with_time_limit(item, "call")


class SmallSampleFingerprintExtractor(DatasetFingerprintExtractor):
    """nnU-Net samples 1e8 foreground intensities per dataset, i.e. millions per subject of a tiny dataset;
    a few thousand keep tests fast and change nothing that planning uses."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.num_foreground_voxels_for_intensitystats = 30000


@dataclass
class TrainedPipeline:
    raw: str
    preprocessed: str
    results: str
    source_folder: str
    qc_dataset: str

    def env(self) -> dict:
        return {"nnUNet_raw": self.raw, "nnUNet_preprocessed": self.preprocessed, "nnUNet_results": self.results}


def build_pipeline(base: Path) -> TrainedPipeline:
    from dataset_conversion.phantoms import write_phantom_dataset
    from nnqc.experiment_planning.plan_and_preprocess import plan_and_preprocess
    from nnqc.qc_data.conversion import convert_dataset
    from nnqc.run.train import run_training

    pipeline = TrainedPipeline(str(base / "raw"), str(base / "preprocessed"), str(base / "results"), "", "")
    with pytest.MonkeyPatch.context() as environment:
        use_nnunet_folders(environment, **pipeline.env())
        environment.setenv("nnUNet_n_proc_DA", "0")
        pipeline.source_folder = write_phantom_dataset(SOURCE_ID, "Phantom", 8, "brats", shape=(40, 48, 40), seed=3,
                                                       num_test=3)
        pipeline.qc_dataset = convert_dataset(SOURCE_ID, QC_ID, num_seggen=2, num_degradations=6,
                                              verbose=False).folder
        plan_and_preprocess([QC_ID], num_processes=1, fingerprint_extractor_class=SmallSampleFingerprintExtractor)
        torch.manual_seed(0)
        np.random.seed(0)
        for fold in (0, 1):
            run_training(QC_ID, "3d_fullres", fold, TRAINER, device=torch.device("cpu"))
    return pipeline


@pytest.fixture(scope="session")
def trained_pipeline(tmp_path_factory) -> TrainedPipeline:
    """Built once per run: under pytest-xdist the first worker that needs it builds it in the run's shared
    temporary folder while the others wait on a lock, then all read the same folders (tests copy what they
    change)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return build_pipeline(tmp_path_factory.mktemp("nnqc_pipeline"))
    shared = tmp_path_factory.getbasetemp().parent / "nnqc_pipeline"  # this run's folder, common to its workers
    record = shared / "pipeline.json"
    with FileLock(str(shared) + ".lock"):
        if not record.is_file():
            shared.mkdir()
            try:
                record.write_text(json.dumps(asdict(build_pipeline(shared))))
            except BaseException as e:  # the workers waiting for it fail with the reason, not on a half-built folder
                record.write_text(json.dumps({"failed": f"{type(e).__name__}: {e}"}))
                raise
    built = json.loads(record.read_text())
    if "failed" in built:
        pytest.fail(f"building the trained pipeline failed in another worker: {built['failed']}")
    return TrainedPipeline(**built)


@pytest.fixture
def pipeline_env(trained_pipeline, monkeypatch) -> TrainedPipeline:
    """The trained pipeline with nnU-Net's folder variables pointing at it for one test."""
    use_nnunet_folders(monkeypatch, **trained_pipeline.env())
    return trained_pipeline
