"""The accuracy–novelty frontier: how accurate can a model be at a given distance from the zoo
without a generative model?

Zeng et al. ("Generative Modeling of Weights: Generalization or Memorization?") compare
generated models with simple references at the same distance from the training models. Here the
references are populations built from the anchors: the anchors themselves (distance 0),
Gaussian noise on the anchors at a sweep of σ, averages of k random anchors, and a
per-coordinate Gaussian fitted to the anchors at a sweep of scales. Each reference population
is a point (median distance to the nearest zoo model, mean accuracy); each family's points,
sorted by distance, form a piecewise-linear curve, and the frontier at a distance is the best
curve there. A sampler's Δ is its mean accuracy minus the frontier's at its median distance,
with a bootstrap 95 % CI that resamples the sampler's members and every reference population's.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from hyperrep.evaluation.novelty import mistake_overlap, nearest_reference
from hyperrep.images.datasets import ImageSet
from hyperrep.nets.cnn import Architecture
from hyperrep.nets.population import evaluate_population
from hyperrep.sampling.baselines import cycling_order, noise_baseline
from hyperrep.sampling.population import Population

FAMILIES = ("noise", "average", "gaussian")


@dataclass
class FrontierSettings:
    """The sweep of reference populations (the default σ span distances 0 to ~16 on CNN-s: past
    every sampler and fresh initialisations on the default zoo)."""

    sigmas: list[float] = field(default_factory=lambda: [0.01, 0.02, 0.04, 0.06, 0.09, 0.13, 0.18, 0.25, 0.32])
    average_sizes: list[int] = field(default_factory=lambda: [2, 4, 8, 16])
    gaussian_scales: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    models: int = 50  # members of each reference population

    def validate(self) -> None:
        if self.models < 2:
            raise ValueError(f"frontier models must be >= 2, got {self.models}")
        if any(s <= 0 for s in self.sigmas) or any(s <= 0 for s in self.gaussian_scales):
            raise ValueError("frontier sigmas and gaussian scales must be > 0")
        if any(k < 2 for k in self.average_sizes):
            raise ValueError(f"average sizes must be >= 2 (k models per average), got {self.average_sizes}")


# -- reference populations ----------------------------------------------------------------------


@dataclass
class Reference:
    """One reference population: its family and level (σ, k or scale) and the population."""

    family: str
    level: float
    population: Population


def anchors_population(anchors: torch.Tensor, n: int, seed: int) -> Population:
    """`n` anchors (seeded, each used once before any repeats): the frontier at distance 0."""
    order = cycling_order(len(anchors), n, torch.Generator().manual_seed(seed))
    members = pd.DataFrame({"member": np.arange(n), "anchor": order.numpy()})
    return Population("anchors", anchors[order].clone(), members)


def average_population(anchors: torch.Tensor, k: int, n: int, seed: int) -> Population:
    """`n` averages of `k` distinct random anchors each (seeded)."""
    if k > len(anchors):
        raise ValueError(f"averages of {k} anchors need at least {k} anchors, got {len(anchors)}")
    generator = torch.Generator().manual_seed(seed)
    picks = torch.stack([torch.randperm(len(anchors), generator=generator)[:k] for _ in range(n)])
    members = pd.DataFrame({"member": np.arange(n), "k": k})
    return Population(f"average of {k}", anchors[picks].mean(dim=1), members)


def gaussian_population(anchors: torch.Tensor, scale: float, n: int, seed: int) -> Population:
    """`n` draws of mean + scale * std * N(0, 1), per coordinate, fitted to the anchors' weights."""
    if len(anchors) < 2:
        raise ValueError(f"a Gaussian fitted to the anchors needs at least 2 anchors, got {len(anchors)}")
    generator = torch.Generator().manual_seed(seed)
    mean, std = anchors.mean(dim=0), anchors.std(dim=0)
    weights = mean + scale * std * torch.randn(n, anchors.shape[1], generator=generator)
    members = pd.DataFrame({"member": np.arange(n), "scale": scale})
    return Population(f"weight Gaussian ×{scale:g}", weights, members)


def reference_populations(anchors: torch.Tensor, settings: FrontierSettings, seed: int) -> list[Reference]:
    """Every reference population of the sweep, from anchor weights [A, P]: anchors (noise at
    σ = 0), noise at each σ, averages of each k (k <= A), the weight Gaussian at each scale."""
    settings.validate()
    n = settings.models
    out = [Reference("noise", 0.0, anchors_population(anchors, n, seed))]
    for sigma in settings.sigmas:
        noisy = noise_baseline(anchors, sigma, n, seed)
        noisy.label = f"noise σ={sigma:g}"
        out.append(Reference("noise", sigma, noisy))
    out += [Reference("average", k, average_population(anchors, k, n, seed))
            for k in settings.average_sizes if k <= len(anchors)]
    if len(anchors) >= 2:
        out += [Reference("gaussian", s, gaussian_population(anchors, s, n, seed)) for s in settings.gaussian_scales]
    return out


# -- numbers per population ---------------------------------------------------------------------


def zoo_neighbour_distances(arch: Architecture, weights: torch.Tensor, model_ids: np.ndarray,
                            reference: torch.Tensor, reference_ids: np.ndarray) -> np.ndarray:
    """For each zoo model (weights [n, P] with their model ids): the distance to the nearest
    reference row of another model (any epoch, any neuron order): the zoo's own spacing, the
    scale in which a sample's distance reads as near or far."""
    excluded = torch.as_tensor(np.asarray(model_ids)[:, None] == np.asarray(reference_ids)[None, :])
    distance, _ = nearest_reference(arch, weights, reference, excluded=excluded)
    return distance


# -- the frontier ---------------------------------------------------------------------------------


@dataclass
class FrontierPoint:
    """One reference population's members: zero-shot distance [M], accuracy [M, epochs], IoU [M]."""

    family: str
    level: float
    label: str
    distance: np.ndarray
    accuracy: np.ndarray
    iou: np.ndarray


@dataclass
class Frontier:
    """Reference points (all evaluated at the same `epochs` of fine-tuning) and the curves they form."""

    points: list[FrontierPoint]
    epochs: list[int]

    def __post_init__(self) -> None:
        for p in self.points:
            if p.accuracy.ndim != 2 or p.accuracy.shape != (len(p.distance), len(self.epochs)):
                raise ValueError(f"frontier point {p.label!r}: accuracy {p.accuracy.shape} does not match "
                                 f"{len(p.distance)} members x {len(self.epochs)} epochs")

    def table(self) -> pd.DataFrame:
        """One row per reference point and epoch: family, level, median distance, mean accuracy, median IoU."""
        rows = []
        for p in self.points:
            for i, epoch in enumerate(self.epochs):
                rows.append({"family": p.family, "level": p.level, "label": p.label, "epoch": epoch,
                             "models": len(p.distance), "distance_median": _nanmedian(p.distance),
                             "accuracy_mean": _nanmean(p.accuracy[:, i]), "iou_max_median": _nanmedian(p.iou)})
        return pd.DataFrame(rows)

    def accuracy_at(self, distance: float, epoch: int) -> float:
        """The frontier's accuracy at `distance` and fine-tuning `epoch` (NaN outside every curve)."""
        i = self.epochs.index(epoch)
        summary = [(p.family, _nanmedian(p.distance), _nanmean(p.accuracy[:, i])) for p in self.points]
        return _envelope(summary, np.array([distance]))[0]

    def curve(self, epoch: int, grid: np.ndarray | None = None) -> pd.DataFrame:
        """The frontier (upper envelope of the family curves) on a distance grid, for plotting."""
        i = self.epochs.index(epoch)
        summary = [(p.family, _nanmedian(p.distance), _nanmean(p.accuracy[:, i])) for p in self.points]
        if grid is None:
            far = max(d for _, d, _ in summary if np.isfinite(d))
            grid = np.linspace(0.0, far, 200)
        return pd.DataFrame({"distance": grid, "accuracy": _envelope(summary, grid)})

    def delta(self, distance: np.ndarray, accuracy: np.ndarray, *, resamples: int = 2_000,
              seed: int = 42, family: int = 1) -> pd.DataFrame:
        """Δ = mean accuracy − the frontier's at the median distance, per epoch, for a population
        with zero-shot distances [M] and accuracies [M, epochs]; columns epoch, distance,
        frontier_accuracy, delta, delta_lo, delta_hi (percentile bootstrap 95 % CI over members of
        the population and of every reference point), delta_fw_lo/hi (the CI at 1 − 0.05/`family`:
        family-wise 95 % over `family` such intervals, Bonferroni) and delta_p (two-sided bootstrap p of Δ = 0)."""
        accuracy = self._check(distance, accuracy)
        rng = np.random.default_rng(seed)
        boot_distance, boot_accuracy = _bootstrap_population(distance, accuracy, resamples, rng)
        boot_points = [_bootstrap_population(p.distance, p.accuracy, resamples, rng) for p in self.points]
        rows = []
        for i, epoch in enumerate(self.epochs):
            frontier = self.accuracy_at(_nanmedian(distance), epoch)
            draws = boot_accuracy[:, i] - self._boot_envelope(boot_points, boot_distance, i)
            rows.append({"epoch": epoch, "distance": _nanmedian(distance), "frontier_accuracy": frontier,
                         "delta": _nanmean(accuracy[:, i]) - frontier, **_interval(draws, resamples, family, "delta")})
        return pd.DataFrame(rows)

    def delta_difference(self, a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], *,
                         resamples: int = 2_000, seed: int = 42) -> pd.DataFrame:
        """Δ(a) − Δ(b) per epoch for two populations given as (distance [M], accuracy [M, epochs]),
        with a bootstrap 95 % CI in which both share each resample of the references (and of the
        members, paired by index, when the two have the same members count: the same starts)."""
        (da, aa), (db, ab) = (a[0], self._check(*a)), (b[0], self._check(*b))
        rng = np.random.default_rng(seed)
        paired = len(da) == len(db)
        index_a = rng.integers(len(da), size=(resamples, len(da)))
        index_b = index_a if paired else rng.integers(len(db), size=(resamples, len(db)))
        boot_points = [_bootstrap_population(p.distance, p.accuracy, resamples, rng) for p in self.points]
        rows = []
        for i, epoch in enumerate(self.epochs):
            value = ((_nanmean(aa[:, i]) - self.accuracy_at(_nanmedian(da), epoch))
                     - (_nanmean(ab[:, i]) - self.accuracy_at(_nanmedian(db), epoch)))
            draws = []
            for index, d, acc in ((index_a, da, aa), (index_b, db, ab)):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    distance, mean = np.nanmedian(d[index], axis=1), np.nanmean(acc[:, i][index], axis=1)
                draws.append(mean - self._boot_envelope(boot_points, distance, i))
            rows.append({"epoch": epoch, "difference": value, **_interval(draws[0] - draws[1], resamples, 1, "difference")})
        return pd.DataFrame(rows)

    def _check(self, distance: np.ndarray, accuracy: np.ndarray) -> np.ndarray:
        accuracy = np.asarray(accuracy, dtype=np.float64).reshape(len(distance), -1)
        if accuracy.shape[1] != len(self.epochs):
            raise ValueError(f"accuracy has {accuracy.shape[1]} epochs, the frontier {len(self.epochs)}")
        return accuracy

    def _boot_envelope(self, boot_points, boot_distance: np.ndarray, i: int) -> np.ndarray:
        """The frontier of each resample of the references at that resample's distance."""
        return np.array([_envelope([(p.family, d[b], a[b, i]) for p, (d, a) in zip(self.points, boot_points)],
                                   np.array([boot_distance[b]]))[0] for b in range(len(boot_distance))])


def _interval(draws: np.ndarray, resamples: int, family: int, name: str) -> dict:
    """The 95 % and the family-wise (Bonferroni over `family`) percentile intervals of bootstrap
    draws, and the two-sided bootstrap p of 0 (NaN when under 90 % of the draws are finite)."""
    draws = draws[np.isfinite(draws)]
    if len(draws) < 0.9 * resamples:
        return {f"{name}_lo": np.nan, f"{name}_hi": np.nan, f"{name}_fw_lo": np.nan, f"{name}_fw_hi": np.nan,
                f"{name}_p": np.nan}
    alpha = 0.05 / max(family, 1)
    low, high = np.percentile(draws, [2.5, 97.5])
    fw_low, fw_high = np.percentile(draws, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    p = min(1.0, 2 * min((draws <= 0).mean(), (draws >= 0).mean()) + 1 / len(draws))
    return {f"{name}_lo": float(low), f"{name}_hi": float(high), f"{name}_fw_lo": float(fw_low),
            f"{name}_fw_hi": float(fw_high), f"{name}_p": float(p)}


def verdict(low: float, high: float) -> str:
    """What a Δ's 95 % CI [low, high] carries, in words: above, below, or not distinguishable."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no frontier at that distance"
    if low > 0:
        return "above the frontier"
    if high < 0:
        return "below the frontier"
    return "not distinguishable from the frontier (the CI holds 0)"


def delta_statement(delta, images: int) -> str:
    """A sample's Δ (a row of `Frontier.delta`) with its CI in words that claim no more than the
    CI carries, zero-shot on the first `images` test images (the app's panel, `hyperrep sample --compare`)."""
    if not np.isfinite(delta["delta"]):
        return "No frontier reference reaches the samples' distance, so there is no Δ to state."
    low, high = 100 * delta["delta_lo"], 100 * delta["delta_hi"]
    return (f"Δ = {100 * delta['delta']:+.1f} pp [95 % CI {low:+.1f}, {high:+.1f}]: the samples' mean accuracy minus "
            f"the frontier's ({delta['frontier_accuracy']:.1%}) at their median distance {delta['distance']:.3g}, "
            f"zero-shot on the first {images:,} images: {verdict(delta['delta_lo'], delta['delta_hi'])}. The frontier "
            "is the best of noise on these anchors, averages of k of them and a Gaussian fitted to their weights, at "
            "the same distance from the zoo.")


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values[np.isfinite(values)].mean()) if np.isfinite(values).any() else float("nan")


def _nanmedian(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")


def _bootstrap_population(distance: np.ndarray, accuracy: np.ndarray, resamples: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per resample of the members (with replacement): median distance [B] and mean accuracy [B, E]."""
    distance = np.asarray(distance, dtype=np.float64)
    index = rng.integers(len(distance), size=(resamples, len(distance)))
    with warnings.catch_warnings():  # a resample of only non-finite members is NaN, and says so
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(distance[index], axis=1)
        means = np.nanmean(accuracy[index], axis=1)
    return medians, means


def _envelope(summary: list[tuple[str, float, float]], grid: np.ndarray) -> np.ndarray:
    """The highest of the family curves at each grid distance; each family's curve is the linear
    interpolation of its (distance, accuracy) points sorted by distance, defined only between its
    nearest and farthest point. NaN where no family covers a distance."""
    best = np.full(len(grid), -np.inf)
    for family in dict.fromkeys(f for f, _, _ in summary):
        points = sorted((d, a) for f, d, a in summary if f == family and np.isfinite(d) and np.isfinite(a))
        if not points:
            continue
        d, a = np.array(points).T
        inside = (grid >= d[0]) & (grid <= d[-1])
        best[inside] = np.maximum(best[inside], np.interp(grid[inside], d, a))
    best[~np.isfinite(best)] = np.nan
    return best


def zero_shot_frontier(arch: Architecture, activation: str, anchors: torch.Tensor, reference: torch.Tensor,
                       data: ImageSet, settings: FrontierSettings, seed: int, *,
                       reference_predictions: torch.Tensor | None = None) -> Frontier:
    """The frontier (epoch 0 only) of anchor weights [A, P] on `data`: every reference population
    evaluated, its distance to the nearest row of `reference` (the zoo) measured, and, when the
    zoo's predictions on `data` are given, its largest mistake overlap with any zoo model."""
    points = []
    for ref in reference_populations(anchors, settings, seed):
        weights = ref.population.weights
        evaluation = evaluate_population(arch, activation, weights, data, keep_predictions=reference_predictions is not None)
        distance, _ = nearest_reference(arch, weights, reference)
        iou = (mistake_overlap(evaluation.predictions, reference_predictions, data.labels)[0]
               if reference_predictions is not None else np.full(len(weights), np.nan))
        points.append(FrontierPoint(ref.family, ref.level, ref.population.label, distance, evaluation.accuracy[:, None], iou))
    return Frontier(points, [0])
