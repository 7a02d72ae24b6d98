"""The paper-style comparison of sampling methods and baselines, and population export.

`run_report` builds every population (samplers on the top-30 % train anchors, B_T, B_F, noise
around the anchors, reconstructed anchors, and samplers of the hyper-representation trained
without LWLN), fine-tunes each for `max(fine_tune_epochs)` epochs with the zoo's optimiser
settings, and summarises the test accuracy at each of `fine_tune_epochs`:

    mean ± std, bootstrap 95 % CI of the mean, Mann-Whitney U p-value against B_T,
    accuracy of disjoint 5-member ensembles, and (zero-shot) novelty: distance to the
    nearest zoo model in any neuron order (plain, canonical, matched) and the misclassification IoU with it.

It writes report.md, report.csv (one row per method and epoch), members.csv (every member's
curve), novelty.csv and report.png. `export_population` writes a population as
weights.safetensors + samples.csv, or as a zoo directory that Zoo.load reads.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from hyperrep.data import ImageSet, zoo_dataset_rule
from hyperrep.evaluate import ensemble_accuracies, evaluate_weights, fine_tune, zoo_training_settings
from hyperrep.files import atomic_write, write_json, write_tensors
from hyperrep.novelty import novelty_table
from hyperrep.sampling import (
    SAMPLERS,
    Population,
    anchor_weights,
    make_sampler,
    noise_baseline,
    reconstruction_baseline,
    sample_population,
    scratch_baseline,
    select_rows,
    top_fraction,
    zoo_baseline,
)
from hyperrep.zoo import Zoo, make_manifest, split_model_ids

BASELINE = "B_T"


@dataclass
class ReportConfig:
    """What the report computes; the defaults run in about ten minutes on a 2-core CPU."""

    models_per_method: int = 20
    test_images: int = 5_000  # the first N images of the test split
    fine_tune_images: int = 2_000  # seeded draw from the training part of the train split
    fine_tune_epochs: list[int] = field(default_factory=lambda: [0, 1, 5])
    anchor_fraction: float = 0.3  # top 30 % of the hyper-representation's train rows
    samplers: list[str] = field(default_factory=lambda: [
        "uniform_unit", "uniform", "kde_legacy", "kde", "kde_multivariate", "gaussian", "gmm", "neigh"])
    ablation_samplers: list[str] = field(default_factory=lambda: ["kde_legacy", "kde", "gaussian"])
    noise_sigmas: list[float] = field(default_factory=lambda: [0.02, 0.04])
    ensemble_size: int = 5
    bootstrap_resamples: int = 2_000
    seed: int = 42

    def validate(self) -> None:
        unknown = [s for s in self.samplers + self.ablation_samplers if s not in SAMPLERS]
        if unknown:
            raise ValueError(f"unknown samplers {unknown}; known: {', '.join(SAMPLERS)}")
        if self.models_per_method < 2 or min(self.fine_tune_epochs) < 0:
            raise ValueError("models_per_method must be >= 2 and fine_tune_epochs >= 0")


@dataclass
class MethodResult:
    """One population's curves, ensembles and zero-shot novelty."""

    label: str
    kind: str  # "sampler" or "baseline"
    hyperrep: str  # "LWLN", "no LWLN" or "-" (no autoencoder involved)
    epochs: list[int]
    accuracy: np.ndarray  # [M, epochs]
    finite: np.ndarray  # [M, epochs]
    ensembles: dict[int, np.ndarray]  # epoch -> ensemble accuracies
    novelty: pd.DataFrame  # one row per member (zero-shot)


# -- data -------------------------------------------------------------------------------------


def load_test_images(zoo: Zoo, n: int, data_dir: Path | str | None = None) -> ImageSet:
    """The first `n` images of the test split, normalised as the zoo's dataset (hyperrep.data's rule)."""
    return zoo_dataset_rule(zoo.manifest, data_dir).first_images(n, data_dir)


def load_fine_tune_images(zoo: Zoo, n: int, seed: int, data_dir: Path | str | None = None) -> ImageSet:
    """`n` images (seeded) of the training part of the train split, as the zoo build split it."""
    return zoo_dataset_rule(zoo.manifest, data_dir).training_images(n, seed, data_dir)


# -- populations ------------------------------------------------------------------------------


def anchor_rows(table: pd.DataFrame, fraction: float) -> np.ndarray:
    """The paper's anchors: the top `fraction` of the train split's (model, epoch) rows by test accuracy."""
    return top_fraction(table, fraction, among=select_rows(table, split="train"))


def sampler_label(name: str, fraction: float) -> str:
    """'S_KDE (kde_legacy, top 30%)': the paper's name, the registry name, the anchors."""
    spec = SAMPLERS[name]
    return f"{spec.paper_name} ({name})" if name == "uniform_unit" else f"{spec.paper_name} ({name}, top {fraction:.0%})"


def build_populations(
    hyperrep, zoo: Zoo, config: ReportConfig, *, tag: str = "LWLN", baselines: bool = True,
    samplers: list[str] | None = None,
) -> tuple[list[tuple[Population, str, str]], list[str]]:
    """(population, kind, hyper-rep tag) for every sampler (and the baselines) of one hyper-rep,
    and a note for each sampler skipped because the anchors are fewer than it needs."""
    n, seed = config.models_per_method, config.seed
    table = hyperrep.latent_table
    rows = anchor_rows(table, config.anchor_fraction)
    anchors = hyperrep.latents[torch.as_tensor(rows)]
    weights = anchor_weights(zoo, table, rows)
    info = table.iloc[rows].reset_index(drop=True)
    suffix = "" if tag == "LWLN" else f" [{tag}]"
    out, skipped = [], []
    for name in samplers if samplers is not None else config.samplers:
        if len(rows) < SAMPLERS[name].min_anchors:
            skipped.append(f"{name}{suffix} (needs {SAMPLERS[name].min_anchors} anchors, has {len(rows)})")
            continue
        population = sample_population(hyperrep.model, make_sampler(name), anchors, n, seed)
        population.label = sampler_label(name, config.anchor_fraction) + suffix
        out.append((population, "sampler", tag))
    recon = reconstruction_baseline(hyperrep.model, weights, n, seed, anchor_info=info)
    recon.label = f"reconstructed (top {config.anchor_fraction:.0%}){suffix}"
    out.append((recon, "baseline", tag))
    if baselines:
        out.append((scratch_baseline(zoo, n, seed), "baseline", "-"))
        out.append((zoo_baseline(zoo, n, seed), "baseline", "-"))
        for sigma in config.noise_sigmas:
            noisy = noise_baseline(weights, sigma, n, seed, anchor_info=info)
            noisy.label = f"noise σ={sigma:g} (top {config.anchor_fraction:.0%})"
            out.append((noisy, "baseline", "-"))
    return out, skipped


def evaluate_method(population: Population, kind: str, tag: str, zoo: Zoo, train: ImageSet, test: ImageSet,
                    config: ReportConfig, reference: tuple[torch.Tensor, pd.DataFrame]) -> MethodResult:
    """Fine-tune, evaluate at the report epochs, ensembles per epoch, zero-shot novelty against
    `reference` (zoo weights [R, P] and their model_id/epoch rows)."""
    arch, activation = zoo.architecture, zoo.activation
    epochs = sorted(set(config.fine_tune_epochs) | {0})  # zero-shot is always reported (and used for novelty)
    curves = fine_tune(arch, activation, population.weights, train, test, epochs=max(epochs),
                       settings=zoo_training_settings(zoo), seed=config.seed, eval_epochs=epochs, keep_predictions=True)
    ensembles = {e: ensemble_accuracies(arch, activation, curves.weights[:, i], test, size=config.ensemble_size,
                                        seed=config.seed, finite=curves.finite[:, i])
                 for i, e in enumerate(epochs)}
    start = curves.evaluation(0)
    novelty = novelty_table(arch, activation, population.weights, start.predictions, reference[0], reference[1], test)
    return MethodResult(population.label, kind, tag, epochs, curves.accuracy, curves.finite, ensembles, novelty)


# -- statistics -------------------------------------------------------------------------------


def bootstrap_ci(values: np.ndarray, resamples: int, seed: int = 42) -> tuple[float, float]:
    """95 % bootstrap CI of the mean (scipy, BCa), as the paper's statistics (random_state 42)."""
    from scipy.stats import bootstrap

    values = values[np.isfinite(values)]
    if len(values) < 2 or np.ptp(values) == 0:
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, mean
    result = bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=0.95, random_state=seed)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mann_whitney_p(values: np.ndarray, baseline: np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value of two samples (finite values only)."""
    from scipy.stats import mannwhitneyu

    a, b = values[np.isfinite(values)], baseline[np.isfinite(baseline)]
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)


def summarise(results: list[MethodResult], config: ReportConfig) -> pd.DataFrame:
    """One row per (method, epoch): accuracy statistics, p vs B_T, ensembles, novelty."""
    baseline = next((r for r in results if r.label == BASELINE), None)
    rows = []
    for result in results:
        for i, epoch in enumerate(result.epochs):
            values = result.accuracy[:, i]
            finite = values[np.isfinite(values)]
            low, high = bootstrap_ci(values, config.bootstrap_resamples, config.seed)
            p = mann_whitney_p(values, baseline.accuracy[:, i]) if baseline is not None and result is not baseline else float("nan")
            ensembles = result.ensembles.get(epoch, np.array([]))
            rows.append({
                "method": result.label, "kind": result.kind, "hyperrep": result.hyperrep, "epoch": epoch,
                "models": len(values), "invalid": int(len(values) - len(finite)),
                "mean": finite.mean() if len(finite) else np.nan, "std": finite.std(ddof=1) if len(finite) > 1 else np.nan,
                "median": np.median(finite) if len(finite) else np.nan, "ci_low": low, "ci_high": high,
                "p_vs_B_T": p, "ensemble_mean": ensembles.mean() if len(ensembles) else np.nan,
                "ensembles": len(ensembles),
                "distance_median": result.novelty["distance"].median(),
                "distance_min": result.novelty["distance"].min(),
                "iou_median": result.novelty["misclassification_iou"].median(),
                "nearest_distinct": int(result.novelty.loc[result.novelty["nearest_model_id"] >= 0, "nearest_model_id"].nunique()),
            })
    return pd.DataFrame(rows)


# -- writing ----------------------------------------------------------------------------------


def _pct(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{100 * value:.1f}"


def _p(value: float) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def markdown_table(summary: pd.DataFrame) -> str:
    """The paper-style table: accuracy per epoch (mean ± std, CI), p vs B_T, ensembles, novelty."""
    epochs = sorted(summary["epoch"].unique())
    head = (["method", "hyper-rep"] + [f"acc. epoch {e} (%)" for e in epochs] + [f"p vs B_T (ep. {'/'.join(map(str, epochs))})"]
            + [f"ensemble (ep. {'/'.join(map(str, epochs))}, %)", "dist. to nearest zoo model", "misclass. IoU", "invalid"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, group in summary.groupby("method", sort=False):
        group = group.set_index("epoch")
        cells = [method, group["hyperrep"].iloc[0]]
        for e in epochs:
            r = group.loc[e]
            cells.append(f"{_pct(r['mean'])} ± {_pct(r['std'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]")
        cells.append(" / ".join(_p(group.loc[e, "p_vs_B_T"]) for e in epochs))
        cells.append(" / ".join(_pct(group.loc[e, "ensemble_mean"]) for e in epochs))
        first = group.iloc[0]
        cells.append(f"{first['distance_median']:.2f} (min {first['distance_min']:.2f})")
        cells.append(f"{first['iou_median']:.2f}")
        cells.append(str(int(group["invalid"].max())))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_report(results: list[MethodResult], path: Path) -> None:
    """Zero-shot accuracy per method (box plot) and mean accuracy over fine-tuning epochs (95 % CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(17, 7), gridspec_kw={"width_ratios": [1.2, 1]})
    labels = [r.label for r in results]
    zero_shot = [r.accuracy[:, 0][np.isfinite(r.accuracy[:, 0])] * 100 for r in results]
    left.boxplot(zero_shot, vert=False, tick_labels=labels, showmeans=True)
    left.invert_yaxis()
    left.set_xlabel(f"test accuracy at fine-tuning epoch {results[0].epochs[0]} (%)")
    left.set_title("zero-shot accuracy per method")
    colours = plt.get_cmap("tab20")
    for i, result in enumerate(results):
        means = np.nanmean(result.accuracy, axis=0) * 100
        cis = np.array([bootstrap_ci(result.accuracy[:, j], 500) for j in range(len(result.epochs))]) * 100
        colour = "black" if result.label == BASELINE else colours(i % 20)
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


def write_report(results: list[MethodResult], summary: pd.DataFrame, out: Path, header: str) -> None:
    """report.md, report.csv, members.csv, novelty.csv and report.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "report.csv", lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6g"))
    members, novelty = [], []
    for r in results:
        frame = pd.DataFrame(r.accuracy, columns=[f"acc_epoch_{e}" for e in r.epochs])
        members.append(frame.assign(method=r.label, member=np.arange(len(frame))))
        novelty.append(r.novelty.assign(method=r.label, member=np.arange(len(r.novelty))))
    atomic_write(out / "members.csv", lambda tmp: pd.concat(members).to_csv(tmp, index=False, float_format="%.6g"))
    atomic_write(out / "novelty.csv", lambda tmp: pd.concat(novelty).to_csv(tmp, index=False, float_format="%.6g"))
    plot_report(results, out / "report.png")
    text = header + "\n\n" + markdown_table(summary) + "\n\n![accuracy per method](report.png)\n"
    atomic_write(out / "report.md", lambda tmp: tmp.write_text(text))


_WORKER: dict = {}


def _worker_init(zoo_path: str, train: ImageSet, test: ImageSet, config: ReportConfig, reference) -> None:
    """One thread per process: many small ops run best that way, and no thread ever waits for
    a sibling that a busy machine has descheduled."""
    torch.set_num_threads(1)
    _WORKER.update(zoo=Zoo.load(zoo_path), train=train, test=test, config=config, reference=reference)


def _worker_run(item: tuple[Population, str, str]) -> MethodResult:
    w = _WORKER
    return evaluate_method(*item, w["zoo"], w["train"], w["test"], w["config"], w["reference"])


def evaluate_all(
    populations: list[tuple[Population, str, str]], zoo: Zoo, train: ImageSet, test: ImageSet,
    config: ReportConfig, *, workers: int = 1, progress: Callable[[int, int], None] | None = None,
) -> list[MethodResult]:
    """`evaluate_method` for every population, in `workers` single-threaded processes (1: here)."""
    reference = zoo.samples()
    results = []
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_worker_init,
                                          initargs=(str(zoo.path), train, test, config, reference)) as pool:
            for result in pool.imap(_worker_run, populations):
                results.append(result)
                if progress is not None:
                    progress(len(results), len(populations))
        return results
    for item in populations:
        results.append(evaluate_method(*item, zoo, train, test, config, reference))
        if progress is not None:
            progress(len(results), len(populations))
    return results


def run_report(
    hyperrep_dir: Path | str, out: Path | str, *, ablation_dir: Path | str | None = None,
    config: ReportConfig | None = None, data_dir: Path | str | None = None, workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Build, fine-tune and evaluate every population; write the report files; return the summary.

    On a CPU the populations are spread over `workers` processes (default: one per core); on an
    accelerator (hyperrep.device.pick_device) they run here, one after another."""
    from hyperrep.device import pick_device
    from hyperrep.model import load_hyperrep

    config = config or ReportConfig()
    config.validate()
    started = time.time()
    device = pick_device()
    hyperrep = load_hyperrep(hyperrep_dir)
    zoo = Zoo.load(hyperrep.zoo_path)
    train = load_fine_tune_images(zoo, config.fine_tune_images, config.seed, data_dir)
    test = load_test_images(zoo, config.test_images, data_dir)
    populations, skipped = build_populations(hyperrep, zoo, config)
    if ablation_dir is not None:
        more, more_skipped = build_populations(load_hyperrep(ablation_dir), zoo, config, tag="no LWLN",
                                               baselines=False, samplers=config.ablation_samplers)
        populations, skipped = populations + more, skipped + more_skipped
    populations.sort(key=lambda item: item[0].label != BASELINE)  # B_T first: every p-value refers to it
    if device.type == "cpu":
        workers = workers or os.cpu_count() or 1
    else:
        workers, train, test = 1, train.to(device), test.to(device)
    results = evaluate_all(populations, zoo, train, test, config, workers=workers, progress=progress)
    summary = summarise(results, config)
    header = report_header(hyperrep, ablation_dir, zoo, config, time.time() - started, skipped)
    write_report(results, summary, Path(out), header)
    write_json(Path(out) / "report_config.json", {**asdict(config), "hyperrep": str(hyperrep_dir),
                                                  "ablation": str(ablation_dir) if ablation_dir else None,
                                                  "device": str(device), "workers": workers,
                                                  "seconds": round(time.time() - started, 1)})
    return summary


def report_header(hyperrep, ablation_dir, zoo: Zoo, config: ReportConfig, seconds: float, skipped: list[str]) -> str:
    epochs = "/".join(map(str, sorted(set(config.fine_tune_epochs) | {0})))
    settings = zoo_training_settings(zoo)
    return "\n".join([
        "# Sampling methods vs baselines",
        "",
        f"Hyper-representation `{hyperrep.path}` (latent dim {hyperrep.model.latent_dim}) of zoo `{zoo.name}` "
        f"({zoo.n_models} {zoo.architecture.name} models, {zoo.activation})"
        + (f"; ablation without LWLN `{ablation_dir}`." if ablation_dir else "."),
        f"{config.models_per_method} models per method, seed {config.seed}; anchors: top "
        f"{config.anchor_fraction:.0%} of the hyper-representation's train rows by test accuracy. "
        f"Fine-tuned on {config.fine_tune_images} training images ({settings.optimizer}, lr {settings.lr:.2g}, "
        f"batch {settings.batch_size}), evaluated on the first {config.test_images} test images at epochs {epochs}.",
        "Baselines: B_T = fresh initialisations drawn as the zoo's build drew them (its mix of init types); "
        "B_F = train-split zoo models at the last saved epoch; noise = anchor weights + σ·N(0, 1); reconstructed = "
        "decode(encode(anchor)). Samplers are named by the paper's name and the registry name "
        "(`hyperrep.sampling.SAMPLERS`); kde_legacy is the published S_KDE (near-copies of anchors).",
        "Cells: mean ± std [bootstrap 95 % CI of the mean] of test accuracy in %. p: two-sided Mann-Whitney U "
        f"against B_T at the same epoch. Ensembles: mean accuracy of disjoint {config.ensemble_size}-member "
        "ensembles (averaged softmax). Distance: median (and smallest) L2 distance of the zero-shot weights to the "
        "nearest zoo model (any saved epoch, any neuron order: plain, canonical, or matched layer by layer); IoU: "
        "median overlap of misclassified test images with that model (1 = the same mistakes). Invalid: members "
        "with NaN/inf weights or logits, excluded from the statistics.",
        *([f"Skipped samplers: {'; '.join(skipped)}."] if skipped else []),
        f"Generated by `hyperrep report` in {seconds / 60:.1f} min.",
    ])


# -- exporting a population -------------------------------------------------------------------


def choose_anchors(table: pd.DataFrame, spec: str | list[int], epochs: list[int] | None = None) -> np.ndarray:
    """Anchor rows from a spec: "top30" (any topNN), "all" (the train split), or model ids (at
    `epochs`, default each id's last embedded epoch)."""
    if isinstance(spec, str):
        match = re.fullmatch(r"top(\d+(?:\.\d+)?)", spec)
        if match:
            return anchor_rows(table, float(match.group(1)) / 100)
        if spec == "all":
            return select_rows(table, split="train")
        raise ValueError(f"anchors must be topNN (e.g. top30), all, or model ids; got {spec!r}")
    rows = select_rows(table, model_ids=spec, epochs=epochs)
    if epochs is None:  # each model at its last embedded epoch
        picked = table.iloc[rows]
        rows = rows[(picked["epoch"] == picked.groupby("model_id")["epoch"].transform("max")).to_numpy()]
    return rows


def export_population(population: Population, out: Path | str, *, fmt: str = "safetensors", zoo: Zoo | None = None,
                      test: ImageSet | None = None) -> Path:
    """Write a population: `safetensors` = weights.safetensors + samples.csv (with test metrics
    when `test` is given); `zoo` = a zoo directory (one saved epoch 0) that Zoo.load reads."""
    out = Path(out)
    members = population.members.copy()
    evaluation = None
    if test is not None and zoo is not None:
        evaluation = evaluate_weights(zoo.architecture, zoo.activation, population.weights, test)
        members["test_acc"], members["test_loss"] = evaluation.accuracy, evaluation.loss
    if fmt == "safetensors":
        tensors = {"weights": population.weights}
        if population.latents is not None:
            tensors["latents"] = population.latents
        metadata = {"label": population.label}
        if zoo is not None:
            metadata.update(architecture=zoo.architecture.name, activation=zoo.activation, source_zoo=zoo.name)
        write_tensors(out / "weights.safetensors", tensors, metadata)
        atomic_write(out / "samples.csv", lambda tmp: members.to_csv(tmp, index=False))
        return out
    if fmt != "zoo":
        raise ValueError(f"format must be 'safetensors' or 'zoo', got {fmt!r}")
    if zoo is None or evaluation is None:
        raise ValueError("a zoo export needs the source zoo and test images (its models.parquet holds test metrics)")
    ids = list(range(len(population)))
    properties = members.assign(model_id=ids, epoch=0, train_loss=np.nan, train_acc=np.nan)
    manifest = make_manifest(
        name=f"{zoo.name}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', population.label)}", architecture=zoo.architecture.name,
        activation=zoo.activation, dataset=zoo.manifest.get("dataset", {}), epochs=[0],
        splits=split_model_ids(ids), build={"generated_from": zoo.name, "label": population.label},
    )
    Zoo(manifest, population.weights.unsqueeze(1).float(), torch.tensor(ids), properties).save(out)
    return out


README_START = "<!-- report:start"
README_END = "<!-- report:end -->"


def update_readme(readme: Path | str, report_md: Path | str) -> None:
    """Replace the table between the README's report markers with the table of `report_md`."""
    readme, report_md = Path(readme), Path(report_md)
    text = readme.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme}: no '{README_START} ... {README_END}' markers to write the table between")
    table = "\n".join(line for line in report_md.read_text().splitlines() if line.startswith("|"))
    head = text[: text.index("\n", start) + 1]
    atomic_write(readme, lambda tmp: tmp.write_text(head + table + "\n" + text[end:]))
