"""The report's files: report.md (header, table, readings), report.csv, members.csv, novelty.csv,
frontier.csv and the figures, the table between a README's markers; and reading them back (which
committed report folder was made from a given hyper-representation, its table at two epochs) so
the app can show the measured comparison beside the model it was measured on."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hyperrep.evaluation.frontier import Frontier, verdict
from hyperrep.io.files import ArtifactError, atomic_write, read_json
from hyperrep.pipeline.report_figures import plot_frontier, plot_report
from hyperrep.pipeline.report_types import READINGS_START, MethodResult
from hyperrep.runtime.settings import artifact_root

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
        at = {int(r["epoch"]): r for _, r in group.iterrows()}
        row = {"method": method}
        for epoch, name in [(0, "zero-shot")] + ([(last, f"after {last} epochs")] if last > 0 else []):
            if epoch in at:
                r = at[epoch]
                row[f"{name} (%)"] = f"{percent(r['mean'])} [{percent(r['ci_low'])}, {percent(r['ci_high'])}]"
                row[f"Δ {name} (pp)"] = _delta_cell(r)
        first = at[min(at)]  # zero-shot distances: to the train models at the anchors' epochs, to any checkpoint
        row["distance to train models"] = round(float(first.get("distance_train_median", np.nan)), 2)
        row["distance to any checkpoint"] = round(float(first["distance_median"]), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def report_choices(folder: Path | str) -> pd.DataFrame | None:
    """What a report's validation images chose (tuning.json), one row per choice; None for a report without it."""
    path = Path(folder) / "tuning.json"
    if not path.is_file():
        return None
    tuning = read_json(path)
    rows = [{"choice": "anchors", "chosen": f"top {tuning['anchor_fraction']:.0%} of the train rows by validation "
                                              f"accuracy ({tuning['anchors']} rows)"},
            {"choice": "noise σ reach", "chosen": f"{tuning['frontier_sigmas'][-1]:g}"}]
    rows += [{"choice": f"{name} {param}", "chosen": f"{value:g}"}
             for name, params in tuning["sampler_params"].items() for param, value in params.items()]
    rows += [{"choice": f"step size: {method}", "chosen": ", ".join(f"{lr:g} at {budget} steps" for budget, lr in sizes.items())}
             for method, sizes in tuning["step_sizes"].items()]
    images = tuning["images"]
    rows.append({"choice": "images", "chosen": f"chosen on {images['validation']['images']:,} validation images, "
                                               f"reported on {images['test']['images']:,} test images"})
    return pd.DataFrame(rows)


def report_budget_differences(folder: Path | str) -> pd.DataFrame | None:
    """The step-budget comparisons of a report (budget_differences.csv) as cells in pp; None without them."""
    path = Path(folder) / "budget_differences.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    return pd.DataFrame({"comparison": table["comparison"], "budget (steps)": table["budget"], "epoch": table["epoch"],
                         "Δ difference, pp [95 % CI]": [f"{points(r['difference'])} [{points(r['difference_lo'])}, "
                                                        f"{points(r['difference_hi'])}]" for _, r in table.iterrows()]})


def percent(value: float) -> str:
    """An accuracy in %, one decimal."""
    return "–" if not np.isfinite(value) else f"{100 * value:.1f}"


def points(value: float) -> str:
    """A difference of accuracies in percentage points, signed."""
    return "–" if not np.isfinite(value) else f"{100 * value:+.1f}"


def _number(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.2f}"


def p_value(value: float) -> str:
    """A p-value: three decimals, or scientific below 0.001."""
    if not np.isfinite(value):
        return "–"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def _p_cell(row: pd.Series) -> str:
    """Holm-corrected p, or 'sep.' where the samples separate completely (every member on one side
    of every B_T member: p at the floor of its sample sizes, up to ties)."""
    if not np.isfinite(row["p_vs_B_T"]):
        return "–"
    return "sep." if row["separated"] else p_value(row["p_holm"])


def _delta_cell(row: pd.Series) -> str:
    if "frontier_delta" not in row or not np.isfinite(row["frontier_delta"]):
        return "–"
    return f"{points(row['frontier_delta'])} [{points(row['frontier_delta_lo'])}, {points(row['frontier_delta_hi'])}]"


def markdown_table(summary: pd.DataFrame) -> str:
    """The paper-style table: accuracy per epoch (mean ± std, CI), Δ vs the frontier, p vs B_T
    (Holm), ensembles, novelty (distance, its ratio to the zoo's spacing, mistake overlaps)."""
    epochs = sorted(summary["epoch"].unique())
    span = "/".join(map(str, epochs))
    head = (["method", "hyper-rep", "models (ep. " + span + ")"] + [f"acc. epoch {e} (%)" for e in epochs]
            + [f"Δ vs frontier, pp [95 % CI] (ep. {span})", f"p vs B_T, Holm (ep. {span})", f"ensemble (ep. {span}, %)",
               "dist. to train models at anchor epochs / to any zoo checkpoint (× zoo spacing)", "IoU nearest / max", "invalid"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, group in summary.groupby("method", sort=False):
        group = group.set_index("epoch")
        cells = [method, group["hyperrep"].iloc[0], "/".join(str(int(group.loc[e, "models"])) for e in epochs)]
        for e in epochs:
            r = group.loc[e]
            cells.append(f"{percent(r['mean'])} ± {percent(r['std'])} [{percent(r['ci_low'])}, {percent(r['ci_high'])}]")
        cells.append(" / ".join(_delta_cell(group.loc[e]) for e in epochs))
        cells.append(" / ".join(_p_cell(group.loc[e]) for e in epochs))
        cells.append(" / ".join(percent(group.loc[e, "ensemble_mean"]) for e in epochs))
        first = group.iloc[0]
        ratio = f" (×{first['distance_ratio']:.1f})" if np.isfinite(first.get("distance_ratio", np.nan)) else ""
        train = first.get("distance_train_median", np.nan)
        cells.append(f"{_number(train)} / {_number(first['distance_median'])}{ratio}")
        cells.append(f"{_number(first['iou_median'])} / {_number(first.get('iou_max_median', np.nan))}")
        cells.append(str(int(group["invalid"].max())))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readings(summary: pd.DataFrame, zoo_spacing: float) -> str:
    """One generated sentence per method, from the table's numbers only: distance, mistake
    overlap and Δ against the frontier with its CI, zero-shot and after the last epoch."""
    if "frontier_delta" not in summary:
        return ""
    epochs = sorted(summary["epoch"].unique())
    last = epochs[-1]
    lines = [f"{READINGS_START} (Δ: accuracy minus the frontier's at the same zero-shot distance, "
             f"in percentage points with its 95 % CI; the zoo's own median nearest-neighbour distance is {zoo_spacing:.2f}):"]
    for method, group in summary[summary["kind"] != "frontier"].groupby("method", sort=False):
        group = group.set_index("epoch")
        zero, end = group.loc[epochs[0]], group.loc[last]
        if not np.isfinite(zero["distance_median"]):  # recorded accuracies only (no weights): nothing to read
            continue
        text = (f"- {method}: distance {zero['distance_median']:.2f} (×{zero['distance_ratio']:.1f}), largest mistake "
                f"overlap {zero['iou_max_median']:.2f}; zero-shot Δ {_delta_cell(zero)}: {verdict(zero['frontier_delta_lo'], zero['frontier_delta_hi'])}")
        if last != epochs[0]:
            text += (f"; after {last} epochs ({int(end['models'])} models) Δ {_delta_cell(end)}: "
                     f"{verdict(end['frontier_delta_lo'], end['frontier_delta_hi'])}")
        lines.append(text + ".")
    return "\n".join(lines)


def write_report(results: list[MethodResult], summary: pd.DataFrame, out: Path, header: str,
                 frontier: Frontier | None = None, zoo_spacing: float = float("nan"),
                 budgets: tuple[pd.DataFrame, pd.DataFrame] | None = None) -> None:
    """report.md, report.csv, members.csv, novelty.csv, report.png (and with a frontier:
    frontier.csv and frontier.png; with step budgets: budgets.csv and budget_differences.csv) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.csv", lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6g"))
    members, novelty = [], []
    for r in results:
        frame = pd.DataFrame(np.where(r.evaluated, r.accuracy, np.nan), columns=[f"acc_epoch_{e}" for e in r.epochs])
        members.append(frame.assign(method=r.label, member=np.arange(len(frame))))
        novelty.append(r.novelty.assign(method=r.label, member=np.arange(len(r.novelty))))
    atomic_write(out / "members.csv", lambda tmp: pd.concat(members).to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(out / "novelty.csv", lambda tmp: pd.concat(novelty).to_csv(tmp, index=False, float_format="%.6g"))
    table_rows = summary[summary["kind"] != "frontier"]
    shown = [r for r in results if r.kind != "frontier"]
    plot_report(shown, out / "report.png")
    text = header + "\n\n" + markdown_table(table_rows)
    if frontier is not None:
        atomic_write(out / "frontier.csv", lambda tmp: frontier.table().to_csv(tmp, index=False, float_format="%.6g"))
        plot_frontier(frontier, table_rows, out / "frontier.png")
        text += "\n\n" + readings(table_rows, zoo_spacing) + "\n\n![accuracy vs distance: the frontier](frontier.png)"
    if budgets is not None:
        table, differences = budgets
        atomic_write(out / "budgets.csv", lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"))
        atomic_write(out / "budget_differences.csv", lambda tmp: differences.to_csv(tmp, index=False, float_format="%.6g"))
        text += ("\n\n## " + BUDGETS_TITLE + "\n\n" + BUDGETS_NOTE + "\n\n" + budget_markdown(table, differences))
    text += "\n\n![accuracy per method](report.png)\n"
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(text))


BUDGETS_TITLE = "Guided latent steps vs weight steps at equal budgets"
BUDGETS_NOTE = ("Each refinement starts from the same S_KDE indep. samples (or, for 'weights from anchors', from the "
                "anchors' weights) and takes the budget's Adam steps on the same training images, at the step size the "
                "validation images chose (tuning.csv). 'guided then weights' spends half the budget on latent steps and "
                "half on weight steps. Δ is against the frontier at the same epoch; a difference is of two Δ, with a "
                "bootstrap CI paired over the shared starts and sharing every resample of the frontier's references. "
                "Seconds per model are wall-clock on this machine, decoding included.")


def readme_block(report_md: Path | str, readme_dir: Path | str) -> str:
    """What the README shows between its report markers: report.md's table, its generated
    readings and the frontier plot (linked relative to `readme_dir`)."""
    report_md = Path(report_md)
    lines = report_md.read_text().splitlines()
    block = [line for line in lines if line.startswith("|")]
    if any(line.startswith(READINGS_START) for line in lines):
        first = next(i for i, line in enumerate(lines) if line.startswith(READINGS_START))
        rest = lines[first + 1:]
        block += ["", lines[first], *rest[: next((i for i, line in enumerate(rest) if not line.startswith("- ")), len(rest))]]
    plot = report_md.parent / "frontier.png"
    if any(line.startswith("![accuracy vs distance") for line in lines):
        link = Path(os.path.relpath(plot, Path(readme_dir))).as_posix()
        block += ["", f"![accuracy vs distance: the frontier]({link})"]
    return "\n".join(block)


def update_readme(readme: Path | str, report_md: Path | str) -> None:
    """Replace what lies between the README's report markers with `readme_block` of `report_md`."""
    readme, report_md = Path(readme), Path(report_md)
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no '{README_START} ... {README_END}' markers to write the table between")
    head = text[: text.index("\n", start) + 1]
    block = readme_block(report_md, readme.parent)
    atomic_write(readme, lambda tmp: tmp.write_text(head + block + "\n" + text[end:]))


def readme_report_block(readme: Path | str) -> str:
    """The text between the README's report markers (without the marker lines)."""
    text = Path(readme).read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no '{README_START} ... {README_END}' markers")
    return text[text.index("\n", start) + 1: end].rstrip("\n")


README_START = "<!-- report:start"


README_END = "<!-- report:end -->"


def budget_markdown(table: pd.DataFrame, differences: pd.DataFrame) -> str:
    """The two tables of report.md's step-budget section, in percentage points."""
    lines = ["| method | budget (steps × images) | lr (chosen on validation) | epoch | accuracy (%) | Δ vs frontier, pp [95 % CI] | s / model |",
             "|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['method']} | {r['budget']} × {r['images']} | {r['step_size']:g} | {r['epoch']} | "
                     f"{100 * r['accuracy']:.1f} | {points(r['delta'])} [{points(r['delta_lo'])}, {points(r['delta_hi'])}] | "
                     f"{r['seconds_per_model']:.3f} |")
    lines += ["", "| comparison | budget | epoch | Δ difference, pp [95 % CI] | verdict |", "|---|---|---|---|---|"]
    for _, r in differences.iterrows():
        low, high = r["difference_lo"], r["difference_hi"]
        verdict = ("–" if not np.isfinite(low) else f"{r['a']} ahead" if low > 0 else f"{r['b']} ahead" if high < 0
                   else "not distinguishable")
        lines.append(f"| {r['comparison']} | {r['budget']} | {r['epoch']} | {points(r['difference'])} [{points(low)}, {points(high)}] | {verdict} |")
    return "\n".join(lines)
