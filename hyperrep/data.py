"""Image datasets from IDX files (Fashion-MNIST by default), normalised as the public zoos do."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hyperrep.files import ArtifactError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
SHIPPED_DATA = Path(__file__).resolve().parent.parent / "data" / "fashion-mnist"
INSTALL_HINT = (
    "install Debian's package with `apt-get install dataset-fashion-mnist`, or point "
    "--data-dir / HYPERREP_DATA at a folder of IDX files (MNIST, torchvision raw/ folders)"
)

# Per-dataset (mean, std) of the training images, as in the public zoos' Normalize transform.
NORMALISATION = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}

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


def load_split(
    split: str, data_dir: Path | str | None = None, normalisation: tuple[float, float] | None = None
) -> ImageSet:
    """Load the 'train' or 'test' split of an IDX folder as normalised tensors.

    The test split falls back to the copy shipped in data/ when the folder lacks it.
    """
    if split not in _FILE_STEMS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    image_stem, label_stem = _FILE_STEMS[split]
    try:
        image_path, label_path = find_idx_file(folder, image_stem), find_idx_file(folder, label_stem)
    except ArtifactError:
        if split != "test" or data_dir is not None or not SHIPPED_DATA.is_dir():
            raise
        image_path, label_path = find_idx_file(SHIPPED_DATA, image_stem), find_idx_file(SHIPPED_DATA, label_stem)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ArtifactError(f"{image_path}: {images.shape} images do not match {labels.shape} labels in {label_path}")
    mean, std = normalisation or NORMALISATION["fashion-mnist"]
    tensor = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
    return ImageSet((tensor - mean) / std, torch.from_numpy(labels.astype(np.int64)))


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic seeded split of range(n) into (train, validation) index arrays."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return np.sort(order[n_val:]), np.sort(order[:n_val])
