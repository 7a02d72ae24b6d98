"""The guided sampler: latents drawn by a base sampler, then refined by a few gradient steps of
the task loss through the frozen decoder, so the models stay in the hyper-representation's
space but move towards lower loss. `refine_weights` is its equal-cost reference: the same
steps on the same images applied to the decoded weights directly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hyperrep.cnn import Architecture, population_forward
from hyperrep.data import ImageSet
from hyperrep.sampling import LatentSampler, decode_latents, make_sampler


def guidance_batch(data: ImageSet, images: int, seed: int) -> ImageSet:
    """The `images` training images (seeded draw without replacement) every step uses."""
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    if images > len(data):
        raise ValueError(f"images: asked for {images}, the training set has {len(data)}")
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:images]
    return data.subset(index.sort().values)


def _task_loss(arch: Architecture, activation: str, weights: torch.Tensor, batch: ImageSet) -> torch.Tensor:
    """Sum over models of each model's mean cross-entropy on `batch` (models get independent gradients)."""
    images, labels = batch.images.to(weights.device), batch.labels.to(weights.device)
    logits = population_forward(arch, activation, weights, images)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.repeat(len(weights)), reduction="sum") / len(labels)


def _check_steps(steps: int, step_size: float) -> None:
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size}")


def refine_latents(model, activation: str, latents: torch.Tensor, batch: ImageSet, *, steps: int,
                   step_size: float) -> torch.Tensor:
    """Latents [n, L] after `steps` Adam steps (learning rate `step_size`) on the task loss of
    their decoded models on `batch`; the decoder's parameters are not changed."""
    _check_steps(steps, step_size)
    device = next(model.parameters()).device
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        z = latents.detach().to(device).float().clone().requires_grad_(True)
        optimiser = torch.optim.Adam([z], lr=step_size)
        for _ in range(steps):
            loss = _task_loss(model.arch, activation, model.decode(z), batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return z.detach().cpu()


def refine_weights(arch: Architecture, activation: str, weights: torch.Tensor, batch: ImageSet, *, steps: int,
                   step_size: float) -> torch.Tensor:
    """Weights [n, P] after `steps` Adam steps (learning rate `step_size`) on the task loss on
    `batch`, taken on the weights themselves: the equal-cost alternative to `refine_latents`."""
    _check_steps(steps, step_size)
    w = weights.detach().float().clone().to(batch.images.device).requires_grad_(True)
    optimiser = torch.optim.Adam([w], lr=step_size)
    for _ in range(steps):
        loss = _task_loss(arch, activation, w, batch)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return w.detach().cpu()


class GuidedSampler(LatentSampler):
    """Latents of `base` (a sampler of hyperrep.sampling.SAMPLERS) refined by `refine_latents`
    on `images` training images (a seeded draw from `data`) for `steps` Adam steps of size
    `step_size`. Needs the hyper-representation (`model`), the zoo's activation and the images."""

    name = "guided"

    def __init__(self, model, activation: str, data: ImageSet, base: str = "kde", steps: int = 10,
                 images: int = 256, step_size: float = 0.05):
        _check_steps(steps, step_size)
        self.model = model
        self.activation = activation
        self.data = data
        self.base = base
        self.steps = steps
        self.images = images
        self.step_size = step_size

    @property
    def min_anchors(self) -> int:
        return make_sampler(self.base).min_anchors

    def _fit(self, anchors: np.ndarray) -> None:
        self.base_ = make_sampler(self.base).fit(anchors)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        start = self.base_.sample(n, seed)
        batch = guidance_batch(self.data, self.images, seed)
        return refine_latents(self.model, self.activation, start, batch, steps=self.steps,
                              step_size=self.step_size).double().numpy()

    def start_weights(self, n: int, seed: int) -> torch.Tensor:
        """The decoded base latents the guided ones start from (the same seed gives the same start)."""
        return decode_latents(self.model, self.base_.sample(n, seed))
