"""A trained hyper-representation as a folder: loading it (config.json, model.safetensors, latents
and the map) into a `HyperRep`, its latent table, and encoding, decoding and rebuilding many models
in batches."""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

from hyperrep.ae.model import HyperRepresentation, ModelConfig
from hyperrep.io.files import ArtifactError, read_json, read_table, read_tensor_metadata, read_tensors
from hyperrep.nets.cnn import Architecture


# -- the trained artifact ----------------------------------------------------------------------
@dataclass
class HyperRep:
    """A trained hyper-representation directory, loaded (see the module docstring)."""

    model: HyperRepresentation
    config: dict
    path: Path
    zoo_path: Path
    latents: torch.Tensor
    latent_table: pd.DataFrame
    map_coords: torch.Tensor
    projection: dict
    metrics: dict

    @property
    def arch(self) -> Architecture:
        return self.model.arch

    def to(self, device: torch.device | str) -> "HyperRep":
        """A copy whose model and tensors live on `device` (the loaded object stays unchanged)."""
        return replace(self, model=copy.deepcopy(self.model).to(device), latents=self.latents.to(device),
                       map_coords=self.map_coords.to(device))


@dataclass(frozen=True)
class Fingerprint:
    """Which hyper-representation latents belong to: a digest of its content and a name for people."""

    digest: str
    name: str


def hyperrep_fingerprint(hyperrep: HyperRep) -> Fingerprint:
    """sha256 over the latent size, the network's state_dict and the embedded (model_id, epoch) rows,
    so a copied folder keeps its fingerprint and another zoo's (or retrained) one does not match."""
    digest = hashlib.sha256(f"latent_dim={hyperrep.model.latent_dim}".encode())
    for key, tensor in sorted(hyperrep.model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().float().contiguous().numpy().tobytes())
    rows = hyperrep.latent_table[["model_id", "epoch"]].to_numpy(dtype="int64")
    digest.update(rows.tobytes())
    return Fingerprint(digest.hexdigest(), f"hyper-representation {hyperrep.path} (zoo {hyperrep.zoo_path})")


def build_model(model_config: dict, state: dict[str, torch.Tensor], source: Path | str) -> HyperRepresentation:
    """A HyperRepresentation from its config and a state dict; a mismatch names `source`."""
    try:
        model = HyperRepresentation(ModelConfig.from_dict(model_config))
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"{source}: bad model config ({err})") from err
    missing, unexpected = set(model.state_dict()) - set(state), set(state) - set(model.state_dict())
    if missing or unexpected:
        raise ArtifactError(f"{source}: weights do not fit the config (missing {sorted(missing)[:5]}, "
                            f"unexpected {sorted(unexpected)[:5]})")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ArtifactError(f"{source}: weights do not fit the config ({str(err).splitlines()[-1]})") from err
    return model.eval()


def load_hyperrep(path: Path | str) -> HyperRep:
    """Load a hyper-representation directory written by `hyperrep train` (nothing is unpickled)."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a directory (a hyper-representation is a folder with config.json)")
    config = read_json(path / "config.json")
    if not isinstance(config, dict) or config.get("format") != ARTIFACT_FORMAT or not {"model", "zoo"} <= set(config):
        raise ArtifactError(f"{path / 'config.json'}: not a hyper-representation config "
                            f"(needs format {ARTIFACT_FORMAT!r}, 'model' and 'zoo')")
    model_config = config["model"]
    if not config.get("training", {}).get("store_projection_head", True):  # trained with a head, stored without
        model_config = {**model_config, "projection_layers": 0}
    model = build_model(model_config, read_tensors(path / "model.safetensors"), path / "model.safetensors")
    stored = read_tensors(path / "latents.safetensors")
    if not {"latents", "model_id", "epoch"} <= set(stored):
        raise ArtifactError(f"{path / 'latents.safetensors'}: needs tensors latents, model_id, epoch; has {sorted(stored)}")
    latents = stored["latents"].float()
    if latents.dim() != 2 or latents.shape[1] != model.latent_dim:
        raise ArtifactError(f"{path / 'latents.safetensors'}: latents {tuple(latents.shape)} do not match latent_dim {model.latent_dim}")
    coords = read_tensors(path / "projection.safetensors").get("coords")
    if coords is None or tuple(coords.shape) != (len(latents), 2):
        raise ArtifactError(f"{path / 'projection.safetensors'}: needs 'coords' of shape ({len(latents)}, 2)")
    projection = {k: _maybe_number(v) for k, v in read_tensor_metadata(path / "projection.safetensors").items()}
    zoo_path = (path / config["zoo"]).resolve()
    table = latent_table(zoo_path, stored["model_id"], stored["epoch"])
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").is_file() else {}
    return HyperRep(model, config, path, zoo_path, latents, table, coords.float(), projection, metrics)


def latent_table(zoo_path: Path, model_ids: torch.Tensor, epochs: torch.Tensor) -> pd.DataFrame:
    """The zoo's property rows for (model_id, epoch) pairs, in that order."""
    properties = read_table(zoo_path / "models.parquet")
    keys = pd.DataFrame({"model_id": model_ids.long().tolist(), "epoch": epochs.long().tolist()})
    if "split" not in properties.columns:
        splits = read_json(zoo_path / "zoo.json").get("splits", {})
        split_of = {int(m): name for name, ids in splits.items() for m in ids}
        properties = properties.assign(split=properties["model_id"].map(split_of).fillna("none"))
    table = keys.merge(properties, on=["model_id", "epoch"], how="left", validate="one_to_one", indicator=True)
    absent = table.loc[table["_merge"] == "left_only", ["model_id", "epoch"]]
    if len(absent):
        pairs = [(int(m), int(e)) for m, e in absent.itertuples(index=False)]
        raise ArtifactError(f"{zoo_path / 'models.parquet'}: has no row for {len(pairs)} embedded (model_id, epoch) "
                            f"pairs, e.g. {pairs[:5]}; the hyper-representation was made from another zoo")
    # rows whose metrics are NaN (an imported epoch without a result line) stay: they are never anchors
    return table.drop(columns="_merge")


def _maybe_number(text: str) -> int | float | str:
    """Safetensors metadata is text; numbers come back as numbers."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _in_batches(step, model, rows: torch.Tensor, batch_size: int) -> torch.Tensor:
    """step(rows of a batch on the model's device) for every batch, without gradients, as float32 on the CPU."""
    device, out = _model_device(model), []
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            out.append(step(rows[start: start + batch_size].to(device).float()).float().cpu())
    return torch.cat(out) if out else torch.empty(0, 0)


def decode_latents(model, latents: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Weights [n, P] (float32, CPU) decoded from latents [n, L] in batches, without gradients."""
    return _in_batches(model.decode, model, latents, batch_size)


def encode_weights(model, weights: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Latents [n, L] (float32, CPU) of weights [n, P] in batches, without gradients."""
    return _in_batches(model.encode, model, weights, batch_size)


def reconstruct_weights(model, weights: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """decode(encode(weights)) [n, P] (float32, CPU) in batches, without gradients."""
    return _in_batches(lambda rows: model.decode(model.encode(rows)), model, weights, batch_size)


ARTIFACT_FORMAT = "hyperrep-hyper-representation"  # config.json "format" of a trained directory
