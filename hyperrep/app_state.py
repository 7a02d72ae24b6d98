"""UI-free helpers of the Streamlit explorer: which artifact a folder holds, limits, selections, export.

The app (app.py, pages/) keeps only layout and widgets; everything it decides or converts lives
here so it is tested without Streamlit. This module never imports streamlit.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save as safetensors_bytes

from hyperrep import cores, image_formats
from hyperrep.data import DEFAULT_DATASET, DatasetRule, zoo_dataset_rule
from hyperrep.files import ArtifactError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ZOO = REPO_ROOT / "data" / "zoo"
DEFAULT_HYPERREP = REPO_ROOT / "data" / "hyperrep"
MAX_SAMPLES = 500  # models per sampling request; more would block a CPU session for minutes
MAX_FINETUNE_MODELS = 30  # models per population in the fine-tuning comparison
QUICK_IMAGES = 1_000  # the first estimate, baselines and novelty use this many test images
MAX_BASELINE_MODELS = 50  # members of each comparison baseline (noise, B_T)
# The "New or copies?" frontier: a lighter sweep than the report's (11 references of 12 models).
APP_FRONTIER = dict(sigmas=[0.02, 0.04, 0.06, 0.09, 0.13, 0.18, 0.25], average_sizes=[2, 8], gaussian_scales=[0.5], models=12)
MAX_ENSEMBLE_MODELS = 25  # samples combined in the ensemble figures (each costs one population forward)

ZOO = "zoo"  # our zoo directory (zoo.json)
MODELZOO = "modelzoo"  # a public Model Zoo directory (one folder per trained model)
HYPERREP = "hyperrep"  # our hyper-representation directory (config.json + model.safetensors)
PAPER = "paper"  # the paper's hyper-representation directory (config_ae.json + checkpoint_ae.pt)
KIND_NAMES = {
    ZOO: "hyperrep zoo",
    MODELZOO: "public Model Zoo directory",
    HYPERREP: "hyperrep hyper-representation",
    PAPER: "paper hyper-representation (config_ae.json + checkpoint_ae.pt)",
}


# -- artifacts -----------------------------------------------------------------------------------------


def default_zoo_path() -> Path:
    """HYPERREP_ZOO if set, else the embedded default zoo."""
    return Path(os.environ.get("HYPERREP_ZOO") or DEFAULT_ZOO)


def default_hyperrep_path() -> Path:
    """HYPERREP_MODEL if set, else the embedded default hyper-representation."""
    return Path(os.environ.get("HYPERREP_MODEL") or DEFAULT_HYPERREP)


def cpu_threads() -> int:
    """The most torch CPU threads the app gives one compute step: HYPERREP_THREADS, else one per
    core. Each step gets fewer when other processes keep cores busy (hyperrep.cores.share_cores;
    measured in docs/benchmarks.md, "App latency")."""
    value = os.environ.get("HYPERREP_THREADS") or str(os.cpu_count() or 1)
    try:
        return max(1, int(value))
    except ValueError:
        raise ValueError(f"HYPERREP_THREADS must be a whole number, got {value!r}") from None


def artifact_kind(path: Path | str) -> str:
    """Which kind of artifact directory `path` is; ArtifactError naming what is missing if none."""
    path = Path(str(path).strip()).expanduser()
    if not str(path) or str(path) == ".":
        raise ArtifactError("no directory given")
    if not path.exists():
        raise ArtifactError(f"{path}: directory not found")
    if not path.is_dir():
        raise ArtifactError(f"{path}: not a directory")
    if (path / "zoo.json").is_file():
        return ZOO
    if (path / "config_ae.json").is_file() or (path / "checkpoint_ae.pt").is_file():
        return PAPER
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        return HYPERREP
    if any(_looks_like_modelzoo_model(child) for child in _subfolders(path, limit=50)):
        return MODELZOO
    if (path / "partial").is_dir():
        raise ArtifactError(f"{path}: a zoo build that has not finished yet (partial/ exists, zoo.json does not)")
    if (path / "checkpoint").is_dir() and (path / "config.json").is_file():
        raise ArtifactError(f"{path}: a hyper-representation still in training (checkpoint/ exists, model.safetensors does not)")
    raise ArtifactError(
        f"{path}: not a zoo (zoo.json), a Model Zoo (model folders with params.json, result.json, "
        f"checkpoint_<N>/), a hyper-representation (config.json + model.safetensors) or a paper "
        f"artifact (config_ae.json + checkpoint_ae.pt)"
    )


def _subfolders(path: Path, limit: int) -> list[Path]:
    folders = []
    for child in sorted(path.iterdir()):
        if child.is_dir():
            folders.append(child)
        if len(folders) >= limit:
            break
    return folders


def _looks_like_modelzoo_model(folder: Path) -> bool:
    return (folder / "params.json").is_file() and any(
        p.is_dir() and p.name.startswith("checkpoint_") for p in folder.iterdir()
    )


def fingerprint(path: Path | str) -> str:
    """Names, sizes and modification times of a folder's files: a cache key that changes when it is rebuilt."""
    path = Path(path)
    parts = []
    for child in sorted(path.iterdir()) if path.is_dir() else []:
        if child.is_file():
            stat = child.stat()
            parts.append(f"{child.name}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def imported_zoo_folder(source: Path | str) -> Path:
    """Where the app keeps the converted copy of a public Model Zoo (one folder per source path)."""
    key = hashlib.sha1(str(Path(source).resolve()).encode()).hexdigest()[:12]
    root = Path(os.environ.get("HYPERREP_IMPORT_CACHE") or Path(tempfile.gettempdir()) / "hyperrep-imports")
    return root / f"{Path(source).resolve().name}-{key}"


@dataclass(frozen=True)
class DatasetSource:
    """Where a zoo's images come from, the rule they are normalised and split by (hyperrep.data),
    and a warning when they may not be the zoo's dataset."""

    data_dir: Path | None
    rule: DatasetRule
    warning: str | None = None

    @property
    def normalisation(self) -> tuple[float, float]:
        return self.rule.normalisation

    @property
    def dataset(self) -> str:
        return self.rule.name


def dataset_source(manifest: dict) -> DatasetSource:
    """The IDX folder (HYPERREP_DATA, else the default) and the dataset rule of a zoo, from its manifest."""
    env = os.environ.get("HYPERREP_DATA")
    data_dir = Path(env) if env else None
    rule = zoo_dataset_rule(manifest, data_dir)
    warning = None
    colour = image_formats.canonical_name(rule.name)
    if colour in image_formats.SOURCES and not env:
        warning = f"this zoo was trained on {rule.name!r}; set HYPERREP_DATA to a folder with its files ({image_formats.SOURCES[colour]})"
    elif rule.name != DEFAULT_DATASET and not env:
        warning = (
            f"this zoo was trained on {rule.name!r}; set HYPERREP_DATA to a folder with its IDX test files "
            f"(evaluating on Fashion-MNIST meanwhile)"
        )
    return DatasetSource(data_dir, rule, warning)


def compatibility(zoo, hyperrep) -> tuple[str | None, str | None]:
    """(problem, note) of using this zoo with this hyper-representation: a different architecture
    is a problem (nothing can be compared); a different zoo directory is only worth a note."""
    if zoo.architecture.name != hyperrep.arch.name:
        return (f"{hyperrep.path}: encodes {hyperrep.arch.name} weights but the zoo {zoo.name} holds "
                f"{zoo.architecture.name}; load its own zoo ({hyperrep.zoo_path})"), None
    if zoo.path is not None and Path(zoo.path).resolve() != Path(hyperrep.zoo_path).resolve():
        return None, (f"the hyper-representation was trained on {hyperrep.zoo_path}; baselines and novelty "
                      f"use the loaded zoo {zoo.path}")
    return None, None


def paper_hyperrep(directory: Path | str, zoo):
    """The paper's hyper-representation (config_ae.json + checkpoint_ae.pt) made explorable with `zoo`:
    every zoo model and epoch encoded, and a PCA map of those latents (the paper's artifacts ship
    neither; PCA takes milliseconds where a first UMAP fit takes tens of seconds)."""
    from hyperrep.files import read_json
    from hyperrep.model import HyperRep, latent_table
    from hyperrep.paper_compat import load_paper_hyperrep
    from hyperrep.projection import fit_map
    from hyperrep.sampling import encode_weights

    directory = Path(directory)
    model = load_paper_hyperrep(directory)
    if model.arch.name != zoo.architecture.name:
        raise ArtifactError(f"{directory / 'config_ae.json'}: encodes {model.arch.name} weights but the zoo "
                            f"{zoo.name} holds {zoo.architecture.name}; load a zoo of that architecture")
    n_models, n_epochs, n_params = zoo.weights.shape
    latents = encode_weights(model, zoo.weights.reshape(-1, n_params))
    model_ids = zoo.model_ids.repeat_interleave(n_epochs)
    epochs = torch.tensor(zoo.epochs).repeat(n_models)
    return HyperRep(
        model=model, config={"paper_config": read_json(directory / "config_ae.json")}, path=directory,
        zoo_path=Path(zoo.path), latents=latents, latent_table=latent_table(Path(zoo.path), model_ids, epochs),
        map_coords=fit_map(latents, method="pca"), projection={"method": "PCA (computed on load)"}, metrics={},
    )


# -- overview and zoo pages ------------------------------------------------------------------------


def zoo_headline(zoo) -> dict:
    """The zoo's dataset, last saved epoch and median test accuracy there (NaN-safe)."""
    last = max(zoo.epochs)
    accuracy = zoo.properties.loc[zoo.properties["epoch"] == last, "test_acc"]
    dataset = zoo.manifest.get("dataset", {})
    return {
        "dataset": dataset.get("name", "?") if isinstance(dataset, dict) else str(dataset),
        "last_epoch": last,
        "median_acc": float(accuracy.median()) if accuracy.notna().any() else float("nan"),
    }


HEADLINE_METRICS = (  # (path in metrics.json, label), shown first when present
    ("quality/test/rsq", "reconstruction R²"),
    ("quality/test/acc_ratio_above_threshold", "accuracy kept"),
    ("quality/test/prediction_agreement", "same predictions"),
    ("quality/test/mean_model/prediction_agreement", "same predictions, zoo mean model"),
    ("quality/test/acc_reconstructed", "rebuilt accuracy"),
    ("train_seconds", "training time (s)"),
)


METRIC_HELP = {
    "reconstruction R²": "1 - squared error / variance of the test split's weights, after encoding and decoding",
    "accuracy kept": "mean ratio of rebuilt to original test accuracy, over test-split models above 50 % accuracy",
    "rebuilt accuracy": "mean test accuracy of the test split's models after encoding and decoding",
    "same predictions": "share of test images a rebuilt test-split model classifies as its original does",
    "same predictions, zoo mean model": "the same for the train split's mean weight vector: what a "
                                        "reconstruction that ignored its input would reach",
}


def headline_metrics(metrics: dict | None, limit: int = 12) -> list[tuple[str, str]]:
    """Scalar numbers of a metrics.json as (label, formatted value): the known headline figures
    first, then every other scalar (nested keys joined with '/'; lists such as curves skipped)."""
    flat: dict[str, float] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}/{key}" if prefix else str(key), inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            flat[prefix] = float(value)

    walk("", metrics or {})
    shown = [(label, _format_number(path, flat.pop(path))) for path, label in HEADLINE_METRICS if path in flat]
    shown += [(path.replace("_", " "), _format_number(path, value)) for path, value in flat.items()]
    return shown[:limit]


def _format_number(path: str, value: float) -> str:
    if value.is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    if ("acc" in path or "share" in path or "agreement" in path) and 0 <= value <= 1.5:
        return f"{value:.1%}"
    return f"{value:.3g}"


def categorical_columns(table: pd.DataFrame, max_levels: int = 12) -> list[str]:
    """Columns worth colouring by as categories: text columns with few distinct values."""
    return [
        column for column in table.columns
        if column != "model_id" and not pd.api.types.is_numeric_dtype(table[column])
        and 1 < table[column].nunique() <= max_levels
    ]


# -- latent map and regions ---------------------------------------------------------------------------


def rows_from_selection(selection) -> list[int]:
    """Table rows of the points picked on a plotly chart (click, box or lasso).

    Every point carries its table row as the first entry of `custom_data`; points of other traces
    (the samples overlay) carry none and are ignored.
    """
    if not selection:
        return []
    points = selection.get("points", []) if isinstance(selection, dict) else getattr(selection, "points", [])
    rows = set()
    for point in points or []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(custom, (list, tuple)) and custom:
            custom = custom[0]
        if isinstance(custom, (int, float)) and not isinstance(custom, bool) and math.isfinite(custom):
            rows.add(int(custom))
    return sorted(rows)


def map_table(latent_table: pd.DataFrame, map_coords: torch.Tensor) -> pd.DataFrame:
    """The latent table plus `row` (its position, carried through plots as custom data) and map x/y."""
    coords = map_coords.detach().cpu().numpy()
    table = latent_table.reset_index(drop=True).copy()
    table.insert(0, "row", np.arange(len(table)))
    table["map_x"], table["map_y"] = coords[:, 0], coords[:, 1]
    return table


def region_from_filters(
    table: pd.DataFrame, *, split: str | None, epochs, accuracy: tuple[float, float], top_percent: float
) -> tuple[np.ndarray, str]:
    """Anchor rows chosen with widgets: split, epochs and accuracy range, then the top-k % of those.

    An empty result is a ValueError saying which choice emptied it (sampling.select_rows)."""
    from hyperrep.sampling import select_rows, top_fraction

    rows = select_rows(table, split=split, epochs=list(epochs) if epochs else None, accuracy=tuple(accuracy))
    if top_percent < 100:
        rows = top_fraction(table, top_percent / 100, among=rows)
    parts = [f"split {split}" if split else "all splits",
             f"epochs {', '.join(str(e) for e in sorted(epochs))}" if epochs else "all epochs",
             f"test acc. {accuracy[0]:.2f}–{accuracy[1]:.2f}"]
    if top_percent < 100:
        parts.append(f"top {top_percent:g} %")
    return rows, ", ".join(parts)


def region_from_selection(selection, n_rows: int) -> tuple[np.ndarray, str]:
    """Anchor rows picked on the map (lasso, box or clicks); ValueError when nothing is picked."""
    from hyperrep.sampling import select_points

    rows = select_points(rows_from_selection(selection), n_rows)
    return rows, f"{len(rows)} points selected on the map"


def is_numeric(column: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


def region_comparison(table: pd.DataFrame, rows) -> pd.DataFrame:
    """Test accuracies of all rows and of the region's rows, stacked with a `group` column."""
    return pd.concat([
        pd.DataFrame({"test_acc": table["test_acc"].to_numpy(), "group": "all embedded models"}),
        pd.DataFrame({"test_acc": table["test_acc"].to_numpy()[np.asarray(rows)], "group": "region"}),
    ], ignore_index=True)


# -- sampling from the app ------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplerParameter:
    """One constructor parameter of a sampler that the app offers as a widget."""

    name: str
    default: object
    kind: str  # "bool" | "int" | "float" | "optional_float" | "text"


def sampler_parameters(name: str) -> list[SamplerParameter]:
    """The tunable parameters of a registered sampler: its constructor's, minus those the registry fixes."""
    import inspect

    from hyperrep.sampling import SAMPLERS

    spec = SAMPLERS[name]
    found = []
    for parameter in inspect.signature(spec.factory).parameters.values():
        if parameter.name in spec.params or parameter.default is inspect.Parameter.empty:
            continue
        annotation, default = str(parameter.annotation), parameter.default
        if isinstance(default, bool):
            kind = "bool"
        elif isinstance(default, int):
            kind = "int"
        elif isinstance(default, float):
            kind = "float"
        elif default is None and "float" in annotation:
            kind = "optional_float"
        else:
            kind = "text"
        found.append(SamplerParameter(parameter.name, default, kind))
    return found


def capped_request(requested: int, cap: int | None = None) -> tuple[int, str | None]:
    """The number of models to make (at most `cap`, default MAX_SAMPLES) and, when the request was cut, the message that says so."""
    cap = MAX_SAMPLES if cap is None else cap
    if requested < 1:
        return 1, f"asked for {requested} models; making 1"
    if requested > cap:
        return cap, f"asked for {requested} models; capped at {cap} so the app stays responsive"
    return requested, None


class ThrottledProgress:
    """A `progress(done, total)` callback that passes on only every `step` of the way (and the end),
    so a fast loop does not flood the browser with redraws: `show(fraction, text)` is called."""

    def __init__(self, show, unit: str, step: float = 0.05):
        self.show, self.unit, self.step, self.last = show, unit, step, -1.0

    def __call__(self, done: int, total: int) -> None:
        fraction = done / max(total, 1)
        if fraction - self.last >= self.step or done >= total:
            self.last = fraction
            self.show(min(fraction, 1.0), f"{done:,}/{total:,} {self.unit}")


def draw_population(hyperrep, strategy: str, params: dict, anchor_rows, n: int, seed: int):
    """Fit the named sampler on the anchors' latents, draw `n` latents and decode them (a sampling.Population).

    Too few anchors for the sampler, or bad parameters, is a ValueError saying so."""
    from hyperrep.sampling import make_sampler, sample_population

    rows = np.asarray(anchor_rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("no anchors: choose a region on the latent map or use the top-k % anchors")
    try:
        sampler = make_sampler(strategy, **params)
    except TypeError as err:
        raise ValueError(f"sampler {strategy!r}: {err}") from err
    anchors = hyperrep.latents[torch.as_tensor(rows)].cpu()
    return sample_population(hyperrep.model, sampler, anchors, n, seed)


def first_images(data, n: int = QUICK_IMAGES):
    """The first `n` images of a set: the subset the first estimates and comparisons use."""
    return data.subset(torch.arange(min(n, len(data)))) if len(data) > n else data


def matched_noise_sigma(distances: np.ndarray, n_params: int) -> float:
    """Noise std that puts anchor + sigma * N(0, 1) at the samples' median distance from the zoo
    (the distance of such noise is about sigma * sqrt(P))."""
    finite = distances[np.isfinite(distances)]
    if finite.size == 0 or np.median(finite) <= 0:
        return 0.01
    return float(np.median(finite) / math.sqrt(n_params))


def accuracy_groups(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """A long table (group, accuracy) of finite accuracies, for distribution plots."""
    frames = [pd.DataFrame({"group": name, "accuracy": values[np.isfinite(values)]})
              for name, values in groups.items() if values is not None and len(values)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["group", "accuracy"])


def describe_accuracy(groups: dict[str, np.ndarray]) -> pd.DataFrame:
    """Count, invalid count, mean, median, best and worst accuracy per group."""
    rows = []
    for name, values in groups.items():
        values = np.asarray(values, dtype=float)
        finite = values[np.isfinite(values)]
        rows.append({
            "group": name, "models": len(values), "not finite": int(len(values) - len(finite)),
            "mean": finite.mean() if finite.size else np.nan, "median": np.median(finite) if finite.size else np.nan,
            "best": finite.max() if finite.size else np.nan, "worst": finite.min() if finite.size else np.nan,
        })
    return pd.DataFrame(rows)


def finite_median(values) -> float:
    """Median of the finite values; NaN when there are none."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


@dataclass
class SampleRun:
    """Everything one click on "Sample" produced; kept in the session so results survive reruns."""

    model_key: tuple
    strategy: str
    params: dict
    seed: int
    anchor_rows: np.ndarray
    anchor_label: str
    population: object  # sampling.Population (weights [n, P], latents [n, L], members)
    quick_images: int = 0
    quick: object | None = None  # evaluate.Evaluation on the first `quick_images` test images
    full: object | None = None  # evaluate.Evaluation on the whole test split
    map_xy: np.ndarray | None = None  # samples placed on the stored 2-D map
    novelty: pd.DataFrame | None = None  # samples and noise baseline: distance, accuracy, IoU
    frontier: object | None = None  # frontier.Frontier of the anchors in use (zero-shot, first `quick_images` images)
    frontier_delta: pd.Series | None = None  # the samples' Δ against it: distance, frontier_accuracy, delta, delta_lo/hi
    baselines: dict[str, np.ndarray] = None  # label -> accuracies on the first `quick_images` images
    ensembles: dict[str, float] | None = None
    timings: dict[str, float] = None
    messages: list[tuple[str, str]] = None  # ("info" | "warning" | "error", text)

    def __post_init__(self) -> None:
        self.baselines = self.baselines or {}
        self.timings = self.timings or {}
        self.messages = self.messages or []

    def members_table(self) -> pd.DataFrame:
        """One row per sampled model: accuracies, loss, finiteness, map position, novelty."""
        table = self.population.members.reset_index(drop=True).copy()
        if self.full is not None:
            table["test_acc"], table["test_loss"], table["finite"] = self.full.accuracy, self.full.loss, self.full.finite
        if self.quick is not None:
            table[f"test_acc_first_{self.quick_images}"] = self.quick.accuracy
        if self.map_xy is not None:
            table["map_x"], table["map_y"] = self.map_xy[:, 0], self.map_xy[:, 1]
        if self.novelty is not None:
            own = self.novelty[self.novelty["group"] == "samples"].reset_index(drop=True)
            for column in ("distance", "nearest_model_id", "nearest_epoch", "misclassification_iou"):
                table[column] = own[column].to_numpy()
        return table


def compare_with_baselines(run: SampleRun, zoo, hyperrep, latent_table: pd.DataFrame, data) -> None:
    """Fill `run` with novelty (samples and a distance-matched noise baseline), the frontier of the
    anchors in use and the samples' Δ against it, B_T at initialisation,
    ensembles and the samples' places on the map, all on `data` (the first-estimate images).
    Anchors that are not models of the loaded zoo leave a message instead of a noise baseline.
    Its compute steps yield to other sessions' evaluations (hyperrep.cores, background priority)."""
    with cores.background():
        _compare_with_baselines(run, zoo, hyperrep, latent_table, data)


def _compare_with_baselines(run: SampleRun, zoo, hyperrep, latent_table: pd.DataFrame, data) -> None:
    from hyperrep.evaluate import ensemble_accuracies, ensemble_accuracy, evaluate_weights
    from hyperrep.frontier import FrontierSettings, zero_shot_frontier
    from hyperrep.novelty import novelty_table
    from hyperrep.projection import place_on_map
    from hyperrep.sampling import anchor_weights, noise_baseline, scratch_baseline

    arch, activation, population = hyperrep.arch, zoo.activation, run.population
    n_baseline = min(len(population.weights), MAX_BASELINE_MODELS)
    reference, reference_table = zoo.samples()
    novelty = novelty_table(arch, activation, population.weights, run.quick.predictions, reference, reference_table, data)
    novelty["group"], novelty["accuracy"] = "samples", run.quick.accuracy
    frames = [novelty]
    try:
        anchors = anchor_weights(zoo, latent_table, run.anchor_rows)
    except KeyError as err:
        run.messages.append(("info", f"No noise baseline: the anchors are not models of the loaded zoo ({err})"))
    else:
        sigma = matched_noise_sigma(novelty["distance"].to_numpy(), arch.n_params)
        noise = noise_baseline(anchors, sigma, n_baseline, run.seed)
        noisy = evaluate_weights(arch, activation, noise.weights, data, keep_predictions=True)
        noise_novelty = novelty_table(arch, activation, noise.weights, noisy.predictions, reference, reference_table, data)
        noise_novelty["group"], noise_novelty["accuracy"] = noise.label, noisy.accuracy
        frames.append(noise_novelty)
        run.baselines[noise.label] = noisy.accuracy
        reach = 1.5 * sigma  # the noise curve reaches past the samples' median distance, whatever the zoo
        settings = FrontierSettings(**{**APP_FRONTIER, "sigmas": sorted(set(APP_FRONTIER["sigmas"]) | {reach})})
        run.frontier = zero_shot_frontier(arch, activation, anchors, reference, data, settings, run.seed)
        run.frontier_delta = run.frontier.delta(novelty["distance"].to_numpy(), run.quick.accuracy[:, None],
                                                resamples=1_000, seed=run.seed).iloc[0]
    run.novelty = pd.concat(frames, ignore_index=True)
    scratch = scratch_baseline(zoo, n_baseline, run.seed)
    run.baselines["B_T (random init)"] = evaluate_weights(arch, activation, scratch.weights, data).accuracy
    if hyperrep.path is not None:  # a paper folder adds its pre-sampled populations and its B_T
        from hyperrep.paper_import import paper_comparison_rows

        run.baselines.update(paper_comparison_rows(hyperrep.path, arch, activation, data))
    finite = np.asarray(run.full.finite if run.full is not None else run.quick.finite)
    members = torch.as_tensor(np.flatnonzero(finite)[:MAX_ENSEMBLE_MODELS])
    run.ensembles = {
        f"ensemble of {len(members)} samples":
            ensemble_accuracy(arch, activation, population.weights[members], data) if len(members) else float("nan"),
        "mean of ensembles of 5":
            float(np.mean(ensemble_accuracies(arch, activation, population.weights[members], data, size=5, seed=run.seed)))
            if len(members) >= 5 else float("nan"),
        f"mean single sample (of those {len(members)})":
            float(np.nanmean(run.quick.accuracy[members.numpy()])) if len(members) else float("nan"),
    }
    placed = place_on_map(population.latents, hyperrep.latents.cpu(), hyperrep.map_coords.cpu(), k=5)
    run.map_xy = placed.numpy().astype(float)


# -- fine-tuning from the app --------------------------------------------------------------------------


def learning_curves(results: dict) -> pd.DataFrame:
    """Per population and evaluated epoch: mean accuracy and a 95 % confidence band of the mean
    (mean ± 1.96 standard errors) over the finite members."""
    rows = []
    for label, result in results.items():
        for i, epoch in enumerate(result.epochs):
            values = result.accuracy[:, i]
            values = values[np.isfinite(values)]
            mean = values.mean() if values.size else np.nan
            half = 1.96 * values.std(ddof=1) / math.sqrt(values.size) if values.size > 1 else 0.0
            rows.append({"population": label, "epoch": epoch, "mean": mean, "low": mean - half, "high": mean + half,
                         "members": int(values.size)})
    return pd.DataFrame(rows)


# -- export ------------------------------------------------------------------------------------------


def population_safetensors(weights: torch.Tensor, latents: torch.Tensor | None, metadata: dict) -> bytes:
    """A sampled population as safetensors bytes: `weights` [M, P] (and `latents` [M, L]) + JSON metadata."""
    tensors = {"weights": weights.detach().float().contiguous().cpu()}
    if latents is not None:
        tensors["latents"] = latents.detach().float().contiguous().cpu()
    return safetensors_bytes(tensors, metadata={k: json.dumps(v) for k, v in metadata.items()})


def population_csv(table: pd.DataFrame) -> bytes:
    """The population's per-model table as CSV bytes."""
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    return buffer.getvalue().encode()


def export_metadata(run: SampleRun, zoo, hyperrep) -> dict:
    """What a downloaded population needs to be understood and reproduced."""
    valid = np.asarray(run.full.accuracy)[np.asarray(run.full.finite)] if run.full is not None else np.array([])
    return {
        "format": "hyperrep-population",
        "architecture": hyperrep.arch.name if hyperrep is not None else None,
        "activation": zoo.activation if zoo is not None else None,
        "strategy": run.strategy,
        "params": run.params,
        "seed": run.seed,
        "n_models": len(run.population.weights),
        "anchors": run.anchor_label,
        "anchor_rows": [int(r) for r in run.anchor_rows],
        "zoo": str(zoo.path) if zoo is not None else None,
        "hyper_representation": str(hyperrep.path) if hyperrep is not None else None,
        "mean_test_acc": float(valid.mean()) if valid.size else None,
    }
