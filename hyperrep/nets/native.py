"""The compiled CPU kernel for population training: build it once, call it from threads, fail safe.

`kernels/population_grads.c` computes every model's loss gradient on its own batch (see its
header for why). It is compiled on first use with the system's C compiler into the user's cache
folder and loaded with ctypes; ctypes releases the GIL, so a few Python threads run it on
disjoint ranges of models in parallel. How many threads: the share that `hyperrep.runtime.cores` gives
this process (`cores.adaptive_threads()` once `cores.share_cores()` was called), else torch's
thread count, so the kernel does not oversubscribe cores that other sessions or processes use.

The kernel is an optimisation, never a requirement: training takes the PyTorch path (slower,
same results) whenever it is off (`HYPERREP_NATIVE=0`), no compiler is found, the compiler
fails, or the built library does not load. Failures of the last two kinds are reported with one
`NativeKernelWarning` per architecture (the compiler's full output is kept in a `.log` file next
to the cache), and `unavailable_reason()` says why the kernel is not used.

A build is cached under a key of everything its machine code depends on: the source, the
compiler (resolved path and `--version` output), every flag and define, and the CPU features
that `-march=native` compiles for; so a cache folder shared between machines or compilers never
hands out a library built for another CPU (which would die of an illegal instruction).

The C code trusts its input (no bounds checks inside the hot loops), so `PopulationKernel`
checks shapes, dtypes, label and index ranges in Python before every call and raises
`KernelInputError` naming the bad value: a wrong label would otherwise write outside a buffer.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import torch

from hyperrep.nets.cnn import Architecture
from hyperrep.nets.optim import PopulationOptimizer
from hyperrep.runtime import cores

SOURCE = Path(__file__).resolve().parent / "kernels" / "population_grads.c"
ACTIVATION_IDS = {"tanh": 0, "relu": 1, "sigmoid": 2, "leakyrelu": 3}
_FLAGS = ["-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-shared", "-fPIC", "-std=c99"]
_LIBS = ["-lm"]
MAX_LAYERS = 16  # the kernel's MAX_LAYERS: its per-layer tables have this many slots
BUILD_TIMEOUT_S = 300  # a compiler that hangs must not hang training


class NativeKernelError(RuntimeError):
    """The kernel could not be built or rejected its input."""


class KernelInputError(NativeKernelError, ValueError):
    """An input the kernel would misread (wrong shape, dtype, label or index): caught in Python."""


class NativeKernelWarning(RuntimeWarning):
    """The kernel failed to build or load; training takes the PyTorch path."""


def cache_dir() -> Path:
    """Where compiled kernels live: HYPERREP_CACHE, else XDG_CACHE_HOME or ~/.cache, /hyperrep."""
    root = os.environ.get("HYPERREP_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hyperrep"
    return Path(root)


def _compiler() -> list[str] | None:
    """The compiler command: CC (split like a shell word list, e.g. "ccache gcc"), else cc, gcc or clang."""
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"]) or None
    found = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    return [found] if found else None


def _resolved(program: str) -> str | None:
    """The real file a compiler name runs (symlinks such as cc -> gcc-12 followed), or None."""
    found = shutil.which(program)
    return os.path.realpath(found) if found else None


@lru_cache(maxsize=None)
def _compiler_version(compiler: tuple[str, ...]) -> str:
    """`compiler --version` as printed (stdout and stderr; its exit code when it failed)."""
    try:
        result = subprocess.run([*compiler, "--version"], capture_output=True, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.SubprocessError) as error:
        return f"--version failed: {error}"
    return result.stdout + result.stderr + (f"exit {result.returncode}" if result.returncode else "")


def _cpu_features() -> str:
    """What `-march=native` compiles for: the CPU's feature flags from /proc/cpuinfo (`flags` on
    x86, `Features` on ARM), else (no /proc) the processor's name and machine type."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return value.strip()
    except OSError:
        pass
    return f"{platform.processor()} {platform.machine()}"


def _defines(arch: Architecture) -> list[str]:
    """The architecture as compile-time constants (see the kernel's header)."""
    spec = ",".join(f"{0 if layer.kind == 'conv' else 1},{layer.in_features},{layer.out_features},"
                    f"{layer.kernel},{int(layer.pool)}" for layer in arch.layers)
    return [f"-DARCH_SPEC={spec}", f"-DIN_C={arch.in_channels}", f"-DSIDE={arch.image_size}"]


def _command(arch: Architecture, compiler: list[str], output: str) -> list[str]:
    """The compile command: compiler, flags, the architecture's defines, source, output, libraries."""
    return [*compiler, *_FLAGS, *_defines(arch), str(SOURCE), "-o", output, *_LIBS]


def _cache_key(arch: Architecture, compiler: list[str]) -> str:
    """16 hex digits of a hash over everything the machine code depends on (module docstring)."""
    parts = [SOURCE.read_text(), str(_resolved(compiler[0])), _compiler_version(tuple(compiler)),
             *compiler, *_FLAGS, *_defines(arch), *_LIBS, platform.machine(), _cpu_features()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def library_path(arch: Architecture) -> Path | None:
    """The cached library for `arch` with the current compiler and CPU, or None without a compiler."""
    compiler = _compiler()
    return None if compiler is None else cache_dir() / f"population_grads-{arch.name}-{_cache_key(arch, compiler)}.so"


def _first_error(output: str, returncode: int) -> str:
    """The line of a compiler's output that says what went wrong: the first with 'error', else the first."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or [f"exit code {returncode}, no output"])[0]


def _build(arch: Architecture, compiler: list[str], target: Path) -> str | None:
    """Compile the kernel into `target`; None when it worked, else why not (one line). The full
    compiler output of a failed build is kept in `target` with the suffix .log."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        command = _command(arch, compiler, str(built))
        try:
            result = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as error:
            return f"{compiler[0]} could not be run to build the kernel for {arch.name}: {error}"
        if result.returncode != 0:
            log = target.with_suffix(".log")
            log.write_text(f"$ {shlex.join(command)}\n{result.stdout}{result.stderr}")
            first = _first_error(result.stderr or result.stdout, result.returncode)
            return f"{compiler[0]} failed to build the kernel for {arch.name}: {first} (full output: {log})"
        os.replace(built, target)  # atomic: concurrent builders never see a half-written file
    return None


class _OptimizerArgs(ctypes.Structure):
    """The kernel's `Optimizer` struct (same fields, same order)."""

    _fields_ = [("kind", ctypes.c_int), ("lr", ctypes.c_void_p), ("weight_decay", ctypes.c_float),
                ("beta1", ctypes.c_float), ("beta2", ctypes.c_float), ("eps", ctypes.c_float),
                ("momentum", ctypes.c_float), ("bias_correction1", ctypes.c_double),
                ("bias_correction2_sqrt", ctypes.c_double), ("first_step", ctypes.c_int),
                ("first", ctypes.c_void_p), ("second", ctypes.c_void_p)]


# population_grads(act, n_params, weights, images, labels, index, batch, m0, m1, grad, loss, correct, opt):
# declared so that ctypes converts (and checks) every argument instead of guessing from the Python value
_INT, _PTR = ctypes.c_int, ctypes.c_void_p
POPULATION_GRADS_ARGTYPES = [_INT, _INT, _PTR, _PTR, _PTR, _PTR, _INT, _INT, _INT, _PTR, _PTR, _PTR,
                             ctypes.POINTER(_OptimizerArgs)]


def _open(target: Path) -> ctypes.CDLL:
    """Load a built library and declare its function's signature (OSError, AttributeError on a bad file)."""
    library = ctypes.CDLL(str(target))
    library.population_grads.argtypes = POPULATION_GRADS_ARGTYPES
    library.population_grads.restype = ctypes.c_int
    return library


def _load_failure(arch: Architecture, target: Path, error: Exception) -> str:
    """Why a cached library did not load; the file is removed so that the next process rebuilds it."""
    try:
        target.unlink()
    except OSError:
        pass
    return f"could not load the kernel for {arch.name} from {target} (removed, rebuilt next run): {error}"


@lru_cache(maxsize=None)
def _load(arch: Architecture) -> tuple[ctypes.CDLL | None, str | None]:
    """(the kernel for `arch`, None) or (None, why not); built on the first call, warned about once."""
    if os.environ.get("HYPERREP_NATIVE", "1") == "0":
        return None, "turned off (HYPERREP_NATIVE=0)"
    if sys.platform == "win32":
        return None, "not built on Windows"
    compiler = _compiler()
    if compiler is None:
        return None, "no C compiler found (CC, cc, gcc or clang)"
    try:
        target = library_path(arch)
        failure = None if target.exists() else _build(arch, compiler, target)
    except OSError as error:  # the cache folder cannot be written, the source cannot be read
        failure = f"could not build the kernel for {arch.name} with {compiler[0]}: {error}"
    if failure is None:
        try:
            return _open(target), None
        except (OSError, AttributeError) as error:
            failure = _load_failure(arch, target, error)
    warnings.warn(f"hyperrep.nets.native: {failure}; training takes the slower PyTorch path", NativeKernelWarning, stacklevel=2)
    return None, failure


def _library(arch: Architecture) -> ctypes.CDLL | None:
    """The kernel compiled for `arch` (built on first call, then reused from the cache), or None."""
    return _load(arch)[0]


def _unsupported(arch: Architecture, activation: str | None) -> str | None:
    """Why the kernel cannot run this model at all (whatever the build), or None."""
    if activation is not None and activation not in ACTIVATION_IDS:
        return f"no {activation} activation in the kernel (it has {', '.join(ACTIVATION_IDS)})"
    if arch.layers[-1].kind != "fc":
        return f"{arch.name} does not end in a linear layer"
    if len(arch.layers) > MAX_LAYERS:
        return f"{arch.name} has {len(arch.layers)} layers, the kernel at most {MAX_LAYERS}"
    return None


def unavailable_reason(arch: Architecture, activation: str | None = None) -> str | None:
    """Why training `arch` (with `activation`, when given) does not use the kernel; None when it does."""
    return _unsupported(arch, activation) or _load(arch)[1]


def available(arch: Architecture, activation: str) -> bool:
    """True when the kernel is built and handles this architecture and activation."""
    return _unsupported(arch, activation) is None and _library(arch) is not None


def _is_integer(tensor: torch.Tensor) -> bool:
    return not (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool)


def _check_images(arch: Architecture, images: torch.Tensor) -> None:
    shape = (arch.in_channels, arch.image_size, arch.image_size)
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise KernelInputError(f"images must be a floating-point tensor, got {getattr(images, 'dtype', type(images))}")
    if images.dim() != 4 or tuple(images.shape[1:]) != shape:
        raise KernelInputError(f"{arch.name} takes images [N, {', '.join(map(str, shape))}], got {list(images.shape)}")


def _check_labels(arch: Architecture, labels: torch.Tensor, n_images: int) -> None:
    """Labels are class numbers in [0, classes): the kernel indexes its logits buffer with them."""
    classes = arch.layers[-1].out_features
    if not isinstance(labels, torch.Tensor) or not _is_integer(labels):
        raise KernelInputError(f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels))}")
    if tuple(labels.shape) != (n_images,):
        raise KernelInputError(f"expected one label per image ([{n_images}]), got {list(labels.shape)}")
    outside = labels[(labels < 0) | (labels >= classes)]
    if len(outside):
        raise KernelInputError(f"label {outside[0].item()} is outside [0, {classes}): {arch.name} has {classes} classes")


def _check_weights(weights: torch.Tensor, n_models: int, n_params: int) -> None:
    if not isinstance(weights, torch.Tensor) or not weights.is_floating_point():
        raise KernelInputError(f"weights must be a floating-point tensor, got {getattr(weights, 'dtype', type(weights))}")
    if tuple(weights.shape) != (n_models, n_params):
        raise KernelInputError(f"expected weights [{n_models}, {n_params}], got {list(weights.shape)}")


def _is_cpu_float32(tensor: torch.Tensor | None, numel: int) -> bool:
    return (tensor is not None and tensor.device.type == "cpu" and tensor.dtype == torch.float32
            and tensor.is_contiguous() and tensor.numel() == numel)


def _check_optimizer(opt: PopulationOptimizer, n_models: int, n_params: int) -> None:
    """The kernel updates the parameters and optimiser state in place and reads one rate per model."""
    size = n_models * n_params
    if not _is_cpu_float32(opt.params, size) or tuple(opt.params.shape) != (n_models, n_params):
        raise KernelInputError(f"the optimiser's parameters must be a contiguous float32 CPU tensor [{n_models}, "
                               f"{n_params}], got {opt.params.dtype} {list(opt.params.shape)} on {opt.params.device}")
    if not _is_cpu_float32(opt.lr, n_models):
        raise KernelInputError(f"the optimiser needs one float32 CPU learning rate per model ({n_models}), "
                               f"got {list(opt.lr.shape)}")
    buffers = [opt.first] + ([opt.second] if opt.name == "adam" else [])
    if not all(_is_cpu_float32(buffer, size) for buffer in buffers):
        raise KernelInputError(f"the optimiser's state must be contiguous float32 CPU tensors [{n_models}, {n_params}]")


def _checked_index(index: torch.Tensor, n_models: int, n_images: int) -> torch.Tensor:
    """`index` [models, batch] of image rows, as the kernel reads it (contiguous int64 on the CPU)."""
    if not isinstance(index, torch.Tensor) or not _is_integer(index):
        raise KernelInputError(f"the image index must be an integer tensor, got {getattr(index, 'dtype', type(index))}")
    if index.dim() != 2 or index.shape[0] != n_models or index.shape[1] == 0:
        raise KernelInputError(f"the image index must be one non-empty row per model ([{n_models}, batch]), "
                               f"got {list(index.shape)}")
    outside = index[(index < 0) | (index >= n_images)]
    if len(outside):
        raise KernelInputError(f"image index {outside[0].item()} out of range [0, {n_images})")
    return index.to("cpu", torch.int64).contiguous()


def _pointer(tensor: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(tensor.data_ptr() if tensor is not None else None)


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
    place, model by model while its gradient is still in cache. `threads` fixes the number of
    threads; by default each call takes the process's current share (`thread_count()`)."""

    def __init__(self, arch: Architecture, activation: str, images: torch.Tensor, labels: torch.Tensor,
                 n_models: int, threads: int | None = None):
        _check_images(arch, images)
        _check_labels(arch, labels, len(images))
        if n_models < 1 or (threads is not None and threads < 1):
            raise KernelInputError(f"need at least one model and one thread, got {n_models} models, {threads} threads")
        if not available(arch, activation):
            raise NativeKernelError(f"the native kernel does not run {arch.name} with {activation}: "
                                    f"{unavailable_reason(arch, activation)}")
        self.arch, self.library = arch, _library(arch)
        self.activation = ACTIVATION_IDS[activation]
        self.images = images.detach().to("cpu", torch.float32).contiguous()
        self.labels = labels.detach().to("cpu", torch.int64).contiguous()
        self.n_models, self.threads = n_models, threads
        self.grad = torch.empty(n_models, arch.n_params)
        self.loss = torch.empty(n_models)
        self.correct = torch.empty(n_models, dtype=torch.int64)
        self.pool: ThreadPoolExecutor | None = None

    def thread_count(self) -> int:
        """Threads for the next call: the fixed count, else the share hyperrep.runtime.cores gives this
        process now (with `cores.share_cores()`), else torch's thread count; at most one per model."""
        share = self.threads or cores.adaptive_threads() or torch.get_num_threads()
        return max(1, min(share, self.n_models))

    def gradients(self, weights: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(grad [M, P], mean loss [M], right predictions [M]) of `weights` [M, P] on batches `index` [M, B]."""
        _check_weights(weights, self.n_models, self.arch.n_params)
        index = _checked_index(index, self.n_models, len(self.labels))
        self._run(weights.detach().to("cpu", torch.float32).contiguous(), index, _NO_OPTIMIZER)
        return self.grad, self.loss, self.correct

    def step(self, optimizer: PopulationOptimizer, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step of every model on its batch; returns (mean loss [M], right predictions [M])."""
        _check_optimizer(optimizer, self.n_models, self.arch.n_params)
        index = _checked_index(index, self.n_models, len(self.labels))  # checked before the step is counted
        self._run(optimizer.params, index, _optimizer_args(optimizer))
        return self.loss, self.correct

    def _run(self, weights: torch.Tensor, index: torch.Tensor, opt: _OptimizerArgs) -> None:
        """The kernel on checked inputs: `weights` [M, P] and `index` [M, B] contiguous CPU tensors."""
        opt_ref = ctypes.byref(opt)
        call = lambda bounds: self.library.population_grads(  # noqa: E731
            self.activation, self.arch.n_params, _pointer(weights), _pointer(self.images), _pointer(self.labels),
            _pointer(index), index.shape[1], bounds[0], bounds[1], _pointer(self.grad), _pointer(self.loss),
            _pointer(self.correct), opt_ref)
        codes = self._map(call)
        if any(codes):
            raise NativeKernelError(f"the kernel rejected its input (code {min(codes)})")

    def _map(self, call) -> list[int]:
        """`call((m0, m1))` on `thread_count()` disjoint ranges of models, in parallel; their return codes."""
        threads = self.thread_count()
        ranges = [(self.n_models * t // threads, self.n_models * (t + 1) // threads) for t in range(threads)]
        if threads == 1:
            return [call(ranges[0])]
        if self.pool is None:  # sized for the largest share; threads start only as a call needs them
            self.pool = ThreadPoolExecutor(self.n_models, thread_name_prefix="hyperrep-kernel")
        return list(self.pool.map(call, ranges))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
