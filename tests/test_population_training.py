"""The stacked population trainer trains the same models as the per-model loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyperrep import native
from hyperrep.cnn import CNN_L, CNN_S, CNN_S3, _per_model_images_forward_gemm, forward, init_vector
from hyperrep.data import ImageSet, load_split
from hyperrep.optim import PopulationOptimizer
from hyperrep.population import evaluate_population, train_population, use_batched_path

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
    assert (acc_loop - acc_stacked).abs().max() < 0.02
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
    from hyperrep import population
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
