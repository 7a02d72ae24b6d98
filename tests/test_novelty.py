"""Distance to the nearest zoo model (permutation-invariant) and misclassification overlap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyperrep.evaluation.novelty import matched_distance, misclassification_iou, nearest_reference, novelty_table
from hyperrep.images.datasets import load_split
from hyperrep.nets.cnn import CNN_S
from hyperrep.nets.permutations import permute, random_permutation_index
from hyperrep.nets.population import evaluate_population


def test_zoo_member_and_its_permuted_copy_have_distance_zero(tiny_zoo):
    reference = tiny_zoo.weights[:, -1]
    index = random_permutation_index(CNN_S, 3, torch.Generator().manual_seed(0))
    permuted = permute(reference[[2, 5, 7]], index)
    assert not torch.equal(permuted, reference[[2, 5, 7]])
    distance, nearest = nearest_reference(CNN_S, permuted, reference)
    np.testing.assert_allclose(distance, 0.0, atol=1e-9)
    assert nearest.tolist() == [2, 5, 7]
    plain, _ = nearest_reference(CNN_S, permuted, reference, invariant=False)
    assert (plain > 0.1).all()  # without the canonical order a permuted copy looks new


def test_distance_is_the_l2_norm_to_the_nearest_and_nan_rows_are_skipped(tiny_zoo):
    reference = tiny_zoo.weights[:, -1]
    generator = torch.Generator().manual_seed(1)
    moved = reference[[4]] + 0.001 * torch.randn(1, CNN_S.n_params, generator=generator)
    broken = torch.full((1, CNN_S.n_params), float("nan"))
    distance, nearest = nearest_reference(CNN_S, torch.cat([moved, broken]), reference, invariant=False)
    assert nearest.tolist() == [4, -1] and np.isnan(distance[1])
    assert abs(distance[0] - float((moved[0].double() - reference[4].double()).norm())) < 1e-9


def test_perturbed_permuted_copy_stays_close(tiny_zoo):
    """Noise can reorder units of similar norm in the canonical order; the matching still aligns them."""
    reference = tiny_zoo.weights[:, -1]
    generator = torch.Generator().manual_seed(2)
    noise = 0.02 * torch.randn(4, CNN_S.n_params, generator=generator)
    noisy = reference[[1, 3, 6, 8]] + noise
    permuted = permute(noisy, random_permutation_index(CNN_S, 4, generator))
    distance, nearest = nearest_reference(CNN_S, permuted, reference)
    assert nearest.tolist() == [1, 3, 6, 8]
    np.testing.assert_allclose(distance, noise.double().norm(dim=1).numpy(), rtol=1e-6)
    assert matched_distance(CNN_S, permuted[0].double(), reference[1].double()) == pytest.approx(float(noise[0].norm()), rel=1e-5)


def test_misclassification_iou():
    labels = torch.tensor([0, 1, 2, 3, 4])
    a = torch.tensor([[0, 0, 0, 3, 4], [0, 1, 2, 3, 4], [1, 1, 2, 3, 4]])
    b = torch.tensor([[0, 0, 2, 0, 4], [0, 1, 2, 3, 4], [-1, -1, -1, -1, -1]])
    iou = misclassification_iou(a, b, labels)
    assert iou[0] == 1 / 3  # wrong sets {1, 2} and {1, 3}
    assert iou[1] == 1.0 and np.isnan(iou[2])


def test_novelty_table_names_the_nearest_zoo_model(tiny_zoo, idx_dir):
    test = load_split("test", idx_dir).subset(np.arange(300))
    reference, table = tiny_zoo.samples()
    index = random_permutation_index(CNN_S, 2, torch.Generator().manual_seed(3))
    generated = torch.cat([permute(reference[[5, 9]], index), reference[[0]] + 0.05])
    predictions = evaluate_population(CNN_S, "tanh", generated, test, keep_predictions=True).predictions
    novelty = novelty_table(CNN_S, "tanh", generated, predictions, reference, table, test)
    assert list(novelty.columns) == ["distance", "nearest_model_id", "nearest_epoch", "misclassification_iou"]
    assert novelty["nearest_model_id"].tolist()[:2] == table["model_id"][[5, 9]].tolist()
    assert novelty["nearest_epoch"].tolist()[:2] == table["epoch"][[5, 9]].tolist()
    np.testing.assert_allclose(novelty["distance"][:2], 0.0, atol=1e-9)
    np.testing.assert_allclose(novelty["misclassification_iou"][:2], 1.0)  # a permuted copy errs identically
    assert novelty["distance"][2] > 0.5 and 0 <= novelty["misclassification_iou"][2] <= 1
