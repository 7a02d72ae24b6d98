"""The populations the report compares: samplers (with their tuned parameters), the step-budget
refinements (guided latent steps and weight steps, hyperrep.pipeline.step_budgets), reconstructed anchors, B_F, re-trained B_T, the no-LWLN ablation, the frontier's references,
the zoo's own test-split trajectories and a paper folder's recorded populations."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hyperrep.evaluation.frontier import reference_populations
from hyperrep.images.datasets import ImageSet
from hyperrep.paper.importing import BASELINE_SAMPLES, paper_sample_populations, sample_label
from hyperrep.pipeline.experiment import draw_population, top_train_anchors
from hyperrep.pipeline.report_types import KAIMING_B_T, RETRAINED_B_T, ReportConfig
from hyperrep.pipeline.step_budgets import StepRun, step_populations
from hyperrep.pipeline.tuning import Tuning
from hyperrep.sampling.baselines import anchor_weights, noise_baseline, reconstruction_baseline, scratch_baseline
from hyperrep.sampling.population import Population
from hyperrep.sampling.samplers import SAMPLERS
from hyperrep.zoo.format import Zoo


def sampler_label(name: str, fraction: float, params: dict | None = None) -> str:
    """'S_KDE indep. (kde, bandwidth 0.2, top 30%)': the paper's name, the registry name, tuned parameters, the anchors."""
    spec = SAMPLERS[name]
    chosen = "".join(f", {k.replace('n_components', 'components')} {v:g}" for k, v in (params or {}).items())
    return f"{spec.paper_name} ({name})" if name == "uniform_unit" else f"{spec.paper_name} ({name}{chosen}, top {fraction:.0%})"


def standard_init_baseline(zoo: Zoo, n: int, seed: int, init: str = "kaiming_uniform") -> Population:
    """B_T with the standard initialisation: `scratch_baseline`'s `init` draws at seeds past the
    zoo's and the re-trained B_T's, under the report's label."""
    drawn = scratch_baseline(zoo, n, seed + 7, init=init)
    return Population(KAIMING_B_T, drawn.weights, drawn.members)


def anchor_pool_baseline(weights: torch.Tensor, info: pd.DataFrame, n: int, seed: int) -> Population:
    """B_F: `n` models drawn (seeded, without repeats while possible) from the anchors' pool."""
    rng = np.random.default_rng(seed + 1)  # not the draw of the frontier's anchors population
    chosen = rng.choice(len(weights), size=n, replace=n > len(weights))
    members = info.iloc[chosen][["model_id", "epoch"]].reset_index(drop=True).assign(member=np.arange(n))
    return Population("B_F (anchor pool)", weights[torch.as_tensor(chosen)].clone(), members)


def build_populations(
    hyperrep, zoo: Zoo, config: ReportConfig, *, tag: str = "LWLN", baselines: bool = True,
    samplers: list[str] | None = None, rows: np.ndarray | None = None, params: dict[str, dict] | None = None,
    tuning: Tuning | None = None, train: ImageSet | None = None, scores: np.ndarray | None = None,
) -> tuple[list[tuple[Population, str, str]], list[str], list[StepRun]]:
    """(population, kind, hyper-rep tag) for every sampler (with `params[name]`, the tuned
    parameters), the step-budget refinements (with `tuning` and `train` images), reconstructed
    anchors and, with `baselines`, both B_T, B_F from the anchor pool and the extra noise rows; a
    note for each sampler skipped for too few anchors; and the step runs. `rows` are the anchors
    (default: the top `anchor_fraction` by the recorded accuracy, as `hyperrep sample`), `scores`
    their accuracies for the samplers conditioned on them (the report: on the validation images)."""
    n, seed, params = config.models_per_method, config.seed, params or {}
    table = hyperrep.latent_table
    rows = top_train_anchors(table, config.anchor_fraction) if rows is None else np.asarray(rows)
    weights = anchor_weights(zoo, table, rows)
    info = table.iloc[rows].reset_index(drop=True)
    suffix = "" if tag == "LWLN" else f" [{tag}]"
    out, skipped, runs = [], [], []
    for name in samplers if samplers is not None else config.samplers:
        if len(rows) < SAMPLERS[name].build(**params.get(name, {})).min_anchors:
            skipped.append(f"{name}{suffix} (needs {SAMPLERS[name].min_anchors} anchors, has {len(rows)})")
            continue
        population = draw_population(hyperrep, name, params.get(name, {}), rows, n, seed, scores=scores)
        population.label = sampler_label(name, config.anchor_fraction, params.get(name, {})) + suffix
        out.append((population, "sampler", tag))
    if tuning is not None and train is not None:
        refined, runs = step_populations(hyperrep, zoo, tuning, train, n, seed)
        out += [(p, "sampler" if r.method.startswith("guided") else "baseline", tag if r.method.startswith("guided") else "-")
                for p, r in zip(refined, runs)]
    recon = reconstruction_baseline(hyperrep.model, weights, n, seed, anchor_info=info)
    recon.label = f"reconstructed (top {config.anchor_fraction:.0%}){suffix}"
    out.append((recon, "baseline", tag))
    if baselines:
        scratch = scratch_baseline(zoo, n, seed)
        scratch.label = RETRAINED_B_T
        out.append((scratch, "baseline", "-"))
        out.append((standard_init_baseline(zoo, n, seed), "baseline", "-"))
        out.append((anchor_pool_baseline(weights, info, n, seed), "baseline", "-"))
        for sigma in config.noise_sigmas:
            noisy = noise_baseline(weights, sigma, n, seed, anchor_info=info)
            noisy.label = f"noise σ={sigma:g} (top {config.anchor_fraction:.0%})"
            out.append((noisy, "baseline", "-"))
    return out, skipped, runs


def frontier_references(hyperrep, zoo: Zoo, config: ReportConfig, rows: np.ndarray | None = None):
    """The frontier's reference populations around the report's anchors (hyperrep.evaluation.frontier)."""
    table = hyperrep.latent_table
    rows = top_train_anchors(table, config.anchor_fraction) if rows is None else rows
    return reference_populations(anchor_weights(zoo, table, rows), config.frontier_settings(), config.seed)


def paper_populations(hyperrep_dir: Path | str, zoo: Zoo, config: ReportConfig) -> list[tuple[Population, str, str]]:
    """The authors' pre-sampled populations (samples/<method>/checkpoint_<i>.pt, the first
    `models_per_method` of each), evaluated and fine-tuned like the samplers; tagged "paper" (its
    `direct` folder holds zoo models, the paper's B_F: a baseline)."""
    out = []
    for method, weights in paper_sample_populations(hyperrep_dir, zoo.architecture, config.models_per_method).items():
        members = pd.DataFrame({"member": np.arange(len(weights)), "checkpoint": np.arange(len(weights))})
        kind = "baseline" if method in BASELINE_SAMPLES else "sampler"
        out.append((Population(sample_label(method), weights, members), kind, "paper"))
    return out
