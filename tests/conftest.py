"""Shared fixtures: a small IDX folder made from the shipped test split, a tiny zoo and the tiny
hyper-representations trained on it (once per test session, for every test file)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from hyperrep.ae.config import TrainConfig
from hyperrep.ae.model import ModelConfig
from hyperrep.ae.train import train_hyperrep
from hyperrep.images.datasets import SHIPPED_DATA, read_idx
from hyperrep.pipeline.tuning import TuningConfig
from hyperrep.zoo.build import BuildConfig, build_zoo
from hyperrep.zoo.format import Zoo

torch.set_num_threads(1)  # deterministic and fair when other jobs share the 2 cores


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (gzipped when the name ends in .gz)."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as handle:
            handle.write(payload)
    else:
        path.write_bytes(payload)


def point_app_at(monkeypatch, tmp_path: Path, *, model: Path, data: Path, zoo: Path | None = None) -> None:
    """Point the app at these artifacts (one CPU thread, imports cached in tmp_path); zoo None: the
    hyper-representation's own. AppTest re-detects the pages/ folder before every run, so each run
    would start in Streamlit's legacy router and be rerun by shared.leave_legacy_router(), losing
    a button click; the real server leaves that router for good at its first run, so do the same."""
    from streamlit.runtime.pages_manager import PagesManager

    if zoo is None:
        monkeypatch.delenv("HYPERREP_ZOO", raising=False)
    else:
        monkeypatch.setenv("HYPERREP_ZOO", str(zoo))
    monkeypatch.setenv("HYPERREP_MODEL", str(model))
    monkeypatch.setenv("HYPERREP_DATA", str(data))
    monkeypatch.setenv("HYPERREP_DEVICE", "cpu")
    monkeypatch.setenv("HYPERREP_THREADS", "1")  # the test process keeps its single thread
    monkeypatch.setenv("HYPERREP_IMPORT_CACHE", str(tmp_path / "imports"))
    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> Path:
    """An IDX folder in the Debian layout: 'train' = first 8,000 shipped test images, 't10k' = the rest."""
    images = read_idx(SHIPPED_DATA / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(SHIPPED_DATA / "t10k-labels-idx1-ubyte.gz")
    folder = tmp_path_factory.mktemp("idx")
    write_idx(folder / "train-images-idx3-ubyte.gz", images[:8000])
    write_idx(folder / "train-labels-idx1-ubyte.gz", labels[:8000])
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images[8000:])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", labels[8000:])
    return folder


TINY_CONFIG = dict(
    name="tiny", n_models=12, epochs=2, train_images=1000, train_metric_images=300, test_images=500,
    batch_size=32, learning_rate=[0.001, 0.01], init={"kaiming_uniform": 0.75, "uniform": 0.25},
)


@pytest.fixture(scope="session")
def tiny_zoo_path(tmp_path_factory, idx_dir) -> Path:
    """A real zoo of 12 CNN-s models (3 saved epochs) trained in a few seconds."""
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo(BuildConfig(**TINY_CONFIG), out, data_dir=idx_dir, workers=1)
    return out


@pytest.fixture()
def tiny_zoo(tiny_zoo_path) -> Zoo:
    return Zoo.load(tiny_zoo_path)


def tiny_training(lwln: bool = True) -> TrainConfig:
    """The tiny autoencoder's settings: 2 epochs of a 1-block, d_model 16 transformer, PCA map."""
    return TrainConfig(model=ModelConfig(d_model=16, n_heads=2, n_blocks=1, d_ff=32, latent_dim=8), epochs=2,
                       batch_size=4, lwln=lwln, eval_images=100, final_eval_images=200, map_method="pca")


@pytest.fixture(scope="session")
def tiny_hyperrep_path(tiny_zoo_path, idx_dir, tmp_path_factory) -> Path:
    """A real (barely trained) hyper-representation of the tiny zoo, with a PCA map; ~5 s."""
    out = tmp_path_factory.mktemp("hyperrep") / "tiny"
    train_hyperrep(tiny_zoo_path, out, tiny_training(), data_dir=idx_dir, device="cpu")
    return out


@pytest.fixture(scope="session")
def tiny_hyperrep_no_lwln_path(tiny_zoo_path, idx_dir, tmp_path_factory) -> Path:
    """The same autoencoder trained with plain MSE (the report's LWLN ablation)."""
    out = tmp_path_factory.mktemp("hyperrep") / "tiny-no-lwln"
    train_hyperrep(tiny_zoo_path, out, tiny_training(lwln=False), data_dir=idx_dir, device="cpu")
    return out


# the report's searches at the smallest size that still chooses (one candidate per grid but the step sizes)
TINY_TUNING = TuningConfig(validation_images=60, models=2, anchor_fractions=[0.3], bandwidths=[0.3], gmm_components=[1],
                           budgets=[2], images=16, latent_step_sizes=[0.1], weight_step_sizes=[0.003, 0.03])

