"""How faithfully a hyper-representation rebuilds held-out models, against a lookup of the nearest
training model, with 95 % bootstrap CIs over models (each model's saved epochs count as one).

In a seed zoo every trained model scores about the same, so the accuracy ratio alone cannot tell
a rebuild from any other model: prediction agreement with the original (the share of images on
which the two predict the same class) and R² are the figures that decide.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from hyperrep.ae.artifact import HyperRep, reconstruct_weights
from hyperrep.evaluation.statistics import bootstrap_ci
from hyperrep.images.datasets import ImageSet
from hyperrep.nets.population import evaluate_population
from hyperrep.nets.weight_stats import r_squared
from hyperrep.zoo.format import Zoo


def per_state_figures(original, other) -> dict[str, np.ndarray]:
    """Agreement with the original and accuracy ratio, one value per state."""
    agreement = (original.predictions == other.predictions).float().mean(dim=1).numpy()
    ratio = np.nan_to_num(other.accuracy, nan=0.0) / np.maximum(original.accuracy, 1e-12)
    return {"agreement": agreement, "ratio": ratio}


def per_model_means(values: np.ndarray, model_ids: pd.Series) -> np.ndarray:
    """The mean of each model's states (the unit a bootstrap resamples)."""
    return pd.Series(values).groupby(model_ids.to_numpy()).mean().to_numpy()


def heldout_reconstruction(hyperrep: HyperRep, zoo: Zoo, images: ImageSet, split: str = "test",
                           resamples: int = 2000, seed: int = 42) -> dict:
    """Mean and 95 % CI of agreement and accuracy ratio of the rebuilt `split` models, of their
    nearest training models (L2, at the trained epochs), and of the paired difference; and both R²."""
    epochs = hyperrep.config.get("zoo_epochs") or zoo.epochs
    model, arch, activation = hyperrep.model, zoo.architecture, zoo.activation
    held, table = zoo.samples(split, epochs)
    train = model.comparable(zoo.samples("train", epochs)[0])
    target = model.comparable(held)  # the neuron order the decoder produces (the same functions)
    rebuilt = reconstruct_weights(model, held)
    nearest = train[torch.cdist(target, train).argmin(dim=1)]
    evaluate = lambda w: evaluate_population(arch, activation, w, images, keep_predictions=True)  # noqa: E731
    original = evaluate(held)
    figures = {"rebuilt": per_state_figures(original, evaluate(rebuilt)),
               "nearest": per_state_figures(original, evaluate(nearest))}
    mean = train.mean(dim=0)
    out = {"split": split, "states": len(held), "models": int(table["model_id"].nunique()), "images": len(images),
           "rsq": {"rebuilt": r_squared(rebuilt, target, mean), "nearest": r_squared(nearest, target, mean)}}
    for key in ("agreement", "ratio"):
        rebuilt_means, nearest_means = (per_model_means(figures[name][key], table["model_id"])
                                        for name in ("rebuilt", "nearest"))
        out[key] = {name: (float(values.mean()), *bootstrap_ci(values, resamples, seed)) for name, values in
                    {"rebuilt": rebuilt_means, "nearest": nearest_means,
                     "rebuilt_minus_nearest": rebuilt_means - nearest_means}.items()}
    return out


def heldout_lines(found: dict) -> list[str]:
    """`heldout_reconstruction` as plain lines (the CLI's and the bench's print-out)."""
    lines = [f"{found['split']}: {found['models']} models ({found['states']} states), {found['images']} images; "
             f"R² rebuilt {found['rsq']['rebuilt']:.3f}, nearest train model {found['rsq']['nearest']:.3f}"]
    for key, name in (("agreement", "prediction agreement"), ("ratio", "accuracy ratio")):
        cells = [f"{label} {m:.3f} [{lo:.3f}, {hi:.3f}]" for label, (m, lo, hi) in
                 zip(("rebuilt", "nearest train", "rebuilt − nearest"), found[key].values())]
        lines.append(f"  {name}: " + "; ".join(cells))
    return lines
