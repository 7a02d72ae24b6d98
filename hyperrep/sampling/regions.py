"""Regions of the latent map: the map as a table, and anchor rows chosen with filters or drawn on the map."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from hyperrep.sampling.anchors import select_points, select_rows, top_fraction


def rows_from_selection(selection) -> list[int]:
    """Table rows of the points picked on a plotly chart (click, box or lasso).

    Every point carries its table row as the first entry of `custom_data`; points of other traces
    (the samples overlay) carry none and are ignored.
    """
    if not selection:
        return []
    points = selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
    rows = set()
    for point in points or []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(custom, (list, tuple)) and custom:
            custom = custom[0]
        if isinstance(custom, (int, float)) and not isinstance(custom, bool) and math.isfinite(custom):
            rows.add(int(custom))
    return sorted(rows)


def map_table(latent_table: pd.DataFrame, map_coords: torch.Tensor) -> pd.DataFrame:
    """The latent table plus `row` (its position, carried through plots as custom data) and map x/y."""
    coords = map_coords.detach().cpu().numpy()
    table = latent_table.reset_index(drop=True).copy()
    table.insert(0, "row", np.arange(len(table)))
    table["map_x"], table["map_y"] = coords[:, 0], coords[:, 1]
    return table


def region_from_filters(
    table: pd.DataFrame, *, split: str | None, epochs, accuracy: tuple[float, float], top_percent: float
) -> tuple[np.ndarray, str]:
    """Anchor rows chosen with widgets: split, epochs and accuracy range, then the top-k % of those.

    An empty result is a ValueError saying which choice emptied it (sampling.select_rows)."""
    rows = select_rows(table, split=split, epochs=list(epochs) if epochs else None, accuracy=tuple(accuracy))
    if top_percent < 100:
        rows = top_fraction(table, top_percent / 100, among=rows)
    parts = [f"split {split}" if split else "all splits",
             f"epochs {', '.join(str(e) for e in sorted(epochs))}" if epochs else "all epochs",
             f"test acc. {accuracy[0]:.2f}–{accuracy[1]:.2f}"]
    if top_percent < 100:
        parts.append(f"top {top_percent:g} %")
    return rows, ", ".join(parts)


def region_from_selection(selection, n_rows: int) -> tuple[np.ndarray, str]:
    """Anchor rows picked on the map (lasso, box or clicks); ValueError when nothing is picked."""
    rows = select_points(rows_from_selection(selection), n_rows)
    return rows, f"{len(rows)} points selected on the map"


def region_comparison(table: pd.DataFrame, rows) -> pd.DataFrame:
    """Test accuracies of all rows and of the region's rows, stacked with a `group` column."""
    return pd.concat([
        pd.DataFrame({"test_acc": table["test_acc"].to_numpy(), "group": "all embedded models"}),
        pd.DataFrame({"test_acc": table["test_acc"].to_numpy()[np.asarray(rows)], "group": "region"}),
    ], ignore_index=True)
