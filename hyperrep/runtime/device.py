"""The one place that chooses where tensors live, and keeps torch's CPU thread count."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

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


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Restore torch's CPU thread count after the block. UMAP's numba code sets the process's
    OpenMP thread count (to one per core), which torch then uses too: a process set to 1 thread
    would otherwise evaluate with 2, and on a busy machine wait at every OpenMP barrier."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
