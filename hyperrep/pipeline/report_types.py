"""What the report computes and returns: its settings (`ReportConfig`), the results of one method
(`MethodResult`), the zoo's nearest-neighbour spacing, and the names of its B_T baselines."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from hyperrep.evaluation.frontier import FrontierSettings
from hyperrep.pipeline.experiment import ANCHOR_FRACTION
from hyperrep.pipeline.tuning import STEP_METHODS, TuningConfig
from hyperrep.sampling.samplers import SAMPLERS

ZOO_B_T = "B_T (zoo test split)"


PAPER_B_T = "B_T (paper's zoo_testsplit, as recorded)"  # a paper folder's zoos/<dataset>/zoo_testsplit.pt


RETRAINED_B_T = "B_T (re-trained)"


KAIMING_B_T = "B_T (kaiming-uniform, re-trained)"  # the standard initialisation beside the zoo's own


BASELINE = "B_T"  # where fresh initialisations are the only B_T (hyperrep.pipeline.transfer: trained on another dataset)


BASELINES = (ZOO_B_T, PAPER_B_T, RETRAINED_B_T, BASELINE)  # the first present is the reference of every p-value


READINGS_START = "Readings, generated from the table"


@dataclass
class ReportConfig:
    """What the report computes. Zero-shot numbers use every member; fine-tuning, the costly part,
    the first `fine_tune_models` of each population (None: all)."""

    models_per_method: int = 100
    fine_tune_models: int | None = 10
    test_images: int = 2_000  # the first N images of the test split
    fine_tune_images: int = 2_000  # seeded draw from the training part of the train split
    fine_tune_epochs: list[int] = field(default_factory=lambda: [0, 1, 5])
    anchor_fraction: float = ANCHOR_FRACTION  # the anchors in use: replaced by the fraction the validation images choose
    samplers: list[str] = field(default_factory=lambda: [
        "uniform_unit", "uniform", "kde_legacy", "kde", "kde_multivariate", "gaussian", "gmm", "neigh", "flow", "flow_cfg"])
    ablation_samplers: list[str] = field(default_factory=lambda: ["kde_legacy", "kde", "gaussian"])
    tuning: TuningConfig = field(default_factory=TuningConfig)  # what is chosen on validation images, and how
    noise_sigmas: list[float] = field(default_factory=list)  # extra noise rows in the table (the frontier has its own)
    frontier_sigmas: list[float] = field(default_factory=lambda: FrontierSettings().sigmas)
    frontier_average_sizes: list[int] = field(default_factory=lambda: FrontierSettings().average_sizes)
    frontier_gaussian_scales: list[float] = field(default_factory=lambda: FrontierSettings().gaussian_scales)
    frontier_models: int = 40
    ensemble_size: int = 5
    bootstrap_resamples: int = 2_000
    seed: int = 42

    def validate(self) -> None:
        unknown = [s for s in self.samplers + self.ablation_samplers if s not in SAMPLERS]
        if unknown:
            raise ValueError(f"unknown samplers {unknown}; known: {', '.join(SAMPLERS)}")
        if self.models_per_method < 2 or min(self.fine_tune_epochs) < 0:
            raise ValueError("models_per_method must be >= 2 and fine_tune_epochs >= 0")
        if self.fine_tune_models is not None and self.fine_tune_models < 2:
            raise ValueError(f"fine_tune_models must be >= 2 (or None for all), got {self.fine_tune_models}")
        self.frontier_settings().validate()
        self.tuning.validate()

    def populations_held(self, *, guided: bool = True, ablation: bool = True) -> tuple[int, int]:
        """(populations of models_per_method, of frontier_models) that the report holds at once, as
        `build_populations` and `frontier_references` make them: each sampler, the guided rows, the
        reconstructed anchors, both B_T, B_F, the noise rows and the ablation's; so a request can be sized first."""
        methods = len(self.samplers) + 4 + len(self.noise_sigmas)
        if guided:
            methods += len(STEP_METHODS) * len(self.tuning.budgets)
        if ablation:
            methods += len(self.ablation_samplers) + 1
        frontier = 1 + len(self.frontier_sigmas) + len(self.frontier_average_sizes) + len(self.frontier_gaussian_scales)
        return methods, frontier

    def frontier_settings(self) -> FrontierSettings:
        return FrontierSettings(self.frontier_sigmas, self.frontier_average_sizes, self.frontier_gaussian_scales,
                                self.frontier_models)

    @property
    def epochs(self) -> list[int]:
        """The reported epochs; zero-shot (0) is always among them."""
        return sorted(set(self.fine_tune_epochs) | {0})


@dataclass
class MethodResult:
    """One population's curves, ensembles and zero-shot novelty. `accuracy` is NaN where a member
    was not evaluated at an epoch (not fine-tuned) or is not finite; `evaluated` tells which."""

    label: str
    kind: str  # "sampler", "baseline" or "frontier"
    hyperrep: str  # "LWLN", "no LWLN" or "-" (no autoencoder involved)
    epochs: list[int]
    accuracy: np.ndarray  # [M, epochs]
    finite: np.ndarray  # [M, epochs]
    ensembles: dict[int, np.ndarray]  # epoch -> ensemble accuracies
    novelty: pd.DataFrame  # one row per member (zero-shot)
    evaluated: np.ndarray | None = None  # [M, epochs]; None: every member at every epoch

    def __post_init__(self) -> None:
        if self.evaluated is None:
            self.evaluated = np.ones(self.accuracy.shape, dtype=bool)


@dataclass
class ZooReference:
    """The zoo as the reference of novelty: its weights and rows, the predictions of its distinct
    models on the test images (for the largest mistake overlap), its own neighbour spacing, and
    the train models at the anchors' epochs (the distance the frontier uses)."""

    weights: torch.Tensor
    table: pd.DataFrame
    predictions: torch.Tensor  # [distinct weight vectors, test images]
    spacing: np.ndarray
    train_weights: torch.Tensor | None = None  # the train models at the anchors' epochs (pipeline.tuning.train_reference)
    train_table: pd.DataFrame | None = None
