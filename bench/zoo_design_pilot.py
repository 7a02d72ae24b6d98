"""Which zoo can an autoencoder generalise over, and how big must a seed zoo be? Two studies.

`designs` (the default): three small zoos that differ only in how models start (a seed zoo, one
shared start, 4 shared starts), PCA fitted on each train split rebuilds its test split (plain and
canonical neuron order): R² and kept accuracy (bench/reconstruction_ceiling.py's measures).

`seed`: seed zoos on the public zoos' recipe (configs/paper_seed_zoo.json: Fashion-MNIST, CNN-s,
tanh, Adam 3e-4, batch 10, the 50k training images; only the seed varies), once per
initialisation (`uniform` as the public seed zoos, `kaiming_uniform` for contrast). For each
saved epoch and each number of train models it prints what rebuilds held-out models without a
latent (hyperrep.zoo.references): the mean model, the nearest train model and PCA's ceiling,
with "kept" (the share of the originals' mean accuracy above chance that the rebuilds keep:
(rebuilt − 10 %) / (original − 10 %)), per-image agreement with the originals,
R², and how far the nearest train model is against the median one. The build time per
model-epoch sizes the full build. docs/benchmarks.md quotes both studies' output.

Usage: python bench/zoo_design_pilot.py [designs] [--models 48] [--epochs 3] [--workers 2]   (~5 min)
       python bench/zoo_design_pilot.py seed [--models 32] [--epochs 12] [--save 0,1,2,4,8,12]
           [--counts 6,12,24] [--inits uniform,kaiming_uniform] [--train-images 50000]
           [--keep DIR] [--threads 1]
`--record` appends the printed figures (R² and kept accuracy per zoo, order and component count;
per seed-study row the references' kept and agreement) to docs/bench-results/zoo_design_pilot.csv
(bench/record.py); the studies state no goal, so `--check` has none to check.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from reconstruction_ceiling import kept_accuracy
from record import Figure, add_options, finish

from hyperrep.images.datasets import load_split
from hyperrep.nets.permutations import canonicalize
from hyperrep.nets.population import evaluate_population
from hyperrep.nets.weight_stats import r_squared
from hyperrep.zoo.build import BuildConfig, build_zoo
from hyperrep.zoo.format import Zoo
from hyperrep.zoo.references import pca_rebuilds, zoo_references

DESIGNS = {"seed zoo": None, "one shared start": 1, "4 shared starts": 4}
SEED_RECIPE = Path(__file__).resolve().parent.parent / "configs" / "paper_seed_zoo.json"


def designs(args) -> list[Figure]:
    """Print R² and kept accuracy of PCA's rebuilds per zoo design and neuron order; return them as figures."""
    found = []
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
                rsq = [r_squared(r, held, fit.mean(dim=0)) for _, r in rebuilds]
                kept = [kept_accuracy(zoo, r, original, data) for _, r in rebuilds]
                print(f"{name} | {order} | {' / '.join(f'{v:.2f}' for v in rsq)} | "
                      f"{' / '.join(f'{v:.2f}' for v in kept)}", flush=True)
                for (components, _), r, k in zip(rebuilds, rsq, kept):
                    found += [Figure(f"{name}/{order}/pca{components}/rsq", r),
                              Figure(f"{name}/{order}/pca{components}/kept", k)]
    return found


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the build's worker pool)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def seed_zoo(config: BuildConfig, folder: Path, workers: int) -> tuple[Zoo, float, float]:
    """Build (or load, when `folder` holds it) one pilot zoo; returns it with wall and CPU seconds."""
    if (folder / "zoo.json").is_file():
        zoo = Zoo.load(folder)
        if zoo.manifest.get("build") != json.loads(json.dumps(asdict(config))):
            raise SystemExit(f"{folder} holds a pilot zoo built with other settings; use another --keep folder")
        return zoo, float("nan"), float("nan")
    wall, cpu = time.time(), cpu_seconds()
    zoo = build_zoo(config, folder, workers=workers)
    return zoo, time.time() - wall, cpu_seconds() - cpu


def seed(args) -> list[Figure]:
    """Print the seed-zoo study's rows and table; return their references as figures."""
    torch.set_num_threads(args.threads)
    base = BuildConfig.from_file(SEED_RECIPE)
    saves = sorted({int(e) for e in args.save.split(",") if int(e) <= args.epochs} | {0, args.epochs})
    counts = [int(c) for c in args.counts.split(",")]
    components = tuple(int(c) for c in args.components.split(","))
    data = load_split("test").subset(torch.arange(args.images))
    print(f"seed zoos on {SEED_RECIPE.name} (lr {base.learning_rate}, batch {base.batch_size}, {args.train_images} "
          f"training images): {args.models} models × {args.epochs} epochs per init, split 75/0/25, saved epochs "
          f"{saves}; scored on the first {args.images} test images; {args.threads} torch thread(s), "
          f"{args.workers} build worker(s)")
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="seed-pilot-"))
    rows = []
    for init in args.inits.split(","):
        config = replace(base, name=f"pilot-{init}", init=init, n_models=args.models, epochs=args.epochs,
                         save_epochs=saves, train_images=args.train_images,
                         train_metric_images=min(base.train_metric_images, args.train_images),
                         test_images=args.images, model_split=[0.75, 0.0, 0.25])
        zoo, wall, cpu = seed_zoo(config, root / init, args.workers)
        model_epochs = args.models * args.epochs
        print(f"\n{init}: built {model_epochs} model-epochs in {wall:.0f} s wall, {cpu:.0f} CPU-s "
              f"({cpu / model_epochs:.2f} CPU-s per model-epoch of {args.train_images} images)", flush=True)
        for epoch in [e for e in saves if e > 0]:
            for count in counts:
                figures = zoo_references(zoo, [epoch], data, components, train_models=count)
                rows.append((init, epoch, count, figures))
                print(row_text(init, epoch, count, figures, components), flush=True)
    print("\n" + table(rows, components))
    return [figure for row in rows for figure in row_figures(*row, components)]


def row_figures(init: str, epoch: int, count: int, f: dict, components: tuple[int, ...]) -> list[Figure]:
    """One seed-study row's test accuracy, the references' kept and agreement, PCA's kept."""
    at = f"{init}/epoch{epoch}/train{count}"
    found = [Figure(f"{at}/test_acc", f["test_acc"]),
             Figure(f"{at}/mean_model_agreement", f["mean_model"]["prediction_agreement"]),
             Figure(f"{at}/nearest_kept", f["nearest"]["kept_above_chance"]),
             Figure(f"{at}/nearest_agreement", f["nearest"]["prediction_agreement"])]
    return found + [Figure(f"{at}/pca{k}_kept", f["pca"][k]["kept_above_chance"]) for k in components]


def row_text(init: str, epoch: int, count: int, f: dict, components: tuple[int, ...]) -> str:
    mean, near = f["mean_model"], f["nearest"]
    pca = " | ".join(f"{f['pca'][k]['rsq']:.2f} / {f['pca'][k]['kept_above_chance']:.2f} / {f['pca'][k]['prediction_agreement']:.2f}"
                     for k in components)
    canonical = " / ".join(f"{f['pca_canonical'][k]['kept_above_chance']:.2f}" for k in components)
    cosine = "–" if f["init_cosine"] is None else f"{f['init_cosine']:.2f}"
    return (f"| {init} | {epoch} | {count} | {f['test_acc']:.3f} | {cosine} | "
            f"{mean['acc_reconstructed']:.3f} / {mean['prediction_agreement']:.2f} | "
            f"{near['kept_above_chance']:.2f} / {near['prediction_agreement']:.2f} / {near['distance_ratio']:.2f} | "
            f"{pca} | {canonical} |")


def table(rows, components: tuple[int, ...]) -> str:
    head = ("| init | epoch | train models | test acc | cos(init) | mean model: acc / agree | "
            "nearest train: kept / agree / dist÷median | "
            + " | ".join(f"PCA {k}: R² / kept / agree" for k in components)
            + f" | PCA {' / '.join(map(str, components))} canonical: kept |")
    line = "|" + "---|" * (head.count("|") - 1)
    return "\n".join([head, line] + [row_text(*row, components) for row in rows])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", choices=("designs", "seed"), default="designs")
    parser.add_argument("--models", type=int, default=None, help="models per zoo (designs 48, seed 32)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (designs 3, seed 12)")
    parser.add_argument("--workers", type=int, default=None, help="build worker processes (designs 2, seed 1)")
    parser.add_argument("--images", type=int, default=1000, help="first N test images")
    parser.add_argument("--save", default="0,1,2,4,8,12", help="seed: saved epochs (0 and the last are added)")
    parser.add_argument("--counts", default="6,12,24", help="seed: numbers of train models to fit the references on")
    parser.add_argument("--components", default="8,32", help="seed: PCA components (cut to the train states' rank)")
    parser.add_argument("--inits", default="uniform,kaiming_uniform", help="seed: initialisations, comma-separated")
    parser.add_argument("--train-images", type=int, default=50_000, help="seed: training images per epoch")
    parser.add_argument("--threads", type=int, default=1, help="seed: torch threads")
    parser.add_argument("--keep", default=None, help="seed: folder to keep (and reuse) the built pilot zoos in")
    args = add_options(parser).parse_args()
    if args.study == "designs":
        args.models, args.epochs, args.workers = args.models or 48, args.epochs or 3, args.workers or 2
        found = designs(args)
    else:
        args.models, args.epochs, args.workers = args.models or 32, args.epochs or 12, args.workers or 1
        found = seed(args)
    return finish(args, "zoo_design_pilot", found)


if __name__ == "__main__":
    raise SystemExit(main())
