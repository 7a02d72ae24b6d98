"""Which zoo design can an autoencoder generalise over? Builds three small zoos that differ only
in how models start: a seed zoo (each model from its own init, as the public zoos), one shared
start, and 4 shared starts; then fits PCA on each train split and rebuilds its test split (plain
and canonical neuron order), printing R² and kept accuracy (bench/reconstruction_ceiling.py's
measures). The docs/benchmarks.md "Autoencoder" section quotes its output.

Usage: python bench/zoo_design_pilot.py [--models 48] [--epochs 3] [--workers 2]   (~5 min)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from reconstruction_ceiling import kept_accuracy, pca_rebuilds, r_squared

from hyperrep.data import load_split
from hyperrep.population import evaluate_population
from hyperrep.weights import canonicalize
from hyperrep.zoo_build import BuildConfig, build_zoo

DESIGNS = {"seed zoo": None, "one shared start": 1, "4 shared starts": 4}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=48)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--images", type=int, default=1000, help="first N test images")
    args = parser.parse_args()
    data = load_split("test").subset(torch.arange(args.images))
    print(f"{args.models} models × {args.epochs} epochs per zoo, Adam lr log-uniform [3e-4, 1e-2], kaiming-uniform, "
          f"split 75/0/25; states of epochs 1..{args.epochs}; first {args.images} test images")
    print("zoo | order | R² with 8 / 32 / 64 components | kept accuracy with 8 / 32 / 64")
    with tempfile.TemporaryDirectory() as folder:
        for name, families in DESIGNS.items():
            config = BuildConfig(name=name, n_models=args.models, epochs=args.epochs, learning_rate=[3e-4, 1e-2],
                                 init="kaiming_uniform", init_families=families, model_split=[0.75, 0.0, 0.25])
            zoo = build_zoo(config, Path(folder) / str(families), workers=args.workers)
            epochs = list(range(1, args.epochs + 1))
            train, test = zoo.samples("train", epochs)[0], zoo.samples("test", epochs)[0]
            original = evaluate_population(zoo.architecture, zoo.activation, test, data).accuracy
            for order in ("plain", "canonical"):
                fit, held = (train, test) if order == "plain" else (canonicalize(zoo.architecture, train),
                                                                  canonicalize(zoo.architecture, test))
                rebuilds = list(pca_rebuilds(zoo.architecture, fit, held, (8, 32, 64)))
                rsq = " / ".join(f"{r_squared(r, held, fit.mean(dim=0)):.2f}" for _, r in rebuilds)
                kept = " / ".join(f"{kept_accuracy(zoo, r, original, data):.2f}" for _, r in rebuilds)
                print(f"{name} | {order} | {rsq} | {kept}", flush=True)


if __name__ == "__main__":
    main()
