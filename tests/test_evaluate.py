"""Population evaluation, ensembles and fine-tuning, checked against per-model references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hyperrep.ae.model import HyperRepresentation, ModelConfig
from hyperrep.evaluation.evaluate import (
    TrainingSettings,
    ensemble_accuracies,
    ensemble_accuracy,
    evaluate_latents,
    extend_evaluation,
    fine_tune,
    zoo_training_settings,
)
from hyperrep.images.datasets import load_split
from hyperrep.nets import population as population_module
from hyperrep.nets.cnn import CNN_L, CNN_S, CNN_S3, forward, init_vector, population_forward
from hyperrep.nets.population import evaluate_population
from hyperrep.sampling.baselines import scratch_baseline


@pytest.fixture(scope="module")
def test_images(idx_dir):
    return load_split("test", idx_dir).subset(np.arange(600))


@pytest.fixture(scope="module")
def train_images(idx_dir):
    return load_split("train", idx_dir).subset(np.arange(1500))


def reference(weights, data):
    """Per-model loop, every model on all images at once: the plain reference."""
    logits = torch.stack([forward(CNN_S, "tanh", w, data.images) for w in weights])
    losses = torch.stack([F.cross_entropy(l, data.labels) for l in logits])
    predictions = logits.argmax(dim=2)
    return (predictions == data.labels).double().mean(dim=1), losses, predictions


def test_population_evaluation_equals_the_per_model_reference(tiny_zoo, test_images):
    weights = tiny_zoo.weights[:, -1]
    accuracy, loss, predictions = reference(weights, test_images)
    for batched in (False, True):
        metrics = evaluate_population(CNN_S, "tanh", weights, test_images, keep_predictions=True, batched=batched,
                                      image_chunk=128, model_chunk=5)
        assert torch.equal(metrics.predictions, predictions)
        np.testing.assert_allclose(metrics.accuracy, accuracy.numpy(), atol=1e-7)
        np.testing.assert_allclose(metrics.loss, loss.numpy(), rtol=1e-4)
    result = evaluate_population(CNN_S, "tanh", weights, test_images, keep_predictions=True)
    assert result.predictions.dtype == torch.int8 and torch.equal(result.predictions.long(), predictions)
    np.testing.assert_allclose(result.accuracy, accuracy.numpy(), atol=1e-7)


def test_population_forward_equals_per_model_forward(tiny_zoo, test_images):
    weights = tiny_zoo.weights[:7, -1]
    single = torch.stack([forward(CNN_S, "tanh", w, test_images.images[:50]) for w in weights])
    grouped = population_forward(CNN_S, "tanh", weights, test_images.images[:50])  # autograd on: grouped convs
    with torch.no_grad():
        fast = population_forward(CNN_S, "tanh", weights, test_images.images[:50])  # the CPU GEMM path
    assert torch.allclose(grouped, single, atol=1e-5)
    assert torch.allclose(fast, single, atol=1e-5)


@pytest.mark.parametrize("arch", [CNN_S, CNN_S3, CNN_L])
@pytest.mark.parametrize("activation", ["tanh", "relu", "leakyrelu", "sigmoid", "silu", "gelu"])
def test_cpu_fast_path_matches_the_reference_for_every_architecture(arch, activation):
    generator = torch.Generator().manual_seed(0)
    weights = torch.stack([init_vector(arch, "kaiming_uniform", generator) for _ in range(19)])  # > one block of 16
    images = torch.randn(9, arch.in_channels, arch.image_size, arch.image_size, generator=generator)
    with torch.no_grad():
        fast = population_forward(arch, activation, weights, images)
        single = torch.stack([forward(arch, activation, w, images) for w in weights])
    assert fast.shape == (19, 9, 10)
    assert torch.allclose(fast, single, atol=2e-5, rtol=1e-5)
    assert torch.equal(fast.argmax(dim=2), single.argmax(dim=2))


def test_small_prediction_budget_splits_the_calls(tiny_zoo, test_images, monkeypatch):
    weights = tiny_zoo.weights[:, -1]
    whole = evaluate_population(CNN_S, "tanh", weights, test_images, keep_predictions=True)
    monkeypatch.setattr(population_module, "PREDICTION_BUDGET_BYTES", 8 * len(test_images) * 3)  # 3 models a call
    calls, seen = [], []
    original = population_module._evaluate_block
    monkeypatch.setattr(population_module, "_evaluate_block",
                        lambda arch, act, w, data, **kw: calls.append(len(w)) or original(arch, act, w, data, **kw))
    split = evaluate_population(CNN_S, "tanh", weights, test_images, keep_predictions=True,
                             progress=lambda done, total: seen.append((done, total)))
    assert calls == [3, 3, 3, 3] and seen[-1] == (12, 12)
    assert torch.equal(split.predictions, whole.predictions)
    np.testing.assert_array_equal(split.accuracy, whole.accuracy)


def test_non_finite_members_are_reported_and_excluded(tiny_zoo, test_images):
    weights = tiny_zoo.weights[:4, -1].clone()
    weights[1, 5] = float("nan")
    weights[3, 2000] = float("inf")
    result = evaluate_population(CNN_S, "tanh", weights, test_images, keep_predictions=True)
    assert result.finite.tolist() == [True, False, True, False] and result.n_invalid == 2
    assert np.isnan(result.accuracy[[1, 3]]).all() and np.isnan(result.loss[[1, 3]]).all()
    assert (result.predictions[[1, 3]] == -1).all()
    clean = evaluate_population(CNN_S, "tanh", weights[[0, 2]], test_images)
    np.testing.assert_array_equal(result.valid_accuracy(), clean.accuracy)


def test_extending_a_first_estimate_equals_evaluating_everything(tiny_zoo, test_images):
    weights = tiny_zoo.weights[:5, -1].clone()
    weights[2, 7] = float("nan")
    first = evaluate_population(CNN_S, "tanh", weights, test_images.subset(torch.arange(300)))
    extended = extend_evaluation(CNN_S, "tanh", weights, test_images, first, 300)
    whole = evaluate_population(CNN_S, "tanh", weights, test_images)
    np.testing.assert_allclose(extended.accuracy, whole.accuracy, rtol=1e-6)
    np.testing.assert_allclose(extended.loss, whole.loss, rtol=1e-5)
    assert extended.finite.tolist() == whole.finite.tolist() == [True, True, False, True, True]


def test_huge_weights_with_non_finite_logits_are_flagged(tiny_zoo, test_images):
    weights = tiny_zoo.weights[:2, -1].clone()
    weights[0, 2254:2454] = 3e38  # finite fc2 weights whose logits overflow
    result = evaluate_population(CNN_S, "tanh", weights, test_images)
    assert result.finite.tolist() == [False, True] and np.isnan(result.accuracy[0])


def test_ensemble_of_copies_equals_the_model_and_matches_a_manual_average(tiny_zoo, test_images):
    weights = tiny_zoo.weights[:, -1]
    single = evaluate_population(CNN_S, "tanh", weights[:1], test_images).accuracy[0]
    assert ensemble_accuracy(CNN_S, "tanh", weights[[0, 0, 0]], test_images) == pytest.approx(single)
    members = weights[[0, 3, 5]]
    logits = torch.stack([forward(CNN_S, "tanh", w, test_images.images) for w in members])
    for combine, scores in (("softmax", logits.softmax(dim=2)), ("logits", logits)):
        expected = (scores.mean(dim=0).argmax(dim=1) == test_images.labels).double().mean().item()
        got = ensemble_accuracy(CNN_S, "tanh", members, test_images, combine=combine, image_chunk=250)
        assert got == pytest.approx(expected)
    broken = members.clone()
    broken[1, 0] = float("nan")
    assert np.isnan(ensemble_accuracy(CNN_S, "tanh", broken, test_images))


def test_disjoint_ensembles_skip_non_finite_members(tiny_zoo, test_images):
    weights = tiny_zoo.weights[:, -1].clone()
    weights[0, 0] = float("nan")
    accuracies = ensemble_accuracies(CNN_S, "tanh", weights, test_images, size=5, seed=0)
    assert len(accuracies) == 2 and np.isfinite(accuracies).all()  # 11 finite members -> 2 groups of 5
    assert len(ensemble_accuracies(CNN_S, "tanh", weights[:3], test_images, size=5)) == 0


def test_zoo_training_settings_use_the_geometric_mean_rate(tiny_zoo):
    settings = zoo_training_settings(tiny_zoo)
    assert settings.optimizer == "adam" and settings.batch_size == 32
    assert settings.lr == pytest.approx((0.001 * 0.01) ** 0.5)


def test_fine_tuning_improves_fresh_models_and_tolerates_nan_members(tiny_zoo, train_images, test_images):
    start = scratch_baseline(tiny_zoo, 3, seed=0).weights
    start = torch.cat([start, torch.full((1, start.shape[1]), float("nan"))])
    result = fine_tune(CNN_S, "tanh", start, train_images, test_images, epochs=2, seed=0, eval_epochs=[0, 2],
                       settings=TrainingSettings(lr=3e-3, batch_size=32), keep_predictions=True)
    assert result.epochs == [0, 2] and result.accuracy.shape == (4, 2)
    assert result.weights.shape == (4, 2, CNN_S.n_params)
    assert torch.equal(result.weights[:3, 0], start[:3])
    assert (result.accuracy[:3, 1] > result.accuracy[:3, 0] + 0.2).all()
    assert (result.accuracy[:3, 1] > 0.5).all()
    assert result.finite[3].tolist() == [False, False] and np.isnan(result.accuracy[3]).all()
    at_two = result.evaluation(2)
    assert at_two.predictions.shape == (4, len(test_images))
    np.testing.assert_array_equal(at_two.accuracy, result.accuracy[:, 1])
    again = fine_tune(CNN_S, "tanh", start[:3], train_images, test_images, epochs=2, seed=0, eval_epochs=[2],
                      settings=TrainingSettings(lr=3e-3, batch_size=32))
    np.testing.assert_array_equal(again.accuracy[:, 0], result.accuracy[:3, 1])  # seeded


def test_evaluate_latents_decodes_then_evaluates(tiny_zoo, test_images):
    torch.manual_seed(0)
    model = HyperRepresentation(ModelConfig(d_model=16, n_heads=2, n_blocks=1, d_ff=16, latent_dim=8)).eval()
    latents = torch.randn(3, 8)
    weights, result = evaluate_latents(model, latents, "tanh", test_images)
    with torch.no_grad():
        assert torch.allclose(weights, model.decode(latents), atol=1e-6)
    np.testing.assert_allclose(result.accuracy, evaluate_population(CNN_S, "tanh", weights, test_images).accuracy)

