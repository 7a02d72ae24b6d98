"""Reading one public Model Zoo model folder: `params.json`, `result.json`, its checkpoints and
state dicts (`torch.load(weights_only=True)`), its architecture and weights. A folder that cannot
be used raises `DroppedFolder` with the reason, which the import counts instead of failing."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperrep.io.files import ArtifactError, load_torch_file, read_json
from hyperrep.nets.cnn import ARCHITECTURES, Architecture

CHECKPOINT_DIR = re.compile(r"^checkpoint_(\d+)$")


# Reasons a model is dropped; the report and the manifest count each.
MISSING_FILE = "missing_file"


UNREADABLE_FILE = "unreadable_file"


MISSING_EPOCHS = "missing_epochs"


WRONG_ARCHITECTURE = "wrong_architecture"


OTHER_ACTIVATION = "other_activation"


NON_FINITE = "non_finite"


EXPLODED = "exploded"


@dataclass
class ModelFolder:
    """What the cheap first pass learns about one model folder."""

    path: Path
    params: dict
    results: dict[int, dict]  # training_iteration -> result line
    checkpoints: dict[int, Path]  # epoch -> checkpoint file


class DroppedFolder(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


# -- reading one folder ------------------------------------------------------------------------
def find_model_folders(src: Path) -> list[Path]:
    """The model folders of a Model Zoo directory, sorted by name (never filesystem order)."""
    if not src.exists():
        raise ArtifactError(f"{src}: Model Zoo directory not found")
    if not src.is_dir():
        raise ArtifactError(f"{src}: not a directory (a Model Zoo is a folder of model folders)")
    folders = sorted(
        (p for p in src.iterdir() if p.is_dir() and _looks_like_model_folder(p)), key=lambda p: p.name
    )
    if not folders:
        raise ArtifactError(
            f"{src}: no model folders found (a model folder holds params.json, result.json and checkpoint_<N>/checkpoints)"
        )
    return folders


def _looks_like_model_folder(path: Path) -> bool:
    if (path / "params.json").exists() or (path / "result.json").exists():
        return True
    return any(CHECKPOINT_DIR.match(p.name) for p in path.iterdir() if p.is_dir())


def scan_or_drop(folder: Path) -> tuple[ModelFolder | Path, tuple[str, str] | None]:
    try:
        return _scan_folder(folder), None
    except DroppedFolder as dropped:
        return folder, (dropped.reason, dropped.detail)


def _scan_folder(folder: Path) -> ModelFolder:
    params = _read_json_file(folder / "params.json")
    if not isinstance(params, dict):
        raise DroppedFolder(UNREADABLE_FILE, f"{folder / 'params.json'}: not a JSON object")
    results = read_results(folder / "result.json")
    checkpoints = find_checkpoints(folder)
    if not checkpoints:
        raise DroppedFolder(MISSING_FILE, f"{folder}: no checkpoint_<N>/checkpoints files")
    return ModelFolder(folder, params, results, checkpoints)


def _read_json_file(path: Path):
    if not path.is_file():
        raise DroppedFolder(MISSING_FILE, f"{path}: file not found")
    try:
        return read_json(path)
    except ArtifactError as err:
        raise DroppedFolder(UNREADABLE_FILE, str(err)) from err


def read_results(path: Path) -> dict[int, dict]:
    """The result lines of `result.json` keyed by `training_iteration` (the last line wins)."""
    if not path.is_file():
        raise DroppedFolder(MISSING_FILE, f"{path}: file not found")
    results = {}
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DroppedFolder(UNREADABLE_FILE, f"{path}: unreadable ({err})") from err
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            iteration = int(entry["training_iteration"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise DroppedFolder(UNREADABLE_FILE, f"{path}: line {number} is not a result with a training_iteration ({err})") from err
        results[iteration] = entry
    return results


def find_checkpoints(folder: Path) -> dict[int, Path]:
    """Epoch -> `checkpoint_<N>/checkpoints`; `checkpoint_N` wins over `checkpoint_00000N` as in the loader."""
    found: dict[int, Path] = {}
    for child in sorted(folder.iterdir(), key=lambda p: (len(p.name), p.name)):
        match = CHECKPOINT_DIR.match(child.name)
        if match and child.is_dir():
            found.setdefault(int(match.group(1)), child / "checkpoints")
    return dict(sorted(found.items()))


def read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """A checkpoint's state_dict, loaded without running pickled code (ArtifactError otherwise)."""
    state = load_torch_file(path)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"{path}: not a state_dict of tensors")
    return state


def _read_state_dict_or_drop(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        return read_state_dict(path)
    except ArtifactError as err:
        raise DroppedFolder(UNREADABLE_FILE if path.exists() else MISSING_FILE, str(err)) from err


def detect_architecture(state: Mapping[str, torch.Tensor], path: Path) -> Architecture:
    """The known architecture whose keys and shapes the state_dict has."""
    for arch in ARCHITECTURES.values():
        try:
            arch.state_dict_to_vector(dict(state))
            return arch
        except ValueError:
            continue
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    raise ArtifactError(
        f"{path}: state_dict matches no known architecture ({', '.join(ARCHITECTURES)}); its shapes: {shapes}"
    )


def _detect_or_drop(path: Path) -> Architecture:
    try:
        return detect_architecture(_read_state_dict_or_drop(path), path)
    except ArtifactError as err:
        raise DroppedFolder(WRONG_ARCHITECTURE, f"{err}; pass the architecture to import") from err


def read_weights(model: ModelFolder, arch: Architecture, epochs: list[int], threshold: float) -> torch.Tensor:
    """Flat weights [epochs, P] of one model, checked for shape, NaN/inf and explosion."""
    vectors = []
    for epoch in epochs:
        path = model.checkpoints[epoch]
        try:
            vectors.append(arch.state_dict_to_vector(dict(_read_state_dict_or_drop(path)), source=str(path)))
        except ValueError as err:
            raise DroppedFolder(WRONG_ARCHITECTURE, str(err)) from err
    weights = torch.stack(vectors)
    bad_epochs = [e for e, row in zip(epochs, weights) if not torch.isfinite(row).all()]
    if bad_epochs:
        raise DroppedFolder(NON_FINITE, f"NaN/inf weights at epochs {bad_epochs} ({model.checkpoints[bad_epochs[0]]})")
    largest = float(weights.abs().max())
    if largest > threshold:
        epoch = epochs[int(weights.abs().amax(dim=1).argmax())]
        raise DroppedFolder(EXPLODED, f"|w| = {largest:.4g} > {threshold:g} at epoch {epoch} ({model.checkpoints[epoch]})")
    return weights
