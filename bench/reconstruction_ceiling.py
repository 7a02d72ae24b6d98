"""How well can ANY compressor rebuild held-out zoo models? Two measurements behind
docs/benchmarks.md's "Autoencoder" section:

1. Accuracy vs R²: add independent noise of k·σ_l to held-out models and measure the R² of the
   noisy weights and the kept accuracy (rebuilt / original, models above 50 %); and the same
   figures for two references that use no latent: the train split's mean model, and the nearest
   train-split state of each held-out model.
2. PCA ceiling: fit PCA on the train split's σ-scaled weights (epochs 1-5, or --epochs), in plain and in
   canonical neuron order, and rebuild the test split with 8..256 components. Run it on a seed
   zoo and on a shared-init zoo to see why the default zoo shares its initial state.

Usage: python bench/reconstruction_ceiling.py [--zoo data/zoo] [--images 1000] [--epochs 1 2 3 4 5] [--record]

`--record` appends every printed R² and kept accuracy to docs/bench-results/reconstruction_ceiling.csv
(bench/record.py); the bench states no goal, so `--check` has none to check.
"""

from __future__ import annotations

import argparse

import torch
from record import Figure, add_options, finish

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


def noise_rows(zoo: Zoo, train, test, original, data) -> list[Figure]:
    """Print R² and kept accuracy of held-out models with noise k·σ_l added; return them as figures."""
    sigma, mean, found = parameter_sigmas(zoo.architecture, train), train.mean(dim=0), []
    print("\nnoise k·σ_l on held-out models | R² | kept accuracy")
    for k in (0.1, 0.2, 0.3):
        noisy = test + k * sigma * torch.randn_like(test)
        rsq, kept = r_squared(noisy, test, mean), kept_accuracy(zoo, noisy, original, data)
        found += [Figure(f"noise{k:.1f}/rsq", rsq), Figure(f"noise{k:.1f}/kept", kept)]
        print(f"  k = {k:.1f} | {rsq:.3f} | {kept:.3f}")
    return found


def reference_rows(zoo: Zoo, train, test, data) -> list[Figure]:
    """Print the two references that use no latent (mean model, nearest train state); return their figures."""
    arch, mean, found = zoo.architecture, train.mean(dim=0), []
    print("\nreferences that use no latent | R² | kept accuracy | same predictions | accuracy correlation")
    with_predictions = evaluate_population(arch, zoo.activation, test, data, keep_predictions=True)
    nearest = train[torch.cdist(test, train).argmin(dim=1)]
    for name, rebuilt in (("the train split's mean model", mean.expand_as(test)), ("nearest train-split state (L2)", nearest)):
        figures = accuracy_figures(with_predictions, evaluate_population(arch, zoo.activation, rebuilt, data, keep_predictions=True))
        correlation = "–" if figures["acc_correlation"] is None else f"{figures['acc_correlation']:.3f}"
        label, rsq = "mean_model" if "mean" in name else "nearest_train", r_squared(rebuilt, test, mean)
        found += [Figure(f"{label}/rsq", rsq), Figure(f"{label}/kept", figures["acc_ratio_above_threshold"]),
                  Figure(f"{label}/agreement", figures["prediction_agreement"])]
        print(f"  {name} | {rsq:.3f} | {figures['acc_ratio_above_threshold']:.3f} | "
              f"{figures['prediction_agreement']:.3f} | {correlation}")
    return found


def pca_rows(zoo: Zoo, train, test, original, data, order: str) -> list[Figure]:
    """Print PCA's rebuilds of the test split in `order` ("plain" or "canonical"); return their figures."""
    arch, found = zoo.architecture, []
    fit, held = (train, test) if order == "plain" else (canonicalize(arch, train), canonicalize(arch, test))
    print(f"\nPCA on the train split, applied to the test split, {order} neuron order | R² | kept accuracy")
    for components, rebuilt in pca_rebuilds(arch, fit, held, (8, 32, 64, 128, 256)):
        rsq, kept = r_squared(rebuilt, held, fit.mean(dim=0)), kept_accuracy(zoo, rebuilt, original, data)
        found += [Figure(f"pca_{order}_{components}/rsq", rsq), Figure(f"pca_{order}_{components}/kept", kept)]
        print(f"  {components:3d} components | {rsq:.3f} | {kept:.3f}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoo", default="data/zoo")
    parser.add_argument("--images", type=int, default=1000, help="first N test images")
    parser.add_argument("--epochs", type=int, nargs="+", default=[1, 2, 3, 4, 5],
                        help="saved epochs to fit and rebuild (the seed zoo: 21 22 23 24 25)")
    args = add_options(parser).parse_args()
    torch.manual_seed(0)
    zoo = Zoo.load(args.zoo)
    arch = zoo.architecture
    data = load_split("test").subset(torch.arange(args.images))
    train, _ = zoo.samples("train", epochs=args.epochs)
    test, _ = zoo.samples("test", epochs=args.epochs)
    original = evaluate_population(arch, zoo.activation, test, data).accuracy
    print(f"zoo {zoo.name}: {len(train)} train / {len(test)} test states, first {args.images} test images, "
          f"{int((original > 0.5).sum())} test states above 50 %")

    first, last = zoo.weights[:, 0], zoo.weights[:, -1]
    cosine = torch.nn.functional.cosine_similarity(first, last, dim=1).median()
    print(f"median cosine between each model's epoch-{zoo.epochs[0]} and epoch-{zoo.epochs[-1]} weights: {cosine:.2f}")

    found = [Figure("median_cosine_first_last_epoch", float(cosine))]
    found += noise_rows(zoo, train, test, original, data)
    found += reference_rows(zoo, train, test, data)
    for order in ("plain", "canonical"):
        found += pca_rows(zoo, train, test, original, data, order)
    return finish(args, "reconstruction_ceiling", found)


if __name__ == "__main__":
    raise SystemExit(main())
