"""nnqc.process_pool: every result comes back, a task's error is raised, a dead worker is an error, not a hang."""
import os

import pytest

from nnqc.process_pool import WorkerDiedError, map_unordered

_offset = 0


def _set_offset(value: int) -> None:
    global _offset
    _offset = value


def _add_offset(x: int) -> tuple[int, int]:
    return x + _offset, os.getpid()


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"task {x} failed")
    return x


def _die_on_two(x: int) -> int:
    if x == 2:
        os._exit(1)  # as a worker killed for memory
    return x


@pytest.mark.parametrize("num_processes", [1, 2])
def test_all_results_with_the_initializer_applied(num_processes):
    results = list(map_unordered(_add_offset, range(7), num_processes, _set_offset, (100,), chunksize=2))
    assert sorted(r for r, _ in results) == list(range(100, 107))
    pids = {pid for _, pid in results}
    assert (pids == {os.getpid()}) == (num_processes == 1)


def test_a_task_error_is_raised_in_the_caller():
    with pytest.raises(ValueError, match="task 3 failed"):
        list(map_unordered(_fail_on_three, range(5), 2))


def test_a_dead_worker_is_an_error_not_a_hang():
    with pytest.raises(WorkerDiedError, match="died"):
        list(map_unordered(_die_on_two, range(4), 2))
