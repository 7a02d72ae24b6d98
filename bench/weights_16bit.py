"""How much storing a hyper-representation in 16 bits moves what it decodes, and the conversion.

    .venv/bin/python bench/weights_16bit.py data/seed-hyperrep [--images 1000] [--write [--drop-projection-head]]

Decodes every val and test model of the zoo (encode, decode) with the float32 weights and with
the same weights rounded to float16, evaluates both reconstructions on the zoo's first test
images, and prints per split the mean and largest change of accuracy (points) and how many
predictions change. `--write` then stores model.safetensors and latents.safetensors in float16
(training.storage_dtype in config.json says so), as `hyperrep train` does with storage_dtype
"float16"; metrics.json keeps the float32 figures it was trained with. `--drop-projection-head`
also leaves out the NT-Xent projection head (store_projection_head false), which only training uses.
The goal (MEAN_CHANGE_GOAL): the mean accuracy change of each split <= 0.1 points; `--check` exits 1
when it is missed, `--record` appends the figures to docs/bench-results/weights_16bit.csv
(bench/record.py).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from record import Figure, add_options, finish

from hyperrep.ae.artifact import load_hyperrep, reconstruct_weights
from hyperrep.ae.config import PROJECTION_HEAD, stored_as
from hyperrep.ae.quality import load_eval_images
from hyperrep.io.files import read_json, read_tensors, write_json, write_tensors
from hyperrep.nets.population import evaluate_population
from hyperrep.zoo.format import Zoo

MEAN_CHANGE_GOAL = 0.1  # accuracy points, mean over a split's decoded models


def rounded_to_16bit(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of `model` whose floating weights went through float16 once."""
    model = copy.deepcopy(model)
    model.load_state_dict({k: stored_as(v, "float16").to(v.dtype) for k, v in model.state_dict().items()})
    return model


def compare(folder: Path, images: int) -> tuple[list[str], list[Figure]]:
    """The printed lines and, per split, the figures: mean (against MEAN_CHANGE_GOAL) and largest
    accuracy change in points, and the share of predictions changed in %."""
    hyperrep = load_hyperrep(folder)
    zoo = Zoo.load(hyperrep.zoo_path)
    image_set = load_eval_images(zoo, images, None, torch.device("cpu"))
    epochs = hyperrep.config["zoo_epochs"]
    half = rounded_to_16bit(hyperrep.model)
    stored = hyperrep.config.get("training", {}).get("storage_dtype", "float32")
    lines = [f"{folder}: {sum(p.numel() for p in hyperrep.ae.model.parameters()):,} parameters stored as {stored}, "
             f"{images} test images"]
    figures = []
    for split in ("val", "test"):
        weights, _ = zoo.samples(split, epochs)
        full_eval, half_eval = (evaluate_population(zoo.architecture, zoo.activation, reconstruct_weights(m, weights), image_set,
                                                    keep_predictions=True) for m in (hyperrep.model, half))
        change = abs(half_eval.accuracy - full_eval.accuracy) * 100
        flipped = (half_eval.predictions != full_eval.predictions).float().mean() * 100
        lines.append(f"  {split}: {len(weights)} decoded models, accuracy change mean {change.mean():.3f} points, "
                     f"largest {change.max():.3f} points; predictions changed {flipped:.3f} %")
        figures += [Figure(f"{split}_mean_accuracy_change_points", float(change.mean()), at_most=MEAN_CHANGE_GOAL),
                    Figure(f"{split}_largest_accuracy_change_points", float(change.max())),
                    Figure(f"{split}_predictions_changed_percent", float(flipped))]
    return lines, figures


def write_16bit(folder: Path, drop_projection_head: bool = False) -> None:
    """Store the model and latents of `folder` in float16 (each file replaced atomically), the
    model without its projection head if asked."""
    for name in ("latents.safetensors", "model.safetensors"):
        tensors = read_tensors(folder / name)
        write_tensors(folder / name, {k: stored_as(v, "float16") for k, v in tensors.items()
                                      if not (drop_projection_head and k.startswith(PROJECTION_HEAD))})
    config = read_json(folder / "config.json")
    config["training"]["storage_dtype"] = "float16"
    if drop_projection_head:
        config["training"]["store_projection_head"] = False
    write_json(folder / "config.json", config)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("folder", type=Path, help="a hyper-representation trained in float32")
    parser.add_argument("--images", type=int, default=1000, help="test images per evaluation")
    parser.add_argument("--write", action="store_true", help="then store its weights and latents in float16")
    parser.add_argument("--drop-projection-head", action="store_true",
                        help="with --write: leave the NT-Xent projection head (training only) out of model.safetensors")
    args = add_options(parser).parse_args()
    lines, figures = compare(args.folder, args.images)
    print("\n".join(lines), flush=True)
    if args.write:
        write_16bit(args.folder, args.drop_projection_head)
        print(f"{args.folder}: model.safetensors and latents.safetensors now float16"
              + (", without the projection head" if args.drop_projection_head else ""))
    return finish(args, "weights_16bit", figures)


if __name__ == "__main__":
    raise SystemExit(main())
