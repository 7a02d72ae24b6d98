"""The one place that chooses where tensors live."""

from __future__ import annotations

import os

import torch


def pick_device() -> torch.device:
    """CUDA if available, else Apple MPS, else CPU; `HYPERREP_DEVICE` overrides."""
    forced = os.environ.get("HYPERREP_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
