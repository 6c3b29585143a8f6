"""nnqc.process_pool: every result comes back, a task's error is raised, a dead worker is an error, not a hang.

Each test runs under a time limit (tests/conftest.py): a hang fails it instead of stopping the suite.
"""
import os
import signal

import pytest
from conftest import run_with_time_limit

from nnqc.process_pool import WorkerDiedError, map_unordered

# the pool's tests take seconds (spawning workers); minutes mean a hang
POOL_TIME_LIMIT_S = 120

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


@pytest.mark.time_limit(POOL_TIME_LIMIT_S)
@pytest.mark.parametrize("num_processes", [1, 2])
def test_all_results_with_the_initializer_applied(num_processes):
    results = list(map_unordered(_add_offset, range(7), num_processes, _set_offset, (100,), chunksize=2))
    assert sorted(r for r, _ in results) == list(range(100, 107))
    pids = {pid for _, pid in results}
    assert (pids == {os.getpid()}) == (num_processes == 1)


@pytest.mark.time_limit(POOL_TIME_LIMIT_S)
def test_a_task_error_is_raised_in_the_caller():
    with pytest.raises(ValueError, match="task 3 failed"):
        list(map_unordered(_fail_on_three, range(5), 2))


@pytest.mark.time_limit(POOL_TIME_LIMIT_S)
def test_a_dead_worker_is_an_error_not_a_hang():
    with pytest.raises(WorkerDiedError, match="died"):
        list(map_unordered(_die_on_two, range(4), 2))


class _Item:
    """What the time limit reads of a test item."""
    nodeid = "tests/test_x.py::test_hangs"

    def get_closest_marker(self, name):
        return pytest.mark.time_limit(0.5).mark if name == "time_limit" else None


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="no SIGALRM: the time limit is not enforced here")
def test_the_time_limit_fails_a_test_that_hangs():
    handler = signal.getsignal(signal.SIGALRM)  # this test's own limit
    limit = run_with_time_limit(_Item(), "call")
    next(limit)
    with pytest.raises(pytest.fail.Exception, match=r"test_hangs: call still running after 0.5 s"):
        signal.pause()  # waits for a signal that only the limit sends
    with pytest.raises(StopIteration):
        limit.send(None)
    # the limit around this test is back in place, still armed
    assert signal.getsignal(signal.SIGALRM) is handler and signal.getitimer(signal.ITIMER_REAL)[0] > 0
