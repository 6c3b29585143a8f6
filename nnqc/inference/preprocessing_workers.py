"""Cases preprocessed ahead in worker processes while the network runs on the previous ones.

A failing case comes back as a value (its CaseError, or an UnexpectedCaseError with the traceback) so that it
crosses the process boundary intact and names the case and its file. Only a few cases are kept ahead, not the
whole folder in memory.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import torch

from nnqc.inference.case_failures import CaseError, unexpected
from nnqc.inference.cases import CaseFiles
from nnqc.metrics.regions import get_regions
from nnqc.preprocessing.plans_manager import nnQCPlansManager

_WORKER_PREDICTOR = None


def _init_preprocessing_worker(predictor_class: type, plans: dict, configuration_name: str,
                               dataset_json: dict) -> None:
    """A preprocessing-only predictor per worker process (no network)."""
    global _WORKER_PREDICTOR
    predictor = predictor_class(torch.device("cpu"), allow_tqdm=False)
    predictor.plans_manager = nnQCPlansManager(plans)
    predictor.configuration_name = configuration_name
    predictor.configuration_manager = predictor.plans_manager.get_configuration(configuration_name)
    predictor.dataset_json = dataset_json
    predictor.region_names, predictor.regions = get_regions(dataset_json)
    _WORKER_PREDICTOR = predictor


def preprocess_or_error(predictor, case: CaseFiles):
    """The preprocessed case, or its failure as a value naming the case and its file (so that it crosses process
    boundaries intact): a CaseError for a named input problem, an UnexpectedCaseError with its traceback else."""
    try:
        return predictor.preprocess_files(case)
    except CaseError as e:
        return e
    except Exception as e:
        return unexpected(e, f"{case.case} ({case.segmentation}): preprocessing failed")


def _preprocess_in_worker(case: CaseFiles):
    return preprocess_or_error(_WORKER_PREDICTOR, case)


class CasePreprocessing:
    """The cases of `todo`, asked for in order, preprocessed by `predictor.preprocess_files`: in this process, or
    with num_processes > 0 in spawned worker processes that keep num_processes + 1 cases ahead. When a worker dies
    (often: out of memory), the remaining cases are preprocessed in this process."""

    def __init__(self, predictor, todo: list[CaseFiles], num_processes: int):
        self.predictor, self.todo = predictor, todo
        self.pool: ProcessPoolExecutor | None = None
        self.ahead = num_processes + 1
        if num_processes > 0:
            self.pool = ProcessPoolExecutor(
                num_processes, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_preprocessing_worker,
                initargs=(type(predictor), predictor.plans_manager.plans, predictor.configuration_name,
                          predictor.dataset_json))
            self.pending = deque(self.pool.submit(_preprocess_in_worker, c) for c in todo[:self.ahead])
        self.in_workers = self.pool is not None

    def __enter__(self) -> CasePreprocessing:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)

    def prepared(self, i: int):
        """Case i of `todo` as (data, candidate, properties), or its failure as a value (see preprocess_or_error)."""
        case = self.todo[i]
        if not self.in_workers:
            return preprocess_or_error(self.predictor, case)
        future = self.pending.popleft()
        if i + self.ahead < len(self.todo):
            self.pending.append(self.pool.submit(_preprocess_in_worker, self.todo[i + self.ahead]))
        try:
            return future.result()
        except BrokenProcessPool:
            print("WARNING: a preprocessing worker process died (out of memory?); preprocessing "
                  "the remaining cases in this process")
            self.in_workers = False
            return preprocess_or_error(self.predictor, case)
