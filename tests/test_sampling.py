"""Latent samplers, anchor selection and baseline populations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from hyperrep.ae.artifact import decode_latents, encode_weights
from hyperrep.ae.model import HyperRepresentation, ModelConfig
from hyperrep.nets.cnn import init_vector
from hyperrep.sampling.anchors import select_box, select_lasso, select_points, select_rows, top_fraction
from hyperrep.sampling.baselines import (
    anchor_weights,
    noise_baseline,
    reconstruction_baseline,
    scratch_baseline,
    zoo_baseline,
)
from hyperrep.sampling.samplers import SAMPLERS, PerDimensionKDESampler, UmapBoxSampler, describe_samplers, make_sampler
from hyperrep.zoo.build import BuildConfig

FAST = [name for name in SAMPLERS if not name.startswith(("neigh", "flow")) and name != "interpolate"]  # flow: test_flow.py


def anchors(n: int = 40, dim: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=generator) * torch.linspace(0.1, 2.0, dim) + torch.arange(dim)


@pytest.mark.parametrize("name", FAST)
def test_samplers_give_seeded_latents_of_the_right_shape(name):
    sampler = make_sampler(name).fit(anchors())
    first, again, other = sampler.sample(7, seed=3), sampler.sample(7, seed=3), sampler.sample(7, seed=4)
    assert first.shape == (7, 6) and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_too_few_anchors_is_a_clear_error(name):
    need = SAMPLERS[name].min_anchors
    if need <= 1:
        with pytest.raises(ValueError, match="at least 1 anchors, got 0"):
            make_sampler(name).fit(torch.empty(0, 4))
        return
    with pytest.raises(ValueError, match=rf"sampler '{name}' needs at least {need} anchors, got {need - 1}"):
        make_sampler(name).fit(anchors(need - 1, 4))


def test_unknown_sampler_and_unfitted_sampler_are_errors():
    with pytest.raises(ValueError, match="unknown sampler 'gan'"):
        make_sampler("gan")
    with pytest.raises(RuntimeError, match="call fit"):
        make_sampler("kde").sample(3, seed=0)
    with pytest.raises(ValueError, match="NaN"):
        make_sampler("kde").fit(torch.tensor([[0.0, float("nan")], [1.0, 2.0]]))


def test_registry_describes_every_sampler():
    table = describe_samplers()
    assert list(table["name"]) == list(SAMPLERS)
    assert table.set_index("name").loc["neigh", "min_anchors"] == 16
    assert table.set_index("name").loc["gmm", "min_anchors"] == 8
    assert table["description"].str.len().min() > 10


def test_legacy_kde_reproduces_the_published_formula():
    """Each sample is anchor[i] + 0.002 * eps * (1, ..., 1): sklearn's draw with random_state=42
    in every dimension picks the same anchor i and the same eps (the paper's S_KDE code)."""
    z = anchors(25, 9).double()
    drawn = make_sampler("kde_legacy").fit(z).sample(50, seed=42).double()
    rng = np.random.RandomState(42)
    rows = (rng.uniform(0, 1, size=50) * len(z)).astype(np.int64)
    eps = rng.standard_normal(50)
    expected = z.numpy()[rows] + 0.002 * eps[:, None] * np.ones((1, 9))
    np.testing.assert_allclose(drawn.numpy(), expected.astype(np.float32), rtol=0, atol=1e-6)
    residual = drawn.numpy() - z.numpy()[rows]
    assert np.ptp(residual, axis=1).max() < 1e-5  # the same shift in every dimension


def test_independent_kde_draws_each_dimension_from_its_own_anchor():
    z = torch.tensor([[0.0, 0.0], [10.0, 10.0]]).repeat(10, 1)
    drawn = PerDimensionKDESampler(mode="independent", bandwidth=0.01).fit(z).sample(400, seed=0)
    near_zero = drawn.abs() < 1
    assert (near_zero | ((drawn - 10).abs() < 1)).all()  # every coordinate stays near an anchor value
    mixed = near_zero[:, 0] != near_zero[:, 1]
    assert 0.3 < mixed.float().mean() < 0.7  # dimensions choose anchors independently


def test_kde_bandwidth_scales_with_the_spread():
    z = anchors(200, 3)
    sampler = PerDimensionKDESampler(mode="independent").fit(z)
    expected = 200 ** (-1 / 5) * z.double().std(dim=0).numpy()
    np.testing.assert_allclose(sampler.scales_, expected, rtol=1e-9)


def test_uniform_samplers_respect_their_bounds():
    z = anchors()
    box = make_sampler("uniform").fit(z).sample(500, seed=0)
    assert (box >= z.min(dim=0).values - 1e-6).all() and (box <= z.max(dim=0).values + 1e-6).all()
    unit = make_sampler("uniform_unit").fit(z).sample(500, seed=0)
    assert unit.min() >= -1 and unit.max() <= 1 and unit.min() < -0.9 and unit.max() > 0.9


def test_gaussian_samplers_match_the_anchor_distribution():
    z = anchors(300, 4)
    for name in ("gaussian", "gmm", "kde_multivariate"):
        drawn = make_sampler(name).fit(z).sample(4000, seed=1)
        np.testing.assert_allclose(drawn.mean(dim=0).numpy(), z.mean(dim=0).numpy(), atol=0.12)
        assert (drawn.std(dim=0) / z.std(dim=0)).sub(1).abs().max() < 0.25, name


def test_full_covariance_variants_run():
    z = anchors(60, 5)
    for sampler in (make_sampler("kde_multivariate", covariance="full"), make_sampler("gmm", covariance_type="full"),
                    make_sampler("gmm", covariance_type="tied"), make_sampler("gmm", covariance_type="spherical"),
                    make_sampler("gaussian", shrinkage=False)):
        assert torch.isfinite(sampler.fit(z).sample(20, seed=0)).all()


def test_interpolation_runs_from_first_to_second_anchor():
    a, b = torch.zeros(3), torch.tensor([1.0, 2.0, 4.0])
    drawn = make_sampler("interpolate").fit(torch.stack([a, b])).sample(5, seed=0)
    assert torch.allclose(drawn[0], a) and torch.allclose(drawn[-1], b)
    assert torch.allclose(drawn[2], (a + b) / 2)
    with pytest.raises(ValueError, match="exactly 2 anchors, got 3"):
        make_sampler("interpolate").fit(anchors(3, 3))


@pytest.mark.slow  # numba compiles UMAP on a process's first fit (~10-30 s)
def test_umap_box_is_global_as_published_or_per_dimension():
    z = anchors(40, 5)
    published = UmapBoxSampler(box="global", n_neighbors=10).fit(z)
    embedding = published.reducer_.embedding_
    assert np.all(published.low_ == embedding.min()) and np.all(published.high_ == embedding.max())
    drawn = published.sample(3, seed=0)
    assert drawn.shape == (3, 5) and torch.isfinite(drawn).all()
    assert torch.equal(drawn, published.sample(3, seed=0))
    per_dim = UmapBoxSampler(box="per_dimension", n_neighbors=10).fit(z)
    np.testing.assert_array_equal(per_dim.low_, per_dim.reducer_.embedding_.min(axis=0))


# -- anchor selection ---------------------------------------------------------------------------


def latent_table() -> pd.DataFrame:
    return pd.DataFrame({
        "model_id": np.repeat(np.arange(10), 2), "epoch": np.tile([1, 2], 10),
        "split": np.repeat(["train"] * 7 + ["test"] * 3, 2), "test_acc": np.linspace(0.1, 0.9, 20),
    })


def test_top_fraction_uses_the_0_7_quantile_of_the_pool():
    table = latent_table()
    train = select_rows(table, split="train")
    rows = top_fraction(table, 0.3, among=train)
    threshold = np.quantile(table["test_acc"].to_numpy()[train], 0.7)
    assert set(rows) == {i for i in train if table["test_acc"][i] >= threshold}
    assert len(rows) == 4 and table["split"][rows].eq("train").all()


def test_row_filters_combine_and_empty_selections_fail_clearly():
    table = latent_table()
    rows = select_rows(table, epochs=[2], accuracy=(0.3, 0.7), model_ids=range(5))
    assert table.loc[rows, "epoch"].eq(2).all() and table.loc[rows, "model_id"].lt(5).all()
    assert table.loc[rows, "test_acc"].between(0.3, 0.7).all() and len(rows) == 3
    with pytest.raises(ValueError, match="no anchors selected"):
        select_rows(table, split="val")
    with pytest.raises(ValueError, match="no anchors selected"):
        select_rows(table, model_ids=[99])


def test_map_region_selections():
    coords = np.array([[0, 0], [1, 1], [2, 2], [3, 0.5]], dtype=float)
    assert select_box(coords, (0.5, 2.5), (0.5, 2.5)).tolist() == [1, 2]
    assert select_lasso(coords, [(2.5, 0), (3.5, 0), (3.5, 1), (2.5, 1)]).tolist() == [3]
    assert select_points([2, 0, 2], 4).tolist() == [0, 2]
    with pytest.raises(ValueError, match="no anchors selected"):
        select_box(coords, (10, 11), (0, 1))
    with pytest.raises(ValueError, match="out of range"):
        select_points([7], 4)
    with pytest.raises(ValueError, match="no anchors selected"):
        select_points([], 4)


# -- baselines ---------------------------------------------------------------------------------


def test_scratch_baseline_draws_fresh_inits_as_the_zoo_did(tiny_zoo):
    population = scratch_baseline(tiny_zoo, 6, seed=1)
    config = BuildConfig(**tiny_zoo.manifest["build"])
    assert population.label == "B_T" and population.weights.shape == (6, tiny_zoo.architecture.n_params)
    assert not set(population.members["seed"]) & set(tiny_zoo.model_ids.tolist())
    for row, seed, init in zip(population.weights, population.members["seed"], population.members["init"]):
        assert init == config.hyperparameters(int(seed))["init"]
        assert torch.equal(row, init_vector(tiny_zoo.architecture, init, torch.Generator().manual_seed(int(seed))))
    assert set(scratch_baseline(tiny_zoo, 40, seed=0).members["init"]) == {"kaiming_uniform", "uniform"}


def test_scratch_baseline_with_a_standard_init_uses_it_for_every_member(tiny_zoo):
    zoo_drawn = scratch_baseline(tiny_zoo, 12, seed=1)
    kaiming = scratch_baseline(tiny_zoo, 12, seed=1, init="kaiming_uniform")
    assert kaiming.label == "B_T (kaiming_uniform)" and set(kaiming.members["init"]) == {"kaiming_uniform"}
    assert list(kaiming.members["seed"]) == list(zoo_drawn.members["seed"])  # the same seeds, only the init differs
    uniform = torch.from_numpy((zoo_drawn.members["init"] == "uniform").to_numpy().copy())
    assert uniform.any() and not torch.equal(kaiming.weights[uniform], zoo_drawn.weights[uniform])
    assert torch.equal(kaiming.weights[~uniform], zoo_drawn.weights[~uniform])
    first = tiny_zoo.architecture.layers[0]
    bound = math.sqrt(6.0 / math.prod(first.weight_shape[1:]))
    assert kaiming.weights[:, : first.n_weights].abs().max() <= bound
    with pytest.raises(ValueError, match="unknown init 'he'"):
        scratch_baseline(tiny_zoo, 2, init="he")


def test_zoo_baseline_takes_train_models_at_the_last_epoch(tiny_zoo):
    population = zoo_baseline(tiny_zoo, 5, seed=0)
    assert population.label == "B_F" and population.members["model_id"].nunique() == 5
    assert set(population.members["model_id"]) <= set(tiny_zoo.splits["train"])
    for row, model_id in zip(population.weights, population.members["model_id"]):
        assert torch.equal(row, tiny_zoo.weights[tiny_zoo.rows_of([model_id])[0], -1])


def test_noise_baseline_adds_sigma_noise_to_anchor_weights(tiny_zoo):
    weights, table = tiny_zoo.samples(split="train", epochs=[2])
    population = noise_baseline(weights, 0.04, 20, seed=0, anchor_info=table)
    base = weights[torch.as_tensor(population.members["anchor"].to_numpy().copy())]
    assert abs(float((population.weights - base).std()) - 0.04) < 0.002
    assert population.members["anchor"].nunique() == min(20, len(weights))
    assert population.label == "noise σ=0.04"
    first = population.members.iloc[0]
    assert first["model_id"] == table["model_id"][first["anchor"]]


def test_anchor_weights_follow_model_id_and_epoch(tiny_zoo):
    table = tiny_zoo.properties.sort_values(["model_id", "epoch"]).reset_index(drop=True)
    picked = anchor_weights(tiny_zoo, table, [0, 4])
    for row, (_, prop) in zip(picked, table.iloc[[0, 4]].iterrows()):
        assert torch.equal(row, tiny_zoo.weights[tiny_zoo.rows_of([prop["model_id"]])[0], tiny_zoo.epoch_position(prop["epoch"])])


def tiny_autoencoder() -> HyperRepresentation:
    torch.manual_seed(0)
    return HyperRepresentation(ModelConfig(d_model=16, n_heads=2, n_blocks=1, d_ff=16, latent_dim=8)).eval()


def test_batched_encode_decode_and_reconstruction_baseline(tiny_zoo):
    model = tiny_autoencoder()
    weights, table = tiny_zoo.samples(split="train", epochs=[2])
    with torch.no_grad():
        expected = model.decode(model.encode(weights))
    latents = encode_weights(model, weights, batch_size=3)
    assert latents.shape == (len(weights), 8)
    assert torch.allclose(decode_latents(model, latents, batch_size=2), expected, atol=1e-5)
    population = reconstruction_baseline(model, weights, 4, seed=0, anchor_info=table)
    assert torch.allclose(population.weights, expected[torch.as_tensor(population.members["anchor"].to_numpy().copy())], atol=1e-5)


def test_umap_sampler_keeps_torch_single_threaded():
    """numba (UMAP) sets the process's OpenMP threads; torch must stay at its own count."""
    assert torch.get_num_threads() == 1  # conftest
    sampler = make_sampler("neigh").fit(np.random.default_rng(0).normal(size=(40, 6)))
    sampler.sample(4, seed=0)
    assert torch.get_num_threads() == 1
