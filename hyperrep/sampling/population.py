"""A population: decoded samples (weights, the latents they came from, one row per member), and
drawing one from a fitted sampler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hyperrep.ae.artifact import Fingerprint, decode_latents
from hyperrep.sampling.base import LatentSampler


@dataclass
class Population:
    """A labelled set of CNNs as flat weights [n, P]; `members` describes each one (one row each)."""

    label: str
    weights: torch.Tensor
    members: pd.DataFrame
    latents: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.weights.dim() != 2 or len(self.members) != len(self.weights):
            raise ValueError(f"population {self.label!r}: weights {tuple(self.weights.shape)} and "
                             f"{len(self.members)} member rows do not match")

    def __len__(self) -> int:
        return len(self.weights)


def sample_population(model, sampler: LatentSampler, anchors: torch.Tensor, n: int, seed: int,
                      label: str | None = None, *, scores=None, fingerprint: Fingerprint | None = None) -> Population:
    """Fit `sampler` on anchor latents (and their `scores`, for samplers that use them), record the
    `fingerprint` of their hyper-representation, draw `n` latents with `seed`, decode them. A sampler
    already fitted on another hyper-representation is refused rather than silently retrained."""
    check_same_hyperrep(sampler, fingerprint)
    sampler.fit(anchors, scores=scores)
    sampler.fingerprint_ = fingerprint
    return draw_from_fitted(model, sampler, n, seed, label, fingerprint=fingerprint)


def draw_from_fitted(model, sampler: LatentSampler, n: int, seed: int, label: str | None = None, *,
                     fingerprint: Fingerprint | None = None) -> Population:
    """Draw `n` latents with `seed` from an already fitted sampler and decode them with `model`;
    a sampler fitted on another hyper-representation than `fingerprint`'s is refused (ValueError)."""
    check_same_hyperrep(sampler, fingerprint)
    latents = sampler.sample(n, seed)
    members = pd.DataFrame({"member": np.arange(n), "method": sampler.name, "seed": seed})
    return Population(label or sampler.name, decode_latents(model, latents), members, latents)


def check_same_hyperrep(sampler: LatentSampler, fingerprint: Fingerprint | None) -> None:
    """A ValueError naming both when the sampler was fitted on another hyper-representation's latents."""
    own = sampler.fingerprint_
    if own is not None and fingerprint is not None and own.digest != fingerprint.digest:
        raise ValueError(f"sampler {sampler.name!r} was fitted on the latents of {own.name} ({own.digest[:12]}), "
                         f"not of {fingerprint.name} ({fingerprint.digest[:12]}): its latents would decode to "
                         "other networks; fit it on this hyper-representation")
