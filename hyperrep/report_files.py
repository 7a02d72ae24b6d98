"""Reading committed reports back: which report folder (report_config.json + report.csv, written by
`hyperrep report`) was made from a given hyper-representation, and its table at two epochs, so the
app can show the measured comparison beside the model it was measured on."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from hyperrep.files import ArtifactError, read_json
from hyperrep.settings import artifact_root

TABLE_COLUMNS = ("method", "kind", "epoch", "models", "mean", "ci_low", "ci_high",
                 "frontier_delta", "frontier_delta_lo", "frontier_delta_hi", "distance_median")


def reports_root() -> Path:
    """HYPERREP_REPORTS if set, else docs/ of the artifact root (where `hyperrep report --out docs/...` writes)."""
    return Path(os.environ.get("HYPERREP_REPORTS") or artifact_root() / "docs")


def report_of(hyperrep_dir: Path | str, root: Path | str | None = None) -> Path | None:
    """The report folder under `root` whose report_config.json names `hyperrep_dir` (a relative
    name is read against the artifact root, where the command ran), or None."""
    root = Path(root) if root is not None else reports_root()
    wanted = Path(hyperrep_dir).resolve()
    for config_path in sorted(root.glob("*/report_config.json")) if root.is_dir() else []:
        named = read_json(config_path).get("hyperrep")
        if named and (artifact_root() / named).resolve() == wanted and (config_path.parent / "report.csv").is_file():
            return config_path.parent
    return None


def report_summary(folder: Path | str) -> pd.DataFrame:
    """Zero-shot and last-epoch rows of a report's table, one row per method: accuracy and Δ with CIs."""
    path = Path(folder) / "report.csv"
    table = pd.read_csv(path)
    missing = [c for c in TABLE_COLUMNS if c not in table.columns]
    if missing:
        raise ArtifactError(f"{path}: not a report table (missing columns {', '.join(missing)})")
    table = table[table["kind"] != "frontier"]
    last = int(table["epoch"].max())
    rows = []
    for method, group in table.groupby("method", sort=False):
        at = {int(e): row for e, row in zip(group["epoch"], group.itertuples())}
        row = {"method": method, "distance": at[min(at)].distance_median}
        for epoch, name in [(0, "zero-shot")] + ([(last, f"after {last} epochs")] if last > 0 else []):
            if epoch in at:
                r = at[epoch]
                row[f"{name} (%)"] = f"{100 * r.mean:.1f} [{100 * r.ci_low:.1f}, {100 * r.ci_high:.1f}]"
                row[f"Δ {name} (pp)"] = _delta(r.frontier_delta, r.frontier_delta_lo, r.frontier_delta_hi)
        rows.append(row)
    return pd.DataFrame(rows)


def _delta(value: float, low: float, high: float) -> str:
    if pd.isna(value):
        return "–"
    return f"{100 * value:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"
