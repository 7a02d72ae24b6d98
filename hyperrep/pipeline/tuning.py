"""The honest protocol: hyperparameters are chosen on validation images, results reported on test images.

The validation images are the first images of the training split's validation part (no zoo model
trained on them and fine-tuning never draws them); the test images are the first images of the test
split. Anchors are chosen by their accuracy on the validation images, never by the recorded test
accuracy. `ImageSplit.record()` is what a report writes about the two sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hyperrep.ae.artifact import decode_latents
from hyperrep.evaluation.frontier import Frontier, FrontierSettings, zero_shot_frontier
from hyperrep.evaluation.novelty import nearest_reference
from hyperrep.images.datasets import ImageSet
from hyperrep.nets.population import evaluate_population
from hyperrep.pipeline.experiment import draw_population
from hyperrep.sampling.anchors import select_rows, top_fraction
from hyperrep.sampling.baselines import anchor_weights, cycling_order
from hyperrep.sampling.guided import guidance_batch, refine_latents, refine_weights
from hyperrep.sampling.samplers import SAMPLERS
from hyperrep.zoo.format import Zoo, zoo_dataset_rule

VALIDATION_COLUMN = "val_acc"  # a latent table's accuracy on the validation images


@dataclass
class ImageSplit:
    """The two image sets of the protocol: `validation` chooses, `test` reports."""

    validation: ImageSet
    test: ImageSet
    validation_source: str
    test_source: str

    def record(self) -> dict:
        return {"validation": {"images": len(self.validation), "source": self.validation_source},
                "test": {"images": len(self.test), "source": self.test_source}}


def load_image_split(zoo: Zoo, validation_images: int, test_images: int,
                     data_dir: Path | str | None = None) -> ImageSplit:
    """The first `validation_images` of the zoo's validation part and the first `test_images` of its test split."""
    rule = zoo_dataset_rule(zoo.manifest, data_dir)
    validation = rule.validation_images(validation_images, data_dir)
    test = rule.first_images(test_images, data_dir)
    return ImageSplit(validation, test,
                      f"train split of {rule.name}: the first {len(validation)} images of its validation part "
                      f"(val_fraction {rule.val_fraction:.4g}, data seed {rule.data_seed})",
                      f"test split of {rule.name}: its first {len(test)} images")


def with_validation_accuracy(table: pd.DataFrame, zoo: Zoo, validation: ImageSet, split: str = "train") -> pd.DataFrame:
    """A copy of a latent table with `val_acc`: each `split` row's zoo model (at its epoch)
    evaluated on the validation images; NaN for the other rows."""
    table = table.reset_index(drop=True).copy()
    rows = select_rows(table, split=split)
    picked = table.iloc[rows]
    models = torch.tensor(zoo.rows_of(picked["model_id"].tolist()), dtype=torch.long)
    epochs = torch.tensor([zoo.epoch_position(int(e)) for e in picked["epoch"]], dtype=torch.long)
    accuracy = evaluate_population(zoo.architecture, zoo.activation, zoo.weights[models, epochs], validation).accuracy
    table[VALIDATION_COLUMN] = np.nan
    table.loc[rows, VALIDATION_COLUMN] = accuracy
    return table


def validation_anchor_rows(table: pd.DataFrame, fraction: float) -> np.ndarray:
    """The top `fraction` of the train rows by validation accuracy (`with_validation_accuracy`)."""
    if VALIDATION_COLUMN not in table:
        raise ValueError(f"the table has no {VALIDATION_COLUMN} column: call with_validation_accuracy first")
    return top_fraction(table, fraction, among=select_rows(table, split="train"), column=VALIDATION_COLUMN)


# -- the searches ----------------------------------------------------------------------------------


@dataclass
class TuningConfig:
    """The small searches on validation images: what is chosen, over which grid, with how many models."""

    validation_images: int = 2_000
    models: int = 24  # members of each candidate population
    seed_offset: int = 1_000  # candidates are drawn with the report's seed + this: not the reported members
    anchor_fractions: list[float] = field(default_factory=lambda: [0.1, 0.3, 0.5])
    bandwidths: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5, 1.0])  # kde, kde_multivariate
    gmm_components: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    budgets: list[int] = field(default_factory=lambda: [5, 10, 20])  # gradient steps, each on `images` images
    images: int = 256
    latent_step_sizes: list[float] = field(default_factory=lambda: [0.03, 0.1, 0.3, 1.0, 3.0])
    weight_step_sizes: list[float] = field(default_factory=lambda: [0.0003, 0.001, 0.003, 0.01, 0.03, 0.1])
    reach: float = 1.25  # the noise σ grid reaches this times the farthest candidate's median distance

    def validate(self) -> None:
        if self.models < 2 or self.validation_images < 1 or self.images < 1:
            raise ValueError("tuning needs >= 2 models per candidate, >= 1 validation image and >= 1 step image")
        if not self.anchor_fractions or any(not 0 < f <= 1 for f in self.anchor_fractions):
            raise ValueError(f"anchor fractions must lie in (0, 1], got {self.anchor_fractions}")
        if any(b < 2 for b in self.budgets) or not self.budgets:
            raise ValueError(f"step budgets must be >= 2 steps (the combination splits them), got {self.budgets}")
        grids = self.bandwidths + self.latent_step_sizes + self.weight_step_sizes
        if any(not v > 0 for v in grids) or any(k < 1 for k in self.gmm_components):
            raise ValueError("bandwidths, step sizes and mixture components must be positive")


SAMPLER_GRIDS = {"kde": ("bandwidth", "bandwidths"), "kde_multivariate": ("bandwidth", "bandwidths"),
                 "gmm": ("n_components", "gmm_components")}  # sampler -> (its parameter, the TuningConfig grid)
STEP_METHODS = ("guided", "weights from decoded", "weights from anchors", "guided then weights")


@dataclass
class Tuning:
    """What the searches chose (`choices`, written as tuning.json), every candidate's validation
    score (`searches`, tuning.csv), the latent table with validation accuracies and the anchors."""

    choices: dict
    searches: pd.DataFrame
    table: pd.DataFrame
    anchor_rows: np.ndarray

    def sampler_params(self, name: str) -> dict:
        return dict(self.choices["sampler_params"].get(name, {}))

    def step_size(self, method: str, budget: int) -> float:
        return float(self.choices["step_sizes"][method][str(budget)])


def train_reference(zoo: Zoo, table: pd.DataFrame, rows: np.ndarray) -> tuple[torch.Tensor, pd.DataFrame]:
    """The train-split models at the epochs the anchors come from: what a sample must not copy.
    (The whole zoo also holds validation and test models and the first epochs.)"""
    epochs = sorted(set(table.iloc[rows]["epoch"].astype(int)))
    among = select_rows(table, split="train", epochs=epochs)
    return anchor_weights(zoo, table, among), table.iloc[among].reset_index(drop=True)


class _Scorer:
    """A candidate population's validation accuracy, median distance to the training models, and
    Δ against a validation frontier of the same anchors."""

    def __init__(self, zoo: Zoo, validation: ImageSet, reference: torch.Tensor):
        self.zoo, self.validation, self.reference = zoo, validation, reference

    def distance(self, weights: torch.Tensor) -> float:
        return _median(nearest_reference(self.zoo.architecture, weights, self.reference)[0])

    def accuracy(self, weights: torch.Tensor) -> float:
        accuracy = evaluate_population(self.zoo.architecture, self.zoo.activation, weights, self.validation).accuracy
        return float(np.nanmean(accuracy)) if np.isfinite(accuracy).any() else float("nan")

    def frontier(self, anchors: torch.Tensor, settings: FrontierSettings, seed: int) -> Frontier:
        return zero_shot_frontier(self.zoo.architecture, self.zoo.activation, anchors, self.reference,
                                  self.validation, settings, seed)


def _median(values: np.ndarray) -> float:
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    return float(np.median(finite)) if len(finite) else float("nan")


def reach_sigmas(sigmas: list[float], farthest: float, n_params: int, reach: float) -> list[float]:
    """The noise σ grid extended geometrically (×1.3) until σ·√P, the distance of noise from its
    anchor, passes `reach` times the farthest candidate's median distance."""
    grid = sorted(sigmas)
    while np.isfinite(farthest) and grid[-1] * np.sqrt(n_params) < reach * farthest:
        grid.append(round(grid[-1] * 1.3, 4))
    return grid


def tune(hyperrep, zoo: Zoo, validation: ImageSet, train: ImageSet, config: TuningConfig, frontier: FrontierSettings,
         samplers: list[str], seed: int, log=None) -> Tuning:
    """Every choice of the report, made on `validation` images only (`train` images feed the
    gradient steps, as in the report): anchor fraction by the validation Δ of S_KDE indep.,
    each sampler's parameter by its validation Δ, the noise σ reach from the candidates' distances
    (no images), and at each step budget the step size of each refinement by validation accuracy."""
    config.validate()
    say = log or (lambda _text: None)
    table = with_validation_accuracy(hyperrep.latent_table, zoo, validation)
    seed = seed + config.seed_offset
    n, rows_of = config.models, {f: validation_anchor_rows(table, f) for f in config.anchor_fractions}
    grids = {name: [(param, v) for v in getattr(config, grid)] for name, (param, grid) in SAMPLER_GRIDS.items()
             if name in samplers or name == "kde"}
    candidates: dict[tuple, torch.Tensor] = {}
    for fraction, rows in rows_of.items():  # pass 1: draw every candidate; distances need no images
        candidates[("anchors", fraction, "kde", None, None)] = _draw(hyperrep, "kde", {}, rows, n, seed)
        for name, grid in grids.items():
            for param, value in grid:
                if len(rows) >= SAMPLERS[name].build(**{param: value}).min_anchors:
                    candidates[("sampler", fraction, name, param, value)] = _draw(hyperrep, name, {param: value}, rows, n, seed)
    references = {f: train_reference(zoo, table, rows) for f, rows in rows_of.items()}
    scorers = {f: _Scorer(zoo, validation, references[f][0]) for f in rows_of}
    distances = {key: scorers[key[1]].distance(w) for key, w in candidates.items()}
    sigmas = reach_sigmas(frontier.sigmas, max(distances.values()), zoo.architecture.n_params, config.reach)
    settings = FrontierSettings(sigmas, frontier.average_sizes, frontier.gaussian_scales, n)
    say(f"tuning: {len(candidates)} candidates drawn; noise σ reaches {sigmas[-1]:g}")
    frontiers = {f: scorers[f].frontier(anchor_weights(zoo, table, rows), settings, seed) for f, rows in rows_of.items()}
    records = []
    for key, weights in candidates.items():  # pass 2: validation accuracy and Δ
        accuracy = scorers[key[1]].accuracy(weights)
        delta = accuracy - frontiers[key[1]].accuracy_at(distances[key], 0)
        records.append({"search": key[0], "anchor_fraction": key[1], "method": key[2], "parameter": key[3],
                        "value": key[4], "budget": np.nan, "validation_accuracy": accuracy,
                        "distance": distances[key], "validation_delta": delta})
    searches = pd.DataFrame(records)
    fraction = _best(searches[searches["search"] == "anchors"], "validation_delta", "anchor_fraction", config.anchor_fractions[0])
    searches.loc[(searches["search"] == "anchors") & (searches["anchor_fraction"] == fraction), "chosen"] = True
    params = {}
    for name, grid in grids.items():
        part = searches[(searches["search"] == "sampler") & (searches["method"] == name) & (searches["anchor_fraction"] == fraction)]
        value = _best(part, "validation_delta", "value", None)
        if value is not None:
            params[name] = {grid[0][0]: next(v for _, v in grid if v == value)}  # the grid's own type
            searches.loc[part.index[part["value"] == value], "chosen"] = True
    say(f"tuning: anchors top {fraction:.0%}; sampler parameters {params}")
    rows = rows_of[fraction]
    steps, step_rows = _tune_steps(hyperrep, zoo, table, rows, params.get("kde", {}), train, scorers[fraction], config, seed)
    searches = pd.concat([searches, step_rows], ignore_index=True)
    searches["chosen"] = searches["chosen"].astype("boolean").fillna(False).astype(bool)
    choices = {"anchor_fraction": float(fraction), "anchors": int(len(rows)), "anchor_rule": "top fraction of the train "
               "rows by validation accuracy", "sampler_params": params, "frontier_sigmas": sigmas,
               "step_sizes": steps, "budgets": list(config.budgets), "step_images": config.images,
               "candidate_models": n, "candidate_seed": seed}
    return Tuning(choices, searches, table, rows)


def _draw(hyperrep, name: str, params: dict, rows: np.ndarray, n: int, seed: int) -> torch.Tensor:
    return draw_population(hyperrep, name, params, rows, n, seed).weights


def _best(part: pd.DataFrame, score: str, column: str, default):
    """The `column` value of the row with the highest finite `score` (ties: the first)."""
    finite = part[np.isfinite(part[score].to_numpy(dtype=float))]
    return default if finite.empty else finite.loc[finite[score].idxmax(), column]


def _tune_steps(hyperrep, zoo: Zoo, table: pd.DataFrame, rows: np.ndarray, kde_params: dict, train: ImageSet,
                scorer: _Scorer, config: TuningConfig, seed: int) -> tuple[dict, pd.DataFrame]:
    """At each budget, the step size of the guided latent steps, of weight steps from the decoded
    start, of weight steps from the anchors, and of the weight half of 'guided then weights'
    (its latent half at the guided choice), each by validation accuracy."""
    arch, activation, n = zoo.architecture, zoo.activation, config.models
    start = draw_start(hyperrep, rows, kde_params, n, seed)
    anchors = anchor_starts(zoo, table, rows, n, seed)
    batch = guidance_batch(train, min(config.images, len(train)), seed)
    chosen = {method: {} for method in STEP_METHODS}
    records = []

    def search(method: str, budget: int, grid: list[float], refine) -> float:
        scores = [(lr, scorer.accuracy(refine(lr))) for lr in grid]
        best = max(scores, key=lambda s: s[1] if np.isfinite(s[1]) else -np.inf)[0]
        records.extend({"search": "steps", "anchor_fraction": np.nan, "method": method, "parameter": "step_size",
                        "value": lr, "budget": budget, "validation_accuracy": acc, "distance": np.nan,
                        "validation_delta": np.nan, "chosen": lr == best} for lr, acc in scores)
        chosen[method][str(budget)] = float(best)
        return best

    for budget in config.budgets:
        half = budget // 2
        latent = search("guided", budget, config.latent_step_sizes, lambda lr: decode_latents(
            hyperrep.model, refine_latents(hyperrep.model, activation, start.latents, batch, steps=budget, step_size=lr)))
        search("weights from decoded", budget, config.weight_step_sizes,
               lambda lr: refine_weights(arch, activation, start.weights, batch, steps=budget, step_size=lr))
        search("weights from anchors", budget, config.weight_step_sizes,
               lambda lr: refine_weights(arch, activation, anchors, batch, steps=budget, step_size=lr))
        first = decode_latents(hyperrep.model, refine_latents(hyperrep.model, activation, start.latents, batch,
                                                              steps=half, step_size=latent))
        search("guided then weights", budget, config.weight_step_sizes,
               lambda lr: refine_weights(arch, activation, first, batch, steps=budget - half, step_size=lr))
    return chosen, pd.DataFrame(records)


def draw_start(hyperrep, rows: np.ndarray, kde_params: dict, n: int, seed: int):
    """The starts every refinement shares: S_KDE indep. latents (at its chosen bandwidth) and their decoded weights."""
    return draw_population(hyperrep, "kde", kde_params, rows, n, seed)


def anchor_starts(zoo: Zoo, table: pd.DataFrame, rows: np.ndarray, n: int, seed: int) -> torch.Tensor:
    """`n` anchor weights, each anchor used once before any repeats (seeded)."""
    weights = anchor_weights(zoo, table, rows)
    return weights[cycling_order(len(weights), n, torch.Generator().manual_seed(seed))].clone()
