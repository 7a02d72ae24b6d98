"""Export a zoo in the public Model Zoo layout (modelzoos.cc, ray-tune), so other weight-space tools read it.

One trial folder per model, named `NN_tune_trainable_hyperrep_<row>_seed=<model id>` (sorted
names keep the zoo's order), holding `params.json` (the trial config: `seed` = the model id,
`model::nlin`, `model::init_type`, `optim::lr`, the dataset and its normalisation),
`result.json` (one line per saved epoch, `training_iteration` = the epoch, so line 0 is the
untrained state as in the public zoos) and `checkpoint_<epoch>/checkpoints` (a torch state_dict
`module_list.<i>.weight|bias`). hyperrep.zoo.public_import reads it back into the same zoo.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch

from hyperrep.io.files import ArtifactError, atomic_write, write_json
from hyperrep.zoo.format import Zoo

RESULT_KEYS = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc")
# Build settings written into params.json under the public zoos' key names.
BUILD_PARAMS = {"optimizer": "optim::optimizer", "weight_decay": "optim::wd", "batch_size": "training::batchsize",
                "epochs": "training::epochs_train"}


def export_modelzoo(zoo: Zoo, dest: Path | str, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write every model of `zoo` as a trial folder under `dest` (which must be new or empty)."""
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ArtifactError(f"{dest}: exists and is not an empty folder; export into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    ids = zoo.model_ids.tolist()
    table = zoo.properties.set_index(["model_id", "epoch"]).sort_index()
    for row, model_id in enumerate(ids):
        _write_trial(zoo, dest / f"NN_tune_trainable_hyperrep_{row:05d}_seed={model_id}", row, model_id, table)
        if progress is not None:
            progress(row + 1, len(ids))
    write_json(dest / "config.json", {**_shared_params(zoo), "seed": {"grid_search": ids}})
    return dest


def _shared_params(zoo: Zoo) -> dict:
    """The trial config every model of the zoo shares."""
    dataset = zoo.manifest.get("dataset", {})
    params = {"model::type": zoo.architecture.name, "model::nlin": zoo.activation,
              "model::channels_in": zoo.architecture.in_channels, "dataset::name": dataset.get("name", "unknown")}
    if dataset.get("normalisation") is not None:
        params["dataset::normalisation"] = [float(v) for v in dataset["normalisation"]]
    build = zoo.manifest.get("build", {})
    params.update({key: build[name] for name, key in BUILD_PARAMS.items() if name in build})
    params["hyperrep::zoo"] = zoo.name
    return params


def _write_trial(zoo: Zoo, folder: Path, row: int, model_id: int, table) -> None:
    first = table.loc[(model_id, zoo.epochs[0])]
    params = {**_shared_params(zoo), "seed": int(model_id)}
    if "lr" in first and _finite(first["lr"]):
        params["optim::lr"] = float(first["lr"])
    if "init" in first and isinstance(first["init"], str):
        params["model::init_type"] = first["init"]
    trial_id = f"hyperrep_{row:05d}"
    lines = []
    for position, epoch in enumerate(zoo.epochs):
        checkpoint = folder / f"checkpoint_{epoch}" / "checkpoints"
        state = zoo.architecture.vector_to_state_dict(zoo.weights[row, position])
        atomic_write(checkpoint, lambda tmp, state=state: torch.save(state, tmp))
        entry = table.loc[(model_id, epoch)]
        metrics = {k: float(entry[k]) for k in RESULT_KEYS if k in entry and _finite(entry[k])}
        lines.append({**metrics, "training_iteration": int(epoch), "trial_id": trial_id, "config": params})
    write_json(folder / "params.json", params)
    atomic_write(folder / "result.json", lambda tmp: tmp.write_text("".join(json.dumps(line) + "\n" for line in lines)))


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
