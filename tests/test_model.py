"""The autoencoder: shapes, purity, losses against direct formulas, and the augmented views."""

from __future__ import annotations

import math

import pytest
import torch

from hyperrep.ae.model import HyperRepresentation, ModelConfig, Norm, matmul_flops, nt_xent, reconstruction_loss
from hyperrep.ae.views import Augmentation, erase_mask, make_views
from hyperrep.nets.cnn import CNN_S, forward, init_vector
from hyperrep.nets.permutations import permute, random_permutation_index, tokenize

SMALL = dict(d_model=16, n_heads=2, n_blocks=1, d_ff=32, latent_dim=8)


def population(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([init_vector(CNN_S, "kaiming_uniform", generator) for _ in range(n)])


@pytest.mark.parametrize("compression,bottleneck,decompression", [
    ("linear", "linear", "linear"), ("token", "linear_bounded", "repeat"), ("average", "linear", "linear"),
])
def test_encode_decode_shapes_and_purity(compression, bottleneck, decompression):
    torch.manual_seed(0)
    model = HyperRepresentation(ModelConfig(**SMALL, compression=compression, bottleneck=bottleneck,
                                            decompression=decompression, decoder_bias=True)).eval()
    weights = population(4)
    with torch.no_grad():
        latents = model.encode(weights)
        assert latents.shape == (4, 8)
        assert model.decode(latents).shape == (4, CNN_S.n_params)
        torch.testing.assert_close(model.encode(weights[2:3]), latents[2:3], rtol=1e-5, atol=1e-6)  # rows independent
        assert torch.equal(model.encode(weights), latents)
    if bottleneck == "linear_bounded":
        assert latents.abs().max() < 1


def test_canonical_inputs_make_latents_permutation_invariant():
    torch.manual_seed(0)
    model = HyperRepresentation(ModelConfig(**SMALL, canonical_inputs=True, scale_inputs=True)).eval()
    weights = population(3)
    model.set_layer_scales(weights)
    permuted = permute(weights, random_permutation_index(CNN_S, 3, torch.Generator().manual_seed(5)))
    with torch.no_grad():
        torch.testing.assert_close(model.encode(permuted), model.encode(weights), rtol=1e-5, atol=1e-6)


def test_centred_inputs_encode_the_difference_to_the_train_mean():
    torch.manual_seed(0)
    shared = population(1, seed=3)
    weights = shared + 0.01 * torch.randn(6, CNN_S.n_params)  # one shared start, small differences
    model = HyperRepresentation(ModelConfig(**SMALL, center_inputs=True, scale_inputs=True)).eval()
    model.set_train_statistics(weights)
    torch.testing.assert_close(model.parameter_mean, weights.mean(dim=0))
    for i, part in enumerate(CNN_S.layer_slices()):  # sigma of what is encoded: the differences
        expected = (weights - weights.mean(dim=0))[:, part].flatten().std()
        assert model.layer_scales[i].item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.encode(weights), model.encoder(tokenize(CNN_S, (weights - weights.mean(0)) / model.parameter_scales())))
        for layer in model.decoder.modules():  # a decoder that outputs zeros decodes to the mean
            if isinstance(layer, torch.nn.Linear):
                layer.weight.zero_(), layer.bias.zero_()
        torch.testing.assert_close(model.decode(torch.randn(2, 8)), weights.mean(dim=0).expand(2, -1))
    assert "parameter_mean" in model.state_dict()
    assert "parameter_mean" not in HyperRepresentation(ModelConfig(**SMALL)).state_dict()  # paper keys unchanged


def test_layer_scales_are_the_unbiased_std_of_each_layer():
    model = HyperRepresentation(ModelConfig(**SMALL))
    weights = population(5)
    model.set_layer_scales(weights)
    for i, part in enumerate(CNN_S.layer_slices()):
        assert model.layer_scales[i].item() == pytest.approx(weights[:, part].flatten().std().item(), rel=1e-6)
    model.set_layer_scales(torch.zeros(3, CNN_S.n_params))
    assert torch.equal(model.layer_scales, torch.full((5,), 1e-4))  # the paper's floor


def test_reconstruction_loss_with_and_without_lwln():
    generator = torch.Generator().manual_seed(0)
    output, target = torch.randn(6, CNN_S.n_params, generator=generator), torch.randn(6, CNN_S.n_params, generator=generator)
    scales = torch.tensor([0.5, 2.0, 1.0, 0.1, 3.0])
    loss, per_layer = reconstruction_loss(CNN_S, output, target, scales)
    expected = sum(((output[:, p] - target[:, p]) ** 2).sum() / s ** 2 for p, s in zip(CNN_S.layer_slices(), scales)) / (6 * 2464)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert per_layer.sum().item() == pytest.approx(loss.item(), rel=1e-6)
    plain, _ = reconstruction_loss(CNN_S, output, target, None)
    assert plain.item() == pytest.approx(torch.nn.functional.mse_loss(output, target).item(), rel=1e-5)


def test_nt_xent_matches_the_direct_formula():
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 5, generator=generator), torch.randn(4, 5, generator=generator)
    z = torch.cat([a, b])
    n, tau = 4, 0.5
    total = 0.0
    for i in range(2 * n):
        cos = [torch.nn.functional.cosine_similarity(z[i], z[k], dim=0).item() / tau for k in range(2 * n)]
        partner = (i + n) % (2 * n)
        denominator = sum(math.exp(c) for k, c in enumerate(cos) if k != i)
        total += -math.log(math.exp(cos[partner]) / denominator)
    assert nt_xent(a, b, tau).item() == pytest.approx(total / (2 * n), rel=1e-5)
    assert nt_xent(a, a, 0.1) < nt_xent(a, b, 0.1)  # identical views are the easy case


def test_views_keep_the_function_and_the_target_mode():
    weights = population(3)
    clean_views, same = make_views(CNN_S, weights, Augmentation(erase_p=0.0), torch.Generator().manual_seed(0))
    assert clean_views.shape == (6, CNN_S.n_params) and torch.equal(clean_views, same)
    images = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(forward(CNN_S, "tanh", clean_views[4], images), forward(CNN_S, "tanh", weights[1], images),
                               rtol=1e-5, atol=1e-5)
    erased, clean = make_views(CNN_S, weights, Augmentation(erase_p=1.0, target="clean"), torch.Generator().manual_seed(0))
    assert torch.equal(clean, clean_views)  # same generator: same permutations
    zeroed = (erased == 0) & (clean != 0)
    assert zeroed.any(dim=1).all()
    _, augmented_target = make_views(CNN_S, weights, Augmentation(erase_p=1.0), torch.Generator().manual_seed(0))
    assert torch.equal(augmented_target, erased)


def test_erase_mask_is_one_block_of_the_configured_length():
    mask = erase_mask((200, 1000), Augmentation(erase_p=0.5, erase_scale=[0.1, 0.2]), torch.Generator().manual_seed(0))
    lengths = mask.sum(dim=1)
    erased = lengths > 0
    assert 0.35 < erased.float().mean() < 0.65
    assert lengths[erased].min() >= 100 and lengths[erased].max() < 200
    first = mask.float().argmax(dim=1)
    for row in torch.nonzero(erased).flatten()[:20]:
        assert mask[row, first[row]: first[row] + lengths[row]].all()  # contiguous


def test_losses_combine_with_gamma():
    torch.manual_seed(0)
    model = HyperRepresentation(ModelConfig(**SMALL)).train()
    weights = population(4)
    inputs, targets = make_views(CNN_S, weights, Augmentation(), torch.Generator().manual_seed(0))
    parts = model.losses(inputs, targets, gamma=0.3, temperature=0.1, lwln=True)
    expected = 0.3 * parts["loss_contrast"] + 0.7 * parts["loss_recon"]
    assert parts["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert parts["loss_contrast"].item() > 0
    parts["loss"].backward()
    assert model.encoder.token_embeddings.layer_lst[1].weight.grad is not None


def test_canonical_models_are_scored_against_the_canonical_order():
    torch.manual_seed(0)
    model = HyperRepresentation(ModelConfig(**SMALL, canonical_inputs=True, projection_layers=0)).eval()
    weights = population(4)
    permuted = permute(weights, random_permutation_index(CNN_S, 4, torch.Generator().manual_seed(2)))
    with torch.no_grad():
        plain = model.losses(weights, weights, gamma=0.0, temperature=0.1, lwln=False)["loss_recon"]
        moved = model.losses(weights, permuted, gamma=0.0, temperature=0.1, lwln=False)["loss_recon"]
    torch.testing.assert_close(moved, plain)


def test_identical_views_take_the_one_pass_shortcut_with_the_same_losses():
    torch.manual_seed(0)
    model = HyperRepresentation(ModelConfig(**SMALL)).eval()
    weights = population(3)
    same = torch.cat([weights, weights])
    shortcut = model.losses(same, same, gamma=0.5, temperature=0.1, lwln=True, identical_views=True)
    latents, output = model(same)  # the full computation on both copies
    recon, _ = reconstruction_loss(CNN_S, output, same, model.layer_scales)
    view_1, view_2 = model.projection_head(latents).chunk(2)
    torch.testing.assert_close(shortcut["loss_recon"], recon)
    torch.testing.assert_close(shortcut["loss_contrast"], nt_xent(view_1, view_2, 0.1))


def test_norm_is_the_papers_formula():
    norm = Norm(24)
    with torch.no_grad():
        norm.alpha.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(7, 5, 24) * 3 + 1
    paper = norm.alpha * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6) + norm.bias
    torch.testing.assert_close(norm(x), paper, rtol=1e-5, atol=1e-5)
    flat = torch.ones(2, 24)  # std 0: the paper's formula gives the bias, not a division by zero
    torch.testing.assert_close(norm(flat), norm.bias.expand(2, -1).detach())


@pytest.mark.parametrize("settings", [
    dict(d_model=32, n_heads=4, n_blocks=2, d_ff=48, latent_dim=16),
    dict(d_model=32, n_heads=2, n_blocks=1, d_ff=40, latent_dim=8, compression="token", decompression="repeat",
         projection_layers=3, projection_dim=20),
])
def test_matmul_flops_is_what_torch_counts_and_a_step_is_three_forwards(settings):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    config = ModelConfig(**settings)
    model = HyperRepresentation(config).train()
    weights = population(4)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as forward_count:  # MATH: attention as bmm
        with torch.no_grad():
            latents = model.encode(weights)
            model.decode(latents), model.projection_head(latents)
    assert forward_count.get_total_flops() == 4 * matmul_flops(config)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as step_count:
        model.losses(weights, weights, gamma=0.05, temperature=0.1, lwln=True)["loss"].backward()
    # backward = input and weight gradients; the embedders' input gradient is never needed
    assert 2.9 < step_count.get_total_flops() / (4 * matmul_flops(config)) <= 3.0


def test_only_a_no_op_augmentation_counts_as_identical_views():
    assert Augmentation(permute=False, noise=0.0, erase_p=0.0).is_identity()
    for changed in (dict(permute=True), dict(noise=0.01), dict(erase_p=0.1)):
        assert not Augmentation(**{"permute": False, "noise": 0.0, "erase_p": 0.0, **changed}).is_identity()
