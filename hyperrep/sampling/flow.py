"""A learned sampler: conditional flow matching (rectified flow) over the standardised anchor latents.

A small residual MLP learns the velocity v(x_t, t) of the straight path x_t = (1 - t) x0 + t x1
from noise x0 ~ N(0, I) to an anchor x1 (target x1 - x0); sampling solves dx/dt = v from t = 0 to 1
(Euler or Heun). With `condition`, the network also sees the anchor's standardised score (its
accuracy), dropped with probability `condition_dropout` during training, so one network gives both
the conditioned and the unconditioned velocity: classifier-free guidance samples with
v = v_uncond + guidance * (v_cond - v_uncond) at a high `target` score. A fitted sampler saves to a
folder (safetensors + JSON, no pickle) that loads back only for the hyper-representation it was
trained on (`load_flow_sampler`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hyperrep.ae.artifact import Fingerprint, hyperrep_fingerprint
from hyperrep.io.files import read_json, read_tensors, write_json, write_tensors
from hyperrep.runtime import cores
from hyperrep.sampling.base import LatentSampler, SamplerContext
from hyperrep.sampling.parameters import SamplerParameter, constructor_parameters

FLOW_DESCRIPTION = "flow matching: a small MLP learns to carry Gaussian noise to the standardised anchors"
CONDITION_PARAMETERS = ("guidance", "target_quantile", "target", "condition_dropout")
SOLVERS = ("euler", "heun")
SAMPLER_FILE, WEIGHTS_FILE = "sampler.json", "velocity.safetensors"
FORMAT = "hyperrep-flow-sampler"
TIME_FREQUENCIES = 16


class VelocityField(nn.Module):
    """v(x, t, score): an input layer, `depth` residual blocks that each add the embedded time (and
    score), and an output layer; the score enters as (score, 1), or (0, 0) where it is dropped."""

    def __init__(self, dim: int, width: int, depth: int, condition: bool):
        super().__init__()
        self.condition = condition
        embedded = 2 * TIME_FREQUENCIES + (2 if condition else 0)
        self.inp = nn.Linear(dim, width)
        self.embed = nn.Sequential(nn.Linear(embedded, width), nn.SiLU(), nn.Linear(width, width))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.hidden = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.shifts = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.back = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, dim))
        for layer in self.back:  # each block starts as the identity
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, score: torch.Tensor | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        features = [time_embedding(t)]
        if self.condition:
            features += [(score * keep)[:, None], keep[:, None]]
        e = self.embed(torch.cat(features, dim=1))
        h = self.inp(x)
        for norm, hidden, shift, back in zip(self.norms, self.hidden, self.shifts, self.back):
            h = h + back(F.silu(hidden(norm(h)) + shift(e)))
        return self.out(h)


def time_embedding(t: torch.Tensor) -> torch.Tensor:
    """Sinusoidal features [n, 2F] of times t in [0, 1], at frequencies from 1 to 1000 (log spaced)."""
    frequencies = torch.exp(torch.linspace(0.0, math.log(1000.0), TIME_FREQUENCIES, device=t.device))
    angles = t[:, None] * frequencies[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class FlowMatchingSampler(LatentSampler):
    """Flow matching over the standardised anchors (see the module docstring): `steps` AdamW steps
    (learning rate `learning_rate`, cosine decay) on minibatches of `batch_size` anchors, a residual
    MLP of `width` and `depth`, seeded by `random_state`; `sample(n, seed)` solves the ODE with
    `ode_steps` steps of `solver`. With `condition`, guided towards `target` (default: the anchors'
    score quantile `target_quantile`) with weight `guidance`. `progress(done, steps)` follows
    training; `should_stop()` is asked before every step and ends training early (the sampler stays
    usable; `steps_done_` counts the steps taken)."""

    name = "flow"

    def __init__(self, condition: bool = False, steps: int = 1500, batch_size: int = 128, width: int = 256,
                 depth: int = 3, learning_rate: float = 0.002, weight_decay: float = 0.0001, ode_steps: int = 32,
                 solver: str = "heun", guidance: float = 2.0, target_quantile: float = 0.9, target: float | None = None,
                 condition_dropout: float = 0.2, random_state: int = 0,
                 progress: Callable[[int, int], None] | None = None, should_stop: Callable[[], bool] | None = None):
        check_flow_params(steps=steps, batch_size=batch_size, width=width, depth=depth, learning_rate=learning_rate,
                          weight_decay=weight_decay, ode_steps=ode_steps, solver=solver, target_quantile=target_quantile,
                          condition_dropout=condition_dropout)
        self.condition, self.steps, self.batch_size, self.width, self.depth = condition, steps, batch_size, width, depth
        self.learning_rate, self.weight_decay, self.ode_steps, self.solver = learning_rate, weight_decay, ode_steps, solver
        self.guidance, self.target_quantile, self.target = guidance, target_quantile, target
        self.condition_dropout, self.random_state = condition_dropout, random_state
        self.progress, self.should_stop = progress, should_stop

    @property
    def min_anchors(self) -> int:
        return 2

    @property
    def uses_scores(self) -> bool:
        return self.condition

    @property
    def fitted(self) -> bool:
        return hasattr(self, "velocity_")

    def _fit(self, anchors: np.ndarray) -> None:
        if self.condition and self.scores_ is None:
            raise ValueError(f"sampler {self.name!r} is conditioned on the anchors' scores: fit(anchors, scores=...) "
                             "with one accuracy per anchor")
        self.mean_, self.std_ = anchors.mean(axis=0), standard_deviation(anchors)
        data = torch.as_tensor((anchors - self.mean_) / self.std_, dtype=torch.float32)
        scores = None
        if self.condition:
            self.score_mean_, self.score_std_ = float(self.scores_.mean()), float(standard_deviation(self.scores_))
            self.target_ = float(np.quantile(self.scores_, self.target_quantile) if self.target is None else self.target)
            scores = torch.as_tensor((self.scores_ - self.score_mean_) / self.score_std_, dtype=torch.float32)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            self.velocity_ = VelocityField(data.shape[1], self.width, self.depth, self.condition)
        self.steps_done_ = self._train(data, scores)
        self.velocity_.eval()

    def _train(self, data: torch.Tensor, scores: torch.Tensor | None) -> int:
        """The training loop; returns the steps taken (fewer than `steps` when `should_stop` said so)."""
        generator = torch.Generator().manual_seed(self.random_state)
        optimiser = torch.optim.AdamW(self.velocity_.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        batch = min(self.batch_size, len(data))
        for step in range(self.steps):
            if self.should_stop is not None and self.should_stop():
                return step
            with cores.turn(), torch.enable_grad():
                for group in optimiser.param_groups:  # cosine decay to 0 over `steps`
                    group["lr"] = self.learning_rate * 0.5 * (1 + math.cos(math.pi * step / self.steps))
                loss = self._loss(data, scores, batch, generator)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
            if self.progress is not None:
                self.progress(step + 1, self.steps)
        return self.steps

    def _loss(self, data: torch.Tensor, scores: torch.Tensor | None, batch: int, generator: torch.Generator) -> torch.Tensor:
        """Mean squared error of the predicted velocity on one minibatch of straight noise-to-anchor paths."""
        rows = torch.randint(len(data), (batch,), generator=generator)
        x1 = data[rows]
        x0 = torch.randn(x1.shape, generator=generator)
        t = torch.rand(batch, generator=generator)
        xt = (1 - t[:, None]) * x0 + t[:, None] * x1
        score, keep = None, None
        if self.condition:
            score = scores[rows]
            keep = (torch.rand(batch, generator=generator) >= self.condition_dropout).float()
        return F.mse_loss(self.velocity_(xt, t, score, keep), x1 - x0)

    def _velocity(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """The velocity at time t: unconditioned, or guided towards the target score."""
        times = torch.full((len(x),), t)
        if not self.condition:
            return self.velocity_(x, times)
        target = torch.full((len(x),), (self.target_ - self.score_mean_) / self.score_std_)
        both = self.velocity_(torch.cat([x, x]), torch.cat([times, times]), torch.cat([target, target]),
                              torch.cat([torch.ones(len(x)), torch.zeros(len(x))]))
        conditioned, unconditioned = both[: len(x)], both[len(x):]
        return unconditioned + self.guidance * (conditioned - unconditioned)

    def _sample(self, n: int, seed: int) -> np.ndarray:
        x = torch.randn((n, len(self.mean_)), generator=torch.Generator().manual_seed(seed))
        dt = 1.0 / self.ode_steps
        with torch.no_grad():
            for step in range(self.ode_steps):
                t = step * dt
                v = self._velocity(x, t)
                if self.solver == "heun":
                    v = 0.5 * (v + self._velocity(x + dt * v, t + dt))
                x = x + dt * v
        return x.double().numpy() * self.std_ + self.mean_

    def save(self, path: Path | str) -> Path:
        """Write the fitted sampler to the folder `path`: the network as safetensors, its parameters,
        standardisation and the hyper-representation's fingerprint as JSON."""
        if not self.fitted:
            raise RuntimeError(f"sampler {self.name!r}: fit it before saving")
        if self.fingerprint_ is None:
            raise ValueError(f"sampler {self.name!r}: no hyper-representation recorded (fit it through "
                             "sample_population or draw_population, or set fingerprint_)")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_tensors(path / WEIGHTS_FILE, self.velocity_.state_dict())
        write_json(path / SAMPLER_FILE, {
            "format": FORMAT, "name": self.name, "params": self.params(), "steps_done": self.steps_done_,
            "dim": len(self.mean_), "mean": self.mean_.tolist(), "std": self.std_.tolist(),
            "scores": {"mean": self.score_mean_, "std": self.score_std_, "target": self.target_} if self.condition else None,
            "fingerprint": {"digest": self.fingerprint_.digest, "name": self.fingerprint_.name},
        })
        return path


def standard_deviation(values: np.ndarray) -> np.ndarray:
    """The per-column standard deviation, 1 where a column is constant (nothing to scale)."""
    std = np.asarray(values.std(axis=0))
    return np.where(std > 1e-12, std, 1.0)


def check_flow_params(*, steps: int, batch_size: int, width: int, depth: int, learning_rate: float, weight_decay: float,
                      ode_steps: int, solver: str, target_quantile: float, condition_dropout: float) -> None:
    """A ValueError naming the first parameter out of its range."""
    for name, value, least in (("steps", steps, 0), ("batch_size", batch_size, 1), ("width", width, 1),
                               ("depth", depth, 0), ("ode_steps", ode_steps, 1)):
        if int(value) != value or value < least:
            raise ValueError(f"sampler 'flow': {name} must be a whole number >= {least}, got {value}")
    if not learning_rate > 0 or not weight_decay >= 0:
        raise ValueError(f"sampler 'flow': learning_rate must be > 0 and weight_decay >= 0, got {learning_rate}, {weight_decay}")
    if solver not in SOLVERS:
        raise ValueError(f"sampler 'flow': solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if not 0 <= target_quantile <= 1 or not 0 <= condition_dropout < 1:
        raise ValueError(f"sampler 'flow': target_quantile must be in [0, 1] and condition_dropout in [0, 1), "
                         f"got {target_quantile}, {condition_dropout}")


def load_flow_sampler(path: Path | str, hyperrep, *, fingerprint: Fingerprint | None = None) -> FlowMatchingSampler:
    """A sampler written by `save`, for `hyperrep` (or its `fingerprint`, if already computed); one
    trained on another hyper-representation's latents is a ValueError naming both."""
    path = Path(path)
    stored = read_json(path / SAMPLER_FILE)
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        raise ValueError(f"{path / SAMPLER_FILE}: not a flow sampler (needs format {FORMAT!r})")
    own = Fingerprint(**stored["fingerprint"])
    current = fingerprint or hyperrep_fingerprint(hyperrep)
    if own.digest != current.digest:
        raise ValueError(f"{path}: this flow sampler was trained on the latents of {own.name} ({own.digest[:12]}), "
                         f"not of {current.name} ({current.digest[:12]}); train one on this hyper-representation")
    sampler = FlowMatchingSampler(**stored["params"])
    sampler.name, sampler.fingerprint_, sampler.steps_done_ = stored["name"], own, int(stored["steps_done"])
    sampler.mean_, sampler.std_ = np.asarray(stored["mean"]), np.asarray(stored["std"])
    if sampler.condition:
        scores = stored["scores"]
        sampler.score_mean_, sampler.score_std_, sampler.target_ = scores["mean"], scores["std"], scores["target"]
    sampler.velocity_ = VelocityField(int(stored["dim"]), sampler.width, sampler.depth, sampler.condition)
    sampler.velocity_.load_state_dict(read_tensors(path / WEIGHTS_FILE))
    sampler.velocity_.eval()
    return sampler


def flow_parameters(condition: bool) -> list[SamplerParameter]:
    """The flow sampler's tunable parameters (the app's widgets); the guidance ones only with `condition`."""
    fixed = ("condition", "progress", "should_stop") + (() if condition else CONDITION_PARAMETERS)
    found = constructor_parameters(FlowMatchingSampler, fixed=fixed)
    return [replace(p, kind="choice", options=SOLVERS) if p.name == "solver" else p for p in found]


def flow_from_context(context: SamplerContext, **params) -> FlowMatchingSampler:
    """The flow sampler with the context's progress callback and stop question."""
    return FlowMatchingSampler(**params, progress=context.progress, should_stop=context.stop)
