"""A model zoo: weights [models, epochs, params] of one architecture plus a properties table.

On disk (docs/formats.md): `zoo.json` (manifest), `weights.safetensors` (`weights`, `model_ids`),
`models.parquet` (one row per model and saved epoch). `Zoo.load` checks every part and names
the file at fault; nothing is unpickled. `zoo_dataset_rule` reads from a manifest which images,
normalised how and at which input shape, the zoo's models were trained on.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hyperrep.images.datasets import DATA_SEED, DEFAULT_DATASET, VAL_FRACTION, DatasetRule, build_dataset_rule
from hyperrep.io.files import ArtifactError, read_json, read_table, read_tensors, write_json, write_table, write_tensors
from hyperrep.nets.cnn import Architecture, get_architecture

FORMAT = "hyperrep-zoo"
VERSION = 1
SPLITS = ("train", "val", "test")
PROPERTY_COLUMNS = ("model_id", "epoch", "train_loss", "train_acc", "test_loss", "test_acc")


def split_model_ids(model_ids, fractions=(0.7, 0.15, 0.15), seed: int = 42) -> dict[str, list[int]]:
    """Seeded train/val/test split over the sorted ids, so every epoch of a model is in one split."""
    ids = np.sort(np.asarray(list(model_ids), dtype=np.int64))
    order = ids[np.random.default_rng(seed).permutation(len(ids))]
    n_train = int(round(fractions[0] * len(ids)))
    n_val = int(round(fractions[1] * len(ids)))
    parts = (order[:n_train], order[n_train: n_train + n_val], order[n_train + n_val:])
    return {name: sorted(int(i) for i in part) for name, part in zip(SPLITS, parts)}


@dataclass
class Zoo:
    """Weights, properties and layout of a zoo; immutable by convention (the app shares it)."""

    manifest: dict
    weights: torch.Tensor  # [models, epochs, params] float32
    model_ids: torch.Tensor  # [models] int64
    properties: pd.DataFrame  # one row per (model_id, epoch); has a "split" column
    path: Path | None = None
    _row_of_id: dict[int, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._row_of_id = {int(m): i for i, m in enumerate(self.model_ids.tolist())}
        if "split" not in self.properties.columns:
            split_of = {m: name for name, ids in self.splits.items() for m in ids}
            self.properties["split"] = self.properties["model_id"].map(split_of).fillna("none")

    # -- description ---------------------------------------------------------------------------
    @property
    def architecture(self) -> Architecture:
        return get_architecture(self.manifest["architecture"])

    @property
    def activation(self) -> str:
        return self.manifest["activation"]

    @property
    def epochs(self) -> list[int]:
        return list(self.manifest["epochs"])

    @property
    def splits(self) -> dict[str, list[int]]:
        return {name: list(self.manifest["splits"].get(name, [])) for name in SPLITS}

    @property
    def n_models(self) -> int:
        return int(self.weights.shape[0])

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.path.name if self.path else "zoo"))

    # -- selection -----------------------------------------------------------------------------
    def rows_of(self, model_ids) -> list[int]:
        """Positions in `weights` of the given model ids; unknown ids are an error."""
        missing = [int(m) for m in model_ids if int(m) not in self._row_of_id]
        if missing:
            raise KeyError(f"model ids not in zoo {self.name}: {missing[:10]}")
        return [self._row_of_id[int(m)] for m in model_ids]

    def epoch_position(self, epoch: int) -> int:
        if epoch not in self.epochs:
            raise KeyError(f"epoch {epoch} not saved in zoo {self.name}; saved: {self.epochs}")
        return self.epochs.index(epoch)

    def samples(self, split: str | None = None, epochs: list[int] | None = None) -> tuple[torch.Tensor, pd.DataFrame]:
        """Flat weights [n, P] and their property rows for a split and a set of epochs."""
        table = self.properties
        if split is not None:
            if split not in SPLITS:
                raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
            table = table[table["split"] == split]
        if epochs is not None:
            table = table[table["epoch"].isin(epochs)]
        table = table.sort_values(["model_id", "epoch"]).reset_index(drop=True)
        rows = torch.tensor(self.rows_of(table["model_id"].tolist()), dtype=torch.long)
        cols = torch.tensor([self.epoch_position(int(e)) for e in table["epoch"]], dtype=torch.long)
        return self.weights[rows, cols], table

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: Path | str) -> None:
        """Write the three files atomically, the manifest last (its presence marks a whole zoo)."""
        path = Path(path)
        write_tensors(path / "weights.safetensors", {"weights": self.weights.float(), "model_ids": self.model_ids.long()})
        write_table(path / "models.parquet", self.properties)
        write_json(path / "zoo.json", self.manifest)
        self.path = path

    @classmethod
    def load(cls, path: Path | str) -> "Zoo":
        path = Path(path)
        if not path.is_dir():
            raise ArtifactError(f"{path}: not a directory (a zoo is a folder with zoo.json)")
        manifest = read_json(path / "zoo.json")
        _check_manifest(manifest, path / "zoo.json")
        tensors = read_tensors(path / "weights.safetensors")
        weights, model_ids = tensors.get("weights"), tensors.get("model_ids")
        where = path / "weights.safetensors"
        if weights is None or model_ids is None:
            raise ArtifactError(f"{where}: needs tensors 'weights' and 'model_ids', has {sorted(tensors)}")
        arch = get_architecture(manifest["architecture"])
        expected = (len(model_ids), len(manifest["epochs"]), arch.n_params)
        if weights.dim() != 3 or tuple(weights.shape) != expected:
            raise ArtifactError(
                f"{where}: weights have shape {tuple(weights.shape)}, the manifest needs {expected} "
                f"(models, epochs {manifest['epochs']}, {arch.name} parameters)"
            )
        properties = read_table(path / "models.parquet")
        missing = [c for c in PROPERTY_COLUMNS if c not in properties.columns]
        if missing:
            raise ArtifactError(f"{path / 'models.parquet'}: missing columns {missing}")
        if len(properties) != expected[0] * expected[1]:
            raise ArtifactError(
                f"{path / 'models.parquet'}: {len(properties)} rows, expected one per model and epoch "
                f"({expected[0]} x {expected[1]})"
            )
        if not set(properties["model_id"].astype(int)) == set(model_ids.tolist()):
            raise ArtifactError(f"{path / 'models.parquet'}: model ids differ from {where}")
        pairs = set(zip(properties["model_id"].astype(int), properties["epoch"].astype(int)))
        if pairs != {(int(m), int(e)) for m in model_ids.tolist() for e in manifest["epochs"]}:
            raise ArtifactError(f"{path / 'models.parquet'}: rows do not cover each model at each saved epoch once")
        return cls(manifest, weights, model_ids.long(), properties, path)

    # -- summary -------------------------------------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """Test-accuracy quantiles per saved epoch (what `hyperrep zoo info` prints)."""
        grouped = self.properties.groupby("epoch")["test_acc"]
        table = grouped.quantile([0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0]).unstack()
        table.columns = ["min", "q05", "q25", "median", "q75", "q95", "max"]
        table.insert(0, "mean", grouped.mean())
        table.insert(0, "models", grouped.count())
        return table


def _check_manifest(manifest, where: Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{where}: not a hyperrep zoo manifest (format must be {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise ArtifactError(f"{where}: zoo format version {manifest.get('version')!r}; this hyperrep reads {VERSION}")
    for key in ("architecture", "activation", "epochs", "splits"):
        if key not in manifest:
            raise ArtifactError(f"{where}: missing key {key!r}")
    try:
        get_architecture(manifest["architecture"])
    except ValueError as err:
        raise ArtifactError(f"{where}: {err}") from err


def make_manifest(
    *, name: str, architecture: str, activation: str, dataset: dict, epochs: list[int],
    splits: dict[str, list[int]], build: dict, dropped: dict | None = None,
) -> dict:
    arch = get_architecture(architecture)
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "architecture": architecture,
        "layers": [
            {"index": l.index, "kind": l.kind, "in": l.in_features, "out": l.out_features, "kernel": l.kernel,
             "params": l.n_params}
            for l in arch.layers
        ],
        "n_params": arch.n_params,
        "activation": activation,
        "dataset": dataset,
        "epochs": epochs,
        "splits": splits,
        "dropped": dropped or {},
        "build": build,
    }


def input_shape(architecture: str | None) -> tuple[int, int] | None:
    """(channels, side) of a named architecture's input; None when the name is unknown."""
    try:
        arch = get_architecture(str(architecture))
    except ValueError:
        return None
    return arch.in_channels, arch.image_size


def zoo_dataset_rule(manifest: dict, data_dir: Path | str | None = None) -> DatasetRule:
    """The rule of a saved zoo: the normalisation its manifest records, else the known statistics
    of its dataset, else statistics computed from `data_dir`; the split settings of its build."""
    dataset = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    name = str(dataset.get("name") or manifest.get("dataset") or DEFAULT_DATASET)
    build = manifest.get("build") if isinstance(manifest.get("build"), dict) else {}
    recorded = dataset.get("normalisation")
    if recorded is not None and len(recorded) == 2:
        rule = DatasetRule(name, (float(recorded[0]), float(recorded[1])))
    else:
        rule = build_dataset_rule(name, data_dir)
    return replace(rule, val_fraction=float(build.get("val_fraction", VAL_FRACTION)),
                   data_seed=int(build.get("data_seed", DATA_SEED)), shape=input_shape(manifest.get("architecture")))
