"""The guided sampler: latents drawn by a base sampler, then refined by a few gradient steps of
the task loss through the frozen decoder, so the models stay in the hyper-representation's
space but move towards lower loss. `refine_weights` is its equal-cost reference: the same
steps on the same images applied to the decoded weights directly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from hyperrep.ae.artifact import decode_latents
from hyperrep.images.datasets import ImageSet
from hyperrep.nets.cnn import Architecture, population_forward
from hyperrep.runtime import cores
from hyperrep.sampling.parameters import SamplerParameter, constructor_parameters
from hyperrep.sampling.base import LatentSampler, SamplerContext
from hyperrep.sampling.samplers import SAMPLERS, SamplerSpec, make_sampler

Progress = Callable[[int, int], None]


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
                   step_size: float, progress: Progress | None = None) -> torch.Tensor:
    """Latents [n, L] after `steps` Adam steps (learning rate `step_size`) on the task loss of
    their decoded models on `batch`; the decoder's parameters are not changed. `progress(done,
    steps)` is called after each step."""
    _check_steps(steps, step_size)
    device = next(model.parameters()).device
    z = latents.detach().to(device).float().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([z], lr=step_size)
    for step in range(steps):
        with cores.turn(), torch.enable_grad():  # one step per turn (hyperrep.runtime.cores); also under no_grad
            loss = _task_loss(model.arch, activation, model.decode(z), batch)
            # the gradient of the latents only: the decoder (shared by the app's sessions) is
            # neither changed nor given .grad, and its requires_grad flags are left as they are
            (z.grad,) = torch.autograd.grad(loss, [z])
        optimiser.step()
        if progress is not None:
            progress(step + 1, steps)
    return z.detach().cpu()


def refine_weights(arch: Architecture, activation: str, weights: torch.Tensor, batch: ImageSet, *, steps: int,
                   step_size: float) -> torch.Tensor:
    """Weights [n, P] after `steps` Adam steps (learning rate `step_size`) on the task loss on
    `batch`, taken on the weights themselves: the equal-cost alternative to `refine_latents`."""
    _check_steps(steps, step_size)
    w = weights.detach().float().clone().to(batch.images.device).requires_grad_(True)
    optimiser = torch.optim.Adam([w], lr=step_size)
    for _ in range(steps):
        with cores.turn():  # one step per turn (hyperrep.runtime.cores)
            loss = _task_loss(arch, activation, w, batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
    return w.detach().cpu()


class GuidedSampler(LatentSampler):
    """Latents of `base` (a sampler of hyperrep.sampling.samplers.SAMPLERS) refined by `refine_latents`
    on `images` training images (a seeded draw from `data`) for `steps` Adam steps of size
    `step_size`. Needs the hyper-representation (`model`), the zoo's activation and the images;
    `progress(done, steps)` follows the latent steps of each `sample` call."""

    name = "guided"
    paper_name = "S_guided"
    description = ("latents of a base sampler refined by Adam steps of the task loss through the frozen decoder, "
                   "on a batch of training images")

    def __init__(self, model, activation: str, data: ImageSet, base: str = "kde", steps: int = 10,
                 images: int = 256, step_size: float = 0.1, progress: Progress | None = None):
        _check_steps(steps, step_size)
        self.model = model
        self.activation = activation
        self.data = data
        self.base = base
        self.steps = steps
        self.images = images
        self.step_size = step_size
        self.progress = progress

    @property
    def min_anchors(self) -> int:
        return make_sampler(self.base).min_anchors

    @property
    def uses_scores(self) -> bool:
        return make_sampler(self.base).uses_scores

    def _fit(self, anchors: np.ndarray) -> None:
        self.base_ = make_sampler(self.base).fit(anchors, scores=self.scores_)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        start = self.base_.sample(n, seed)
        batch = guidance_batch(self.data, self.images, seed)
        return refine_latents(self.model, self.activation, start, batch, steps=self.steps,
                              step_size=self.step_size, progress=self.progress).double().numpy()

    def start_weights(self, n: int, seed: int) -> torch.Tensor:
        """The decoded base latents the guided ones start from (the same seed gives the same start)."""
        return decode_latents(self.model, self.base_.sample(n, seed))


def guided_parameters() -> list[SamplerParameter]:
    """The guided sampler's tunable parameters (the app's widgets): its base sampler (a choice of
    the registry), steps, images and step size, with the constructor's defaults."""
    found = constructor_parameters(GuidedSampler, fixed=("progress",))
    return [replace(p, kind="choice", options=tuple(SAMPLERS)) if p.name == "base" else p for p in found]


def guided_from_context(context: SamplerContext, **params) -> GuidedSampler:
    """The guided sampler on the context's network, activation, training images and progress."""
    if context.model is None or context.activation is None or context.train is None:
        raise ValueError("sampler 'guided' needs the zoo's activation and training images")
    return GuidedSampler(context.model, context.activation, context.train, **params, progress=context.progress)


def _given(params: dict, name: str):
    """A guided-sampler parameter as given, else its constructor default."""
    return params[name] if name in params else next(p.default for p in guided_parameters() if p.name == name)


def guided_images(params: dict) -> int:
    """The training images every guided step uses (`images`, at least 1)."""
    images = int(_given(params, "images"))
    if images < 1:
        raise ValueError(f"sampler 'guided': images must be at least 1, got {images}")
    return images


def guided_cost(steps: int, images: int, n: int) -> str:
    """The guided sampler's extra cost in words: each step decodes the `n` latents and runs the
    decoded models forward and backward on the `images` images."""
    return (f"{steps} steps × {images:,} images × {n:,} models = {steps * images * n:,} forward and backward "
            "passes of a decoded model (plus one decode per step)")


GUIDED_SPEC = SamplerSpec(
    GuidedSampler.name, GuidedSampler.paper_name, GuidedSampler.description, guided_from_context, contextual=True,
    images=guided_images, tunable=guided_parameters,
    cost=lambda params, n: guided_cost(int(_given(params, "steps")), int(_given(params, "images")), n),
)
