"""The settings of an autoencoder training run (`TrainConfig`, from our JSON or the paper's
config_ae.json), how its weights are stored, and the checks that stop a bad config before any
training."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from hyperrep.ae.map import METHODS
from hyperrep.ae.model import ModelConfig
from hyperrep.ae.paper_checkpoint import train_settings_from_paper
from hyperrep.ae.views import Augmentation
from hyperrep.io.files import ArtifactError, read_json
from hyperrep.nets.cnn import get_architecture
from hyperrep.zoo.format import Zoo

VERSION = 1


OPTIMIZERS = ("adamw", "adam", "sgd")


PROJECTION_HEAD = "projection_head."  # state-dict prefix of the NT-Xent head


STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}  # weights in 16 bits: docs/formats.md


@dataclass
class TrainConfig:
    """Every setting of a training run; stored verbatim in config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    augmentation: Augmentation = field(default_factory=Augmentation)
    zoo_epochs: list[int] | None = None  # saved zoo epochs to train on (None = all)
    epochs: int = 50
    batch_size: int = 64  # models per step (two views each)
    lr: float = 1e-3
    weight_decay: float = 3e-5
    warmup_epochs: float = 2.0
    min_lr_fraction: float = 0.05  # cosine decay ends at lr * this
    gamma: float = 0.05  # weight of NT-Xent; 1 - gamma weighs the reconstruction
    temperature: float = 0.1
    lwln: bool = True  # layer-wise loss normalisation; False is the paper's failing ablation
    optimizer: str = "adamw"  # adamw, adam or sgd (with `momentum`); weight_decay applies to each
    momentum: float = 0.9  # sgd only
    grad_clip: float | None = 1.0  # None or 0: no clipping
    grad_clip_mode: str = "norm"  # "norm": clip the global gradient norm; "value": clip each gradient entry
    seed: int = 42
    eval_every: int = 5  # epochs between validation accuracy checks (loss and R^2 every epoch)
    eval_images: int = 500  # test images for the per-epoch accuracy check
    final_eval_images: int = 2000  # test images for the final quality figures
    checkpoint_every: int = 1
    map_method: str = "umap"
    storage_dtype: str = "float32"  # of model.safetensors and latents.safetensors; "float16" halves them
    store_projection_head: bool = True  # False: model.safetensors leaves out the NT-Xent head (training only)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        raw = dict(raw)
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        model = ModelConfig.from_dict(raw.pop("model", {}))
        augmentation_raw = raw.pop("augmentation", {})
        bad = set(augmentation_raw) - {f.name for f in fields(Augmentation)}
        if bad:
            raise ValueError(f"unknown augmentation settings {sorted(bad)}")
        config = cls(model=model, augmentation=Augmentation(**augmentation_raw), **raw)
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: Path | str) -> "TrainConfig":
        """Our JSON config, or the paper's config_ae.json (translated by hyperrep.ae.paper_checkpoint)."""
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ArtifactError(f"{path}: a config is a JSON object")
        try:
            if any(key.startswith("model::") for key in raw):
                config = cls(**train_settings_from_paper(raw))
                config.validate()
                return config
            return cls.from_dict(raw)
        except (TypeError, ValueError) as err:
            raise ArtifactError(f"{path}: {err}") from err

    def validate(self) -> None:
        self.model.validate()
        self.augmentation.validate()
        if self.map_method not in METHODS:
            raise ValueError(f"map_method {self.map_method!r} unknown; known: {', '.join(METHODS)}")
        if self.epochs < 1 or self.batch_size < 2 or self.lr <= 0:
            raise ValueError("epochs must be >= 1, batch_size >= 2 and lr > 0")
        if not 0 <= self.gamma <= 1:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.augmentation.permute and self.model.canonical_inputs:
            raise ValueError("augmentation.permute with model.canonical_inputs: canonical sorting undoes every "
                             "permutation, so the permutation augmentation would never act; choose one of the two")
        if self.storage_dtype not in STORAGE_DTYPES:
            raise ValueError(f"storage_dtype {self.storage_dtype!r} unknown; known: {', '.join(STORAGE_DTYPES)}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {self.optimizer!r} unknown; known: {', '.join(OPTIMIZERS)}")
        if self.grad_clip_mode not in ("norm", "value") or (self.grad_clip is not None and self.grad_clip < 0):
            raise ValueError(f"grad_clip must be None (or 0: off) or > 0 and grad_clip_mode 'norm' or 'value', "
                             f"got {self.grad_clip!r}, {self.grad_clip_mode!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def stored_as(tensor: torch.Tensor, dtype: str) -> torch.Tensor:
    """A floating tensor in the storage dtype (loading casts back to float32); other tensors unchanged."""
    return tensor.to(STORAGE_DTYPES[dtype]) if tensor.is_floating_point() else tensor


def stored_state(state: dict[str, torch.Tensor], config: TrainConfig) -> dict[str, torch.Tensor]:
    """What model.safetensors holds: the state in the storage dtype, without the projection head
    when `store_projection_head` is off (decoding, sampling and the map never use it)."""
    return {k: stored_as(v, config.storage_dtype) for k, v in state.items()
            if config.store_projection_head or not k.startswith(PROJECTION_HEAD)}


# -- checks ----------------------------------------------------------------------------------------
def check_fits_zoo(config: TrainConfig, zoo: Zoo) -> list[int]:
    """The zoo epochs to train on; a config for another architecture or epochs is refused."""
    arch = zoo.architecture
    if config.model.architecture != arch.name:
        wanted = get_architecture(config.model.architecture)
        raise ValueError(
            f"the config is for architecture {wanted.name} ({wanted.n_params} parameters), but zoo "
            f"{zoo.name} holds {arch.name} ({arch.n_params} parameters); set model.architecture to {arch.name!r}"
        )
    epochs = zoo.epochs if config.zoo_epochs is None else list(config.zoo_epochs)
    missing = [e for e in epochs if e not in zoo.epochs]
    if missing or not epochs:
        raise ValueError(f"zoo_epochs {config.zoo_epochs} not all saved in zoo {zoo.name} (saved: {zoo.epochs})")
    n_train = len(zoo.splits["train"]) * len(epochs)
    if n_train < config.batch_size:
        raise ValueError(f"the train split has {n_train} samples, fewer than batch_size {config.batch_size}")
    return epochs
