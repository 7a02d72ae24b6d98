"""The no-latent references: mean model, nearest train model and the PCA ceiling."""

from __future__ import annotations

import pytest
import torch

from hyperrep.images.datasets import load_split
from hyperrep.nets.population import evaluate_population
from hyperrep.nets.weight_stats import r_squared
from hyperrep.zoo.references import pca_rebuilds, references, zoo_references


@pytest.fixture(scope="module")
def images(idx_dir):
    return load_split("test", idx_dir).subset(torch.arange(300))


def test_a_model_of_the_train_split_is_its_own_nearest_and_pca_rebuilds_it(tiny_zoo, images):
    arch = tiny_zoo.architecture
    train, _ = tiny_zoo.samples("train", [2])
    figures = references(arch, tiny_zoo.activation, train, train[:3], images, components=(64,))
    nearest = figures["nearest"]
    assert nearest["distance"] == 0 and nearest["prediction_agreement"] == 1 and nearest["acc_ratio"] == 1
    assert nearest["kept_above_chance"] == pytest.approx(1) and nearest["rsq"] == pytest.approx(1)
    assert figures["pca"][64]["rsq"] == pytest.approx(1, abs=1e-4)  # in the span: rebuilt exactly
    assert figures["pca"][64]["prediction_agreement"] > 0.99
    mean_acc = evaluate_population(arch, tiny_zoo.activation, train.mean(dim=0, keepdim=True), images).accuracy
    assert figures["mean_model"]["acc_reconstructed"] == pytest.approx(float(mean_acc[0]))
    assert figures["mean_model"]["acc_correlation"] is None  # one model for all: no spread to correlate


def test_pca_is_cut_to_the_rank_of_the_train_split():
    weights = torch.randn(5, 20)
    fit, held = weights[:4], weights[4:]
    (small, few), (big, many) = list(pca_rebuilds(_Flat(20), fit, held, (2, 50)))
    assert (small, big) == (2, 50)
    assert r_squared(many, held, fit.mean(dim=0)) >= r_squared(few, held, fit.mean(dim=0))
    (_, same), = pca_rebuilds(_Flat(20), fit, held, (3,))
    torch.testing.assert_close(many, same)  # 4 states span 3 directions around their mean


def test_zoo_references_use_the_requested_train_models_and_epochs(tiny_zoo, images):
    figures = zoo_references(tiny_zoo, [1, 2], images, components=(4,), train_models=3)
    assert figures["train_states"] == 3 * 2
    assert figures["test_states"] == 2 * len(tiny_zoo.splits["test"])
    assert -1 <= figures["init_cosine"] <= 1
    assert 0 <= figures["nearest"]["distance_ratio"] <= 1
    assert set(figures["pca_canonical"]) == {4}
    with pytest.raises(KeyError, match="epoch 9 not saved"):
        zoo_references(tiny_zoo, [9], images)


class _Flat:
    """An architecture stand-in with one layer over all entries (for PCA on plain vectors)."""

    def __init__(self, n: int):
        self.n = n

    def layer_slices(self):
        return [slice(0, self.n)]
