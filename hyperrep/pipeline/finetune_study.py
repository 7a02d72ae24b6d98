"""Are sampled models good initialisations? The fine-tuning study, on the honest protocol.

Anchors are the top 30 % of the hyper-representation's train rows by accuracy on the validation
images (hyperrep.pipeline.tuning); every figure is measured on the test images. On those anchors
it builds one population per chosen sampler (the experiment pipeline's `draw_population`) and
the baselines: B_F = the anchors themselves (cycled), noise on the anchors at the σ that puts
them at the median distance of the first sampler's samples from the zoo ("copies at the same
distance"), B_T as the zoo drew it (the paper's) and B_T with kaiming-uniform initialisation.
Every population is fine-tuned with the zoo's optimiser settings on seeded, nested fractions of
the training part (the same images for every population at a fraction) and evaluated after
each requested epoch. Per (method, fraction, epoch) the summary holds the mean accuracy with its
bootstrap 95 % CI, Δ against B_T (kaiming), B_T (the zoo's init) and the noise copies, each with
a bootstrap 95 % CI over independent members, and Mann-Whitney p against B_T (kaiming),
Holm-corrected over the samplers' rows. hyperrep.pipeline.finetune_study_files writes and reads
the folder (study.csv, study.md, study.png, members.csv, study_config.json).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from hyperrep.evaluation.novelty import nearest_reference
from hyperrep.evaluation.statistics import bootstrap_ci, bootstrap_difference_ci, holm, mann_whitney_p
from hyperrep.images.datasets import ImageSet
from hyperrep.io.files import write_json
from hyperrep.pipeline.artifacts import load_hyperrep_with_zoo
from hyperrep.pipeline.experiment import ANCHOR_FRACTION, STRATEGIES, draw_population, fine_tune_population, strategy_title
from hyperrep.evaluation.evaluate import zoo_training_settings
from hyperrep.pipeline.finetune_study_files import write_study
from hyperrep.pipeline.tuning import ImageSplit, load_image_split, validation_anchor_rows, with_validation_accuracy
from hyperrep.runtime.device import pick_device
from hyperrep.sampling.baselines import anchor_weights, cycling_order, matched_noise_sigma, noise_baseline, scratch_baseline
from hyperrep.zoo.format import Zoo, zoo_dataset_rule

Progress = Callable[[int, int], None]

KAIMING = "kaiming_uniform"
B_F_LABEL = "B_F (the anchors)"
# the three baselines every row is compared with: (summary column stem, kind of population)
COMPARED = (("kaiming", "B_T kaiming"), ("zoo_init", "B_T zoo init"), ("noise", "noise"))


@dataclass
class StudyConfig:
    """What one study measures; `validate` checks it before any work."""

    methods: list[str] = field(default_factory=lambda: ["kde_legacy", "kde", "gaussian"])
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0])
    epochs: list[int] = field(default_factory=lambda: [1, 3, 10])
    models: int = 10
    test_images: int = 10_000
    validation_images: int = 2_000
    seed: int = 42
    anchor_fraction: float = ANCHOR_FRACTION
    bootstrap_resamples: int = 2_000

    def validate(self) -> None:
        unknown = [m for m in self.methods if m not in STRATEGIES]
        if not self.methods or unknown:
            raise ValueError(f"methods must be sampler names; unknown: {', '.join(unknown) or '(none given)'}; "
                             f"known: {', '.join(STRATEGIES)}")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods repeat: {self.methods}")
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions) or len(set(self.fractions)) != len(self.fractions):
            raise ValueError(f"fractions must be distinct numbers in (0, 1], got {self.fractions}")
        if not self.epochs or any(e < 0 for e in self.epochs) or len(set(self.epochs)) != len(self.epochs):
            raise ValueError(f"epochs must be distinct whole numbers of at least 0, got {self.epochs}")
        if self.models < 2:
            raise ValueError(f"models must be at least 2 (a CI needs two members), got {self.models}")
        if self.test_images < 1 or self.validation_images < 1:
            raise ValueError("test_images and validation_images must be at least 1")
        self.fractions, self.epochs = sorted(self.fractions), sorted(self.epochs)


@dataclass
class StudyPopulation:
    """One population of the study: `kind` is "sampler" or one of COMPARED's kinds (or "B_F")."""

    label: str
    kind: str
    weights: torch.Tensor
    note: str = ""


# -- the images and the anchors -------------------------------------------------------------------


def fraction_subsets(part: np.ndarray, fractions: list[float], seed: int) -> dict[float, np.ndarray]:
    """Sorted indices of each fraction of `part`: prefixes of one seeded permutation, so every
    smaller fraction lies inside every larger one."""
    order = np.random.default_rng(seed).permutation(part)
    return {f: np.sort(order[: max(1, math.ceil(f * len(part)))]) for f in fractions}


def study_anchors(table: pd.DataFrame, zoo: Zoo, split: ImageSplit, fraction: float) -> tuple[np.ndarray, pd.DataFrame]:
    """The anchor rows (top `fraction` of the train rows by accuracy on the validation images) and
    the table with that accuracy; the test images play no part."""
    scored = with_validation_accuracy(table, zoo, split.validation)
    return validation_anchor_rows(scored, fraction), scored


# -- the populations ------------------------------------------------------------------------------


def zoo_distances(zoo: Zoo, weights: torch.Tensor) -> np.ndarray:
    """Each member's distance to its nearest zoo model (any saved epoch, any neuron order)."""
    reference, _ = zoo.samples()
    finite = torch.isfinite(weights).all(dim=1)
    distances = np.full(len(weights), np.nan)
    if finite.any():
        distances[finite.numpy()] = nearest_reference(zoo.architecture, weights[finite], reference)[0]
    return distances


def build_study_populations(hyperrep, zoo: Zoo, table: pd.DataFrame, anchor_rows: np.ndarray, config: StudyConfig,
                            guidance: ImageSet) -> list[StudyPopulation]:
    """The samplers' populations on the anchors, then B_F, the matched noise and both B_T."""
    n, seed = config.models, config.seed
    populations = []
    for name in config.methods:
        drawn = draw_population(hyperrep, name, {}, anchor_rows, n, seed, activation=zoo.activation, train=guidance)
        populations.append(StudyPopulation(strategy_title(name), "sampler", drawn.weights))
    anchors = anchor_weights(zoo, table, anchor_rows)
    order = cycling_order(len(anchors), n, torch.Generator().manual_seed(seed))
    populations.append(StudyPopulation(B_F_LABEL, "B_F", anchors[order].clone(), f"{len(anchors)} anchors"))
    distance = float(np.nanmedian(zoo_distances(zoo, populations[0].weights)))
    sigma = matched_noise_sigma(np.array([distance]), zoo.architecture.n_params)
    noise = noise_baseline(anchors, sigma, n, seed)
    populations.append(StudyPopulation(f"noise on the anchors (σ={sigma:.3g})", "noise", noise.weights,
                                       f"σ matched to the median distance {distance:.2f} of {populations[0].label}"))
    zoo_init = scratch_baseline(zoo, n, seed)
    inits = ", ".join(sorted(set(zoo_init.members["init"])))
    populations.append(StudyPopulation(f"B_T (zoo's init: {inits})", "B_T zoo init", zoo_init.weights))
    kaiming = scratch_baseline(zoo, n, seed, init=KAIMING)
    populations.append(StudyPopulation(f"B_T ({KAIMING})", "B_T kaiming", kaiming.weights))
    return populations


# -- fine-tuning ----------------------------------------------------------------------------------


_WORKER: dict = {}


def _worker_init(zoo_path: str, data_dir: str | None, test: ImageSet) -> None:
    """One thread per process, as hyperrep.pipeline.report's workers."""
    torch.set_num_threads(1)
    zoo = Zoo.load(zoo_path)
    _WORKER.update(zoo=zoo, full=zoo_dataset_rule(zoo.manifest, data_dir).load("train", data_dir), test=test)


def _fine_tune_job(job: tuple[int, float, torch.Tensor, np.ndarray, list[int], int], zoo: Zoo, full: ImageSet,
                   test: ImageSet) -> tuple[int, float, np.ndarray]:
    """Fine-tune one population on one fraction's images; its accuracy [members, epochs] on `test`."""
    index, fraction, weights, images, epochs, seed = job
    train = full.subset(torch.as_tensor(images))
    curves = fine_tune_population(weights, zoo, train, test, max(epochs), seed, eval_epochs=epochs)
    return index, fraction, curves.accuracy


def _worker_run(job) -> tuple[int, float, np.ndarray]:
    return _fine_tune_job(job, _WORKER["zoo"], _WORKER["full"], _WORKER["test"])


def fine_tune_all(populations: list[StudyPopulation], zoo: Zoo, full: ImageSet, test: ImageSet,
                  subsets: dict[float, np.ndarray], config: StudyConfig, *, workers: int = 1,
                  data_dir: Path | str | None = None, progress: Progress | None = None) -> dict[tuple[int, float], np.ndarray]:
    """Accuracy [members, epochs] of every (population, fraction), in `workers` processes (1: here).
    Every population trains with the same member seeds, so member i sees the same data order in each."""
    jobs = [(i, f, p.weights, subsets[f], config.epochs, config.seed)
            for f in sorted(subsets, reverse=True) for i, p in enumerate(populations)]  # the longest first
    results: dict[tuple[int, float], np.ndarray] = {}
    if workers > 1:
        with mp.get_context("spawn").Pool(workers, initializer=_worker_init,
                                          initargs=(str(zoo.path), None if data_dir is None else str(data_dir), test)) as pool:
            for index, fraction, accuracy in pool.imap_unordered(_worker_run, jobs):
                results[index, fraction] = accuracy
                if progress is not None:
                    progress(len(results), len(jobs))
        return results
    for job in jobs:
        index, fraction, accuracy = _fine_tune_job(job, zoo, full, test)
        results[index, fraction] = accuracy
        if progress is not None:
            progress(len(results), len(jobs))
    return results


# -- statistics -----------------------------------------------------------------------------------


def summarise_study(populations: list[StudyPopulation], accuracy: dict[tuple[int, float], np.ndarray],
                    subsets: dict[float, np.ndarray], config: StudyConfig) -> pd.DataFrame:
    """One row per (method, fraction, epoch): mean with its CI, and Δ (with CI) against each of
    COMPARED; samplers also get p against B_T (kaiming), Holm-corrected over every sampler row."""
    baseline_of = {kind: i for i, p in enumerate(populations) for _, kind in COMPARED if p.kind == kind}
    resamples, seed, rows = config.bootstrap_resamples, config.seed, []
    for fraction in config.fractions:
        for j, epoch in enumerate(config.epochs):
            for i, population in enumerate(populations):
                values = accuracy[i, fraction][:, j]
                finite = values[np.isfinite(values)]
                low, high = bootstrap_ci(values, resamples, seed)
                row = {"method": population.label, "kind": population.kind, "fraction": fraction,
                       "train_images": len(subsets[fraction]), "epoch": epoch, "models": len(values),
                       "invalid": int(len(values) - len(finite)), "mean": finite.mean() if len(finite) else np.nan,
                       "std": finite.std(ddof=1) if len(finite) > 1 else np.nan, "ci_low": low, "ci_high": high}
                for stem, kind in COMPARED:
                    row |= _delta(values, accuracy[baseline_of[kind], fraction][:, j], stem, i == baseline_of[kind],
                                  resamples, seed)
                kaiming = accuracy[baseline_of["B_T kaiming"], fraction][:, j]
                row["p_vs_kaiming"] = mann_whitney_p(values, kaiming) if population.kind == "sampler" else np.nan
                rows.append(row)
    summary = pd.DataFrame(rows)
    summary["p_holm"] = holm(summary["p_vs_kaiming"].to_numpy())
    return summary


def _delta(values: np.ndarray, baseline: np.ndarray, stem: str, itself: bool, resamples: int, seed: int) -> dict:
    """Δ = mean(values) - mean(baseline) and its CI, under the columns delta_<stem>[_lo|_hi]."""
    if itself:
        return {f"delta_{stem}": np.nan, f"delta_{stem}_lo": np.nan, f"delta_{stem}_hi": np.nan}
    a, b = values[np.isfinite(values)], baseline[np.isfinite(baseline)]
    delta = a.mean() - b.mean() if len(a) and len(b) else np.nan
    low, high = bootstrap_difference_ci(values, baseline, resamples, seed)
    return {f"delta_{stem}": delta, f"delta_{stem}_lo": low, f"delta_{stem}_hi": high}


def members_table(populations: list[StudyPopulation], accuracy: dict[tuple[int, float], np.ndarray],
                  config: StudyConfig) -> pd.DataFrame:
    """Every member's test accuracy at every (fraction, epoch): one row per (method, fraction, member)."""
    frames = []
    for (i, fraction), values in sorted(accuracy.items()):
        frame = pd.DataFrame(values, columns=[f"acc_epoch_{e}" for e in config.epochs])
        frames.append(frame.assign(method=populations[i].label, fraction=fraction, member=np.arange(len(frame))))
    return pd.concat(frames, ignore_index=True)


# -- the whole study ------------------------------------------------------------------------------


def run_study(hyperrep_dir: Path | str, out: Path | str, config: StudyConfig | None = None, *,
              data_dir: Path | str | None = None, workers: int = 1, command: str | None = None,
              progress: Progress | None = None) -> pd.DataFrame:
    """Build, fine-tune and evaluate every population; write the study folder; return the summary.
    Bad settings are a ValueError before any work (and nothing is written)."""
    config = config or StudyConfig()
    config.validate()
    started = time.time()
    hyperrep, zoo, _ = load_hyperrep_with_zoo(hyperrep_dir)
    split = load_image_split(zoo, config.validation_images, config.test_images, data_dir)
    anchor_rows, table = study_anchors(hyperrep.latent_table, zoo, split, config.anchor_fraction)
    rule = zoo_dataset_rule(zoo.manifest, data_dir)
    full = rule.load("train", data_dir)
    subsets = fraction_subsets(rule.training_part(len(full)), config.fractions, config.seed)
    guidance = full.subset(torch.as_tensor(subsets[config.fractions[0]]))  # a guided sampler sees the smallest fraction
    populations = build_study_populations(hyperrep, zoo, table, anchor_rows, config, guidance)
    test = split.test
    device = pick_device()
    if device.type != "cpu":
        workers, full, test = 1, full.to(device), test.to(device)
    accuracy = fine_tune_all(populations, zoo, full, test, subsets, config, workers=workers, data_dir=data_dir,
                             progress=progress)
    summary = summarise_study(populations, accuracy, subsets, config)
    seconds = time.time() - started
    header = study_header(hyperrep_dir, zoo, config, split, populations, anchor_rows, subsets, seconds, command,
                          str(device), workers)
    write_study(Path(out), summary, members_table(populations, accuracy, config), header)
    write_json(Path(out) / "study_config.json", {**asdict(config), "hyperrep": str(hyperrep_dir), "command": command,
                                                 "images": split.record(), "anchors": int(len(anchor_rows)),
                                                 "train_images": {str(f): len(s) for f, s in subsets.items()},
                                                 "device": str(device), "workers": workers, "seconds": round(seconds, 1)})
    return summary


def study_header(hyperrep_dir: Path | str, zoo: Zoo, config: StudyConfig, split: ImageSplit,
                 populations: list[StudyPopulation], anchor_rows: np.ndarray, subsets: dict[float, np.ndarray],
                 seconds: float, command: str | None, device: str, workers: int) -> str:
    """study.md's header: the exact settings, the image split, the populations, the command and its time."""
    settings = zoo_training_settings(zoo)
    sizes = ", ".join(f"{100 * f:g} % = {len(subsets[f]):,} images" for f in config.fractions)
    notes = "; ".join(f"{p.label}: {p.note}" for p in populations if p.note)
    by_kind = {p.kind: p for p in populations}
    if torch.equal(by_kind["B_T zoo init"].weights, by_kind["B_T kaiming"].weights):
        notes += "; on this zoo both B_T are the same models (its build drew kaiming_uniform for every seed)"
    record = split.record()
    return "\n".join([
        "# Fine-tuning study: are sampled models good initialisations?",
        "",
        f"Hyper-representation `{hyperrep_dir}` of zoo `{zoo.name}` ({zoo.n_models} {zoo.architecture.name} models, "
        f"{zoo.activation}). Anchors: the top {config.anchor_fraction:.0%} of its train rows by accuracy on the "
        f"validation images ({len(anchor_rows)} rows). {config.models} models per method, seed {config.seed}.",
        f"Images: validation (chooses the anchors) = {record['validation']['source']}; test (every figure) = "
        f"{record['test']['source']}. Fine-tuning images: fractions of the training part ({sizes}), prefixes of one "
        f"seeded permutation, so each fraction holds the smaller ones and every population sees the same images.",
        f"Fine-tuning: the zoo's optimiser ({settings.optimizer}, lr {settings.lr:.3g}, batch {settings.batch_size}, "
        f"weight decay {settings.weight_decay:g}); member i of every population shuffles with the same seed; test "
        f"accuracy after epochs {', '.join(map(str, config.epochs))}.",
        "Methods: " + ", ".join(p.label for p in populations if p.kind == "sampler") + " (sampled on the anchors and "
        f"decoded); {B_F_LABEL} = the anchors themselves, cycled; noise = anchors + σ·N(0, 1) at the σ that puts them at "
        "the first sampler's median distance to the nearest zoo model (copies at the same distance); B_T (zoo's init) = "
        "fresh initialisations drawn as the zoo's build drew them (the paper's B_T); B_T (kaiming_uniform) = fresh "
        f"kaiming-uniform initialisations (the standard init). {notes}.",
        f"Statistics: mean test accuracy with a bootstrap 95 % CI (BCa, {config.bootstrap_resamples} resamples); "
        "Δ = method mean − baseline mean in percentage points with a percentile bootstrap 95 % CI resampling the two "
        "populations' members independently; p: two-sided Mann-Whitney U of each sampler against B_T (kaiming_uniform), "
        "Holm-corrected over every sampler row of the table (study.csv: p_vs_kaiming, p_holm).",
        f"Command: `{command or 'run_study(...)'}`; {seconds / 60:.1f} min on {device}"
        + (f" with {workers} worker processes." if workers > 1 else " in one process."),
    ])
