"""The autoencoder tables of docs/benchmarks.md, read from trained hyper-representations.

    .venv/bin/python bench/hyperrep_quality.py [data/hyperrep data/hyperrep-no-lwln]
    .venv/bin/python bench/hyperrep_quality.py data/seed-hyperrep data/seed-hyperrep-no-lwln --heldout

Prints, for each folder: training time and size, then the reconstruction quality per split from
its metrics.json (written by `hyperrep train`), the mean-model reference, the per-layer σ of
the encoded differences (the model's `layer_scales`) and of the zoo's weights. Nothing is recomputed; the figures are the
ones training measured, so this takes a second. `--heldout` also rebuilds every val and test model
on the first 1,000 test images and prints agreement and accuracy ratio of the rebuilds and of
the nearest training models with 95 % bootstrap CIs over models (hyperrep.evaluation.heldout; a minute).
`--record` appends each folder's training time and, per split, ratio, agreement and R² to
docs/bench-results/hyperrep_quality.csv (bench/record.py). The goals these figures are read
against differ by zoo (docs/benchmarks.md), so `--check` has none to check here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from record import Figure, add_options, finish

from hyperrep.ae.artifact import load_hyperrep
from hyperrep.io.files import read_json
from hyperrep.zoo.format import Zoo

ROOT = Path(__file__).resolve().parent.parent
SPLITS = ("train", "val", "test")
RECORDED = ("acc_ratio_above_threshold", "prediction_agreement", "rsq")  # per split, from metrics.json


def loss_name(hyperrep) -> str:
    return "LWLN" if hyperrep.config.get("training", {}).get("lwln", True) else "no LWLN"


def quality_rows(folders: list[Path]) -> list[str]:
    """One Markdown row per split and folder, splits first (the layout of docs/benchmarks.md)."""
    loaded = [load_hyperrep(folder) for folder in folders]
    rows = ["| split | loss | states | acc original | acc rebuilt | states >50 % | mean ratio | share ≥ 90 % | corr. | "
            "agree | R² | R² per layer |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for split in SPLITS:
        for hyperrep in loaded:
            q = hyperrep.metrics["quality"][split]
            layers = " / ".join(f"{q[f'rsq_l{i}']:.2f}" for i in range(len(hyperrep.model.arch.layers)))
            rows.append(f"| {split} | {loss_name(hyperrep)} | {q['models']} | {q['acc_original']:.3f} | "
                        f"{q['acc_reconstructed']:.3f} | {q['models_above_threshold']} | {q['acc_ratio_above_threshold']:.3f} | "
                        f"{q['share_above_90pct']:.3f} | {q['acc_correlation']:.3f} | {q['prediction_agreement']:.3f} | "
                        f"{q['rsq']:.3f} | {layers} |")
    return rows


def summary_lines(folder: Path) -> list[str]:
    hyperrep = load_hyperrep(folder)
    metrics, quality = hyperrep.metrics, hyperrep.metrics["quality"]["test"]
    mean_model = quality["mean_model"]
    size = (folder / "model.safetensors").stat().st_size / 1e6
    scales = hyperrep.model.layer_scales.tolist()
    return [
        f"{folder}: {loss_name(hyperrep)}, {metrics['model_parameters']:,} parameters, model.safetensors {size:.1f} MB, "
        f"training {metrics['train_seconds']:.0f} s (metrics.json train_seconds), quality on the first "
        f"{metrics['final_eval_images']:,} test images",
        f"  test split, mean model: accuracy {mean_model['acc_reconstructed']:.3f}, ratio {mean_model['acc_ratio_above_threshold']:.3f}, "
        f"agreement {mean_model['prediction_agreement']:.3f}",
        "  per-layer σ of the encoded differences (layer_scales): " + " / ".join(f"{s:.3f}" for s in scales),
        "  per-layer σ of the train split's weights: " + " / ".join(f"{s:.3f}" for s in weight_scales(hyperrep)),
    ]


def weight_scales(hyperrep) -> list[float]:
    """σ of the weights (not of their differences to the mean) per layer, over the zoo's train split
    at the epochs the autoencoder was trained on."""
    zoo = Zoo.load(hyperrep.zoo_path)
    weights, _ = zoo.samples("train", hyperrep.config.get("zoo_epochs"))
    return [float(weights[:, part].std()) for part in zoo.architecture.layer_slices()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("folders", nargs="*", type=Path,
                        default=[ROOT / "data" / "hyperrep", ROOT / "data" / "hyperrep-no-lwln"])
    parser.add_argument("--heldout", action="store_true",
                        help="also rebuild the val and test models: CIs against the nearest training model")
    args = add_options(parser).parse_args()
    for folder in args.folders:
        print("\n".join(summary_lines(folder)))
    print()
    print("\n".join(quality_rows(args.folders)))
    if args.heldout:
        for folder in args.folders:
            print(f"\n{folder}:\n" + "\n".join(heldout_summary(folder)), flush=True)
    return finish(args, "hyperrep_quality", bench_figures(args.folders))


def bench_figures(folders: list[Path]) -> list[Figure]:
    """Per folder its training seconds and, per split, the RECORDED figures of its metrics.json."""
    found = []
    for folder in folders:
        metrics = read_json(folder / "metrics.json")
        found.append(Figure(f"{folder.name}/train_seconds", float(metrics["train_seconds"])))
        found += [Figure(f"{folder.name}/{split}/{key}", float(metrics["quality"][split][key]))
                  for split in SPLITS for key in RECORDED]
    return found


def heldout_summary(folder: Path, images: int = 1000) -> list[str]:
    """hyperrep.evaluation.heldout's figures for the val and test splits of `folder`."""
    from hyperrep.ae.quality import load_eval_images
    from hyperrep.evaluation.heldout import heldout_lines, heldout_reconstruction

    hyperrep = load_hyperrep(folder)
    zoo = Zoo.load(hyperrep.zoo_path)
    image_set = load_eval_images(zoo, images, None, torch.device("cpu"))
    return [line for split in ("val", "test") for line in heldout_lines(heldout_reconstruction(hyperrep, zoo, image_set, split))]


if __name__ == "__main__":
    raise SystemExit(main())
