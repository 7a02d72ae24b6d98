"""The fine-tuning study's folder: study.csv, members.csv, study.md (header, table, readings
generated from the numbers), study.png; and reading it back for the app (which committed study
folder was made from a given hyper-representation, and its table)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hyperrep.io.files import ArtifactError, atomic_write, read_json
from hyperrep.pipeline.report_files import p_value, percent, points, reports_root
from hyperrep.runtime.settings import artifact_root

STUDY_COLUMNS = ("method", "kind", "fraction", "train_images", "epoch", "models", "mean", "ci_low", "ci_high",
                 "delta_kaiming", "delta_kaiming_lo", "delta_kaiming_hi", "delta_zoo_init", "delta_zoo_init_lo",
                 "delta_zoo_init_hi", "delta_noise", "delta_noise_lo", "delta_noise_hi", "p_vs_kaiming", "p_holm")
BASELINE_NAMES = {"kaiming": "B_T (kaiming_uniform)", "zoo_init": "B_T (zoo's init)", "noise": "the noise copies"}


def accuracy_cell(row: pd.Series) -> str:
    return f"{percent(row['mean'])} [{percent(row['ci_low'])}, {percent(row['ci_high'])}]"


def delta_cell(row: pd.Series, stem: str) -> str:
    """Δ against one baseline in percentage points with its CI ('–' for the baseline itself)."""
    if not np.isfinite(row[f"delta_{stem}"]):
        return "–"
    return f"{points(row[f'delta_{stem}'])} [{points(row[f'delta_{stem}_lo'])}, {points(row[f'delta_{stem}_hi'])}]"


def fraction_label(fraction: float, images: int) -> str:
    return f"{100 * fraction:g} % ({images:,} images)"


def markdown_table(summary: pd.DataFrame) -> str:
    """One row per (fraction, epoch, method): accuracy and the three Δ with CIs, Holm p."""
    head = ["training images", "epoch", "method", "test acc. (%) [95 % CI]", "Δ vs B_T kaiming (pp)",
            "Δ vs B_T zoo init (pp)", "Δ vs noise copies (pp)", "p vs B_T kaiming (Holm)", "invalid"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in summary.iterrows():
        cells = [fraction_label(r["fraction"], int(r["train_images"])), str(int(r["epoch"])), r["method"], accuracy_cell(r),
                 delta_cell(r, "kaiming"), delta_cell(r, "zoo_init"), delta_cell(r, "noise"), p_value(r["p_holm"]),
                 str(int(r["invalid"]))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def side(low: float, high: float) -> str:
    """Where a Δ's 95 % CI lies, in words that claim no more than it carries."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no Δ"
    return "above" if low > 0 else "below" if high < 0 else "not distinguishable from (the CI holds 0)"


def readings(summary: pd.DataFrame) -> str:
    """Generated sentences: per fraction and epoch, each sampler's Δ against each baseline and
    which samplers (if any) beat them all; nothing is said that the CIs do not carry."""
    samplers = summary[summary["kind"] == "sampler"]
    lines = ["Readings (generated from the table; Δ in percentage points with its 95 % CI):"]
    for (fraction, epoch), group in samplers.groupby(["fraction", "epoch"], sort=True):
        images = int(group["train_images"].iloc[0])
        parts = []
        for _, r in group.iterrows():
            verdicts = ", ".join(f"{side(r[f'delta_{s}_lo'], r[f'delta_{s}_hi'])} {BASELINE_NAMES[s]} ({delta_cell(r, s)})"
                                 for s in BASELINE_NAMES)
            parts.append(f"{r['method']}: {verdicts}")
        beating = [r["method"] for _, r in group.iterrows()
                   if all(r[f"delta_{s}_lo"] > 0 for s in BASELINE_NAMES) and r["p_holm"] < 0.05]
        verdict = (f"beats every baseline (each CI above 0, Holm p < 0.05 against B_T kaiming): {', '.join(beating)}"
                   if beating else "no sampler beats every baseline with its CI above 0")
        lines.append(f"- {fraction_label(fraction, images)}, epoch {int(epoch)}: {verdict}. " + "; ".join(parts) + ".")
    return "\n".join(lines)


def plot_study(summary: pd.DataFrame, path: Path) -> None:
    """One panel per data fraction: mean test accuracy vs epoch per method, with 95 % CI bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted(summary["fraction"].unique())
    fig, axes = plt.subplots(1, len(fractions), figsize=(6.5 * len(fractions), 5.5), squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10")
    methods = list(dict.fromkeys(summary["method"]))
    for ax, fraction in zip(axes[0], fractions):
        part = summary[summary["fraction"] == fraction]
        for i, method in enumerate(methods):
            rows = part[part["method"] == method].sort_values("epoch")
            baseline = rows["kind"].iloc[0] != "sampler"
            mean = rows["mean"].to_numpy() * 100
            errors = np.abs(np.stack([rows["ci_low"], rows["ci_high"]]) * 100 - mean)
            ax.errorbar(rows["epoch"] + 0.06 * (i - len(methods) / 2), mean, yerr=errors, marker="o", capsize=3,
                        linestyle="--" if baseline else "-", color=colours(i % 10), label=method)
        ax.set_title(f"fine-tuned on {fraction_label(fraction, int(part['train_images'].iloc[0]))}")
        ax.set_xlabel("fine-tuning epochs")
        ax.set_xticks(sorted(part["epoch"].unique()))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean test accuracy (%), 95 % CI")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)


def write_study(out: Path, summary: pd.DataFrame, members: pd.DataFrame, header: str) -> None:
    """study.csv, members.csv, study.png and study.md (header, table, readings) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "study.csv", lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(out / "members.csv", lambda tmp: members.to_csv(tmp, index=False, float_format="%.6g"))
    plot_study(summary, out / "study.png")
    text = "\n\n".join([header, markdown_table(summary), readings(summary), "![accuracy while fine-tuning](study.png)"])
    atomic_write(out / "study.md", lambda tmp: tmp.write_text(text + "\n"))


# -- reading it back -------------------------------------------------------------------------------


def study_of(hyperrep_dir: Path | str, root: Path | str | None = None) -> Path | None:
    """The study folder under `root` (default: where reports are found) whose study_config.json
    names `hyperrep_dir` (a relative name is read against the artifact root), or None."""
    root = Path(root) if root is not None else reports_root()
    wanted = Path(hyperrep_dir).resolve()
    for config_path in sorted(root.glob("*/study_config.json")) if root.is_dir() else []:
        named = read_json(config_path).get("hyperrep")
        if named and (artifact_root() / named).resolve() == wanted and (config_path.parent / "study.csv").is_file():
            return config_path.parent
    return None


def study_summary(folder: Path | str) -> pd.DataFrame:
    """The study's table as people read it: one row per (training images, method), accuracy and Δ
    against B_T (kaiming_uniform) with CIs at each epoch."""
    path = Path(folder) / "study.csv"
    table = pd.read_csv(path)
    missing = [c for c in STUDY_COLUMNS if c not in table.columns]
    if missing:
        raise ArtifactError(f"{path}: not a fine-tuning study table (missing columns {', '.join(missing)})")
    rows = []
    for (fraction, method), group in table.groupby(["fraction", "method"], sort=False):
        row = {"training images": fraction_label(fraction, int(group["train_images"].iloc[0])), "method": method}
        for _, r in group.sort_values("epoch").iterrows():
            row[f"epoch {int(r['epoch'])} (%)"] = accuracy_cell(r)
            row[f"Δ vs B_T kaiming, epoch {int(r['epoch'])} (pp)"] = delta_cell(r, "kaiming")
        rows.append(row)
    return pd.DataFrame(rows)
