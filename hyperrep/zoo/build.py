"""Train a zoo of CNNs that differ by seed (and optionally learning rate and initialisation).

The seed sets each model's data order and, in a seed zoo (the public zoos' design), its initial
state. With `init_families = K` the models instead share K initial states: measured in
docs/benchmarks.md, held-out models of a seed zoo cannot be rebuilt from the others (their
weights are mostly their own random init), while models that share a start can.

The models train in chunks of `chunk_models` (fixed blocks of consecutive seeds) with the stacked
population trainer: a chunk's models take every optimisation step together, each with its own
start, data order and learning rate. Each finished model is written atomically to `OUT/partial/`
as soon as its chunk is done, so a killed build resumes where it stopped and loses at most the
chunk in flight: a resumed build trains each chunk's models that have no file yet, and never
trains or writes a finished model again.
The zoo files are assembled at the end and the partial folder removed. hyperrep.zoo.ray_build runs the
same chunks as tasks on a Ray cluster.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import queue
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from hyperrep.images.datasets import DatasetRule, ImageSet, build_dataset_rule
from hyperrep.io.files import ArtifactError, read_json, read_tensor_metadata, read_tensors, write_json, write_tensors
from hyperrep.nets.cnn import INIT_TYPES, get_activation, get_architecture, init_vector
from hyperrep.nets.population import evaluate_population, train_population
from hyperrep.runtime.device import pick_device
from hyperrep.zoo.format import Zoo, make_manifest, split_model_ids

INIT_FAMILY_SEED = 1_000_000_000  # family k starts from the init drawn with this seed + k
DEFAULT_CHUNK_MODELS = 64  # models per stacked-trainer chunk (the resume granularity)


@dataclass
class BuildConfig:
    """Everything that defines a zoo build; stored in the manifest so it can be rebuilt."""

    name: str = "zoo"
    architecture: str = "cnn_s"
    activation: str = "tanh"
    dataset: str = "fashion-mnist"
    n_models: int = 200
    first_seed: int = 1
    epochs: int = 5
    save_epochs: list[int] | None = None  # default: 0..epochs
    train_images: int = 10_000  # images drawn (seeded) from the training part of the split
    train_metric_images: int = 2_000  # subset of those used to report train loss/accuracy
    test_images: int | None = None  # None = the whole test split
    val_fraction: float = 1 / 6  # 60k -> 50k train / 10k validation, as the public zoos
    data_seed: int = 42
    batch_size: int = 32
    optimizer: str = "adam"
    weight_decay: float = 0.0
    learning_rate: float | list[float] = 1e-3  # a number, or [low, high] drawn log-uniformly per model
    init: str | dict[str, float] = "kaiming_uniform"  # a name, or {name: probability}
    init_families: int | None = None  # None: each model starts from its own seed; K: K shared starts
    model_split: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    split_seed: int = 42
    chunk_models: int = DEFAULT_CHUNK_MODELS  # models trained together; a killed build loses at most one chunk

    @classmethod
    def from_file(cls, path: Path | str) -> "BuildConfig":
        raw = read_json(path)
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown build settings {sorted(unknown)}")
        config = cls(**raw)
        config.validate()
        return config

    def validate(self) -> None:
        get_architecture(self.architecture)
        get_activation(self.activation)
        names = [self.init] if isinstance(self.init, str) else list(self.init)
        for name in names:
            if name not in INIT_TYPES:
                raise ValueError(f"unknown init {name!r}; known: {', '.join(INIT_TYPES)}")
        if not isinstance(self.n_models, int) or self.n_models < 1:
            raise ValueError(f"n_models must be a whole number of at least 1, got {self.n_models!r}")
        if not isinstance(self.chunk_models, int) or self.chunk_models < 1:
            raise ValueError(f"chunk_models must be a whole number of at least 1, got {self.chunk_models!r}")
        if self.init_families is not None and self.init_families < 1:
            raise ValueError(f"init_families must be None or at least 1, got {self.init_families}")
        if any(e < 0 or e > self.epochs for e in self.saved_epochs()):
            raise ValueError(f"save_epochs must lie in 0..{self.epochs}")

    def saved_epochs(self) -> list[int]:
        return sorted(self.save_epochs) if self.save_epochs is not None else list(range(self.epochs + 1))

    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.n_models))

    def chunks(self) -> list[list[int]]:
        """The fixed blocks of `chunk_models` consecutive seeds that train together."""
        seeds = self.seeds()
        return [seeds[i: i + self.chunk_models] for i in range(0, len(seeds), self.chunk_models)]

    def init_seed(self, seed: int) -> int:
        """Seed of the model's initial state: its own, or that of its family (seeds past 10^9)."""
        return seed if self.init_families is None else INIT_FAMILY_SEED + seed % self.init_families

    def hyperparameters(self, seed: int) -> dict:
        """The learning rate, initialisation type and initial-state seed of a model (deterministic)."""
        init_seed = self.init_seed(seed)
        return {"lr": self._draw(seed)[0], "init": self._draw(init_seed)[1], "init_seed": init_seed}

    def _draw(self, seed: int) -> tuple[float, str]:
        rng = np.random.default_rng([seed, 7919])
        if isinstance(self.learning_rate, (list, tuple)):
            low, high = self.learning_rate
            lr = float(math.exp(rng.uniform(math.log(low), math.log(high))))
        else:
            lr = float(self.learning_rate)
        if isinstance(self.init, str):
            return lr, self.init
        names, probs = list(self.init), np.asarray(list(self.init.values()), dtype=float)
        return lr, str(rng.choice(names, p=probs / probs.sum()))


@dataclass
class BuildData:
    train: ImageSet
    train_metric: ImageSet
    test: ImageSet

    def to(self, device: torch.device | str) -> "BuildData":
        return BuildData(self.train.to(device), self.train_metric.to(device), self.test.to(device))


def dataset_rule(config: BuildConfig, data_dir: Path | str | None) -> DatasetRule:
    """The normalisation and training/validation split of this build (hyperrep.images.datasets's one rule)."""
    arch = get_architecture(config.architecture)
    return build_dataset_rule(config.dataset, data_dir, val_fraction=config.val_fraction, data_seed=config.data_seed,
                              shape=(arch.in_channels, arch.image_size))


def load_build_data(config: BuildConfig, data_dir: Path | str | None) -> BuildData:
    """The seeded training subset, its metric subset, and the test split."""
    rule = dataset_rule(config, data_dir)
    train = rule.training_images(config.train_images, config.data_seed, data_dir)
    metric = train.subset(np.arange(min(config.train_metric_images, len(train))))
    test = rule.first_images(config.test_images, data_dir)
    return BuildData(train, metric, test)


@dataclass
class TrainedModel:
    """One finished model: its saved-epoch weights [E, P] and one property row per saved epoch."""

    seed: int
    weights: torch.Tensor
    rows: list[dict]


def train_chunk(
    config: BuildConfig, data: BuildData, seeds: list[int], progress: Callable[[int, int], None] | None = None,
) -> list[TrainedModel]:
    """Train the models of `seeds` together with the stacked trainer and measure their saved epochs.

    Each model gets what a model of this build always gets: its own (or its family's) init, its
    own data order (its seed) and its own learning rate. `progress(epoch, epochs)` after each epoch."""
    arch = get_architecture(config.architecture)
    hypers = [config.hyperparameters(seed) for seed in seeds]
    starts = torch.stack([init_vector(arch, h["init"], torch.Generator().manual_seed(h["init_seed"])) for h in hypers])
    trajectory = train_population(
        arch, config.activation, starts, data.train, epochs=config.epochs,
        lr=torch.tensor([h["lr"] for h in hypers]), seeds=list(seeds), batch_size=config.batch_size,
        optimizer=config.optimizer, weight_decay=config.weight_decay, batched=True, progress=progress,
    )
    epochs = config.saved_epochs()
    saved = trajectory[:, epochs]  # [models, saved epochs, P]
    flat = saved.reshape(-1, saved.shape[-1])
    test = evaluate_population(arch, config.activation, flat, data.test)
    train = evaluate_population(arch, config.activation, flat, data.train_metric)
    models = []
    for m, (seed, hyper) in enumerate(zip(seeds, hypers)):
        rows = []
        for i, epoch in enumerate(epochs):
            k = m * len(epochs) + i
            rows.append({
                "model_id": seed, "seed": seed, "epoch": epoch, "lr": hyper["lr"], "init": hyper["init"],
                "init_seed": hyper["init_seed"],
                "train_loss": float(train.loss[k]), "train_acc": float(train.accuracy[k]),
                "test_loss": float(test.loss[k]), "test_acc": float(test.accuracy[k]),
            })
        models.append(TrainedModel(seed, saved[m].clone(), rows))
    return models


def model_path(partial: Path, seed: int) -> Path:
    return partial / f"model_{seed:06d}.safetensors"


def write_models(partial: Path, models: list[TrainedModel], on_written: Callable[[], None] | None = None) -> None:
    """Write each model atomically, skipping those already on disk (never a finished model twice)."""
    for model in models:
        path = model_path(partial, model.seed)
        if path.exists():
            continue
        write_tensors(path, {"weights": model.weights}, {"rows": json.dumps(model.rows)})
        if on_written is not None:
            on_written()


def finished_seeds(partial: Path) -> set[int]:
    """Seeds whose model file is complete (atomic writes: a present file is a whole file)."""
    return {int(p.stem.split("_")[1]) for p in partial.glob("model_*.safetensors")}


@dataclass
class BuildPlan:
    """A started (or resumed) build: its partial folder and the chunks still to train."""

    out: Path
    partial: Path
    seeds: list[int]
    todo: list[list[int]]  # the unfinished models of each chunk that has any
    finished: set[int]


def start_build(config: BuildConfig, out: Path | str) -> BuildPlan:
    """Check the settings against a partial build in `out` (if any) and list the chunks left."""
    config.validate()
    out = Path(out)
    partial = out / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    _check_resume_config(config, partial / "config.json")
    write_json(partial / "config.json", asdict(config))
    finished = finished_seeds(partial)
    todo = [missing for chunk in config.chunks() if (missing := [s for s in chunk if s not in finished])]
    return BuildPlan(out, partial, config.seeds(), todo, finished)


def finish_build(config: BuildConfig, plan: BuildPlan, data_dir: Path | str | None = None) -> Zoo:
    """Assemble the per-model files into the zoo, save it, and remove the partial folder."""
    zoo = assemble_zoo(config, plan.partial, plan.seeds, data_dir)
    zoo.save(plan.out)
    shutil.rmtree(plan.partial)
    return zoo


class BuildProgress:
    """Turns chunk epochs and written models into `progress(models done, total)` calls.

    Between model files the count moves in fractions: a chunk's unfinished models count as done
    in proportion to the epochs it has trained."""

    def __init__(self, plan: BuildPlan, progress: Callable[[float, int], None] | None):
        self.total, self.progress = len(plan.seeds), progress
        self.written = len(set(plan.seeds) & plan.finished)
        self.missing = {i: len(chunk) for i, chunk in enumerate(plan.todo)}
        self.fraction: dict[int, float] = {}
        self.done: set[int] = set()
        self.report()

    def report(self) -> None:
        if self.progress is not None:
            in_flight = sum(self.missing[i] * f for i, f in self.fraction.items())
            self.progress(self.written + in_flight if in_flight else self.written, self.total)

    def epoch(self, chunk: int, epoch: int, epochs: int) -> None:
        if epoch < epochs and chunk not in self.done:  # the last epoch is reported by the model files
            self.fraction[chunk] = epoch / epochs
            self.report()

    def chunk_done(self, chunk: int) -> None:
        self.done.add(chunk)
        self.fraction.pop(chunk, None)

    def model_written(self) -> None:
        self.written += 1
        self.report()


def build_zoo(
    config: BuildConfig, out: Path | str, *, data_dir: Path | str | None = None, workers: int | None = None,
    progress: Callable[[float, int], None] | None = None,
) -> Zoo:
    """Train (or resume training) every model of the config, then assemble and save the zoo.

    One process trains chunk after chunk on all threads (or the accelerator); `workers` > 1 runs
    that many processes on a CPU, one chunk each at a time, the threads shared among them."""
    plan = start_build(config, out)
    tracker = BuildProgress(plan, progress)
    device = pick_device()
    workers = 1 if device.type != "cpu" else max(1, min(workers or 1, len(plan.todo) or 1))
    if plan.todo and workers == 1:
        data = load_build_data(config, data_dir).to(device)
        for i, chunk in enumerate(plan.todo):
            models = train_chunk(config, data, chunk, progress=lambda e, n, i=i: tracker.epoch(i, e, n))
            tracker.chunk_done(i)
            write_models(plan.partial, models, tracker.model_written)
    elif plan.todo:
        _train_in_processes(config, data_dir, plan, workers, tracker)
    return finish_build(config, plan, data_dir)


_WORKER: dict = {}


def _worker_init(config: BuildConfig, data_dir, threads: int, events) -> None:
    torch.set_num_threads(threads)
    _WORKER.update(config=config, data=load_build_data(config, data_dir), events=events)


def _worker_run(index: int, chunk: list[int]) -> list[TrainedModel]:
    report = lambda epoch, epochs: _WORKER["events"].put((index, epoch, epochs))  # noqa: E731
    return train_chunk(_WORKER["config"], _WORKER["data"], chunk, progress=report)


def _train_in_processes(config: BuildConfig, data_dir, plan: BuildPlan, workers: int, tracker: BuildProgress) -> None:
    """A pool of `workers` processes, one chunk per task; the parent writes the model files."""
    context = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
    events = context.Queue()  # (chunk, epoch, epochs) from the workers, for the progress bar
    threads = max(1, (os.cpu_count() or 1) // workers)
    with context.Pool(workers, initializer=_worker_init, initargs=(config, data_dir, threads, events)) as pool:
        pending = {i: pool.apply_async(_worker_run, (i, chunk)) for i, chunk in enumerate(plan.todo)}
        while pending:
            try:
                tracker.epoch(*events.get(timeout=0.2))
            except queue.Empty:
                pass
            for i in [i for i, result in pending.items() if result.ready()]:
                models = pending.pop(i).get()  # re-raises a worker's error
                tracker.chunk_done(i)
                write_models(plan.partial, models, tracker.model_written)


# Settings that do not change a finished model, so a partial build may resume with other values.
# chunk_models only regroups the models (results may differ within fp32 rounding).
RESUMABLE_CHANGES = ("name", "n_models", "first_seed", "model_split", "split_seed", "chunk_models")


def _check_resume_config(config: BuildConfig, path: Path) -> None:
    """Refuse to resume a partial build whose finished models were trained with other settings."""
    if not path.exists():
        return
    previous, current = read_json(path), json.loads(json.dumps(asdict(config)))
    changed = sorted(k for k in set(previous) | set(current) if k not in RESUMABLE_CHANGES and previous.get(k) != current.get(k))
    if changed:
        raise ArtifactError(
            f"{path}: this folder holds a partial build made with other settings ({', '.join(changed)}); "
            f"resume it with the same config, or delete {path.parent} to start over"
        )


def assemble_zoo(config: BuildConfig, partial: Path, seeds: list[int], data_dir: Path | str | None = None) -> Zoo:
    """Collect the per-model files; models with non-finite weights are dropped and counted. The
    manifest records the normalisation the models were trained with (computed for an unknown dataset)."""
    weights, rows, kept, dropped = [], [], [], []
    for seed in seeds:
        path = model_path(partial, seed)
        saved = read_tensors(path)["weights"]
        if not torch.isfinite(saved).all():
            dropped.append(seed)
            continue
        rows += json.loads(read_tensor_metadata(path)["rows"])
        weights.append(saved)
        kept.append(seed)
    if not kept:
        raise ArtifactError(f"{partial}: all {len(dropped)} models have non-finite weights; nothing to assemble")
    splits = split_model_ids(kept, config.model_split, config.split_seed)
    manifest = make_manifest(
        name=config.name, architecture=config.architecture, activation=config.activation,
        dataset={**dataset_rule(config, data_dir).manifest_entry(),
                 "train_images": config.train_images, "test_images": config.test_images or "all"},
        epochs=config.saved_epochs(), splits=splits, build=asdict(config),
        dropped={"non_finite": len(dropped), "non_finite_ids": dropped},
    )
    return Zoo(manifest, torch.stack(weights), torch.tensor(kept), pd.DataFrame(rows))
