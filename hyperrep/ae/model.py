"""The hyper-representation: a transformer autoencoder over neuron tokens of a CNN's weights.

Shape and module names follow the paper's `AE_attn` (keys in docs/formats.md), so its published
`checkpoint_ae.pt` loads into this module (hyperrep.ae.paper_checkpoint):

    weights [B, P] --tokenize--> per-layer tokens --encoder.token_embeddings (one Linear per layer)
      --> [B, 48, d] (+ comp_token) + position embeddings --> N pre-norm blocks
      --> compression (flatten | first token | mean) --> encoder.vec2neck (Linear [+ Tanh]) --> z [B, L]
    z + decoder_bias --> decoder.nec2vec --> [B, 48, d] + position embeddings --> N blocks
      --> decoder.token_debeddings (one Linear per layer) --detokenize--> weights [B, P]

Training parts (the paper's Sec. 3 and appendix): two augmented views per model (`make_views`), the
layer-wise normalised reconstruction loss (LWLN; per-layer sigma from the zoo's train split,
kept as the buffer `layer_scales`), NT-Xent on a projection head, combined with gamma.

Public API (other modules rely on these names):
    HyperRepresentation(config)    .encode(weights[n, P]) -> latents[n, L]
                                   .decode(latents[n, L]) -> weights[n, P]
                                   .arch (cnn.Architecture), .latent_dim, .config (ModelConfig)
      encode and decode are pure functions of their input; call them under torch.no_grad().
    load_hyperrep(path) -> HyperRep, a trained hyper-representation directory (docs/formats.md):
        .model (HyperRepresentation, eval mode, CPU), .config (dict of config.json), .path,
        .zoo_path (Path of the zoo it was trained on), .latents [n, L] float (every zoo model at
        every saved epoch), .latent_table (DataFrame aligned with .latents: model_id, epoch,
        split, test_acc, ... from the zoo's properties), .map_coords [n, 2] (the stored 2-D map
        of .latents), .projection (how the map was made), .metrics (metrics.json);
        .to(device) returns a copy whose model and tensors live on `device`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from hyperrep.nets.cnn import Architecture, get_architecture
from hyperrep.nets.permutations import (
    canonicalize,
    detokenize,
    parameter_layers,
    sequence_length,
    token_dims,
    tokenize,
    tokens_per_layer,
)
from hyperrep.nets.weight_stats import layer_sigmas

COMPRESSIONS = ("linear", "token", "average")
BOTTLENECKS = ("linear", "linear_bounded")
DECOMPRESSIONS = ("linear", "repeat")


@dataclass
class ModelConfig:
    """Every hyper-parameter of the network (paper key in brackets where there is one)."""

    architecture: str = "cnn_s"  # the zoo architecture whose weights are encoded
    d_model: int = 128  # [model::dim_attention_embedding]
    n_heads: int = 4  # [model::N_attention_heads]
    n_blocks: int = 2  # [model::N_attention_blocks]
    d_ff: int = 256  # [model::attention_hidden_dim]
    dropout: float = 0.0  # [model::dropout]
    latent_dim: int = 64  # [model::latent_dim]
    normalize: bool = True  # Norm layers inside the blocks [model::normalize]
    compression: str = "linear"  # linear (flatten) | token | average [model::compression]
    bottleneck: str = "linear_bounded"  # linear | linear_bounded (tanh) [model::bottleneck]
    decompression: str = "linear"  # linear | repeat [model::decompression]
    decoder_bias: bool = False  # learned bias added to z before decoding [model::decoder_bias]
    scale_inputs: bool = False  # divide inputs by the per-layer sigma, multiply outputs back
    canonical_inputs: bool = False  # encode the canonical neuron order (weights.canonicalize)
    center_inputs: bool = False  # encode the difference to the train split's mean vector
    projection_layers: int = 2  # projection head for NT-Xent; 0 = none
    projection_dim: int | None = None  # hidden width (default: latent_dim)
    projection_out: int | None = None  # output width (default: latent_dim // 2)

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model settings {sorted(unknown)}")
        config = cls(**raw)
        config.validate()
        return config

    def validate(self) -> None:
        get_architecture(self.architecture)
        for name, value, allowed in (("compression", self.compression, COMPRESSIONS),
                                     ("bottleneck", self.bottleneck, BOTTLENECKS),
                                     ("decompression", self.decompression, DECOMPRESSIONS)):
            if value not in allowed:
                raise ValueError(f"model {name} {value!r} unknown; known: {', '.join(allowed)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if min(self.d_model, self.d_ff, self.latent_dim, self.n_heads, self.n_blocks) < 1:
            raise ValueError("d_model, d_ff, latent_dim, n_heads and n_blocks must be positive")
        width = self.d_model * sequence_length(get_architecture(self.architecture)) if self.compression == "linear" \
            else self.d_model
        if self.latent_dim > width:
            raise ValueError(f"latent_dim {self.latent_dim} is larger than what the encoder compresses "
                             f"({self.compression} compression of d_model {self.d_model}: {width} numbers); "
                             f"choose latent_dim <= {width}")


# -- transformer parts (names as in the paper's def_transformers.py) ---------------------------
class Norm(nn.Module):
    """The paper's normalisation: alpha * (x - mean) / (unbiased std + eps) + bias (not LayerNorm).

    Computed by one fused F.layer_norm call (forward and backward are each one kernel instead of
    seven elementwise passes): with weight alpha * sqrt((n-1)/n) and epsilon eps^2 (n-1)/n it gives
    alpha * (x - mean) / sqrt(std^2 + eps^2) + bias, which differs from the paper's denominator
    std + eps by less than eps (1e-6): equal to fp32 rounding wherever std is not ~eps."""

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(d_model))
        self.bias = nn.Parameter(torch.zeros(d_model))
        self.eps, self.d_model = eps, d_model
        self.unbiased = math.sqrt((d_model - 1) / d_model) if d_model > 1 else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (self.d_model,), self.alpha * self.unbiased, self.bias, eps=self.eps**2 * self.unbiased**2)


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.q_linear = nn.Linear(d_model, d_model)
        self.k_linear = nn.Linear(d_model, d_model)
        self.v_linear = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (lin(x).view(b, s, self.heads, d // self.heads).transpose(1, 2)
                   for lin in (self.q_linear, self.k_linear, self.v_linear))
        # softmax(q k^T / sqrt(d_k)) v, with dropout on the attention probabilities as in the paper
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, s, d))


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float):
        super().__init__()
        self.linear_1 = nn.Linear(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)
        self.linear_2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.dropout(F.relu(self.linear_1(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + MHA(Norm(x)), then x + FF(Norm(x)); no final norm."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.d_model
        self.norm_1 = Norm(d) if config.normalize else nn.Identity()
        self.norm_2 = Norm(d) if config.normalize else nn.Identity()
        self.attn = MultiHeadAttention(d, config.n_heads, config.dropout)
        self.ff = FeedForward(d, config.d_ff, config.dropout)
        self.dropout_1 = nn.Dropout(config.dropout)
        self.dropout_2 = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout_1(self.attn(self.norm_1(x)))
        return x + self.dropout_2(self.ff(self.norm_2(x)))


class TokenEmbedder(nn.Module):
    """One Linear per layer, applied to all of that layer's tokens in one matmul."""

    def __init__(self, arch: Architecture, d_model: int):
        super().__init__()
        self.layer_lst = nn.ModuleList(nn.Linear(d, d_model) for d in token_dims(arch))

    def forward(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([linear(block) for linear, block in zip(self.layer_lst, tokens)], dim=1)


class TokenDebedder(nn.Module):
    """One Linear per layer from the model width back to that layer's token size."""

    def __init__(self, arch: Architecture, d_model: int):
        super().__init__()
        self.layer_lst = nn.ModuleList(nn.Linear(d_model, d) for d in token_dims(arch))
        self.counts = tokens_per_layer(arch)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [linear(part) for linear, part in zip(self.layer_lst, x.split(self.counts, dim=1))]


class Encoder(nn.Module):
    def __init__(self, arch: Architecture, config: ModelConfig):
        super().__init__()
        d, seq = config.d_model, sequence_length(arch)
        self.compression = config.compression
        self.token_embeddings = TokenEmbedder(arch, d)
        if config.compression == "token":
            self.comp_token = nn.Parameter(torch.randn(1, 1, d))
            seq += 1
        self.position_embeddings = nn.Embedding(seq, d)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        width = d * seq if config.compression == "linear" else d
        neck = [nn.Linear(width, config.latent_dim)]
        if config.bottleneck == "linear_bounded":
            neck.append(nn.Tanh())
        self.vec2neck = nn.Sequential(*neck)

    def forward(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        x = self.token_embeddings(tokens)
        if self.compression == "token":
            x = torch.cat([self.comp_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embeddings.weight
        for block in self.layers:
            x = block(x)
        if self.compression == "token":
            x = x[:, 0]
        elif self.compression == "average":
            x = x.mean(dim=1)
        else:
            x = x.flatten(1)
        return self.vec2neck(x)


class Decoder(nn.Module):
    def __init__(self, arch: Architecture, config: ModelConfig):
        super().__init__()
        d, self.seq = config.d_model, sequence_length(arch)
        self.decompression = config.decompression
        if config.decoder_bias:
            self.decoder_bias = nn.Parameter(torch.randn(config.latent_dim) / 1000)
        else:
            self.decoder_bias = None
        self.nec2vec = nn.Linear(config.latent_dim, d if config.decompression == "repeat" else d * self.seq)
        self.position_embeddings = nn.Embedding(self.seq, d)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.token_debeddings = TokenDebedder(arch, d)

    def forward(self, z: torch.Tensor) -> list[torch.Tensor]:
        if self.decoder_bias is not None:
            z = z + self.decoder_bias
        y = self.nec2vec(z)
        y = y.unsqueeze(1).expand(-1, self.seq, -1) if self.decompression == "repeat" else y.view(z.shape[0], self.seq, -1)
        y = y + self.position_embeddings.weight
        for block in self.layers:
            y = block(y)
        return self.token_debeddings(y)


class ProjectionHead(nn.Module):
    """Linear+BN+ReLU blocks then Linear+BN (as the paper's code): where NT-Xent compares views."""

    def __init__(self, latent_dim: int, hidden: int, out: int, layers: int):
        super().__init__()
        parts, width = [], latent_dim
        for _ in range(layers):
            parts += [nn.Linear(width, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            width = hidden
        parts += [nn.Linear(width, out), nn.BatchNorm1d(out)]
        self.layers = nn.Sequential(*parts)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


# -- the autoencoder -----------------------------------------------------------------------------
class HyperRepresentation(nn.Module):
    """Encoder, decoder, projection head and the per-layer sigma (`layer_scales`) of one zoo."""

    def __init__(self, config: ModelConfig | dict):
        super().__init__()
        self.config = config if isinstance(config, ModelConfig) else ModelConfig.from_dict(config)
        self.config.validate()
        self.arch = get_architecture(self.config.architecture)
        self.latent_dim = self.config.latent_dim
        self.encoder = Encoder(self.arch, self.config)
        self.decoder = Decoder(self.arch, self.config)
        if self.config.projection_layers > 0:
            hidden = self.config.projection_dim or self.latent_dim
            out = self.config.projection_out or max(1, self.latent_dim // 2)
            self.projection_head = ProjectionHead(self.latent_dim, hidden, out, self.config.projection_layers)
        else:
            self.projection_head = None
        self.register_buffer("layer_scales", torch.ones(len(self.arch.layers)))
        if self.config.center_inputs:  # only then, so the paper's state dicts keep their keys
            self.register_buffer("parameter_mean", torch.zeros(self.arch.n_params))
        self.register_buffer("parameter_layer", parameter_layers(self.arch), persistent=False)

    def parameter_scales(self) -> torch.Tensor:
        """sigma of each entry of the flat vector [P] (its layer's sigma)."""
        return self.layer_scales[self.parameter_layer]

    def encode(self, weights: torch.Tensor) -> torch.Tensor:
        """Flat weights [n, P] -> latents [n, latent_dim]."""
        self.arch.check_vector(weights)
        if self.config.canonical_inputs:
            weights = canonicalize(self.arch, weights)
        if self.config.center_inputs:
            weights = weights - self.parameter_mean
        if self.config.scale_inputs:
            weights = weights / self.parameter_scales()
        return self.encoder(tokenize(self.arch, weights))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [n, latent_dim] -> flat weights [n, P]."""
        weights = detokenize(self.arch, self.decoder(latents))
        if self.config.scale_inputs:
            weights = weights * self.parameter_scales()
        return weights + self.parameter_mean if self.config.center_inputs else weights

    def comparable(self, weights: torch.Tensor) -> torch.Tensor:
        """`weights` in the neuron order the decoder produces (canonical when canonical_inputs)."""
        return canonicalize(self.arch, weights) if self.config.canonical_inputs else weights

    def forward(self, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latents = self.encode(weights)
        return latents, self.decode(latents)

    @torch.no_grad()
    def set_train_statistics(self, train_weights: torch.Tensor) -> None:
        """Store what the model needs from the train split: its mean vector (in the decoder's
        neuron order) when centring, and the per-layer sigma of what is then encoded."""
        if self.config.center_inputs:
            ordered = self.comparable(train_weights)
            self.parameter_mean.copy_(ordered.mean(dim=0))
            train_weights = ordered - self.parameter_mean
        self.set_layer_scales(train_weights)

    @torch.no_grad()
    def set_layer_scales(self, train_weights: torch.Tensor) -> None:
        """sigma_l = unbiased std of all layer-l entries of the training vectors, floored at 1e-4."""
        self.layer_scales.copy_(layer_sigmas(self.arch, train_weights).clamp_min(1e-4))

    def losses(
        self, inputs: torch.Tensor, targets: torch.Tensor, *, gamma: float, temperature: float, lwln: bool,
        identical_views: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Loss parts of a batch of 2N views (first N and last N are the two views of N models).

        `identical_views` says the two halves are equal (an augmentation that does nothing): one pass
        over the first half then gives the same losses at half the cost. The caller knows this from
        the augmentation settings, so the step never compares tensors (a host sync on a GPU)."""
        inputs, targets = self.comparable(inputs), self.comparable(targets)
        if identical_views:
            half = len(inputs) // 2
            latents, output = self(inputs[:half])
            latents, targets = torch.cat([latents, latents]), targets[:half]
        else:
            latents, output = self(inputs)
        recon, per_layer = reconstruction_loss(self.arch, output, targets, self.layer_scales if lwln else None,
                                               self.parameter_layer)
        parts = {"loss_recon": recon, "loss_recon_layers": per_layer}
        if gamma > 0 and self.projection_head is not None:
            view_1, view_2 = self.projection_head(latents).chunk(2)
            parts["loss_contrast"] = nt_xent(view_1, view_2, temperature)
        else:
            parts["loss_contrast"] = torch.zeros((), device=inputs.device)
        parts["loss"] = gamma * parts["loss_contrast"] + (1 - gamma) * recon
        return parts


# -- losses --------------------------------------------------------------------------------------
def reconstruction_loss(
    arch: Architecture, output: torch.Tensor, target: torch.Tensor, layer_scales: torch.Tensor | None,
    parameter_layer: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared error summed over parameters / (B * P), each layer's error divided by sigma_l^2
    (LWLN, the paper's Eq. for layer-wise loss normalisation) or plain when `layer_scales` is None.
    Also each layer's term [layers]. `parameter_layer` [P] (each entry's layer) is derived from
    `arch` when not given."""
    if parameter_layer is None:
        parameter_layer = parameter_layers(arch).to(output.device)
    per_entry = (output - target).square().sum(dim=0)  # [P]
    terms = torch.zeros(len(arch.layers), dtype=per_entry.dtype, device=per_entry.device)
    terms = terms.index_add(0, parameter_layer, per_entry) / output.numel()
    if layer_scales is not None:
        terms = terms / layer_scales.square()
    return terms.sum(), terms


def nt_xent(view_1: torch.Tensor, view_2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent: cross-entropy of each view against its partner among the other 2N-1."""
    n = view_1.shape[0]
    z = F.normalize(torch.cat([view_1, view_2]), dim=1)
    similarity = z @ z.T / temperature
    similarity = similarity.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, partner, reduction="sum") / (2 * n)


def matmul_flops(config: ModelConfig) -> int:
    """FLOPs (2 per multiply-add) of the matrix products in one view's forward pass: token
    embedders and debedders, q/k/v/out and feed-forward of every block, the attention products
    q k^T and (softmax) v, compression, decompression and the projection head. Bias adds, norms,
    softmax and activations are not counted (they are O(d) per token, not O(d^2)). A training step
    costs about 3x this per view (backward = gradients of inputs and of weights)."""
    arch, d = get_architecture(config.architecture), config.d_model
    seq = sequence_length(arch)
    embed = sum(n * size * d for n, size in zip(tokens_per_layer(arch), token_dims(arch)))  # one way
    encoder_seq = seq + 1 if config.compression == "token" else seq
    block = lambda s: s * (4 * d * d + 2 * d * config.d_ff) + 2 * s * s * d  # noqa: E731
    neck_in = d * seq if config.compression == "linear" else d
    neck_out = d * seq if config.decompression == "linear" else d
    head = 0
    if config.projection_layers > 0:
        hidden = config.projection_dim or config.latent_dim
        out = config.projection_out or max(1, config.latent_dim // 2)
        head = config.latent_dim * hidden + (config.projection_layers - 1) * hidden * hidden + hidden * out
    multiply_adds = (2 * embed + config.n_blocks * (block(encoder_seq) + block(seq))
                     + config.latent_dim * (neck_in + neck_out) + head)
    return 2 * multiply_adds


# -- encoding and decoding many models ------------------------------------------------------------


