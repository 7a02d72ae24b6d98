"""Sharing the CPU cores: one process-wide queue for compute steps, threads from the free cores.

Several Streamlit sessions in one server, and other processes on the machine, used to run their
evaluations at the same time with a full set of torch threads each, and on 2 cores the threads
stalled each other. Here, heavy work is cut into short steps (an image chunk of an evaluation,
one model's novelty matching), and each step waits for
the process's one *turn*. Waiting steps are served by (priority, start of their job): sessions
take turns at full speed, a job that started first finishes first, and background work (the
app's comparisons) yields to interactive work. When `share_cores()` was called (the app does),
each turn also gives torch as many threads as the cores that other processes leave free, measured
from /proc/stat over the last half second (docs/benchmarks.md, "App latency").
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

INTERACTIVE = 0  # a user waits for this result (evaluations, by default)
BACKGROUND = 1  # work that follows a shown result (the app's comparisons)
METER_INTERVAL_S = 0.5  # how often the free cores are measured again (at most)
FREE_MARGIN = 0.25  # a core counts as free when others leave at least 75 % of it (a thread sharing a busy core stalls the others)

_priority: contextvars.ContextVar[int] = contextvars.ContextVar("hyperrep_priority", default=INTERACTIVE)
_job_start: contextvars.ContextVar[float | None] = contextvars.ContextVar("hyperrep_job_start", default=None)


class TurnQueue:
    """A re-entrant lock whose waiters are served in order of a sort key (smallest first)."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._waiting: list[tuple] = []
        self._tickets = itertools.count()
        self._owner: int | None = None
        self._depth = 0

    @contextmanager
    def hold(self, key: tuple) -> Iterator[None]:
        me = threading.get_ident()
        with self._condition:
            if self._owner == me:
                self._depth += 1
            else:
                entry = (*key, next(self._tickets))
                heapq.heappush(self._waiting, entry)
                while self._owner is not None or self._waiting[0] != entry:
                    self._condition.wait()
                heapq.heappop(self._waiting)
                self._owner, self._depth = me, 1
        try:
            yield
        finally:
            with self._condition:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._condition.notify_all()


def read_cpu_seconds() -> tuple[float, float, float] | None:
    """(wall clock, busy CPU-seconds of the whole machine, CPU-seconds of this process); None
    where /proc/stat is unavailable (not Linux)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest time is inside user
    return time.monotonic(), busy, time.process_time()


def usable_cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass
class FreeCores:
    """How many cores other processes leave free, from the busy time of the machine minus this
    process's own CPU time since the previous reading (at most every METER_INTERVAL_S)."""

    cores: int
    last: tuple[float, float, float] | None = None
    others: float = 0.0  # cores busy with other processes in the last measured window

    def __post_init__(self) -> None:
        self.last = read_cpu_seconds()

    def free(self) -> float:
        now = read_cpu_seconds()
        if now is None or self.last is None:
            return float(self.cores)
        wall = now[0] - self.last[0]
        if wall >= METER_INTERVAL_S:
            machine, own = now[1] - self.last[1], now[2] - self.last[2]
            self.others = max(0.0, (machine - own) / wall)
            self.last = now
        return max(0.0, self.cores - self.others)

    def threads(self, maximum: int) -> int:
        """Torch threads for the next step: the free cores (rounded down past FREE_MARGIN), 1..maximum."""
        return max(1, min(maximum, int(self.free() + FREE_MARGIN)))


_queue = TurnQueue()
_meter: FreeCores | None = None
_max_threads = 0
_meter_lock = threading.Lock()


def share_cores(max_threads: int | None = None) -> None:
    """Give every later turn in this process the free cores' worth of torch threads (at most
    `max_threads`, default all usable cores). A server with concurrent users calls this once."""
    global _meter, _max_threads
    with _meter_lock:
        _max_threads = max(1, max_threads or usable_cores())
        _meter = FreeCores(usable_cores())


def adaptive_threads() -> int | None:
    """The thread count the next turn would use, or None when threads are not adapted."""
    with _meter_lock:
        return None if _meter is None else _meter.threads(_max_threads)


@contextmanager
def job(priority: int | None = None) -> Iterator[None]:
    """A unit of work whose turns queue by the time the job started (outermost job wins), at
    `priority` (default: the surrounding one)."""
    outer_start = _job_start.get()
    tokens = [_job_start.set(time.monotonic())] if outer_start is None else []
    if priority is not None:
        tokens.append(_priority.set(max(priority, _priority.get())))
    try:
        yield
    finally:
        for token in reversed(tokens):
            token.var.reset(token)


@contextmanager
def background() -> Iterator[None]:
    """Work that follows a shown result: its turns wait while interactive work is queued."""
    with job(BACKGROUND):
        yield


@contextmanager
def turn() -> Iterator[None]:
    """Hold the process's compute turn for one short step (re-entrant). With `share_cores()`,
    the step runs with the free cores' worth of torch threads in this thread."""
    start = _job_start.get()
    with _queue.hold((_priority.get(), time.monotonic() if start is None else start)):
        threads = adaptive_threads()
        if threads is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)  # per calling thread for OpenMP; each session runs in its own
        yield
