"""What every command shares: the parser class, argument types, progress bars, default artifacts."""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from hyperrep.runtime import settings


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that never reads a prefix of a long option as that option (`--n` is not
    `--no-evaluate`); `add_subparsers` makes every subcommand's parser of this class too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


def count(text: str) -> int:
    """An argparse type: a whole number of at least 1 (models, images)."""
    return _whole_number(text, 1)


def count_or_zero(text: str) -> int:
    """An argparse type: a whole number of at least 0 (where 0 means all)."""
    return _whole_number(text, 0)


def fraction(text: str) -> float:
    """An argparse type: a number in (0, 1] (a share of the training images)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {value:g}")
    return value


def _whole_number(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
    return value


class TqdmProgress:
    """A `progress(done, total)` callback that drives one tqdm bar."""

    def __init__(self, description: str):
        self.bar = None
        self.description = description
        self.unit = "model"

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.description, unit=self.unit, dynamic_ncols=True)
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()



def default_artifact(given: Path | None, default: Path, what: str, env: str, flag: str) -> Path:
    """The path given on the command line, else the default one if it exists, else an error saying where to point."""
    if given is not None:
        return given
    if not default.exists():
        raise settings.where_to_point(default, what, env, flag)
    return default



def epoch_list(text: str) -> list[int]:
    from hyperrep.zoo.public_import import parse_epochs

    return parse_epochs(text)


def name_of(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")
