"""Datasets: a validating IDX reader and the MNIST loader.

MNIST ships with the repository in ``data_cache/mnist/`` (the four original IDX files,
gzip-compressed), so training works offline on a fresh clone. Every file is checked
before it is trusted: magic number, element type, number of dimensions, and that the
sizes the header claims match the bytes present. A bad file raises
:class:`DataError` with a message that names the file and what is wrong.
"""
import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_CACHE = REPO_ROOT / "data_cache"
DATA_DIR_ENV = "FFNUMPY_DATA_DIR"  # overrides data_cache/ as the place datasets are read from
DATASETS = ("mnist",)

IDX_UBYTE = 0x08  # the only element type the MNIST family uses
MAX_IDX_BYTES = 1 << 31  # refuse headers that claim more than 2 GiB before allocating anything

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_CLASSES = 10
MNIST_IMAGE_SHAPE = (1, 28, 28)  # (channels, H, W)


class DataError(ValueError):
    """A dataset file is missing or malformed; the message says which and how."""


@dataclass
class Dataset:
    """Images in [0, 1], flattened, with integer labels.

    Attributes
    ----------
    x_train, x_test : float32 arrays of shape (N, D_img)
    y_train, y_test : int64 arrays of shape (N,)
    n_classes : int
    image_shape : tuple (channels, H, W)
    name : str
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    image_shape: tuple
    name: str


# --- IDX ---

def read_idx(path):
    """Read an IDX file (optionally gzip-compressed) into a uint8 array.

    The format: two zero bytes, a type byte (0x08 = unsigned byte), a byte giving the
    number of dimensions n, n big-endian uint32 sizes, then the data.

    Raises
    ------
    DataError
        If the file is missing, truncated, too long, of another type, or its header
        claims an implausible size.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            header = f.read(4)
            if len(header) < 4:
                raise DataError(f"{path}: file too short for an IDX header ({len(header)} bytes)")
            zero, dtype_code, n_dims = struct.unpack(">HBB", header)
            if zero != 0 or dtype_code != IDX_UBYTE or not 1 <= n_dims <= 4:
                raise DataError(
                    f"{path}: bad IDX magic number 0x{header.hex()} (expected 0x000008NN "
                    "with 1 <= NN <= 4: unsigned bytes, NN dimensions); is this an IDX file?"
                )
            dims_raw = f.read(4 * n_dims)
            if len(dims_raw) < 4 * n_dims:
                raise DataError(f"{path}: header truncated inside its {n_dims} dimension sizes")
            dims = struct.unpack(f">{n_dims}I", dims_raw)
            n_bytes = int(np.prod(dims, dtype=np.int64))
            if n_bytes > MAX_IDX_BYTES:
                raise DataError(f"{path}: header claims shape {dims} ({n_bytes} bytes), "
                                "which is implausibly large; the file is corrupted")
            data = f.read(n_bytes)
            if len(data) != n_bytes:
                raise DataError(f"{path}: truncated: header says shape {dims} ({n_bytes} bytes "
                                f"of data) but only {len(data)} bytes follow; re-copy the file")
            if f.read(1):
                raise DataError(f"{path}: {n_bytes} data bytes expected after the header for "
                                f"shape {dims}, but the file is longer; it is corrupted")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: cannot be read ({exc}); the file is corrupted") from None
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


# --- MNIST ---

def data_root(data_dir=None):
    """Where datasets are read: ``data_dir``, else $FFNUMPY_DATA_DIR, else data_cache/."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or DATA_CACHE)


def _find_idx(folder, stem):
    for name in (stem + ".gz", stem):
        if (folder / name).exists():
            return folder / name
    raise DataError(f"MNIST file {stem}(.gz) not found in {folder}; copy the four MNIST IDX "
                    f"files there or point --data-dir at a folder holding them")


def load_mnist(data_dir=None):
    """Load MNIST from ``<root>/mnist/`` (or from ``data_dir`` itself if it holds the files).

    Returns
    -------
    Dataset
        60,000 training and 10,000 test images, float32 in [0, 1], shape (N, 784).
    """
    root = data_root(data_dir)
    folder = root / "mnist" if (root / "mnist").is_dir() else root
    arrays = {key: read_idx(_find_idx(folder, stem)) for key, stem in MNIST_FILES.items()}
    _, height, width = MNIST_IMAGE_SHAPE
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (height, width):
            raise DataError(f"MNIST {split} images: expected shape (N, {height}, {width}), "
                            f"got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"MNIST {split}: {images.shape[0]} images but labels of shape "
                            f"{labels.shape}")
        if labels.max(initial=0) >= MNIST_CLASSES:
            raise DataError(f"MNIST {split} labels: found label {labels.max()}, "
                            f"expected 0..{MNIST_CLASSES - 1}")

    def images(key):
        a = arrays[key]
        return (a.reshape(a.shape[0], -1) / np.float32(255)).astype(np.float32)  # (N, 784)

    return Dataset(images("train_images"), arrays["train_labels"].astype(np.int64),
                   images("test_images"), arrays["test_labels"].astype(np.int64),
                   MNIST_CLASSES, MNIST_IMAGE_SHAPE, "mnist")


LOADERS = {"mnist": load_mnist}


def load_dataset(name, data_dir=None):
    """Load the dataset ``name`` (one of :data:`DATASETS`)."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return LOADERS[name](data_dir)
