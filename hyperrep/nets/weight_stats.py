"""Statistics of populations of flat weight vectors: the per-layer σ that layer-wise loss
normalisation (LWLN) divides by, and the R² of a rebuild around the training mean vector."""

from __future__ import annotations

import torch

from hyperrep.nets.cnn import Architecture


def layer_sigmas(arch: Architecture, weights: torch.Tensor) -> torch.Tensor:
    """σ_l = unbiased std of all layer-l entries of `weights` [n, P], one value per layer [L]."""
    return torch.stack([weights[:, part].flatten().std() for part in arch.layer_slices()])


def parameter_sigmas(arch: Architecture, weights: torch.Tensor) -> torch.Tensor:
    """Each entry's layer σ (`layer_sigmas` spread over the flat vector), [P]."""
    sizes = torch.tensor([part.stop - part.start for part in arch.layer_slices()])
    return torch.repeat_interleave(layer_sigmas(arch, weights), sizes)


def r_squared(rebuilt: torch.Tensor, target: torch.Tensor, mean: torch.Tensor) -> float:
    """1 - SSE / SS around `mean` (the train split's mean vector [P])."""
    return float(1 - (rebuilt - target).square().sum() / (target - mean).square().sum().clamp_min(1e-12))


def r_squared_per_layer(arch: Architecture, output: torch.Tensor, target: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """`r_squared` of each layer's entries (the paper's rsq_l), [L]."""
    values = []
    for part in arch.layer_slices():
        sse = (output[:, part] - target[:, part]).square().sum()
        sst = (target[:, part] - mean[part]).square().sum()
        values.append(1 - sse / sst.clamp_min(1e-12))
    return torch.stack(values)
