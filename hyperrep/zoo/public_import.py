"""Import a public Model Zoo (modelzoos.cc, ray-tune layout) into our zoo format.

A Model Zoo directory holds one folder per trained model (docs/formats.md):
`params.json` (the trial config), `result.json` (one JSON object per line and epoch, matched by
`training_iteration`: line 0 may or may not be the untrained state) and `checkpoint_<N>/checkpoints`
or `checkpoint_<NNNNNN>/checkpoints` (a torch state_dict `module_list.<i>.weight|bias`). Folders are
read in sorted name order, checkpoints with `torch.load(weights_only=True)` only, and every model
that cannot be used is dropped, counted and named in the ImportReport instead of failing the import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from hyperrep.io.files import ArtifactError
from hyperrep.nets.cnn import get_activation, get_architecture
from hyperrep.zoo.format import Zoo, make_manifest, split_model_ids
from hyperrep.zoo.public_folders import (
    MISSING_EPOCHS,
    OTHER_ACTIVATION,
    DroppedFolder,
    ModelFolder,
    _detect_or_drop,
    find_model_folders,
    read_weights,
    scan_or_drop,
)

DEFAULT_WEIGHT_THRESHOLD = 100.0  # |w| above this counts as exploded (SANE's filter)
RESULT_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc")
OPTIONAL_RESULT_KEYS = ("val_loss", "val_acc")
MISSING_METRIC = -999  # the public zoos log train_loss/train_acc = -999 for the untrained state

# Image normalisation the public zoos trained with (their generators' Normalize transforms).
MODELZOO_NORMALISATION = {
    "mnist": (0.1307, 0.3081),
    "fashion-mnist": (0.5, 0.5),
    "svhn": (0.5, 0.5),
    "cifar10": (0.5, 0.5),
}
# Substrings of paths/names that identify a dataset, tried in order (f_mnist before mnist).
DATASET_HINTS = (
    (("f_mnist", "fmnist", "fashion"), "fashion-mnist"),
    (("mnist",), "mnist"),
    (("svhn",), "svhn"),
    (("cifar10", "cifar-10", "cifar_10"), "cifar10"),
    (("stl",), "stl10"),
    (("usps",), "usps"),
)


@dataclass(frozen=True)
class DroppedModel:
    folder: str
    reason: str
    detail: str  # names the file at fault where there is one


@dataclass
class ImportReport:
    """What an import kept and dropped, and why."""

    source: Path
    found: int = 0  # model folders found
    kept: int = 0
    epochs: list[int] = field(default_factory=list)
    architecture: str = ""
    activation: str = ""
    dataset: str = ""
    dropped: list[DroppedModel] = field(default_factory=list)
    without_results: dict[str, list[int]] = field(default_factory=dict)  # kept folder -> epochs with no result.json line

    def counts(self) -> dict[str, int]:
        """Number of dropped models per reason."""
        out: dict[str, int] = {}
        for model in self.dropped:
            out[model.reason] = out.get(model.reason, 0) + 1
        return out

    def lines(self) -> list[str]:
        """A human-readable summary: what was kept, and every dropped model with its reason."""
        out = [
            f"imported {self.kept} of {self.found} models from {self.source}",
            f"  architecture {self.architecture}, activation {self.activation}, dataset {self.dataset}, epochs {self.epochs}",
        ]
        if self.without_results:
            states = sum(len(epochs) for epochs in self.without_results.values())
            out.append(f"  {states} kept (model, epoch) states have no result.json line, so no metrics (NaN; never "
                       f"chosen as anchors), in {len(self.without_results)} models, e.g. "
                       + "; ".join(f"{folder} epochs {epochs}" for folder, epochs in list(self.without_results.items())[:3]))
        if self.dropped:
            out.append("  dropped " + ", ".join(f"{reason} {n}" for reason, n in self.counts().items()))
            out.append(self.dropped_lines())
        return out

    def dropped_lines(self) -> str:
        """One line per dropped model: folder, reason, and the file at fault."""
        return "\n".join(f"    {m.folder}: {m.reason}: {m.detail}" for m in self.dropped)


def import_modelzoo(
    src: Path | str,
    out: Path | str,
    *,
    architecture: str | None = None,
    activation: str | None = None,
    dataset: str | None = None,
    epochs: list[int] | None = None,
    weight_threshold: float | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[Zoo, ImportReport]:
    """Convert the Model Zoo directory `src` into a zoo saved at `out`; return it and a report.

    `architecture` (default: detected from the first checkpoint's shapes), `activation` (default:
    the trials' `model::nlin`) and `epochs` (default: those present for every model) select what is
    kept; models that differ are dropped and counted. `weight_threshold` defaults to 100.
    """
    src = Path(src)
    threshold = DEFAULT_WEIGHT_THRESHOLD if weight_threshold is None else float(weight_threshold)
    report = ImportReport(source=src)
    folders = find_model_folders(src)
    report.found = len(folders)
    models = _keep_passing(report, [scan_or_drop(folder) for folder in folders])
    if not models:
        raise ArtifactError(f"{src}: none of the {len(folders)} model folders is readable\n" + report.dropped_lines())
    chosen_epochs = _choose_epochs(models, epochs, src)
    models = _keep_passing(report, [(m, _missing_epochs(m, chosen_epochs)) for m in models])
    chosen_activation = _choose_activation(models, activation, src)
    models = _keep_passing(report, [(m, _other_activation(m, chosen_activation)) for m in models])
    arch, models, weights = _load_weights(
        models, get_architecture(architecture) if architecture else None, chosen_epochs, threshold, report, progress
    )
    if not models:
        raise ArtifactError(f"{src}: no model could be imported\n" + report.dropped_lines())

    model_ids = _model_ids(models, folders)
    report.dropped.sort(key=lambda m: m.folder)
    report.kept, report.epochs = len(models), chosen_epochs
    report.architecture, report.activation = arch.name, chosen_activation
    report.dataset = dataset or _guess_dataset(src, models[0].params)
    report.without_results = {m.path.name: missing for m in models
                              if (missing := [e for e in chosen_epochs if e not in m.results])}
    zoo = Zoo(_manifest(src, report, model_ids, threshold, models[0].params), torch.stack(weights), torch.tensor(model_ids, dtype=torch.int64),
              _properties(models, model_ids, chosen_epochs))
    zoo.save(out)
    return zoo, report


def _load_weights(models, arch, epochs, threshold, report, progress):
    """Read every model's checkpoints; the first readable one decides the architecture if none is given."""
    kept, weights = [], []
    for done, model in enumerate(models, start=1):
        try:
            if arch is None:
                arch = _detect_or_drop(model.checkpoints[epochs[0]])
            weights.append(read_weights(model, arch, epochs, threshold))
            kept.append(model)
        except DroppedFolder as dropped:
            report.dropped.append(DroppedModel(model.path.name, dropped.reason, dropped.detail))
        if progress is not None:
            progress(done, len(models))
    return arch, kept, weights


def _manifest(src: Path, report: ImportReport, model_ids: list[int], threshold: float, params: dict) -> dict:
    dataset: dict = {"name": report.dataset}
    if _is_normalisation(params.get("dataset::normalisation")):  # written by hyperrep's export
        dataset["normalisation"] = [float(v) for v in params["dataset::normalisation"]]
    elif report.dataset in MODELZOO_NORMALISATION:
        dataset["normalisation"] = list(MODELZOO_NORMALISATION[report.dataset])
    dropped: dict = dict(report.counts())
    for reason in report.counts():
        dropped[f"{reason}_folders"] = [m.folder for m in report.dropped if m.reason == reason]
    return make_manifest(
        name=src.resolve().name, architecture=report.architecture, activation=report.activation, dataset=dataset,
        epochs=report.epochs, splits=split_model_ids(model_ids), dropped=dropped,
        build={"source": "modelzoo", "path": str(src.resolve()), "weight_threshold": threshold},
    )


def _is_normalisation(value) -> bool:
    return (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) and value[1] > 0)


# -- choosing what to keep ---------------------------------------------------------------------
def _keep_passing(report: ImportReport, checked: list[tuple]) -> list[ModelFolder]:
    """The models whose check found no problem; the others go into the report."""
    kept = []
    for model, problem in checked:
        if problem is None:
            kept.append(model)
        else:
            folder = model.path if isinstance(model, ModelFolder) else model
            report.dropped.append(DroppedModel(folder.name, *problem))
    return kept


def _choose_epochs(models: list[ModelFolder], requested: list[int] | None, src: Path) -> list[int]:
    if requested is not None:
        if not requested:
            raise ValueError("epochs: need at least one epoch")
        return sorted(set(int(e) for e in requested))
    common = set.intersection(*(set(m.checkpoints) for m in models))
    if not common:
        raise ArtifactError(f"{src}: no checkpoint epoch is present in every model folder; pass the epochs to keep")
    return sorted(common)


def _missing_epochs(model: ModelFolder, epochs: list[int]) -> tuple[str, str] | None:
    missing = [e for e in epochs if e not in model.checkpoints]
    if not missing:
        return None
    return MISSING_EPOCHS, f"{model.path / f'checkpoint_{missing[0]}'}: no checkpoint for epochs {missing}"


def _nlin(model: ModelFolder) -> str | None:
    value = model.params.get("model::nlin")
    return str(value) if value is not None else None


def _choose_activation(models: list[ModelFolder], requested: str | None, src: Path) -> str:
    if requested is not None:
        get_activation(requested)
        return requested
    found = sorted({a for a in (_nlin(m) for m in models) if a is not None})
    if not found:
        raise ArtifactError(f"{src}: the params.json files name no activation (model::nlin); pass one")
    if len(found) > 1:
        raise ArtifactError(f"{src}: models use several activations {found}; pass the one to import")
    try:
        get_activation(found[0])
    except ValueError as err:
        raise ArtifactError(f"{src}: {err}") from err
    return found[0]


def _other_activation(model: ModelFolder, activation: str) -> tuple[str, str] | None:
    nlin = _nlin(model)
    if nlin is None or nlin == activation:
        return None
    return OTHER_ACTIVATION, f"{model.path / 'params.json'}: model::nlin is {nlin!r}, importing {activation!r}"


# -- ids and properties ------------------------------------------------------------------------
def _seed(model: ModelFolder) -> int | None:
    seed = model.params.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def _model_ids(kept: list[ModelFolder], folders: list[Path]) -> list[int]:
    """Each model's seed when the seeds are present and unique, else its position among the sorted folders."""
    seeds = [_seed(m) for m in kept]
    if None not in seeds and len(set(seeds)) == len(seeds):
        return [int(s) for s in seeds]
    position = {folder.name: i for i, folder in enumerate(folders)}
    return [position[m.path.name] for m in kept]


def _metric(entry: dict | None, key: str) -> float:
    value = None if entry is None else entry.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value == MISSING_METRIC:
        return math.nan
    return float(value)


def _properties(kept: list[ModelFolder], model_ids: list[int], epochs: list[int]) -> pd.DataFrame:
    optional = [k for k in OPTIONAL_RESULT_KEYS if any(k in line for m in kept for line in m.results.values())]
    rows = []
    for model, model_id in zip(kept, model_ids):
        lr, init = model.params.get("optim::lr"), model.params.get("model::init_type")
        for epoch in epochs:
            entry = model.results.get(epoch)
            row = {"model_id": model_id, "seed": _seed(model), "epoch": epoch}
            row.update({key: _metric(entry, key) for key in (*RESULT_KEYS, *optional)})
            if isinstance(lr, (int, float)):
                row["lr"] = float(lr)
            if isinstance(init, str):
                row["init"] = str(init)
            row["folder"] = model.path.name
            rows.append(row)
    table = pd.DataFrame(rows)
    table["seed"] = table["seed"].astype("Int64")
    return table


def _guess_dataset(src: Path, params: dict) -> str:
    """The dataset named in params.json, else recognised in its data paths or the zoo's folder name."""
    for key in ("dataset::name", "dataset"):
        if isinstance(params.get(key), str):
            return params[key]
    paths = [str(params.get(k, "")) for k in ("dataset::dump", "training::data_path")]
    text = " ".join([*paths, src.resolve().parent.name, src.resolve().name]).lower()
    for needles, name in DATASET_HINTS:
        if any(needle in text for needle in needles):
            return name
    return "unknown"


def parse_epochs(text: str) -> list[int]:
    """'21-25' or '0,5,10' or '7' -> a sorted list of epochs (for the CLI)."""
    epochs: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            epochs.update(range(int(low), int(high or low) + 1))
    except ValueError as err:
        raise ValueError(f"epochs: expected e.g. '21-25' or '0,5,10', got {text!r}") from err
    return sorted(epochs)
