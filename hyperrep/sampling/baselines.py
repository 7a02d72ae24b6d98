"""Baseline populations the samples are compared with, built like the decoded samples (flat weights).

B_T: fresh initialisations drawn as the zoo's build drew them (or all with one standard init); B_F: zoo models at their last
epoch; noise added to anchor weights (at a distance matched to the samples'); anchors passed
through the autoencoder. Each takes an explicit seed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from hyperrep.ae.artifact import decode_latents, encode_weights
from hyperrep.nets.cnn import INIT_TYPES, init_vector
from hyperrep.sampling.population import Population
from hyperrep.zoo.build import BuildConfig


def anchor_weights(zoo, table: pd.DataFrame, rows) -> torch.Tensor:
    """Zoo weights [len(rows), P] of latent-table rows (their model_id and epoch)."""
    picked = table.iloc[np.asarray(rows)]
    models = torch.tensor(zoo.rows_of(picked["model_id"].tolist()), dtype=torch.long)
    epochs = torch.tensor([zoo.epoch_position(int(e)) for e in picked["epoch"]], dtype=torch.long)
    return zoo.weights[models, epochs]


def scratch_baseline(zoo, n: int, seed: int = 0, init: str | None = None) -> Population:
    """B_T: `n` fresh initialisations drawn as the zoo's build drew them (init type per seed), or
    all with `init` (one of nets.cnn.INIT_TYPES) when given, with seeds past the zoo's own so that
    none repeats a zoo model's start; the label names the init."""
    if init is not None and init not in INIT_TYPES:
        raise ValueError(f"unknown init {init!r}; known: {', '.join(INIT_TYPES)}")
    build = dict(zoo.manifest.get("build", {}))
    config = BuildConfig(**{k: v for k, v in build.items() if k in BuildConfig.__dataclass_fields__})
    first = int(zoo.model_ids.max()) + 1 + seed * n
    seeds = list(range(first, first + n))
    inits = [init or config.hyperparameters(s)["init"] for s in seeds]
    weights = torch.stack([init_vector(zoo.architecture, kind, torch.Generator().manual_seed(s))
                           for s, kind in zip(seeds, inits)])
    label = "B_T" if init is None else f"B_T ({init})"
    return Population(label, weights, pd.DataFrame({"member": np.arange(n), "seed": seeds, "init": inits}))


def zoo_baseline(zoo, n: int, seed: int = 0, split: str = "train") -> Population:
    """B_F: `n` zoo models of `split` (seeded choice, no repeats while possible) at the last epoch."""
    ids = np.asarray(zoo.splits[split] or zoo.model_ids.tolist())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids, size=n, replace=n > len(ids))
    last = zoo.epochs[-1]
    weights = zoo.weights[torch.tensor(zoo.rows_of(chosen.tolist())), zoo.epoch_position(last)]
    members = pd.DataFrame({"member": np.arange(n), "model_id": chosen, "epoch": last})
    return Population("B_F", weights.clone(), members)


def cycling_order(n_items: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` indices into `n_items` drawn with `generator`, each used once before any repeats."""
    return torch.cat([torch.randperm(n_items, generator=generator) for _ in range(math.ceil(n / n_items))])[:n]


def noise_baseline(anchors: torch.Tensor, sigma: float, n: int, seed: int = 0,
                   anchor_info: pd.DataFrame | None = None) -> Population:
    """Anchor weights plus sigma * N(0, 1) in weight space (the noise baseline of Zeng et al.);
    anchors are drawn with the seed, cycling through all before any repeats."""
    generator = torch.Generator().manual_seed(seed)
    order = cycling_order(len(anchors), n, generator)
    weights = anchors[order] + sigma * torch.randn(n, anchors.shape[1], generator=generator)
    members = pd.DataFrame({"member": np.arange(n), "anchor": order.numpy(), "sigma": sigma})
    if anchor_info is not None:
        members = pd.concat([members, anchor_info.iloc[order.numpy()][["model_id", "epoch"]].reset_index(drop=True)], axis=1)
    return Population(f"noise σ={sigma:.3g}", weights, members)


def reconstruction_baseline(model, anchors: torch.Tensor, n: int, seed: int = 0,
                            anchor_info: pd.DataFrame | None = None) -> Population:
    """decode(encode(anchor)) of `n` anchors (seeded choice, cycling through all before repeats)."""
    generator = torch.Generator().manual_seed(seed)
    order = cycling_order(len(anchors), n, generator)
    latents = encode_weights(model, anchors[order])
    members = pd.DataFrame({"member": np.arange(n), "anchor": order.numpy()})
    if anchor_info is not None:
        members = pd.concat([members, anchor_info.iloc[order.numpy()][["model_id", "epoch"]].reset_index(drop=True)], axis=1)
    return Population("reconstructed", decode_latents(model, latents), members, latents)


def matched_noise_sigma(distances: np.ndarray, n_params: int) -> float:
    """Noise std that puts anchor + sigma * N(0, 1) at the samples' median distance from the zoo
    (the distance of such noise is about sigma * sqrt(P))."""
    finite = distances[np.isfinite(distances)]
    if finite.size == 0 or np.median(finite) <= 0:
        return 0.01
    return float(np.median(finite) / math.sqrt(n_params))
