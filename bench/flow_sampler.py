"""How long the flow samplers train on one CPU thread, and how good their decoded samples are.

    .venv/bin/python bench/flow_sampler.py [data/hyperrep data/seed-hyperrep] [--samples 20] [--images 1000]

For each hyper-representation: anchors = the top 30 % of its train split's rows by test accuracy
(as the app and the report choose them), then `flow` and `flow_cfg` (guided towards the anchors'
0.9 accuracy quantile) with their default parameters are trained and sampled with one torch
thread; `kde` and `gaussian` are drawn on the same anchors for reference. Each decoded sample is
evaluated zero-shot on the zoo's first test images. Prints the training seconds (training,
sampling and decoding) and the samples' mean and best accuracy next to the anchors' stored one.
The goal (TRAIN_SECONDS_GOAL): a flow sampler trains in <= 60 s; `--check` exits 1 when it is
missed, `--record` appends the figures to docs/bench-results/flow_sampler.csv (bench/record.py).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from record import Figure, add_options, finish

from hyperrep.nets.population import evaluate_population
from hyperrep.pipeline import experiment
from hyperrep.pipeline.artifacts import load_hyperrep_with_zoo
from hyperrep.zoo.format import zoo_dataset_rule

TRAIN_SECONDS_GOAL = 60.0
FLOWS = ("flow", "flow_cfg")
REFERENCES = ("kde", "gaussian")


def measure(folder: Path, samples: int, images: int) -> tuple[list[str], list[Figure]]:
    """The printed lines and figures of one hyper-representation: per sampler its seconds and its
    samples' mean zero-shot accuracy (%)."""
    hyperrep, zoo, _ = load_hyperrep_with_zoo(folder)
    table = hyperrep.latent_table
    rows = experiment.top_train_anchors(table)
    test = zoo_dataset_rule(zoo.manifest).first_images(images)
    anchor_acc = 100 * table["test_acc"].to_numpy()[rows].mean()
    lines = [f"{folder}: {len(rows)} anchors of dimension {hyperrep.latents.shape[1]} (stored test accuracy "
             f"{anchor_acc:.1f} %), {samples} samples each on {len(test)} test images, 1 thread"]
    figures = []
    for name in FLOWS + REFERENCES:
        sampler = experiment.build_sampler(hyperrep, name, {})
        start = time.perf_counter()
        population = experiment.draw_population(hyperrep, name, {}, rows, samples, seed=0, sampler=sampler)
        seconds = time.perf_counter() - start
        accuracy = 100 * evaluate_population(zoo.architecture, zoo.activation, population.weights, test).accuracy
        steps = f", {sampler.steps_done_} steps" if name in FLOWS else ""
        lines.append(f"  {name:9s} {seconds:6.1f} s{steps}: accuracy mean {np.nanmean(accuracy):.1f} %, "
                     f"best {np.nanmax(accuracy):.1f} %, worst {np.nanmin(accuracy):.1f} %")
        tag = f"{folder.name}_{name}"
        if name in FLOWS:
            figures.append(Figure(f"{tag}_train_seconds", seconds, at_most=TRAIN_SECONDS_GOAL))
        figures.append(Figure(f"{tag}_mean_accuracy", float(np.nanmean(accuracy))))
    return lines, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("folders", type=Path, nargs="*", default=[Path("data/hyperrep"), Path("data/seed-hyperrep")],
                        help="hyper-representations (default: the shipped ones)")
    parser.add_argument("--samples", type=int, default=20, help="models drawn per sampler")
    parser.add_argument("--images", type=int, default=1000, help="test images per evaluation")
    args = add_options(parser).parse_args()
    torch.set_num_threads(1)
    figures = []
    for folder in args.folders:
        lines, found = measure(folder, args.samples, args.images)
        print("\n".join(lines), flush=True)
        figures += found
    return finish(args, "flow_sampler", figures)


if __name__ == "__main__":
    raise SystemExit(main())
