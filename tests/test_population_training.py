"""The stacked population trainer trains the same models as the per-model loop."""

from __future__ import annotations

import ctypes
import re
import shutil
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyperrep.images.datasets import ImageSet, load_split
from hyperrep.nets import native
from hyperrep.nets.cnn import CNN_L, CNN_S, CNN_S3, _per_model_images_forward_gemm, forward, init_vector
from hyperrep.nets.optim import PopulationOptimizer
from hyperrep.nets.population import evaluate_population, train_population, use_batched_path
from hyperrep.runtime import cores

needs_kernel = pytest.mark.skipif(not native.available(CNN_S, "tanh"), reason="no C compiler for the native kernel")


@pytest.fixture(scope="module")
def train_images(idx_dir) -> ImageSet:
    return load_split("train", idx_dir).subset(np.arange(400))


def starts(arch, n: int, init: str = "kaiming_uniform") -> torch.Tensor:
    return torch.stack([init_vector(arch, init, torch.Generator().manual_seed(s)) for s in range(n)])


@needs_kernel
@pytest.mark.parametrize("arch", [CNN_S, CNN_S3, CNN_L], ids=lambda a: a.name)
@pytest.mark.parametrize("activation", sorted(native.ACTIVATION_IDS))
def test_native_gradients_equal_autograd(arch, activation):
    torch.manual_seed(0)
    m, b = 5, 7
    weights = starts(arch, m)
    images = torch.randn(30, arch.in_channels, arch.image_size, arch.image_size)
    labels = torch.randint(0, 10, (30,))
    index = torch.randint(0, 30, (m, b))
    expected, expected_loss = [], []
    for i in range(m):
        flat = weights[i].clone().requires_grad_(True)
        loss = F.cross_entropy(forward(arch, activation, flat, images[index[i]]), labels[index[i]])
        loss.backward()
        expected.append(flat.grad)
        expected_loss.append(loss.item())
    kernel = native.PopulationKernel(arch, activation, images, labels, m, threads=2)
    grad, loss, correct = kernel.gradients(weights, index)
    kernel.close()
    scale = torch.stack(expected).abs().max()
    assert (grad - torch.stack(expected)).abs().max() <= 1e-5 * max(scale.item(), 1.0)
    assert torch.allclose(loss, torch.tensor(expected_loss), atol=1e-5)
    with torch.no_grad():
        predicted = torch.stack([forward(arch, activation, weights[i], images[index[i]]).argmax(1) for i in range(m)])
    assert correct.tolist() == (predicted == labels[index]).sum(1).tolist()


@pytest.mark.parametrize("arch", [CNN_S, CNN_S3, CNN_L], ids=lambda a: a.name)
def test_gpu_gemm_forward_equals_the_per_model_forward_with_gradients(arch):
    """The accelerator's im2col + batched-GEMM path (run here on the CPU) is each model's own CNN."""
    torch.manual_seed(0)
    m, b = 4, 3
    weights = starts(arch, m).requires_grad_(True)
    images = torch.randn(m, b, arch.in_channels, arch.image_size, arch.image_size)
    logits = _per_model_images_forward_gemm(arch, "tanh", weights, images)
    expected = torch.stack([forward(arch, "tanh", weights[i], images[i]) for i in range(m)])
    assert logits.shape == (m, b, 10)
    assert torch.allclose(logits, expected, atol=1e-4, rtol=1e-4)
    grad, = torch.autograd.grad(logits.square().sum(), weights)
    expected_grad, = torch.autograd.grad(expected.square().sum(), weights)
    assert torch.allclose(grad, expected_grad, atol=1e-3, rtol=1e-3)


@needs_kernel
def test_native_kernel_rejects_out_of_range_images():
    kernel = native.PopulationKernel(CNN_S, "tanh", torch.zeros(5, 1, 28, 28), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(native.NativeKernelError, match="out of range"):
        kernel.gradients(starts(CNN_S, 2), torch.tensor([[0, 5], [1, 2]]))
    with pytest.raises(native.NativeKernelError, match="expected weights"):
        kernel.gradients(starts(CNN_S, 3), torch.tensor([[0, 1], [1, 2], [2, 3]]))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_population_optimizer_follows_torch_optim(optimizer):
    torch.manual_seed(1)
    params = torch.randn(3, 50)
    rates = torch.tensor([1e-3, 1e-2, 3e-4])
    ours = PopulationOptimizer(optimizer, params.clone(), rates, weight_decay=1e-3)
    theirs = [p.clone().requires_grad_(True) for p in params]
    make = torch.optim.Adam if optimizer == "adam" else lambda ps, lr, weight_decay: torch.optim.SGD(
        ps, lr=lr, momentum=0.9, weight_decay=weight_decay)
    reference = [make([p], lr=r.item(), weight_decay=1e-3) for p, r in zip(theirs, rates)]
    for _ in range(20):
        grad = torch.randn(3, 50)
        ours.step(grad)
        for p, opt, g in zip(theirs, reference, grad):
            p.grad = g.clone()
            opt.step()
    assert torch.allclose(ours.params, torch.stack([p.detach() for p in theirs]), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@needs_kernel
def test_kernel_optimizer_step_equals_the_torch_update(optimizer):
    """The fused step in the kernel and PopulationOptimizer.step give the same weights."""
    torch.manual_seed(2)
    images, labels = torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,))
    weights = starts(CNN_S, 3)
    rates = torch.tensor([1e-3, 1e-2, 3e-4])
    fused = PopulationOptimizer(optimizer, weights.clone(), rates, weight_decay=1e-3)
    plain = PopulationOptimizer(optimizer, weights.clone(), rates, weight_decay=1e-3)
    kernel = native.PopulationKernel(CNN_S, "tanh", images, labels, 3, threads=1)
    for _ in range(5):
        index = torch.randint(0, 20, (3, 4))
        grad, _, _ = kernel.gradients(plain.params, index)
        plain.step(grad.clone())
        kernel.step(fused, index)
    assert fused.steps == plain.steps == 5
    assert torch.allclose(fused.params, plain.params, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(fused.params, weights)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_stacked_training_equals_the_per_model_loop_for_a_few_steps(train_images, optimizer):
    """Same init, same per-seed batches: the weights agree within fp32 tolerance (6 steps of 10)."""
    data = train_images.subset(np.arange(60))
    weights = starts(CNN_S, 4, "uniform")
    settings = dict(epochs=1, lr=torch.tensor([3e-4, 1e-3, 1e-2, 3e-3]), seeds=[1, 2, 3, 4], batch_size=10,
                    optimizer=optimizer, weight_decay=1e-4)
    loop = train_population(CNN_S, "tanh", weights, data, batched=False, **settings)
    stacked = train_population(CNN_S, "tanh", weights, data, batched=True, **settings)
    assert not torch.equal(loop[:, 1], loop[:, 0])  # it trained
    assert torch.allclose(stacked, loop, atol=2e-5, rtol=1e-4)


def test_stacked_training_keeps_each_models_data_order(train_images):
    """Two copies of one model with different seeds see different batches and end apart."""
    data = train_images.subset(np.arange(100))
    weights = starts(CNN_S, 1).repeat(2, 1)
    trained = train_population(CNN_S, "tanh", weights, data, epochs=1, lr=1e-3, seeds=[1, 2], batch_size=10, batched=True)
    assert not torch.allclose(trained[0, -1], trained[1, -1])
    again = train_population(CNN_S, "tanh", weights, data, epochs=1, lr=1e-3, seeds=[1, 1], batch_size=10, batched=True)
    assert torch.equal(again[0, -1], again[1, -1])


def test_one_epoch_gives_the_same_accuracy_distribution(train_images, idx_dir):
    """After a whole epoch (chaotic drift allowed) the populations score alike, model by model."""
    test = load_split("test", idx_dir).subset(np.arange(500))
    weights = starts(CNN_S, 8)
    settings = dict(epochs=1, lr=1e-3, seeds=list(range(8)), batch_size=10)
    loop = train_population(CNN_S, "tanh", weights, train_images, batched=False, **settings)[:, -1]
    stacked = train_population(CNN_S, "tanh", weights, train_images, batched=True, **settings)[:, -1]
    acc_loop = evaluate_population(CNN_S, "tanh", loop, test).accuracy
    acc_stacked = evaluate_population(CNN_S, "tanh", stacked, test).accuracy
    untrained = evaluate_population(CNN_S, "tanh", weights, test).accuracy
    assert acc_loop.mean() > untrained.mean() + 0.2  # the epoch taught them something
    assert abs(acc_loop - acc_stacked).max() < 0.02
    assert abs(acc_loop.mean() - acc_stacked.mean()) < 0.005


def test_cpu_path_choice():
    cpu = torch.device("cpu")
    assert use_batched_path(cpu, CNN_S, "tanh") == native.available(CNN_S, "tanh")
    assert not use_batched_path(cpu, CNN_S, "gelu")  # the kernel has no gelu: the loop is faster than torch stacking
    assert use_batched_path(torch.device("cuda"))


def test_without_the_kernel_training_falls_back_to_torch(train_images, monkeypatch):
    data = train_images.subset(np.arange(40))
    weights = starts(CNN_S, 2)
    settings = dict(epochs=1, lr=1e-3, seeds=[1, 2], batch_size=10)
    expected = train_population(CNN_S, "tanh", weights, data, batched=False, **settings)
    monkeypatch.setattr(native, "available", lambda arch, activation: False)
    stacked_torch = train_population(CNN_S, "tanh", weights, data, batched=True, **settings)
    assert torch.allclose(stacked_torch, expected, atol=2e-5, rtol=1e-4)


def test_the_faster_of_grouped_and_gemm_is_chosen_by_timing(monkeypatch):
    from hyperrep.nets import population
    calls = []

    def fake_time(arch, activation, params, images, gemm):
        calls.append(gemm)
        return 1.0 if gemm else 2.0
    monkeypatch.setattr(population, "_time_step", fake_time)
    monkeypatch.setattr(population, "_GEMM_CHOICES", {})
    weights, images = starts(CNN_S, 3), torch.randn(3, 2, 1, 28, 28)
    assert population.gemm_is_faster(CNN_S, "tanh", weights, images) is True
    assert population.gemm_is_faster(CNN_S, "tanh", weights, images) is True
    assert calls == [False, True]  # timed once per shape, then remembered
    monkeypatch.setattr(population, "_time_step", lambda *a: 2.0 if a[-1] else 1.0)
    assert population.gemm_is_faster(CNN_S, "relu", weights, images) is False


@pytest.fixture
def isolated_native(monkeypatch, tmp_path):
    """A fresh kernel cache folder and fresh build results (restored for later tests)."""
    monkeypatch.setenv("HYPERREP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("HYPERREP_NATIVE", raising=False)
    native._load.cache_clear()
    native._compiler_version.cache_clear()
    yield tmp_path / "cache"
    native._load.cache_clear()
    native._compiler_version.cache_clear()


def fake_compiler(folder, name: str = "fake-cc", version: str = "fake-cc 1.0"):
    """A 'compiler' that prints `version` for --version and fails every build with an error message."""
    script = folder / name
    script.write_text("#!/bin/sh\n"
                      f'if [ "$1" = "--version" ]; then echo "{version}"; exit 0; fi\n'
                      'echo "In file included from population_grads.c:1:" >&2\n'
                      'echo "population_grads.c:3:1: error: fake-cc cannot compile this" >&2\n'
                      "exit 1\n")
    script.chmod(0o755)
    return script


def kernel_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, native.NativeKernelWarning)]


def test_the_cache_key_covers_the_compiler_its_flags_and_the_cpu_features(isolated_native, monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(fake_compiler(tmp_path)))
    monkeypatch.setattr(native, "_cpu_features", lambda: "fpu sse2 avx2")
    base = native.library_path(CNN_S)
    assert native.library_path(CNN_S) == base  # the same compiler on the same CPU reuses its build
    monkeypatch.setattr(native, "_cpu_features", lambda: "fpu sse2 avx2 avx512f")
    assert native.library_path(CNN_S) != base  # another CPU: -march=native compiles other instructions
    monkeypatch.setattr(native, "_cpu_features", lambda: "fpu sse2 avx2")
    monkeypatch.setattr(native, "_FLAGS", [*native._FLAGS, "-ffast-math"])
    assert native.library_path(CNN_S) != base  # another flag
    monkeypatch.setattr(native, "_FLAGS", native._FLAGS[:-1])
    monkeypatch.setenv("CC", str(fake_compiler(tmp_path, version="fake-cc 2.0")))
    native._compiler_version.cache_clear()  # asked once per process: an upgrade shows in the next one
    assert native.library_path(CNN_S) != base  # the same path, another version
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("CC", str(fake_compiler(tmp_path / "elsewhere")))
    assert native.library_path(CNN_S) != base  # the same version, another compiler


def test_cpu_features_come_from_cpuinfo_else_the_processor_name(monkeypatch):
    assert native._cpu_features()

    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/cpuinfo")
    monkeypatch.setattr(native, "open", no_proc, raising=False)
    monkeypatch.setattr(native.platform, "processor", lambda: "Some CPU")
    monkeypatch.setattr(native.platform, "machine", lambda: "arm64")
    assert native._cpu_features() == "Some CPU arm64"


def test_a_failing_compiler_warns_once_and_training_takes_the_torch_path(isolated_native, monkeypatch, tmp_path, train_images):
    cc = fake_compiler(tmp_path)
    monkeypatch.setenv("CC", str(cc))
    data, weights = train_images.subset(np.arange(40)), starts(CNN_S, 2)
    settings = dict(epochs=1, lr=1e-3, seeds=[1, 2], batch_size=10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not native.available(CNN_S, "tanh")
        assert not native.available(CNN_S, "tanh")
        trained = train_population(CNN_S, "tanh", weights, data, batched=True, **settings)
    messages = kernel_warnings(caught)
    assert len(messages) == 1 and "\n" not in messages[0]
    assert str(cc) in messages[0] and "error: fake-cc cannot compile this" in messages[0] and "PyTorch path" in messages[0]
    assert "fake-cc cannot compile this" in native.unavailable_reason(CNN_S, "tanh")
    assert "In file included from" in native.library_path(CNN_S).with_suffix(".log").read_text()  # the whole output is kept
    with pytest.raises(native.NativeKernelError, match="fake-cc cannot compile this"):
        native.PopulationKernel(CNN_S, "tanh", data.images, data.labels, 2)
    expected = train_population(CNN_S, "tanh", weights, data, batched=False, **settings)
    assert torch.allclose(trained, expected, atol=2e-5, rtol=1e-4)


def test_the_real_kernel_builds_wherever_a_c_compiler_exists(isolated_native, monkeypatch):
    """Fails (does not skip) when the machine has cc but the kernel does not build or load."""
    if shutil.which("cc") is None:
        pytest.skip("no cc on this machine: there the kernel is optional")
    monkeypatch.delenv("CC", raising=False)
    assert native.unavailable_reason(CNN_S, "tanh") is None
    assert native.available(CNN_S, "tanh")
    assert native.library_path(CNN_S).is_file()


def test_a_corrupt_cached_library_falls_back_with_one_warning(isolated_native, monkeypatch, tmp_path, train_images):
    monkeypatch.setenv("CC", str(fake_compiler(tmp_path)))  # a rebuild would fail with another message
    target = native.library_path(CNN_S)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"\x7fELF but not really" + bytes(range(256)) * 4)
    data, weights = train_images.subset(np.arange(20)), starts(CNN_S, 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not native.available(CNN_S, "tanh")
        assert not native.available(CNN_S, "tanh")
        trained = train_population(CNN_S, "tanh", weights, data, epochs=1, lr=1e-3, seeds=[1, 2], batch_size=10, batched=True)
    messages = kernel_warnings(caught)
    assert len(messages) == 1 and "could not load" in messages[0] and str(target) in messages[0]
    assert str(target) in native.unavailable_reason(CNN_S)
    assert torch.isfinite(trained).all() and not torch.equal(trained[:, 1], trained[:, 0])
    assert not target.exists()  # removed, so that the next process builds it again


def test_every_ctypes_argument_is_declared_as_the_c_source_declares_it():
    signature = re.search(r"^int population_grads\((.*?)\)\s*\{", native.SOURCE.read_text(), re.S | re.M).group(1)
    params = [" ".join(p.split()) for p in signature.split(",")]
    expected = [ctypes.POINTER(native._OptimizerArgs) if "Optimizer" in p else ctypes.c_void_p if "*" in p
                else ctypes.c_int for p in params]
    assert all(re.fullmatch(r"int \w+", p) for p, t in zip(params, expected) if t is ctypes.c_int)
    assert native.POPULATION_GRADS_ARGTYPES == expected
    if native.available(CNN_S, "tanh"):
        function = native._library(CNN_S).population_grads
        assert function.argtypes == expected and function.restype is ctypes.c_int


@pytest.mark.parametrize("bad", [10, -1])
def test_a_label_outside_the_classes_is_rejected_by_name(bad):
    labels = torch.tensor([0, 3, bad, 9, 1])
    with pytest.raises(native.KernelInputError, match=rf"label {bad} is outside \[0, 10\)"):
        native.PopulationKernel(CNN_S, "tanh", torch.zeros(5, 1, 28, 28), labels, 2)
    assert issubclass(native.KernelInputError, ValueError) and issubclass(native.KernelInputError, native.NativeKernelError)


@needs_kernel
@pytest.mark.parametrize("bad", [10, -1])
def test_training_with_a_bad_label_raises_instead_of_crashing(train_images, bad):
    data = train_images.subset(np.arange(20))
    data.labels[7] = bad
    with pytest.raises(ValueError, match=f"label {bad} is outside"):
        train_population(CNN_S, "tanh", starts(CNN_S, 2), data, epochs=1, lr=1e-3, seeds=[1, 2], batch_size=10, batched=True)


@pytest.mark.parametrize("images, labels, match", [
    (torch.zeros(5, 1, 28, 28), torch.zeros(5), "labels must be an integer tensor"),
    (torch.zeros(5, 1, 28, 28), torch.zeros(4, dtype=torch.long), r"one label per image \(\[5\]\)"),
    (torch.zeros(5, 3, 28, 28), torch.zeros(5, dtype=torch.long), r"takes images \[N, 1, 28, 28\], got \[5, 3, 28, 28\]"),
    (torch.zeros(5, 1, 28, 28, dtype=torch.uint8), torch.zeros(5, dtype=torch.long), "floating-point"),
])
def test_bad_images_and_labels_are_rejected_before_the_kernel(images, labels, match):
    with pytest.raises(native.KernelInputError, match=match):
        native.PopulationKernel(CNN_S, "tanh", images, labels, 2)


@needs_kernel
@pytest.mark.parametrize("weights, index, match", [
    (starts(CNN_S, 2).int(), torch.tensor([[0, 1], [1, 2]]), "weights must be a floating-point tensor"),
    (starts(CNN_S, 2), torch.tensor([[0, -1], [1, 2]]), r"image index -1 out of range \[0, 5\)"),
    (starts(CNN_S, 2), torch.tensor([[0.0, 1.0], [1.0, 2.0]]), "must be an integer tensor"),
    (starts(CNN_S, 2), torch.tensor([0, 1]), r"one non-empty row per model \(\[2, batch\]\), got \[2\]"),
    (starts(CNN_S, 2), torch.zeros(2, 0, dtype=torch.long), "one non-empty row per model"),
])
def test_bad_weights_and_index_are_rejected_before_the_kernel(weights, index, match):
    kernel = native.PopulationKernel(CNN_S, "tanh", torch.zeros(5, 1, 28, 28), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(native.KernelInputError, match=match):
        kernel.gradients(weights, index)


@needs_kernel
def test_a_bad_index_does_not_count_an_optimiser_step():
    kernel = native.PopulationKernel(CNN_S, "tanh", torch.zeros(5, 1, 28, 28), torch.zeros(5, dtype=torch.long), 2)
    opt = PopulationOptimizer("adam", starts(CNN_S, 2), torch.tensor([1e-3, 1e-3]))
    with pytest.raises(native.KernelInputError, match="image index 9 out of range"):
        kernel.step(opt, torch.tensor([[0, 9], [1, 2]]))
    assert opt.steps == 0
    with pytest.raises(native.KernelInputError, match="one float32 CPU learning rate per model"):
        kernel.step(PopulationOptimizer("sgd", starts(CNN_S, 2), torch.tensor([1e-3])), torch.tensor([[0, 1], [1, 2]]))


@needs_kernel
def test_kernel_threads_follow_the_process_share_of_cores(monkeypatch):
    monkeypatch.setattr(cores, "_meter", None)  # restored afterwards: the process shares no cores by default
    monkeypatch.setattr(cores, "_max_threads", 0)
    torch.manual_seed(3)
    images, labels = torch.randn(20, 1, 28, 28), torch.randint(0, 10, (20,))
    weights, index = starts(CNN_S, 6), torch.randint(0, 20, (6, 4))
    kernel = native.PopulationKernel(CNN_S, "tanh", images, labels, 6)
    real, calls = kernel.library, []
    kernel.library = SimpleNamespace(population_grads=lambda *a: calls.append((a[7], a[8])) or real.population_grads(*a))

    def model_ranges():
        calls.clear()
        grad = kernel.gradients(weights, index)[0].clone()
        return sorted(calls), grad

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    unshared, reference = model_ranges()
    assert unshared == [(0, 3), (3, 6)]  # no share: torch's thread count
    for free, expected in [(3.0, [(0, 2), (2, 4), (4, 6)]), (0.5, [(0, 6)]), (8.0, [(0, 1), (1, 3), (3, 4), (4, 6)])]:
        monkeypatch.setattr(cores.FreeCores, "free", lambda self, free=free: free)
        cores.share_cores(max_threads=4)
        ranges, grad = model_ranges()
        assert ranges == expected, free  # the free cores' share, at most max_threads
        assert torch.equal(grad, reference)  # each model's bits do not depend on its thread
    kernel.close()
    assert native.PopulationKernel(CNN_S, "tanh", images, labels, 6, threads=2).thread_count() == 2  # a fixed count wins


@needs_kernel
def test_native_training_takes_one_compute_turn_per_step(train_images, monkeypatch):
    holds = []
    real_hold = cores._queue.hold

    def spy(key):
        holds.append(key)
        return real_hold(key)
    monkeypatch.setattr(cores._queue, "hold", spy)
    data = train_images.subset(np.arange(40))
    train_population(CNN_S, "tanh", starts(CNN_S, 2), data, epochs=2, lr=1e-3, seeds=[1, 2], batch_size=10, batched=True)
    assert len(holds) == 2 * 4 and len({key[1] for key in holds}) == 1  # 4 steps an epoch, all of one job
