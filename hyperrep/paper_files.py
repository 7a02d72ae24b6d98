"""The paper's pickled files (`dataset.pt`, `image_dataset.pt`, `zoo_testsplit.pt`), read without running them.

Those files are `torch.save` pickles of the paper code's own classes (docs/formats.md). They are
read here by an unpickler with an allow-list: the few class names of the paper's dataset code and
torch's TensorDataset become plain dicts of their attributes, paths become strings, tensors are
rebuilt as torch's own safe loader rebuilds them, and any other name (a function, a module, a
class of another package) is refused with an ArtifactError naming it, before anything is called.

    splits = read_model_dataset("hyper_reps/mnist/dataset.pt")   # {"train": PaperSplit, ...}
    images = read_image_dataset("zoos/mnist/image_dataset.pt")   # {"train": (x, y), ...}
    table = read_property_dataset("zoos/mnist/zoo_testsplit.pt") # DataFrame of test_acc, epoch, ...
"""

from __future__ import annotations

import _compat_pickle
import collections
import math
import pickle
import re
import types
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pandas as pd
import torch

from hyperrep.cnn import ARCHITECTURES, Architecture
from hyperrep.files import ArtifactError, is_torch_save

# The paper's classes whose pickled state is read as a plain dict (module path without "ghrp.",
# which the 2022 package adds; the 2021 code pickled the same classes without it).
PAPER_CLASSES = {
    "checkpoints_to_datasets.dataset_simclr.SimCLRDataset",
    "checkpoints_to_datasets.dataset_base.ModelDatasetBase",
    "checkpoints_to_datasets.dataset_properties.PropertyDataset",
    "checkpoints_to_datasets.random_erasing.RandomErasingVector",
    "torch.utils.data.dataset.TensorDataset",
}
PATH_CLASSES = {
    "pathlib.PosixPath": PurePosixPath, "pathlib.PurePosixPath": PurePosixPath, "pathlib.Path": PurePosixPath,
    "pathlib.WindowsPath": PureWindowsPath, "pathlib.PureWindowsPath": PureWindowsPath,
}
# What a tensor, a state_dict and a few builtin containers need (a subset of torch's weights_only list).
_TORCH_NAMES = (
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state", "torch.Size", "torch.Tensor",
    "torch.nn.parameter.Parameter",
)
_BUILTINS = {
    "collections.OrderedDict": collections.OrderedDict, "builtins.set": set, "builtins.frozenset": frozenset,
    "builtins.complex": complex, "builtins.slice": slice, "builtins.bytearray": bytearray,
}
CLASS_KEY = "__class__"


def _resolve(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    obj: Any = __import__(module, fromlist=[attr])
    return getattr(obj, attr)


def _encode(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode`, which protocol-2 pickles use for bytes; only text to bytes."""
    if not isinstance(text, str):
        raise ArtifactError("refused: _codecs.encode called on a non-string")
    return text.encode(encoding)


def _allowed_globals() -> dict[str, Any]:
    allowed: dict[str, Any] = dict(_BUILTINS)
    for name in _TORCH_NAMES:
        try:
            allowed[name] = _resolve(name)
        except (ImportError, AttributeError):
            continue
    allowed.update({f"torch.{name}": dtype for name, dtype in vars(torch).items() if isinstance(dtype, torch.dtype)})
    allowed["_codecs.encode"] = _encode
    return allowed


_ALLOWED = _allowed_globals()


class PaperRecord(dict):
    """The attributes of one pickled object of an allowed class, as a dict (its class name under `__class__`)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] or {})}  # (dict, slots) state
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.get(CLASS_KEY)}: unexpected pickled state {type(state).__name__}")
        self.update(state)


def _record_class(full_name: str) -> type:
    """A PaperRecord subclass whose instances remember `full_name`; instantiation ignores arguments."""

    def new(cls, *args, **kwargs):
        record = dict.__new__(cls)
        record[CLASS_KEY] = full_name
        return record

    return type("PaperRecord", (PaperRecord,), {"__new__": new, "__init__": lambda self, *a, **k: None})


def _path_maker(flavour):
    return lambda *parts: str(flavour(*[str(p) for p in parts]))


def _allowed_paper_class(module: str, name: str) -> bool:
    full = f"{module}.{name}"
    return full in PAPER_CLASSES or (full.startswith("ghrp.") and full[len("ghrp."):] in PAPER_CLASSES)


class Refused(pickle.UnpicklingError):
    """A name the allow-list does not hold; told apart from a damaged pickle, which is no paper file."""


class _RestrictedUnpickler(pickle.Unpickler):
    """find_class answers only from the allow-list; everything else raises before it is called."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol-2 pickles use Python 2 names
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        full = f"{module}.{name}"
        if _allowed_paper_class(module, name):
            return _record_class(full)
        if full in PATH_CLASSES:
            return _path_maker(PATH_CLASSES[full])
        if full in _ALLOWED:
            return _ALLOWED[full]
        raise Refused(f"refused to load {full!r}: not one of the paper's data classes or a tensor type")


# torch.load(pickle_module=...) takes a module with Unpickler and load.
_RESTRICTED = types.SimpleNamespace(Unpickler=_RestrictedUnpickler, load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
                                    __name__="hyperrep_restricted_pickle")


def load_paper_pickle(path: Path | str) -> Any:
    """The content of a paper `.pt` pickle as plain dicts, lists, strings and tensors.

    Objects of the paper's dataset classes become PaperRecord dicts; anything not on the
    allow-list raises ArtifactError naming the refused class or function.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    if not is_torch_save(path):
        raise ArtifactError(f"{path}: not a paper file; expected a torch-saved paper dataset (torch.save's zip "
                            f"archive or pickle of the paper's dataset classes), found other bytes")
    try:  # weights_only=False only hands the unpickling to _RESTRICTED, whose allow-list refuses all else
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RESTRICTED)
    except Refused as err:
        raise ArtifactError(f"{path}: {err}") from err
    except ArtifactError as err:
        raise ArtifactError(f"{path}: {err}") from err
    except Exception as err:  # a damaged zip or pickle, EOF, a refused call inside torch's rebuild ...
        raise ArtifactError(f"{path}: unreadable paper file, damaged or not a torch-saved paper dataset "
                            f"({type(err).__name__}: {err})") from err


# -- what the files mean --------------------------------------------------------------------------
SPLIT_KEYS = {"trainset": "train", "valset": "val", "testset": "test"}


@dataclass
class PaperSplit:
    """One split of a paper `dataset.pt`: flat weights, one row of properties per sample."""

    weights: torch.Tensor  # [samples, P]
    table: pd.DataFrame  # columns: path, epoch, and the paper's properties (test_acc, training_iteration, ...)
    layer_lst: list


def _class_of(obj: Any) -> str:
    return obj.get(CLASS_KEY, "") if isinstance(obj, dict) else type(obj).__name__


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


def _split_records(path: Path, what: str) -> list[tuple[str, str, Any]]:
    """(key, our split name, record) of each split present in a paper pickle holding a dict of splits."""
    content = load_paper_pickle(path)
    if not isinstance(content, dict):
        raise ArtifactError(f"{path}: expected a dict of {what}, found {_class_of(content)}")
    records = [(key, split, content[key]) for key, split in SPLIT_KEYS.items() if content.get(key) is not None]
    if not records:
        raise ArtifactError(f"{path}: no trainset/valset/testset among its keys {sorted(map(str, content))}")
    return records


def read_model_dataset(path: Path | str) -> dict[str, PaperSplit]:
    """The splits of a paper `dataset.pt` ({"trainset", "valset"?, "testset"} of the paper's dataset classes)."""
    path = Path(path)
    splits = {}
    for key, split, record in _split_records(path, "dataset splits"):
        if not isinstance(record, PaperRecord):
            raise ArtifactError(f"{path}: {key} is a {_class_of(record)}, not one of the paper's model datasets")
        splits[split] = _split_from_record(record, f"{path} [{key}]")
    return splits


def read_image_dataset(path: Path | str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The (images, labels) of each split of a paper `image_dataset.pt` (TensorDatasets)."""
    path = Path(path)
    out = {}
    for key, split, record in _split_records(path, "image splits"):
        tensors = record.get("tensors") if isinstance(record, dict) else None
        if not isinstance(tensors, (tuple, list)) or len(tensors) != 2 or not all(isinstance(t, torch.Tensor) for t in tensors):
            raise ArtifactError(f"{path}: {key} is not a TensorDataset of (images, labels)")
        images, labels = tensors
        if images.dim() != 4 or len(images) != len(labels):
            raise ArtifactError(f"{path}: {key} has images {tuple(images.shape)} and labels {tuple(labels.shape)}")
        out[split] = (images.float(), labels.long())
    return out


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
