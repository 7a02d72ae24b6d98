"""The report's header: what was compared, on which images, with which choices and baselines, in words."""

from __future__ import annotations

import numpy as np

from hyperrep.evaluation.evaluate import zoo_training_settings
from hyperrep.pipeline.report_types import KAIMING_B_T, PAPER_B_T, RETRAINED_B_T, ZOO_B_T, ReportConfig, ZooReference
from hyperrep.pipeline.tuning import ImageSplit, Tuning
from hyperrep.zoo.format import Zoo


def paper_note(notes: tuple[str, ...], config: ReportConfig) -> str:
    """What the header says about a paper folder's zoo and its own rows."""
    imported = notes[0] if notes else "its dataset.pt"
    return (f"A paper hyper-representation folder: its zoo is {imported}. Rows tagged 'paper' are the authors' "
            f"pre-sampled populations (samples/<method>/, the first {config.models_per_method} checkpoints of each; "
            f"its direct/ folder holds zoo models, its B_F), evaluated and fine-tuned like the samplers; {PAPER_B_T} = "
            "the test-split accuracies recorded in zoos/<dataset>/zoo_testsplit.pt at the same epochs, on the whole "
            "test set and not re-evaluated (the file holds no weights: no distances, ensembles or IoU); its epochs are "
            "passes over the paper's whole training split, not over the fine-tuning images here.")


def report_header(hyperrep, ablation_dir, zoo: Zoo, config: ReportConfig, seconds: float, skipped: list[str],
                  reference: ZooReference, paper: str | None = None, *, split: ImageSplit, tuning: Tuning) -> str:
    epochs = "/".join(map(str, config.epochs))
    settings = zoo_training_settings(zoo)
    tuned = "all" if config.fine_tune_models is None else f"the first {config.fine_tune_models}"
    spacing = reference.spacing[np.isfinite(reference.spacing)]
    frontier = config.frontier_settings()
    return "\n".join([
        "# Sampling methods vs baselines",
        "",
        f"Hyper-representation `{hyperrep.path}` (latent dim {hyperrep.model.latent_dim}) of zoo `{zoo.name}` "
        f"({zoo.n_models} {zoo.architecture.name} models, {zoo.activation})"
        + (f"; ablation without LWLN `{ablation_dir}`." if ablation_dir else "."),
        *([paper] if paper else []),
        f"**Protocol: validation images choose, test images report.** Validation: {split.validation_source}; test: "
        f"{split.test_source}. On the validation images alone (tuning.json, tuning.csv; {tuning.choices['candidate_models']} "
        f"models per candidate, seed {tuning.choices['candidate_seed']}): the anchors are the top "
        f"{config.anchor_fraction:.0%} of the train rows by validation accuracy ({tuning.choices['anchors']} rows; the "
        "fraction chosen by the validation Δ of S_KDE indep.), each tuned sampler's parameter is chosen by its validation Δ "
        "(label), the noise σ grid reaches past the farthest candidate (no images), and each step size of the step-budget "
        "section by validation accuracy. Every number below is on the test images.",
        f"{config.models_per_method} models per method, seed {config.seed}. Every member is "
        f"evaluated zero-shot; {tuned} of each method are fine-tuned on {config.fine_tune_images} training images "
        f"({settings.optimizer}, lr {settings.lr:.2g}, batch {settings.batch_size}). Evaluated on the first "
        f"{config.test_images} test images at epochs {epochs}.",
        f"Baselines: {ZOO_B_T} = the zoo's test-split models trained from scratch, read at the same epochs (the paper's "
        f"B_T); {RETRAINED_B_T} = fresh initialisations drawn as the zoo's build drew them, fine-tuned like the samples; "
        f"{KAIMING_B_T} = fresh kaiming-uniform initialisations (the standard one), fine-tuned alike; "
        "B_F = models drawn from the anchors' pool (at epoch 0 the anchors themselves, the samplers' fair reference), "
        "fine-tuned; the anchors are also the frontier's point at distance 0 (frontier.csv); reconstructed = "
        "decode(encode(anchor)). The step-budget rows (budgets.csv, the section below the table) refine the same "
        "S_KDE indep. starts by gradient steps of the task loss on the same training images: through the frozen decoder "
        "(guided), on the decoded weights, on the anchors' weights, or half and half. Samplers are named by the paper's "
        "name and the registry name (`hyperrep.sampling.samplers.SAMPLERS`); kde_legacy is the published S_KDE "
        "(near-copies of anchors).",
        f"Frontier (`hyperrep.evaluation.frontier`, {frontier.models} models per reference): noise on the anchors at σ = "
        f"{', '.join(f'{s:g}' for s in frontier.sigmas)}; averages of k = {', '.join(map(str, frontier.average_sizes))} "
        f"random anchors; a per-coordinate Gaussian fitted to the anchors' weights at scales "
        f"{', '.join(f'{s:g}' for s in frontier.gaussian_scales)}. Each reference is a point (median zero-shot distance, "
        "mean accuracy), each family a piecewise-linear curve, the frontier their upper envelope. Δ = a method's mean "
        "accuracy minus the frontier's at the method's median zero-shot distance to the **train models at the anchors' "
        "epochs**, at the same fine-tuning epoch; its 95 % CI is a percentile bootstrap over the members of the method and "
        "of every reference (frontier.csv, frontier.png). Multiplicity: report.csv also gives each sampler's Δ interval "
        "at the family-wise level over every sampler row (Bonferroni: frontier_delta_fw_lo/hi) and its bootstrap p, "
        "Holm-corrected over the samplers at each epoch (frontier_delta_p_holm).",
        "Cells: mean ± std [bootstrap 95 % CI of the mean] of test accuracy in %. p: two-sided Mann-Whitney U against "
        "B_T (the zoo's test split; else a paper folder's recorded one; else the re-trained one) at the same epoch, "
        "Holm-corrected over every test in the table; 'sep.' = complete separation: every member on one side of every B_T member, where p sits at the "
        "smallest value the sample sizes allow and says nothing more (report.csv: p_vs_B_T, p_floor, p_holm, "
        f"separated, above_B_T). Ensembles: mean accuracy of disjoint {config.ensemble_size}-member ensembles "
        "(averaged softmax) of the fine-tuned members.",
        "Distance: median L2 distance of the zero-shot weights (any neuron order: plain, canonical, or matched layer by "
        "layer) to the nearest train model at the anchors' epochs (the frontier's), then to the nearest checkpoint of the "
        "whole zoo (any model, any saved epoch, early ones included; report.csv: nearest_early_share = the share nearest "
        "an epoch-0/1 checkpoint), and in brackets the latter over the zoo's own median nearest-neighbour distance"
        + (f" ({np.median(spacing):.2f}; {spacing.min():.2f}–{spacing.max():.2f} over its train models at the last epoch)."
           if len(spacing) else "."),
        "IoU: median overlap of misclassified test images with the nearest zoo model / the largest over every zoo "
        "model (1 = the same mistakes). Invalid: members with NaN/inf weights or logits, excluded from the statistics.",
        *([f"Skipped: {'; '.join(skipped)}."] if skipped else []),
        f"Generated by `hyperrep report` in {seconds / 60:.1f} min.",
    ])
