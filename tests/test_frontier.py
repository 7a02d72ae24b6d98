"""The accuracy–novelty frontier: reference populations, largest mistake overlap, Δ with its CI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hyperrep.evaluation.frontier import (
    Frontier,
    FrontierPoint,
    FrontierSettings,
    average_population,
    gaussian_population,
    reference_populations,
    zoo_neighbour_distances,
)
from hyperrep.evaluation.novelty import mistake_overlap, nearest_reference
from hyperrep.nets.cnn import CNN_S


def point(family, level, distance, accuracy, n=40, spread=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return FrontierPoint(family, level, f"{family} {level}", np.full(n, float(distance)),
                         (accuracy + spread * rng.standard_normal(n))[:, None], np.full(n, 0.5))


def test_reference_populations_cover_the_sweep(tiny_zoo):
    anchors = tiny_zoo.weights[:6, -1]
    settings = FrontierSettings(sigmas=[0.01, 0.05], average_sizes=[2, 4, 8], gaussian_scales=[0.5], models=5)
    refs = reference_populations(anchors, settings, seed=3)
    assert [(r.family, r.level) for r in refs] == [("noise", 0.0), ("noise", 0.01), ("noise", 0.05), ("average", 2),
                                                   ("average", 4), ("gaussian", 0.5)]  # k=8 > 6 anchors: left out
    assert all(len(r.population) == 5 for r in refs)
    first = refs[0].population  # the anchors themselves, each once before repeats
    assert sorted(first.members["anchor"].tolist()) == sorted(set(first.members["anchor"].tolist()))
    assert torch.equal(first.weights, anchors[torch.as_tensor(first.members["anchor"].to_numpy().copy())])
    noise = refs[2].population.weights - anchors[torch.as_tensor(refs[2].population.members["anchor"].to_numpy().copy())]
    assert abs(float(noise.std()) - 0.05) < 0.005
    again = reference_populations(anchors, settings, seed=3)
    assert all(torch.equal(a.population.weights, b.population.weights) for a, b in zip(refs, again))


def test_averages_and_weight_gaussian(tiny_zoo):
    anchors = tiny_zoo.weights[:, -1]
    pair = average_population(anchors[:2], 2, 3, seed=0)
    assert torch.allclose(pair.weights, anchors[:2].mean(dim=0).expand(3, -1))
    with pytest.raises(ValueError, match="at least 5 anchors"):
        average_population(anchors[:4], 5, 3, seed=0)
    draws = gaussian_population(anchors, 1.0, 4000, seed=0).weights
    assert torch.allclose(draws.mean(dim=0), anchors.mean(dim=0), atol=0.1 * float(anchors.std(dim=0).max()) + 1e-3)
    ratio = draws.std(dim=0) / anchors.std(dim=0).clamp_min(1e-8)
    assert 0.9 < float(ratio.median()) < 1.1
    with pytest.raises(ValueError, match="frontier models"):
        FrontierSettings(models=1).validate()


def test_mistake_overlap_takes_the_largest_over_all_references():
    labels = torch.tensor([0, 1, 2, 3, 4, 5])
    model = torch.tensor([[9, 9, 9, 3, 4, 5],   # wrong on images 0, 1, 2
                          [0, 1, 2, 3, 4, 5],   # no mistakes
                          [-1, 1, 2, 3, 4, 5]])  # not finite
    reference = torch.tensor([[9, 1, 2, 3, 4, 5],   # wrong on 0: IoU 1/3 with model 0
                              [9, 9, 2, 9, 4, 5],   # wrong on 0, 1, 3: IoU 2/4
                              [0, 1, 2, 3, 4, 5]])  # no mistakes
    best, index = mistake_overlap(model, reference, labels, chunk=2)
    np.testing.assert_allclose(best[:2], [0.5, 1.0])
    assert index[:2].tolist() == [1, 2] and np.isnan(best[2]) and index[2] == -1


def test_zoo_neighbour_distance_excludes_the_model_itself(tiny_zoo):
    weights, table = tiny_zoo.samples()
    last = table["epoch"] == table["epoch"].max()
    mine = weights[torch.as_tensor(last.to_numpy().copy())]
    ids = table.loc[last, "model_id"].to_numpy()
    spacing = zoo_neighbour_distances(CNN_S, mine, ids, weights, table["model_id"].to_numpy())
    assert (spacing > 0).all()
    for i in range(3):  # equals the nearest distance to the other models' rows
        others = torch.as_tensor((table["model_id"] != ids[i]).to_numpy().copy())
        expected, _ = nearest_reference(CNN_S, mine[i: i + 1], weights[others])
        assert spacing[i] == pytest.approx(expected[0])


def test_frontier_is_the_upper_envelope_of_the_family_curves():
    frontier = Frontier([point("noise", 0, 0.0, 0.80), point("noise", 0.02, 1.0, 0.78), point("noise", 0.04, 2.0, 0.70),
                         point("noise", 0.1, 5.0, 0.40), point("average", 2, 1.5, 0.79), point("average", 4, 3.0, 0.75)],
                        epochs=[0])
    assert frontier.accuracy_at(0.5, 0) == pytest.approx(0.79)  # noise only
    assert frontier.accuracy_at(2.0, 0) == pytest.approx(0.79 - 0.04 * 0.5 / 1.5)  # averages beat noise here
    assert frontier.accuracy_at(4.0, 0) == pytest.approx(0.70 - 0.30 * 2 / 3)  # past the averages: noise
    assert np.isnan(frontier.accuracy_at(6.0, 0))  # no reference that far
    curve = frontier.curve(0, np.array([0.0, 1.0, 6.0]))
    np.testing.assert_allclose(curve["accuracy"].to_numpy()[:2], [0.80, 0.78])
    table = frontier.table()
    assert len(table) == 6 and table.loc[2, "distance_median"] == 2.0 and table.loc[2, "accuracy_mean"] == pytest.approx(0.70)


def test_delta_and_its_ci():
    frontier = Frontier([point("noise", 0, 0.0, 0.80, spread=0.01, seed=1), point("noise", 0.1, 4.0, 0.40, spread=0.01, seed=2)],
                        epochs=[0])
    rng = np.random.default_rng(0)
    distance = np.full(100, 2.0)
    better = 0.65 + 0.02 * rng.standard_normal(100)  # the frontier at 2.0 is 0.60
    result = frontier.delta(distance, better[:, None], resamples=500).iloc[0]
    assert result["frontier_accuracy"] == pytest.approx(0.60, abs=0.005)
    assert result["delta"] == pytest.approx(better.mean() - result["frontier_accuracy"])
    assert 0 < result["delta_lo"] < result["delta"] < result["delta_hi"] < 0.1
    same = frontier.delta(distance, (0.60 + 0.02 * rng.standard_normal(100))[:, None], resamples=500).iloc[0]
    assert same["delta_lo"] < 0 < same["delta_hi"]  # on the frontier: the CI holds 0
    beyond = frontier.delta(np.full(10, 9.0), np.full((10, 1), 0.5), resamples=100).iloc[0]
    assert np.isnan(beyond["delta"]) and np.isnan(beyond["delta_lo"])
    with pytest.raises(ValueError, match="epochs"):
        frontier.delta(distance, np.zeros((100, 2)))


def test_frontier_rejects_mismatched_points():
    with pytest.raises(ValueError, match="does not match"):
        Frontier([FrontierPoint("noise", 0, "x", np.zeros(3), np.zeros((3, 2)), np.zeros(3))], epochs=[0])
