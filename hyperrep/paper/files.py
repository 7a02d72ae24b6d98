"""What the paper's pickled files mean (`dataset.pt` of model weights and properties,
`zoo_testsplit.pt`), read through the allow-list unpickler of hyperrep.io.paper_pickles.

    splits = read_model_dataset("hyper_reps/mnist/dataset.pt")   # {"train": PaperSplit, ...}
    table = read_property_dataset("zoos/mnist/zoo_testsplit.pt") # DataFrame of test_acc, epoch, ...
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hyperrep.io.files import ArtifactError
from hyperrep.io.paper_pickles import PaperRecord, _class_of, _split_records, load_paper_pickle
from hyperrep.nets.cnn import ARCHITECTURES, Architecture


@dataclass
class PaperSplit:
    """One split of a paper `dataset.pt`: flat weights, one row of properties per sample."""

    weights: torch.Tensor  # [samples, P]
    table: pd.DataFrame  # columns: path, epoch, and the paper's properties (test_acc, training_iteration, ...)
    layer_lst: list


def _vector(sample: Any, arch: Architecture | None, layer_lst: list, where: str) -> torch.Tensor:
    """A flat weight vector from a vector sample or a checkpoint (`module_list.<i>.*`) sample."""
    if isinstance(sample, torch.Tensor):
        return sample.detach().float().reshape(-1)
    if isinstance(sample, Mapping):
        parts = []
        for index, _kind in layer_lst:
            for part in ("weight", "bias"):
                key = f"module_list.{index}.{part}"
                if key not in sample:
                    raise ArtifactError(f"{where}: checkpoint sample lacks {key!r}")
                parts.append(torch.as_tensor(sample[key]).float().reshape(-1))
        return torch.cat(parts)
    raise ArtifactError(f"{where}: a sample is a {type(sample).__name__}, neither a weight vector nor a checkpoint")


def architecture_of_vectors(n_params: int, where: str) -> Architecture:
    for arch in ARCHITECTURES.values():
        if arch.n_params == n_params:
            return arch
    known = ", ".join(f"{a.name} ({a.n_params})" for a in ARCHITECTURES.values())
    raise ArtifactError(f"{where}: weight vectors of {n_params} values match no known architecture ({known}); "
                        f"were they saved without biases (use_bias=False)?")


def _split_from_record(record: dict, where: str) -> PaperSplit:
    data = record.get("data_in")
    if data is None:
        raise ArtifactError(f"{where}: {_class_of(record)} has no data_in (its weights)")
    samples = list(data) if not isinstance(data, torch.Tensor) else list(data.unbind(0))
    layer_lst = [tuple(x) for x in record.get("layer_lst") or []]
    vectors = [_vector(s, None, layer_lst, where) for s in samples]
    if not vectors:
        raise ArtifactError(f"{where}: the split holds no samples")
    lengths = {len(v) for v in vectors}
    if len(lengths) != 1:
        raise ArtifactError(f"{where}: samples have different lengths {sorted(lengths)}")
    n = len(vectors)
    columns: dict[str, list] = {}
    paths, epochs = record.get("paths"), record.get("epochs")
    if paths is not None:
        columns["path"] = [str(p) for p in paths]
    if epochs is not None:
        columns["epoch"] = [int(e) for e in epochs]
    properties = record.get("properties") or {}
    if not isinstance(properties, dict):
        raise ArtifactError(f"{where}: properties is a {type(properties).__name__}, not a dict of lists")
    for key, values in properties.items():
        columns[str(key)] = list(values)
    bad = {k: len(v) for k, v in columns.items() if len(v) != n}
    if bad:
        raise ArtifactError(f"{where}: {n} samples but columns of other lengths {bad}")
    return PaperSplit(torch.stack(vectors), pd.DataFrame(columns), layer_lst)


def read_model_dataset(path: Path | str) -> dict[str, PaperSplit]:
    """The splits of a paper `dataset.pt` ({"trainset", "valset"?, "testset"} of the paper's dataset classes)."""
    path = Path(path)
    splits = {}
    for key, split, record in _split_records(path, "dataset splits"):
        if not isinstance(record, PaperRecord):
            raise ArtifactError(f"{path}: {key} is a {_class_of(record)}, not one of the paper's model datasets")
        splits[split] = _split_from_record(record, f"{path} [{key}]")
    return splits


def read_property_dataset(path: Path | str) -> pd.DataFrame:
    """The properties of a paper `zoo_testsplit.pt` (a PropertyDataset): one row per model and epoch,
    with `epoch` taken from each row's `training_iteration`."""
    path = Path(path)
    content = load_paper_pickle(path)
    properties = content.get("properties") if isinstance(content, PaperRecord) else None
    if not isinstance(properties, dict) or "test_acc" not in properties:
        raise ArtifactError(f"{path}: expected the paper's PropertyDataset with properties['test_acc'], found {_class_of(content)}")
    lengths = {len(v) for v in properties.values()}
    if len(lengths) != 1:
        raise ArtifactError(f"{path}: property lists of different lengths {sorted(lengths)}")
    table = pd.DataFrame({str(k): list(v) for k, v in properties.items()})
    if "training_iteration" in table:
        table["epoch"] = table["training_iteration"].astype(int)
    return table


SEED_IN_PATH = re.compile(r"seed=(\d+)")


def seed_from_path(path: str) -> int | None:
    """The seed a ray-tune trial folder name carries (`..._seed=17_...`), if any."""
    match = SEED_IN_PATH.search(str(path))
    return int(match.group(1)) if match else None


def finite_or_nan(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) and number != -999 else math.nan
