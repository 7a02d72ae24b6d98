"""Transfer learning as in the paper: samples of a hyper-representation of zoo A fine-tuned on dataset B.

Next to the samples, B_T (fresh initialisations drawn as zoo A's build drew them, trained on B from
scratch) and B_F (zoo A's train-split models at their last epoch, fine-tuned on B) are trained for
the same epochs with zoo A's optimiser settings on B's training images and evaluated on B's test
images; the statistics are the report's (mean ± std, bootstrap CI, Mann-Whitney U against B_T,
Holm-corrected).
Dataset B is any folder `hyperrep.images.datasets` reads (IDX, CIFAR-10, SVHN, STL-10), brought to zoo A's
input shape with the public zoos' preprocessing and normalised by its own statistics.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pandas as pd

from hyperrep.evaluation.evaluate import zoo_training_settings
from hyperrep.images.datasets import DatasetRule, ImageSet, build_dataset_rule
from hyperrep.io import image_formats
from hyperrep.io.files import write_json
from hyperrep.pipeline.artifacts import PAPER, artifact_kind, load_hyperrep_with_zoo
from hyperrep.pipeline.report import evaluate_all, summarise
from hyperrep.pipeline.report_files import write_report
from hyperrep.pipeline.report_populations import build_populations, paper_populations
from hyperrep.pipeline.report_types import BASELINE, RETRAINED_B_T, ReportConfig
from hyperrep.runtime.device import pick_device
from hyperrep.sampling.baselines import zoo_baseline
from hyperrep.zoo.format import Zoo

DEFAULT_SAMPLERS = ["kde", "gaussian"]


def target_name(data_dir: Path | str, dataset: str | None = None) -> str:
    """Dataset B's name: given, else the format its files show (cifar10, svhn, stl10), else the folder's name."""
    if dataset:
        return dataset
    return image_formats.format_of(Path(data_dir), None) or Path(data_dir).resolve().name.lower()


def target_rule(zoo: Zoo, data_dir: Path | str, dataset: str | None = None) -> DatasetRule:
    """How dataset B is read for zoo A's CNNs: its format and statistics, zoo A's input shape."""
    arch = zoo.architecture
    return build_dataset_rule(target_name(data_dir, dataset), data_dir, shape=(arch.in_channels, arch.image_size))


def target_images(rule: DatasetRule, data_dir: Path | str, config: ReportConfig) -> tuple[ImageSet, ImageSet]:
    """B's fine-tuning images (seeded, from the training part) and its first test images."""
    return (rule.training_images(config.fine_tune_images, config.seed, data_dir),
            rule.first_images(config.test_images, data_dir))


def run_transfer(
    hyperrep_dir: Path | str, data_dir: Path | str, out: Path | str, *, dataset: str | None = None,
    config: ReportConfig | None = None, workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Samples of `hyperrep_dir` vs B_T and B_F, all fine-tuned on the dataset in `data_dir`; writes
    transfer.md (+ the report's csv/png files) to `out` and returns the summary table. A paper
    hyper-representation folder brings its zoo (dataset.pt) and adds its pre-sampled populations."""
    config = config or ReportConfig(samplers=list(DEFAULT_SAMPLERS), ablation_samplers=[], noise_sigmas=[],
                                    fine_tune_models=None)
    config.validate()
    started = time.time()
    hyperrep, zoo, _ = load_hyperrep_with_zoo(hyperrep_dir)
    rule = target_rule(zoo, data_dir, dataset)
    train, test = target_images(rule, data_dir, config)
    populations, skipped, _ = build_populations(hyperrep, zoo, config)
    if artifact_kind(hyperrep_dir) == PAPER:  # the authors' samples; their direct/ (B_F) is zoo_baseline's
        populations += [item for item in paper_populations(hyperrep_dir, zoo, config) if item[1] == "sampler"]
    populations = [item for item in populations if not item[0].label.startswith(("reconstructed", "B_F"))]
    for population, _, _ in populations:  # on another dataset fresh initialisations are the only B_T
        population.label = BASELINE if population.label == RETRAINED_B_T else population.label
    populations.append((zoo_baseline(zoo, config.models_per_method, config.seed), "baseline", "-"))
    populations.sort(key=lambda item: item[0].label != BASELINE)
    device = pick_device()
    if device.type == "cpu":
        workers = workers or os.cpu_count() or 1
    else:
        workers, train, test = 1, train.to(device), test.to(device)
    results = evaluate_all(populations, zoo, train, test, config, workers=workers, progress=progress)
    summary = summarise(results, config)
    out = Path(out)
    header = transfer_header(hyperrep, zoo, rule, data_dir, config, (len(train), len(test)), time.time() - started, skipped)
    write_report(results, summary, out, header)
    (out / "report.md").replace(out / "transfer.md")
    write_json(out / "transfer_config.json", {**asdict(config), "hyperrep": str(hyperrep_dir), "data_dir": str(data_dir),
                                              "dataset": rule.name, "normalisation": list(rule.normalisation),
                                              "device": str(device), "workers": workers,
                                              "seconds": round(time.time() - started, 1)})
    return summary


def transfer_header(hyperrep, zoo: Zoo, rule: DatasetRule, data_dir, config: ReportConfig, sizes: tuple[int, int],
                    seconds: float, skipped: list[str]) -> str:
    epochs = "/".join(map(str, sorted(set(config.fine_tune_epochs) | {0})))
    settings = zoo_training_settings(zoo)
    source = zoo.manifest.get("dataset", {}).get("name", "?") if isinstance(zoo.manifest.get("dataset"), dict) else "?"
    return "\n".join([
        f"# Transfer learning: zoo `{zoo.name}` ({source}) -> `{rule.name}`",
        "",
        f"Hyper-representation `{hyperrep.path}` of zoo `{zoo.name}` ({zoo.n_models} {zoo.architecture.name} models "
        f"trained on {source}). Target dataset `{rule.name}` from `{data_dir}`, brought to "
        f"{zoo.architecture.in_channels}x{zoo.architecture.image_size}x{zoo.architecture.image_size} and normalised "
        f"with mean {rule.normalisation[0]:.4g}, std {rule.normalisation[1]:.4g}.",
        f"{config.models_per_method} models per population, seed {config.seed}; sampler anchors: top "
        f"{config.anchor_fraction:.0%} of the hyper-representation's train rows. Every population is fine-tuned on "
        f"{sizes[0]} training images of the target ({settings.optimizer}, lr {settings.lr:.2g}, batch "
        f"{settings.batch_size}) and evaluated on its first {sizes[1]} test images at epochs {epochs}.",
        "B_T = fresh initialisations drawn as the zoo's build drew them, trained on the target from scratch; "
        "B_F = the zoo's train-split models at their last saved epoch, fine-tuned on the target.",
        "Cells: mean ± std [bootstrap 95 % CI of the mean] of test accuracy in %; p: two-sided Mann-Whitney U "
        "against B_T at the same epoch, Holm-corrected over every test in the table; distance and IoU: to the nearest zoo-A model (mistakes on the target's images).",
        *([f"Skipped samplers: {'; '.join(skipped)}."] if skipped else []),
        f"Generated by `hyperrep transfer` in {seconds / 60:.1f} min.",
    ])
