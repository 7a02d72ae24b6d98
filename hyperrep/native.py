"""The compiled CPU kernel for population training: build it once, call it from threads.

`kernels/population_grads.c` computes every model's loss gradient on its own batch (see its
header for why). It is compiled on first use with the system's C compiler into the user's cache
folder and loaded with ctypes; ctypes releases the GIL, so a few Python threads run it on
disjoint ranges of models in parallel. Without a compiler, `available()` is False and training
takes the PyTorch path (slower, same results).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import torch

from hyperrep.cnn import Architecture
from hyperrep.optim import PopulationOptimizer

SOURCE = Path(__file__).resolve().parent / "kernels" / "population_grads.c"
ACTIVATION_IDS = {"tanh": 0, "relu": 1, "sigmoid": 2, "leakyrelu": 3}
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-std=c99"]


class NativeKernelError(RuntimeError):
    """The kernel could not be built or rejected its input."""


def cache_dir() -> Path:
    """Where compiled kernels live: HYPERREP_CACHE, else XDG_CACHE_HOME or ~/.cache, /hyperrep."""
    root = os.environ.get("HYPERREP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hyperrep"
    return Path(root)


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def _defines(arch: Architecture) -> list[str]:
    """The architecture as compile-time constants (see the kernel's header)."""
    spec = ",".join(f"{0 if layer.kind == 'conv' else 1},{layer.in_features},{layer.out_features},"
                    f"{layer.kernel},{int(layer.pool)}" for layer in arch.layers)
    return [f"-DARCH_SPEC={spec}", f"-DIN_C={arch.in_channels}", f"-DSIDE={arch.image_size}"]


@lru_cache(maxsize=None)
def _library(arch: Architecture) -> ctypes.CDLL | None:
    """The kernel compiled for `arch` (built on first call, then reused from the cache), or None."""
    if os.environ.get("HYPERREP_NATIVE", "1") == "0" or sys.platform == "win32":
        return None
    compiler = _compiler()
    if compiler is None:
        return None
    command = [compiler, *_FLAGS, *_defines(arch)]
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([*command, os.uname().machine]).encode()).hexdigest()[:16]
    target = cache_dir() / f"population_grads-{arch.name}-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            built = Path(scratch) / target.name
            result = subprocess.run([*command, str(SOURCE), "-o", str(built), "-lm"], capture_output=True, text=True)
            if result.returncode != 0:
                return None
            os.replace(built, target)  # atomic: concurrent builders never see a half-written file
    library = ctypes.CDLL(str(target))
    library.population_grads.restype = ctypes.c_int
    return library


def available(arch: Architecture, activation: str) -> bool:
    """True when the kernel is built and handles this architecture and activation."""
    return activation in ACTIVATION_IDS and arch.layers[-1].kind == "fc" and _library(arch) is not None


def _pointer(tensor: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr() if tensor is not None else None)


class _OptimizerArgs(ctypes.Structure):
    """The kernel's `Optimizer` struct (same fields, same order)."""

    _fields_ = [("kind", ctypes.c_int), ("lr", ctypes.c_void_p), ("weight_decay", ctypes.c_float),
                ("beta1", ctypes.c_float), ("beta2", ctypes.c_float), ("eps", ctypes.c_float),
                ("momentum", ctypes.c_float), ("bias_correction1", ctypes.c_double),
                ("bias_correction2_sqrt", ctypes.c_double), ("first_step", ctypes.c_int),
                ("first", ctypes.c_void_p), ("second", ctypes.c_void_p)]


_NO_OPTIMIZER = _OptimizerArgs(kind=0)
_OPTIMIZER_IDS = {"adam": 1, "sgd": 2}


def _optimizer_args(opt: PopulationOptimizer) -> _OptimizerArgs:
    step = opt.advance()
    correction1, correction2_sqrt = opt.bias_corrections()
    return _OptimizerArgs(_OPTIMIZER_IDS[opt.name], _pointer(opt.lr), opt.weight_decay, opt.betas[0], opt.betas[1],
                          opt.eps, opt.momentum, correction1, correction2_sqrt, int(step == 1),
                          _pointer(opt.first), _pointer(opt.second))


class PopulationKernel:
    """One training run's link to the kernel: the images, labels, buffers and a thread pool.

    `gradients(weights, index)` gives every model's loss gradient on its own batch (rows of the
    images, [M, B]); `step(optimizer, index)` also applies the optimiser to `optimizer.params` in
    place, model by model while its gradient is still in cache."""

    def __init__(self, arch: Architecture, activation: str, images: torch.Tensor, labels: torch.Tensor,
                 n_models: int, threads: int | None = None):
        if not available(arch, activation):
            raise NativeKernelError(f"the native kernel does not handle {arch.name} with {activation}")
        self.arch, self.library = arch, _library(arch)
        self.activation = ACTIVATION_IDS[activation]
        self.images = images.detach().to("cpu", torch.float32).contiguous()
        self.labels = labels.detach().to("cpu", torch.int64).contiguous()
        self.n_models = n_models
        self.grad = torch.empty(n_models, arch.n_params)
        self.loss = torch.empty(n_models)
        self.correct = torch.empty(n_models, dtype=torch.int64)
        threads = max(1, min(threads or torch.get_num_threads(), n_models))
        self.ranges = [(n_models * t // threads, n_models * (t + 1) // threads) for t in range(threads)]
        self.pool = ThreadPoolExecutor(threads) if threads > 1 else None

    def gradients(self, weights: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grad [M, P], mean loss [M], right predictions [M]) of `weights` [M, P] on batches `index` [M, B]."""
        weights = weights.detach().to(torch.float32).contiguous()
        self._run(weights, index, _NO_OPTIMIZER)
        return self.grad, self.loss, self.correct

    def step(self, optimizer: PopulationOptimizer, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step of every model on its batch; returns (mean loss [M], right predictions [M])."""
        params = optimizer.params
        if params.device.type != "cpu" or params.dtype != torch.float32 or not params.is_contiguous():
            raise NativeKernelError("the optimiser's parameters must be a contiguous float32 CPU tensor")
        self._run(params, index, _optimizer_args(optimizer))
        return self.loss, self.correct

    def _run(self, weights: torch.Tensor, index: torch.Tensor, opt: _OptimizerArgs) -> None:
        if weights.shape != (self.n_models, self.arch.n_params):
            raise NativeKernelError(f"expected weights [{self.n_models}, {self.arch.n_params}], got {list(weights.shape)}")
        index = index.to(torch.int64).contiguous()
        if index.shape[0] != self.n_models or index.min() < 0 or index.max() >= len(self.labels):
            raise NativeKernelError("image index out of range or not one row per model")
        opt_ref = ctypes.byref(opt)
        call = lambda bounds: self.library.population_grads(  # noqa: E731
            self.activation, self.arch.n_params, _pointer(weights), _pointer(self.images), _pointer(self.labels),
            _pointer(index), index.shape[1], bounds[0], bounds[1], _pointer(self.grad), _pointer(self.loss),
            _pointer(self.correct), opt_ref)
        codes = list(self.pool.map(call, self.ranges)) if self.pool else [call(self.ranges[0])]
        if any(codes):
            raise NativeKernelError(f"the kernel rejected its input (code {min(codes)})")

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
