"""Running one function over many tasks in worker processes, without hanging when a worker dies.

multiprocessing.Pool replaces a worker that dies (killed for memory, a crash in C code) but loses its task, so
waiting on the results would never end. Here the original workers are watched while results are awaited and a
dead one is an error. Workers are spawned (nnU-Net's convention: no fork of a process holding threads).
"""
from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

_POLL_S = 0.05


class WorkerDiedError(RuntimeError):
    """A worker process ended while tasks were still running."""


def _run_chunk(function: Callable[[Any], Any], chunk: Sequence) -> list:
    return [function(task) for task in chunk]


def map_unordered(function: Callable[[Any], Any], tasks: Iterable, num_processes: int,
                  initializer: Callable[..., None] | None = None, initargs: tuple = (),
                  chunksize: int = 1) -> Iterator:
    """function(task) for every task, chunk by chunk in order of completion (in task order within a chunk).

    With num_processes <= 1 or a single task everything runs in this process (after calling the initializer
    here). Consecutive tasks of a chunk go to one worker, so per-worker caches keep working. An exception of a
    task is raised here, the pool is then terminated.
    """
    tasks = list(tasks)
    if num_processes <= 1 or len(tasks) <= 1:
        if initializer is not None:
            initializer(*initargs)
        for task in tasks:
            yield function(task)
        return
    chunksize = max(1, int(chunksize))
    chunks = [tasks[i:i + chunksize] for i in range(0, len(tasks), chunksize)]
    context = multiprocessing.get_context("spawn")
    with context.Pool(min(num_processes, len(chunks)), initializer=initializer, initargs=initargs) as pool:
        workers = list(pool._pool)
        pending = [pool.apply_async(_run_chunk, (function, chunk)) for chunk in chunks]
        while pending:
            still = []
            for result in pending:
                if result.ready():
                    yield from result.get()
                else:
                    still.append(result)
            if len(still) == len(pending):
                if not all(w.is_alive() for w in workers):
                    raise WorkerDiedError("A worker process died (often: out of memory). Try fewer processes "
                                          "(-np).")
                time.sleep(_POLL_S)
            pending = still
