"""Train and evaluate whole populations of CNNs given as flat weight vectors.

Zoo building, sample evaluation and fine-tuning all run through these two functions. The path is
chosen per device, as measured (docs/benchmarks.md). Evaluation stacks the models: on a CPU all
models share each cache-sized image chunk (cnn.population_forward cuts the first conv's patches
once and runs the models in GEMM-friendly blocks; about 5x a per-model loop), on a GPU models are
stacked into grouped convolutions over large image chunks. Training stacks the models too: every
model takes each step together with the others on its own batch, and one optimiser update runs
over the flat [models, params] tensor (`PopulationOptimizer`). On a CPU the gradients come from
the compiled kernel in hyperrep.nets.native; on a GPU from autograd through grouped convolutions or
im2col + batched GEMMs, whichever a timed trial step finds faster for the step's shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hyperrep.images.datasets import ImageSet
from hyperrep.nets import native
from hyperrep.nets.cnn import Architecture, forward, population_forward
from hyperrep.nets.optim import PopulationOptimizer
from hyperrep.runtime import cores

CPU_IMAGE_CHUNK = 128  # images per step of the CPU evaluation path (measured: docs/benchmarks.md)


PREDICTION_BUDGET_BYTES = 256 * 2**20  # predictions of one call, counted at 8 bytes each (argmax gives int64)


@dataclass
class Evaluation:
    """Per-member results of one population on one image set: the one result type of evaluation.
    Members whose weights or logits are NaN/inf are flagged (`finite` False), never dropped."""

    accuracy: np.ndarray  # [M] in [0, 1], NaN where not finite
    loss: np.ndarray  # [M], NaN where not finite
    finite: np.ndarray  # [M] bool
    predictions: torch.Tensor | None = None  # [M, N] int8 classes, -1 where not finite

    @property
    def n_invalid(self) -> int:
        return int((~self.finite).sum())

    def valid_accuracy(self) -> np.ndarray:
        return self.accuracy[self.finite]

    def repeated(self, n: int) -> "Evaluation":
        """One member's results standing in for `n` members (the mean model as every rebuild)."""
        predictions = self.predictions.expand(n, -1) if self.predictions is not None else None
        return Evaluation(np.repeat(self.accuracy, n), np.repeat(self.loss, n), np.repeat(self.finite, n), predictions)


def use_batched_path(device: torch.device, arch: Architecture | None = None, activation: str | None = None) -> bool:
    """Train stacked models on accelerators, and on a CPU when the native kernel handles the model;
    else loop over models (PyTorch's stacked path is slower than the loop on a CPU: measured)."""
    if device.type != "cpu":
        return True
    return arch is not None and activation is not None and native.available(arch, activation)


def evaluate_population(
    arch: Architecture,
    activation: str,
    weights: torch.Tensor,
    data: ImageSet,
    *,
    keep_predictions: bool = False,
    model_chunk: int | None = None,
    image_chunk: int | None = None,
    batched: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Loss, accuracy (and optionally predictions) of every model in `weights` [M, P] on `data`,
    on the device of `data`.

    The stacked path (default) runs `model_chunk` models (CPU: all, GPU: 64) through each image
    chunk (CPU: CPU_IMAGE_CHUNK, GPU: 10,000); `batched=False` is the plain per-model loop, kept
    as the reference. With predictions, models go in calls whose predictions stay under
    PREDICTION_BUDGET_BYTES."""
    arch.check_vector(weights)
    m = len(weights)
    per_call = max(1, PREDICTION_BUDGET_BYTES // (8 * max(len(data), 1))) if keep_predictions else max(m, 1)
    accuracy, loss, finite = np.full(m, np.nan), np.full(m, np.nan), np.zeros(m, dtype=bool)
    predictions = torch.full((m, len(data)), -1, dtype=torch.int8) if keep_predictions else None
    for start in range(0, m, per_call):
        stop = min(start + per_call, m)
        offset_progress = (lambda done, _total, s=start: progress(s + done, m)) if progress else None
        part = _evaluate_block(arch, activation, weights[start:stop], data, keep_predictions=keep_predictions,
                               model_chunk=model_chunk, image_chunk=image_chunk, batched=batched,
                               progress=offset_progress)
        accuracy[start:stop], loss[start:stop], finite[start:stop] = part.accuracy, part.loss, part.finite
        if predictions is not None:
            predictions[start:stop] = part.predictions
    return Evaluation(accuracy, loss, finite, predictions)


def _evaluate_block(arch, activation, weights, data, *, keep_predictions, model_chunk, image_chunk, batched,
                    progress) -> Evaluation:
    """`evaluate_population` of models whose predictions fit in memory at once."""
    device = data.images.device
    on_cpu = device.type == "cpu"
    batched = True if batched is None else batched
    image_chunk = image_chunk or (CPU_IMAGE_CHUNK if on_cpu else 10_000)
    m, n = weights.shape[0], len(data)
    finite = torch.isfinite(weights).all(dim=1).cpu()
    loss_sum = torch.zeros(m, dtype=torch.float64)
    correct = torch.zeros(m, dtype=torch.int64)
    predictions = torch.full((m, n), -1, dtype=torch.int8) if keep_predictions else None
    good = torch.nonzero(finite).flatten().tolist()
    model_chunk = model_chunk or (max(len(good), 1) if on_cpu else 64)
    groups = [good[i: i + model_chunk] for i in range(0, len(good), model_chunk)] if batched else [[i] for i in good]
    done = 0
    with torch.no_grad(), cores.job():
        for group in groups:
            block = weights[group].to(device=device, dtype=torch.float32)
            idx = torch.tensor(group)
            for start in range(0, n, image_chunk):
                with cores.turn():  # one image chunk per turn: concurrent sessions interleave (hyperrep.runtime.cores)
                    images = data.images[start: start + image_chunk]
                    labels = data.labels[start: start + image_chunk]
                    if batched:
                        logits = population_forward(arch, activation, block, images)
                    else:
                        logits = forward(arch, activation, block[0], images).unsqueeze(0)
                    bad = ~torch.isfinite(logits).all(dim=2).all(dim=1)
                    losses = F.cross_entropy(
                        logits.reshape(-1, logits.shape[-1]), labels.repeat(len(group)), reduction="none"
                    ).reshape(len(group), -1)
                    pred = logits.argmax(dim=2)
                    loss_sum[idx] += losses.sum(dim=1).double().cpu()
                    correct[idx] += (pred == labels).sum(dim=1).cpu()
                    if bad.any():
                        finite[idx[bad.cpu()]] = False
                    if predictions is not None:
                        predictions[idx, start: start + len(labels)] = pred.cpu().to(torch.int8)
                    if progress is not None and len(groups) == 1:  # one big group: report per image chunk
                        progress(len(group) * min(start + image_chunk, n) // max(n, 1), len(good))
            done += len(group)
            if progress is not None and len(groups) > 1:
                progress(done, len(good))
    loss = (loss_sum / max(n, 1)).float().numpy()
    accuracy = (correct.float() / max(n, 1)).numpy()
    finite = finite.numpy()
    loss[~finite], accuracy[~finite] = np.nan, np.nan
    if predictions is not None:
        predictions[torch.from_numpy(~finite)] = -1
    return Evaluation(accuracy.astype(np.float64), loss.astype(np.float64), finite, predictions)


def _optimizer(name: str, params: list[torch.Tensor], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; known: adam, sgd")


def train_population(
    arch: Architecture,
    activation: str,
    weights: torch.Tensor,
    data: ImageSet,
    *,
    epochs: int,
    lr: float | torch.Tensor,
    seeds: list[int],
    batch_size: int = 32,
    optimizer: str = "adam",
    weight_decay: float = 0.0,
    batched: bool | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Train each model of `weights` [M, P] for `epochs` passes over `data`; each model shuffles
    with its own seed. Returns the trajectory [M, epochs + 1, P] (index 0 = the given weights)."""
    arch.check_vector(weights)
    m = weights.shape[0]
    if len(seeds) != m:
        raise ValueError(f"need one seed per model: {m} models, {len(seeds)} seeds")
    rates = torch.as_tensor(lr, dtype=torch.float32).expand(m).tolist()
    device = data.images.device
    batched = use_batched_path(device, arch, activation) if batched is None else batched
    trajectory = torch.empty(m, epochs + 1, weights.shape[1])
    trajectory[:, 0] = weights.detach().cpu()
    orders = [_epoch_orders(len(data), epochs, seed) for seed in seeds]
    if batched and device.type == "cpu" and native.available(arch, activation):
        _train_native(arch, activation, weights, data, orders, trajectory, rates, batch_size, optimizer, weight_decay, progress)
    elif batched:
        _train_stacked(arch, activation, weights, data, orders, trajectory, rates, batch_size, optimizer, weight_decay, progress)
    else:
        for i in range(m):
            _train_one(arch, activation, weights[i], data, orders[i], trajectory[i], rates[i], batch_size, optimizer, weight_decay)
            if progress is not None:
                progress(i + 1, m)
    return trajectory


def _epoch_orders(n: int, epochs: int, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=generator) for _ in range(epochs)]


def _train_one(arch, activation, start, data, orders, out, lr, batch_size, optimizer, weight_decay) -> None:
    flat = start.detach().clone().to(data.images.device).requires_grad_(True)
    opt = _optimizer(optimizer, [flat], lr, weight_decay)
    for epoch, order in enumerate(orders, start=1):
        for begin in range(0, len(order), batch_size):
            index = order[begin: begin + batch_size].to(data.images.device)
            loss = F.cross_entropy(forward(arch, activation, flat, data.images[index]), data.labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out[epoch] = flat.detach().cpu()


def _train_native(arch, activation, weights, data, orders, trajectory, rates, batch_size, optimizer, weight_decay, progress) -> None:
    """The CPU path: the native kernel computes each model's gradient and applies its optimiser step.

    Each step holds the process's compute turn (hyperrep.runtime.cores), so concurrent sessions interleave
    step by step, and the kernel runs on as many threads as the turn's share of the cores."""
    m = weights.shape[0]
    params = weights.detach().to("cpu", torch.float32).clone().contiguous()
    opt = PopulationOptimizer(optimizer, params, torch.tensor(rates), weight_decay)
    kernel = native.PopulationKernel(arch, activation, data.images, data.labels, m)
    with cores.job():
        try:
            for epoch in range(len(orders[0])):
                order = torch.stack([orders[i][epoch] for i in range(m)])
                for begin in range(0, order.shape[1], batch_size):
                    with cores.turn():
                        kernel.step(opt, order[:, begin: begin + batch_size])
                trajectory[:, epoch + 1] = params
                if progress is not None:
                    progress(epoch + 1, len(orders[0]))
        finally:
            kernel.close()


_GEMM_CHOICES: dict[tuple, bool] = {}


def gemm_is_faster(arch: Architecture, activation: str, params: torch.Tensor, images: torch.Tensor) -> bool:
    """Whether im2col + batched GEMMs train a step of this shape faster than grouped convolutions.

    Timed once per device, model and step shape (forward and backward, best of 3 after a warm-up);
    which one wins depends on the accelerator and its libraries, so it is measured, not assumed.
    """
    key = (str(images.device), arch.name, activation, tuple(params.shape), tuple(images.shape))
    if key not in _GEMM_CHOICES:
        trial = params.detach().clone().requires_grad_(True)
        seconds = {gemm: _time_step(arch, activation, trial, images, gemm) for gemm in (False, True)}
        _GEMM_CHOICES[key] = seconds[True] < seconds[False]
    return _GEMM_CHOICES[key]


def _time_step(arch: Architecture, activation: str, params: torch.Tensor, images: torch.Tensor, gemm: bool) -> float:
    def step() -> None:
        population_forward(arch, activation, params, images, gemm=gemm).square().sum().backward()
        if images.device.type == "cuda":
            torch.cuda.synchronize(images.device)
    step()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def _train_stacked(arch, activation, weights, data, orders, trajectory, rates, batch_size, optimizer, weight_decay, progress) -> None:
    """The accelerator path: autograd through grouped convolutions, one PopulationOptimizer step."""
    device = data.images.device
    m = weights.shape[0]
    params = weights.detach().to(device=device, dtype=torch.float32).clone().requires_grad_(True)
    opt = PopulationOptimizer(optimizer, params.data, torch.tensor(rates, device=device), weight_decay)
    n_epochs = len(orders[0])
    gemm = device.type != "cpu" and gemm_is_faster(arch, activation, params, data.images[:batch_size].expand(m, -1, -1, -1, -1))
    for epoch in range(n_epochs):
        stacked_orders = torch.stack([orders[i][epoch] for i in range(m)]).to(device)
        for begin in range(0, stacked_orders.shape[1], batch_size):
            index = stacked_orders[:, begin: begin + batch_size]
            logits = population_forward(arch, activation, params, data.images[index], gemm=gemm)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), data.labels[index].reshape(-1), reduction="sum")
            params.grad = None
            (loss / index.shape[1]).backward()
            opt.step(params.grad)
        trajectory[:, epoch + 1] = params.detach().cpu()
        if progress is not None:
            progress(epoch + 1, n_epochs)
