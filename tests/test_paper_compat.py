"""The paper's published AE loads and computes what the original code computed.

The reference below is written from the documented formulas (the paper's AE_attn; keys in docs/formats.md),
independently of hyperrep.ae.model: a Python loop over tokens as in EmbedderNeuronGroup_index, the
custom Norm, multi-head attention, pre-norm blocks, flatten/first-token compression, and the
debedder scattering tokens back into the flat vector.
"""

from __future__ import annotations

import json
import math
import pickle

import pytest
import torch

from hyperrep.ae.config import TrainConfig
from hyperrep.ae.paper_checkpoint import load_paper_hyperrep
from hyperrep.io.files import ArtifactError

INDEX_DICT = {  # CNN-s, c_in = 1 (docs/formats.md)
    "layer": [0, 3, 6, 9, 11], "idx_start": [0, 208, 1414, 1514, 2254], "idx_length": [208, 1206, 100, 740, 210],
    "kernel_no": [8, 6, 4, 20, 10], "kernel_size": [25, 25, 4, 1, 1], "channels_in": [1, 8, 6, 36, 20],
}
D, HEADS, BLOCKS, FF, LATENT = 16, 2, 2, 24, 8


def paper_config(**overrides) -> dict:
    config = {
        "model::type": "transformer", "model::encoding": "neuron", "model::i_dim": 2464, "model::index_dict": INDEX_DICT,
        "model::N_attention_blocks": BLOCKS, "model::N_attention_heads": HEADS, "model::dim_attention_embedding": D,
        "model::attention_hidden_dim": FF, "model::latent_dim": LATENT, "model::dropout": 0.1, "model::normalize": True,
        "model::compression": "linear", "model::bottleneck": "linear", "model::decoder_bias": True,
        "training::gamma": 0.1, "training::normalize_loss": True, "optim::lr": 1e-4, "trainset::batchsize": 32,
    }
    config.update(overrides)
    return config


def kernel_indices() -> list[list[list[int]]]:
    """Per layer, per token: the flat indices of its weights followed by its bias (docs/formats.md)."""
    layers = []
    for l in range(5):
        start, n = INDEX_DICT["idx_start"][l], INDEX_DICT["kernel_no"][l]
        size = INDEX_DICT["kernel_size"][l] * INDEX_DICT["channels_in"][l]
        layers.append([list(range(start + k * size, start + (k + 1) * size)) + [start + n * size + k] for k in range(n)])
    return layers


def random_state_dict(seq_encoder: int, compression: str, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A state dict with the documented keys (docs/formats.md) and random values."""
    def rnd(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    dims = [len(tokens[0]) for tokens in kernel_indices()]
    state = {}
    for side, seq in (("encoder", seq_encoder), ("decoder", 48)):
        state[f"{side}.position_embeddings.weight"] = rnd(seq, D)
        for n in range(BLOCKS):
            p = f"{side}.layers.{n}"
            for norm in ("norm_1", "norm_2"):
                state[f"{p}.{norm}.alpha"], state[f"{p}.{norm}.bias"] = 1 + rnd(D), rnd(D)
            for lin in ("q_linear", "k_linear", "v_linear", "out"):
                state[f"{p}.attn.{lin}.weight"], state[f"{p}.attn.{lin}.bias"] = rnd(D, D), rnd(D)
            state[f"{p}.ff.linear_1.weight"], state[f"{p}.ff.linear_1.bias"] = rnd(FF, D), rnd(FF)
            state[f"{p}.ff.linear_2.weight"], state[f"{p}.ff.linear_2.bias"] = rnd(D, FF), rnd(D)
    for l, d in enumerate(dims):
        state[f"encoder.token_embeddings.layer_lst.{l}.weight"], state[f"encoder.token_embeddings.layer_lst.{l}.bias"] = rnd(D, d), rnd(D)
        state[f"decoder.token_debeddings.layer_lst.{l}.weight"], state[f"decoder.token_debeddings.layer_lst.{l}.bias"] = rnd(d, D), rnd(d)
    neck_in = D * seq_encoder if compression == "linear" else D
    state["encoder.vec2neck.0.weight"], state["encoder.vec2neck.0.bias"] = rnd(LATENT, neck_in) / 10, rnd(LATENT)
    if compression == "token":
        state["encoder.comp_token"] = rnd(1, 1, D)
    state["decoder.nec2vec.weight"], state["decoder.nec2vec.bias"] = rnd(48 * D, LATENT), rnd(48 * D)
    state["decoder.decoder_bias"] = rnd(LATENT)
    return state


# -- the reference, from the formulas -----------------------------------------------------------
def ref_norm(x, s, p):
    return s[f"{p}.alpha"] * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-6) + s[f"{p}.bias"]


def ref_linear(x, s, p):
    return x @ s[f"{p}.weight"].T + s[f"{p}.bias"]


def ref_attention(x, s, p):
    b, n, d = x.shape
    dk = d // HEADS
    q, k, v = (ref_linear(x, s, f"{p}.{name}").view(b, n, HEADS, dk).transpose(1, 2) for name in ("q_linear", "k_linear", "v_linear"))
    scores = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dk), dim=-1)
    return ref_linear((scores @ v).transpose(1, 2).reshape(b, n, d), s, f"{p}.out")


def ref_blocks(x, s, side):
    for n in range(BLOCKS):
        p = f"{side}.layers.{n}"
        x = x + ref_attention(ref_norm(x, s, f"{p}.norm_1"), s, f"{p}.attn")
        hidden = torch.relu(ref_linear(ref_norm(x, s, f"{p}.norm_2"), s, f"{p}.ff.linear_1"))
        x = x + ref_linear(hidden, s, f"{p}.ff.linear_2")
    return x


def ref_encode(w, s, compression):
    tokens = [ref_linear(w[:, index], s, f"encoder.token_embeddings.layer_lst.{l}")
              for l, layer in enumerate(kernel_indices()) for index in layer]
    x = torch.stack(tokens, dim=1)
    if compression == "token":
        x = torch.cat([s["encoder.comp_token"].repeat(len(w), 1, 1), x], dim=1)
    x = ref_blocks(x + s["encoder.position_embeddings.weight"], s, "encoder")
    x = x[:, 0] if compression == "token" else x.reshape(len(w), -1)
    return ref_linear(x, s, "encoder.vec2neck.0")


def ref_decode(z, s):
    y = ref_linear(z + s["decoder.decoder_bias"], s, "decoder.nec2vec").view(len(z), 48, D)
    y = ref_blocks(y + s["decoder.position_embeddings.weight"], s, "decoder")
    out = torch.zeros(len(z), 2464)
    position = 0
    for l, layer in enumerate(kernel_indices()):
        for index in layer:
            out[:, index] = ref_linear(y[:, position], s, f"decoder.token_debeddings.layer_lst.{l}")
            position += 1
    return out


def write_paper_dir(folder, config, state):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config_ae.json").write_text(json.dumps(config))
    torch.save(state, folder / "checkpoint_ae.pt")
    return folder


@pytest.mark.parametrize("compression", ["linear", "token"])
def test_paper_checkpoint_encodes_and_decodes_like_the_original(tmp_path, compression):
    generator = torch.Generator().manual_seed(0)
    state = random_state_dict(48 + (compression == "token"), compression, generator)
    folder = write_paper_dir(tmp_path / "mnist", paper_config(**{"model::compression": compression}), state)
    model = load_paper_hyperrep(folder)
    assert not model.training and model.latent_dim == LATENT and model.arch.name == "cnn_s"
    weights = torch.randn(3, 2464, generator=generator) * 0.2
    z_ref = ref_encode(weights, state, compression)
    with torch.no_grad():
        z = model.encode(weights)
        torch.testing.assert_close(z, z_ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(model.decode(z_ref), ref_decode(z_ref, state), rtol=1e-4, atol=1e-4)


def test_wrong_keys_shapes_and_options_are_refused(tmp_path):
    state = random_state_dict(48, "linear", torch.Generator().manual_seed(1))
    broken = dict(state)
    broken.pop("encoder.vec2neck.0.weight")
    with pytest.raises(ArtifactError, match="missing"):
        load_paper_hyperrep(write_paper_dir(tmp_path / "a", paper_config(), broken))
    with pytest.raises(ArtifactError, match="shapes"):
        load_paper_hyperrep(write_paper_dir(tmp_path / "b", paper_config(**{"model::latent_dim": 9}), state))
    with pytest.raises(ArtifactError, match="pytorch"):
        load_paper_hyperrep(write_paper_dir(tmp_path / "c", paper_config(**{"model::transformer_type": "pytorch"}), state))
    with pytest.raises(ArtifactError, match="i_dim 2864"):
        load_paper_hyperrep(write_paper_dir(tmp_path / "d", paper_config(**{"model::i_dim": 2864}), state))


def test_pickled_code_is_not_loaded(tmp_path):
    folder = write_paper_dir(tmp_path / "evil", paper_config(), {})
    with open(folder / "checkpoint_ae.pt", "wb") as handle:
        pickle.dump({"x": Exception("not a tensor")}, handle, protocol=2)  # torch.load's own protocol
    with pytest.raises(ArtifactError, match="checkpoint_ae.pt"):
        load_paper_hyperrep(folder)


def test_paper_config_drives_training_settings(tmp_path):
    path = tmp_path / "config_ae.json"
    path.write_text(json.dumps(paper_config()))
    config = TrainConfig.from_file(path)
    assert (config.model.d_model, config.model.latent_dim, config.model.architecture) == (D, LATENT, "cnn_s")
    assert (config.gamma, config.lwln, config.lr, config.batch_size) == (0.1, True, 1e-4, 32)
    assert config.augmentation.target == "augmented" and config.augmentation.permute


def test_another_model_type_is_named(tmp_path):
    state = random_state_dict(48, "linear", torch.Generator().manual_seed(1))
    with pytest.raises(ArtifactError, match="model::type = 'vanilla' is not supported"):
        load_paper_hyperrep(write_paper_dir(tmp_path / "a", paper_config(**{"model::type": "vanilla"}), state))
    untyped = paper_config()
    del untyped["model::type"]
    broken = {key: value for key, value in state.items() if not key.startswith("encoder.vec2neck")}
    with pytest.raises(ArtifactError, match="names no model::type"):
        load_paper_hyperrep(write_paper_dir(tmp_path / "b", untyped, broken))
    assert load_paper_hyperrep(write_paper_dir(tmp_path / "c", untyped, state)).latent_dim == LATENT


def test_paper_config_chooses_the_optimiser_and_the_clipping(tmp_path):
    from hyperrep.ae.train import clip_gradients, make_optimizer

    def config_of(**keys):
        path = tmp_path / "config_ae.json"
        path.write_text(json.dumps(paper_config(**keys)))
        return TrainConfig.from_file(path)

    plain = config_of()  # the paper's defaults: AdamW, no clipping
    assert (plain.optimizer, plain.grad_clip) == ("adamw", None)
    sgd = config_of(**{"optim::optimizer": "sgd", "optim::momentum": 0.5, "optim::wd": 0.01,
                       "training::gradient_clipping": "value", "training::gradient_clipp_value": 0.25})
    assert (sgd.optimizer, sgd.momentum, sgd.grad_clip, sgd.grad_clip_mode) == ("sgd", 0.5, 0.25, "value")
    model = torch.nn.Linear(3, 2)
    optimizer = make_optimizer(model, sgd)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.5
    assert optimizer.defaults["weight_decay"] == 0.01
    assert type(make_optimizer(model, config_of(**{"optim::optimizer": "adam"}))) is torch.optim.Adam
    model(torch.full((4, 3), 100.0)).sum().backward()
    clip_gradients(model, sgd)
    assert model.weight.grad.abs().max() == pytest.approx(0.25)
    norm = config_of(**{"training::gradient_clipping": "norm"})
    assert (norm.grad_clip, norm.grad_clip_mode) == (5.0, "norm")
    model.weight.grad.fill_(10.0)
    clip_gradients(model, norm)
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    assert float(grads.norm()) == pytest.approx(5.0, rel=1e-4)
    with pytest.raises(ArtifactError, match="optim::optimizer = 'lamb' is not supported"):
        config_of(**{"optim::optimizer": "lamb"})
