"""IDX reading, split loading and normalisation, and the errors a bad data folder gives."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from conftest import write_idx

from hyperrep.images.datasets import NORMALISATION, image_statistics, load_split, read_idx, train_val_split
from hyperrep.io.files import ArtifactError
from hyperrep.zoo.format import zoo_dataset_rule


def test_read_idx_gz_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a-idx3-ubyte.gz", array)
    write_idx(tmp_path / "a-idx3-ubyte", array)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte.gz"), array)
    assert np.array_equal(read_idx(tmp_path / "a-idx3-ubyte"), array)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    write_idx(tmp_path / "l-idx1-ubyte", labels)
    assert read_idx(tmp_path / "l-idx1-ubyte").tolist() == [3, 1, 4, 1, 5]


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"\x00" * 12)  # float IDX, not unsigned byte
    with pytest.raises(ArtifactError, match="bad magic") as err:
        read_idx(bad)
    assert str(bad) in str(err.value)
    short = tmp_path / "short-idx1-ubyte.gz"
    with gzip.open(short, "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + bytes(7))
    with pytest.raises(ArtifactError, match="7 bytes, header says 10") as err:
        read_idx(short)
    assert str(short) in str(err.value)
    not_gzip = tmp_path / "junk-idx1-ubyte.gz"
    not_gzip.write_bytes(b"plain text")
    with pytest.raises(ArtifactError, match="unreadable IDX") as err:
        read_idx(not_gzip)
    assert str(not_gzip) in str(err.value)


def test_load_split_shapes_and_normalisation(idx_dir):
    train, test = load_split("train", idx_dir), load_split("test", idx_dir)
    assert train.images.shape == (8000, 1, 28, 28) and test.images.shape == (2000, 1, 28, 28)
    assert train.images.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert sorted(test.labels.unique().tolist()) == list(range(10))
    raw = read_idx(idx_dir / "train-images-idx3-ubyte.gz")
    mean, std = NORMALISATION["fashion-mnist"]
    assert torch.allclose(train.images[5, 0], (torch.from_numpy(raw[5].astype(np.float32)) / 255 - mean) / std)
    # pixel 0 maps to -mean/std; the normalised train mean is close to 0 on real Fashion-MNIST
    assert train.images.min().item() == pytest.approx(-mean / std)
    assert abs(train.images.mean().item()) < 0.1
    mnist_style = load_split("train", idx_dir, normalisation=(0.5, 0.5))
    assert mnist_style.images.min().item() == pytest.approx(-1.0)
    assert len(train.subset(torch.tensor([0, 2, 4]))) == 3


def test_missing_files_are_named_with_how_to_get_them(tmp_path):
    with pytest.raises(ArtifactError) as err:
        load_split("train", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in message
    assert "apt-get install dataset-fashion-mnist" in message and "HYPERREP_DATA" in message
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_split("validation", tmp_path)


def test_hyperrep_data_points_at_a_folder(idx_dir, monkeypatch):
    monkeypatch.setenv("HYPERREP_DATA", str(idx_dir))
    assert len(load_split("train")) == 8000


def test_mismatched_images_and_labels_are_an_error(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros((4, 28, 28), dtype=np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, dtype=np.uint8))
    with pytest.raises(ArtifactError, match="do not match"):
        load_split("test", tmp_path)


def test_seeded_split_is_deterministic_and_disjoint():
    train, val = train_val_split(1000, 1 / 6, seed=42)
    again_train, again_val = train_val_split(1000, 1 / 6, seed=42)
    other_train, _ = train_val_split(1000, 1 / 6, seed=43)
    assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
    assert not np.array_equal(train, other_train)
    assert (len(train), len(val)) == (833, 167)
    assert not set(train) & set(val) and set(train) | set(val) == set(range(1000))
    assert np.all(np.diff(train) > 0)


def made_up_dataset(folder, idx_dir):
    """An IDX folder of a dataset hyperrep does not know: brightened, contrast-reduced Fashion-MNIST."""
    folder.mkdir()
    for stem in ("train", "t10k"):
        images = read_idx(idx_dir / f"{stem}-images-idx3-ubyte.gz").astype(np.float64)
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", np.round(100 + 0.5 * images).astype(np.uint8))
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", read_idx(idx_dir / f"{stem}-labels-idx1-ubyte.gz"))
    return folder


def test_image_statistics_are_exact():
    images = np.random.default_rng(0).integers(0, 256, size=(50, 7, 7)).astype(np.uint8)
    scaled = images.astype(np.float64) / 255
    assert image_statistics(images) == pytest.approx((scaled.mean(), scaled.std()), abs=1e-6)


def test_a_made_up_dataset_is_trained_recorded_and_evaluated_with_the_same_statistics(idx_dir, tmp_path, monkeypatch):
    from hyperrep.ae.quality import load_eval_images
    from hyperrep.nets.population import evaluate_population
    from hyperrep.pipeline import artifacts
    from hyperrep.pipeline.report import load_fine_tune_images, load_test_images
    from hyperrep.zoo.build import BuildConfig, build_zoo, load_build_data

    folder = made_up_dataset(tmp_path / "made-up", idx_dir)
    raw = read_idx(folder / "train-images-idx3-ubyte.gz").astype(np.float64) / 255
    expected = (raw.mean(), raw.std())
    assert abs(expected[0] - NORMALISATION["fashion-mnist"][0]) > 0.1  # not Fashion-MNIST's statistics
    config = BuildConfig(name="made-up", dataset="made-up", n_models=2, epochs=1, train_images=300,
                         train_metric_images=100, test_images=400, learning_rate=0.01)
    zoo = build_zoo(config, tmp_path / "zoo", data_dir=folder, workers=1)
    recorded = zoo.manifest["dataset"]["normalisation"]
    assert recorded == pytest.approx(expected, abs=1e-5)  # recorded as computed, not (0, 1)
    # the models were trained on inputs normalised this way: the build's data uses the recorded numbers
    build = load_build_data(config, folder)
    assert build.test.images.mean().item() == pytest.approx(
        (read_idx(folder / "t10k-images-idx3-ubyte.gz")[:400] / 255 - recorded[0]).mean() / recorded[1], abs=1e-4)
    # the report, the autoencoder's checks and the app all use the same statistics
    test = load_test_images(zoo, 400, folder)
    assert torch.equal(test.images, build.test.images)
    assert torch.equal(load_eval_images(zoo, 400, folder, torch.device("cpu")).images, build.test.images)
    monkeypatch.setenv("HYPERREP_DATA", str(folder))
    assert artifacts.dataset_source(zoo.manifest).normalisation == tuple(recorded)
    # ... so re-evaluating a zoo model reproduces the accuracy stored at build time
    last = zoo.properties[zoo.properties["epoch"] == 1].sort_values("model_id")
    again = evaluate_population(zoo.architecture, zoo.activation, zoo.weights[:, -1], test)
    assert again.accuracy == pytest.approx(last["test_acc"].to_numpy(), abs=1e-6)
    # fine-tuning draws from the training part of the split the build used, by the manifest's settings
    fine = load_fine_tune_images(zoo, 300, config.data_seed, folder)
    assert torch.equal(fine.images, build.train.images)
    # a manifest that records no statistics (an older import) gets them computed the same way
    bare = {**zoo.manifest, "dataset": {"name": "made-up"}}
    assert zoo_dataset_rule(bare, folder).normalisation == pytest.approx(tuple(recorded))
    assert zoo_dataset_rule({"dataset": {"name": "mnist"}}).normalisation == NORMALISATION["mnist"]
