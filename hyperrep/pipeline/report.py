"""The paper-style comparison of sampling methods and baselines, and the accuracy–novelty frontier.

`run_report` builds every population on the top-30 % train anchors: the samplers, the guided
sampler and its equal-cost weight-space refinement, reconstructed anchors, B_F (drawn from the
anchor pool), today's re-trained B_T, the samplers of the hyper-representation trained without
LWLN, and the frontier's reference populations (hyperrep.evaluation.frontier: the anchors, noise at a sweep
of σ, averages of k anchors, a per-coordinate Gaussian). Every member is evaluated zero-shot; the
first `fine_tune_models` of each population are fine-tuned for `max(fine_tune_epochs)` epochs
with the zoo's optimiser settings. B_T from the zoo's own test-split trajectories (trained from
scratch, the paper's B_T) is read at the same epoch offsets when the zoo saved them. Per method
and epoch it reports:

    mean ± std, bootstrap 95 % CI of the mean, Mann-Whitney U p against B_T (Holm-corrected over
    the table; complete separation named as such), disjoint 5-member ensembles, zero-shot novelty
    (median distance to the nearest zoo model in any neuron order, that over the zoo's own
    median nearest-neighbour distance, the largest mistake overlap with any zoo model), and
    Δ = accuracy − the frontier's at the same (zero-shot) distance, with a bootstrap 95 % CI.

It writes report.md (header, table, readings), report.csv (one row per method and epoch),
members.csv, novelty.csv, frontier.csv, report.png and frontier.png. The anchors, the sampled
populations and the fine-tuning are the experiment pipeline's (hyperrep.pipeline.experiment), as in the app
and `hyperrep sample`; populations are exported with hyperrep.pipeline.export.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from hyperrep.evaluation.evaluate import ensemble_accuracies
from hyperrep.evaluation.frontier import Frontier, FrontierPoint, zoo_neighbour_distances
from hyperrep.evaluation.novelty import mistake_overlap, nearest_reference, novelty_table
from hyperrep.evaluation.statistics import bootstrap_ci, holm, mann_whitney_floor, mann_whitney_p
from hyperrep.images.datasets import ImageSet
from hyperrep.io.files import write_json
from hyperrep.nets.population import Evaluation, evaluate_population
from hyperrep.paper.importing import find_zoo_folder, paper_testsplit, testsplit_accuracy_at
from hyperrep.pipeline.artifacts import PAPER, artifact_kind, compatibility, load_any_hyperrep, load_hyperrep_with_zoo
from hyperrep.pipeline.experiment import fine_tune_population
from hyperrep.pipeline.report_files import write_report
from hyperrep.pipeline.report_header import paper_note, report_header
from hyperrep.pipeline.report_populations import build_populations, frontier_references, paper_populations
from hyperrep.pipeline.report_types import (
    BASELINES,
    PAPER_B_T,
    ZOO_B_T,
    MethodResult,
    ReportConfig,
    ZooReference,
)
from hyperrep.pipeline.step_budgets import budget_table
from hyperrep.pipeline.tuning import (
    VALIDATION_COLUMN,
    ImageSplit,
    Tuning,
    load_image_split,
    train_reference,
    tune,
    validation_anchor_rows,
    with_validation_accuracy,
)
from hyperrep.runtime.device import pick_device
from hyperrep.sampling.population import Population
from hyperrep.zoo.format import Zoo, zoo_dataset_rule

# -- data -------------------------------------------------------------------------------------


def load_test_images(zoo: Zoo, n: int, data_dir: Path | str | None = None) -> ImageSet:
    """The first `n` images of the test split, normalised as the zoo's dataset (hyperrep.images.datasets's rule)."""
    return zoo_dataset_rule(zoo.manifest, data_dir).first_images(n, data_dir)


def load_fine_tune_images(zoo: Zoo, n: int, seed: int, data_dir: Path | str | None = None) -> ImageSet:
    """`n` images (seeded) of the training part of the train split, as the zoo build split it."""
    return zoo_dataset_rule(zoo.manifest, data_dir).training_images(n, seed, data_dir)


def zoo_reference(zoo: Zoo, test: ImageSet, train: tuple[torch.Tensor, pd.DataFrame] | None = None) -> ZooReference:
    """Every saved (model, epoch) of the zoo with the predictions of its distinct weight vectors
    (a shared start is evaluated once), the spacing of its train models at the last epoch, and
    `train`: the train models at the anchors' epochs (pipeline.tuning.train_reference)."""
    weights, table = zoo.samples()
    distinct = torch.unique(weights, dim=0)
    predictions = evaluate_population(zoo.architecture, zoo.activation, distinct, test, keep_predictions=True).predictions
    last = ((table["epoch"] == table["epoch"].max()) & (table["split"] == "train")).to_numpy()
    if not last.any():
        last = (table["epoch"] == table["epoch"].max()).to_numpy()
    spacing = zoo_neighbour_distances(zoo.architecture, weights[torch.from_numpy(last.copy())], table.loc[last, "model_id"].to_numpy(),
                                      weights, table["model_id"].to_numpy())
    return ZooReference(weights, table, predictions, spacing, *(train or (None, None)))


# -- populations ------------------------------------------------------------------------------


def evaluate_method(population: Population, kind: str, tag: str, zoo: Zoo, train: ImageSet, test: ImageSet,
                    config: ReportConfig, reference: ZooReference) -> MethodResult:
    """Evaluate every member zero-shot (with novelty against `reference`), fine-tune the first
    `fine_tune_models`, evaluate them at the report epochs, ensembles of those members per epoch."""
    arch, activation, epochs = zoo.architecture, zoo.activation, config.epochs
    m = len(population)
    k = m if config.fine_tune_models is None else min(config.fine_tune_models, m)
    start = evaluate_population(arch, activation, population.weights, test, keep_predictions=True)
    accuracy, finite = np.full((m, len(epochs)), np.nan), np.zeros((m, len(epochs)), dtype=bool)
    evaluated = np.zeros((m, len(epochs)), dtype=bool)
    accuracy[:, 0], finite[:, 0], evaluated[:, 0] = start.accuracy, start.finite, True
    trajectory = {0: population.weights[:k]}
    later = epochs[1:]
    if later:
        curves = fine_tune_population(population.weights[:k], zoo, train, test, max(later), config.seed,
                                      eval_epochs=later)
        accuracy[:k, 1:], finite[:k, 1:], evaluated[:k, 1:] = curves.accuracy, curves.finite, True
        trajectory |= {e: curves.weights[:, i] for i, e in enumerate(later)}
    ensembles = {e: ensemble_accuracies(arch, activation, trajectory[e], test, size=config.ensemble_size,
                                        seed=config.seed, finite=finite[:k, i])
                 for i, e in enumerate(epochs)}
    novelty = zero_shot_novelty(zoo, population.weights, start, test, reference)
    return MethodResult(population.label, kind, tag, epochs, accuracy, finite, ensembles, novelty, evaluated)


def zero_shot_novelty(zoo: Zoo, weights: torch.Tensor, start: Evaluation, test: ImageSet,
                      reference: ZooReference) -> pd.DataFrame:
    """novelty.novelty_table (nearest zoo model, any checkpoint, and the IoU with it), the largest
    mistake overlap with any zoo model (`iou_max`), and the permutation-aware distance to the
    nearest train model at the anchors' epochs (`distance_train`, `nearest_train_epoch`)."""
    novelty = novelty_table(zoo.architecture, zoo.activation, weights, start.predictions, reference.weights,
                            reference.table, test)
    novelty["iou_max"] = mistake_overlap(start.predictions, reference.predictions, test.labels)[0]
    if reference.train_weights is not None:
        distance, index = nearest_reference(zoo.architecture, weights, reference.train_weights)
        epochs = reference.train_table["epoch"].to_numpy()
        novelty["distance_train"] = distance
        novelty["nearest_train_epoch"] = np.where(index >= 0, epochs[np.maximum(index, 0)], -1)
    else:
        novelty["distance_train"], novelty["nearest_train_epoch"] = novelty["distance"], novelty["nearest_epoch"]
    return novelty


def zoo_test_trajectories(zoo: Zoo, test: ImageSet, config: ReportConfig, reference: ZooReference) -> MethodResult | None:
    """The paper's B_T: the zoo's test-split models, trained from scratch, read at the report's
    epochs; None when the zoo has no test split or did not save every report epoch."""
    ids = list(zoo.splits.get("test") or [])
    if not ids or not set(config.epochs) <= set(zoo.epochs):
        return None
    arch, activation = zoo.architecture, zoo.activation
    rows = torch.tensor(zoo.rows_of(ids))
    evaluations = [evaluate_population(arch, activation, zoo.weights[rows, zoo.epoch_position(e)], test,
                                    keep_predictions=e == config.epochs[0]) for e in config.epochs]
    accuracy = np.stack([e.accuracy for e in evaluations], axis=1)
    finite = np.stack([e.finite for e in evaluations], axis=1)
    ensembles = {e: ensemble_accuracies(arch, activation, zoo.weights[rows, zoo.epoch_position(e)], test,
                                        size=config.ensemble_size, seed=config.seed, finite=finite[:, i])
                 for i, e in enumerate(config.epochs)}
    novelty = zero_shot_novelty(zoo, zoo.weights[rows, zoo.epoch_position(config.epochs[0])], evaluations[0], test, reference)
    return MethodResult(ZOO_B_T, "baseline", "-", config.epochs, accuracy, finite, ensembles, novelty)


# -- a paper hyper-representation folder's own rows ---------------------------------------------


def recorded_test_split(hyperrep_dir: Path | str, config: ReportConfig) -> tuple[MethodResult | None, str | None]:
    """The paper's B_T as its zoo_testsplit.pt recorded it (zoos/<dataset>/ beside the folder): the
    test models' accuracy at each report epoch, on the whole test set (the file has no weights, so
    no novelty or ensembles). (None, why) when the file or one of the epochs is missing."""
    folder = find_zoo_folder(hyperrep_dir)
    if folder is None:
        return None, f"{PAPER_B_T} (no zoos/<dataset>/zoo_testsplit.pt beside {hyperrep_dir})"
    table = paper_testsplit(folder)
    missing = sorted(set(config.epochs) - set(table["epoch"].astype(int)))
    if missing:
        return None, f"{PAPER_B_T} ({folder} records no accuracy at epochs {missing})"
    columns = [testsplit_accuracy_at(table, epoch) for epoch in config.epochs]
    accuracy = np.full((max(len(c) for c in columns), len(columns)), np.nan)
    evaluated = np.zeros(accuracy.shape, dtype=bool)
    for i, values in enumerate(columns):  # one column per epoch; rows need not be the same model
        accuracy[: len(values), i], evaluated[: len(values), i] = values, True
    novelty = pd.DataFrame({"distance": np.nan, "nearest_model_id": -1, "nearest_epoch": -1,
                            "misclassification_iou": np.nan, "iou_max": np.nan}, index=range(len(accuracy)))
    return MethodResult(PAPER_B_T, "baseline", "-", config.epochs, accuracy, np.isfinite(accuracy), {}, novelty,
                        evaluated), None


# -- statistics -------------------------------------------------------------------------------


def summarise(results: list[MethodResult], config: ReportConfig, *, frontier: Frontier | None = None,
              zoo_spacing: float = float("nan")) -> pd.DataFrame:
    """One row per (method, epoch): accuracy statistics, p vs B_T (raw and Holm-corrected, and
    whether the two samples separate completely), ensembles, novelty, Δ against the frontier."""
    baseline = next((r for name in BASELINES for r in results if r.label == name), None)
    family = max(1, sum(r.kind == "sampler" for r in results))  # the claims about generators
    rows = []
    for result in results:
        train_distance = result.novelty.get(FRONTIER_DISTANCE, result.novelty["distance"])
        deltas = (frontier.delta(train_distance.to_numpy(), result.accuracy,
                                 resamples=config.bootstrap_resamples, seed=config.seed, family=family).set_index("epoch")
                  if frontier is not None else None)
        for i, epoch in enumerate(result.epochs):
            values = result.accuracy[result.evaluated[:, i], i]
            finite = values[np.isfinite(values)]
            low, high = bootstrap_ci(values, config.bootstrap_resamples, config.seed)
            compare = (baseline is not None and result is not baseline and result.kind != "frontier"
                       and epoch in baseline.epochs)  # the frontier's references are not in the tests' family
            j = baseline.epochs.index(epoch) if compare else 0
            reference = baseline.accuracy[baseline.evaluated[:, j], j] if compare else np.array([])
            reference = reference[np.isfinite(reference)]
            p = mann_whitney_p(finite, reference) if compare else float("nan")
            ensembles = result.ensembles.get(epoch, np.array([]))
            distance = result.novelty["distance"]
            rows.append({
                "method": result.label, "kind": result.kind, "hyperrep": result.hyperrep, "epoch": epoch,
                "models": len(values), "invalid": int(len(values) - len(finite)),
                "mean": finite.mean() if len(finite) else np.nan, "std": finite.std(ddof=1) if len(finite) > 1 else np.nan,
                "median": np.median(finite) if len(finite) else np.nan, "ci_low": low, "ci_high": high,
                "p_vs_B_T": p, "p_floor": mann_whitney_floor(len(finite), len(reference)) if compare else np.nan,
                "above_B_T": (finite.mean() > reference.mean()) if compare and len(finite) and len(reference) else np.nan,
                "separated": bool(compare and len(finite) and len(reference)
                                  and (finite.min() > reference.max() or finite.max() < reference.min())),
                "ensemble_mean": ensembles.mean() if len(ensembles) else np.nan, "ensembles": len(ensembles),
                "distance_median": distance.median(), "distance_min": distance.min(),
                "distance_train_median": train_distance.median(),
                "nearest_early_share": float(result.novelty["nearest_epoch"].between(0, 1).mean()),
                "distance_ratio": distance.median() / zoo_spacing if zoo_spacing > 0 else np.nan,
                "iou_median": result.novelty["misclassification_iou"].median(),
                "iou_max_median": result.novelty["iou_max"].median() if "iou_max" in result.novelty else np.nan,
                "nearest_distinct": int(result.novelty.loc[result.novelty["nearest_model_id"] >= 0, "nearest_model_id"].nunique()),
                **({"frontier_accuracy": deltas.loc[epoch, "frontier_accuracy"], "frontier_delta": deltas.loc[epoch, "delta"],
                    "frontier_delta_lo": deltas.loc[epoch, "delta_lo"], "frontier_delta_hi": deltas.loc[epoch, "delta_hi"],
                    "frontier_delta_fw_lo": deltas.loc[epoch, "delta_fw_lo"],
                    "frontier_delta_fw_hi": deltas.loc[epoch, "delta_fw_hi"],
                    "frontier_delta_p": deltas.loc[epoch, "delta_p"]}
                   if deltas is not None else {}),
            })
    summary = pd.DataFrame(rows)
    summary["p_holm"] = holm(summary["p_vs_B_T"].to_numpy())
    if "frontier_delta_p" in summary:  # Holm over the samplers' Δ at each epoch
        summary["frontier_delta_p_holm"] = np.nan
        for _, part in summary[summary["kind"] == "sampler"].groupby("epoch"):
            summary.loc[part.index, "frontier_delta_p_holm"] = holm(part["frontier_delta_p"].to_numpy())
    return summary


FRONTIER_DISTANCE = "distance_train"  # Δ is taken at the distance to the train models at the anchors' epochs


def frontier_from_results(references, results: list[MethodResult]) -> Frontier:
    """The Frontier of the evaluated reference populations (matched to `references` by label)."""
    by_label = {r.label: r for r in results}
    points = []
    for ref in references:
        result = by_label[ref.population.label]
        points.append(FrontierPoint(ref.family, ref.level, result.label, result.novelty[FRONTIER_DISTANCE].to_numpy(),
                                    np.where(result.evaluated, result.accuracy, np.nan),
                                    result.novelty["iou_max"].to_numpy()))
    return Frontier(points, results[0].epochs if results else [0])


# -- writing ----------------------------------------------------------------------------------


_WORKER: dict = {}


def _worker_init(zoo_path: str, train: ImageSet, test: ImageSet, config: ReportConfig, reference: ZooReference) -> None:
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
    reference: ZooReference | None = None,
) -> list[MethodResult]:
    """`evaluate_method` for every population, in `workers` single-threaded processes (1: here)."""
    reference = reference or zoo_reference(zoo, test)
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
    progress: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Build, fine-tune and evaluate every population and the frontier's references; write the
    report files; return the summary (frontier rows included, kind "frontier"). `hyperrep_dir` is
    ours or a paper folder: that brings its own zoo (dataset.pt), its pre-sampled populations and
    its recorded B_T (`paper_populations`, `recorded_test_split`). An ablation trained on another
    zoo is left out with a note.

    On a CPU the populations are spread over `workers` processes (default: one per core); on an
    accelerator (hyperrep.runtime.device.pick_device) they run here, one after another."""
    config = config or ReportConfig()
    config.validate()
    started = time.time()
    device = pick_device()
    hyperrep, zoo, notes = load_hyperrep_with_zoo(hyperrep_dir)
    paper = artifact_kind(hyperrep_dir) == PAPER
    train = load_fine_tune_images(zoo, config.fine_tune_images, config.seed, data_dir)
    split = load_image_split(zoo, config.tuning.validation_images, config.test_images, data_dir)
    test = split.test
    tuning = tune(hyperrep, zoo, split.validation, train, config.tuning, config.frontier_settings(), config.samplers,
                  config.seed, log=log)
    config = replace(config, anchor_fraction=tuning.choices["anchor_fraction"],
                     frontier_sigmas=tuning.choices["frontier_sigmas"])
    rows, params = tuning.anchor_rows, tuning.choices["sampler_params"]
    scores = tuning.table[VALIDATION_COLUMN].to_numpy()[rows]
    populations, skipped, runs = build_populations(hyperrep, zoo, config, rows=rows, params=params, tuning=tuning,
                                                   train=train, scores=scores)
    if paper:
        populations += paper_populations(hyperrep_dir, zoo, config)
    ablation = load_any_hyperrep(ablation_dir, zoo) if ablation_dir is not None else None
    if ablation is not None and any(compatibility(zoo, ablation)):
        skipped.append(f"the ablation {ablation_dir} (trained on {ablation.zoo_path}, not on the zoo in use {zoo.path})")
        ablation_dir = ablation = None
    if ablation is not None:
        ablation_table = with_validation_accuracy(ablation.latent_table, zoo, split.validation)
        ablation_rows = validation_anchor_rows(ablation_table, config.anchor_fraction)
        more, more_skipped, _ = build_populations(ablation, zoo, config, tag="no LWLN", baselines=False,
                                                  samplers=config.ablation_samplers, rows=ablation_rows, params=params,
                                                  scores=ablation_table[VALIDATION_COLUMN].to_numpy()[ablation_rows])
        populations, skipped = populations + more, skipped + more_skipped
    references = frontier_references(hyperrep, zoo, config, rows)
    populations += [(ref.population, "frontier", "-") for ref in references]
    reference = zoo_reference(zoo, test, train_reference(zoo, tuning.table, rows))
    if device.type == "cpu":
        workers = workers or os.cpu_count() or 1
    else:
        workers, train, test = 1, train.to(device), test.to(device)
    results = evaluate_all(populations, zoo, train, test, config, workers=workers, progress=progress, reference=reference)
    aligned = zoo_test_trajectories(zoo, test, config, reference)
    if aligned is None:
        skipped.append(f"{ZOO_B_T} (the zoo has no test split saved at epochs {config.epochs})")
    recorded, why = recorded_test_split(hyperrep_dir, config) if paper else (None, None)
    skipped += [why] if why else []
    results = [r for r in (aligned, recorded) if r is not None] + results
    results.sort(key=lambda r: r.label not in BASELINES)  # B_T first: every p-value refers to it
    frontier = frontier_from_results(references, results)
    spacing = float(np.nanmedian(reference.spacing)) if np.isfinite(reference.spacing).any() else float("nan")
    summary = summarise(results, config, frontier=frontier, zoo_spacing=spacing)
    budgets = budget_table(runs, {r.label: r for r in results}, frontier, resamples=config.bootstrap_resamples,
                           seed=config.seed, distance_column=FRONTIER_DISTANCE) if runs else None
    header = report_header(hyperrep, ablation_dir, zoo, config, time.time() - started, skipped, reference,
                           paper_note(notes, config) if paper else None, split=split, tuning=tuning)
    write_report(results, summary, Path(out), header, frontier, spacing, budgets=budgets)
    write_tuning(Path(out), tuning, split)
    write_json(Path(out) / "report_config.json", {**asdict(config), "hyperrep": str(hyperrep_dir),
                                                  "ablation": str(ablation_dir) if ablation_dir else None,
                                                  "device": str(device), "workers": workers, "images": split.record(),
                                                  "seconds": round(time.time() - started, 1)})
    return summary


def write_tuning(out: Path, tuning: Tuning, split: ImageSplit) -> None:
    """tuning.json (the choices and the image split) and tuning.csv (every candidate's validation score)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "tuning.json", {"images": split.record(), **tuning.choices})
    tuning.searches.to_csv(out / "tuning.csv", index=False)


# -- the README block ------------------------------------------------------------------------


