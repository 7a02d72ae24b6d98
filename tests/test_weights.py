"""Neuron tokens and function-preserving permutations of flat weight vectors."""

from __future__ import annotations

import pytest
import torch

from hyperrep.nets.cnn import CNN_L, CNN_S, forward, init_vector
from hyperrep.nets.permutations import (
    canonicalize,
    detokenize,
    index_dict,
    parameter_layers,
    permute,
    random_permutation_index,
    sequence_length,
    token_dims,
    tokenize,
    tokens_per_layer,
)


def population(arch, n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.stack([init_vector(arch, "kaiming_uniform", generator) for _ in range(n)])


def test_cnn_s_token_layout_matches_the_paper():
    assert token_dims(CNN_S) == [26, 201, 25, 37, 21]
    assert tokens_per_layer(CNN_S) == [8, 6, 4, 20, 10]
    assert sequence_length(CNN_S) == 48
    assert token_dims(CNN_L) == [28, 145, 289, 61, 21]
    assert sequence_length(CNN_L) == 93
    assert index_dict(CNN_S)["idx_start"] == [0, 208, 1414, 1514, 2254]
    assert parameter_layers(CNN_S).bincount().tolist() == [208, 1206, 100, 740, 210]


@pytest.mark.parametrize("arch", [CNN_S, CNN_L])
def test_tokenize_round_trip_is_exact(arch):
    weights = torch.randn(3, arch.n_params)
    tokens = tokenize(arch, weights)
    assert [tuple(t.shape) for t in tokens] == [(3, n, d) for n, d in zip(tokens_per_layer(arch), token_dims(arch))]
    assert torch.equal(detokenize(arch, tokens), weights)


def test_token_holds_one_units_weights_and_bias():
    weights = population(CNN_S, 1)
    (conv1_weight, conv1_bias) = CNN_S.unflatten(weights[0])[0]
    fc1_weight, fc1_bias = CNN_S.unflatten(weights[0])[3]
    tokens = tokenize(CNN_S, weights)
    assert torch.equal(tokens[0][0, 5], torch.cat([conv1_weight[5].reshape(-1), conv1_bias[5:6]]))
    assert torch.equal(tokens[3][0, 7], torch.cat([fc1_weight[7], fc1_bias[7:8]]))


@pytest.mark.parametrize("arch", [CNN_S, CNN_L])
def test_permuted_models_compute_the_same_logits(arch):
    weights = population(arch, 3)
    index = random_permutation_index(arch, 3, torch.Generator().manual_seed(1))
    permuted = permute(weights, index)
    assert not torch.equal(permuted, weights)
    assert torch.equal(permuted.sort(dim=1).values, weights.sort(dim=1).values)  # a reordering
    images = torch.randn(16, arch.in_channels, arch.image_size, arch.image_size)
    for original, moved in zip(weights, permuted):
        torch.testing.assert_close(forward(arch, "tanh", moved, images), forward(arch, "tanh", original, images),
                                   rtol=1e-5, atol=1e-5)


def test_last_layer_is_never_permuted_and_seeds_repeat():
    index = random_permutation_index(CNN_S, 4, torch.Generator().manual_seed(3))
    weight, bias = CNN_S.unflatten(index)[-1]  # outputs stay put; only the input columns move
    assert torch.equal(bias, torch.arange(2454, 2464).expand(4, -1))
    rows = torch.arange(2254, 2454).reshape(10, 20)
    assert torch.equal(weight.sort(dim=-1).values, rows.expand(4, -1, -1))
    assert torch.equal(index, random_permutation_index(CNN_S, 4, torch.Generator().manual_seed(3)))
    assert not torch.equal(index, random_permutation_index(CNN_S, 4, torch.Generator().manual_seed(4)))


def test_canonicalize_is_invariant_under_permutations_and_keeps_the_function():
    weights = population(CNN_S, 4)
    canonical = canonicalize(CNN_S, weights)
    for seed in range(3):
        permuted = permute(weights, random_permutation_index(CNN_S, 4, torch.Generator().manual_seed(seed)))
        assert torch.equal(canonicalize(CNN_S, permuted), canonical)
    images = torch.randn(8, 1, 28, 28)
    torch.testing.assert_close(forward(CNN_S, "tanh", canonical[0], images), forward(CNN_S, "tanh", weights[0], images),
                               rtol=1e-5, atol=1e-5)
    norms = tokenize(CNN_S, canonical)[3].norm(dim=-1)
    assert (norms[:, :-1] >= norms[:, 1:]).all()
