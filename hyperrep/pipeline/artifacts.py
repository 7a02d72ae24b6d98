"""Artifact directories: which kind a folder holds, a fingerprint that changes when it is rebuilt,
and loading any of them as a zoo or a hyper-representation (a public Model Zoo through a cached
import, the paper's artifact embedded with a zoo), plus the dataset a zoo's images come from."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from hyperrep.ae.artifact import HyperRep, encode_weights, latent_table, load_hyperrep
from hyperrep.ae.map import fit_map
from hyperrep.ae.paper_checkpoint import architecture_from_paper, load_paper_hyperrep
from hyperrep.images.datasets import DEFAULT_DATASET, DatasetRule
from hyperrep.io import image_formats
from hyperrep.io.files import ArtifactError, read_json
from hyperrep.nets.cnn import get_architecture
from hyperrep.paper.importing import has_own_zoo, import_paper_dataset
from hyperrep.runtime.settings import import_cache_root
from hyperrep.zoo.format import Zoo, zoo_dataset_rule
from hyperrep.zoo.public_import import import_modelzoo

ZOO = "zoo"  # our zoo directory (zoo.json)
MODELZOO = "modelzoo"  # a public Model Zoo directory (one folder per trained model)
HYPERREP = "hyperrep"  # our hyper-representation directory (config.json + model.safetensors)
PAPER = "paper"  # the paper's hyper-representation directory (config_ae.json + checkpoint_ae.pt)
KIND_NAMES = {
    ZOO: "hyperrep zoo",
    MODELZOO: "public Model Zoo directory",
    HYPERREP: "hyperrep hyper-representation",
    PAPER: "paper hyper-representation (config_ae.json + checkpoint_ae.pt)",
}
WANTED = {  # what to use where a command needs this kind
    ZOO: "a zoo folder (zoo.json) such as data/zoo",
    HYPERREP: "a hyper-representation folder (config.json + model.safetensors) such as data/hyperrep",
}


# -- what a folder holds --------------------------------------------------------------------------


def artifact_kind(path: Path | str) -> str:
    """Which kind of artifact directory `path` is; ArtifactError naming what is missing if none."""
    path = Path(str(path).strip()).expanduser()
    if not str(path) or str(path) == ".":
        raise ArtifactError("no directory given")
    if not path.exists():
        raise ArtifactError(f"{path}: directory not found")
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a directory")
    if (path / "zoo.json").is_file():
        return ZOO
    if (path / "config_ae.json").is_file() or (path / "checkpoint_ae.pt").is_file():
        return PAPER
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return HYPERREP
    if any(_looks_like_modelzoo_model(child) for child in _subfolders(path, limit=50)):
        return MODELZOO
    if (path / "partial").is_dir():
        raise ArtifactError(f"{path}: a zoo build that has not finished yet (partial/ exists, zoo.json does not)")
    if (path / "checkpoint").is_dir() and (path / "config.json").is_file():
        raise ArtifactError(f"{path}: a hyper-representation still in training (checkpoint/ exists, model.safetensors does not)")
    raise ArtifactError(
        f"{path}: not a zoo (zoo.json), a Model Zoo (model folders with params.json, result.json, "
        f"checkpoint_<N>/), a hyper-representation (config.json + model.safetensors) or a paper "
        f"artifact (config_ae.json + checkpoint_ae.pt)"
    )


def expect_kind(path: Path | str, *accepted: str) -> str:
    """The kind of `path` when it is one of `accepted` (the first is what the caller needs); else
    the error saying what the folder is and what to use instead."""
    kind = artifact_kind(path)
    if kind not in accepted:
        raise wrong_kind(path, kind, accepted[0])
    return kind


def wrong_kind(path: Path | str, kind: str, wanted: str) -> ArtifactError:
    """The error for a folder of `kind` where a `wanted` one (ZOO or HYPERREP) is needed: what it is,
    what to use instead and how to make one from it, so a swapped argument is not a missing file."""
    what = "a zoo" if wanted == ZOO else "a hyper-representation"
    return ArtifactError(f"{path}: this is a {KIND_NAMES[kind]}, not {what}; use {WANTED[wanted]}"
                         f"{_how_to_make(path, kind, wanted)}")


def _how_to_make(path: Path | str, kind: str, wanted: str) -> str:
    if wanted == HYPERREP:
        return f", or train one with `hyperrep train {path if kind == ZOO else 'ZOO'} OUT`"
    if kind == MODELZOO or (kind == PAPER and has_own_zoo(path)):
        return f", or convert this one with `hyperrep zoo import {path} OUT`"
    own = _trained_on(path) if kind == HYPERREP else None
    return f" (this one was trained on {own})" if own else ""


def _trained_on(path: Path | str) -> Path | None:
    """The zoo our hyper-representation's config.json names, if it can be read."""
    try:
        return (Path(path) / read_json(Path(path) / "config.json")["zoo"]).resolve()
    except (ArtifactError, KeyError, TypeError):
        return None


def _subfolders(path: Path, limit: int) -> list[Path]:
    folders = []
    for child in sorted(path.iterdir()):
        if child.is_dir():
            folders.append(child)
        if len(folders) >= limit:
            break
    return folders


def _looks_like_modelzoo_model(folder: Path) -> bool:
    return (folder / "params.json").is_file() and any(
        p.is_dir() and p.name.startswith("checkpoint_") for p in folder.iterdir()
    )


def fingerprint(path: Path | str) -> str:
    """Names, sizes and modification times of a folder's files: a cache key that changes when it is rebuilt."""
    path = Path(path)
    parts = []
    for child in sorted(path.iterdir()) if path.is_dir() else []:
        if child.is_file():
            stat = child.stat()
            parts.append(f"{child.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


# -- loading ---------------------------------------------------------------------------------------


def imported_zoo_folder(source: Path | str) -> Path:
    """Where the converted copy of a public Model Zoo is kept (one folder per source path)."""
    key = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:12]
    return import_cache_root() / f"{Path(source).resolve().name}-{key}"


def paper_with_own_zoo(path: Path | str) -> bool:
    """Whether `path` is a paper folder that carries its zoo (dataset.pt)."""
    try:
        return artifact_kind(path) == PAPER and has_own_zoo(path)
    except ArtifactError:
        return False


def load_any_zoo(path: Path | str, key: str | None = None) -> tuple[Zoo, tuple[str, ...]]:
    """The zoo at `path` and notes about how it was found. A public Model Zoo, or a paper folder's
    dataset.pt, is imported once into the import cache and reused while its fingerprint (`key`) is unchanged."""
    kind = artifact_kind(path)
    if kind == ZOO:
        return Zoo.load(path), ()
    if kind != MODELZOO and not (kind == PAPER and has_own_zoo(path)):
        raise wrong_kind(path, kind, ZOO)
    key = key or fingerprint(path)
    folder = imported_zoo_folder(path)
    marker = folder / "source.key"
    if (folder / "zoo.json").is_file() and marker.is_file() and marker.read_text() == key:
        return Zoo.load(folder), (f"{path} (imported earlier into {folder})",)
    zoo, report = (import_modelzoo if kind == MODELZOO else import_paper_dataset)(path, folder)
    marker.write_text(key)
    return zoo, tuple(report.lines())


def load_any_hyperrep(path: Path | str, zoo: Zoo | None = None) -> HyperRep:
    """Our hyper-representation, or the paper's embedded with `zoo` (ArtifactError if none is given)."""
    if expect_kind(path, HYPERREP, PAPER) == PAPER:
        if zoo is None:
            raise ArtifactError(f"{path}: a paper hyper-representation needs a zoo to embed; load one first")
        return paper_hyperrep(path, zoo)
    return load_hyperrep(path)


def load_our_zoo(path: Path | str) -> Zoo:
    """Our zoo at `path` (no import); another kind of folder is an error saying what to use instead."""
    expect_kind(path, ZOO)
    return Zoo.load(path)


def load_hyperrep_with_zoo(path: Path | str) -> tuple[HyperRep, Zoo, tuple[str, ...]]:
    """A hyper-representation, the zoo it belongs to and notes on how that was found: ours with the
    zoo it was trained on, a paper folder with the zoo of its dataset.pt (imported once into the cache)."""
    if artifact_kind(path) != PAPER:
        hyperrep = load_any_hyperrep(path)
        return hyperrep, Zoo.load(hyperrep.zoo_path), ()
    if not has_own_zoo(path):
        raise ArtifactError(f"{path}: a paper hyper-representation without its dataset.pt; its zoo is needed to embed "
                            f"(the unzipped hyper_reps/<dataset>/ folder holds one)")
    zoo, notes = load_any_zoo(path)
    return paper_hyperrep(path, zoo), zoo, notes


def weights_per_model(path: Path | str) -> int:
    """The weights of one model that the hyper-representation at `path` (ours or the paper's)
    decodes, read from its config alone, so a request can be sized before anything is loaded."""
    path = Path(path)
    if expect_kind(path, HYPERREP, PAPER) == PAPER:
        return architecture_from_paper(read_json(path / "config_ae.json")).n_params
    config = read_json(path / "config.json")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(model, dict) or "architecture" not in model:
        raise ArtifactError(f"{path / 'config.json'}: not a hyper-representation config (no model.architecture)")
    return get_architecture(model["architecture"]).n_params


def paper_hyperrep(directory: Path | str, zoo: Zoo) -> HyperRep:
    """The paper's hyper-representation (config_ae.json + checkpoint_ae.pt) made explorable with `zoo`:
    every zoo model and epoch encoded, and a PCA map of those latents (the paper's artifacts ship
    neither; PCA takes milliseconds where a first UMAP fit takes tens of seconds)."""
    directory = Path(directory)
    model = load_paper_hyperrep(directory)
    if model.arch.name != zoo.architecture.name:
        raise ArtifactError(f"{directory / 'config_ae.json'}: encodes {model.arch.name} weights but the zoo "
                            f"{zoo.name} holds {zoo.architecture.name}; load a zoo of that architecture")
    n_models, n_epochs, n_params = zoo.weights.shape
    latents = encode_weights(model, zoo.weights.reshape(-1, n_params))
    model_ids = zoo.model_ids.repeat_interleave(n_epochs)
    epochs = torch.tensor(zoo.epochs).repeat(n_models)
    return HyperRep(
        model=model, config={"paper_config": read_json(directory / "config_ae.json")}, path=directory,
        zoo_path=Path(zoo.path), latents=latents, latent_table=latent_table(Path(zoo.path), model_ids, epochs),
        map_coords=fit_map(latents, method="pca"), projection={"method": "PCA (computed on load)"}, metrics={},
    )


def compatibility(zoo: Zoo, hyperrep: HyperRep) -> tuple[str | None, str | None]:
    """(problem, note) of using this zoo with this hyper-representation: a different architecture
    is a problem (nothing can be compared); a different zoo directory is only worth a note."""
    if zoo.architecture.name != hyperrep.arch.name:
        return (f"{hyperrep.path}: encodes {hyperrep.arch.name} weights but the zoo {zoo.name} holds "
                f"{zoo.architecture.name}; load its own zoo ({hyperrep.zoo_path})"), None
    if zoo.path is not None and Path(zoo.path).resolve() != Path(hyperrep.zoo_path).resolve():
        return None, (f"the hyper-representation was trained on {hyperrep.zoo_path}; baselines and novelty "
                      f"use the loaded zoo {zoo.path}")
    return None, None


# -- a zoo's images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSource:
    """Where a zoo's images come from, the rule they are normalised and split by (hyperrep.images.datasets),
    and a warning when they may not be the zoo's dataset."""

    data_dir: Path | None
    rule: DatasetRule
    warning: str | None = None

    @property
    def normalisation(self) -> tuple[float, float]:
        return self.rule.normalisation

    @property
    def dataset(self) -> str:
        return self.rule.name


def dataset_source(manifest: dict) -> DatasetSource:
    """The IDX folder (HYPERREP_DATA, else the default) and the dataset rule of a zoo, from its manifest."""
    env = os.environ.get("HYPERREP_DATA")
    data_dir = Path(env) if env else None
    rule = zoo_dataset_rule(manifest, data_dir)
    warning = None
    colour = image_formats.canonical_name(rule.name)
    if colour in image_formats.SOURCES and not env:
        warning = f"this zoo was trained on {rule.name!r}; set HYPERREP_DATA to a folder with its files ({image_formats.SOURCES[colour]})"
    elif rule.name != DEFAULT_DATASET and not env:
        warning = (
            f"this zoo was trained on {rule.name!r}; set HYPERREP_DATA to a folder with its IDX test files "
            f"(evaluating on Fashion-MNIST meanwhile)"
        )
    return DatasetSource(data_dir, rule, warning)
