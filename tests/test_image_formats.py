"""CIFAR-10 binary, SVHN .mat and STL-10 binary files, written here in exactly their formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import savemat

from hyperrep.images.datasets import load_split
from hyperrep.io import image_formats
from hyperrep.io.files import ArtifactError


def _images(n: int, side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def write_cifar10(folder, train_per_batch: int = 4, test: int = 5, seed: int = 0) -> dict:
    """CIFAR-10 binary batches: one label byte then the R, G, B planes (row-major) per record."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for k, name in enumerate(names):
        n = test if name == "test_batch.bin" else train_per_batch
        images, labels = _images(n, 32, seed + k), (np.arange(n) + k) % 10
        records = np.concatenate([labels[:, None].astype(np.uint8), images.transpose(0, 3, 1, 2).reshape(n, -1)], axis=1)
        (folder / name).write_bytes(records.tobytes())
        made[name] = (images, labels)
    return made


def write_svhn(folder, n_train: int = 6, n_test: int = 4, seed: int = 0) -> dict:
    """SVHN cropped digits: X [32, 32, 3, N] uint8 and y [N, 1] in 1..10 (10 is the digit 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for k, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images, digits = _images(n, 32, seed + k), np.arange(n) % 10
        y = np.where(digits == 0, 10, digits).reshape(-1, 1).astype(np.uint8)
        savemat(str(folder / f"{split}_32x32.mat"), {"X": images.transpose(1, 2, 3, 0), "y": y})
        made[split] = (images, digits)
    return made


def write_stl10(folder, n_train: int = 3, n_test: int = 2, seed: int = 0) -> dict:
    """STL-10 binary: 3x96x96 per image in column-major order, labels 1..10 in a byte file."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for k, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        images, labels = _images(n, 96, seed + k), (np.arange(n) + 3 * k) % 10
        # column-major per channel: the file holds image[c].T row-major
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 3, 2, 1).tobytes())
        (folder / f"{split}_y.bin").write_bytes((labels + 1).astype(np.uint8).tobytes())
        made[split] = (images, labels)
    return made


def test_cifar10_binary_records_decode_to_the_written_pixels(tmp_path):
    made = write_cifar10(tmp_path / "cifar-10-batches-bin")
    train = image_formats.read_cifar10(tmp_path, "train")  # the unpacked subfolder is found
    assert train.images.shape == (20, 32, 32, 3) and train.images.dtype == np.uint8
    assert np.array_equal(train.images[4:8], made["data_batch_2.bin"][0])
    assert train.labels[4:8].tolist() == made["data_batch_2.bin"][1].tolist()
    test = image_formats.read_cifar10(tmp_path / "cifar-10-batches-bin", "test")
    assert np.array_equal(test.images, made["test_batch.bin"][0])


def test_svhn_mat_files_map_label_ten_to_digit_zero(tmp_path):
    made = write_svhn(tmp_path)
    train = image_formats.read_svhn(tmp_path, "train")
    assert np.array_equal(train.images, made["train"][0])
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_stl10_column_major_images_and_labels_from_one(tmp_path):
    made = write_stl10(tmp_path / "stl10_binary")
    test = image_formats.read_stl10(tmp_path, "test")
    assert test.images.shape == (2, 96, 96, 3)
    assert np.array_equal(test.images, made["test"][0])
    assert test.labels.tolist() == made["test"][1].tolist()


def test_preprocessing_equals_the_pil_transforms_of_the_zoo_generators():
    images = _images(3, 32, 7)
    gray = image_formats.to_shape(images, 1, 28, "svhn")  # Grayscale + CenterCrop(28)
    for i in range(3):
        pil = Image.fromarray(images[i]).convert("L").crop((2, 2, 30, 30))
        assert np.array_equal((gray[i, 0] * 255).round().astype(np.uint8), np.asarray(pil))
    small = image_formats.to_shape(images, 3, 28, "cifar10")  # Resize((28, 28)), bilinear
    pil = np.asarray(Image.fromarray(images[1]).resize((28, 28), Image.BILINEAR))
    assert np.array_equal((small[1] * 255).round().astype(np.uint8).transpose(1, 2, 0), pil)
    full = image_formats.to_shape(images, 3, 32, "cifar10")  # CNN-l: no resize
    assert np.array_equal((full[0] * 255).round().astype(np.uint8).transpose(1, 2, 0), images[0])
    assert full.dtype == np.float32 and full.shape == (3, 3, 32, 32)


def test_load_split_reads_each_format_at_a_cnns_shape(tmp_path, monkeypatch):
    write_cifar10(tmp_path / "cifar")
    write_svhn(tmp_path / "svhn")
    write_stl10(tmp_path / "stl")
    cifar = load_split("train", tmp_path / "cifar", (0.5, 0.5), dataset="cifar10", shape=(3, 28))
    assert cifar.images.shape == (20, 3, 28, 28) and cifar.labels.dtype == torch.int64
    assert -1.0 <= cifar.images.min() and cifar.images.max() <= 1.0
    svhn = load_split("test", tmp_path / "svhn", (0.5, 0.5), dataset="svhn", shape=(1, 28))
    assert svhn.images.shape == (4, 1, 28, 28) and svhn.labels.tolist() == [0, 1, 2, 3]
    monkeypatch.setenv("HYPERREP_DATA", str(tmp_path / "stl"))
    stl = load_split("train", None, (0.5, 0.5), dataset="STL-10", shape=(3, 32))
    assert stl.images.shape == (3, 3, 32, 32)
    found = load_split("test", tmp_path / "stl", (0.5, 0.5), shape=(3, 28))  # format found by its files
    assert found.images.shape == (2, 3, 28, 28)


def test_missing_files_name_the_file_and_where_the_dataset_comes_from(tmp_path):
    for dataset, file in (("cifar10", "data_batch_1.bin"), ("svhn", "train_32x32.mat"), ("stl10", "train_X.bin")):
        with pytest.raises(ArtifactError) as err:
            load_split("train", tmp_path, dataset=dataset, shape=(3, 32))
        message = str(err.value)
        assert str(tmp_path / file) in message and "HYPERREP_DATA" in message
        assert image_formats.SOURCES[dataset].split(":")[0] in message and "http" in message


def test_corrupt_files_are_named(tmp_path):
    (tmp_path / "data_batch_1.bin").write_bytes(b"\x00" * 100)
    with pytest.raises(ArtifactError, match="whole number of 3073-byte"):
        image_formats.read_cifar10(tmp_path, "train")
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file")
    with pytest.raises(ArtifactError, match="train_32x32.mat"):
        image_formats.read_svhn(tmp_path, "train")
    (tmp_path / "train_X.bin").write_bytes(bytes(3 * 96 * 96))
    (tmp_path / "train_y.bin").write_bytes(bytes([1, 2]))
    with pytest.raises(ArtifactError, match="1 images do not match 2 labels"):
        image_formats.read_stl10(tmp_path, "train")


def test_app_dataset_source_names_the_colour_dataset_and_the_input_shape(monkeypatch):
    from hyperrep.pipeline import artifacts

    monkeypatch.delenv("HYPERREP_DATA", raising=False)
    source = artifacts.dataset_source({"architecture": "cnn_l", "dataset": {"name": "cifar10", "normalisation": [0.5, 0.5]}})
    assert source.rule.shape == (3, 32) and source.dataset == "cifar10"
    assert "cifar-10-binary.tar.gz" in source.warning and "Fashion-MNIST" not in source.warning
    assert artifacts.dataset_source({"architecture": "cnn_s", "dataset": {"name": "fashion-mnist"}}).rule.shape == (1, 28)
