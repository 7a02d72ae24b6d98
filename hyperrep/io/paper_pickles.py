"""The paper's pickled `.pt` files read without running them: an unpickler with an allow-list.

Those files are `torch.save` pickles of the paper code's own classes (docs/formats.md). The few class
names of the paper's dataset code and torch's TensorDataset become plain dicts of their attributes,
paths become strings, tensors are rebuilt as torch's own safe loader rebuilds them, and any other
name (a function, a module, a class of another package) is refused with an ArtifactError naming
it, before anything is called. `read_image_dataset` reads an `image_dataset.pt` with it.
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle
import types
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import torch

from hyperrep.io.files import ArtifactError, is_torch_save

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


def _class_of(obj: Any) -> str:
    return obj.get(CLASS_KEY, "") if isinstance(obj, dict) else type(obj).__name__


def _split_records(path: Path, what: str) -> list[tuple[str, str, Any]]:
    """(key, our split name, record) of each split present in a paper pickle holding a dict of splits."""
    content = load_paper_pickle(path)
    if not isinstance(content, dict):
        raise ArtifactError(f"{path}: expected a dict of {what}, found {_class_of(content)}")
    records = [(key, split, content[key]) for key, split in SPLIT_KEYS.items() if content.get(key) is not None]
    if not records:
        raise ArtifactError(f"{path}: no trainset/valset/testset among its keys {sorted(map(str, content))}")
    return records


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
