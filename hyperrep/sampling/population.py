"""A population: decoded samples (weights, the latents they came from, one row per member), and
drawing one from a fitted sampler."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hyperrep.ae.artifact import decode_latents
from hyperrep.sampling.samplers import LatentSampler


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
                      label: str | None = None) -> Population:
    """Fit `sampler` on anchor latents, draw `n` latents with `seed`, decode them."""
    latents = sampler.fit(anchors).sample(n, seed)
    members = pd.DataFrame({"member": np.arange(n), "method": sampler.name, "seed": seed})
    return Population(label or sampler.name, decode_latents(model, latents), members, latents)
