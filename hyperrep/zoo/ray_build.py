"""Build a zoo on a Ray cluster: each chunk of models is one Ray task running the stacked trainer.

The driver (the process that calls `build_zoo_on_ray`) plans the build exactly as a local build
does (hyperrep.zoo.build: same chunks, same resume check), loads the training data once and puts
it in Ray's object store, submits every unfinished chunk as a task, and writes each model of a
finished chunk atomically to `OUT/partial/` as the chunk's result arrives. So `OUT` only has to
be on the driver's disk, and the workers need hyperrep installed but neither the data nor `OUT`.
Ray retries a chunk whose worker process or node dies (`max_retries`); a killed driver is
resumed by running the same build again, which skips every model already on disk. The chunks
report their epochs to a small actor that the driver polls, so the progress bar moves between
finished chunks as in a local build.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from hyperrep.zoo.build import (
    BuildConfig,
    BuildData,
    BuildProgress,
    TrainedModel,
    finish_build,
    load_build_data,
    start_build,
    train_chunk,
    write_models,
)
from hyperrep.zoo.format import Zoo

DEFAULT_MAX_RETRIES = 3  # times Ray reruns a chunk whose worker or node died
EVENT_POLL_S = 1.0  # how often the driver collects the chunks' epoch reports for the progress bar


class RayNotInstalled(ModuleNotFoundError):
    """`--ray` was asked for but the optional dependency is missing."""


def import_ray():
    """The `ray` module, imported only here and only when a build asks for it: it is an optional
    dependency (about 240 MB installed) that a local build, the app and most users never need."""
    try:
        import ray
    except ImportError as err:
        raise RayNotInstalled(
            'building on Ray needs the optional dependency ray: pip install "hyperrep[ray]" '
            f"(or pip install ray) in this environment and on every node of the cluster ({err})"
        ) from err
    return ray


def _train_chunk_task(
    config: BuildConfig, data: BuildData, index: int, seeds: list[int], threads: int, events,
) -> list[TrainedModel]:
    """One Ray task: train a chunk on the node's GPU when Ray assigned one, else on `threads` CPU
    threads; after each epoch it tells the driver's event list (fire and forget)."""
    import ray  # inside a Ray worker, ray is installed by definition

    torch.set_num_threads(threads)
    if ray.get_gpu_ids() and torch.cuda.is_available():
        data = data.to("cuda")
    return train_chunk(config, data, seeds, progress=lambda epoch, epochs: events.put.remote((index, epoch, epochs)))


class _Events:
    """A Ray actor on the driver's node that collects the chunks' (chunk, epoch, epochs) reports."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, int]] = []

    def put(self, event: tuple[int, int, int]) -> None:
        self.events.append(event)

    def take(self) -> list[tuple[int, int, int]]:
        events, self.events = self.events, []
        return events


def _event_sink(ray):
    """The `_Events` actor, pinned to the driver's node so that losing a worker node keeps it."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    sink = ray.remote(_Events).options(num_cpus=0, scheduling_strategy=here).remote()
    ray.get(sink.take.remote())  # started before the chunks, so their first reports reach it in time
    return sink


def _report_epochs(ray, events, tracker: BuildProgress):
    """Pass the chunks' epoch reports to the progress; the sink, or None once it is lost with its node
    (the build goes on, its bar then moving by finished models only)."""
    if events is None:
        return None
    try:
        reports = ray.get(events.take.remote())
    except ray.exceptions.RayActorError:
        return None
    for report in reports:
        tracker.epoch(*report)
    return events


def build_zoo_on_ray(
    config: BuildConfig,
    out: Path | str,
    *,
    address: str | None = None,
    data_dir: Path | str | None = None,
    cpus_per_chunk: int = 1,
    gpus_per_chunk: float | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    progress: Callable[[float, int], None] | None = None,
) -> Zoo:
    """Train (or resume) the zoo of `config` with one Ray task per chunk; assemble it in `out`.

    `address` is a running cluster's address (`ray start --head` prints it; None: Ray's default,
    i.e. RAY_ADDRESS, a cluster started on this machine, or a new local one). If this process is
    already connected to Ray, that connection is used. `gpus_per_chunk` defaults to 1 when the
    cluster has GPUs, else 0."""
    ray = import_ray()
    plan = start_build(config, out)
    tracker = BuildProgress(plan, progress)
    if plan.todo:
        connected_here = not ray.is_initialized()
        if connected_here:
            ray.init(address=address, logging_level=logging.WARNING)
        try:
            _run_chunks(ray, config, data_dir, plan, tracker, cpus_per_chunk, gpus_per_chunk, max_retries)
        finally:
            if connected_here:
                ray.shutdown()
    return finish_build(config, plan, data_dir)


def _run_chunks(ray, config, data_dir, plan, tracker: BuildProgress, cpus: int, gpus: float | None, max_retries: int) -> None:
    """Submit every unfinished chunk, write each chunk's models as it finishes, cancel the rest on any error."""
    if gpus is None:
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(_train_chunk_task).options(num_cpus=cpus, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False)
    data, events = ray.put(load_build_data(config, data_dir)), _event_sink(ray)
    pending = {task.remote(config, data, i, chunk, cpus, events): i for i, chunk in enumerate(plan.todo)}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=EVENT_POLL_S)
            events = _report_epochs(ray, events, tracker)
            for ref in ready:
                i = pending.pop(ref)
                models = ray.get(ref)  # a chunk that failed past its retries raises here
                tracker.chunk_done(i)
                write_models(plan.partial, models, tracker.model_written)
    finally:
        for ref in pending:  # an interrupted driver leaves no work running for nothing
            ray.cancel(ref, force=True)
        if events is not None:
            ray.kill(events)
