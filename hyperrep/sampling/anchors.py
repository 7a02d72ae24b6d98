"""Choosing anchors: row positions in a latent table by split, epoch, model or accuracy (the top
fraction), or by points, a box or a lasso drawn on the map."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _nonempty(rows: np.ndarray, what: str) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError(f"no anchors selected ({what}); choose a larger region or a wider range")
    return rows


def select_rows(table: pd.DataFrame, *, split: str | None = None, epochs=None, model_ids=None,
                accuracy: tuple[float, float] | None = None, column: str = "test_acc") -> np.ndarray:
    """Rows matching every given filter: split, epochs, model ids, and `low <= column <= high`."""
    keep = np.ones(len(table), dtype=bool)
    if split is not None:
        keep &= (table["split"] == split).to_numpy()
    if epochs is not None:
        keep &= table["epoch"].isin(list(epochs)).to_numpy()
    if model_ids is not None:
        keep &= table["model_id"].isin([int(m) for m in model_ids]).to_numpy()
    if accuracy is not None:
        values = table[column].to_numpy()
        keep &= (values >= accuracy[0]) & (values <= accuracy[1])
    filters = ", ".join(f"{k}={v}" for k, v in
                        (("split", split), ("epochs", epochs), ("model_ids", model_ids), (column, accuracy)) if v is not None)
    return _nonempty(np.flatnonzero(keep), filters or "empty table")


def top_fraction(table: pd.DataFrame, fraction: float = 0.3, *, among=None, column: str = "test_acc") -> np.ndarray:
    """Rows (of `among`, default all) with `column` >= its (1 - fraction) quantile: the paper's
    top-30 % anchors are `top_fraction(table, 0.3, among=select_rows(table, split="train"))`.
    Rows whose value is unknown (NaN: an imported epoch without metrics) are never chosen."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    among = np.arange(len(table)) if among is None else _nonempty(among, "empty pool")
    values = table[column].to_numpy(dtype=float)[among]
    among, values = _nonempty(among[~np.isnan(values)], f"no row with a known {column}"), values[~np.isnan(values)]
    threshold = np.quantile(values, 1 - fraction)  # linear interpolation, as torch.quantile
    return _nonempty(among[values >= threshold], f"top {fraction:.0%} by {column}")


def select_points(point_indices, n_rows: int) -> np.ndarray:
    """Rows clicked on the 2-D map (point indices); out-of-range indices are an error."""
    rows = np.unique(np.asarray(list(point_indices), dtype=np.int64))
    bad = rows[(rows < 0) | (rows >= n_rows)]
    if bad.size:
        raise ValueError(f"point indices out of range 0..{n_rows - 1}: {bad[:10].tolist()}")
    return _nonempty(rows, "no points chosen")


def select_box(coords, x: tuple[float, float], y: tuple[float, float]) -> np.ndarray:
    """Rows whose 2-D map coordinates lie in the box x[0] <= x <= x[1], y[0] <= y <= y[1]."""
    coords = np.asarray(coords)
    inside = (coords[:, 0] >= min(x)) & (coords[:, 0] <= max(x)) & (coords[:, 1] >= min(y)) & (coords[:, 1] <= max(y))
    return _nonempty(np.flatnonzero(inside), f"box x={x}, y={y}")


def select_lasso(coords, polygon) -> np.ndarray:
    """Rows whose 2-D map coordinates lie inside a lasso polygon [(x, y), ...]."""
    from matplotlib.path import Path

    vertices = np.asarray(polygon, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
        raise ValueError(f"a lasso needs at least 3 (x, y) vertices, got shape {vertices.shape}")
    inside = Path(vertices).contains_points(np.asarray(coords, dtype=np.float64))
    return _nonempty(np.flatnonzero(inside), f"lasso of {len(vertices)} vertices")
