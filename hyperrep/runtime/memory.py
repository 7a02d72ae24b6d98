"""Whether a request for many models fits in this machine's memory, checked before any work starts.

Every population, zoo and report holds its models' weights as float32 vectors, so a count the
user gives (`hyperrep sample -n`, `report --models`, a zoo build's `n_models`) needs at least
models x weights x 4 bytes. A count past the available memory would otherwise fail minutes or
hours later inside NumPy or torch with a traceback; `check_models_fit` says so in one line first.
"""

from __future__ import annotations

import os
from pathlib import Path

FLOAT32_BYTES = 4
MEMINFO = Path("/proc/meminfo")
UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


class TooLarge(ValueError):
    """A request needing more memory than the machine has available; the message gives both figures."""


def available_bytes() -> int | None:
    """Memory this process can still get without swapping: MemAvailable of /proc/meminfo (Linux),
    else the free physical pages (os.sysconf), else None where neither is known (no check then)."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the figure is in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(n: float) -> str:
    """`n` bytes in the largest binary unit that keeps it at least 1 (918 GiB, 1.5 TiB, 23 GiB)."""
    unit = 0
    while n >= 1024 and unit < len(UNITS) - 1:
        n, unit = n / 1024, unit + 1
    return f"{n:.1f} {UNITS[unit]}" if n < 10 and unit else f"{n:.0f} {UNITS[unit]}"


def check_models_fit(request: str, n_models: int, n_weights: int, *, epochs: int = 1) -> None:
    """TooLarge when `n_models` float32 weight vectors of `n_weights` (each at `epochs` saved epochs)
    need more than the available memory; the message starts with `request`, what the user asked."""
    need = n_models * epochs * n_weights * FLOAT32_BYTES
    have = available_bytes()
    if have is None or need <= have:
        return
    per_model = f"{epochs} saved epochs × {n_weights:,} weights" if epochs > 1 else f"{n_weights:,} weights"
    raise TooLarge(f"{request}: {n_models:,} models × {per_model} need at least {format_bytes(need)}; "
                   f"this machine has {format_bytes(have)} available")
