"""What every sampler shares: the `LatentSampler` base class, the checks of its anchors and scores,
and the `SamplerContext` a sampler that uses more than the latents is built with. Kept apart from
the registry (hyperrep.sampling.samplers) so that samplers registered there can import it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from hyperrep.ae.artifact import Fingerprint
from hyperrep.images.datasets import ImageSet
from hyperrep.sampling.parameters import constructor_parameters


def check_anchors(sampler: str, anchors, min_anchors: int) -> np.ndarray:
    """Anchors as float64 [n, L]; too few or non-finite anchors is a ValueError naming the sampler."""
    array = anchors.detach().cpu().numpy() if isinstance(anchors, torch.Tensor) else np.asarray(anchors)
    array = np.asarray(array, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"sampler {sampler!r}: anchors must be a [n, latent_dim] array, got shape {array.shape}")
    if len(array) < min_anchors:
        raise ValueError(f"sampler {sampler!r} needs at least {min_anchors} anchors, got {len(array)}")
    if not np.isfinite(array).all():
        raise ValueError(f"sampler {sampler!r}: anchors contain NaN or inf")
    return array


def check_scores(sampler: str, scores, n_anchors: int) -> np.ndarray | None:
    """Scores as float64 [n] (one per anchor), or None; a wrong length or non-finite score is a ValueError."""
    if scores is None:
        return None
    array = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    array = np.asarray(array, dtype=np.float64)
    if array.shape != (n_anchors,):
        raise ValueError(f"sampler {sampler!r}: scores must be one number per anchor ({n_anchors}), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"sampler {sampler!r}: scores contain NaN or inf")
    return array


class LatentSampler:
    """Base class: `fit(anchors, scores=None)` stores the checked anchors (and their scores, e.g.
    accuracies, for samplers that use them), `sample(n, seed)` draws latents. `fingerprint_` names
    the hyper-representation whose latents it was fitted on, where the caller knows it."""

    name = "sampler"
    fingerprint_: Fingerprint | None = None

    @property
    def min_anchors(self) -> int:
        return 1

    @property
    def uses_scores(self) -> bool:
        """Whether `fit` needs the anchors' scores (the others ignore them)."""
        return False

    @property
    def fitted(self) -> bool:
        return hasattr(self, "anchors_")

    def params(self) -> dict:
        """The constructor's parameters with a default, as set (callbacks left out): what an export records."""
        fixed = ("progress", "should_stop")
        return {p.name: getattr(self, p.name) for p in constructor_parameters(type(self), fixed=fixed)}

    def fit(self, anchors, scores=None) -> "LatentSampler":
        self.anchors_ = check_anchors(self.name, anchors, self.min_anchors)
        self.scores_ = check_scores(self.name, scores, len(self.anchors_))
        self._fit(self.anchors_)
        return self

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """`n` latents [n, L] (float32); the same seed gives the same latents."""
        if not self.fitted:
            raise RuntimeError(f"sampler {self.name!r}: call fit(anchors) before sample()")
        if n < 1:
            raise ValueError(f"sampler {self.name!r}: n must be at least 1, got {n}")
        drawn = np.asarray(self._sample(int(n), int(seed)), dtype=np.float64)
        return torch.from_numpy(drawn).float()

    def _fit(self, anchors: np.ndarray) -> None:
        pass

    def _sample(self, n: int, seed: int) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class SamplerContext:
    """What a sampler that uses more than the anchors' latents is built with: the
    hyper-representation's network, the zoo's activation, training images, a progress callback
    and `stop()`, asked during a long fit whether to end it early (the app's stop button)."""

    model: torch.nn.Module | None = None
    activation: str | None = None
    train: ImageSet | None = None
    progress: Callable[[int, int], None] | None = None
    stop: Callable[[], bool] | None = None
