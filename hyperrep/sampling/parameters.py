"""The parameters of a sampler that a user may set: read from its constructor (name, default and
the widget kind the default implies), so the app and the CLI offer what the class takes."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class SamplerParameter:
    """One constructor parameter of a sampler that a user may set (the app shows a widget)."""

    name: str
    default: object
    kind: str  # "bool" | "int" | "float" | "optional_float" | "text" | "choice"
    options: tuple = ()  # the allowed values of a "choice"


def constructor_parameters(factory: Callable, fixed=()) -> list[SamplerParameter]:
    """The parameters of `factory` that have a default and are not in `fixed`, with a widget kind
    read from the default (and the annotation where the default is None)."""
    found = []
    for parameter in inspect.signature(factory).parameters.values():
        if parameter.name in fixed or parameter.default is inspect.Parameter.empty:
            continue
        annotation, default = str(parameter.annotation), parameter.default
        if isinstance(default, bool):
            kind = "bool"
        elif isinstance(default, int):
            kind = "int"
        elif isinstance(default, float):
            kind = "float"
        elif default is None and "float" in annotation:
            kind = "optional_float"
        else:
            kind = "text"
        found.append(SamplerParameter(parameter.name, default, kind))
    return found
