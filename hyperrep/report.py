"""The paper-style comparison of sampling methods and baselines, and the accuracy–novelty frontier.

`run_report` builds every population on the top-30 % train anchors: the samplers, the guided
sampler and its equal-cost weight-space refinement, reconstructed anchors, B_F (drawn from the
anchor pool), today's re-trained B_T, the samplers of the hyper-representation trained without
LWLN, and the frontier's reference populations (hyperrep.frontier: the anchors, noise at a sweep
of σ, averages of k anchors, a per-coordinate Gaussian). Every member is evaluated zero-shot; the
first `fine_tune_models` of each population are fine-tuned for `max(fine_tune_epochs)` epochs
with the zoo's optimiser settings. B_T from the zoo's own test-split trajectories (trained from
scratch, the paper's B_T) is read at the same epoch offsets when the zoo saved them. Per method
and epoch it reports:

    mean ± std, bootstrap 95 % CI of the mean, Mann-Whitney U p against B_T (Holm-corrected over
    the table; complete separation named as such), disjoint 5-member ensembles, zero-shot novelty
    (median distance to the nearest zoo model in any neuron order, that over the zoo's own
    median nearest-neighbour distance, the largest mistake overlap with any zoo model), and
    Δ = accuracy − the frontier's at the same (zero-shot) distance, with a bootstrap 95 % CI.

It writes report.md (header, table, readings), report.csv (one row per method and epoch),
members.csv, novelty.csv, frontier.csv, report.png and frontier.png. The anchors, the sampled
populations and the fine-tuning are the experiment pipeline's (hyperrep.experiment), as in the app
and `hyperrep sample`; populations are exported with hyperrep.export.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from hyperrep.artifacts import PAPER, artifact_kind, compatibility, load_any_hyperrep, load_hyperrep_with_zoo
from hyperrep.baselines import anchor_weights, noise_baseline, reconstruction_baseline, scratch_baseline
from hyperrep.data import ImageSet, zoo_dataset_rule
from hyperrep.device import pick_device
from hyperrep.evaluate import Evaluation, ensemble_accuracies, evaluate_weights, zoo_training_settings
from hyperrep.experiment import ANCHOR_FRACTION, draw_population, fine_tune_population, top_train_anchors
from hyperrep.files import atomic_write, write_json
from hyperrep.frontier import (
    Frontier,
    FrontierPoint,
    FrontierSettings,
    mistake_overlap,
    reference_populations,
    verdict,
    zoo_neighbour_distances,
)
from hyperrep.guided import GuidedSampler, guidance_batch, refine_weights
from hyperrep.novelty import novelty_table
from hyperrep.paper_import import (
    BASELINE_SAMPLES, find_zoo_folder, paper_sample_populations, paper_testsplit, sample_label, testsplit_accuracy_at,
)
from hyperrep.sampling import SAMPLERS, Population, sample_population
from hyperrep.zoo import Zoo

ZOO_B_T = "B_T (zoo test split)"
PAPER_B_T = "B_T (paper's zoo_testsplit, as recorded)"  # a paper folder's zoos/<dataset>/zoo_testsplit.pt
RETRAINED_B_T = "B_T (re-trained)"
BASELINE = "B_T"  # where fresh initialisations are the only B_T (hyperrep.transfer: trained on another dataset)
BASELINES = (ZOO_B_T, PAPER_B_T, RETRAINED_B_T, BASELINE)  # the first present is the reference of every p-value
READINGS_START = "Readings, generated from the table"


@dataclass
class ReportConfig:
    """What the report computes. Zero-shot numbers use every member; fine-tuning, the costly part,
    the first `fine_tune_models` of each population (None: all)."""

    models_per_method: int = 100
    fine_tune_models: int | None = 10
    test_images: int = 2_000  # the first N images of the test split
    fine_tune_images: int = 2_000  # seeded draw from the training part of the train split
    fine_tune_epochs: list[int] = field(default_factory=lambda: [0, 1, 5])
    anchor_fraction: float = ANCHOR_FRACTION  # top 30 % of the hyper-representation's train rows
    samplers: list[str] = field(default_factory=lambda: [
        "uniform_unit", "uniform", "kde_legacy", "kde", "kde_multivariate", "gaussian", "gmm", "neigh"])
    ablation_samplers: list[str] = field(default_factory=lambda: ["kde_legacy", "kde", "gaussian"])
    guided_bases: list[str] = field(default_factory=lambda: ["kde"])
    guided_steps: int = 10
    guided_images: int = 256
    guided_step_size: float = 0.1
    guided_weight_step_sizes: list[float] = field(default_factory=list)  # more learning rates of the weight steps
    noise_sigmas: list[float] = field(default_factory=list)  # extra noise rows in the table (the frontier has its own)
    frontier_sigmas: list[float] = field(default_factory=lambda: FrontierSettings().sigmas)
    frontier_average_sizes: list[int] = field(default_factory=lambda: FrontierSettings().average_sizes)
    frontier_gaussian_scales: list[float] = field(default_factory=lambda: FrontierSettings().gaussian_scales)
    frontier_models: int = 40
    ensemble_size: int = 5
    bootstrap_resamples: int = 2_000
    seed: int = 42

    def validate(self) -> None:
        unknown = [s for s in self.samplers + self.ablation_samplers + self.guided_bases if s not in SAMPLERS]
        if unknown:
            raise ValueError(f"unknown samplers {unknown}; known: {', '.join(SAMPLERS)}")
        if self.models_per_method < 2 or min(self.fine_tune_epochs) < 0:
            raise ValueError("models_per_method must be >= 2 and fine_tune_epochs >= 0")
        if any(not lr > 0 for lr in self.guided_weight_step_sizes):
            raise ValueError(f"guided weight step sizes must be > 0, got {self.guided_weight_step_sizes}")
        if self.fine_tune_models is not None and self.fine_tune_models < 2:
            raise ValueError(f"fine_tune_models must be >= 2 (or None for all), got {self.fine_tune_models}")
        self.frontier_settings().validate()

    def populations_held(self, *, guided: bool = True, ablation: bool = True) -> tuple[int, int]:
        """(populations of models_per_method, of frontier_models) that the report holds at once, as
        `build_populations` and `frontier_references` make them: each sampler, the guided rows, the
        reconstructed anchors, B_T, B_F, the noise rows and the ablation's; so a request can be sized first."""
        methods = len(self.samplers) + 3 + len(self.noise_sigmas)
        if guided:
            methods += len(self.guided_bases) * (2 + len(self.guided_weight_step_sizes))
        if ablation:
            methods += len(self.ablation_samplers) + 1
        frontier = 1 + len(self.frontier_sigmas) + len(self.frontier_average_sizes) + len(self.frontier_gaussian_scales)
        return methods, frontier

    def frontier_settings(self) -> FrontierSettings:
        return FrontierSettings(self.frontier_sigmas, self.frontier_average_sizes, self.frontier_gaussian_scales,
                                self.frontier_models)

    @property
    def epochs(self) -> list[int]:
        """The reported epochs; zero-shot (0) is always among them."""
        return sorted(set(self.fine_tune_epochs) | {0})


@dataclass
class MethodResult:
    """One population's curves, ensembles and zero-shot novelty. `accuracy` is NaN where a member
    was not evaluated at an epoch (not fine-tuned) or is not finite; `evaluated` tells which."""

    label: str
    kind: str  # "sampler", "baseline" or "frontier"
    hyperrep: str  # "LWLN", "no LWLN" or "-" (no autoencoder involved)
    epochs: list[int]
    accuracy: np.ndarray  # [M, epochs]
    finite: np.ndarray  # [M, epochs]
    ensembles: dict[int, np.ndarray]  # epoch -> ensemble accuracies
    novelty: pd.DataFrame  # one row per member (zero-shot)
    evaluated: np.ndarray | None = None  # [M, epochs]; None: every member at every epoch

    def __post_init__(self) -> None:
        if self.evaluated is None:
            self.evaluated = np.ones(self.accuracy.shape, dtype=bool)


@dataclass
class ZooReference:
    """The zoo as the reference of novelty: its weights and rows, the predictions of its distinct
    models on the test images (for the largest mistake overlap), its own neighbour spacing."""

    weights: torch.Tensor
    table: pd.DataFrame
    predictions: torch.Tensor  # [distinct weight vectors, test images]
    spacing: np.ndarray


# -- data -------------------------------------------------------------------------------------


def load_test_images(zoo: Zoo, n: int, data_dir: Path | str | None = None) -> ImageSet:
    """The first `n` images of the test split, normalised as the zoo's dataset (hyperrep.data's rule)."""
    return zoo_dataset_rule(zoo.manifest, data_dir).first_images(n, data_dir)


def load_fine_tune_images(zoo: Zoo, n: int, seed: int, data_dir: Path | str | None = None) -> ImageSet:
    """`n` images (seeded) of the training part of the train split, as the zoo build split it."""
    return zoo_dataset_rule(zoo.manifest, data_dir).training_images(n, seed, data_dir)


def zoo_reference(zoo: Zoo, test: ImageSet) -> ZooReference:
    """Every saved (model, epoch) of the zoo with the predictions of its distinct weight vectors
    (a shared start is evaluated once), and the spacing of its train models at the last epoch."""
    weights, table = zoo.samples()
    distinct = torch.unique(weights, dim=0)
    predictions = evaluate_weights(zoo.architecture, zoo.activation, distinct, test, keep_predictions=True).predictions
    last = ((table["epoch"] == table["epoch"].max()) & (table["split"] == "train")).to_numpy()
    if not last.any():
        last = (table["epoch"] == table["epoch"].max()).to_numpy()
    spacing = zoo_neighbour_distances(zoo.architecture, weights[torch.from_numpy(last.copy())], table.loc[last, "model_id"].to_numpy(),
                                      weights, table["model_id"].to_numpy())
    return ZooReference(weights, table, predictions, spacing)


# -- populations ------------------------------------------------------------------------------


def sampler_label(name: str, fraction: float) -> str:
    """'S_KDE (kde_legacy, top 30%)': the paper's name, the registry name, the anchors."""
    spec = SAMPLERS[name]
    return f"{spec.paper_name} ({name})" if name == "uniform_unit" else f"{spec.paper_name} ({name}, top {fraction:.0%})"


def guided_populations(hyperrep, zoo: Zoo, anchors: torch.Tensor, train: ImageSet, config: ReportConfig) -> list[Population]:
    """For each guided base: the guided samples, and the same steps on the same images taken on the
    decoded start weights directly, the equal-cost comparison: at the zoo's learning rate, and at
    each of `guided_weight_step_sizes` (the latent step size is a free choice too)."""
    n, seed, out = config.models_per_method, config.seed, []
    steps, images, size = config.guided_steps, min(config.guided_images, len(train)), config.guided_step_size
    rates = [(zoo_training_settings(zoo).lr, "")] + [(lr, f", lr {lr:g}") for lr in config.guided_weight_step_sizes]
    for base in config.guided_bases:
        sampler = GuidedSampler(hyperrep.model, zoo.activation, train, base=base, steps=steps, images=images,
                                step_size=size).fit(anchors)
        guided = sample_population(hyperrep.model, sampler, anchors, n, seed)
        guided.label = f"S_guided ({base} + {steps} latent steps, {images} images, top {config.anchor_fraction:.0%})"
        out.append(guided)
        start, batch = sampler.start_weights(n, seed), guidance_batch(train, images, seed)
        for lr, note in rates:
            refined = refine_weights(zoo.architecture, zoo.activation, start, batch, steps=steps, step_size=lr)
            members = pd.DataFrame({"member": np.arange(n), "base": base, "steps": steps, "lr": lr})
            out.append(Population(f"{base} + {steps} weight steps (equal cost{note})", refined, members))
    return out


def anchor_pool_baseline(weights: torch.Tensor, info: pd.DataFrame, n: int, seed: int) -> Population:
    """B_F: `n` models drawn (seeded, without repeats while possible) from the anchors' pool."""
    rng = np.random.default_rng(seed + 1)  # not the draw of the frontier's anchors population
    chosen = rng.choice(len(weights), size=n, replace=n > len(weights))
    members = info.iloc[chosen][["model_id", "epoch"]].reset_index(drop=True).assign(member=np.arange(n))
    return Population("B_F (anchor pool)", weights[torch.as_tensor(chosen)].clone(), members)


def build_populations(
    hyperrep, zoo: Zoo, config: ReportConfig, *, tag: str = "LWLN", baselines: bool = True,
    samplers: list[str] | None = None, train: ImageSet | None = None,
) -> tuple[list[tuple[Population, str, str]], list[str]]:
    """(population, kind, hyper-rep tag) for every sampler (the guided ones when `train` images
    are given), reconstructed anchors and, with `baselines`, re-trained B_T, B_F from the anchor
    pool and the extra noise rows; and a note for each sampler skipped for too few anchors."""
    n, seed = config.models_per_method, config.seed
    table = hyperrep.latent_table
    rows = top_train_anchors(table, config.anchor_fraction)
    anchors = hyperrep.latents[torch.as_tensor(rows)]
    weights = anchor_weights(zoo, table, rows)
    info = table.iloc[rows].reset_index(drop=True)
    suffix = "" if tag == "LWLN" else f" [{tag}]"
    out, skipped = [], []
    for name in samplers if samplers is not None else config.samplers:
        if len(rows) < SAMPLERS[name].min_anchors:
            skipped.append(f"{name}{suffix} (needs {SAMPLERS[name].min_anchors} anchors, has {len(rows)})")
            continue
        population = draw_population(hyperrep, name, {}, rows, n, seed)
        population.label = sampler_label(name, config.anchor_fraction) + suffix
        out.append((population, "sampler", tag))
    if train is not None:
        bases = [b for b in config.guided_bases if len(rows) >= SAMPLERS[b].min_anchors]
        skipped += [f"S_guided ({b}){suffix} (needs {SAMPLERS[b].min_anchors} anchors, has {len(rows)})"
                    for b in config.guided_bases if b not in bases]
        guided, refined = [], []
        for population in guided_populations(hyperrep, zoo, anchors, train, replace(config, guided_bases=bases)):
            (guided if population.label.startswith("S_guided") else refined).append(population)
        out += [(p, "sampler", tag) for p in guided] + [(p, "baseline", "-") for p in refined]
    recon = reconstruction_baseline(hyperrep.model, weights, n, seed, anchor_info=info)
    recon.label = f"reconstructed (top {config.anchor_fraction:.0%}){suffix}"
    out.append((recon, "baseline", tag))
    if baselines:
        scratch = scratch_baseline(zoo, n, seed)
        scratch.label = RETRAINED_B_T
        out.append((scratch, "baseline", "-"))
        out.append((anchor_pool_baseline(weights, info, n, seed), "baseline", "-"))
        for sigma in config.noise_sigmas:
            noisy = noise_baseline(weights, sigma, n, seed, anchor_info=info)
            noisy.label = f"noise σ={sigma:g} (top {config.anchor_fraction:.0%})"
            out.append((noisy, "baseline", "-"))
    return out, skipped


def frontier_references(hyperrep, zoo: Zoo, config: ReportConfig):
    """The frontier's reference populations around the report's anchors (hyperrep.frontier)."""
    table = hyperrep.latent_table
    weights = anchor_weights(zoo, table, top_train_anchors(table, config.anchor_fraction))
    return reference_populations(weights, config.frontier_settings(), config.seed)


def evaluate_method(population: Population, kind: str, tag: str, zoo: Zoo, train: ImageSet, test: ImageSet,
                    config: ReportConfig, reference: ZooReference) -> MethodResult:
    """Evaluate every member zero-shot (with novelty against `reference`), fine-tune the first
    `fine_tune_models`, evaluate them at the report epochs, ensembles of those members per epoch."""
    arch, activation, epochs = zoo.architecture, zoo.activation, config.epochs
    m = len(population)
    k = m if config.fine_tune_models is None else min(config.fine_tune_models, m)
    start = evaluate_weights(arch, activation, population.weights, test, keep_predictions=True)
    accuracy, finite = np.full((m, len(epochs)), np.nan), np.zeros((m, len(epochs)), dtype=bool)
    evaluated = np.zeros((m, len(epochs)), dtype=bool)
    accuracy[:, 0], finite[:, 0], evaluated[:, 0] = start.accuracy, start.finite, True
    trajectory = {0: population.weights[:k]}
    later = epochs[1:]
    if later:
        curves = fine_tune_population(population.weights[:k], zoo, train, test, max(later), config.seed,
                                      eval_epochs=later)
        accuracy[:k, 1:], finite[:k, 1:], evaluated[:k, 1:] = curves.accuracy, curves.finite, True
        trajectory |= {e: curves.weights[:, i] for i, e in enumerate(later)}
    ensembles = {e: ensemble_accuracies(arch, activation, trajectory[e], test, size=config.ensemble_size,
                                        seed=config.seed, finite=finite[:k, i])
                 for i, e in enumerate(epochs)}
    novelty = zero_shot_novelty(zoo, population.weights, start, test, reference)
    return MethodResult(population.label, kind, tag, epochs, accuracy, finite, ensembles, novelty, evaluated)


def zero_shot_novelty(zoo: Zoo, weights: torch.Tensor, start: Evaluation, test: ImageSet,
                      reference: ZooReference) -> pd.DataFrame:
    """novelty.novelty_table (nearest zoo model and the IoU with it) plus the largest mistake
    overlap with any zoo model (`iou_max`)."""
    novelty = novelty_table(zoo.architecture, zoo.activation, weights, start.predictions, reference.weights,
                            reference.table, test)
    novelty["iou_max"] = mistake_overlap(start.predictions, reference.predictions, test.labels)[0]
    return novelty


def zoo_test_trajectories(zoo: Zoo, test: ImageSet, config: ReportConfig, reference: ZooReference) -> MethodResult | None:
    """The paper's B_T: the zoo's test-split models, trained from scratch, read at the report's
    epochs; None when the zoo has no test split or did not save every report epoch."""
    ids = list(zoo.splits.get("test") or [])
    if not ids or not set(config.epochs) <= set(zoo.epochs):
        return None
    arch, activation = zoo.architecture, zoo.activation
    rows = torch.tensor(zoo.rows_of(ids))
    evaluations = [evaluate_weights(arch, activation, zoo.weights[rows, zoo.epoch_position(e)], test,
                                    keep_predictions=e == config.epochs[0]) for e in config.epochs]
    accuracy = np.stack([e.accuracy for e in evaluations], axis=1)
    finite = np.stack([e.finite for e in evaluations], axis=1)
    ensembles = {e: ensemble_accuracies(arch, activation, zoo.weights[rows, zoo.epoch_position(e)], test,
                                        size=config.ensemble_size, seed=config.seed, finite=finite[:, i])
                 for i, e in enumerate(config.epochs)}
    novelty = zero_shot_novelty(zoo, zoo.weights[rows, zoo.epoch_position(config.epochs[0])], evaluations[0], test, reference)
    return MethodResult(ZOO_B_T, "baseline", "-", config.epochs, accuracy, finite, ensembles, novelty)


# -- a paper hyper-representation folder's own rows ---------------------------------------------


def paper_populations(hyperrep_dir: Path | str, zoo: Zoo, config: ReportConfig) -> list[tuple[Population, str, str]]:
    """The authors' pre-sampled populations (samples/<method>/checkpoint_<i>.pt, the first
    `models_per_method` of each), evaluated and fine-tuned like the samplers; tagged "paper" (its
    `direct` folder holds zoo models, the paper's B_F: a baseline)."""
    out = []
    for method, weights in paper_sample_populations(hyperrep_dir, zoo.architecture, config.models_per_method).items():
        members = pd.DataFrame({"member": np.arange(len(weights)), "checkpoint": np.arange(len(weights))})
        kind = "baseline" if method in BASELINE_SAMPLES else "sampler"
        out.append((Population(sample_label(method), weights, members), kind, "paper"))
    return out


def recorded_test_split(hyperrep_dir: Path | str, config: ReportConfig) -> tuple[MethodResult | None, str | None]:
    """The paper's B_T as its zoo_testsplit.pt recorded it (zoos/<dataset>/ beside the folder): the
    test models' accuracy at each report epoch, on the whole test set (the file has no weights, so
    no novelty or ensembles). (None, why) when the file or one of the epochs is missing."""
    folder = find_zoo_folder(hyperrep_dir)
    if folder is None:
        return None, f"{PAPER_B_T} (no zoos/<dataset>/zoo_testsplit.pt beside {hyperrep_dir})"
    table = paper_testsplit(folder)
    missing = sorted(set(config.epochs) - set(table["epoch"].astype(int)))
    if missing:
        return None, f"{PAPER_B_T} ({folder} records no accuracy at epochs {missing})"
    columns = [testsplit_accuracy_at(table, epoch) for epoch in config.epochs]
    accuracy = np.full((max(len(c) for c in columns), len(columns)), np.nan)
    evaluated = np.zeros(accuracy.shape, dtype=bool)
    for i, values in enumerate(columns):  # one column per epoch; rows need not be the same model
        accuracy[: len(values), i], evaluated[: len(values), i] = values, True
    novelty = pd.DataFrame({"distance": np.nan, "nearest_model_id": -1, "nearest_epoch": -1,
                            "misclassification_iou": np.nan, "iou_max": np.nan}, index=range(len(accuracy)))
    return MethodResult(PAPER_B_T, "baseline", "-", config.epochs, accuracy, np.isfinite(accuracy), {}, novelty,
                        evaluated), None


# -- statistics -------------------------------------------------------------------------------


def bootstrap_ci(values: np.ndarray, resamples: int, seed: int = 42) -> tuple[float, float]:
    """95 % bootstrap CI of the mean (scipy, BCa), as the paper's statistics (random_state 42)."""
    from scipy.stats import bootstrap

    values = values[np.isfinite(values)]
    if len(values) < 2 or np.ptp(values) == 0:
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, mean
    result = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=0.95, random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mann_whitney_p(values: np.ndarray, baseline: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value of two samples (finite values only)."""
    from scipy.stats import mannwhitneyu

    a, b = values[np.isfinite(values)], baseline[np.isfinite(baseline)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def mann_whitney_floor(n_a: int, n_b: int) -> float:
    """The smallest p `mann_whitney_p` gives for samples of these sizes: complete separation."""
    if n_a == 0 or n_b == 0:
        return float("nan")
    return mann_whitney_p(np.arange(n_a, dtype=float), np.arange(n_a, n_a + n_b, dtype=float))


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (NaN entries are left out of the family and stay NaN)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    index = np.flatnonzero(np.isfinite(p))
    order = index[np.argsort(p[index], kind="stable")]
    m = len(order)
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


def summarise(results: list[MethodResult], config: ReportConfig, *, frontier: Frontier | None = None,
              zoo_spacing: float = float("nan")) -> pd.DataFrame:
    """One row per (method, epoch): accuracy statistics, p vs B_T (raw and Holm-corrected, and
    whether the two samples separate completely), ensembles, novelty, Δ against the frontier."""
    baseline = next((r for name in BASELINES for r in results if r.label == name), None)
    rows = []
    for result in results:
        deltas = (frontier.delta(result.novelty["distance"].to_numpy(), result.accuracy,
                                 resamples=config.bootstrap_resamples, seed=config.seed).set_index("epoch")
                  if frontier is not None else None)
        for i, epoch in enumerate(result.epochs):
            values = result.accuracy[result.evaluated[:, i], i]
            finite = values[np.isfinite(values)]
            low, high = bootstrap_ci(values, config.bootstrap_resamples, config.seed)
            compare = (baseline is not None and result is not baseline and result.kind != "frontier"
                       and epoch in baseline.epochs)  # the frontier's references are not in the tests' family
            j = baseline.epochs.index(epoch) if compare else 0
            reference = baseline.accuracy[baseline.evaluated[:, j], j] if compare else np.array([])
            reference = reference[np.isfinite(reference)]
            p = mann_whitney_p(finite, reference) if compare else float("nan")
            ensembles = result.ensembles.get(epoch, np.array([]))
            distance = result.novelty["distance"]
            rows.append({
                "method": result.label, "kind": result.kind, "hyperrep": result.hyperrep, "epoch": epoch,
                "models": len(values), "invalid": int(len(values) - len(finite)),
                "mean": finite.mean() if len(finite) else np.nan, "std": finite.std(ddof=1) if len(finite) > 1 else np.nan,
                "median": np.median(finite) if len(finite) else np.nan, "ci_low": low, "ci_high": high,
                "p_vs_B_T": p, "p_floor": mann_whitney_floor(len(finite), len(reference)) if compare else np.nan,
                "above_B_T": (finite.mean() > reference.mean()) if compare and len(finite) and len(reference) else np.nan,
                "separated": bool(compare and len(finite) and len(reference)
                                  and (finite.min() > reference.max() or finite.max() < reference.min())),
                "ensemble_mean": ensembles.mean() if len(ensembles) else np.nan, "ensembles": len(ensembles),
                "distance_median": distance.median(), "distance_min": distance.min(),
                "distance_ratio": distance.median() / zoo_spacing if zoo_spacing > 0 else np.nan,
                "iou_median": result.novelty["misclassification_iou"].median(),
                "iou_max_median": result.novelty["iou_max"].median() if "iou_max" in result.novelty else np.nan,
                "nearest_distinct": int(result.novelty.loc[result.novelty["nearest_model_id"] >= 0, "nearest_model_id"].nunique()),
                **({"frontier_accuracy": deltas.loc[epoch, "frontier_accuracy"], "frontier_delta": deltas.loc[epoch, "delta"],
                    "frontier_delta_lo": deltas.loc[epoch, "delta_lo"], "frontier_delta_hi": deltas.loc[epoch, "delta_hi"]}
                   if deltas is not None else {}),
            })
    summary = pd.DataFrame(rows)
    summary["p_holm"] = holm(summary["p_vs_B_T"].to_numpy())
    return summary


def frontier_from_results(references, results: list[MethodResult]) -> Frontier:
    """The Frontier of the evaluated reference populations (matched to `references` by label)."""
    by_label = {r.label: r for r in results}
    points = []
    for ref in references:
        result = by_label[ref.population.label]
        points.append(FrontierPoint(ref.family, ref.level, result.label, result.novelty["distance"].to_numpy(),
                                    np.where(result.evaluated, result.accuracy, np.nan),
                                    result.novelty["iou_max"].to_numpy()))
    return Frontier(points, results[0].epochs if results else [0])


# -- writing ----------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{100 * value:.1f}"


def _pp(value: float) -> str:
    """A difference of accuracies in percentage points, signed."""
    return "–" if not np.isfinite(value) else f"{100 * value:+.1f}"


def _number(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.2f}"


def _p(value: float) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def _p_cell(row: pd.Series) -> str:
    """Holm-corrected p, or 'sep.' where the samples separate completely (every member on one side
    of every B_T member: p at the floor of its sample sizes, up to ties)."""
    if not np.isfinite(row["p_vs_B_T"]):
        return "–"
    return "sep." if row["separated"] else _p(row["p_holm"])


def _delta_cell(row: pd.Series) -> str:
    if "frontier_delta" not in row or not np.isfinite(row["frontier_delta"]):
        return "–"
    return f"{_pp(row['frontier_delta'])} [{_pp(row['frontier_delta_lo'])}, {_pp(row['frontier_delta_hi'])}]"


def markdown_table(summary: pd.DataFrame) -> str:
    """The paper-style table: accuracy per epoch (mean ± std, CI), Δ vs the frontier, p vs B_T
    (Holm), ensembles, novelty (distance, its ratio to the zoo's spacing, mistake overlaps)."""
    epochs = sorted(summary["epoch"].unique())
    span = "/".join(map(str, epochs))
    head = (["method", "hyper-rep", "models (ep. " + span + ")"] + [f"acc. epoch {e} (%)" for e in epochs]
            + [f"Δ vs frontier, pp [95 % CI] (ep. {span})", f"p vs B_T, Holm (ep. {span})", f"ensemble (ep. {span}, %)",
               "dist. to nearest zoo model (× zoo spacing)", "IoU nearest / max", "invalid"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, group in summary.groupby("method", sort=False):
        group = group.set_index("epoch")
        cells = [method, group["hyperrep"].iloc[0], "/".join(str(int(group.loc[e, "models"])) for e in epochs)]
        for e in epochs:
            r = group.loc[e]
            cells.append(f"{_pct(r['mean'])} ± {_pct(r['std'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]")
        cells.append(" / ".join(_delta_cell(group.loc[e]) for e in epochs))
        cells.append(" / ".join(_p_cell(group.loc[e]) for e in epochs))
        cells.append(" / ".join(_pct(group.loc[e, "ensemble_mean"]) for e in epochs))
        first = group.iloc[0]
        ratio = f" (×{first['distance_ratio']:.1f})" if np.isfinite(first.get("distance_ratio", np.nan)) else ""
        cells.append(f"{_number(first['distance_median'])}{ratio}")
        cells.append(f"{_number(first['iou_median'])} / {_number(first.get('iou_max_median', np.nan))}")
        cells.append(str(int(group["invalid"].max())))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readings(summary: pd.DataFrame, zoo_spacing: float) -> str:
    """One generated sentence per method, from the table's numbers only: distance, mistake
    overlap and Δ against the frontier with its CI, zero-shot and after the last epoch."""
    if "frontier_delta" not in summary:
        return ""
    epochs = sorted(summary["epoch"].unique())
    last = epochs[-1]
    lines = [f"{READINGS_START} (Δ: accuracy minus the frontier's at the same zero-shot distance, "
             f"in percentage points with its 95 % CI; the zoo's own median nearest-neighbour distance is {zoo_spacing:.2f}):"]
    for method, group in summary[summary["kind"] != "frontier"].groupby("method", sort=False):
        group = group.set_index("epoch")
        zero, end = group.loc[epochs[0]], group.loc[last]
        if not np.isfinite(zero["distance_median"]):  # recorded accuracies only (no weights): nothing to read
            continue
        text = (f"- {method}: distance {zero['distance_median']:.2f} (×{zero['distance_ratio']:.1f}), largest mistake "
                f"overlap {zero['iou_max_median']:.2f}; zero-shot Δ {_delta_cell(zero)}: {verdict(zero['frontier_delta_lo'], zero['frontier_delta_hi'])}")
        if last != epochs[0]:
            text += (f"; after {last} epochs ({int(end['models'])} models) Δ {_delta_cell(end)}: "
                     f"{verdict(end['frontier_delta_lo'], end['frontier_delta_hi'])}")
        lines.append(text + ".")
    return "\n".join(lines)


def plot_report(results: list[MethodResult], path: Path) -> None:
    """Zero-shot accuracy per method (box plot) and mean accuracy over fine-tuning epochs (95 % CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(17, 7), gridspec_kw={"width_ratios": [1.2, 1]})
    labels = [r.label for r in results]
    zero_shot = [r.accuracy[:, 0][np.isfinite(r.accuracy[:, 0])] * 100 for r in results]
    left.boxplot(zero_shot, vert=False, tick_labels=labels, showmeans=True)
    left.invert_yaxis()
    left.set_xlabel(f"test accuracy at fine-tuning epoch {results[0].epochs[0]} (%)")
    left.set_title("zero-shot accuracy per method")
    colours = plt.get_cmap("tab20")
    for i, result in enumerate(results):
        masked = np.where(result.evaluated, result.accuracy, np.nan)
        means = np.nanmean(masked, axis=0) * 100
        cis = np.array([bootstrap_ci(masked[:, j], 500) for j in range(len(result.epochs))]) * 100
        colour = "black" if result.label in BASELINES else colours(i % 20)
        style = ":" if result.hyperrep == "no LWLN" else "--" if result.kind == "baseline" else "-"
        right.plot(result.epochs, means, style, marker="o", color=colour, label=result.label)
        right.fill_between(result.epochs, cis[:, 0], cis[:, 1], color=colour, alpha=0.12)
    right.set_xlabel("fine-tuning epochs")
    right.set_ylabel("mean test accuracy (%), 95 % CI")
    right.set_title("accuracy while fine-tuning")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    right.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_frontier(frontier: Frontier, summary: pd.DataFrame, path: Path) -> None:
    """Accuracy vs distance to the nearest zoo model, zero-shot and after the last epoch: each
    reference family's curve, the frontier, and every method as a point with its 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [frontier.epochs[0]] + ([frontier.epochs[-1]] if len(frontier.epochs) > 1 else [])
    fig, axes = plt.subplots(1, len(epochs), figsize=(8.5 * len(epochs), 7), squeeze=False)
    points = frontier.table()
    methods = summary[summary["kind"] != "frontier"]
    markers = {"sampler": "o", "baseline": "s"}
    colours = plt.get_cmap("tab20")
    for ax, epoch in zip(axes[0], epochs):
        for family, style in zip(("noise", "average", "gaussian"), ("-", "--", ":")):
            curve = points[(points["family"] == family) & (points["epoch"] == epoch)].sort_values("distance_median")
            if len(curve):
                ax.plot(curve["distance_median"], 100 * curve["accuracy_mean"], style, color="grey", marker=".",
                        label=f"reference: {family}")
        line = frontier.curve(epoch)
        ax.plot(line["distance"], 100 * line["accuracy"], color="black", linewidth=2, alpha=0.4, label="frontier")
        for i, (_, row) in enumerate(methods[methods["epoch"] == epoch].iterrows()):
            ax.errorbar(row["distance_median"], 100 * row["mean"],
                        yerr=[[100 * (row["mean"] - row["ci_low"])], [100 * (row["ci_high"] - row["mean"])]],
                        fmt=markers.get(row["kind"], "o"), color=colours(i % 20), capsize=3,
                        label=f"{row['method']}")
        ax.set_xlabel("median distance to the nearest zoo model (any neuron order), zero-shot")
        ax.set_ylabel("mean test accuracy (%), 95 % CI")
        ax.set_title("zero-shot" if epoch == 0 else f"after {epoch} fine-tuning epochs (Δ per method: report.md)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def write_report(results: list[MethodResult], summary: pd.DataFrame, out: Path, header: str,
                 frontier: Frontier | None = None, zoo_spacing: float = float("nan")) -> None:
    """report.md, report.csv, members.csv, novelty.csv, report.png (and with a frontier:
    frontier.csv and frontier.png) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.csv", lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6g"))
    members, novelty = [], []
    for r in results:
        frame = pd.DataFrame(np.where(r.evaluated, r.accuracy, np.nan), columns=[f"acc_epoch_{e}" for e in r.epochs])
        members.append(frame.assign(method=r.label, member=np.arange(len(frame))))
        novelty.append(r.novelty.assign(method=r.label, member=np.arange(len(r.novelty))))
    atomic_write(out / "members.csv", lambda tmp: pd.concat(members).to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(out / "novelty.csv", lambda tmp: pd.concat(novelty).to_csv(tmp, index=False, float_format="%.6g"))
    table_rows = summary[summary["kind"] != "frontier"]
    shown = [r for r in results if r.kind != "frontier"]
    plot_report(shown, out / "report.png")
    text = header + "\n\n" + markdown_table(table_rows)
    if frontier is not None:
        atomic_write(out / "frontier.csv", lambda tmp: frontier.table().to_csv(tmp, index=False, float_format="%.6g"))
        plot_frontier(frontier, table_rows, out / "frontier.png")
        text += "\n\n" + readings(table_rows, zoo_spacing) + "\n\n![accuracy vs distance: the frontier](frontier.png)"
    text += "\n\n![accuracy per method](report.png)\n"
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(text))


_WORKER: dict = {}


def _worker_init(zoo_path: str, train: ImageSet, test: ImageSet, config: ReportConfig, reference: ZooReference) -> None:
    """One thread per process: many small ops run best that way, and no thread ever waits for
    a sibling that a busy machine has descheduled."""
    torch.set_num_threads(1)
    _WORKER.update(zoo=Zoo.load(zoo_path), train=train, test=test, config=config, reference=reference)


def _worker_run(item: tuple[Population, str, str]) -> MethodResult:
    w = _WORKER
    return evaluate_method(*item, w["zoo"], w["train"], w["test"], w["config"], w["reference"])


def evaluate_all(
    populations: list[tuple[Population, str, str]], zoo: Zoo, train: ImageSet, test: ImageSet,
    config: ReportConfig, *, workers: int = 1, progress: Callable[[int, int], None] | None = None,
    reference: ZooReference | None = None,
) -> list[MethodResult]:
    """`evaluate_method` for every population, in `workers` single-threaded processes (1: here)."""
    reference = reference or zoo_reference(zoo, test)
    results = []
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_worker_init,
                                          initargs=(str(zoo.path), train, test, config, reference)) as pool:
            for result in pool.imap(_worker_run, populations):
                results.append(result)
                if progress is not None:
                    progress(len(results), len(populations))
        return results
    for item in populations:
        results.append(evaluate_method(*item, zoo, train, test, config, reference))
        if progress is not None:
            progress(len(results), len(populations))
    return results


def run_report(
    hyperrep_dir: Path | str, out: Path | str, *, ablation_dir: Path | str | None = None,
    config: ReportConfig | None = None, data_dir: Path | str | None = None, workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Build, fine-tune and evaluate every population and the frontier's references; write the
    report files; return the summary (frontier rows included, kind "frontier"). `hyperrep_dir` is
    ours or a paper folder: that brings its own zoo (dataset.pt), its pre-sampled populations and
    its recorded B_T (`paper_populations`, `recorded_test_split`). An ablation trained on another
    zoo is left out with a note.

    On a CPU the populations are spread over `workers` processes (default: one per core); on an
    accelerator (hyperrep.device.pick_device) they run here, one after another."""
    config = config or ReportConfig()
    config.validate()
    started = time.time()
    device = pick_device()
    hyperrep, zoo, notes = load_hyperrep_with_zoo(hyperrep_dir)
    paper = artifact_kind(hyperrep_dir) == PAPER
    train = load_fine_tune_images(zoo, config.fine_tune_images, config.seed, data_dir)
    test = load_test_images(zoo, config.test_images, data_dir)
    populations, skipped = build_populations(hyperrep, zoo, config, train=train)
    if paper:
        populations += paper_populations(hyperrep_dir, zoo, config)
    ablation = load_any_hyperrep(ablation_dir, zoo) if ablation_dir is not None else None
    if ablation is not None and any(compatibility(zoo, ablation)):
        skipped.append(f"the ablation {ablation_dir} (trained on {ablation.zoo_path}, not on the zoo in use {zoo.path})")
        ablation_dir = ablation = None
    if ablation is not None:
        more, more_skipped = build_populations(ablation, zoo, config, tag="no LWLN",
                                               baselines=False, samplers=config.ablation_samplers)
        populations, skipped = populations + more, skipped + more_skipped
    references = frontier_references(hyperrep, zoo, config)
    populations += [(ref.population, "frontier", "-") for ref in references]
    reference = zoo_reference(zoo, test)
    if device.type == "cpu":
        workers = workers or os.cpu_count() or 1
    else:
        workers, train, test = 1, train.to(device), test.to(device)
    results = evaluate_all(populations, zoo, train, test, config, workers=workers, progress=progress, reference=reference)
    aligned = zoo_test_trajectories(zoo, test, config, reference)
    if aligned is None:
        skipped.append(f"{ZOO_B_T} (the zoo has no test split saved at epochs {config.epochs})")
    recorded, why = recorded_test_split(hyperrep_dir, config) if paper else (None, None)
    skipped += [why] if why else []
    results = [r for r in (aligned, recorded) if r is not None] + results
    results.sort(key=lambda r: r.label not in BASELINES)  # B_T first: every p-value refers to it
    frontier = frontier_from_results(references, results)
    spacing = float(np.nanmedian(reference.spacing)) if np.isfinite(reference.spacing).any() else float("nan")
    summary = summarise(results, config, frontier=frontier, zoo_spacing=spacing)
    header = report_header(hyperrep, ablation_dir, zoo, config, time.time() - started, skipped, reference,
                           paper_note(notes, config) if paper else None)
    write_report(results, summary, Path(out), header, frontier, spacing)
    write_json(Path(out) / "report_config.json", {**asdict(config), "hyperrep": str(hyperrep_dir),
                                                  "ablation": str(ablation_dir) if ablation_dir else None,
                                                  "device": str(device), "workers": workers,
                                                  "seconds": round(time.time() - started, 1)})
    return summary


def paper_note(notes: tuple[str, ...], config: ReportConfig) -> str:
    """What the header says about a paper folder's zoo and its own rows."""
    imported = notes[0] if notes else "its dataset.pt"
    return (f"A paper hyper-representation folder: its zoo is {imported}. Rows tagged 'paper' are the authors' "
            f"pre-sampled populations (samples/<method>/, the first {config.models_per_method} checkpoints of each; "
            f"its direct/ folder holds zoo models, its B_F), evaluated and fine-tuned like the samplers; {PAPER_B_T} = "
            "the test-split accuracies recorded in zoos/<dataset>/zoo_testsplit.pt at the same epochs, on the whole "
            "test set and not re-evaluated (the file holds no weights: no distances, ensembles or IoU); its epochs are "
            "passes over the paper's whole training split, not over the fine-tuning images here.")


def report_header(hyperrep, ablation_dir, zoo: Zoo, config: ReportConfig, seconds: float, skipped: list[str],
                  reference: ZooReference, paper: str | None = None) -> str:
    epochs = "/".join(map(str, config.epochs))
    settings = zoo_training_settings(zoo)
    tuned = "all" if config.fine_tune_models is None else f"the first {config.fine_tune_models}"
    spacing = reference.spacing[np.isfinite(reference.spacing)]
    frontier = config.frontier_settings()
    return "\n".join([
        "# Sampling methods vs baselines",
        "",
        f"Hyper-representation `{hyperrep.path}` (latent dim {hyperrep.model.latent_dim}) of zoo `{zoo.name}` "
        f"({zoo.n_models} {zoo.architecture.name} models, {zoo.activation})"
        + (f"; ablation without LWLN `{ablation_dir}`." if ablation_dir else "."),
        *([paper] if paper else []),
        f"{config.models_per_method} models per method, seed {config.seed}; anchors: top "
        f"{config.anchor_fraction:.0%} of the hyper-representation's train rows by test accuracy. Every member is "
        f"evaluated zero-shot; {tuned} of each method are fine-tuned on {config.fine_tune_images} training images "
        f"({settings.optimizer}, lr {settings.lr:.2g}, batch {settings.batch_size}). Evaluated on the first "
        f"{config.test_images} test images at epochs {epochs}.",
        f"Baselines: {ZOO_B_T} = the zoo's test-split models trained from scratch, read at the same epochs (the paper's "
        f"B_T); {RETRAINED_B_T} = fresh initialisations drawn as the zoo's build drew them, fine-tuned like the samples; "
        "B_F = models drawn from the anchors' pool (at epoch 0 the anchors themselves, the samplers' fair reference), "
        "fine-tuned; the anchors are also the frontier's point at distance 0 (frontier.csv); reconstructed = decode(encode(anchor)). S_guided = latents of its base sampler refined by "
        f"{config.guided_steps} Adam steps (size {config.guided_step_size:g}) of the task loss through the frozen decoder on "
        f"{config.guided_images} training images; '+ weight steps (equal cost)' = the same steps on the same images taken "
        f"on the decoded start weights (lr {settings.lr:.2g}"
        + ("; a row marked 'lr x': at learning rate x" if config.guided_weight_step_sizes else "")
        + "). Samplers are named by the paper's name and the registry "
        "name (`hyperrep.sampling.SAMPLERS`); kde_legacy is the published S_KDE (near-copies of anchors).",
        f"Frontier (`hyperrep.frontier`, {frontier.models} models per reference): noise on the anchors at σ = "
        f"{', '.join(f'{s:g}' for s in frontier.sigmas)}; averages of k = {', '.join(map(str, frontier.average_sizes))} "
        f"random anchors; a per-coordinate Gaussian fitted to the anchors' weights at scales "
        f"{', '.join(f'{s:g}' for s in frontier.gaussian_scales)}. Each reference is a point (median zero-shot distance, "
        "mean accuracy), each family a piecewise-linear curve, the frontier their upper envelope. Δ = a method's mean "
        "accuracy minus the frontier's at the method's median zero-shot distance, at the same fine-tuning epoch; its "
        "95 % CI is a percentile bootstrap over the members of the method and of every reference (frontier.csv, "
        "frontier.png).",
        "Cells: mean ± std [bootstrap 95 % CI of the mean] of test accuracy in %. p: two-sided Mann-Whitney U against "
        "B_T (the zoo's test split; else a paper folder's recorded one; else the re-trained one) at the same epoch, "
        "Holm-corrected over every test in the table; 'sep.' = complete separation: every member on one side of every B_T member, where p sits at the "
        "smallest value the sample sizes allow and says nothing more (report.csv: p_vs_B_T, p_floor, p_holm, "
        f"separated, above_B_T). Ensembles: mean accuracy of disjoint {config.ensemble_size}-member ensembles "
        "(averaged softmax) of the fine-tuned members.",
        "Distance: median L2 distance of the zero-shot weights to the nearest zoo model (any saved epoch, any neuron "
        "order: plain, canonical, or matched layer by layer), and in brackets that over the zoo's own median "
        "nearest-neighbour distance"
        + (f" ({np.median(spacing):.2f}; {spacing.min():.2f}–{spacing.max():.2f} over its train models at the last epoch)."
           if len(spacing) else "."),
        "IoU: median overlap of misclassified test images with the nearest zoo model / the largest over every zoo "
        "model (1 = the same mistakes). Invalid: members with NaN/inf weights or logits, excluded from the statistics.",
        *([f"Skipped: {'; '.join(skipped)}."] if skipped else []),
        f"Generated by `hyperrep report` in {seconds / 60:.1f} min.",
    ])

# -- the README block ------------------------------------------------------------------------


README_START = "<!-- report:start"
README_END = "<!-- report:end -->"


def readme_block(report_md: Path | str, readme_dir: Path | str) -> str:
    """What the README shows between its report markers: report.md's table, its generated
    readings and the frontier plot (linked relative to `readme_dir`)."""
    report_md = Path(report_md)
    lines = report_md.read_text().splitlines()
    block = [line for line in lines if line.startswith("|")]
    if any(line.startswith(READINGS_START) for line in lines):
        first = next(i for i, line in enumerate(lines) if line.startswith(READINGS_START))
        rest = lines[first + 1:]
        block += ["", lines[first], *rest[: next((i for i, line in enumerate(rest) if not line.startswith("- ")), len(rest))]]
    plot = report_md.parent / "frontier.png"
    if any(line.startswith("![accuracy vs distance") for line in lines):
        link = Path(os.path.relpath(plot, Path(readme_dir))).as_posix()
        block += ["", f"![accuracy vs distance: the frontier]({link})"]
    return "\n".join(block)


def update_readme(readme: Path | str, report_md: Path | str) -> None:
    """Replace what lies between the README's report markers with `readme_block` of `report_md`."""
    readme, report_md = Path(readme), Path(report_md)
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no '{README_START} ... {README_END}' markers to write the table between")
    head = text[: text.index("\n", start) + 1]
    block = readme_block(report_md, readme.parent)
    atomic_write(readme, lambda tmp: tmp.write_text(head + block + "\n" + text[end:]))


def readme_report_block(readme: Path | str) -> str:
    """The text between the README's report markers (without the marker lines)."""
    text = Path(readme).read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no '{README_START} ... {README_END}' markers")
    return text[text.index("\n", start) + 1: end].rstrip("\n")
