"""Sharing the cores: the turn queue's order, re-entrancy, the free-core meter and thread choice."""

from __future__ import annotations

import threading
import time

import pytest
import numpy as np
import torch

from hyperrep.nets.population import evaluate_population
from hyperrep.runtime import cores


def run_in_thread(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def wait_for_waiters(queue: cores.TurnQueue, n: int) -> None:
    deadline = time.monotonic() + 10
    while len(queue._waiting) < n:
        assert time.monotonic() < deadline, "the waiting steps never queued"
        time.sleep(0.01)


def test_turns_go_to_interactive_work_first_then_to_the_earliest_job():
    queue, order, release = cores.TurnQueue(), [], threading.Event()

    def holder():
        with queue.hold((cores.INTERACTIVE, 0.0)):
            release.wait(10)

    def step(name, key):
        def run():
            with queue.hold(key):
                order.append(name)
        return run

    first = run_in_thread(holder)
    while queue._owner is None:
        time.sleep(0.01)
    threads = []
    for name, key in (("background, oldest job", (cores.BACKGROUND, 1.0)), ("interactive, newer job", (cores.INTERACTIVE, 3.0)),
                      ("interactive, older job", (cores.INTERACTIVE, 2.0))):
        threads.append(run_in_thread(step(name, key)))
        wait_for_waiters(queue, len(threads))
    release.set()
    for thread in [first, *threads]:
        thread.join(10)
    assert order == ["interactive, older job", "interactive, newer job", "background, oldest job"]


def test_a_turn_is_reentrant_and_released_on_errors():
    with cores.turn(), cores.turn():  # a step inside a step of the same thread does not wait for itself
        pass
    with pytest.raises(RuntimeError), cores.turn():
        raise RuntimeError("boom")
    done = threading.Event()

    def other_thread():
        with cores.turn():
            done.set()

    run_in_thread(other_thread).join(5)
    assert done.is_set(), "the turn stayed held after an error"


def test_background_jobs_queue_behind_interactive_ones_and_keep_their_start(monkeypatch):
    seen = []
    real_hold = cores._queue.hold

    def spy(key):
        seen.append(key)
        return real_hold(key)

    monkeypatch.setattr(cores._queue, "hold", spy)
    with cores.background():
        with cores.turn():
            pass
        time.sleep(0.01)
        with cores.job(cores.INTERACTIVE), cores.turn():  # a nested job keeps the outer start and priority
            pass
    with cores.turn():
        pass
    assert seen[0][0] == seen[1][0] == cores.BACKGROUND and seen[0][1] == seen[1][1]
    assert seen[2][0] == cores.INTERACTIVE and seen[2][1] > seen[1][1]


def scripted_meter(monkeypatch, readings, cores_count=2) -> cores.FreeCores:
    """A FreeCores fed (wall, machine busy, own CPU) readings in order."""
    feed = iter(readings)
    monkeypatch.setattr(cores, "read_cpu_seconds", lambda: next(feed))
    return cores.FreeCores(cores_count)


def test_free_cores_leave_out_this_process_and_count_other_processes(monkeypatch):
    # window 1: the machine was busy 2.0 CPU-s in 1 s, 1.9 of them ours -> others 0.1 -> 2 threads
    # window 2: busy 2.0, ours 1.0 -> another process holds a core -> 1 thread
    meter = scripted_meter(monkeypatch, [(0.0, 0.0, 0.0), (1.0, 2.0, 1.9), (2.0, 4.0, 2.9), (2.1, 4.1, 3.0), (2.2, 4.2, 3.1)])
    assert meter.threads(2) == 2 and meter.others == pytest.approx(0.1)
    assert meter.threads(2) == 1 and meter.others == pytest.approx(1.0)
    assert meter.threads(2) == 1  # a reading within METER_INTERVAL_S keeps the last window
    assert meter.threads(1) == 1


def test_a_half_busy_core_is_not_counted_as_free(monkeypatch):
    meter = scripted_meter(monkeypatch, [(0.0, 0.0, 0.0), (1.0, 0.6, 0.0)])
    assert meter.threads(2) == 1  # 1.4 cores free: a second thread would share a core that is 60 % busy


def test_without_proc_stat_all_cores_count_as_free(monkeypatch):
    meter = scripted_meter(monkeypatch, [None, None])
    assert meter.threads(4) == 2


def test_turns_set_the_free_cores_worth_of_threads_when_shared(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setattr(cores, "_meter", None)
    with cores.turn():
        assert torch.get_num_threads() == before  # not shared: threads are left alone
    monkeypatch.setattr(cores, "_meter", scripted_meter(monkeypatch, [(0.0, 0.0, 0.0), (1.0, 1.0, 0.0)], cores_count=3))
    monkeypatch.setattr(cores, "_max_threads", 3)
    try:
        with cores.turn():
            assert torch.get_num_threads() == 2  # 3 cores, one busy with another process
    finally:
        torch.set_num_threads(before)


def test_concurrent_evaluations_take_turns_and_give_the_same_numbers(tiny_zoo):
    weights, _ = tiny_zoo.samples(split="train")
    from hyperrep.images.datasets import load_split

    data = load_split("test").subset(torch.arange(600))
    alone = evaluate_population(tiny_zoo.architecture, tiny_zoo.activation, weights, data)
    results = [None] * 3

    def evaluate(i):
        results[i] = evaluate_population(tiny_zoo.architecture, tiny_zoo.activation, weights, data)

    threads = [run_in_thread(lambda i=i: evaluate(i)) for i in range(3)]
    for thread in threads:
        thread.join(60)
    for result in results:
        np.testing.assert_array_equal(result.accuracy, alone.accuracy)
        np.testing.assert_allclose(result.loss, alone.loss, rtol=1e-6)
