"""Flat weight vectors as neuron tokens, and the permutation symmetry of hidden neurons.

Token layout (docs/formats.md, flat weight vectors): one token per output neuron (fc) or kernel (conv), holding that
unit's incoming weights followed by its bias, so a layer with `n` units of `k` incoming weights
gives a [B, n, k + 1] block. For CNN-s the token sizes are 26/201/25/37/21 and there are
48 tokens. `tokenize` / `detokenize` are pure reshapes and invert each other exactly.

Permutations (the paper's permutation augmentation): reordering the units of a hidden layer, together with the
matching input columns of the next layer, leaves the network's function unchanged. At a conv->fc
transition the fc columns move in blocks of `in_features / channels` (9 for CNN-s). The last
layer is never permuted. A permutation of a whole population is one gather index [n, P], so
applying it is `permute(weights, index)` = `torch.gather`:

    index = random_permutation_index(arch, n, generator)   # or canonical_permutation_index
    permuted = permute(weights, index)

`canonicalize` sorts each hidden layer's units by the descending L2 norm of their incoming
weights and bias (the paper's "l2" canonical form); that key is unchanged by permutations
of the inputs, so two models that differ only by a permutation map to the same vector.
"""

from __future__ import annotations

import torch

from hyperrep.nets.cnn import Architecture


# -- layout ------------------------------------------------------------------------------------
def tokens_per_layer(arch: Architecture) -> list[int]:
    """Number of tokens (output units) of each layer: 8, 6, 4, 20, 10 for CNN-s."""
    return [layer.out_features for layer in arch.layers]


def token_dims(arch: Architecture) -> list[int]:
    """Token size of each layer: incoming weights per unit plus the bias (26/201/25/37/21)."""
    return [layer.n_weights // layer.out_features + 1 for layer in arch.layers]


def sequence_length(arch: Architecture) -> int:
    """Tokens per model: 48 for CNN-s, 93 for CNN-l."""
    return sum(tokens_per_layer(arch))


def parameter_layers(arch: Architecture) -> torch.Tensor:
    """Layer number of every entry of the flat vector, LongTensor [P]."""
    return torch.cat([torch.full((layer.n_params,), i, dtype=torch.long) for i, layer in enumerate(arch.layers)])


def index_dict(arch: Architecture) -> dict[str, list[int]]:
    """The paper's `model::index_dict` of an architecture (docs/formats.md)."""
    return {
        "layer": [layer.index for layer in arch.layers],
        "idx_start": list(arch.starts),
        "idx_length": [layer.n_params for layer in arch.layers],
        "kernel_no": [layer.out_features for layer in arch.layers],
        "kernel_size": [layer.kernel * layer.kernel for layer in arch.layers],
        "channels_in": [layer.in_features for layer in arch.layers],
    }


# -- tokens ------------------------------------------------------------------------------------
def tokenize(arch: Architecture, weights: torch.Tensor) -> list[torch.Tensor]:
    """Flat vectors [B, P] -> one token block [B, n_l, d_l] per layer (weights then bias)."""
    arch.check_vector(weights)
    blocks = []
    for start, layer in zip(arch.starts, arch.layers):
        n, k = layer.out_features, layer.n_weights // layer.out_features
        unit_weights = weights[:, start: start + n * k].reshape(-1, n, k)
        bias = weights[:, start + n * k: start + n * (k + 1)].unsqueeze(-1)
        blocks.append(torch.cat([unit_weights, bias], dim=-1))
    return blocks


def detokenize(arch: Architecture, tokens: list[torch.Tensor]) -> torch.Tensor:
    """Token blocks [B, n_l, d_l] per layer -> flat vectors [B, P]; the inverse of `tokenize`."""
    if len(tokens) != len(arch.layers):
        raise ValueError(f"{arch.name} has {len(arch.layers)} layers, got {len(tokens)} token blocks")
    parts = []
    for block, n, d in zip(tokens, tokens_per_layer(arch), token_dims(arch)):
        if tuple(block.shape[1:]) != (n, d):
            raise ValueError(f"token block of shape {tuple(block.shape)}, {arch.name} needs [B, {n}, {d}]")
        parts += [block[..., :-1].reshape(block.shape[0], -1), block[..., -1]]
    return torch.cat(parts, dim=1)


# -- permutations ------------------------------------------------------------------------------
def permutation_index(arch: Architecture, unit_orders: list[torch.Tensor]) -> torch.Tensor:
    """Gather index [n, P] that reorders hidden units; `unit_orders[l]` is [n, units_l] and says,
    for every new position of layer l, which old unit goes there (one entry per hidden layer)."""
    hidden = arch.layers[:-1]
    if len(unit_orders) != len(hidden):
        raise ValueError(f"{arch.name} has {len(hidden)} hidden layers, got {len(unit_orders)} unit orders")
    n = unit_orders[0].shape[0]
    device = unit_orders[0].device
    positions = torch.arange(arch.n_params, device=device).expand(n, -1)
    parts = []
    for i, (layer, (weight, bias)) in enumerate(zip(arch.layers, arch.unflatten(positions))):
        if i < len(hidden):  # move this layer's output units (weight rows and bias)
            order = unit_orders[i]
            weight = weight.gather(1, _expand_along(order, weight, dim=1))
            bias = bias.gather(1, order)
        if i > 0:  # move the next layer's inputs the same way (in blocks after a conv -> fc step)
            previous = unit_orders[i - 1]
            units = arch.layers[i - 1].out_features
            if layer.kind == "conv":
                weight = weight.gather(2, _expand_along(previous, weight, dim=2))
            else:
                blocks = weight.reshape(n, layer.out_features, units, layer.in_features // units)
                weight = blocks.gather(2, _expand_along(previous, blocks, dim=2)).reshape(weight.shape)
        parts += [weight.reshape(n, -1), bias]
    return torch.cat(parts, dim=1)


def _expand_along(order: torch.Tensor, target: torch.Tensor, dim: int) -> torch.Tensor:
    """Broadcast an order [n, units] to the shape of `target`, varying along `dim`."""
    shape = [order.shape[0]] + [1] * (target.dim() - 1)
    shape[dim] = order.shape[1]
    return order.reshape(shape).expand_as(target)


def random_permutation_index(
    arch: Architecture, n: int, generator: torch.Generator, device: torch.device | str | None = None
) -> torch.Tensor:
    """`n` independent uniformly random function-preserving permutations, LongTensor [n, P].

    Drawn on the generator's device (CPU for a default generator) and moved to `device`, so a
    seed gives the same permutations on every machine."""
    orders = [
        torch.argsort(torch.rand(n, layer.out_features, generator=generator, device=generator.device), dim=1)
        for layer in arch.layers[:-1]
    ]
    index = permutation_index(arch, orders)
    return index.to(device) if device is not None else index


def permute(weights: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Apply gather index [B, P] (or one index [P] for all rows) to flat vectors [B, P]."""
    if index.dim() == 1:
        index = index.expand(weights.shape[0], -1)
    return torch.gather(weights, 1, index.to(weights.device))


def canonical_permutation_index(arch: Architecture, weights: torch.Tensor) -> torch.Tensor:
    """Gather index [B, P] sorting hidden units by descending L2 norm of incoming weights + bias."""
    arch.check_vector(weights)
    orders = []
    for block in tokenize(arch, weights)[:-1]:
        norms = block.norm(dim=-1)  # invariant to any reordering of this unit's inputs
        orders.append(torch.argsort(norms, dim=1, descending=True, stable=True))
    return permutation_index(arch, orders)


def canonicalize(arch: Architecture, weights: torch.Tensor) -> torch.Tensor:
    """The canonical ordering of every model in [B, P]; equal for models that differ by a permutation."""
    return permute(weights, canonical_permutation_index(arch, weights))
