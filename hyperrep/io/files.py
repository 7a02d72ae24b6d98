"""Safe artifact files: atomic writes, strict loading, and the error every bad file raises."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file


class ArtifactError(ValueError):
    """A file or directory is missing, corrupt, foreign or inconsistent; the message names it."""


def atomic_write(path: Path | str, write) -> None:
    """Call `write(tmp_path)` then rename onto `path`, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path | str, obj: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n"))


def read_json(path: Path | str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ArtifactError(f"{path}: not valid JSON ({err})") from err


def write_tensors(path: Path | str, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_tensors(path: Path | str) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ArtifactError(f"{path}: not a readable safetensors file ({err})") from err


def read_tensor_metadata(path: Path | str) -> dict[str, str]:
    """The string metadata stored in a safetensors header."""
    try:
        with safe_open(str(path), "pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ArtifactError(f"{path}: not a readable safetensors file ({err})") from err


def write_table(path: Path | str, frame: pd.DataFrame) -> None:
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))


def read_table(path: Path | str) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for corrupt files
        raise ArtifactError(f"{path}: not a readable parquet table ({err})") from err


TORCH_SAVE_STARTS = (b"PK\x03\x04", b"\x80")  # torch.save's zip archive; its legacy pickle (PROTO opcode)


def is_torch_save(path: Path | str) -> bool:
    """Whether the file starts as torch.save writes one (a zip archive, or a pickle in the legacy
    format), so random or foreign bytes are named as such instead of as an unpickling error."""
    with open(path, "rb") as handle:
        return handle.read(4).startswith(TORCH_SAVE_STARTS)


def load_torch_file(path: Path | str) -> Any:
    """Load a foreign `.pt` file without executing code (`weights_only=True`)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    if not is_torch_save(path):
        raise ArtifactError(f"{path}: not a torch file; expected one written by torch.save (a zip archive or "
                            f"a pickle), found other bytes")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (zip), EOFError, ...
        raise ArtifactError(
            f"{path}: refused or unreadable torch file; only plain tensors and containers are "
            f"loaded, never pickled code ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
