"""Figures of the report: accuracy per method at each fine-tuning epoch (report.png) and accuracy
against distance with the frontier (frontier.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hyperrep.evaluation.frontier import Frontier
from hyperrep.evaluation.statistics import bootstrap_ci
from hyperrep.io.files import atomic_write
from hyperrep.pipeline.report_types import BASELINES, MethodResult


def plot_report(results: list[MethodResult], path: Path) -> None:
    """Zero-shot accuracy per method (box plot) and mean accuracy over fine-tuning epochs (95 % CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(17, 7), gridspec_kw={"width_ratios": [1.2, 1]})
    labels = [r.label for r in results]
    zero_shot = [r.accuracy[:, 0][np.isfinite(r.accuracy[:, 0])] * 100 for r in results]
    left.boxplot(zero_shot, orientation="horizontal", tick_labels=labels, showmeans=True)
    left.invert_yaxis()
    left.set_xlabel(f"test accuracy at fine-tuning epoch {results[0].epochs[0]} (%)")
    left.set_title("zero-shot accuracy per method")
    colours = plt.get_cmap("tab20")
    for i, result in enumerate(results):
        masked = np.where(result.evaluated, result.accuracy, np.nan)
        means = np.nanmean(masked, axis=0) * 100
        cis = np.array([bootstrap_ci(masked[:, j], 500) for j in range(len(result.epochs))]) * 100
        colour = "black" if result.label in BASELINES else colours(i % 20)
        style = ":" if result.hyperrep == "no LWLN" else "--" if result.kind == "baseline" else "-"
        right.plot(result.epochs, means, style, marker="o", color=colour, label=result.label)
        right.fill_between(result.epochs, cis[:, 0], cis[:, 1], color=colour, alpha=0.12)
    right.set_xlabel("fine-tuning epochs")
    right.set_ylabel("mean test accuracy (%), 95 % CI")
    right.set_title("accuracy while fine-tuning")
    right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    right.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def plot_frontier(frontier: Frontier, summary: pd.DataFrame, path: Path) -> None:
    """Accuracy vs distance to the nearest zoo model, zero-shot and after the last epoch: each
    reference family's curve, the frontier, and every method as a point with its 95 % CI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [frontier.epochs[0]] + ([frontier.epochs[-1]] if len(frontier.epochs) > 1 else [])
    fig, axes = plt.subplots(1, len(epochs), figsize=(8.5 * len(epochs), 7), squeeze=False)
    points = frontier.table()
    methods = summary[summary["kind"] != "frontier"]
    markers = {"sampler": "o", "baseline": "s"}
    colours = plt.get_cmap("tab20")
    for ax, epoch in zip(axes[0], epochs):
        for family, style in zip(("noise", "average", "gaussian"), ("-", "--", ":")):
            curve = points[(points["family"] == family) & (points["epoch"] == epoch)].sort_values("distance_median")
            if len(curve):
                ax.plot(curve["distance_median"], 100 * curve["accuracy_mean"], style, color="grey", marker=".",
                        label=f"reference: {family}")
        line = frontier.curve(epoch)
        ax.plot(line["distance"], 100 * line["accuracy"], color="black", linewidth=2, alpha=0.4, label="frontier")
        for i, (_, row) in enumerate(methods[methods["epoch"] == epoch].iterrows()):
            ax.errorbar(row["distance_median"], 100 * row["mean"],
                        yerr=[[100 * (row["mean"] - row["ci_low"])], [100 * (row["ci_high"] - row["mean"])]],
                        fmt=markers.get(row["kind"], "o"), color=colours(i % 20), capsize=3,
                        label=f"{row['method']}")
        ax.set_xlabel("median distance to the nearest zoo model (any neuron order), zero-shot")
        ax.set_ylabel("mean test accuracy (%), 95 % CI")
        ax.set_title("zero-shot" if epoch == 0 else f"after {epoch} fine-tuning epochs (Δ per method: report.md)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
