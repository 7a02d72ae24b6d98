"""The seed-zoo autoencoder scaling study: capacity, epochs, augmentation and data, run by run.

    .venv/bin/python bench/seed_ae_scaling.py                  # every run not yet in the CSV, in order
    .venv/bin/python bench/seed_ae_scaling.py --only base-e40 latent256-e40
    .venv/bin/python bench/seed_ae_scaling.py --list           # the runs and whether they are done
    .venv/bin/python bench/seed_ae_scaling.py --figure         # redraw the figure, PCA table and fit from the CSV
    .venv/bin/python bench/seed_ae_scaling.py --record-run shipped-e150 data/seed-hyperrep  # a row from a trained folder

Every run is configs/seed_ae_study_base.json (the 1.8 M recipe shipped before this study) with the changes in RUNS, trained with
hyperrep.ae.train.train_hyperrep on data/seed-zoo (epochs 21-25). Its row in
docs/seed-ae-scaling/runs.csv holds the train, val and test figures of metrics.json (R^2,
accuracy ratio and prediction agreement of the reconstructions on 1,000 test images), the
held-out references (the nearest train model; PCA with latent_dim components), parameters,
counted training FLOPs, the training seconds (the epochs' wall time, summed over resumed
sessions) and the wall seconds of the last session (training, scoring and the map). Rows are appended as runs finish, so an
interrupted study continues where it stopped; a run is resumed from its own checkpoint.
Validation figures choose between runs; test figures are reported. `--record` (as every bench
takes it, bench/record.py) also appends the test and validation figures of the runs this
invocation trained or recorded to docs/bench-results/seed_ae_scaling.csv; the study states no
goal per run, so `--check` has none to check.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import time
from pathlib import Path

from record import Figure, add_options, finish

from hyperrep.ae.config import TrainConfig
from hyperrep.ae.model import matmul_flops
from hyperrep.ae.train import train_hyperrep
from hyperrep.zoo.format import Zoo

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "docs" / "seed-ae-scaling"
WORK = REPO / ".scaling-runs"  # checkpoints of unfinished runs (git-ignored)
BASE = REPO / "configs" / "seed_ae_study_base.json"

D256 = {"d_model": 256, "d_ff": 512, "latent_dim": 256}
D400 = {"d_model": 400, "d_ff": 800, "latent_dim": 448}
L700 = {"latent_dim": 700}
# name: (model changes, training changes, train models kept (None: all), note)
RUNS: dict[str, tuple[dict, dict, int | None, str]] = {
    "base-e40": ({}, {"epochs": 40}, None, "the shipped recipe (1.8 M), 40 epochs"),
    "latent256-e40": ({"latent_dim": 256}, {"epochs": 40}, None, "latent 96 -> 256"),
    "latent700-e40": ({"latent_dim": 700}, {"epochs": 40}, None, "latent 96 -> 700"),
    "nopermute-e40": ({}, {"epochs": 40, "augmentation": {"permute": False}}, None, "no permutation augmentation"),
    "center-e40": ({"center_inputs": True}, {"epochs": 40}, None, "encode the difference to the train mean"),
    "overfit20-e40": ({}, {"epochs": 40}, 20, "20 train models: can it memorise?"),
    "d256-e40": (D256, {"epochs": 40}, None, "d_model 256, latent 256 (8.8 M)"),
    "d400-e40": (D400, {"epochs": 40}, None, "d_model 400, latent 448 (23 M)"),
    "overfit20-steps": ({}, {"epochs": 433}, 20, "20 train models at base-e40's 2,600 steps"),
    "base-e120": ({}, {"epochs": 120}, None, "the shipped recipe, 120 epochs"),
    # the LWLN ablation at the shipped size, three training seeds per arm (seed 42's LWLN arm is latent700-e40)
    "latent700-nolwln-e40": (L700, {"epochs": 40, "lwln": False}, None, "latent 700, plain MSE"),
    "latent700-s1-e40": (L700, {"epochs": 40, "seed": 1}, None, "latent 700, seed 1"),
    "latent700-nolwln-s1-e40": (L700, {"epochs": 40, "seed": 1, "lwln": False}, None, "latent 700, plain MSE, seed 1"),
    "latent700-s2-e40": (L700, {"epochs": 40, "seed": 2}, None, "latent 700, seed 2"),
    "latent700-nolwln-s2-e40": (L700, {"epochs": 40, "seed": 2, "lwln": False}, None, "latent 700, plain MSE, seed 2"),
    "latent700-half-e40": (L700, {"epochs": 40}, 105, "latent 700, half the train models"),
    # the paper's batch sizes at equal epochs (so equal FLOPs, fewer steps; same learning rate)
    "latent700-b128-e40": (L700, {"epochs": 40, "batch_size": 128}, None, "latent 700, batch 128"),
    "latent700-b500-e40": (L700, {"epochs": 40, "batch_size": 500}, None, "latent 700, the paper's batch 500"),
    # the shipped pair (configs/paper_seed_hyperrep*.json), recorded from data/ with --record-run
    "shipped-e150": (L700, {"epochs": 150}, None, "shipped: latent 700, 150 epochs"),
    "shipped-nolwln-e150": (L700, {"epochs": 150, "lwln": False}, None, "shipped: latent 700, 150 epochs, plain MSE"),
}
# the two arms of the LWLN ablation, one row per training seed
ABLATION = {"LWLN": ["latent700-e40", "latent700-s1-e40", "latent700-s2-e40"],
            "plain MSE": ["latent700-nolwln-e40", "latent700-nolwln-s1-e40", "latent700-nolwln-s2-e40"]}
RECORDED = ("shipped-e150", "shipped-nolwln-e150")  # trained by `hyperrep train`, not by this script
FIGURES = ["rsq", "acc_ratio_above_threshold", "prediction_agreement"]
RECORDED_SPLITS = ("val", "test")  # the splits whose FIGURES --record writes, per run


def run_config(name: str) -> TrainConfig:
    model, training, _, _ = RUNS[name]
    raw = TrainConfig.from_file(BASE).to_dict()
    raw["model"].update(model)
    for key, value in training.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    raw["map_method"] = "pca"  # the study reads metrics, not the map
    return TrainConfig.from_dict(raw)


def study_zoo(train_models: int | None, source: Path = REPO / "data" / "seed-zoo", work: Path = WORK) -> Path:
    """`source`, or a copy whose train split keeps its first `train_models` models (val and test unchanged)."""
    if train_models is None:
        return source
    target = work / f"{source.name}-train{train_models}"
    if (target / "zoo.json").is_file():
        return target
    zoo = Zoo.load(source)
    kept = zoo.splits["train"][:train_models]
    dropped = set(zoo.splits["train"]) - set(kept)
    ids = [int(m) for m in zoo.model_ids if int(m) not in dropped]
    rows = zoo.rows_of(ids)
    manifest = {**zoo.manifest, "splits": {**zoo.manifest["splits"], "train": kept},
                "name": f"{zoo.name}-train{train_models}"}
    properties = zoo.properties[zoo.properties["model_id"].isin(ids)].reset_index(drop=True)
    Zoo(manifest, zoo.weights[rows].clone(), zoo.model_ids[rows].clone(), properties).save(target)
    return target


def done_runs(csv_path: Path) -> set[str]:
    if not csv_path.is_file():
        return set()
    with csv_path.open() as handle:
        return {row["run"] for row in csv.DictReader(handle)}


def result_row(name: str, config: TrainConfig, folder: Path, wall: float) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    quality, train_models = metrics["quality"], RUNS[name][2]
    n_train = quality["train"]["models"]
    row = {"run": name, "note": RUNS[name][3], "parameters": metrics["model_parameters"],
           "train_models": train_models or n_train // len(config.zoo_epochs), "epochs": config.epochs, "batch_size": config.batch_size,
           "latent_dim": config.model.latent_dim, "d_model": config.model.d_model,
           "train_pflop": round(3 * matmul_flops(config.model) * 2 * n_train * config.epochs / 1e15, 4),
           "train_s": round(metrics["train_seconds"]), "wall_s": round(wall)}
    for split in ("train", "val", "test"):
        for key in FIGURES:
            row[f"{split}_{key}"] = round(quality[split][key], 4)
    for split in ("val", "test"):
        for reference in ("nearest_train", "pca"):
            for key in FIGURES:
                row[f"{split}_{reference}_{key}"] = round(quality[split][reference][key], 4)
    return row


def append_row(csv_path: Path, row: dict) -> None:
    new = not csv_path.is_file()
    with csv_path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def train_run(name: str, csv_path: Path) -> dict:
    config = run_config(name)
    folder = WORK / name
    resume = (folder / "checkpoint").is_dir()
    if (folder / "model.safetensors").is_file() and not resume:
        shutil.rmtree(folder)  # finished but not recorded (killed between the two): retrain is cheaper than trust
    wall = time.time()
    print(f"== {name}: {RUNS[name][3]}", flush=True)
    train_hyperrep(study_zoo(RUNS[name][2]), folder, config, resume=resume, device="cpu",
                   log=lambda line: print(f"   {line}", flush=True))
    row = result_row(name, config, folder, time.time() - wall)
    append_row(csv_path, row)
    shutil.rmtree(folder)
    return row


def record_run(name: str, folder: Path, csv_path: Path) -> dict:
    """The row of a RECORDED run from the folder `hyperrep train` wrote; its settings must be the run's."""
    from hyperrep.io.files import read_json

    expected = run_config(name).to_dict()
    trained = TrainConfig.from_dict(read_json(folder / "config.json")["training"]).to_dict()
    ignored = {"map_method", "storage_dtype", "store_projection_head"}  # how the files are stored, not the model
    differ = sorted(k for k in expected if k not in ignored and expected[k] != trained[k])
    if differ:
        raise SystemExit(f"{folder}: trained with other settings than run {name} ({', '.join(differ)})")
    metrics = json.loads((folder / "metrics.json").read_text())
    row = result_row(name, run_config(name), folder, metrics["train_seconds"])
    append_row(csv_path, row)
    return row


def ablation_table(csv_path: Path) -> list[str]:
    """Mean over training seeds of each ABLATION arm, with a t 95 % interval, and the LWLN - MSE difference."""
    import numpy as np
    import pandas as pd
    from scipy import stats

    table = pd.read_csv(csv_path).set_index("run")
    if not all(run in table.index for runs in ABLATION.values() for run in runs):
        return [f"ablation: needs every run of {ABLATION}"]
    keys = {"train_rsq": "train R²", "test_rsq": "test R²", "test_prediction_agreement": "test agreement",
            "test_acc_ratio_above_threshold": "test ratio"}

    def interval(values: np.ndarray) -> str:
        half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
        return f"{values.mean():.3f} [{values.mean() - half:.3f}, {values.mean() + half:.3f}]"

    seeds = len(next(iter(ABLATION.values())))
    lines = [f"| arm ({seeds} seeds, latent 700, 40 epochs) | " + " | ".join(keys.values()) + " |",
             "|---|" + "---|" * len(keys)]
    arms = {arm: table.loc[runs] for arm, runs in ABLATION.items()}
    for arm, rows in arms.items():
        lines.append(f"| {arm} | " + " | ".join(interval(rows[k].to_numpy(float)) for k in keys) + " |")
    first, second = arms.values()  # paired by training seed
    lines.append("| LWLN − MSE (paired by seed) | " + " | ".join(
        interval(first[k].to_numpy(float) - second[k].to_numpy(float)) for k in keys) + " |")
    return lines


def pca_rows(components: list[int]) -> list[dict]:
    """PCA of the train states (epochs 21-25) with k components: R^2 of each split around the train
    mean, the same figure as the autoencoder's (a reconstruction without a network)."""
    import torch

    zoo = Zoo.load(REPO / "data" / "seed-zoo")
    splits = {name: zoo.samples(name, [21, 22, 23, 24, 25])[0] for name in ("train", "val", "test")}
    mean = splits["train"].mean(dim=0)
    _, _, basis = torch.linalg.svd(splits["train"] - mean, full_matrices=False)
    rows = []
    for k in components:
        row = {"components": k}
        for name, weights in splits.items():
            centred = weights - mean
            rebuilt = centred @ basis[:k].T @ basis[:k]
            row[f"{name}_rsq"] = round(float(1 - (centred - rebuilt).square().sum() / centred.square().sum()), 4)
        rows.append(row)
    return rows


SIZE_RUNS = ["base-e40", "latent256-e40", "latent700-e40", "d256-e40", "d400-e40"]  # one recipe, 40 epochs
AUTHORS_PARAMETERS = 71.2e6  # d_model 800, latent 700, d_ff 900, 2+2 blocks, projection 4 x 400 -> 50


def size_fit(csv_path: Path) -> list[str]:
    """Test agreement and R^2 against log10(parameters) over SIZE_RUNS, least squares, extrapolated to
    the authors' size, with a leave-one-out range (how much one run moves the extrapolation)."""
    import numpy as np
    import pandas as pd

    table = pd.read_csv(csv_path).set_index("run")
    runs = [r for r in SIZE_RUNS if r in table.index]
    if len(runs) < 3:
        return [f"size fit: needs >= 3 of {SIZE_RUNS}, has {runs}"]
    x = np.log10(table.loc[runs, "parameters"].to_numpy(float))
    lines = [f"size fit over {', '.join(runs)} (40 epochs, batch 16, all 210 train models): y = a + b log10(parameters)"]
    for key in ("test_prediction_agreement", "test_rsq", "train_rsq"):
        y = table.loc[runs, key].to_numpy(float)
        b, a = np.polyfit(x, y, 1)
        at = a + b * np.log10(AUTHORS_PARAMETERS)
        loo = [np.polyval(np.polyfit(np.delete(x, i), np.delete(y, i), 1), np.log10(AUTHORS_PARAMETERS))
               for i in range(len(x))]
        residual = y - (a + b * x)
        lines.append(f"  {key}: a {a:+.3f}, b {b:+.3f} per decade, residual sd {residual.std(ddof=2) if len(x) > 2 else 0:.3f}; "
                     f"at {AUTHORS_PARAMETERS / 1e6:.1f} M: {at:.3f} (leave-one-out {min(loo):.3f}..{max(loo):.3f})")
    return lines


def markdown_table(csv_path: Path) -> list[str]:
    """runs.csv as the table of docs/seed-ae-scaling/README.md (test figures; val chose nothing here)."""
    import pandas as pd

    table = pd.read_csv(csv_path)
    lines = ["| run | what changed | parameters | train models | epochs | train s | train R² | test R² | "
             "train agreement | test agreement | test ratio | test PCA R² / agreement | test nearest-train agreement |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        lines.append(f"| {r['run']} | {r['note']} | {r['parameters'] / 1e6:.1f} M | {r['train_models']} | {r['epochs']} | "
                     f"{r['train_s']} | {r['train_rsq']:.3f} | {r['test_rsq']:.3f} | {r['train_prediction_agreement']:.3f} | "
                     f"{r['test_prediction_agreement']:.3f} | {r['test_acc_ratio_above_threshold']:.3f} | "
                     f"{r['test_pca_rsq']:.3f} / {r['test_pca_prediction_agreement']:.3f} | "
                     f"{r['test_nearest_train_prediction_agreement']:.3f} |")
    return lines


def draw_figure(csv_path: Path, figure_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    import pandas as pd

    table = pd.read_csv(csv_path)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, key, label in ((axes[0], "rsq", "R$^2$ of the reconstruction"),
                           (axes[1], "prediction_agreement", "prediction agreement with the original")):
        ax.scatter(table["parameters"] / 1e6, table[f"train_{key}"], marker="o", label="train models")
        ax.scatter(table["parameters"] / 1e6, table[f"test_{key}"], marker="s", label="test models")
        ax.scatter(table["parameters"] / 1e6, table[f"test_pca_{key}"], marker="x", color="grey",
                   label="PCA, latent_dim components (test)")
        for _, row in table.iterrows():
            ax.annotate(row["run"], (row["parameters"] / 1e6, row[f"test_{key}"]), fontsize=7, alpha=0.7)
        ax.axhline(table[f"test_nearest_train_{key}"].median(), color="grey", ls="--", label="nearest train model (test)")
        ax.set_xscale("log")
        ax.set_xticks([1, 2, 5, 10, 20, 50])
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("autoencoder parameters (M)")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.suptitle("Seed-zoo autoencoder: bench/seed_ae_scaling.py")
    fig.tight_layout()
    fig.savefig(figure_path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--only", nargs="+", choices=sorted(RUNS), help="these runs (in this order), if not done")
    parser.add_argument("--list", action="store_true", help="list the runs and whether the CSV has them")
    parser.add_argument("--figure", action="store_true", help="only redraw the figure from the CSV")
    parser.add_argument("--record-run", nargs=2, metavar=("RUN", "FOLDER"),
                        help=f"append the row of RUN (one of {', '.join(RECORDED)}) from a folder `hyperrep train` wrote")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of runs.csv and scaling.png")
    args = add_options(parser).parse_args()
    csv_path, figure_path = args.out / "runs.csv", args.out / "scaling.png"
    done, rows = done_runs(csv_path), []
    if args.record_run:
        name, folder = args.record_run
        if name not in RECORDED:
            parser.error(f"--record-run: {name} is not one of {', '.join(RECORDED)}")
        if name in done:
            parser.error(f"--record-run: {csv_path} has {name} already")
        rows.append(record_run(name, Path(folder), csv_path))
        args.figure = True
    if args.list:
        for name, (_, _, _, note) in RUNS.items():
            print(f"{'done' if name in done else 'todo'}  {name:18s} {note}")
        return 0
    if not args.figure:
        args.out.mkdir(parents=True, exist_ok=True)
        for name in args.only or [run for run in RUNS if run not in RECORDED]:
            if name in RECORDED:
                parser.error(f"{name} is trained by `hyperrep train` (README); add its row with --record-run")
            if name not in done:
                row = train_run(name, csv_path)
                rows.append(row)
                print(f"   -> train R2 {row['train_rsq']:.3f}, val R2 {row['val_rsq']:.3f}, val agreement "
                      f"{row['val_prediction_agreement']:.3f} (nearest train {row['val_nearest_train_prediction_agreement']:.3f})",
                      flush=True)
    if csv_path.is_file():
        draw_figure(csv_path, figure_path)
        pca = pca_rows([96, 256, 448, 700, 1049])
        with (args.out / "pca.csv").open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(pca[0]))
            writer.writeheader()
            writer.writerows(pca)
        (args.out / "table.md").write_text("\n".join(markdown_table(csv_path)) + "\n")
        fit = size_fit(csv_path)
        (args.out / "size_fit.txt").write_text("\n".join(fit) + "\n")
        (args.out / "ablation.md").write_text("\n".join(ablation_table(csv_path)) + "\n")
        print("\n".join(fit))
    return finish(args, "seed_ae_scaling", bench_figures(rows))


def bench_figures(rows: list[dict]) -> list[Figure]:
    """The RECORDED_SPLITS' FIGURES and the training seconds of each row this invocation added."""
    return [Figure(f"{row['run']}/{name}", float(row[name])) for row in rows
            for name in ["train_s", *(f"{split}_{key}" for split in RECORDED_SPLITS for key in FIGURES)]]


if __name__ == "__main__":
    raise SystemExit(main())
