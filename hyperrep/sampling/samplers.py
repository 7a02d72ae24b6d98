"""New latents from a hyper-representation, the anchors they start from, and baseline populations.

Samplers have the scikit-learn shape: parameters in the constructor, `fit(anchor_latents)`, then
`sample(n, seed)` returns float32 latents [n, L]. Every random step takes the seed passed in.
`SAMPLERS` lists them by name (kde_legacy reproduces the published code's behaviour):

- `uniform` / `uniform_unit`: S_U, uniform in the anchors' latent box, or the paper's U(-1, 1).
- `kde_legacy`: the published S_KDE, bit for bit: one sklearn KernelDensity(bandwidth=0.002) per
  dimension, all sampled with the same random_state, so each sample is
  `anchor + 0.002 * eps * (1, ..., 1)` (a randomly chosen anchor, nearly unperturbed).
- `kde`: a proper per-dimension KDE: independent draws per dimension, bandwidth = Scott's rule
  times the dimension's spread. `kde_multivariate`: a Gaussian KDE around whole anchors.
- `gaussian` (S_Dist, a shrunk Gaussian fitted to the anchors) and `gmm` (a Gaussian mixture).
- `neigh` / `neigh_box`: S_Neigh, uniform draws in a box of a 3-D UMAP of the anchors mapped back
  by `inverse_transform` (one global box over all 3 dims as published, or a box per dimension).
- `interpolate`: evenly spaced points on the segment between two chosen anchors.
- `flow` / `flow_cfg`: a learned generative model of the anchors (hyperrep.sampling.flow, flow
  matching), unconditional or conditioned on the anchors' accuracy with classifier-free guidance.

Anchors are chosen with `top_fraction`, `select_rows`, `select_box`, `select_lasso` and
`select_points`, which return row positions in the latent table. The baseline populations the
samples are compared with live in hyperrep.sampling.baselines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from hyperrep.runtime.device import torch_threads_kept
from hyperrep.sampling.base import LatentSampler, SamplerContext, check_anchors
from hyperrep.sampling.flow import FLOW_DESCRIPTION, flow_from_context, flow_parameters
from hyperrep.sampling.parameters import SamplerParameter, constructor_parameters

__all__ = ["LatentSampler", "SamplerContext", "check_anchors",  # re-exported from hyperrep.sampling.base
           "SAMPLERS", "SamplerSpec", "describe_samplers", "make_sampler", "sampler_parameters", "shrunk_covariance",
           "UniformSampler", "PerDimensionKDESampler", "MultivariateKDESampler", "GaussianSampler",
           "GaussianMixtureSampler", "UmapBoxSampler", "InterpolationSampler"]

# -- anchors in, latents out (LatentSampler and check_anchors live in hyperrep.sampling.base) ----


class UniformSampler(LatentSampler):
    """S_U: uniform in the anchors' per-dimension box (widened by `margin`), or in U(-1, 1)."""

    name = "uniform"

    def __init__(self, bounds: str = "anchors", margin: float = 0.0):
        if bounds not in ("anchors", "unit"):
            raise ValueError(f"bounds must be 'anchors' or 'unit', got {bounds!r}")
        self.bounds = bounds
        self.margin = margin

    @property
    def min_anchors(self) -> int:
        return 2 if self.bounds == "anchors" else 1  # the unit cube needs only the latent size

    def _fit(self, anchors: np.ndarray) -> None:
        if self.bounds == "unit":
            self.low_, self.high_ = -np.ones(anchors.shape[1]), np.ones(anchors.shape[1])
            return
        low, high = anchors.min(axis=0), anchors.max(axis=0)
        pad = self.margin * (high - low)
        self.low_, self.high_ = low - pad, high + pad

    def _sample(self, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).uniform(self.low_, self.high_, size=(n, len(self.low_)))


class PerDimensionKDESampler(LatentSampler):
    """One 1-D Gaussian KDE per latent dimension.

    mode="legacy" is the published S_KDE: sklearn KernelDensity(bandwidth) per dimension, each
    sampled with random_state=seed (42 in the paper); `bandwidth` is absolute (default 0.002).
    mode="independent" draws each dimension independently, with bandwidth = factor x that
    dimension's standard deviation; `bandwidth` is that factor (default: Scott's rule n^(-1/5)).
    """

    name = "kde"

    def __init__(self, mode: str = "independent", bandwidth: float | None = None):
        if mode not in ("legacy", "independent"):
            raise ValueError(f"mode must be 'legacy' or 'independent', got {mode!r}")
        self.mode = mode
        self.bandwidth = bandwidth

    @property
    def min_anchors(self) -> int:
        return 1 if self.mode == "legacy" else 2

    def _fit(self, anchors: np.ndarray) -> None:
        if self.mode == "legacy":
            from sklearn.neighbors import KernelDensity

            bandwidth = 0.002 if self.bandwidth is None else self.bandwidth
            self.kdes_ = [KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(anchors[:, d: d + 1])
                          for d in range(anchors.shape[1])]
        else:
            factor = len(anchors) ** (-1 / 5) if self.bandwidth is None else self.bandwidth
            self.scales_ = factor * anchors.std(axis=0, ddof=1)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        if self.mode == "legacy":  # the same random_state in every dimension, as published
            return np.concatenate([kde.sample(n, random_state=seed) for kde in self.kdes_], axis=1)
        rng = np.random.default_rng(seed)
        anchors = self.anchors_
        rows = rng.integers(len(anchors), size=(n, anchors.shape[1]))  # its own anchor per dimension
        picked = np.take_along_axis(anchors, rows, axis=0)
        return picked + self.scales_ * rng.standard_normal(picked.shape)


class MultivariateKDESampler(LatentSampler):
    """Gaussian KDE around whole anchors: anchor + N(0, factor^2 * covariance).

    covariance="diagonal" uses the per-dimension variances, "full" the shrunk covariance
    (`shrunk_covariance`, well conditioned even with fewer anchors than dimensions). `bandwidth` is the
    factor; default Scott's rule n^(-1/(d+4)), as scipy.stats.gaussian_kde.
    """

    name = "kde_multivariate"

    def __init__(self, bandwidth: float | None = None, covariance: str = "diagonal"):
        if covariance not in ("diagonal", "full"):
            raise ValueError(f"covariance must be 'diagonal' or 'full', got {covariance!r}")
        self.bandwidth = bandwidth
        self.covariance = covariance

    @property
    def min_anchors(self) -> int:
        return 2

    def _fit(self, anchors: np.ndarray) -> None:
        n, d = anchors.shape
        factor = n ** (-1 / (d + 4)) if self.bandwidth is None else self.bandwidth
        if self.covariance == "diagonal":
            self.scale_ = factor * anchors.std(axis=0, ddof=1)
        else:
            self.scale_ = factor * _cholesky(shrunk_covariance(anchors))

    def _sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        picked = self.anchors_[rng.integers(len(self.anchors_), size=n)]
        noise = rng.standard_normal(picked.shape)
        return picked + (noise * self.scale_ if self.scale_.ndim == 1 else noise @ self.scale_.T)


class GaussianSampler(LatentSampler):
    """S_Dist: one Gaussian fitted to the anchors, its covariance shrunk (`shrunk_covariance`)
    by default, else the empirical covariance."""

    name = "gaussian"

    def __init__(self, shrinkage: bool = True):
        self.shrinkage = shrinkage

    @property
    def min_anchors(self) -> int:
        return 2

    def _fit(self, anchors: np.ndarray) -> None:
        self.mean_ = anchors.mean(axis=0)
        covariance = shrunk_covariance(anchors) if self.shrinkage else np.cov(anchors, rowvar=False, bias=True)
        self.cholesky_ = _cholesky(np.atleast_2d(covariance))

    def _sample(self, n: int, seed: int) -> np.ndarray:
        noise = np.random.default_rng(seed).standard_normal((n, len(self.mean_)))
        return self.mean_ + noise @ self.cholesky_.T


class GaussianMixtureSampler(LatentSampler):
    """A Gaussian mixture fitted to the anchors (sklearn, seeded); draws are seeded per call."""

    name = "gmm"

    def __init__(self, n_components: int = 4, covariance_type: str = "diag", random_state: int = 42):
        if covariance_type not in ("diag", "full", "spherical", "tied"):
            raise ValueError(f"covariance_type must be diag, full, spherical or tied, got {covariance_type!r}")
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.random_state = random_state

    @property
    def min_anchors(self) -> int:
        return 2 * self.n_components

    def _fit(self, anchors: np.ndarray) -> None:
        from sklearn.mixture import GaussianMixture

        mixture = GaussianMixture(self.n_components, covariance_type=self.covariance_type,
                                  random_state=self.random_state, reg_covar=1e-5).fit(anchors)
        self.weights_, self.means_ = mixture.weights_, mixture.means_
        cov, k, d = mixture.covariances_, self.n_components, anchors.shape[1]
        if self.covariance_type == "diag":
            self.scales_ = np.sqrt(cov)
        elif self.covariance_type == "spherical":
            self.scales_ = np.sqrt(cov)[:, None] * np.ones((k, d))
        elif self.covariance_type == "tied":
            self.scales_ = np.stack([_cholesky(cov)] * k)
        else:
            self.scales_ = np.stack([_cholesky(c) for c in cov])

    def _sample(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        component = rng.choice(len(self.weights_), size=n, p=self.weights_ / self.weights_.sum())
        noise = rng.standard_normal((n, self.means_.shape[1]))
        scale = self.scales_[component]
        spread = noise * scale if scale.ndim == 2 else np.einsum("nij,nj->ni", scale, noise)
        return self.means_[component] + spread


class UmapBoxSampler(LatentSampler):
    """S_Neigh: uniform points in a box of a 3-D UMAP of the anchors, mapped back by
    `inverse_transform`. box="global" is the published one scalar [min, max] over all dims;
    box="per_dimension" uses each dimension's own range."""

    name = "neigh"

    def __init__(self, box: str = "global", n_components: int = 3, n_neighbors: int = 15,
                 min_dist: float = 0.01, random_state: int = 42):
        if box not in ("global", "per_dimension"):
            raise ValueError(f"box must be 'global' or 'per_dimension', got {box!r}")
        self.box = box
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.random_state = random_state

    @property
    def min_anchors(self) -> int:
        return self.n_neighbors + 1

    def _fit(self, anchors: np.ndarray) -> None:
        import umap  # slow to import (numba); only this sampler needs it

        with torch_threads_kept():
            self.reducer_ = umap.UMAP(n_neighbors=self.n_neighbors, min_dist=self.min_dist, n_components=self.n_components,
                                      metric="euclidean", random_state=self.random_state, n_jobs=1).fit(anchors)
        embedding = self.reducer_.embedding_
        if self.box == "global":
            self.low_ = np.full(self.n_components, embedding.min())
            self.high_ = np.full(self.n_components, embedding.max())
        else:
            self.low_, self.high_ = embedding.min(axis=0), embedding.max(axis=0)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        points = np.random.default_rng(seed).uniform(self.low_, self.high_, size=(n, self.n_components))
        with torch_threads_kept():
            return self.reducer_.inverse_transform(points)


class InterpolationSampler(LatentSampler):
    """`n` evenly spaced latents from the first to the second of exactly two anchors
    (t from `start` to `stop`; values outside [0, 1] extrapolate). The seed is not used."""

    name = "interpolate"

    def __init__(self, start: float = 0.0, stop: float = 1.0):
        self.start = start
        self.stop = stop

    @property
    def min_anchors(self) -> int:
        return 2

    def _fit(self, anchors: np.ndarray) -> None:
        if len(anchors) != 2:
            raise ValueError(f"sampler {self.name!r} interpolates between exactly 2 anchors, got {len(anchors)}")

    def _sample(self, n: int, seed: int) -> np.ndarray:
        t = np.linspace(self.start, self.stop, n)[:, None]
        return (1 - t) * self.anchors_[0] + t * self.anchors_[1]


def shrunk_covariance(anchors: np.ndarray) -> np.ndarray:
    """Ledoit-Wolf covariance of the standardised anchors, scaled back: correlations are shrunk
    towards 0 while every dimension keeps its own variance (latent dims differ in scale)."""
    from sklearn.covariance import LedoitWolf

    std = anchors.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    correlation = LedoitWolf().fit(anchors / std).covariance_
    return correlation * np.outer(std, std)


def _cholesky(covariance: np.ndarray) -> np.ndarray:
    """Cholesky factor of a covariance; a tiny ridge keeps semi-definite matrices factorable."""
    ridge = 1e-10 * max(float(np.trace(covariance)) / len(covariance), 1e-12)
    return np.linalg.cholesky(covariance + ridge * np.eye(len(covariance)))


# -- the registry -----------------------------------------------------------------------------


def _no_images(params: dict) -> int:
    return 0


def _no_cost(params: dict, n: int) -> str | None:
    return None


@dataclass(frozen=True)
class SamplerSpec:
    """A named sampler: its class, default parameters, the paper's name and a short description.

    A `contextual` factory takes a SamplerContext first (a sampler that also uses the decoder or
    images); `images(params)` says how many training images it needs, `cost(params, n)` its extra
    cost in words, `tunable()` its parameters where they are not simply the constructor's."""

    name: str
    paper_name: str
    description: str
    factory: Callable[..., LatentSampler]
    params: dict = field(default_factory=dict)
    contextual: bool = False
    images: Callable[[dict], int] = _no_images
    cost: Callable[[dict, int], str | None] = _no_cost
    tunable: Callable[[], list[SamplerParameter]] | None = None

    def build(self, context: SamplerContext | None = None, **overrides) -> LatentSampler:
        args = {**self.params, **overrides}
        sampler = self.factory(context or SamplerContext(), **args) if self.contextual else self.factory(**args)
        sampler.name = self.name
        return sampler

    def parameters(self) -> list[SamplerParameter]:
        """The parameters a user may set (the app's widgets): the constructor's, minus those fixed here."""
        return self.tunable() if self.tunable is not None else constructor_parameters(self.factory, fixed=self.params)

    @property
    def min_anchors(self) -> int:
        return self.build().min_anchors


SAMPLERS: dict[str, SamplerSpec] = {spec.name: spec for spec in (
    SamplerSpec("uniform_unit", "S_U", "uniform in the cube U(-1, 1), as published", UniformSampler, {"bounds": "unit"}),
    SamplerSpec("uniform", "S_U box", "uniform in the anchors' per-dimension latent box", UniformSampler, {"bounds": "anchors"}),
    SamplerSpec("kde_legacy", "S_KDE", "published per-dimension KDE (bandwidth 0.002, shared seed): "
                "near-copies of random anchors", PerDimensionKDESampler, {"mode": "legacy"}),
    SamplerSpec("kde", "S_KDE indep.", "per-dimension KDE, independent draws, Scott bandwidth x spread",
                PerDimensionKDESampler, {"mode": "independent"}),
    SamplerSpec("kde_multivariate", "S_KDE multivariate", "Gaussian KDE around whole anchors (Scott, diagonal)",
                MultivariateKDESampler),
    SamplerSpec("gaussian", "S_Dist", "one Gaussian fitted to the anchors (Ledoit-Wolf shrunk correlations)", GaussianSampler),
    SamplerSpec("gmm", "S_GMM", "Gaussian mixture (4 components, diagonal) fitted to the anchors", GaussianMixtureSampler),
    SamplerSpec("neigh", "S_Neigh", "3-D UMAP of the anchors, uniform in one global box, inverse transform "
                "(as published)", UmapBoxSampler, {"box": "global"}),
    SamplerSpec("neigh_box", "S_Neigh box", "3-D UMAP of the anchors, uniform in a per-dimension box, inverse transform",
                UmapBoxSampler, {"box": "per_dimension"}),
    SamplerSpec("interpolate", "interpolation", "evenly spaced points between two chosen anchors", InterpolationSampler),
    SamplerSpec("flow", "S_Flow", FLOW_DESCRIPTION, flow_from_context, {"condition": False}, contextual=True,
                tunable=lambda: flow_parameters(condition=False)),
    SamplerSpec("flow_cfg", "S_Flow CFG", FLOW_DESCRIPTION + ", conditioned on the anchors' accuracy "
                "(classifier-free guidance towards a high target)", flow_from_context, {"condition": True},
                contextual=True, tunable=lambda: flow_parameters(condition=True)),
)}


def make_sampler(name: str, **params) -> LatentSampler:
    """A fresh sampler by registry name, with parameters overriding its defaults."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(SAMPLERS)}")
    return SAMPLERS[name].build(**params)


def describe_samplers() -> pd.DataFrame:
    """One row per registered sampler: name, paper name, minimum anchors, description."""
    return pd.DataFrame([{"name": s.name, "paper_name": s.paper_name, "min_anchors": s.min_anchors,
                          "description": s.description} for s in SAMPLERS.values()])


# -- choosing anchors (row positions in a latent table) ---------------------------------------


# -- populations: decoded samples -----------------------------------------------------------


def sampler_parameters(name: str) -> list[SamplerParameter]:
    """The tunable parameters of a registered sampler: its constructor's, minus those the registry fixes."""
    return SAMPLERS[name].parameters()


