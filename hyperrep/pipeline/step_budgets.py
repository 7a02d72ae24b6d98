"""Guided latent steps against weight steps at equal budgets, and what the decoder adds.

At each budget (gradient steps, each on the same training images) four refinements of the same
S_KDE indep. starts, each at the step size the validation images chose (hyperrep.pipeline.tuning):
the guided sampler (latent steps through the frozen decoder), weight steps from the decoded start,
weight steps from the anchors themselves (no decoder at all), and half the budget as latent steps
then half as weight steps. Equal cost counts steps × images, not FLOPs (the decoder adds to every
latent step); the wall-clock seconds per model are recorded beside it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd

from hyperrep.ae.artifact import decode_latents
from hyperrep.evaluation.frontier import Frontier
from hyperrep.images.datasets import ImageSet
from hyperrep.pipeline.tuning import Tuning, anchor_starts, draw_start
from hyperrep.sampling.guided import guidance_batch, refine_latents, refine_weights
from hyperrep.sampling.population import Population
from hyperrep.zoo.format import Zoo

COMPARISONS = (  # (a, b, what a − b says)
    ("guided", "weights from decoded", "guided − weight steps (same decoded starts)"),
    ("guided then weights", "guided", "guided then weight steps − guided alone"),
    ("weights from decoded", "weights from anchors", "what the decoder adds: weight steps from a decoded sample − from an anchor"),
    ("guided", "weights from anchors", "guided − weight steps from the anchors"),
)


@dataclass(frozen=True)
class StepRun:
    """One refined population of the comparison: method, budget, chosen step size, seconds per model."""

    label: str
    method: str
    budget: int
    images: int
    step_size: float
    seconds_per_model: float


def step_label(method: str, budget: int, images: int, step_size: float) -> str:
    return f"{method} ({budget} steps × {images} images, lr {step_size:g})"


def step_populations(hyperrep, zoo: Zoo, tuning: Tuning, train: ImageSet, n: int, seed: int
                     ) -> tuple[list[Population], list[StepRun]]:
    """The four refinements at every budget, `n` members each, from the same seeded starts."""
    arch, activation = zoo.architecture, zoo.activation
    rows, images = tuning.anchor_rows, min(int(tuning.choices["step_images"]), len(train))
    clock = time.perf_counter()
    start = draw_start(hyperrep, rows, tuning.sampler_params("kde"), n, seed)
    start_seconds = (time.perf_counter() - clock) / n
    anchors = anchor_starts(zoo, tuning.table, rows, n, seed)
    batch = guidance_batch(train, images, seed)
    populations, runs = [], []

    def add(method: str, budget: int, refine, extra: float = 0.0) -> None:
        lr = tuning.step_size(method, budget)
        clock = time.perf_counter()
        weights = refine(lr)
        seconds = (time.perf_counter() - clock) / n + extra
        label = step_label(method, budget, images, lr)
        members = pd.DataFrame({"member": np.arange(n), "method": method, "budget": budget, "step_size": lr})
        populations.append(Population(label, weights, members))
        runs.append(StepRun(label, method, budget, images, lr, seconds))

    for budget in tuning.choices["budgets"]:
        half = budget // 2
        add("guided", budget, lambda lr: decode_latents(hyperrep.model, refine_latents(
            hyperrep.model, activation, start.latents, batch, steps=budget, step_size=lr)), start_seconds)
        add("weights from decoded", budget,
            lambda lr: refine_weights(arch, activation, start.weights, batch, steps=budget, step_size=lr), start_seconds)
        add("weights from anchors", budget,
            lambda lr: refine_weights(arch, activation, anchors, batch, steps=budget, step_size=lr))
        latent_lr = tuning.step_size("guided", budget)
        add("guided then weights", budget, lambda lr: refine_weights(
            arch, activation, decode_latents(hyperrep.model, refine_latents(hyperrep.model, activation, start.latents,
                                                                           batch, steps=half, step_size=latent_lr)),
            batch, steps=budget - half, step_size=lr), start_seconds)
    return populations, runs


def budget_table(runs: list[StepRun], results: dict, frontier: Frontier, *, resamples: int, seed: int,
                 distance_column: str = "distance_train") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per refinement and epoch: Δ with its CI, accuracy, seconds per model; one row per
    comparison, budget and epoch: the difference of the two Δ with its paired CI). `results` maps
    each run's label to its MethodResult."""
    rows, differences = [], []
    for run in runs:
        result = results[run.label]
        delta = frontier.delta(result.novelty[distance_column].to_numpy(), np.where(result.evaluated, result.accuracy, np.nan),
                               resamples=resamples, seed=seed)
        for _, d in delta.iterrows():
            i = result.epochs.index(int(d["epoch"]))
            rows.append({"method": run.method, "budget": run.budget, "images": run.images, "step_size": run.step_size,
                         "epoch": int(d["epoch"]), "accuracy": float(np.nanmean(result.accuracy[result.evaluated[:, i], i])),
                         "distance": d["distance"], "delta": d["delta"], "delta_lo": d["delta_lo"],
                         "delta_hi": d["delta_hi"], "seconds_per_model": run.seconds_per_model})
    by_key = {(r.method, r.budget): results[r.label] for r in runs}
    for a, b, meaning in COMPARISONS:
        for budget in sorted({r.budget for r in runs}):
            if (a, budget) not in by_key or (b, budget) not in by_key:
                continue
            ra, rb = by_key[(a, budget)], by_key[(b, budget)]
            diff = frontier.delta_difference(
                (ra.novelty[distance_column].to_numpy(), np.where(ra.evaluated, ra.accuracy, np.nan)),
                (rb.novelty[distance_column].to_numpy(), np.where(rb.evaluated, rb.accuracy, np.nan)),
                resamples=resamples, seed=seed)
            for _, d in diff.iterrows():
                differences.append({"comparison": meaning, "a": a, "b": b, "budget": budget, "epoch": int(d["epoch"]),
                                    "difference": d["difference"], "difference_lo": d["difference_lo"],
                                    "difference_hi": d["difference_hi"], "difference_p": d["difference_p"]})
    return pd.DataFrame(rows), pd.DataFrame(differences)
