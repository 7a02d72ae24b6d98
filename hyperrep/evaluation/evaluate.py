"""Numbers for a population of CNNs: accuracy, loss, predictions, ensembles, fine-tuning curves.

Everything runs through population.evaluate_population / train_population (the one
implementation of evaluating and training many CNNs given as flat vectors, and its one result
type, `Evaluation`). Members whose
weights or logits are NaN/inf are reported (`finite` False, accuracy NaN) and left out of every
statistic; they never stop an evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hyperrep.ae.artifact import decode_latents
from hyperrep.images.datasets import ImageSet
from hyperrep.nets.cnn import Architecture, population_forward
from hyperrep.nets.population import Evaluation, evaluate_population, train_population
from hyperrep.runtime import cores


def extend_evaluation(
    arch: Architecture, activation: str, weights: torch.Tensor, data: ImageSet, first: Evaluation, n_first: int,
    *, progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """The evaluation on all of `data`, given `first` on its first `n_first` images: only the
    remaining images are run (the app's full numbers after its first estimate)."""
    rest = evaluate_population(arch, activation, weights, data.subset(torch.arange(n_first, len(data))), progress=progress)
    share = n_first / max(len(data), 1)
    return Evaluation(share * first.accuracy + (1 - share) * rest.accuracy, share * first.loss + (1 - share) * rest.loss,
                      first.finite & rest.finite)


def evaluate_latents(
    model, latents: torch.Tensor, activation: str, data: ImageSet, *, keep_predictions: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[torch.Tensor, Evaluation]:
    """Decode latents [n, L] with the hyper-representation and evaluate the decoded weights."""
    weights = decode_latents(model, latents)
    return weights, evaluate_population(model.arch, activation, weights, data, keep_predictions=keep_predictions, progress=progress)


# -- ensembles --------------------------------------------------------------------------------


def ensemble_accuracy(
    arch: Architecture, activation: str, members: torch.Tensor, data: ImageSet, *,
    combine: str = "softmax", image_chunk: int = 1000,
) -> float:
    """Accuracy of one ensemble: the argmax of the averaged softmax (or logits) of its members."""
    if combine not in ("softmax", "logits"):
        raise ValueError(f"combine must be 'softmax' or 'logits', got {combine!r}")
    arch.check_vector(members)
    if len(members) == 0 or not torch.isfinite(members).all():
        return float("nan")
    correct = 0
    block = members.to(device=data.images.device, dtype=torch.float32)
    with torch.no_grad(), cores.job():
        for start in range(0, len(data), image_chunk):
            with cores.turn():  # one image chunk per turn (hyperrep.runtime.cores)
                logits = population_forward(arch, activation, block, data.images[start: start + image_chunk])
            scores = F.softmax(logits, dim=2) if combine == "softmax" else logits
            mean = scores.mean(dim=0)
            if not torch.isfinite(mean).all():
                return float("nan")
            correct += int((mean.argmax(dim=1) == data.labels[start: start + image_chunk]).sum())
    return correct / max(len(data), 1)


def ensemble_accuracies(
    arch: Architecture, activation: str, weights: torch.Tensor, data: ImageSet, *, size: int = 5,
    seed: int = 0, finite: np.ndarray | None = None, combine: str = "softmax",
) -> np.ndarray:
    """Accuracies of disjoint random ensembles of `size` finite members each (seeded), so every
    member is evaluated once; [] when fewer than `size` members are finite."""
    usable = np.flatnonzero(torch.isfinite(weights).all(dim=1).numpy() if finite is None else finite)
    order = np.random.default_rng(seed).permutation(usable)
    groups = [order[i: i + size] for i in range(0, len(order) - size + 1, size)]
    return np.array([ensemble_accuracy(arch, activation, weights[torch.as_tensor(g)], data, combine=combine)
                     for g in groups])


# -- fine-tuning ------------------------------------------------------------------------------


@dataclass
class TrainingSettings:
    """Optimiser settings for fine-tuning (by default the zoo's own)."""

    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.0


def zoo_training_settings(zoo) -> TrainingSettings:
    """The zoo build's optimiser, batch size and weight decay; a learning-rate range [low, high]
    becomes its geometric mean, so every member is fine-tuned with the same rate."""
    build = zoo.manifest.get("build", {})
    lr = build.get("learning_rate", TrainingSettings.lr)
    if isinstance(lr, (list, tuple)):
        lr = math.sqrt(float(lr[0]) * float(lr[1]))
    return TrainingSettings(optimizer=build.get("optimizer", "adam"), lr=float(lr),
                            batch_size=int(build.get("batch_size", 32)), weight_decay=float(build.get("weight_decay", 0.0)))


@dataclass
class FineTuneResult:
    """Learning curves of a population: metrics at each evaluated epoch (0 = before training)."""

    epochs: list[int]
    accuracy: np.ndarray  # [M, len(epochs)], NaN where not finite
    loss: np.ndarray  # [M, len(epochs)]
    finite: np.ndarray  # [M, len(epochs)] bool
    weights: torch.Tensor  # [M, len(epochs), P]
    predictions: torch.Tensor | None = None  # [M, len(epochs), N] int8, -1 where not finite

    def evaluation(self, epoch: int) -> Evaluation:
        """The metrics (and predictions, if kept) at one evaluated epoch."""
        i = self.epochs.index(epoch)
        predictions = self.predictions[:, i] if self.predictions is not None else None
        return Evaluation(self.accuracy[:, i], self.loss[:, i], self.finite[:, i], predictions)


def fine_tune(
    arch: Architecture, activation: str, weights: torch.Tensor, train: ImageSet, test: ImageSet, *,
    epochs: int, settings: TrainingSettings, seed: int = 0, eval_epochs: list[int] | None = None,
    keep_predictions: bool = False, progress: Callable[[int, int], None] | None = None,
) -> FineTuneResult:
    """Train every finite member for `epochs` passes over `train` (member i shuffles with its own
    seed drawn from `seed`) and evaluate on `test` at `eval_epochs` (default 0..epochs)."""
    eval_epochs = sorted(set(range(epochs + 1) if eval_epochs is None else eval_epochs))
    if eval_epochs[0] < 0 or eval_epochs[-1] > epochs:
        raise ValueError(f"eval_epochs must lie in 0..{epochs}, got {eval_epochs}")
    m = len(weights)
    good = torch.isfinite(weights).all(dim=1)
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, size=m).tolist()
    trajectory = torch.full((m, len(eval_epochs), weights.shape[1]), float("nan"))
    index = torch.nonzero(good).flatten()
    if epochs > 0 and len(index):
        trained = train_population(
            arch, activation, weights[index], train, epochs=epochs, lr=settings.lr,
            seeds=[seeds[i] for i in index.tolist()], batch_size=settings.batch_size,
            optimizer=settings.optimizer, weight_decay=settings.weight_decay, progress=progress,
        )
        trajectory[index] = trained[:, eval_epochs]
    elif len(index):
        trajectory[index] = weights[index].unsqueeze(1).expand(-1, len(eval_epochs), -1).float()
    flat = evaluate_population(arch, activation, trajectory.reshape(-1, weights.shape[1]), test,
                            keep_predictions=keep_predictions)
    shape = (m, len(eval_epochs))
    predictions = flat.predictions.reshape(m, len(eval_epochs), -1) if keep_predictions else None
    return FineTuneResult(eval_epochs, flat.accuracy.reshape(shape), flat.loss.reshape(shape),
                          flat.finite.reshape(shape), trajectory, predictions)
