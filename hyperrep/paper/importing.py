"""The paper's published folders (hyper_reps.zip, zoos.zip) as our zoo format and comparison rows.

`hyper_reps/<dataset>/dataset.pt` holds the zoo the hyper-representation was trained on (weights,
properties, epochs and paths of every sample, split into train/val/test); `import_paper_dataset`
turns it into a zoo directory. `zoos/<dataset>/zoo_testsplit.pt` holds the accuracies of the
zoo's test models per epoch (the paper's B_T), and `hyper_reps/<dataset>/samples/<method>/
checkpoint_<i>.pt` the populations the authors sampled; both become extra comparison rows.
Every pickle is read by `hyperrep.paper.files` (allow-list, nothing executed).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from hyperrep.io.files import ArtifactError, read_json
from hyperrep.nets.cnn import get_activation
from hyperrep.nets.population import evaluate_population
from hyperrep.paper.files import (
    architecture_of_vectors,
    finite_or_nan,
    read_model_dataset,
    read_property_dataset,
    seed_from_path,
)
from hyperrep.zoo.format import Zoo, make_manifest
from hyperrep.zoo.public_folders import read_state_dict
from hyperrep.zoo.public_import import DATASET_HINTS, MODELZOO_NORMALISATION

DATASET_FILE = "dataset.pt"
TESTSPLIT_FILE = "zoo_testsplit.pt"
IMAGE_FILE = "image_dataset.pt"
SAMPLES_DIR = "samples"
METRICS = ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc")
# The paper's names for its pre-sampled populations (the folder names under samples/, as its sampling code
# writes them): `direct` holds zoo models at the dataset's last epoch (its B_F, no autoencoder), `train` and
# `best` uniform draws in a 3-D UMAP of the train / top-30 % latents (S_Neigh), `kde_z_*` per-dimension KDEs.
SAMPLE_NAMES = {
    "direct": "B_F (paper's direct: zoo models, last epoch)", "uniform": "S_U (paper)", "train": "S_Neigh train (paper)",
    "best": "S_Neigh top 30% (paper)", "kde_z_train": "S_KDE train (paper)", "kde_z_best": "S_KDE top 30% (paper)",
    "gan": "S_GAN (paper)", "gan_best": "S_GAN top 30% (paper)",
}
BASELINE_SAMPLES = ("direct",)  # folders that hold no samples of the autoencoder


@dataclass
class PaperImportReport:
    """What an import of a paper dataset.pt kept and dropped."""

    source: Path
    samples: int = 0
    models: int = 0
    kept: int = 0
    epochs: list[int] = field(default_factory=list)
    architecture: str = ""
    activation: str = ""
    dataset: str = ""
    dropped: dict[str, list[str]] = field(default_factory=dict)  # reason -> model folders

    def lines(self) -> list[str]:
        out = [f"imported {self.kept} of {self.models} models ({self.samples} samples) from {self.source}",
               f"  architecture {self.architecture}, activation {self.activation}, dataset {self.dataset}, epochs {self.epochs}"]
        for reason, folders in self.dropped.items():
            out.append(f"  dropped {len(folders)} ({reason}): {', '.join(folders[:5])}{' ...' if len(folders) > 5 else ''}")
        return out


def find_dataset_file(src: Path | str) -> Path:
    """`src` itself if it is a file, else `src/dataset.pt`; a folder of several datasets is named as such."""
    src = Path(src)
    if src.is_file():
        return src
    if (src / DATASET_FILE).is_file():
        return src / DATASET_FILE
    if src.is_dir():
        inside = sorted(p.name for p in src.iterdir() if p.is_dir() and (p / DATASET_FILE).is_file())
        if inside:
            raise ArtifactError(f"{src}: holds several paper hyper-representations ({', '.join(inside)}); "
                                f"import one of them, e.g. {src / inside[0]}")
        if (src / TESTSPLIT_FILE).is_file() or (src / IMAGE_FILE).is_file():
            raise ArtifactError(f"{src}: a paper zoos/ folder holds test-split accuracies and images but no weights; "
                                f"import the zoo from hyper_reps/<dataset>/{DATASET_FILE}")
        raise ArtifactError(f"{src}: no {DATASET_FILE} here (the paper's hyper_reps/<dataset>/ folders hold one)")
    raise ArtifactError(f"{src}: not found")


def has_own_zoo(hyperrep_dir: Path | str) -> bool:
    """A paper hyper-representation folder that carries its zoo (`dataset.pt`)."""
    return (Path(hyperrep_dir) / DATASET_FILE).is_file()


def looks_like_paper_dataset(src: Path | str) -> bool:
    """True for a `.pt` file, a folder with dataset.pt, or a hyper_reps/ folder of such folders; a
    public Model Zoo directory (model folders; its own dataset.pt holds images) is not one."""
    src = Path(src)
    if src.is_file():
        return src.suffix == ".pt"
    if not src.is_dir() or any(_is_model_folder(p) for p in src.iterdir() if p.is_dir()):
        return False
    return (src / DATASET_FILE).is_file() or bool(paper_datasets_in(src))


def _is_model_folder(path: Path) -> bool:
    return (path / "params.json").is_file() or (path / "result.json").is_file()


def paper_datasets_in(root: Path | str) -> list[Path]:
    """The hyper-representation folders (with dataset.pt) directly inside an unzipped hyper_reps/."""
    root = Path(root)
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / DATASET_FILE).is_file()) if root.is_dir() else []


def import_paper_dataset(
    src: Path | str, out: Path | str, *, activation: str | None = None, dataset: str | None = None,
    epochs: list[int] | None = None,
) -> tuple[Zoo, PaperImportReport]:
    """Convert a paper `dataset.pt` (or its folder) into a zoo saved at `out`; return it and a report.

    Models are the distinct sample paths; each keeps the epochs every model has (or `epochs`);
    the file's trainset/valset/testset become the zoo's splits. The activation comes from the
    samples' `model::nlin` property, else the folder's config_zoo.json, else `activation`.
    """
    path = find_dataset_file(src)
    splits = read_model_dataset(path)
    table, weights = _samples(splits, path)
    arch = architecture_of_vectors(weights.shape[1], str(path))
    report = PaperImportReport(source=path, samples=len(table), architecture=arch.name)
    table["model_id"] = _model_ids(table["path"].tolist())
    report.models = int(table["model_id"].nunique())
    chosen = sorted(set(epochs)) if epochs else _common_epochs(table, path)
    per_model = table.groupby("model_id")["epoch"].apply(set)
    missing = [m for m, have in per_model.items() if not set(chosen) <= have]
    if missing:
        report.dropped["missing_epochs"] = sorted(_folder(table, m) for m in missing)
    keep = sorted(set(per_model.index) - set(missing))
    if not keep:
        raise ArtifactError(f"{path}: no model has every epoch of {chosen}")
    report.activation = _activation(table, path, activation)
    report.dataset = dataset or _dataset_name(path, table)
    report.kept, report.epochs = len(keep), chosen
    zoo = _zoo(table, weights, keep, chosen, report, path)
    zoo.save(out)
    return zoo, report


def _samples(splits, path: Path) -> tuple[pd.DataFrame, torch.Tensor]:
    tables, weights = [], []
    for split, part in splits.items():
        frame = part.table.copy()
        if "path" not in frame:
            raise ArtifactError(f"{path}: the {split} split records no sample paths; models cannot be told apart")
        if "epoch" not in frame:
            if "training_iteration" not in frame:
                raise ArtifactError(f"{path}: the {split} split records neither epochs nor training_iteration")
            frame["epoch"] = frame["training_iteration"]
        frame["split"] = split
        tables.append(frame)
        weights.append(part.weights)
    lengths = {w.shape[1] for w in weights}
    if len(lengths) != 1:
        raise ArtifactError(f"{path}: splits hold weight vectors of different lengths {sorted(lengths)}")
    table = pd.concat(tables, ignore_index=True)
    table["epoch"] = table["epoch"].astype(int)
    table["path"] = table["path"].astype(str)
    return table, torch.cat(weights)


def _model_ids(paths: list[str]) -> list[int]:
    """Each path's seed when seeds tell the models apart, else the position of its sorted path."""
    unique = sorted(set(paths))
    seeds = {p: seed_from_path(p) for p in unique}
    if None not in seeds.values() and len(set(seeds.values())) == len(unique):
        return [int(seeds[p]) for p in paths]
    position = {p: i for i, p in enumerate(unique)}
    return [position[p] for p in paths]


def _folder(table: pd.DataFrame, model_id: int) -> str:
    return Path(table.loc[table["model_id"] == model_id, "path"].iloc[0]).name


def _common_epochs(table: pd.DataFrame, path: Path) -> list[int]:
    common = set.intersection(*table.groupby("model_id")["epoch"].apply(set).tolist())
    if not common:
        raise ArtifactError(f"{path}: no epoch is present for every model; pass the epochs to keep")
    return sorted(common)


def _activation(table: pd.DataFrame, path: Path, requested: str | None) -> str:
    if requested is not None:
        get_activation(requested)
        return requested
    found = sorted(set(table["model::nlin"].dropna().astype(str))) if "model::nlin" in table else []
    if not found:
        config = path.parent / "config_zoo.json"
        if config.is_file():
            nlin = read_json(config).get("model::nlin")
            found = [str(nlin)] if nlin else []
    if len(found) != 1:
        raise ArtifactError(f"{path}: the activation is not recorded ({found or 'no model::nlin'}, no config_zoo.json "
                            f"beside it); pass it (--activation tanh)")
    try:
        get_activation(found[0])
    except ValueError as err:
        raise ArtifactError(f"{path}: {err}") from err
    return found[0]


def _dataset_name(path: Path, table: pd.DataFrame) -> str:
    text = " ".join([path.resolve().parent.name, path.resolve().parent.parent.name, str(table["path"].iloc[0])]).lower()
    for needles, name in DATASET_HINTS:
        if any(needle in text for needle in needles):
            return name
    return "unknown"


def _zoo(table, weights, keep, epochs, report: PaperImportReport, path: Path) -> Zoo:
    table = table[table["model_id"].isin(keep) & table["epoch"].isin(epochs)]
    table = table.drop_duplicates(["model_id", "epoch"]).sort_values(["model_id", "epoch"])
    stacked = weights[torch.tensor(table.index.tolist(), dtype=torch.long)].reshape(len(keep), len(epochs), -1)
    if not torch.isfinite(stacked).all():
        raise ArtifactError(f"{path}: non-finite weights; the paper's loader drops such samples, so the file is damaged")
    rows = pd.DataFrame({"model_id": table["model_id"].to_numpy(), "epoch": table["epoch"].to_numpy()})
    seeds = [seed_from_path(p) for p in table["path"]]
    rows["seed"] = pd.array(seeds, dtype="Int64")
    for key in METRICS:
        if key in table:
            rows[key] = [finite_or_nan(v) for v in table[key]]
        elif key in ("train_loss", "train_acc", "test_loss", "test_acc"):
            rows[key] = math.nan
    if "model::init_type" in table:
        rows["init"] = table["model::init_type"].astype(str).to_numpy()
    rows["folder"] = [Path(p).name for p in table["path"]]
    split_of = table.groupby("model_id")["split"].first()
    splits = {name: sorted(int(m) for m in split_of[split_of == name].index) for name in ("train", "val", "test")}
    dataset: dict = {"name": report.dataset}
    if report.dataset in MODELZOO_NORMALISATION:
        dataset["normalisation"] = list(MODELZOO_NORMALISATION[report.dataset])
    manifest = make_manifest(
        name=f"paper-{report.dataset}", architecture=report.architecture, activation=report.activation,
        dataset=dataset, epochs=epochs, splits=splits, dropped={k: len(v) for k, v in report.dropped.items()},
        build={"source": "paper-dataset", "path": str(path.resolve())},
    )
    return Zoo(manifest, stacked.float().contiguous(), torch.tensor(keep, dtype=torch.int64), rows.reset_index(drop=True))


# -- comparison rows from the paper's folders -----------------------------------------------------
def paper_testsplit(folder: Path | str) -> pd.DataFrame:
    """The paper's B_T: test accuracy of the zoo's test models per epoch (`zoos/<dataset>/zoo_testsplit.pt`)."""
    folder = Path(folder)
    path = folder if folder.is_file() else folder / TESTSPLIT_FILE
    table = read_property_dataset(path)
    table["test_acc"] = [finite_or_nan(v) for v in table["test_acc"]]
    return table


def paper_sample_populations(hyperrep_dir: Path | str, arch, limit: int | None = None) -> dict[str, torch.Tensor]:
    """The authors' sampled populations, `samples/<method>/checkpoint_<i>.pt`, as flat weights [n, P] per
    method (the first `limit` checkpoints by number, or all)."""
    root = Path(hyperrep_dir) / SAMPLES_DIR
    if not root.is_dir():
        return {}
    out = {}
    for method in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(method.glob("checkpoint_*.pt"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))[:limit]
        if files:
            out[method.name] = torch.stack([arch.state_dict_to_vector(dict(read_state_dict(f)), source=str(f)) for f in files])
    return out


def sample_label(method: str) -> str:
    return SAMPLE_NAMES.get(method, f"{method} (paper)")


def find_zoo_folder(hyperrep_dir: Path | str) -> Path | None:
    """`zoos/<dataset>` beside `hyper_reps/<dataset>` (the layout of the two unzipped archives), if present."""
    hyperrep_dir = Path(hyperrep_dir).resolve()
    for root in (hyperrep_dir.parent.parent, hyperrep_dir.parent.parent.parent):
        candidate = root / "zoos" / hyperrep_dir.name
        if (candidate / TESTSPLIT_FILE).is_file():
            return candidate
    return None


def testsplit_accuracy_at(table: pd.DataFrame, epoch: int) -> np.ndarray:
    """The B_T accuracies at one epoch (empty when the split has none)."""
    return table.loc[table["epoch"] == epoch, "test_acc"].to_numpy(dtype=float)


def paper_comparison_rows(hyperrep_dir: Path | str, arch, activation: str, data,
                          limit: int | None = None) -> dict[str, np.ndarray]:
    """Extra comparison rows of a paper hyper-representation folder: each pre-sampled population's
    accuracy on `data` (its first `limit` checkpoints, or all), and the
    paper's B_T (zoo_testsplit.pt beside it) at its first and last epoch as the paper recorded it
    (on the whole test split). Empty for any other folder."""
    rows: dict[str, np.ndarray] = {}
    for method, weights in paper_sample_populations(hyperrep_dir, arch, limit).items():
        rows[sample_label(method)] = evaluate_population(arch, activation, weights, data).accuracy
    zoo_folder = find_zoo_folder(hyperrep_dir)
    if zoo_folder is not None:
        table = paper_testsplit(zoo_folder)
        for epoch in sorted({int(table["epoch"].min()), int(table["epoch"].max())}):
            rows[f"B_T (paper's zoo_testsplit, epoch {epoch}, as recorded)"] = testsplit_accuracy_at(table, epoch)
    return rows
