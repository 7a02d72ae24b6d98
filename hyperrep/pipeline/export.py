"""The population format: what the app's Export page and `hyperrep sample` write, and the one loader.

A population is a folder (the app offers the same folder as a .zip) of two files:

- `weights.safetensors`: tensor `weights` [M, P] float32, each row a flat CNN in the public Model
  Zoo order (per layer its weight, then its bias), and `latents` [M, L] for decoded samples; the
  header's metadata holds `format` = "hyperrep-population", `version` and every entry of the
  population's metadata (architecture, activation, dataset, sampler, parameters, seed, anchors,
  source zoo and hyper-representation), each value JSON-encoded.
- `samples.csv`: one row per model (member, method, seed; test accuracy and loss, first-estimate
  accuracy, map position and novelty when they were computed).

`read_population` reads a folder or a .zip back. `write_population_zoo` writes a population as a
zoo directory instead (one saved epoch), which `Zoo.load` reads.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save as safetensors_bytes

from hyperrep.io.files import ArtifactError, atomic_write, read_tensor_metadata, read_tensors
from hyperrep.nets.cnn import get_architecture
from hyperrep.sampling.population import Population
from hyperrep.zoo.format import Zoo, make_manifest, split_model_ids

FORMAT = "hyperrep-population"
VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
TABLE_FILE = "samples.csv"


@dataclass
class SavedPopulation:
    """A population read back: weights [M, P], latents [M, L] or None, the per-model table, the metadata."""

    weights: torch.Tensor
    latents: torch.Tensor | None
    table: pd.DataFrame
    metadata: dict


def population_safetensors(weights: torch.Tensor, latents: torch.Tensor | None, metadata: dict) -> bytes:
    """The weights file of a population as bytes (see the module docstring)."""
    tensors = {"weights": weights.detach().float().contiguous().cpu()}
    if latents is not None:
        tensors["latents"] = latents.detach().float().contiguous().cpu()
    header = {key: json.dumps(value) for key, value in metadata.items()}
    header.update(format=json.dumps(FORMAT), version=json.dumps(VERSION))
    return safetensors_bytes(tensors, metadata=header)


def population_csv(table: pd.DataFrame) -> bytes:
    """The per-model table of a population as CSV bytes."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def population_zip(weights: torch.Tensor, latents: torch.Tensor | None, table: pd.DataFrame, metadata: dict) -> bytes:
    """The population folder as .zip bytes (what the app's Export page offers)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(WEIGHTS_FILE, population_safetensors(weights, latents, metadata))
        archive.writestr(TABLE_FILE, population_csv(table))
    return buffer.getvalue()


def write_population(out: Path | str, weights: torch.Tensor, latents: torch.Tensor | None, table: pd.DataFrame,
                     metadata: dict) -> Path:
    """Write the population folder `out` (each file atomically); returns `out`."""
    out = Path(out)
    if len(table) != len(weights):
        raise ValueError(f"{len(weights)} models but {len(table)} table rows")
    data = population_safetensors(weights, latents, metadata)
    atomic_write(out / WEIGHTS_FILE, lambda tmp: tmp.write_bytes(data))
    atomic_write(out / TABLE_FILE, lambda tmp: tmp.write_bytes(population_csv(table)))
    return out


def read_population(path: Path | str) -> SavedPopulation:
    """A population folder or its .zip; ArtifactError naming the file for anything else."""
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive, tempfile.TemporaryDirectory() as folder:
            names = set(archive.namelist())
            for name in (WEIGHTS_FILE, TABLE_FILE):
                if name not in names:
                    raise ArtifactError(f"{path}: no {name} in the archive; not a hyperrep population")
                (Path(folder) / name).write_bytes(archive.read(name))
            return _read_folder(Path(folder), shown=path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a population folder or .zip")
    return _read_folder(path, shown=path)


def _read_folder(folder: Path, shown: Path) -> SavedPopulation:
    weights_path, table_path = folder / WEIGHTS_FILE, folder / TABLE_FILE
    if not weights_path.is_file():
        raise ArtifactError(f"{shown}: no {WEIGHTS_FILE}; not a hyperrep population")
    header = read_tensor_metadata(weights_path)
    if header.get("format") != json.dumps(FORMAT):
        raise ArtifactError(f"{shown / WEIGHTS_FILE}: not a hyperrep population (no format '{FORMAT}' in its header)")
    try:
        metadata = {key: json.loads(value) for key, value in header.items()}
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{shown / WEIGHTS_FILE}: metadata is not JSON ({err})") from err
    metadata.pop("format")
    if int(metadata.pop("version", 0)) > VERSION:
        raise ArtifactError(f"{shown / WEIGHTS_FILE}: written by a newer hyperrep (format version {header['version']})")
    tensors = read_tensors(weights_path)
    weights, latents = tensors.get("weights"), tensors.get("latents")
    if weights is None or weights.dim() != 2:
        raise ArtifactError(f"{shown / WEIGHTS_FILE}: no 2-D tensor 'weights'")
    if metadata.get("architecture"):
        expected = get_architecture(metadata["architecture"]).n_params
        if weights.shape[1] != expected:
            raise ArtifactError(f"{shown / WEIGHTS_FILE}: {weights.shape[1]} parameters per model, "
                                f"{metadata['architecture']} has {expected}")
    try:
        table = pd.read_csv(table_path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ArtifactError(f"{shown / TABLE_FILE}: not a readable CSV table ({err})") from err
    if len(table) != len(weights):
        raise ArtifactError(f"{shown / TABLE_FILE}: {len(table)} rows for {len(weights)} models")
    return SavedPopulation(weights, latents, table, metadata)


def write_population_zoo(population: Population, table: pd.DataFrame, out: Path | str, zoo: Zoo) -> Path:
    """A population as a zoo directory (one saved epoch 0; its properties need test_acc and test_loss)."""
    if "test_acc" not in table or "test_loss" not in table:
        raise ValueError("a zoo export needs the test accuracy and loss of every model (evaluate the samples)")
    ids = list(range(len(population)))
    properties = table.reset_index(drop=True).assign(model_id=ids, epoch=0, train_loss=np.nan, train_acc=np.nan)
    manifest = make_manifest(
        name=f"{zoo.name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', population.label)}", architecture=zoo.architecture.name,
        activation=zoo.activation, dataset=zoo.manifest.get("dataset", {}), epochs=[0],
        splits=split_model_ids(ids), build={"generated_from": zoo.name, "label": population.label},
    )
    Zoo(manifest, population.weights.unsqueeze(1).float(), torch.tensor(ids), properties).save(out)
    return Path(out)
