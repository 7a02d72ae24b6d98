"""The experiment pipeline of the app and the command line, one step at a time.

choose anchors -> sample (decode) -> first estimate -> full evaluation -> comparisons (novelty
against the zoo and a distance-matched noise baseline, B_T, ensembles, places on the map), and
the fine-tuning comparison (samples vs B_T vs B_F). Each step is a function of its own that takes
a progress callback where it is long, so the app stores and shows each result as it arrives and
`hyperrep sample` / `hyperrep report` run the same steps in a row. A `SampleRun` holds what one
sampling request produced; `SampleRun.metadata` is what an export records about it.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from hyperrep.ae.artifact import Fingerprint, HyperRep, hyperrep_fingerprint
from hyperrep.ae.map import place_on_map
from hyperrep.evaluation.evaluate import (
    FineTuneResult,
    TrainingSettings,
    ensemble_accuracies,
    ensemble_accuracy,
    extend_evaluation,
    fine_tune,
    zoo_training_settings,
)
from hyperrep.evaluation.frontier import Frontier, FrontierSettings, zero_shot_frontier
from hyperrep.evaluation.novelty import novelty_table
from hyperrep.images.datasets import ImageSet
from hyperrep.nets.population import Evaluation, evaluate_population
from hyperrep.paper.importing import paper_comparison_rows
from hyperrep.runtime import cores
from hyperrep.sampling.anchors import select_rows, top_fraction
from hyperrep.sampling.baselines import (
    anchor_weights,
    matched_noise_sigma,
    noise_baseline,
    scratch_baseline,
    zoo_baseline,
)
from hyperrep.sampling.guided import GUIDED_SPEC
from hyperrep.sampling.parameters import SamplerParameter
from hyperrep.sampling.population import Population, draw_from_fitted
from hyperrep.sampling.samplers import SAMPLERS, LatentSampler, SamplerContext, SamplerSpec
from hyperrep.zoo.format import Zoo

Progress = Callable[[int, int], None]

ANCHOR_FRACTION = 0.3  # the paper's anchors: the top 30 % of the train split
QUICK_IMAGES = 1_000  # the first estimate, baselines and novelty use this many test images
MAX_BASELINE_MODELS = 50  # members of each comparison baseline (noise, B_T)
MAX_ENSEMBLE_MODELS = 25  # samples combined in the ensemble figures (each costs one population forward)
# The "New or copies?" frontier: a lighter sweep than the report's (11 references of 12 models).
APP_FRONTIER = dict(sigmas=[0.02, 0.04, 0.06, 0.09, 0.13, 0.18, 0.25], average_sizes=[2, 8], gaussian_scales=[0.5], models=12)
SCRATCH = "B_T (from scratch)"
ZOO_MODELS = "B_F (zoo, last epoch)"


# -- 1. anchors ------------------------------------------------------------------------------------


def top_train_anchors(table: pd.DataFrame, fraction: float = ANCHOR_FRACTION) -> np.ndarray:
    """The paper's anchors: the top `fraction` of the train split's (model, epoch) rows by test accuracy."""
    return top_fraction(table, fraction, among=select_rows(table, split="train"))


def top_anchors_label(fraction: float = ANCHOR_FRACTION) -> str:
    return f"anchors: top {100 * fraction:g} % of the train split"


def choose_anchors(table: pd.DataFrame, spec: str | list[int], epochs: list[int] | None = None) -> tuple[np.ndarray, str]:
    """Anchor rows and their label from a spec: "top30" (any topNN), "all" (the train split), or
    model ids (at `epochs`, default each id's last embedded epoch)."""
    if isinstance(spec, str):
        match = re.fullmatch(r"top(\d+(?:\.\d+)?)", spec)
        if match:
            fraction = float(match.group(1)) / 100
            return top_train_anchors(table, fraction), top_anchors_label(fraction)
        if spec == "all":
            return select_rows(table, split="train"), "anchors: the train split"
        raise ValueError(f"anchors must be topNN (e.g. top30), all, or model ids; got {spec!r}")
    rows = select_rows(table, model_ids=spec, epochs=epochs)
    if epochs is None:  # each model at its last embedded epoch
        picked = table.iloc[rows]
        rows = rows[(picked["epoch"] == picked.groupby("model_id")["epoch"].transform("max")).to_numpy()]
    where = f"epochs {', '.join(map(str, epochs))}" if epochs else "last epoch"
    return rows, f"anchors: models {', '.join(map(str, spec))} ({where})"


# -- 2. sampling -----------------------------------------------------------------------------------


@dataclass
class Comparisons:
    """What the samples are compared with, all on the first-estimate images."""

    novelty: pd.DataFrame  # samples and noise baseline: distance, nearest model, IoU, accuracy, group
    baselines: dict[str, np.ndarray]  # label -> accuracies
    ensembles: dict[str, float]
    map_xy: np.ndarray  # samples placed on the stored 2-D map
    messages: list[tuple[str, str]] = field(default_factory=list)
    frontier: Frontier | None = None  # of the anchors in use (zero-shot, on the same images)
    frontier_delta: pd.Series | None = None  # the samples' Δ against it: distance, frontier_accuracy, delta, delta_lo/hi


@dataclass
class SampleRun:
    """Everything one sampling request produced, filled step by step (the app keeps it in the session)."""

    model_key: tuple
    strategy: str
    params: dict
    seed: int
    anchor_rows: np.ndarray
    anchor_label: str
    population: Population  # weights [n, P], latents [n, L], members
    quick_images: int = 0
    quick: Evaluation | None = None  # on the first `quick_images` test images
    full: Evaluation | None = None  # on the whole test set
    comparisons: Comparisons | None = None
    timings: dict[str, float] = field(default_factory=dict)
    messages: list[tuple[str, str]] = field(default_factory=list)  # ("info" | "warning" | "error", text)
    started: float = field(default_factory=time.perf_counter)  # timings count seconds from here

    @property
    def novelty(self) -> pd.DataFrame | None:
        return self.comparisons.novelty if self.comparisons else None

    @property
    def baselines(self) -> dict[str, np.ndarray]:
        return self.comparisons.baselines if self.comparisons else {}

    @property
    def ensembles(self) -> dict[str, float] | None:
        return self.comparisons.ensembles if self.comparisons else None

    @property
    def map_xy(self) -> np.ndarray | None:
        return self.comparisons.map_xy if self.comparisons else None

    @property
    def frontier(self) -> Frontier | None:
        return self.comparisons.frontier if self.comparisons else None

    @property
    def frontier_delta(self) -> pd.Series | None:
        return self.comparisons.frontier_delta if self.comparisons else None

    def members_table(self) -> pd.DataFrame:
        """One row per sampled model: accuracies, loss, finiteness, map position, novelty."""
        table = self.population.members.reset_index(drop=True).copy()
        if self.full is not None:
            table["test_acc"], table["test_loss"], table["finite"] = self.full.accuracy, self.full.loss, self.full.finite
        if self.quick is not None:
            table[f"test_acc_first_{self.quick_images}"] = self.quick.accuracy
        if self.map_xy is not None:
            table["map_x"], table["map_y"] = self.map_xy[:, 0], self.map_xy[:, 1]
        if self.novelty is not None:
            own = self.novelty[self.novelty["group"] == "samples"].reset_index(drop=True)
            for column in ("distance", "nearest_model_id", "nearest_epoch", "misclassification_iou"):
                table[column] = own[column].to_numpy()
        return table

    def metadata(self, zoo: Zoo | None, hyperrep: HyperRep | None) -> dict:
        """What an exported population needs to be understood and reproduced."""
        valid = np.asarray(self.full.accuracy)[np.asarray(self.full.finite)] if self.full is not None else np.array([])
        return {
            "label": self.population.label,
            "architecture": hyperrep.arch.name if hyperrep is not None else None,
            "activation": zoo.activation if zoo is not None else None,
            "dataset": zoo.manifest.get("dataset") if zoo is not None else None,
            "strategy": self.strategy,
            "params": self.params,
            "seed": self.seed,
            "n_models": len(self.population.weights),
            "anchors": self.anchor_label,
            "anchor_rows": [int(r) for r in self.anchor_rows],
            "zoo": str(zoo.path) if zoo is not None else None,
            "hyper_representation": str(hyperrep.path) if hyperrep is not None else None,
            "mean_test_acc": float(valid.mean()) if valid.size else None,
            "compared": self.comparisons is not None,
        }


STRATEGIES: dict[str, SamplerSpec] = {**SAMPLERS, GUIDED_SPEC.name: GUIDED_SPEC}  # what the app and `hyperrep sample` offer
TRAINED_STRATEGIES = ("flow", "flow_cfg")  # fitted by a training loop that takes progress and stop


def strategy(name: str) -> SamplerSpec:
    if name not in STRATEGIES:
        raise ValueError(f"unknown sampler {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def strategy_names() -> list[str]:
    """Every strategy the app and `hyperrep sample` offer: the registry's samplers and those that also use the decoder."""
    return list(STRATEGIES)


def strategy_title(name: str) -> str:
    """'S_Dist (gaussian)': the paper's name and the strategy's name."""
    return f"{strategy(name).paper_name} ({name})"


def strategy_description(name: str) -> str:
    return strategy(name).description


def strategy_parameters(name: str) -> list[SamplerParameter]:
    """The parameters a user may set for a strategy (the app's widgets)."""
    return strategy(name).parameters()


def guidance_images_needed(name: str, params: dict) -> int:
    """How many training images a strategy needs (0 for those that use only the latents)."""
    return strategy(name).images(params)


def strategy_cost(name: str, params: dict, n: int) -> str | None:
    """The extra cost of a strategy in words; None when it has none."""
    return strategy(name).cost(params, n)


def build_sampler(hyperrep: HyperRep, name: str, params: dict, *, activation: str | None = None,
                  train: ImageSet | None = None, progress: Progress | None = None,
                  stop: Callable[[], bool] | None = None) -> LatentSampler:
    """The named strategy with `params`; one that uses more than the latents also gets the network,
    the zoo's `activation`, its training images `train`, a `progress(step, steps)` callback and
    `stop()` (asked during a long fit whether to end it early). Bad parameters are a ValueError."""
    spec = strategy(name)
    context = SamplerContext(hyperrep.model, activation, train, progress, stop)
    try:
        return spec.build(context, **params)
    except TypeError as err:
        raise ValueError(f"sampler {name!r}: {err}") from err


def draw_population(hyperrep: HyperRep, strategy: str, params: dict, anchor_rows, n: int, seed: int, *,
                    activation: str | None = None, train: ImageSet | None = None, progress: Progress | None = None,
                    stop: Callable[[], bool] | None = None, scores=None,
                    sampler: LatentSampler | None = None) -> Population:
    """Fit the named strategy on the anchors' latents, draw `n` latents and decode them (`activation`,
    `train`, `progress` and `stop` as in `build_sampler`). `scores`: the anchors' accuracies, for
    samplers that use them (flow_cfg); None takes the latent table's `test_acc` of the anchor rows
    (the report passes validation-image accuracies instead). `sampler`: one the caller built (fitted
    here) or loaded or kept fitted (drawn from as it is; refused when fitted on another
    hyper-representation). Too few anchors, missing scores or bad parameters is a ValueError."""
    fingerprint = hyperrep_fingerprint(hyperrep)
    if sampler is None or not sampler.fitted:
        sampler = sampler or build_sampler(hyperrep, strategy, params, activation=activation, train=train,
                                           progress=progress, stop=stop)
        fit_sampler(hyperrep, sampler, anchor_rows, scores=scores, fingerprint=fingerprint)
    return draw_from_fitted(hyperrep.model, sampler, n, seed, fingerprint=fingerprint)


def fit_sampler(hyperrep: HyperRep, sampler: LatentSampler, anchor_rows, *, scores=None,
                fingerprint: Fingerprint | None = None) -> LatentSampler:
    """`sampler` fitted on the anchor rows' latents (and scores, as in `draw_population`), recording
    the hyper-representation's fingerprint (computed here unless given); the app trains in the background with it."""
    rows = np.asarray(anchor_rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("no anchors: choose a region on the latent map or use the top-k % anchors")
    if scores is None and sampler.uses_scores:
        scores = hyperrep.latent_table["test_acc"].to_numpy()[rows]
    sampler.fit(hyperrep.latents[torch.as_tensor(rows)].cpu(), scores=scores)
    sampler.fingerprint_ = fingerprint or hyperrep_fingerprint(hyperrep)
    return sampler


def start_run(hyperrep: HyperRep, strategy: str, params: dict, anchor_rows, anchor_label: str, n: int, seed: int,
              model_key: tuple = (), *, activation: str | None = None, train: ImageSet | None = None,
              progress: Progress | None = None, stop: Callable[[], bool] | None = None, scores=None,
              sampler: LatentSampler | None = None) -> SampleRun:
    """Step 2: a SampleRun holding `n` decoded samples (timed from now) and every parameter of the
    strategy (defaults filled in; a given `sampler`'s own); the other arguments as in `draw_population`."""
    start = time.perf_counter()
    population = draw_population(hyperrep, strategy, params, anchor_rows, n, seed, activation=activation, train=train,
                                 progress=progress, stop=stop, scores=scores, sampler=sampler)
    used = {p.name: p.default for p in strategy_parameters(strategy)} | dict(params)  # recorded in full
    if sampler is not None:
        used = sampler.params()
    run = SampleRun(model_key, strategy, used, seed, np.asarray(anchor_rows), anchor_label, population, started=start)
    run.timings["decode"] = time.perf_counter() - start
    return run


def _elapsed(run: SampleRun) -> float:
    return time.perf_counter() - run.started


# -- 3. and 4. evaluation --------------------------------------------------------------------------


def first_estimate(run: SampleRun, zoo: Zoo, test: ImageSet, n_images: int = QUICK_IMAGES) -> ImageSet:
    """Step 3: accuracy (and predictions) on the first `n_images` test images; returns those images."""
    quick = test.first(n_images)
    run.quick_images = len(quick)
    run.quick = evaluate_population(zoo.architecture, zoo.activation, run.population.weights, quick, keep_predictions=True)
    run.timings["first estimate"] = _elapsed(run)
    return quick


def full_evaluation(run: SampleRun, zoo: Zoo, test: ImageSet, progress: Progress | None = None) -> Evaluation:
    """Step 4: the evaluation on all of `test`, reusing the first estimate's images."""
    run.full = extend_evaluation(zoo.architecture, zoo.activation, run.population.weights, test, run.quick,
                                 run.quick_images, progress=progress)
    run.timings["full evaluation"] = _elapsed(run)
    return run.full


# -- 5. comparisons --------------------------------------------------------------------------------


def compare(run: SampleRun, zoo: Zoo, hyperrep: HyperRep, table: pd.DataFrame, data: ImageSet) -> Comparisons:
    """Step 5: novelty of the samples and of a distance-matched noise baseline, the frontier of the
    anchors in use and the samples' Δ against it (hyperrep.evaluation.frontier), B_T at initialisation (and a
    paper folder's pre-sampled populations), ensembles and the samples' places on the map, all on `data` (the first-estimate images). Reads `run`, never changes it.
    Anchors that are not models of the loaded zoo leave a message instead of a noise baseline.
    Its compute steps yield to interactive evaluations (hyperrep.runtime.cores, background priority)."""
    with cores.background():
        return _compare(run, zoo, hyperrep, table, data)


def _compare(run: SampleRun, zoo: Zoo, hyperrep: HyperRep, table: pd.DataFrame, data: ImageSet) -> Comparisons:
    arch, activation, population = zoo.architecture, zoo.activation, run.population
    n_baseline = min(len(population.weights), MAX_BASELINE_MODELS)
    reference, reference_table = zoo.samples()
    novelty = novelty_table(arch, activation, population.weights, run.quick.predictions, reference, reference_table, data)
    novelty["group"], novelty["accuracy"] = "samples", run.quick.accuracy
    frames, baselines, messages, frontier, delta = [novelty], {}, [], None, None
    try:
        anchors = anchor_weights(zoo, table, run.anchor_rows)
    except KeyError as err:
        messages.append(("info", f"No noise baseline: the anchors are not models of the loaded zoo ({err})"))
    else:
        sigma = matched_noise_sigma(novelty["distance"].to_numpy(), arch.n_params)
        noise = noise_baseline(anchors, sigma, n_baseline, run.seed)
        noisy = evaluate_population(arch, activation, noise.weights, data, keep_predictions=True)
        noise_novelty = novelty_table(arch, activation, noise.weights, noisy.predictions, reference, reference_table, data)
        noise_novelty["group"], noise_novelty["accuracy"] = noise.label, noisy.accuracy
        frames.append(noise_novelty)
        baselines[noise.label] = noisy.accuracy
        reach = 1.5 * sigma  # the noise curve reaches past the samples' median distance, whatever the zoo
        settings = FrontierSettings(**{**APP_FRONTIER, "sigmas": sorted(set(APP_FRONTIER["sigmas"]) | {reach})})
        frontier = zero_shot_frontier(arch, activation, anchors, reference, data, settings, run.seed)
        delta = frontier.delta(novelty["distance"].to_numpy(), run.quick.accuracy[:, None],
                               resamples=1_000, seed=run.seed).iloc[0]
    scratch = scratch_baseline(zoo, n_baseline, run.seed)
    baselines["B_T (random init)"] = evaluate_population(arch, activation, scratch.weights, data).accuracy
    if hyperrep.path is not None:  # a paper folder adds its pre-sampled populations and its B_T
        baselines.update(paper_comparison_rows(hyperrep.path, arch, activation, data, MAX_BASELINE_MODELS))
    ensembles = ensemble_figures(run, arch, activation, data)
    placed = place_on_map(population.latents, hyperrep.latents.cpu(), hyperrep.map_coords.cpu(), k=5)
    return Comparisons(pd.concat(frames, ignore_index=True), baselines, ensembles, placed.numpy().astype(float), messages,
                       frontier, delta)


def ensemble_figures(run: SampleRun, arch, activation: str, data: ImageSet) -> dict[str, float]:
    """One ensemble of (up to MAX_ENSEMBLE_MODELS) finite samples, the mean of 5-member ensembles,
    and the mean single sample of those members, on `data`."""
    population = run.population
    finite = np.asarray(run.full.finite if run.full is not None else run.quick.finite)
    members = torch.as_tensor(np.flatnonzero(finite)[:MAX_ENSEMBLE_MODELS])
    return {
        f"ensemble of {len(members)} samples":
            ensemble_accuracy(arch, activation, population.weights[members], data) if len(members) else float("nan"),
        "mean of ensembles of 5":
            float(np.mean(ensemble_accuracies(arch, activation, population.weights[members], data, size=5, seed=run.seed)))
            if len(members) >= 5 else float("nan"),
        f"mean single sample (of those {len(members)})":
            float(np.nanmean(run.quick.accuracy[members.numpy()])) if len(members) else float("nan"),
    }


def finish_comparisons(run: SampleRun, comparisons: Comparisons) -> None:
    """Attach finished comparisons to the run (their messages join the run's)."""
    run.comparisons = comparisons
    run.messages.extend(comparisons.messages)
    run.timings["comparisons"] = _elapsed(run)


def run_sampling(hyperrep: HyperRep, zoo: Zoo, strategy: str, params: dict, anchor_rows, anchor_label: str, n: int,
                 seed: int, test: ImageSet | None, *, comparisons: bool = False, table: pd.DataFrame | None = None,
                 train: ImageSet | None = None, sample_progress: Progress | None = None,
                 progress: Progress | None = None, log: Callable[[str], None] | None = None, scores=None,
                 sampler: LatentSampler | None = None) -> SampleRun:
    """Every step in a row (the command line): sample (the guided sampler on `train`; `sample_progress`
    follows its steps or a flow sampler's training; `scores` and `sampler` as in `draw_population`),
    then with `test` the first estimate and the full evaluation (`progress`), then with
    `comparisons` the comparisons (on the first-estimate images)."""
    say = log or (lambda _text: None)
    run = start_run(hyperrep, strategy, params, anchor_rows, anchor_label, n, seed, activation=zoo.activation,
                    train=train, progress=sample_progress, scores=scores, sampler=sampler)
    say(f"decoded {n} models from {strategy} on {len(run.anchor_rows)} anchors")
    if test is None:
        if comparisons:
            raise ValueError("the comparisons need test images (evaluate the samples)")
        return run
    quick = first_estimate(run, zoo, test)
    say(f"first estimate on {len(quick):,} test images: mean accuracy {np.nanmean(run.quick.accuracy):.3f}")
    full_evaluation(run, zoo, test, progress)
    if comparisons:
        say("comparing with the zoo, a noise baseline, B_T and ensembles")
        finish_comparisons(run, compare(run, zoo, hyperrep, hyperrep.latent_table if table is None else table, quick))
    return run


# -- fine-tuning -----------------------------------------------------------------------------------


def fine_tune_population(weights: torch.Tensor, zoo: Zoo, train: ImageSet, test: ImageSet, epochs: int, seed: int, *,
                         settings: TrainingSettings | None = None, eval_epochs: list[int] | None = None,
                         keep_predictions: bool = False, progress: Progress | None = None) -> FineTuneResult:
    """Fine-tune a population with the zoo's optimiser settings (or `settings`) and evaluate it on `test`."""
    return fine_tune(zoo.architecture, zoo.activation, weights, train, test, epochs=epochs,
                     settings=settings or zoo_training_settings(zoo), seed=seed, eval_epochs=eval_epochs,
                     keep_predictions=keep_predictions, progress=progress)


def fine_tune_populations(run: SampleRun, zoo: Zoo, members: int) -> dict[str, torch.Tensor]:
    """The three populations of the fine-tuning comparison: up to `members` finite samples, as many
    fresh initialisations (B_T) and zoo models at their last epoch (B_F). ValueError under 2 samples."""
    finite = torch.as_tensor(np.asarray(run.full.finite if run.full is not None else run.quick.finite))
    samples = run.population.weights[finite][:members]
    if len(samples) < 2:
        raise ValueError("fewer than 2 finite sampled models: sample again with another strategy or region")
    return {
        "samples": samples,
        SCRATCH: scratch_baseline(zoo, len(samples), run.seed).weights,
        ZOO_MODELS: zoo_baseline(zoo, len(samples), run.seed).weights,
    }


def fine_tune_comparison(run: SampleRun, zoo: Zoo, train: ImageSet, test: ImageSet, *, members: int, epochs: int,
                         settings: TrainingSettings | None = None,
                         progress_for: Callable[[str], Progress | None] | None = None) -> dict[str, FineTuneResult]:
    """Samples vs B_T vs B_F, each fine-tuned for `epochs` on `train` and evaluated on `test` after
    every epoch; `progress_for(label)` gives each population's progress callback."""
    return {label: fine_tune_population(weights, zoo, train, test, epochs, run.seed, settings=settings,
                                        progress=progress_for(label) if progress_for else None)
            for label, weights in fine_tune_populations(run, zoo, members).items()}
