"""Train a hyper-representation on a zoo and write the artifact directory.

    config = TrainConfig.from_file("configs/default_hyperrep.json")
    train_hyperrep("data/zoo", "data/hyperrep", config, progress=..., log=print)

Only the zoo's TRAIN split is used for training, for the LWLN sigmas and for the R^2 baseline
mean; the validation split is monitored every epoch (loss, R^2 per layer, test accuracy of
reconstructed models on a subset of test images); the test split is scored once at the end.

Runs are deterministic for a seed: every epoch draws its batch order, views and dropout from
generators seeded by (seed, epoch), and the learning rate is a function of the step, so a run
resumed from a checkpoint (written atomically after every `checkpoint_every` epochs, optimizer
state included) ends with the same weights as one that never stopped.

Output directory (docs/formats.md): config.json, model.safetensors (incl. the LWLN sigmas),
latents.safetensors (latents, model_id, epoch of every zoo model at every saved epoch),
projection.safetensors (2-D coords; method in its metadata), metrics.json (history and quality).
While training, checkpoint/ holds the resumable state; it is removed when the run finishes.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from hyperrep.ae.artifact import ARTIFACT_FORMAT, encode_weights
from hyperrep.ae.config import VERSION, TrainConfig, check_fits_zoo, stored_as, stored_state
from hyperrep.ae.map import fit_map
from hyperrep.ae.model import HyperRepresentation
from hyperrep.ae.quality import load_eval_images, reconstruction_quality
from hyperrep.ae.views import make_views
from hyperrep.io.files import ArtifactError, read_json, read_tensor_metadata, read_tensors, write_json, write_tensors
from hyperrep.runtime.device import pick_device
from hyperrep.zoo.format import Zoo
from hyperrep.zoo.references import QUALITY_THRESHOLD


# -- schedule and seeds ------------------------------------------------------------------------------
def learning_rate(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to lr * min_lr_fraction (a pure function of the step)."""
    warmup = config.warmup_epochs * steps_per_epoch
    total = config.epochs * steps_per_epoch
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1.0, total - warmup)
    floor = config.lr * config.min_lr_fraction
    return floor + (config.lr - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


# -- checkpoints -------------------------------------------------------------------------------------
def save_checkpoint(folder: Path, epoch: int, model: HyperRepresentation, optimizer: torch.optim.Optimizer,
                    history: list[dict], config: dict) -> None:
    """Epoch-tagged tensor files first, then state.json naming them, then old files go."""
    tag = {"epoch": str(epoch)}
    write_tensors(folder / f"model-{epoch}.safetensors", model.state_dict(), tag)
    state = optimizer.state_dict()
    tensors = {f"{i}.{name}": value for i, slots in state["state"].items() for name, value in slots.items()}
    write_tensors(folder / f"optimizer-{epoch}.safetensors", tensors,
                  {**tag, "param_groups": json.dumps(state["param_groups"])})
    write_json(folder / "state.json", {"epoch": epoch, "history": history, "config": config})
    for old in folder.glob("*.safetensors"):
        if old.name not in (f"model-{epoch}.safetensors", f"optimizer-{epoch}.safetensors"):
            old.unlink()


def _with_defaults(stored: object) -> object:
    """A stored training config with the settings added since it was written at their defaults
    (so a run checkpointed before a new setting existed still resumes)."""
    if not isinstance(stored, dict):
        return stored
    try:
        return TrainConfig.from_dict(stored).to_dict()
    except (TypeError, ValueError):
        return stored


def load_checkpoint(folder: Path, model: HyperRepresentation, optimizer: torch.optim.Optimizer,
                    config: dict) -> tuple[int, list[dict]]:
    """Restore model and optimizer; returns (epochs done, history). A changed config is refused."""
    state = read_json(folder / "state.json")
    if _with_defaults(state.get("config")) != config:
        raise ValueError(f"{folder / 'state.json'}: the checkpoint was made with another config; "
                         "resume with the same config or train into a new folder")
    epoch = int(state["epoch"])
    model_path, optimizer_path = folder / f"model-{epoch}.safetensors", folder / f"optimizer-{epoch}.safetensors"
    try:
        model.load_state_dict(read_tensors(model_path))
    except RuntimeError as err:
        raise ArtifactError(f"{model_path}: does not fit the model ({str(err).splitlines()[-1]})") from err
    tensors = read_tensors(optimizer_path)
    slots: dict[int, dict] = {}
    for key, value in tensors.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value
    groups = json.loads(read_tensor_metadata(optimizer_path)["param_groups"])
    optimizer.load_state_dict({"state": slots, "param_groups": groups})
    return epoch, list(state["history"])


# -- training -------------------------------------------------------------------------------------------
def train_hyperrep(
    zoo_path: Path | str,
    out: Path | str,
    config: TrainConfig,
    *,
    resume: bool = False,
    data_dir: Path | str | None = None,
    device: torch.device | str | None = None,
    progress: Callable[[int, int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train on the zoo at `zoo_path` and write the hyper-representation to `out`; returns `out`."""
    config.validate()
    zoo_path, out = Path(zoo_path), Path(out)
    zoo = Zoo.load(zoo_path)
    epochs_used = check_fits_zoo(config, zoo)
    device = torch.device(device) if device is not None else pick_device()
    log = log or (lambda message: None)
    checkpoint = out / "checkpoint"
    _check_output_folder(out, checkpoint, resume)

    train_weights, _ = zoo.samples("train", epochs_used)
    val_weights, _ = zoo.samples("val", epochs_used)
    for split, weights in (("train", train_weights), ("val", val_weights)):
        if len(weights) == 0:
            counts = zoo.properties.drop_duplicates("model_id")["split"].value_counts().to_dict()
            raise ValueError(f"{zoo_path}: the zoo has no {split} models at epochs {epochs_used} (models per split: "
                             f"{counts}); training needs both splits: build more models or change the zoo's model_split")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = HyperRepresentation(config.model)
    train_mean = model.comparable(train_weights).mean(dim=0)  # the R^2 baseline
    model.set_train_statistics(train_weights)  # sigma (and mean) from the train split only
    model.to(device)
    optimizer = make_optimizer(model, config)
    stored_config = _artifact_config(config, zoo, zoo_path, out, epochs_used, device)

    start, history = 0, []
    if resume and (checkpoint / "state.json").is_file():
        start, history = load_checkpoint(checkpoint, model, optimizer, stored_config["training"])
        log(f"resuming after epoch {start} of {config.epochs}")
    write_json(out / "config.json", stored_config)

    images = load_eval_images(zoo, config.eval_images, data_dir, device)
    steps_per_epoch = len(train_weights) // config.batch_size
    train_on_device = train_weights.to(device)
    if progress:
        progress(start * steps_per_epoch, config.epochs * steps_per_epoch)
    for epoch in range(start, config.epochs):
        began = time.time()
        sums = _train_one_epoch(model, optimizer, config, train_on_device, epoch, steps_per_epoch, progress)
        model.eval()
        row = {"epoch": epoch + 1, "lr": learning_rate(config, (epoch + 1) * steps_per_epoch - 1, steps_per_epoch)}
        row.update({key: value / steps_per_epoch for key, value in sums.items()})
        check_accuracy = (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        val = reconstruction_quality(model, val_weights, train_mean, zoo.activation,
                                     images if check_accuracy else None, config.lwln)
        row.update({f"val_{key}": value for key, value in val.items() if not isinstance(value, dict)})
        row["seconds"] = time.time() - began
        history.append(row)
        log(_epoch_line(row, history[start:], config.epochs))
        if (epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.epochs:
            save_checkpoint(checkpoint, epoch + 1, model, optimizer, history, stored_config["training"])

    finish_artifact(model, zoo, out, config, history, epochs_used, train_mean, data_dir, log)
    shutil.rmtree(checkpoint, ignore_errors=True)
    return out


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser the config names, with its lr (later set per step) and weight decay. Adam(W)
    runs fused (one kernel over all parameters; 6x the per-tensor loop on 71 M CPU parameters,
    `bench/ae_train.py --parts`) on CPU and CUDA, SGD as a foreach loop."""
    params = list(model.parameters())
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               foreach=True)
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    fused = params[0].device.type in ("cpu", "cuda")
    return kind(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def clip_gradients(model: torch.nn.Module, config: TrainConfig) -> None:
    """Clip the gradients as the config says (global norm or per entry), or leave them."""
    if not config.grad_clip:
        return
    if config.grad_clip_mode == "value":
        torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip, foreach=True)
    else:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip, foreach=True)


def _check_output_folder(out: Path, checkpoint: Path, resume: bool) -> None:
    if (out / "model.safetensors").is_file() and not checkpoint.exists():
        raise ValueError(f"{out}: already holds a finished hyper-representation; train into another folder")
    if checkpoint.exists() and not resume:
        raise ValueError(f"{out}: holds an unfinished run (checkpoint/); pass --resume to continue it")


def _train_one_epoch(model, optimizer, config, train_weights, epoch, steps_per_epoch, progress) -> dict:
    """One pass over the train split; the loss sums stay on the device until the epoch ends."""
    generator = epoch_generator(config.seed, epoch)
    order = torch.randperm(len(train_weights), generator=generator).to(train_weights.device)
    sums = None
    model.train()
    with torch.random.fork_rng(devices=[train_weights.device] if train_weights.device.type == "cuda" else []):
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout, reproducible per epoch
        for step in range(steps_per_epoch):  # drop_last, as the paper's loaders
            batch = train_weights[order[step * config.batch_size: (step + 1) * config.batch_size]]
            set_learning_rate(optimizer, learning_rate(config, epoch * steps_per_epoch + step, steps_per_epoch))
            parts = train_step(model, optimizer, config, batch, generator)
            sums = parts if sums is None else sums + parts
            if progress:
                progress(epoch * steps_per_epoch + step + 1, config.epochs * steps_per_epoch)
    values = sums.tolist()  # the one host sync of the epoch
    named = dict(zip(("loss", "loss_recon", "loss_contrast"), values))
    named.update({f"loss_recon_l{i}": value for i, value in enumerate(values[3:])})
    return named


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def train_step(model: HyperRepresentation, optimizer: torch.optim.Optimizer, config: TrainConfig,
               batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One optimiser step on `batch` [B, P] (two augmented views of each model). Returns the detached
    loss parts [loss, loss_recon, loss_contrast, loss_recon_l0, ...] without reading them to the host."""
    inputs, targets = make_views(model.arch, batch, config.augmentation, generator)
    parts = model.losses(inputs, targets, gamma=config.gamma, temperature=config.temperature, lwln=config.lwln,
                         identical_views=config.augmentation.is_identity())
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    clip_gradients(model, config)
    optimizer.step()
    return torch.cat([torch.stack([parts["loss"], parts["loss_recon"], parts["loss_contrast"]]),
                      parts["loss_recon_layers"]]).detach()


def _epoch_line(row: dict, this_session: list[dict], epochs: int) -> str:
    """One log line per epoch: losses, validation figures, seconds per epoch and the ETA."""
    text = f"epoch {row['epoch']}/{epochs}: loss {row['loss']:.4f} recon {row['loss_recon']:.4f} " \
           f"contrast {row['loss_contrast']:.3f} | val recon {row['val_loss_recon']:.4f} R2 {row['val_rsq']:.3f}"
    if "val_acc_ratio_above_threshold" in row:
        text += f" acc {row['val_acc_original']:.3f}->{row['val_acc_reconstructed']:.3f}" \
                f" ratio(>50%) {row['val_acc_ratio_above_threshold']:.3f}"
    per_epoch = sum(r["seconds"] for r in this_session) / len(this_session)
    remaining = round(per_epoch * (epochs - row["epoch"]))
    return text + f" ({row['seconds']:.1f} s; ETA {remaining // 3600}:{remaining // 60 % 60:02d}:{remaining % 60:02d})"


def _artifact_config(config: TrainConfig, zoo: Zoo, zoo_path: Path, out: Path, epochs_used: list[int], device) -> dict:
    return {
        "format": ARTIFACT_FORMAT,
        "version": VERSION,
        "zoo": os.path.relpath(zoo_path.resolve(), out.resolve()),
        "zoo_name": zoo.name,
        "architecture": zoo.architecture.name,
        "activation": zoo.activation,
        "zoo_epochs": epochs_used,
        "model": asdict(config.model),
        "training": config.to_dict(),
        "device": str(device),
    }


def finish_artifact(model, zoo, out, config, history, epochs_used, train_mean, data_dir, log) -> None:
    """Quality figures, latents of every zoo model and epoch, the 2-D map, and the model file."""
    model.eval().cpu()
    log("scoring reconstructions of the train, val and test splits")
    images = load_eval_images(zoo, config.final_eval_images, data_dir, torch.device("cpu"))
    quality = {}
    train_states = model.comparable(zoo.samples("train", epochs_used)[0])
    for split in ("train", "val", "test"):
        weights, _ = zoo.samples(split, epochs_used)
        if len(weights):  # held-out splits also get the nearest-train and PCA references
            quality[split] = reconstruction_quality(model, weights, train_mean, zoo.activation, images, config.lwln,
                                                    None if split == "train" else train_states)
    n_models, n_epochs, n_params = zoo.weights.shape
    latents = encode_weights(model, zoo.weights.reshape(-1, n_params))
    model_ids = zoo.model_ids.repeat_interleave(n_epochs)
    epochs = torch.tensor(zoo.epochs).repeat(n_models)
    log(f"fitting the 2-D {config.map_method} map of {len(latents)} latents")
    coords = fit_map(latents, method=config.map_method, seed=config.seed)
    metrics = {
        "history": history,
        "quality": quality,
        "quality_threshold": QUALITY_THRESHOLD,
        "final_eval_images": config.final_eval_images,
        "train_seconds": sum(row["seconds"] for row in history),
        "model_parameters": sum(p.numel() for p in model.parameters()),
    }
    write_tensors(out / "latents.safetensors",
                  {"latents": stored_as(latents, config.storage_dtype), "model_id": model_ids, "epoch": epochs})
    write_tensors(out / "projection.safetensors", {"coords": coords},
                  {"method": config.map_method, "seed": str(config.seed), "n_neighbors": "15", "min_dist": "0.1"})
    write_json(out / "metrics.json", metrics)
    # last: its presence marks a finished run
    write_tensors(out / "model.safetensors", stored_state(model.state_dict(), config))
