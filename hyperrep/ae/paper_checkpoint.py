"""The paper's published hyper-representations: config_ae.json + checkpoint_ae.pt (docs/formats.md).

    model = load_paper_hyperrep("hyper_reps/mnist")     # a HyperRepresentation, eval mode, CPU
    latents = model.encode(weights)                     # what the original AE_attn computed

`checkpoint_ae.pt` is a plain state_dict with the keys listed in docs/formats.md; it is read with
torch.load(weights_only=True), never unpickled. Options the original code offered but this
package does not implement (per-weight encoding, the attention embedder, MLP bottlenecks,
deeper debedders, torch's post-norm transformer) are refused with a clear error instead of being
loaded wrongly. `model::feature_normalization` is ignored, as the original `sample()` ignores it.
A config_ae.json can also drive `hyperrep train` (`train_settings_from_paper`, read by TrainConfig.from_file).
"""

from __future__ import annotations

from pathlib import Path

import torch

from hyperrep.ae.model import HyperRepresentation, ModelConfig
from hyperrep.ae.views import Augmentation
from hyperrep.io.files import ArtifactError, load_torch_file, read_json
from hyperrep.nets.cnn import ARCHITECTURES, Architecture
from hyperrep.nets.permutations import index_dict

INDEX_FIELDS = ("idx_start", "idx_length", "kernel_no", "kernel_size", "channels_in")


def architecture_from_paper(config_ae: dict) -> Architecture:
    """The architecture whose flat layout matches `model::i_dim` and `model::index_dict`."""
    i_dim = config_ae.get("model::i_dim")
    given = config_ae.get("model::index_dict")
    if not isinstance(given, dict):
        raise ValueError("model::index_dict is missing; only neuron-token configs with an index_dict are supported")
    for arch in ARCHITECTURES.values():
        ours = index_dict(arch)
        if arch.n_params == i_dim and all(list(given.get(f, ours[f])) == ours[f] for f in INDEX_FIELDS):
            return arch
    known = ", ".join(f"{a.name} ({a.n_params})" for a in ARCHITECTURES.values())
    raise ValueError(f"model::i_dim {i_dim} with this index_dict matches no known architecture; known: {known}")


def model_config_from_paper(config_ae: dict) -> ModelConfig:
    """Our ModelConfig for a paper config (AE weights only: no projection head)."""
    _refuse_unsupported(config_ae)
    bottleneck = config_ae.get("model::bottleneck", "linear")
    config = ModelConfig(
        architecture=architecture_from_paper(config_ae).name,
        d_model=int(config_ae["model::dim_attention_embedding"]),
        n_heads=int(config_ae["model::N_attention_heads"]),
        n_blocks=int(config_ae["model::N_attention_blocks"]),
        d_ff=int(config_ae["model::attention_hidden_dim"]),
        dropout=float(config_ae["model::dropout"]),
        latent_dim=int(config_ae["model::latent_dim"]),
        normalize=bool(config_ae["model::normalize"]),
        compression=config_ae.get("model::compression", "linear"),  # the deprecated compression_token is a no-op there too
        bottleneck=bottleneck,
        decompression=config_ae.get("model::decompression", "linear"),
        decoder_bias=bool(config_ae.get("model::decoder_bias")),
        projection_layers=0,
    )
    config.validate()
    return config


def _refuse_unsupported(config_ae: dict) -> None:
    required = ["model::N_attention_blocks", "model::N_attention_heads", "model::dim_attention_embedding",
                "model::attention_hidden_dim", "model::latent_dim", "model::dropout", "model::normalize", "model::i_dim"]
    model_type = config_ae.get("model::type")
    if model_type is not None and model_type != "transformer":
        raise ValueError(f"model::type = {model_type!r} is not supported: hyperrep loads only the paper's "
                         "'transformer' autoencoder (AE_attn), not its 'vanilla' (MLP) or 'perceiver' ones")
    missing = [key for key in required if key not in config_ae]
    if missing:
        raise ValueError(f"missing required keys {missing}")
    checks = [
        ("model::encoding", "weight", "neuron"),
        ("model::transformer_type", "pol", "pol"),
        ("model::debedder_layers", 1, 1),
    ]
    for key, default, needed in checks:
        if config_ae.get(key, default) != needed:
            raise ValueError(f"{key} = {config_ae.get(key, default)!r} is not supported (only {needed!r})")
    if config_ae.get("model::encoder") == "attn":
        raise ValueError("model::encoder = 'attn' (the attention embedder) is not supported")
    if config_ae.get("model::bottleneck", "linear") not in ("linear", "linear_bounded"):
        raise ValueError(f"model::bottleneck = {config_ae['model::bottleneck']!r} is not supported (linear, linear_bounded)")


def load_paper_hyperrep(directory: Path | str) -> HyperRepresentation:
    """The paper's AE from `directory`/config_ae.json and checkpoint_ae.pt (strict key match)."""
    directory = Path(directory)
    config_path, checkpoint_path = directory / "config_ae.json", directory / "checkpoint_ae.pt"
    config_ae = read_json(config_path)
    try:
        model = HyperRepresentation(model_config_from_paper(config_ae))
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{config_path}: {err}") from err
    state = load_torch_file(checkpoint_path)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{checkpoint_path}: not a state_dict of tensors")
    parts = {"encoder": model.encoder, "decoder": model.decoder}
    expected = {f"{name}.{key}" for name, module in parts.items() for key in module.state_dict()}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        untyped = ("; config_ae.json names no model::type, and the paper's code then builds its 'vanilla' (MLP) "
                   "autoencoder, which hyperrep does not load" if "model::type" not in config_ae else "")
        raise ArtifactError(f"{checkpoint_path}: keys do not match {config_path.name} "
                            f"(missing {missing[:5]}, unexpected {unexpected[:5]}{untyped})")
    for name, module in parts.items():
        own = {key[len(name) + 1:]: value.float() for key, value in state.items() if key.startswith(name + ".")}
        try:
            module.load_state_dict(own, strict=True)
        except RuntimeError as err:
            raise ArtifactError(f"{checkpoint_path}: shapes do not match {config_path.name} "
                                f"({str(err).splitlines()[-1].strip()})") from err
    return model.eval()


def train_settings_from_paper(config_ae: dict) -> dict:
    """TrainConfig arguments from a paper config_ae.json (the training keys of docs/formats.md with the
    paper code's defaults); hyperrep.ae.train builds the TrainConfig, so this module never imports it."""
    model = model_config_from_paper(config_ae)
    model.projection_layers = int(config_ae.get("model::projection_head_layers", 0))
    model.projection_dim = config_ae.get("model::projection_head_hdim")
    model.projection_out = config_ae.get("model::projection_head_odim")
    erase = config_ae.get("trainset::erase_augment") or {}
    augmentation = Augmentation(
        permute=True,
        noise=float(config_ae.get("trainset::add_noise_input", 0.0) or 0.0),
        erase_p=float(erase.get("p", 0.0)),
        erase_scale=list(erase.get("scale", (0.02, 0.33))),
        target="augmented",
    )
    epochs = int(config_ae.get("training::epochs_train", 50)) * int(config_ae.get("training::test_epochs", 1))
    return dict(
        model=model, augmentation=augmentation, epochs=epochs,
        batch_size=int(config_ae.get("trainset::batchsize", 64)),
        lr=float(config_ae.get("optim::lr", 3e-4)), weight_decay=float(config_ae.get("optim::wd", 3e-5)),
        warmup_epochs=0.0, min_lr_fraction=1.0,  # the paper's default: constant lr, no scheduler
        gamma=float(config_ae.get("training::gamma", 0.5)),
        temperature=float(config_ae.get("training::temperature", 0.1)),
        lwln=bool(config_ae.get("training::normalize_loss", False)),
        seed=int(config_ae.get("seed", 42)),
        **_optimisation_from_paper(config_ae),
    )


PAPER_OPTIMIZERS = ("adamw", "adam", "sgd")  # what the paper's set_optimizer builds; its "lamb" needs a torch.optim.Lamb that torch lacks


def _optimisation_from_paper(config_ae: dict) -> dict:
    """Optimiser and gradient clipping as the paper's code reads them (def_simclr_ae_module.py):
    optim::optimizer (default adamw), optim::momentum (sgd, 0.9), training::gradient_clipping
    (None, "norm" or "value") with training::gradient_clipp_value (default 5)."""
    optimizer = config_ae.get("optim::optimizer", "adamw")
    if optimizer not in PAPER_OPTIMIZERS:
        raise ValueError(f"optim::optimizer = {optimizer!r} is not supported ({', '.join(PAPER_OPTIMIZERS)})")
    clipping = config_ae.get("training::gradient_clipping")
    if clipping not in (None, "norm", "value"):
        raise ValueError(f"training::gradient_clipping = {clipping!r} is not supported (null, 'norm' or 'value')")
    value = float(config_ae.get("training::gradient_clipp_value", 5)) if clipping else None
    return {"optimizer": optimizer, "momentum": float(config_ae.get("optim::momentum", 0.9)),
            "grad_clip": value, "grad_clip_mode": clipping or "norm"}
