"""The populations the report compares: samplers, the guided sampler and its equal-cost weight
steps, reconstructed anchors, B_F, re-trained B_T, the no-LWLN ablation, the frontier's references,
the zoo's own test-split trajectories and a paper folder's recorded populations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hyperrep.evaluation.evaluate import zoo_training_settings
from hyperrep.evaluation.frontier import reference_populations
from hyperrep.images.datasets import ImageSet
from hyperrep.paper.importing import BASELINE_SAMPLES, paper_sample_populations, sample_label
from hyperrep.pipeline.experiment import draw_population, top_train_anchors
from hyperrep.pipeline.report_types import RETRAINED_B_T, ReportConfig
from hyperrep.sampling.baselines import anchor_weights, noise_baseline, reconstruction_baseline, scratch_baseline
from hyperrep.sampling.guided import GuidedSampler, guidance_batch, refine_weights
from hyperrep.sampling.population import Population, sample_population
from hyperrep.sampling.samplers import SAMPLERS
from hyperrep.zoo.format import Zoo


def sampler_label(name: str, fraction: float) -> str:
    """'S_KDE (kde_legacy, top 30%)': the paper's name, the registry name, the anchors."""
    spec = SAMPLERS[name]
    return f"{spec.paper_name} ({name})" if name == "uniform_unit" else f"{spec.paper_name} ({name}, top {fraction:.0%})"


def guided_populations(hyperrep, zoo: Zoo, anchors: torch.Tensor, train: ImageSet, config: ReportConfig) -> list[Population]:
    """For each guided base: the guided samples, and the same steps on the same images taken on the
    decoded start weights directly, the equal-cost comparison: at the zoo's learning rate, and at
    each of `guided_weight_step_sizes` (the latent step size is a free choice too)."""
    n, seed, out = config.models_per_method, config.seed, []
    steps, images, size = config.guided_steps, min(config.guided_images, len(train)), config.guided_step_size
    rates = [(zoo_training_settings(zoo).lr, "")] + [(lr, f", lr {lr:g}") for lr in config.guided_weight_step_sizes]
    for base in config.guided_bases:
        sampler = GuidedSampler(hyperrep.model, zoo.activation, train, base=base, steps=steps, images=images,
                                step_size=size).fit(anchors)
        guided = sample_population(hyperrep.model, sampler, anchors, n, seed)
        guided.label = f"S_guided ({base} + {steps} latent steps, {images} images, top {config.anchor_fraction:.0%})"
        out.append(guided)
        start, batch = sampler.start_weights(n, seed), guidance_batch(train, images, seed)
        for lr, note in rates:
            refined = refine_weights(zoo.architecture, zoo.activation, start, batch, steps=steps, step_size=lr)
            members = pd.DataFrame({"member": np.arange(n), "base": base, "steps": steps, "lr": lr})
            out.append(Population(f"{base} + {steps} weight steps (equal cost{note})", refined, members))
    return out


def anchor_pool_baseline(weights: torch.Tensor, info: pd.DataFrame, n: int, seed: int) -> Population:
    """B_F: `n` models drawn (seeded, without repeats while possible) from the anchors' pool."""
    rng = np.random.default_rng(seed + 1)  # not the draw of the frontier's anchors population
    chosen = rng.choice(len(weights), size=n, replace=n > len(weights))
    members = info.iloc[chosen][["model_id", "epoch"]].reset_index(drop=True).assign(member=np.arange(n))
    return Population("B_F (anchor pool)", weights[torch.as_tensor(chosen)].clone(), members)


def build_populations(
    hyperrep, zoo: Zoo, config: ReportConfig, *, tag: str = "LWLN", baselines: bool = True,
    samplers: list[str] | None = None, train: ImageSet | None = None,
) -> tuple[list[tuple[Population, str, str]], list[str]]:
    """(population, kind, hyper-rep tag) for every sampler (the guided ones when `train` images
    are given), reconstructed anchors and, with `baselines`, re-trained B_T, B_F from the anchor
    pool and the extra noise rows; and a note for each sampler skipped for too few anchors."""
    n, seed = config.models_per_method, config.seed
    table = hyperrep.latent_table
    rows = top_train_anchors(table, config.anchor_fraction)
    anchors = hyperrep.latents[torch.as_tensor(rows)]
    weights = anchor_weights(zoo, table, rows)
    info = table.iloc[rows].reset_index(drop=True)
    suffix = "" if tag == "LWLN" else f" [{tag}]"
    out, skipped = [], []
    for name in samplers if samplers is not None else config.samplers:
        if len(rows) < SAMPLERS[name].min_anchors:
            skipped.append(f"{name}{suffix} (needs {SAMPLERS[name].min_anchors} anchors, has {len(rows)})")
            continue
        population = draw_population(hyperrep, name, {}, rows, n, seed)
        population.label = sampler_label(name, config.anchor_fraction) + suffix
        out.append((population, "sampler", tag))
    if train is not None:
        bases = [b for b in config.guided_bases if len(rows) >= SAMPLERS[b].min_anchors]
        skipped += [f"S_guided ({b}){suffix} (needs {SAMPLERS[b].min_anchors} anchors, has {len(rows)})"
                    for b in config.guided_bases if b not in bases]
        guided, refined = [], []
        for population in guided_populations(hyperrep, zoo, anchors, train, replace(config, guided_bases=bases)):
            (guided if population.label.startswith("S_guided") else refined).append(population)
        out += [(p, "sampler", tag) for p in guided] + [(p, "baseline", "-") for p in refined]
    recon = reconstruction_baseline(hyperrep.model, weights, n, seed, anchor_info=info)
    recon.label = f"reconstructed (top {config.anchor_fraction:.0%}){suffix}"
    out.append((recon, "baseline", tag))
    if baselines:
        scratch = scratch_baseline(zoo, n, seed)
        scratch.label = RETRAINED_B_T
        out.append((scratch, "baseline", "-"))
        out.append((anchor_pool_baseline(weights, info, n, seed), "baseline", "-"))
        for sigma in config.noise_sigmas:
            noisy = noise_baseline(weights, sigma, n, seed, anchor_info=info)
            noisy.label = f"noise σ={sigma:g} (top {config.anchor_fraction:.0%})"
            out.append((noisy, "baseline", "-"))
    return out, skipped


def frontier_references(hyperrep, zoo: Zoo, config: ReportConfig):
    """The frontier's reference populations around the report's anchors (hyperrep.evaluation.frontier)."""
    table = hyperrep.latent_table
    weights = anchor_weights(zoo, table, top_train_anchors(table, config.anchor_fraction))
    return reference_populations(weights, config.frontier_settings(), config.seed)


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
