"""Image datasets (IDX files, Fashion-MNIST by default; CIFAR-10, SVHN and STL-10 through
`hyperrep.io.image_formats`), and the one rule for a zoo's images.

`DatasetRule` says how a zoo's images are normalised and which training images a zoo was trained
on (its validation part left out) at its CNN's input shape; zoo building, hyper-representation training, the report and
the app all get their images through it (`build_dataset_rule` for a new zoo, the zoo module's
`zoo_dataset_rule` for a saved one), so a zoo is always evaluated on the inputs it was trained on.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hyperrep.io import image_formats
from hyperrep.io.files import ArtifactError, atomic_write
from hyperrep.runtime.settings import artifact_root

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SHIPPED_DATA = artifact_root() / "data" / "fashion-mnist"  # the test split shipped with the checkout
INSTALL_HINT = (
    "install Debian's package with `apt-get install dataset-fashion-mnist`, or point "
    "--data-dir / HYPERREP_DATA at a folder of IDX files (MNIST, torchvision raw/ folders)"
)

# Per-dataset (mean, std) of the training images, as in the public zoos' Normalize transform.
NORMALISATION = {
    "fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081),
    "cifar10": (0.5, 0.5), "svhn": (0.5, 0.5), "stl10": (0.5, 0.5),  # the Model Zoo generators' Normalize(0.5, 0.5)
}
DEFAULT_DATASET = "fashion-mnist"
VAL_FRACTION = 1 / 6  # 60k -> 50k train / 10k validation, as the public zoos
DATA_SEED = 42

_FILE_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass(frozen=True)
class ImageSet:
    """Normalised images [N, C, H, W] float32 and labels [N] int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> "ImageSet":
        return ImageSet(self.images.to(device), self.labels.to(device))

    def subset(self, index: torch.Tensor | np.ndarray) -> "ImageSet":
        index = torch.as_tensor(index, dtype=torch.long)
        return ImageSet(self.images[index], self.labels[index])

    def first(self, n: int | None) -> "ImageSet":
        """The first `n` images (all when `n` is None or not smaller than the set)."""
        return self if n is None or n >= len(self) else ImageSet(self.images[:n], self.labels[:n])


def default_data_dir() -> Path:
    """HYPERREP_DATA if set, else Debian's Fashion-MNIST folder."""
    return Path(os.environ.get("HYPERREP_DATA") or DEBIAN_FASHION_MNIST)


def find_idx_file(folder: Path, stem: str) -> Path:
    """The file for `stem` in `folder`, gzipped or raw (torchvision's raw/ uses both)."""
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx"), f"{stem.replace('-idx', '.idx')}.gz"):
        if (folder / name).is_file():
            return folder / name
    raise ArtifactError(f"{folder / (stem + '.gz')}: file not found; {INSTALL_HINT}")


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (unsigned-byte data) into an array; checks magic number and size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as err:
        raise ArtifactError(f"{path}: unreadable IDX file ({err})") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ArtifactError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ArtifactError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise ArtifactError(f"{path}: IDX payload has {len(raw) - header} bytes, header says {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write an unsigned-byte IDX file (gzipped when the name ends in .gz), atomically."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)

    def write(tmp: Path) -> None:
        with (gzip.open(tmp, "wb") if str(path).endswith(".gz") else open(tmp, "wb")) as handle:
            handle.write(header + array.tobytes())

    atomic_write(path, write)


def write_digits_idx(folder: Path | str, n_train: int = 1400) -> Path:
    """scikit-learn's bundled handwritten digits (1,797 images of 8x8, values 0..16) as an IDX folder:
    scaled to bytes, resized to 28x28 with PIL's bilinear filter, the first `n_train` as the train split.
    A second 28x28 dataset that needs no download (transfer learning offline)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = (digits.images * 255.0 / 16.0).round().astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(p).resize((28, 28), Image.BILINEAR)) for p in pixels])
    labels = digits.target.astype(np.uint8)
    folder = Path(folder)
    for stem, part in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        write_idx(folder / f"{stem}-images-idx3-ubyte.gz", images[part])
        write_idx(folder / f"{stem}-labels-idx1-ubyte.gz", labels[part])
    return folder


def load_split(
    split: str, data_dir: Path | str | None = None, normalisation: tuple[float, float] | None = None,
    *, dataset: str | None = None, shape: tuple[int, int] | None = None,
) -> ImageSet:
    """Load the 'train' or 'test' split of a dataset folder as normalised tensors.

    `dataset` names the format (cifar10, svhn, stl10; anything else is IDX; None: found by the
    files in the folder); `shape` = (channels, side) of the CNN input, reached with the public
    zoos' preprocessing (default: the images as stored, for IDX 1 x 28 x 28). The IDX test split
    falls back to the copy shipped in data/ when no folder is given and the default lacks it.
    A paper `zoos/<dataset>/` folder (image_dataset.pt) gives its images as the paper stored them,
    preprocessed and normalised.
    """
    if split not in _FILE_STEMS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    if (folder / PAPER_IMAGES).is_file():
        return _paper_split(folder / PAPER_IMAGES, split, shape)
    fmt = image_formats.format_of(folder, dataset)
    if fmt is not None:
        raw = image_formats.read_raw(fmt, folder, split)
        images, labels = raw.images, raw.labels
    else:
        images, labels = _load_idx_split(split, folder, fallback=data_dir is None)
    channels, side = shape if shape is not None else (images.shape[-1] if images.ndim == 4 else 1, images.shape[1])
    pixels = image_formats.to_shape(images, channels, side, dataset or fmt)
    mean, std = normalisation or NORMALISATION[DEFAULT_DATASET]
    return ImageSet((torch.from_numpy(pixels) - mean) / std, torch.from_numpy(labels.astype(np.int64)))


PAPER_IMAGES = "image_dataset.pt"


def _paper_split(path: Path, split: str, shape: tuple[int, int] | None) -> ImageSet:
    """A split of the paper's image_dataset.pt (read by the allow-list unpickler), already normalised."""
    from hyperrep.io.paper_pickles import read_image_dataset  # the paper's files only matter for this folder

    splits = read_image_dataset(path)
    if split not in splits:
        raise ArtifactError(f"{path}: has no {split}set (has {sorted(splits)})")
    images, labels = splits[split]
    if shape is not None and tuple(images.shape[1:]) != (shape[0], shape[1], shape[1]):
        raise ArtifactError(f"{path}: images are {tuple(images.shape[1:])}, the zoo's CNN takes "
                            f"{(shape[0], shape[1], shape[1])}")
    return ImageSet(images.contiguous(), labels)


def _load_idx_split(split: str, folder: Path, fallback: bool) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, 28, 28] and labels [N] of an IDX folder (or the shipped test split)."""
    image_stem, label_stem = _FILE_STEMS[split]
    try:
        image_path, label_path = find_idx_file(folder, image_stem), find_idx_file(folder, label_stem)
    except ArtifactError:
        if split != "test" or not fallback or not SHIPPED_DATA.is_dir():
            raise
        image_path, label_path = find_idx_file(SHIPPED_DATA, image_stem), find_idx_file(SHIPPED_DATA, label_stem)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ArtifactError(f"{image_path}: {images.shape} images do not match {labels.shape} labels in {label_path}")
    return images, labels


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic seeded split of range(n) into (train, validation) index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def image_statistics(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of unsigned-byte images scaled to [0, 1], over every pixel
    (exact, from the 256-bin histogram, so 60,000 images cost no float copy)."""
    counts = np.bincount(np.asarray(images, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    total = counts.sum()
    if total == 0:
        raise ValueError("no pixels to compute image statistics from")
    mean = float((counts * values).sum() / total)
    std = float(np.sqrt((counts * (values - mean) ** 2).sum() / total))
    return round(mean, 6), round(max(std, 1e-6), 6)


def folder_statistics(data_dir: Path | str | None = None) -> tuple[float, float]:
    """Image statistics of a folder's training images (its test images when it has no training split)."""
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    fmt = image_formats.format_of(folder, None)
    if fmt is not None:
        return image_statistics(image_formats.read_raw(fmt, folder, "train").images)
    try:
        path = find_idx_file(folder, _FILE_STEMS["train"][0])
    except ArtifactError:
        path = find_idx_file(folder, _FILE_STEMS["test"][0])
    return image_statistics(read_idx(path))


@dataclass(frozen=True)
class DatasetRule:
    """A zoo's dataset: its name, the normalisation its models saw, the split of the training
    images into the part models train on and the validation part (`val_fraction`, `data_seed`),
    and the (channels, side) of its CNN's input (None: the images as stored)."""

    name: str
    normalisation: tuple[float, float]
    val_fraction: float = VAL_FRACTION
    data_seed: int = DATA_SEED
    shape: tuple[int, int] | None = None

    def load(self, split: str, data_dir: Path | str | None = None) -> ImageSet:
        """The whole 'train' or 'test' split, in this rule's format, shape and normalisation."""
        return load_split(split, data_dir, self.normalisation, dataset=self.name, shape=self.shape)

    def first_images(self, n: int | None, data_dir: Path | str | None = None, split: str = "test") -> ImageSet:
        """The first `n` images of a split (all when `n` is None): the test images every figure uses."""
        return self.load(split, data_dir).first(n)

    def training_part(self, n_total: int) -> np.ndarray:
        """Indices of the training split that models train on (the validation part left out)."""
        return train_val_split(n_total, self.val_fraction, self.data_seed)[0]

    def training_images(self, n: int, seed: int, data_dir: Path | str | None = None,
                        full: ImageSet | None = None) -> ImageSet:
        """`n` images drawn with `seed` from the training part (zoo building and fine-tuning use this)."""
        full = full if full is not None else self.load("train", data_dir)
        part = self.training_part(len(full))
        chosen = np.sort(np.random.default_rng(seed).choice(part, size=min(n, len(part)), replace=False))
        return full.subset(chosen)

    def validation_part(self, n_total: int) -> np.ndarray:
        """Indices of the training split's validation part: images no zoo model and no fine-tuning saw."""
        return train_val_split(n_total, self.val_fraction, self.data_seed)[1]

    def validation_images(self, n: int | None, data_dir: Path | str | None = None,
                          full: ImageSet | None = None) -> ImageSet:
        """The first `n` images (all when None) of the validation part: the images every tuned
        hyperparameter is chosen on, disjoint from the training part and from the test split."""
        full = full if full is not None else self.load("train", data_dir)
        part = self.validation_part(len(full))
        if len(part) == 0:
            raise ValueError(f"dataset {self.name!r} has no validation part (val_fraction {self.val_fraction})")
        return full.subset(part[: len(part) if n is None else n])

    def manifest_entry(self) -> dict:
        """What a zoo manifest records under `dataset` so that every reader applies the same rule."""
        return {"name": self.name, "normalisation": [float(v) for v in self.normalisation]}


def build_dataset_rule(name: str, data_dir: Path | str | None = None, *, val_fraction: float = VAL_FRACTION,
                       data_seed: int = DATA_SEED, shape: tuple[int, int] | None = None) -> DatasetRule:
    """The rule for a new zoo of dataset `name`: the known statistics of a known dataset, else
    statistics computed from the images in `data_dir` (recorded in the zoo's manifest)."""
    normalisation = NORMALISATION.get(name) or folder_statistics(data_dir)
    return DatasetRule(name, tuple(normalisation), val_fraction, data_seed, shape)


