"""Train a zoo of CNNs that differ by seed (and optionally learning rate and initialisation).

The seed sets each model's data order and, in a seed zoo (the public zoos' design), its initial
state. With `init_families = K` the models instead share K initial states: measured in
docs/benchmarks.md, held-out models of a seed zoo cannot be rebuilt from the others (their
weights are mostly their own random init), while models that share a start can.

Each finished model is written atomically to `OUT/partial/` as soon as it is done, so a killed
build resumes where it stopped and loses no finished model; the zoo files are assembled at the
end and the partial folder removed.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from hyperrep.cnn import INIT_TYPES, get_activation, get_architecture, init_vector
from hyperrep.data import DatasetRule, ImageSet, build_dataset_rule
from hyperrep.files import ArtifactError, read_json, read_tensor_metadata, read_tensors, write_json, write_tensors
from hyperrep.population import evaluate_population, train_population
from hyperrep.zoo import Zoo, make_manifest, split_model_ids


INIT_FAMILY_SEED = 1_000_000_000  # family k starts from the init drawn with this seed + k


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
        if self.init_families is not None and self.init_families < 1:
            raise ValueError(f"init_families must be None or at least 1, got {self.init_families}")
        if any(e < 0 or e > self.epochs for e in self.saved_epochs()):
            raise ValueError(f"save_epochs must lie in 0..{self.epochs}")

    def saved_epochs(self) -> list[int]:
        return sorted(self.save_epochs) if self.save_epochs is not None else list(range(self.epochs + 1))

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


def dataset_rule(config: BuildConfig, data_dir: Path | str | None) -> DatasetRule:
    """The normalisation and training/validation split of this build (hyperrep.data's one rule)."""
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


def train_one_model(config: BuildConfig, data: BuildData, seed: int) -> tuple[torch.Tensor, list[dict]]:
    """Train one model; return its saved-epoch weights [E, P] and one property row per epoch."""
    arch = get_architecture(config.architecture)
    hyper = config.hyperparameters(seed)
    start = init_vector(arch, hyper["init"], torch.Generator().manual_seed(hyper["init_seed"]))[None]
    trajectory = train_population(
        arch, config.activation, start, data.train, epochs=config.epochs, lr=hyper["lr"], seeds=[seed],
        batch_size=config.batch_size, optimizer=config.optimizer, weight_decay=config.weight_decay,
    )[0]
    saved = trajectory[config.saved_epochs()]
    test = evaluate_population(arch, config.activation, saved, data.test)
    train = evaluate_population(arch, config.activation, saved, data.train_metric)
    rows = []
    for i, epoch in enumerate(config.saved_epochs()):
        rows.append({
            "model_id": seed, "seed": seed, "epoch": epoch, "lr": hyper["lr"], "init": hyper["init"],
            "init_seed": hyper["init_seed"],
            "train_loss": float(train.loss[i]), "train_acc": float(train.accuracy[i]),
            "test_loss": float(test.loss[i]), "test_acc": float(test.accuracy[i]),
        })
    return saved, rows


_WORKER: dict = {}


def _worker_init(config: BuildConfig, data_dir, threads: int) -> None:
    torch.set_num_threads(threads)
    _WORKER["config"] = config
    _WORKER["data"] = load_build_data(config, data_dir)


def _worker_run(args: tuple[int, str]) -> int:
    seed, partial = args
    saved, rows = train_one_model(_WORKER["config"], _WORKER["data"], seed)
    write_tensors(Path(partial) / f"model_{seed:06d}.safetensors", {"weights": saved}, {"rows": json.dumps(rows)})
    return seed


def finished_seeds(partial: Path) -> set[int]:
    """Seeds whose model file is complete (atomic writes: a present file is a whole file)."""
    return {int(p.stem.split("_")[1]) for p in partial.glob("model_*.safetensors")}


def build_zoo(
    config: BuildConfig, out: Path | str, *, data_dir: Path | str | None = None, workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Zoo:
    """Train (or resume training) every model of the config, then assemble and save the zoo."""
    config.validate()
    out = Path(out)
    partial = out / "partial"
    partial.mkdir(parents=True, exist_ok=True)
    _check_resume_config(config, partial / "config.json")
    write_json(partial / "config.json", asdict(config))
    seeds = list(range(config.first_seed, config.first_seed + config.n_models))
    todo = [s for s in seeds if s not in finished_seeds(partial)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    done = len(seeds) - len(todo)
    if progress:
        progress(done, len(seeds))
    if todo and workers == 1:
        _worker_init(config, data_dir, torch.get_num_threads())
        for seed in todo:
            _worker_run((seed, str(partial)))
            done += 1
            if progress:
                progress(done, len(seeds))
    elif todo:
        context = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
        with context.Pool(workers, initializer=_worker_init, initargs=(config, data_dir, 1)) as pool:
            for _ in pool.imap_unordered(_worker_run, [(s, str(partial)) for s in todo]):
                done += 1
                if progress:
                    progress(done, len(seeds))
    zoo = assemble_zoo(config, partial, seeds, data_dir)
    zoo.save(out)
    shutil.rmtree(partial)
    return zoo


# Settings that do not change a finished model, so a partial build may resume with other values.
RESUMABLE_CHANGES = ("name", "n_models", "first_seed", "model_split", "split_seed")


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
        path = partial / f"model_{seed:06d}.safetensors"
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
