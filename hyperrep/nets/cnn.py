"""The zoo's CNN architectures as flat parameter vectors: layout, forward, train, evaluate.

A model is one flat float vector (the paper's `vectorize_checkpoint` order: for each layer its
weight, then its bias). A population is a [models, params] tensor. The forward pass is written
once for a whole population, so evaluating, fine-tuning and building a zoo share one code path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ACTIVATIONS = {
    "tanh": torch.tanh,
    "relu": F.relu,
    "leakyrelu": F.leaky_relu,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "gelu": F.gelu,
}
INIT_TYPES = ("xavier_uniform", "xavier_normal", "uniform", "normal", "kaiming_normal", "kaiming_uniform")


@dataclass(frozen=True)
class Layer:
    """One weight layer; `index` is its position in the public zoos' `module_list`."""

    index: int
    kind: str  # "conv" or "fc"
    in_features: int  # input channels for conv
    out_features: int  # output channels for conv
    kernel: int = 1  # kernel side for conv
    pool: bool = False  # max-pool 2x2 after the conv

    @property
    def weight_shape(self) -> tuple[int, ...]:
        if self.kind == "conv":
            return (self.out_features, self.in_features, self.kernel, self.kernel)
        return (self.out_features, self.in_features)

    @property
    def n_weights(self) -> int:
        return math.prod(self.weight_shape)

    @property
    def n_params(self) -> int:
        return self.n_weights + self.out_features


@dataclass(frozen=True)
class Architecture:
    """A CNN of the public zoos: its layers in order, and the image shape it takes."""

    name: str
    layers: tuple[Layer, ...]
    in_channels: int
    image_size: int
    n_classes: int = 10
    starts: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        offsets, position = [], 0
        for layer in self.layers:
            offsets.append(position)
            position += layer.n_params
        object.__setattr__(self, "starts", tuple(offsets))

    @property
    def n_params(self) -> int:
        return sum(layer.n_params for layer in self.layers)

    def layer_slices(self) -> list[slice]:
        """Slice of each layer (weights and bias) in the flat vector."""
        return [slice(s, s + layer.n_params) for s, layer in zip(self.starts, self.layers)]

    def state_dict_keys(self) -> list[str]:
        return [f"module_list.{layer.index}.{part}" for layer in self.layers for part in ("weight", "bias")]

    def unflatten(self, flat: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Views (weight, bias) per layer of a flat vector [..., P]; leading dims are kept."""
        lead = flat.shape[:-1]
        views = []
        for start, layer in zip(self.starts, self.layers):
            weight = flat[..., start: start + layer.n_weights].reshape(*lead, *layer.weight_shape)
            bias = flat[..., start + layer.n_weights: start + layer.n_params]
            views.append((weight, bias))
        return views

    def vector_to_state_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A public-zoo state_dict (`module_list.<i>.weight|bias`) of one flat vector."""
        self.check_vector(flat)
        out = {}
        for layer, (weight, bias) in zip(self.layers, self.unflatten(flat)):
            out[f"module_list.{layer.index}.weight"] = weight.clone()
            out[f"module_list.{layer.index}.bias"] = bias.clone()
        return out

    def state_dict_to_vector(self, state: dict[str, torch.Tensor], source: str = "state_dict") -> torch.Tensor:
        """The flat vector of a public-zoo state_dict; a missing key or wrong shape is an error."""
        parts = []
        for layer in self.layers:
            for part, shape in (("weight", layer.weight_shape), ("bias", (layer.out_features,))):
                key = f"module_list.{layer.index}.{part}"
                if key not in state:
                    raise ValueError(f"{source}: missing {key!r} for architecture {self.name}")
                tensor = state[key]
                if tuple(tensor.shape) != shape:
                    raise ValueError(f"{source}: {key} has shape {tuple(tensor.shape)}, {self.name} needs {shape}")
                parts.append(tensor.detach().float().reshape(-1))
        return torch.cat(parts)

    def check_vector(self, flat: torch.Tensor) -> None:
        if flat.shape[-1] != self.n_params:
            raise ValueError(f"{self.name} has {self.n_params} parameters, got vectors of {flat.shape[-1]}")


CNN_S = Architecture(
    "cnn_s",
    (
        Layer(0, "conv", 1, 8, 5, pool=True),
        Layer(3, "conv", 8, 6, 5, pool=True),
        Layer(6, "conv", 6, 4, 2),
        Layer(9, "fc", 36, 20),
        Layer(11, "fc", 20, 10),
    ),
    in_channels=1,
    image_size=28,
)
CNN_S3 = Architecture(
    "cnn_s3",
    (
        Layer(0, "conv", 3, 8, 5, pool=True),
        Layer(3, "conv", 8, 6, 5, pool=True),
        Layer(6, "conv", 6, 4, 2),
        Layer(9, "fc", 36, 20),
        Layer(11, "fc", 20, 10),
    ),
    in_channels=3,
    image_size=28,
)
CNN_L = Architecture(
    "cnn_l",
    (
        Layer(0, "conv", 3, 16, 3, pool=True),
        Layer(4, "conv", 16, 32, 3, pool=True),
        Layer(8, "conv", 32, 15, 3, pool=True),
        Layer(13, "fc", 60, 20),
        Layer(16, "fc", 20, 10),
    ),
    in_channels=3,
    image_size=32,
)
ARCHITECTURES = {arch.name: arch for arch in (CNN_S, CNN_S3, CNN_L)}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def init_vector(arch: Architecture, init_type: str, generator: torch.Generator) -> torch.Tensor:
    """A fresh flat vector initialised as the public zoos do (biases 0.01)."""
    if init_type not in INIT_TYPES:
        raise ValueError(f"unknown init {init_type!r}; known: {', '.join(INIT_TYPES)}")
    parts = []
    for layer in arch.layers:
        weight = torch.empty(layer.weight_shape)
        fan_in = math.prod(layer.weight_shape[1:])
        fan_out = layer.weight_shape[0] * math.prod(layer.weight_shape[2:])
        if init_type == "uniform":
            weight.uniform_(0.0, 1.0, generator=generator)
        elif init_type == "normal":
            weight.normal_(0.0, 1.0, generator=generator)
        elif init_type == "xavier_uniform":
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            weight.uniform_(-bound, bound, generator=generator)
        elif init_type == "xavier_normal":
            weight.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=generator)
        elif init_type == "kaiming_uniform":
            bound = math.sqrt(6.0 / fan_in)
            weight.uniform_(-bound, bound, generator=generator)
        else:  # kaiming_normal
            weight.normal_(0.0, math.sqrt(2.0 / fan_in), generator=generator)
        parts += [weight.reshape(-1), torch.full((layer.out_features,), 0.01)]
    return torch.cat(parts)


def forward(arch: Architecture, activation: str, flat: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Logits [N, classes] of one model given as a flat vector."""
    act = get_activation(activation)
    x = images
    layers = arch.unflatten(flat)
    for i, (layer, (weight, bias)) in enumerate(zip(arch.layers, layers)):
        if layer.kind == "conv":
            x = F.conv2d(x, weight, bias)
            if layer.pool:
                x = F.max_pool2d(x, 2)
        else:
            x = F.linear(x.flatten(1), weight, bias)
        if i < len(layers) - 1:
            x = act(x)
    return x


CPU_MODEL_CHUNK = 8  # models per block of the CPU path (measured: docs/benchmarks.md)


def population_forward(
    arch: Architecture, activation: str, population: torch.Tensor, images: torch.Tensor, gemm: bool = False
) -> torch.Tensor:
    """Logits [M, N, classes] of M models at once (grouped convolutions; the batched path).

    `images` is [N, C, H, W] shared by all models, or [M, N, C, H, W] with one batch per model;
    for the latter `gemm` computes each conv as im2col + one batched GEMM instead.
    Shared images on a CPU without autograd take `_shared_images_forward_cpu`, the same
    function computed in a cache- and GEMM-friendly order.
    """
    if (images.dim() == 4 and images.device.type == "cpu" and not torch.is_grad_enabled()
            and arch.layers[0].kind == "conv"):
        return _shared_images_forward_cpu(arch, activation, population, images)
    if images.dim() == 5 and gemm:
        return _per_model_images_forward_gemm(arch, activation, population, images)
    act = get_activation(activation)
    m = population.shape[0]
    layers = arch.unflatten(population)
    if images.dim() == 4:
        first, (w0, b0) = arch.layers[0], layers[0]
        x = F.conv2d(images, w0.reshape(m * first.out_features, *w0.shape[2:]), b0.reshape(-1))
    else:
        n = images.shape[1]
        x = images.transpose(0, 1).reshape(n, m * arch.in_channels, *images.shape[-2:])
        w0, b0 = layers[0]
        x = F.conv2d(x, w0.reshape(-1, *w0.shape[2:]), b0.reshape(-1), groups=m)
    x = act(F.max_pool2d(x, 2) if arch.layers[0].pool else x)
    for i, (layer, (weight, bias)) in enumerate(zip(arch.layers[1:], layers[1:]), start=1):
        last = i == len(layers) - 1
        if layer.kind == "conv":
            x = F.conv2d(x, weight.reshape(-1, *weight.shape[2:]), bias.reshape(-1), groups=m)
            if layer.pool:
                x = F.max_pool2d(x, 2)
        else:
            if x.dim() == 4:  # conv -> fc: per-model flatten in channel-major order
                x = x.reshape(x.shape[0], m, -1)
            x = torch.einsum("nmf,mof->nmo", x, weight) + bias
        if not last:
            x = act(x)
    return x.transpose(0, 1)


def _per_model_images_forward_gemm(
    arch: Architecture, activation: str, population: torch.Tensor, images: torch.Tensor
) -> torch.Tensor:
    """Logits [M, N, classes] of M models on their own batches [M, N, C, H, W], as batched GEMMs.

    Each conv is im2col from strided views (`Tensor.unfold`, one kernel; `F.unfold` launches
    one kernel per image on CUDA) and one `bmm` over the models. On a GPU this can beat a
    grouped convolution with one group per model; `hyperrep.nets.population` times both.
    """
    act = get_activation(activation)
    m, n = images.shape[:2]
    x = images.reshape(m * n, *images.shape[2:])
    layers = arch.unflatten(population)
    for i, (layer, (weight, bias)) in enumerate(zip(arch.layers, layers)):
        last = i == len(layers) - 1
        if layer.kind == "conv":
            k, channels = layer.kernel, x.shape[1]
            patches = x.unfold(2, k, 1).unfold(3, k, 1)  # [M*N, C, Ho, Wo, k, k]
            out_h, out_w = patches.shape[2:4]
            cols = patches.reshape(m, n, channels, out_h, out_w, k, k).permute(0, 2, 5, 6, 1, 3, 4)
            cols = cols.reshape(m, channels * k * k, n * out_h * out_w)
            y = torch.bmm(weight.reshape(m, layer.out_features, -1), cols) + bias[:, :, None]
            x = y.reshape(m, layer.out_features, n, out_h, out_w).transpose(1, 2)
            x = x.reshape(m * n, layer.out_features, out_h, out_w)
            if layer.pool:
                x = F.max_pool2d(x, 2)
        else:
            x = torch.bmm(x.reshape(m, n, -1), weight.transpose(1, 2)) + bias[:, None, :]
            x = x.reshape(m * n, -1)
        if not last:
            x = act(x)
    return x.reshape(m, n, -1)


# -- the CPU evaluation path -------------------------------------------------------------------
# Small per-model convolutions are memory-bound on a CPU. Here the first conv of a block of
# models is one GEMM over im2col patches that all models share (cut once per image batch), the
# 2x2 max-pool is folded into it (max over the four GEMMs of the window positions, then bias
# and activation, since max(a + b) = max(a) + b), and later convs are grouped convolutions in
# channels_last layout. Activations run in place; tanh as 2 * sigmoid(2x) - 1, which is several
# times faster than torch.tanh here and within 1e-7 of it.


def _tanh_(x: torch.Tensor) -> torch.Tensor:
    return x.mul_(2).sigmoid_().mul_(2).sub_(1)


_INPLACE_ACTIVATIONS = {
    "tanh": _tanh_,
    "relu": torch.relu_,
    "leakyrelu": F.leaky_relu_,
    "sigmoid": torch.sigmoid_,
    "silu": lambda x: F.silu(x, inplace=True),
    "gelu": F.gelu,
}


def _first_layer_patches(layer: Layer, images: torch.Tensor) -> tuple[torch.Tensor, int]:
    """im2col patches of the first conv, [positions, N * side^2, C * k^2], and the output side.

    With pooling, `positions` = 4 (the corners of each 2x2 window, rows in pooled order);
    without, 1 (every output pixel)."""
    n, k = images.shape[0], layer.kernel
    side = images.shape[-1] - k + 1
    columns = F.unfold(images, k)  # [N, C*k*k, side*side]
    features = columns.shape[1]
    if not layer.pool:
        return columns.transpose(1, 2).reshape(1, n * side * side, features), side
    half = side // 2
    columns = columns.view(n, features, side, side)[:, :, : 2 * half, : 2 * half]
    windows = columns.reshape(n, features, half, 2, half, 2).permute(3, 5, 0, 2, 4, 1)
    return windows.reshape(4, n * half * half, features), half


def _shared_images_forward_cpu(
    arch: Architecture, activation: str, population: torch.Tensor, images: torch.Tensor,
    model_chunk: int = CPU_MODEL_CHUNK,
) -> torch.Tensor:
    """Logits [M, N, classes]; the patches are cut once and reused by every block of models."""
    get_activation(activation)
    act_ = _INPLACE_ACTIVATIONS[activation]
    patches, side = _first_layer_patches(arch.layers[0], images)
    blocks = [_forward_block(arch, act_, population[start: start + model_chunk], patches, images.shape[0], side)
              for start in range(0, population.shape[0], model_chunk)]
    return torch.cat(blocks) if blocks else torch.empty(0, images.shape[0], arch.n_classes)


def _forward_block(arch: Architecture, act_, block: torch.Tensor, patches: torch.Tensor, n: int, side: int) -> torch.Tensor:
    m = block.shape[0]
    layers = arch.unflatten(block)
    first, (weight, bias) = arch.layers[0], layers[0]
    kernels = weight.reshape(m * first.out_features, -1).t()
    x = patches[0] @ kernels  # [N * side^2, m * channels]
    if len(patches) > 1:
        scratch = torch.empty_like(x)
        for position in patches[1:]:
            torch.mm(position, kernels, out=scratch)
            torch.maximum(x, scratch, out=x)
    x = act_(x.add_(bias.reshape(-1)))
    x = x.view(n, side, side, m * first.out_features).permute(0, 3, 1, 2)  # NCHW view, channels_last
    for i, (layer, (weight, bias)) in enumerate(zip(arch.layers[1:], layers[1:]), start=1):
        if layer.kind == "conv":
            kernels = weight.reshape(-1, *weight.shape[2:]).contiguous(memory_format=torch.channels_last)
            x = F.conv2d(x, kernels, bias.reshape(-1), groups=m)
            if layer.pool:
                x = F.max_pool2d(x, 2)
        else:
            if x.dim() == 4:  # conv -> fc: per-model flatten in channel-major order
                x = x.contiguous().reshape(n, m, -1)
            x = torch.einsum("nmf,mof->nmo", x, weight) + bias
        if i < len(layers) - 1:
            x = act_(x)
    return x.transpose(0, 1)
