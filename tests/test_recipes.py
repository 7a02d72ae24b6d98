"""The shipped configs: every one loads, the seed zoo follows the public zoos' recipe, and the
paper's autoencoder recipe augments each view (not undone by canonical sorting) while its
ablation drops LWLN and every per-layer scaling or centring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hyperrep.ae.config import TrainConfig
from hyperrep.ae.model import HyperRepresentation, reconstruction_loss
from hyperrep.ae.views import make_views
from hyperrep.nets.cnn import CNN_S, forward, init_vector
from hyperrep.nets.permutations import detokenize, tokenize
from hyperrep.zoo.build import BuildConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
RECIPE, ABLATION = CONFIGS / "paper_seed_hyperrep.json", CONFIGS / "paper_seed_hyperrep_no_lwln.json"


def seed_population(n: int) -> torch.Tensor:
    """Models as a seed zoo holds them: each from its own U(0, 1) initialisation."""
    generator = torch.Generator().manual_seed(0)
    return torch.stack([init_vector(CNN_S, "uniform", generator) for _ in range(n)])


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.json")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    raw = json.loads(path.read_text())
    if "n_models" in raw:
        BuildConfig.from_file(path)
    else:
        TrainConfig.from_file(path)


def test_the_seed_zoo_config_is_the_public_seed_zoo_recipe():
    config = BuildConfig.from_file(CONFIGS / "paper_seed_zoo.json")
    assert (config.architecture, config.activation, config.dataset) == ("cnn_s", "tanh", "fashion-mnist")
    assert (config.init, config.init_families, config.optimizer) == ("uniform", None, "adam")
    assert (config.learning_rate, config.batch_size, config.weight_decay) == (3e-4, 10, 0.0)
    assert config.train_images >= 50_000 and round(60_000 * config.val_fraction) == 10_000 and config.data_seed == 42
    assert config.saved_epochs() == [0, 1, 21, 22, 23, 24, 25] and config.epochs == 25
    hypers = [config.hyperparameters(seed) for seed in (1, 2, 3)]
    assert {h["lr"] for h in hypers} == {3e-4} and [h["init_seed"] for h in hypers] == [1, 2, 3]  # only the seed varies
    start = init_vector(CNN_S, "uniform", torch.Generator().manual_seed(1))
    biases = torch.cat([start[part][layer.n_weights:] for layer, part in zip(CNN_S.layers, CNN_S.layer_slices())])
    assert torch.all(biases == 0.01) and 0 <= start.min() and start.max() <= 1


def test_permutation_undone_by_canonical_sorting_is_refused():
    raw = json.loads(RECIPE.read_text())
    raw["model"]["canonical_inputs"] = True
    with pytest.raises(ValueError, match="canonical sorting undoes every permutation"):
        TrainConfig.from_dict(raw)


def test_the_recipe_trains_on_late_epochs_with_lwln_and_augments_each_view():
    config = TrainConfig.from_file(RECIPE)
    assert config.lwln and config.zoo_epochs == [21, 22, 23, 24, 25] and 0 < config.gamma < 1
    assert not (config.model.canonical_inputs or config.model.scale_inputs or config.model.center_inputs)
    augmentation = config.augmentation
    assert augmentation.permute and augmentation.noise > 0 and augmentation.erase_p > 0
    weights = seed_population(8)
    model = HyperRepresentation(config.model)
    inputs, targets = make_views(CNN_S, weights, augmentation, torch.Generator().manual_seed(0))
    seen = model.comparable(inputs)  # what the encoder gets: neurons in their own order
    assert torch.equal(seen, inputs)
    first, second = seen[:8], seen[8:]
    assert ((first - second).abs().amax(dim=1) > 0.1).all()  # the two views of every model differ
    assert torch.equal(targets, inputs)  # the paper reconstructs the augmented view


def test_permuted_views_of_the_recipe_compute_the_same_function():
    config = TrainConfig.from_file(RECIPE)
    only_permute = type(config.augmentation)(permute=True, noise=0.0, erase_p=0.0)
    weights = seed_population(2)
    views, _ = make_views(CNN_S, weights, only_permute, torch.Generator().manual_seed(1))
    assert not torch.equal(views[0], views[2])
    images = torch.randn(16, 1, 28, 28)
    for view in (views[0], views[2]):
        torch.testing.assert_close(forward(CNN_S, "tanh", view, images), forward(CNN_S, "tanh", weights[0], images),
                                   rtol=1e-4, atol=1e-4)


def test_the_ablation_differs_only_by_lwln_and_scales_nothing():
    recipe, ablation = json.loads(RECIPE.read_text()), json.loads(ABLATION.read_text())
    assert recipe.pop("lwln") is True and ablation.pop("lwln") is False
    assert recipe == ablation
    config = TrainConfig.from_file(ABLATION)
    torch.manual_seed(0)
    model = HyperRepresentation(config.model).eval()
    weights = seed_population(6)
    model.set_train_statistics(weights * 3 + 1)  # statistics far from 1 and 0 must not reach the encoder
    assert "parameter_mean" not in model.state_dict()
    with torch.no_grad():
        latents = model.encode(weights)
        torch.testing.assert_close(latents, model.encoder(tokenize(CNN_S, weights)), rtol=0, atol=0)
        torch.testing.assert_close(model.decode(latents), detokenize(CNN_S, model.decoder(latents)), rtol=0, atol=0)
        target = weights.flip(0)
        parts = model.losses(weights, target, gamma=0.0, temperature=config.temperature, lwln=config.lwln)
        plain = (model.decode(model.encode(weights)) - target).square().mean()
    torch.testing.assert_close(parts["loss_recon"], plain)
    lwln, _ = reconstruction_loss(CNN_S, model.decode(latents), target, model.layer_scales)
    assert not torch.isclose(lwln, plain)  # the scales exist, the ablation just does not use them
