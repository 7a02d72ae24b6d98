"""How well can ANY compressor rebuild held-out zoo models? Two measurements behind
docs/benchmarks.md's "Autoencoder" section:

1. Accuracy vs R²: add independent noise of k·σ_l to held-out models and measure the R² of the
   noisy weights and the kept accuracy (rebuilt / original, models above 50 %); and the same
   figures for two references that use no latent: the train split's mean model, and the nearest
   train-split state of each held-out model.
2. PCA ceiling: fit PCA on the train split's σ-scaled weights (epochs 1-5, or --epochs), in plain and in
   canonical neuron order, and rebuild the test split with 8..256 components. Run it on a seed
   zoo and on a shared-init zoo to see why the default zoo shares its initial state.

Usage: python bench/reconstruction_ceiling.py [--zoo data/zoo] [--images 1000] [--epochs 1 2 3 4 5]
"""

from __future__ import annotations

import argparse

import torch

from hyperrep.images.datasets import load_split
from hyperrep.nets.permutations import canonicalize
from hyperrep.nets.population import evaluate_population
from hyperrep.nets.weight_stats import parameter_sigmas, r_squared
from hyperrep.zoo.format import Zoo
from hyperrep.zoo.references import accuracy_figures, pca_rebuilds


def kept_accuracy(zoo: Zoo, rebuilt: torch.Tensor, original_acc: torch.Tensor, data) -> float:
    """Mean rebuilt/original accuracy over the models whose original accuracy is above 50 %."""
    acc = evaluate_population(zoo.architecture, zoo.activation, rebuilt, data).accuracy
    keep = original_acc > 0.5
    return float((acc[keep].nan_to_num(0.0) / original_acc[keep]).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default="data/zoo")
    parser.add_argument("--images", type=int, default=1000, help="first N test images")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 3, 4, 5],
                        help="saved epochs to fit and rebuild (the seed zoo: 21 22 23 24 25)")
    args = parser.parse_args()
    torch.manual_seed(0)
    zoo = Zoo.load(args.zoo)
    arch = zoo.architecture
    data = load_split("test").subset(torch.arange(args.images))
    train, _ = zoo.samples("train", epochs=args.epochs)
    test, _ = zoo.samples("test", epochs=args.epochs)
    mean = train.mean(dim=0)
    original = evaluate_population(arch, zoo.activation, test, data).accuracy
    print(f"zoo {zoo.name}: {len(train)} train / {len(test)} test states, first {args.images} test images, "
          f"{int((original > 0.5).sum())} test states above 50 %")

    first, last = zoo.weights[:, 0], zoo.weights[:, -1]
    cosine = torch.nn.functional.cosine_similarity(first, last, dim=1).median()
    print(f"median cosine between each model's epoch-{zoo.epochs[0]} and epoch-{zoo.epochs[-1]} weights: {cosine:.2f}")

    sigma = parameter_sigmas(arch, train)
    print("\nnoise k·σ_l on held-out models | R² | kept accuracy")
    for k in (0.1, 0.2, 0.3):
        noisy = test + k * sigma * torch.randn_like(test)
        print(f"  k = {k:.1f} | {r_squared(noisy, test, mean):.3f} | {kept_accuracy(zoo, noisy, original, data):.3f}")

    print("\nreferences that use no latent | R² | kept accuracy | same predictions | accuracy correlation")
    with_predictions = evaluate_population(arch, zoo.activation, test, data, keep_predictions=True)
    nearest = train[torch.cdist(test, train).argmin(dim=1)]
    for name, rebuilt in (("the train split's mean model", mean.expand_as(test)), ("nearest train-split state (L2)", nearest)):
        figures = accuracy_figures(with_predictions, evaluate_population(arch, zoo.activation, rebuilt, data, keep_predictions=True))
        correlation = "–" if figures["acc_correlation"] is None else f"{figures['acc_correlation']:.3f}"
        print(f"  {name} | {r_squared(rebuilt, test, mean):.3f} | {figures['acc_ratio_above_threshold']:.3f} | "
              f"{figures['prediction_agreement']:.3f} | {correlation}")

    for order in ("plain", "canonical"):
        fit, held = (train, test) if order == "plain" else (canonicalize(arch, train), canonicalize(arch, test))
        print(f"\nPCA on the train split, applied to the test split, {order} neuron order | R² | kept accuracy")
        for components, rebuilt in pca_rebuilds(arch, fit, held, (8, 32, 64, 128, 256)):
            print(f"  {components:3d} components | {r_squared(rebuilt, held, fit.mean(dim=0)):.3f} | "
                  f"{kept_accuracy(zoo, rebuilt, original, data):.3f}")


if __name__ == "__main__":
    main()
