"""Numbers shown to people: a zoo's headline, a metrics file's headline figures, accuracy tables
per group, learning curves with confidence bands, and which table columns are categories."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def zoo_headline(zoo) -> dict:
    """The zoo's dataset, last saved epoch and median test accuracy there (NaN-safe)."""
    last = max(zoo.epochs)
    accuracy = zoo.properties.loc[zoo.properties["epoch"] == last, "test_acc"]
    dataset = zoo.manifest.get("dataset", {})
    return {
        "dataset": dataset.get("name", "?") if isinstance(dataset, dict) else str(dataset),
        "last_epoch": last,
        "median_acc": float(accuracy.median()) if accuracy.notna().any() else float("nan"),
    }


HEADLINE_METRICS = (  # (path in metrics.json, label), shown first when present
    ("quality/test/rsq", "reconstruction R²"),
    ("quality/test/acc_ratio_above_threshold", "accuracy kept"),
    ("quality/test/prediction_agreement", "same predictions"),
    ("quality/test/mean_model/prediction_agreement", "same predictions, zoo mean model"),
    ("quality/test/acc_reconstructed", "rebuilt accuracy"),
    ("train_seconds", "training time (s)"),
)


METRIC_HELP = {
    "reconstruction R²": "1 - squared error / variance of the test split's weights, after encoding and decoding",
    "accuracy kept": "mean ratio of rebuilt to original test accuracy, over test-split models above 50 % accuracy",
    "rebuilt accuracy": "mean test accuracy of the test split's models after encoding and decoding",
    "same predictions": "share of test images a rebuilt test-split model classifies as its original does",
    "same predictions, zoo mean model": "the same for the train split's mean weight vector: what a "
                                        "reconstruction that ignored its input would reach",
}


def headline_metrics(metrics: dict | None, limit: int = 12) -> list[tuple[str, str]]:
    """Scalar numbers of a metrics.json as (label, formatted value): the known headline figures
    first, then every other scalar (nested keys joined with '/'; lists such as curves skipped)."""
    flat: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[prefix] = float(value)

    walk("", metrics or {})
    shown = [(label, _format_number(path, flat.pop(path))) for path, label in HEADLINE_METRICS if path in flat]
    shown += [(path.replace("_", " "), _format_number(path, value)) for path, value in flat.items()]
    return shown[:limit]


def _format_number(path: str, value: float) -> str:
    if value.is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    if ("acc" in path or "share" in path or "agreement" in path) and 0 <= value <= 1.5:
        return f"{value:.1%}"
    return f"{value:.3g}"


def categorical_columns(table: pd.DataFrame, max_levels: int = 12) -> list[str]:
    """Columns worth colouring by as categories: text columns with few distinct values."""
    return [
        column for column in table.columns
        if column != "model_id" and not pd.api.types.is_numeric_dtype(table[column])
        and 1 < table[column].nunique() <= max_levels
    ]


def is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def accuracy_groups(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """A long table (group, accuracy) of finite accuracies, for distribution plots."""
    frames = [pd.DataFrame({"group": name, "accuracy": values[np.isfinite(values)]})
              for name, values in groups.items() if values is not None and len(values)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["group", "accuracy"])


def describe_accuracy(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """Count, invalid count, mean, median, best and worst accuracy per group."""
    rows = []
    for name, values in groups.items():
        values = np.asarray(values, dtype=float)
        finite = values[np.isfinite(values)]
        rows.append({
            "group": name, "models": len(values), "not finite": int(len(values) - len(finite)),
            "mean": finite.mean() if finite.size else np.nan, "median": np.median(finite) if finite.size else np.nan,
            "best": finite.max() if finite.size else np.nan, "worst": finite.min() if finite.size else np.nan,
        })
    return pd.DataFrame(rows)


def finite_median(values) -> float:
    """Median of the finite values; NaN when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def learning_curves(results: dict) -> pd.DataFrame:
    """Per population and evaluated epoch: mean accuracy and a 95 % confidence band of the mean
    (mean ± 1.96 standard errors) over the finite members."""
    rows = []
    for label, result in results.items():
        for i, epoch in enumerate(result.epochs):
            values = result.accuracy[:, i]
            values = values[np.isfinite(values)]
            mean = values.mean() if values.size else np.nan
            half = 1.96 * values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else 0.0
            rows.append({"population": label, "epoch": epoch, "mean": mean, "low": mean - half, "high": mean + half,
                         "members": int(values.size)})
    return pd.DataFrame(rows)
