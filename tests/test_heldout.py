"""Held-out reconstruction against the nearest training model: per-model bootstrap CIs, and a
perfect rebuild scores 1 where the lookup scores what it scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from hyperrep.ae.artifact import load_hyperrep
from hyperrep.evaluation import heldout
from hyperrep.images.datasets import load_split
from hyperrep.zoo.format import Zoo


@pytest.fixture(scope="module")
def images(idx_dir):
    return load_split("test", idx_dir).subset(torch.arange(200))


def test_per_model_means_average_each_models_states():
    ids = pd.Series([7, 7, 3, 3, 3])
    assert np.allclose(heldout.per_model_means(np.array([1.0, 0.0, 0.2, 0.4, 0.6]), ids), [0.4, 0.5])


def test_a_perfect_rebuild_agrees_everywhere_and_the_lookup_does_not(tiny_hyperrep_path, tiny_zoo_path, images,
                                                                     monkeypatch):
    hyperrep, zoo = load_hyperrep(tiny_hyperrep_path), Zoo.load(tiny_zoo_path)
    trained = heldout.heldout_reconstruction(hyperrep, zoo, images, resamples=200)
    monkeypatch.setattr(heldout, "reconstruct_weights", lambda model, weights: model.comparable(weights))
    perfect = heldout.heldout_reconstruction(hyperrep, zoo, images, resamples=200)
    assert perfect["agreement"]["rebuilt"] == (1.0, 1.0, 1.0) and perfect["ratio"]["rebuilt"][0] == pytest.approx(1.0)
    assert perfect["rsq"]["rebuilt"] == pytest.approx(1.0)
    nearest_agreement = perfect["agreement"]["nearest"][0]
    assert nearest_agreement < 1 and perfect["agreement"]["nearest"] == trained["agreement"]["nearest"]
    gain, low, high = perfect["agreement"]["rebuilt_minus_nearest"]
    assert gain == pytest.approx(1 - nearest_agreement) and low <= gain <= high
    for key in ("agreement", "ratio"):
        for mean, low, high in trained[key].values():
            assert low <= mean <= high
    assert trained["models"] == len(zoo.splits["test"]) and trained["states"] == trained["models"] * len(zoo.epochs)
    lines = heldout.heldout_lines(trained)
    assert lines[0].startswith(f"test: {trained['models']} models") and "rebuilt − nearest" in lines[1]
