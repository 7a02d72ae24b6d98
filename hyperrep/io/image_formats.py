"""Image datasets in their distribution formats, with the public zoos' preprocessing.

CIFAR-10 (binary version: `data_batch_1..5.bin`, `test_batch.bin`), SVHN (`train_32x32.mat`,
`test_32x32.mat`, read with scipy) and STL-10 (`train_X.bin`, `train_y.bin`, `test_X.bin`,
`test_y.bin`) are read into uint8 arrays [N, H, W, C] exactly as torchvision's dataset classes
see them; `to_shape` then brings them to a CNN's input the way the Model Zoo generators did
(docs/formats.md): grayscale with PIL's "L" conversion, SVHN centre-cropped, the others resized
with PIL's bilinear filter, so the pixels equal those of torchvision's transforms on PIL images.
The IDX family (MNIST, Fashion-MNIST) is read by `hyperrep.images.datasets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from hyperrep.io.files import ArtifactError

# Where each dataset comes from (named in every "file not found" message); nothing is downloaded.
SOURCES = {
    "cifar10": "CIFAR-10, binary version: https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz "
               "(unpack; the folder cifar-10-batches-bin/ or its parent)",
    "svhn": "SVHN, format 2 (cropped digits): http://ufldl.stanford.edu/housenumbers/train_32x32.mat "
            "and test_32x32.mat",
    "stl10": "STL-10, binary version: https://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz "
             "(unpack; the folder stl10_binary/ or its parent)",
}
POINT_HINT = "put the files in one folder and point --data-dir / HYPERREP_DATA at it"
SPLITS = ("train", "test")
# How each dataset reaches a smaller image side in the zoo generators; the rest are resized.
SIDE_RULE = {"svhn": "center_crop"}


@dataclass(frozen=True)
class RawImages:
    """Undecoded pixels: uint8 images [N, H, W, C] and int64 labels [N] in 0..9."""

    images: np.ndarray
    labels: np.ndarray


def missing(path: Path, dataset: str) -> ArtifactError:
    """The error for a missing file: its path, where the dataset comes from, where to put it."""
    return ArtifactError(f"{path}: file not found; {SOURCES[dataset]}; {POINT_HINT}")


def _subfolder(folder: Path, name: str, marker: str) -> Path:
    """`folder` itself if it holds `marker`, else its unpacked subfolder `name` if that does."""
    if not (folder / marker).is_file() and (folder / name / marker).is_file():
        return folder / name
    return folder


def _read_bytes(path: Path, dataset: str) -> bytes:
    if not path.is_file():
        raise missing(path, dataset)
    try:
        return path.read_bytes()
    except OSError as err:
        raise ArtifactError(f"{path}: unreadable ({err})") from err


# -- CIFAR-10 ---------------------------------------------------------------------------------
CIFAR_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)}
CIFAR_RECORD = 1 + 3 * 32 * 32  # label byte, then the red, green and blue planes, row-major


def read_cifar10(folder: Path, split: str) -> RawImages:
    """CIFAR-10 binary batches of `split`: records of one label byte and 3x32x32 pixels."""
    folder = _subfolder(Path(folder), "cifar-10-batches-bin", CIFAR_FILES[split][0])
    images, labels = [], []
    for name in CIFAR_FILES[split]:
        path = folder / name
        raw = _read_bytes(path, "cifar10")
        if len(raw) % CIFAR_RECORD:
            raise ArtifactError(f"{path}: {len(raw)} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records")
        records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, CIFAR_RECORD)
        if records.size and records[:, 0].max() > 9:
            raise ArtifactError(f"{path}: label {records[:, 0].max()} out of range 0..9 (is this the CIFAR-100 binary?)")
        labels.append(records[:, 0].astype(np.int64))
        images.append(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return RawImages(np.concatenate(images), np.concatenate(labels))


# -- SVHN -------------------------------------------------------------------------------------
def read_svhn(folder: Path, split: str) -> RawImages:
    """SVHN `<split>_32x32.mat`: X [32, 32, 3, N], y [N, 1] with label 10 for the digit 0."""
    from scipy.io import loadmat  # scipy is only needed for this format

    path = Path(folder) / f"{split}_32x32.mat"
    if not path.is_file():
        raise missing(path, "svhn")
    try:
        content = loadmat(str(path))
    except Exception as err:  # scipy raises MatReadError, ValueError, OSError, ... for bad files
        raise ArtifactError(f"{path}: not a readable MATLAB file ({err})") from err
    x, y = content.get("X"), content.get("y")
    if not isinstance(x, np.ndarray) or not isinstance(y, np.ndarray) or x.ndim != 4 or x.shape[2] != 3:
        raise ArtifactError(f"{path}: needs X [32, 32, 3, N] and y [N, 1] (the SVHN cropped-digits format)")
    labels = y.reshape(-1).astype(np.int64)
    if len(labels) != x.shape[3]:
        raise ArtifactError(f"{path}: {x.shape[3]} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise ArtifactError(f"{path}: labels outside 1..10")
    labels[labels == 10] = 0
    return RawImages(np.ascontiguousarray(x.transpose(3, 0, 1, 2)).astype(np.uint8), labels)


# -- STL-10 -----------------------------------------------------------------------------------
STL_SIDE = 96


def read_stl10(folder: Path, split: str) -> RawImages:
    """STL-10 `<split>_X.bin` (3x96x96 per image, column-major) and `<split>_y.bin` (labels 1..10)."""
    folder = _subfolder(Path(folder), "stl10_binary", f"{split}_X.bin")
    image_path, label_path = folder / f"{split}_X.bin", folder / f"{split}_y.bin"
    raw, raw_labels = _read_bytes(image_path, "stl10"), _read_bytes(label_path, "stl10")
    size = 3 * STL_SIDE * STL_SIDE
    if len(raw) % size:
        raise ArtifactError(f"{image_path}: {len(raw)} bytes is not a whole number of 3x96x96 images")
    images = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3, STL_SIDE, STL_SIDE).transpose(0, 3, 2, 1)
    labels = np.frombuffer(raw_labels, dtype=np.uint8).astype(np.int64)
    if len(labels) != len(images):
        raise ArtifactError(f"{image_path}: {len(images)} images do not match {len(labels)} labels in {label_path}")
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise ArtifactError(f"{label_path}: labels outside 1..10")
    return RawImages(np.ascontiguousarray(images), labels - 1)


READERS = {"cifar10": read_cifar10, "svhn": read_svhn, "stl10": read_stl10}
# A file that marks each format in a folder, for finding the format of an unnamed dataset.
MARKERS = {
    "cifar10": ("data_batch_1.bin", "cifar-10-batches-bin/data_batch_1.bin"),
    "svhn": ("train_32x32.mat", "test_32x32.mat"),
    "stl10": ("train_X.bin", "stl10_binary/train_X.bin"),
}


def canonical_name(dataset: str | None) -> str | None:
    """'CIFAR-10', 'cifar_10' -> 'cifar10'; 'STL-10', 'stl' -> 'stl10'; other names unchanged."""
    if dataset is None:
        return None
    key = dataset.lower().replace("-", "").replace("_", "")
    return {"cifar10": "cifar10", "svhn": "svhn", "stl10": "stl10", "stl": "stl10"}.get(key, dataset)


def format_of(folder: Path, dataset: str | None) -> str | None:
    """The reader for `dataset` (by name), else the one whose files `folder` holds; None: IDX."""
    name = canonical_name(dataset)
    if name in READERS:
        return name
    if dataset is None:
        for fmt, markers in MARKERS.items():
            if any((Path(folder) / m).is_file() for m in markers):
                return fmt
    return None


def read_raw(fmt: str, folder: Path, split: str) -> RawImages:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return READERS[fmt](Path(folder), split)


# -- preprocessing ----------------------------------------------------------------------------
def grayscale(images: np.ndarray) -> np.ndarray:
    """[N, H, W, 3] -> [N, H, W, 1] uint8 with PIL's "L" rule (ITU-R 601-2 luma, fixed point)."""
    rgb = images.astype(np.uint32)
    luma = (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16
    return luma.astype(np.uint8)[..., None]


def center_crop(images: np.ndarray, side: int) -> np.ndarray:
    """torchvision's CenterCrop: the top-left corner at round((H - side) / 2)."""
    height, width = images.shape[1:3]
    top, left = int(round((height - side) / 2.0)), int(round((width - side) / 2.0))
    return images[:, top: top + side, left: left + side]


def resize(images: np.ndarray, side: int) -> np.ndarray:
    """torchvision's Resize((side, side)) on PIL images: PIL's bilinear filter, per image."""
    mode = "L" if images.shape[-1] == 1 else "RGB"
    out = np.empty((len(images), side, side, images.shape[-1]), dtype=np.uint8)
    for i, image in enumerate(images):
        pil = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
        resized = np.asarray(pil.resize((side, side), Image.BILINEAR))
        out[i] = resized[..., None] if mode == "L" else resized
    return out


def to_shape(images: np.ndarray, channels: int, side: int, dataset: str | None = None) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, channels, side, side] in [0, 1], as the zoo generators did."""
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 3 and channels == 1:
        images = grayscale(images)
    elif images.shape[-1] == 1 and channels == 3:
        images = np.repeat(images, 3, axis=-1)
    elif images.shape[-1] != channels:
        raise ValueError(f"cannot bring {images.shape[-1]}-channel images to {channels} channels")
    if images.shape[1] != side or images.shape[2] != side:
        rule = SIDE_RULE.get(canonical_name(dataset) or "", "resize")
        if rule == "center_crop" and min(images.shape[1:3]) >= side:
            images = center_crop(images, side)
        else:
            images = resize(images, side)
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / 255.0
