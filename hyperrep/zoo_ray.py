"""Build a zoo on a Ray cluster: each chunk of models is one Ray task running the stacked trainer.

The driver (the process that calls `build_zoo_on_ray`) plans the build exactly as a local build
does (hyperrep.zoo_build: same chunks, same resume check), loads the training data once and puts
it in Ray's object store, submits every unfinished chunk as a task, and writes each model of a
finished chunk atomically to `OUT/partial/` as the chunk's result arrives. So `OUT` only has to
be on the driver's disk, and the workers need hyperrep installed but neither the data nor `OUT`.
Ray retries a chunk whose worker process or node dies (`max_retries`); a killed driver is
resumed by running the same build again, which skips every model already on disk.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import torch

from hyperrep.zoo import Zoo
from hyperrep.zoo_build import (
    BuildConfig, BuildData, BuildProgress, TrainedModel, finish_build, load_build_data, start_build, train_chunk,
    write_models,
)

DEFAULT_MAX_RETRIES = 3  # times Ray reruns a chunk whose worker or node died


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


def _train_chunk_task(config: BuildConfig, data: BuildData, seeds: list[int], threads: int) -> list[TrainedModel]:
    """One Ray task: train a chunk on the node's GPU when Ray assigned one, else on `threads` CPU threads."""
    import ray  # inside a Ray worker, ray is installed by definition

    torch.set_num_threads(threads)
    if ray.get_gpu_ids() and torch.cuda.is_available():
        data = data.to("cuda")
    return train_chunk(config, data, seeds)


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
            gpus = gpus_per_chunk if gpus_per_chunk is not None else (1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0)
            task = ray.remote(_train_chunk_task).options(
                num_cpus=cpus_per_chunk, num_gpus=gpus, max_retries=max_retries, retry_exceptions=False,
            )
            data = ray.put(load_build_data(config, data_dir))
            pending = {task.remote(config, data, chunk, cpus_per_chunk): i for i, chunk in enumerate(plan.todo)}
            try:
                while pending:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    i = pending.pop(ready[0])
                    models = ray.get(ready[0])  # a chunk that failed past its retries raises here
                    tracker.chunk_done(i)
                    write_models(plan.partial, models, tracker.model_written)
            finally:
                for ref in pending:  # an interrupted driver leaves no work running for nothing
                    ray.cancel(ref, force=True)
        finally:
            if connected_here:
                ray.shutdown()
    return finish_build(config, plan, data_dir)
