"""Settings from the environment: where the default artifacts are, torch threads, and app limits.

Every environment variable hyperrep reads (except HYPERREP_DATA, read by hyperrep.images.datasets, and
HYPERREP_DEVICE, read by hyperrep.runtime.device) is read here.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hyperrep.io.files import ArtifactError

CHECKOUT = Path(__file__).resolve().parents[2]  # the source checkout (an installed package has no data/ here)
MAX_SAMPLES = 500  # models per sampling request in the app; more would block a CPU session for minutes
MAX_FINETUNE_MODELS = 30  # models per population in the app's fine-tuning comparison


def artifact_root() -> Path:
    """The folder holding the default `data/zoo` and `data/hyperrep`: HYPERREP_HOME if set, else
    the checkout this package runs from, else the current directory (an installed package run
    from its checkout, e.g. `streamlit run app.py` or `hyperrep zoo info data/zoo`)."""
    home = os.environ.get("HYPERREP_HOME")
    if home:
        return Path(home).expanduser()
    if (CHECKOUT / "data" / "zoo").is_dir():
        return CHECKOUT
    return Path.cwd()


def default_zoo_path() -> Path:
    """HYPERREP_ZOO if set, else data/zoo of the artifact root."""
    return Path(os.environ.get("HYPERREP_ZOO") or artifact_root() / "data" / "zoo")


def default_hyperrep_path() -> Path:
    """HYPERREP_MODEL if set, else data/hyperrep of the artifact root."""
    return Path(os.environ.get("HYPERREP_MODEL") or artifact_root() / "data" / "hyperrep")


def where_to_point(path: Path | str, what: str, env: str, flag: str | None = None) -> ArtifactError:
    """The error for a default artifact that is not there, saying how to name one."""
    how = f"pass {flag} or set {env}" if flag else f"set {env}"
    return ArtifactError(
        f"{path}: no {what} here; {how} to a {what} directory, set HYPERREP_HOME to a hyperrep checkout "
        f"(with data/zoo and data/hyperrep), or run from that checkout"
    )


def import_cache_root() -> Path:
    """Where imported public Model Zoos are kept: HYPERREP_IMPORT_CACHE, else the temp folder."""
    return Path(os.environ.get("HYPERREP_IMPORT_CACHE") or Path(tempfile.gettempdir()) / "hyperrep-imports")


def cpu_threads() -> int:
    """The most torch CPU threads the app gives one compute step: HYPERREP_THREADS, else one per
    core. Each step gets fewer when other processes keep cores busy (hyperrep.runtime.cores.share_cores;
    measured in docs/benchmarks.md, "App latency")."""
    value = os.environ.get("HYPERREP_THREADS") or str(os.cpu_count() or 1)
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"HYPERREP_THREADS must be a whole number, got {value!r}") from None


def capped_request(requested: int, cap: int | None = None) -> tuple[int, str | None]:
    """The number of models to make (at most `cap`, default MAX_SAMPLES) and, when the request was cut, the message that says so."""
    cap = MAX_SAMPLES if cap is None else cap
    if requested < 1:
        return 1, f"asked for {requested} models; making 1"
    if requested > cap:
        return cap, f"asked for {requested} models; capped at {cap} so the app stays responsive"
    return requested, None
