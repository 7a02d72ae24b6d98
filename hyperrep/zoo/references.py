"""What rebuilding a zoo's held-out models takes, measured without any latent: the train split's
mean model, the nearest train model, and PCA fitted on the train split (the linear ceiling).

On a zoo whose models share a start these references are already good (the models live in one
basin); on a seed zoo they sit near chance, which is the lesson the app shows and the figures
the seed-zoo pilot (bench/zoo_design_pilot.py) sizes the full build with.

    figures = zoo_references(zoo, epochs=[25], images=test_images)
    figures["mean_model"]["acc_reconstructed"], figures["nearest"]["prediction_agreement"],
    figures["pca"][32]["acc_ratio"], figures["nearest"]["distance_ratio"]
"""

from __future__ import annotations

import numpy as np
import torch

from hyperrep.images.datasets import ImageSet
from hyperrep.nets.cnn import Architecture
from hyperrep.nets.permutations import canonicalize
from hyperrep.nets.population import Evaluation, evaluate_population
from hyperrep.nets.weight_stats import parameter_sigmas, r_squared
from hyperrep.zoo.format import Zoo

QUALITY_THRESHOLD = 0.5  # models above this accuracy count for the reconstruction-quality ratio


def accuracy_figures(original: Evaluation, rebuilt: Evaluation) -> dict:
    """Mean accuracies; for models above QUALITY_THRESHOLD the mean ratio rebuilt/original; and
    whether per-model differences survive: accuracy correlation and per-image prediction agreement."""
    before, after = original.accuracy, np.nan_to_num(rebuilt.accuracy, nan=0.0)  # non-finite = wrong
    good = before > QUALITY_THRESHOLD
    ratio = after[good] / before[good]
    spread = len(np.unique(before)) > 1 and len(np.unique(after)) > 1
    return {
        "acc_original": float(before.mean()),
        "acc_reconstructed": float(after.mean()),
        "models": int(len(before)),
        "models_above_threshold": int(good.sum()),
        "acc_ratio_above_threshold": float(ratio.mean()) if good.any() else None,
        "share_above_90pct": float((ratio >= 0.9).mean()) if good.any() else None,
        "acc_correlation": float(np.corrcoef(before, after)[0, 1]) if spread else None,
        "prediction_agreement": float((original.predictions == rebuilt.predictions).float().mean()),
    }


def pca_rebuilds(arch: Architecture, train: torch.Tensor, test: torch.Tensor, counts):
    """Yield (components, rebuilt test weights) for PCA fitted on the σ-scaled train weights;
    a count above what the train split spans is cut to its rank (len(train) - 1)."""
    mean, sigma = train.mean(dim=0), parameter_sigmas(arch, train).clamp_min(1e-8)
    _, _, basis = torch.linalg.svd((train - mean) / sigma, full_matrices=False)
    for components in counts:
        top = basis[: min(components, max(len(train) - 1, 1))]
        yield components, (((test - mean) / sigma) @ top.T @ top) * sigma + mean


def _figures(arch: Architecture, activation: str, original: Evaluation, rebuilt: torch.Tensor | Evaluation,
             images: ImageSet) -> dict:
    """accuracy_figures of rebuilt (weights, or their metrics) vs original, plus the ratio of their
    mean accuracies and the share of the originals' accuracy above chance that the rebuilds keep
    (both defined even when no model is above the 50 % threshold; the second is 0 at chance)."""
    if isinstance(rebuilt, torch.Tensor):
        rebuilt = evaluate_population(arch, activation, rebuilt, images, keep_predictions=True)
    figures = accuracy_figures(original, rebuilt)
    chance = 1 / arch.layers[-1].out_features
    figures["acc_ratio"] = figures["acc_reconstructed"] / max(figures["acc_original"], 1e-12)
    figures["kept_above_chance"] = (figures["acc_reconstructed"] - chance) / max(figures["acc_original"] - chance, 1e-12)
    return figures


def mean_model_figures(arch: Architecture, activation: str, mean: torch.Tensor, original: Evaluation,
                       images: ImageSet) -> dict:
    """`_figures` of one model (the mean weight vector [P]) standing in for every original."""
    metrics = evaluate_population(arch, activation, mean[None], images, keep_predictions=True)
    return _figures(arch, activation, original, metrics.repeated(len(original.accuracy)), images)


def references(arch: Architecture, activation: str, train: torch.Tensor, test: torch.Tensor, images: ImageSet,
               components=(8, 32), canonical: bool = True, original: Evaluation | None = None) -> dict:
    """Rebuild `test` [n, P] from `train` [m, P] without a latent, three ways, and score each
    against the originals on `images` (accuracy ratio, agreement, correlation; R² for PCA).
    `original`: the test models' metrics with predictions on `images`, when already computed."""
    if original is None:
        original = evaluate_population(arch, activation, test, images, keep_predictions=True)
    mean = train.mean(dim=0)
    distances = torch.cdist(test, train)
    closest = distances.min(dim=1)
    out = {
        "train_states": len(train), "test_states": len(test), "test_acc": float(np.nanmean(original.accuracy)),
        "mean_model": mean_model_figures(arch, activation, mean, original, images),
        "nearest": _figures(arch, activation, original, train[closest.indices], images),
        "pca": {}, "pca_canonical": {},
    }
    out["mean_model"]["rsq"] = 0.0
    out["nearest"].update(
        rsq=r_squared(train[closest.indices], test, mean),
        distance=float(closest.values.median()),
        # nearest / median distance to the train models: near 1 when no train model is closer than the rest
        distance_ratio=float((closest.values / distances.median(dim=1).values.clamp_min(1e-12)).mean()),
    )
    for name, (fit, held) in {"pca": (train, test),
                              "pca_canonical": (canonicalize(arch, train), canonicalize(arch, test))}.items():
        if name == "pca_canonical" and not canonical:
            continue
        for count, rebuilt in pca_rebuilds(arch, fit, held, components):
            figures = _figures(arch, activation, original, rebuilt, images)
            figures["rsq"] = r_squared(rebuilt, held, fit.mean(dim=0))
            out[name][count] = figures
    return out


def init_cosine(zoo: Zoo, epoch: int) -> float | None:
    """Median cosine between each model's weights at `epoch` and at epoch 0 (None without epoch 0)."""
    if 0 not in zoo.epochs:
        return None
    first, later = zoo.weights[:, zoo.epoch_position(0)], zoo.weights[:, zoo.epoch_position(epoch)]
    return float(torch.nn.functional.cosine_similarity(first, later, dim=1).median())


def zoo_references(zoo: Zoo, epochs: list[int], images: ImageSet, components=(8, 32), *,
                   train_models: int | None = None, canonical: bool = True) -> dict:
    """`references` for the zoo's test split rebuilt from its train split at the given saved
    epochs (optionally from only the first `train_models` train models)."""
    train_ids = zoo.splits["train"][:train_models] if train_models else zoo.splits["train"]
    if not train_ids or not zoo.splits["test"]:
        raise ValueError(f"zoo {zoo.name} needs models in its train and test splits")
    rows = zoo.rows_of(train_ids)
    columns = [zoo.epoch_position(e) for e in epochs]
    train = zoo.weights[rows][:, columns].reshape(-1, zoo.architecture.n_params)
    test, _ = zoo.samples("test", epochs)
    out = references(zoo.architecture, zoo.activation, train, test, images, components, canonical)
    out["init_cosine"] = init_cosine(zoo, epochs[-1])
    return out
