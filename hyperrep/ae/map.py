"""The 2-D map of a latent space: fit once at training time, place new points without refitting.

`fit_map` runs UMAP (or PCA) on the zoo's latents; the coordinates are stored with the
hyper-representation (projection.safetensors), so no reducer is pickled and a cold start pays no
fit. `place_on_map` puts new latents (samples, decoded models) on that stored map by
inverse-distance interpolation between their k nearest zoo latents.

Note (platform-notes): the first UMAP fit in a process pays ~10 s of numba JIT.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from hyperrep.runtime.device import torch_threads_kept

METHODS = ("umap", "pca")


def fit_map(
    latents: torch.Tensor, method: str = "umap", seed: int = 42, n_neighbors: int = 15, min_dist: float = 0.1
) -> torch.Tensor:
    """2-D coordinates [n, 2] of latents [n, L] by UMAP (seeded) or PCA (deterministic signs)."""
    if method not in METHODS:
        raise ValueError(f"map method {method!r} unknown; known: {', '.join(METHODS)}")
    data = latents.detach().cpu().double()
    if len(data) < 3:
        raise ValueError(f"a map needs at least 3 latents, got {len(data)}")
    if method == "pca":
        return _pca_2d(data).float()
    import umap  # slow first import (numba); only paid when a UMAP map is made

    reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(data) - 1), min_dist=min_dist,
                        metric="euclidean", random_state=seed)
    with warnings.catch_warnings(), torch_threads_kept():
        warnings.filterwarnings("ignore", message=".*n_jobs.*random_state.*")  # seeded UMAP is single-threaded
        coords = reducer.fit_transform(data.numpy())
    return torch.from_numpy(np.asarray(coords, dtype=np.float32))


def _pca_2d(data: torch.Tensor) -> torch.Tensor:
    centred = data - data.mean(dim=0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    components = vh[:2]
    signs = torch.sign(components[torch.arange(len(components)), components.abs().argmax(dim=1)])
    coords = centred @ (components * signs[:, None]).T
    if coords.shape[1] < 2:  # a one-dimensional latent space
        coords = torch.cat([coords, torch.zeros(len(coords), 2 - coords.shape[1], dtype=coords.dtype)], dim=1)
    return coords


def place_on_map(
    new_latents: torch.Tensor, ref_latents: torch.Tensor, ref_coords: torch.Tensor, k: int = 10
) -> torch.Tensor:
    """Coordinates [m, 2] of new latents: inverse-distance weighted mean of their k nearest
    reference points' coordinates (a latent equal to a reference lands exactly on it)."""
    if len(ref_latents) != len(ref_coords):
        raise ValueError(f"{len(ref_latents)} reference latents but {len(ref_coords)} coordinates")
    new = new_latents.detach().float().cpu()
    ref = ref_latents.detach().float().cpu()
    coords = ref_coords.detach().float().cpu()
    k = min(k, len(ref))
    distances, nearest = torch.cdist(new, ref).topk(k, dim=1, largest=False)
    weights = 1.0 / distances.clamp_min(1e-12)
    exact = distances[:, :1] <= 1e-12
    weights = torch.where(exact, (distances <= 1e-12).float(), weights)  # exact hits: only them
    weights = weights / weights.sum(dim=1, keepdim=True)
    return (weights.unsqueeze(-1) * coords[nearest]).sum(dim=1)
