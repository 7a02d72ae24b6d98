"""The two augmented views of each model the autoencoder trains on: a random function-preserving
permutation of the neurons, Gaussian noise and erased token blocks, drawn per view with a seeded
generator."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hyperrep.nets.cnn import Architecture
from hyperrep.nets.permutations import permute, random_permutation_index


# -- augmentation --------------------------------------------------------------------------------
@dataclass
class Augmentation:
    """How the two views of a model are made (the paper's augmentations: permutation, noise, erasing)."""

    permute: bool = True  # random function-preserving permutation per view
    noise: float = 0.0  # additive Gaussian noise, std in weight units
    erase_p: float = 0.5  # probability of erasing one contiguous block of the flat vector
    erase_scale: list[float] = field(default_factory=lambda: [0.02, 0.33])  # block length / P
    target: str = "augmented"  # reconstruct the augmented view (paper) or the clean, permuted one

    def is_identity(self) -> bool:
        """True when both views are the model itself (nothing permutes, adds noise or erases)."""
        return not self.permute and self.noise == 0 and self.erase_p == 0

    def validate(self) -> None:
        if self.target not in ("augmented", "clean"):
            raise ValueError(f"augmentation target must be 'augmented' or 'clean', got {self.target!r}")
        if not 0 <= self.erase_p <= 1 or self.noise < 0:
            raise ValueError("erase_p must lie in [0, 1] and noise must be >= 0")


def make_views(
    arch: Architecture, weights: torch.Tensor, augmentation: Augmentation, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views of every model: (inputs [2B, P], reconstruction targets [2B, P]).

    Random numbers come from `generator` (CPU) and are moved to the weights' device, so a seed
    gives the same views everywhere."""
    batch, device = weights.shape[0], weights.device
    pairs = torch.cat([weights, weights])
    if augmentation.permute:
        pairs = permute(pairs, random_permutation_index(arch, 2 * batch, generator, device))
    clean = pairs
    if augmentation.noise > 0:
        pairs = pairs + augmentation.noise * torch.randn(pairs.shape, generator=generator).to(device)
    if augmentation.erase_p > 0:
        pairs = pairs * ~erase_mask(pairs.shape, augmentation, generator).to(device)
    return pairs, (clean if augmentation.target == "clean" else pairs)


def erase_mask(shape: tuple[int, int], augmentation: Augmentation, generator: torch.Generator) -> torch.Tensor:
    """Bool [B, P]: with probability p, one contiguous block per row (the paper's block mode)."""
    rows, length = shape
    low, high = augmentation.erase_scale
    chosen = torch.rand(rows, generator=generator) < augmentation.erase_p
    span = (length * (low + (high - low) * torch.rand(rows, generator=generator))).long()
    start = (torch.rand(rows, generator=generator) * (length - span)).long()
    position = torch.arange(length)
    return chosen[:, None] & (position >= start[:, None]) & (position < (start + span)[:, None])
