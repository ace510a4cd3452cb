"""Datasets: MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100, found, fetched and validated.

Each dataset comes as images in [0, 1] (float32, flattened in (channels, H, W) order),
integer labels, the number of classes and the image shape (:class:`Dataset`).

Where the files are looked for, in order: ``<root>/<folder>/`` and ``<root>/`` with
root = ``--data-dir``, else ``$FFNUMPY_DATA_DIR``, else ``data_cache/``; for
Fashion-MNIST also Debian's ``/usr/share/datasets/fashion-mnist/``; then, for a file
found in none of them, a copy in ``data_cache/<folder>/`` with the published MD5.
MNIST ships with the repository in ``data_cache/mnist/``. A folder the user points at is only read, never written: a
CIFAR archive is read member by member in memory (nothing is extracted), and a
missing file is downloaded from the official source (then a mirror) into ffnumpy's
own ``data_cache/<folder>/`` and checked against its published MD5
(:mod:`ffnumpy.download`). A local copy is used as it is, since copies are often
re-compressed, but every file is validated before it is trusted: IDX magic numbers
and sizes against the bytes present, pickle contents against the expected keys,
shapes, dtypes and label ranges, and each split must hold at least one image. A bad
file raises :class:`DataError` naming the file and what is wrong.
"""
import gzip
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import xp_of
from .download import (
    DownloadError,
    UnsafeFileError,
    fetch,
    load_pickle,
    loads_pickle,
    md5_of,
    read_tar_members,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_CACHE = REPO_ROOT / "data_cache"
DATA_DIR_ENV = "FFNUMPY_DATA_DIR"  # overrides data_cache/ as the place datasets are read from
DATASETS = ("mnist", "fashion-mnist", "cifar10", "cifar100")
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist

VALIDATION_STREAM = 7  # seeds the held-out split apart from every training draw
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
CIFAR_IMAGE_SHAPE = (3, 32, 32)  # rows of the CIFAR files: 1024 red, 1024 green, 1024 blue

# Official sources first, then mirrors; MD5 sums as published with the files.
SOURCES = {
    "mnist": ("https://ossci-datasets.s3.amazonaws.com/mnist/",
              "http://yann.lecun.com/exdb/mnist/"),
    "fashion-mnist": ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                      "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/"
                      "master/data/fashion/"),
    "cifar10": ("https://www.cs.toronto.edu/~kriz/",),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/",),
}
MD5 = {
    "mnist": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "fashion-mnist": {"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                      "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
                      "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
                      "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
    "cifar10": {"cifar-10-python.tar.gz": "c58f30108f718f92721af3b95e74349a"},
    "cifar100": {"cifar-100-python.tar.gz": "eb9058c3a382ffc7106e4002c42a8d85"},
}
# name -> (archive, folder inside it, training files, test files, label key, classes)
CIFAR = {
    "cifar10": ("cifar-10-python.tar.gz", "cifar-10-batches-py",
                [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": ("cifar-100-python.tar.gz", "cifar-100-python", ["train"], ["test"],
                 b"fine_labels", 100),
}


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
            n_bytes = math.prod(dims)  # a Python int: no overflow
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


# --- where files are ---

def data_root(data_dir=None):
    """Where datasets are read: ``data_dir``, else $FFNUMPY_DATA_DIR, else data_cache/."""
    return Path(data_dir or os.environ.get(DATA_DIR_ENV) or DATA_CACHE)


def _search_folders(name, root):
    folders = [root / name, root]
    if name == "fashion-mnist":
        folders.append(DEBIAN_FASHION)
    return folders


def _download_folder(name):
    """``data_cache/<name>/``: ffnumpy's own folder, the only one it writes datasets into
    (a folder the user points at is read, never written)."""
    return DATA_CACHE / name


def _get_file(name, filename, root, folders):
    """The first copy of ``filename`` in ``folders``, else a verified download."""
    for folder in folders:
        if (folder / filename).is_file():
            return folder / filename
    dest = _download_folder(name) / filename
    if dest not in [f / filename for f in folders] and dest.is_file() \
            and md5_of(dest) == MD5[name][filename]:
        return dest  # the official file, downloaded before: as good as a new download
    urls = [base + filename for base in SOURCES[name]]
    try:
        return fetch(urls, dest, MD5[name][filename])
    except DownloadError as exc:
        looked = ", ".join(str(f) for f in folders)
        hint = ("; on Debian or Ubuntu, 'apt-get install dataset-fashion-mnist' provides it"
                if name == "fashion-mnist" else "")
        raise DataError(f"{name}: {filename} not found (looked in {looked}) and "
                        f"{exc}{hint}") from None


# --- MNIST and Fashion-MNIST ---

def _find_idx(name, stem, root, folders):
    for folder in folders:  # an uncompressed copy is used as it is
        if (folder / stem).is_file():
            return folder / stem
    return _get_file(name, stem + ".gz", root, folders)


def load_idx_dataset(name, data_dir=None):
    """MNIST or Fashion-MNIST: 60,000 training and 10,000 test images of shape (1, 28, 28).

    Returns
    -------
    Dataset with x of shape (N, 784), float32 in [0, 1].
    """
    root = data_root(data_dir)
    folders = _search_folders(name, root)
    # All four files from one folder if some folder holds them all (never mix copies).
    complete = [f for f in folders if all((f / s).is_file() or (f / (s + ".gz")).is_file()
                                          for s in MNIST_FILES.values())]
    if complete:
        folders = complete[:1]
    arrays = {key: read_idx(_find_idx(name, stem, root, folders))
              for key, stem in MNIST_FILES.items()}
    _, height, width = MNIST_IMAGE_SHAPE
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (height, width):
            raise DataError(f"{name} {split} images: expected shape (N, {height}, {width}), "
                            f"got {images.shape}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise DataError(f"{name} {split}: {images.shape[0]} images but labels of shape "
                            f"{labels.shape}")
        _check_labels(labels, MNIST_CLASSES, f"{name} {split}")
        _check_not_empty(images, f"{name} {split}", folders[0])
    return Dataset(_to_unit(arrays["train_images"]), arrays["train_labels"].astype(np.int64),
                   _to_unit(arrays["test_images"]), arrays["test_labels"].astype(np.int64),
                   MNIST_CLASSES, MNIST_IMAGE_SHAPE, name)


def load_mnist(data_dir=None):
    """MNIST (LeCun et al.); see :func:`load_idx_dataset`."""
    return load_idx_dataset("mnist", data_dir)


def load_fashion_mnist(data_dir=None):
    """Fashion-MNIST (Xiao et al. 2017); see :func:`load_idx_dataset`."""
    return load_idx_dataset("fashion-mnist", data_dir)


# --- CIFAR ---

def _cifar_batches(name, root):
    """The CIFAR batch files as ``{file name: (images, labels)}``: from an extracted folder
    if one is found, else read from the found or fetched archive without extracting it."""
    archive, top, train_files, test_files, label_key, n_classes = CIFAR[name]
    files = train_files + test_files
    folders = _search_folders(name, root)
    for folder in folders:
        if (folder / top).is_dir():
            return {f: _read_batch(folder / top / f, label_key, n_classes) for f in files}
    tarball = _get_file(name, archive, root, folders)
    try:
        blobs = read_tar_members(tarball, top, files)
        missing = [f for f in files if f not in blobs]
        if missing:
            raise DataError(f"{tarball}: has no {top}/{missing[0]}; is it the right archive?")
        batches = {}
        for f in files:
            where = f"{tarball}:{top}/{f}"
            batches[f] = _parse_batch(loads_pickle(blobs.pop(f), where), where, label_key,
                                      n_classes)
        return batches
    except UnsafeFileError as exc:
        raise DataError(str(exc)) from None


def _read_batch(path, label_key, n_classes):
    """One CIFAR pickle file: (images (N, 3072) uint8, labels (N,) int64), validated."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; the extracted folder is incomplete, "
                        "delete it to read the archive instead")
    try:
        batch = load_pickle(path)
    except UnsafeFileError as exc:
        raise DataError(str(exc)) from None
    return _parse_batch(batch, path, label_key, n_classes)


def _parse_batch(batch, path, label_key, n_classes):
    """Validate one unpickled CIFAR batch read from ``path``."""
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        keys = sorted(map(repr, batch))[:6] if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{path}: expected a dict with keys b'data' and {label_key!r}, got "
                        f"{keys}; is this a CIFAR python-version batch?")
    images = batch[b"data"]
    d = int(np.prod(CIFAR_IMAGE_SHAPE))
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 2
            and images.shape[1] == d):
        desc = (f"{images.dtype} array of shape {images.shape}"
                if isinstance(images, np.ndarray) else type(images).__name__)
        raise DataError(f"{path}: b'data' should be a uint8 array of shape (N, {d}), got {desc}")
    try:
        labels = np.asarray(batch[label_key])
    except (TypeError, ValueError):
        labels = np.asarray([], dtype=object)
    if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.kind not in "iu":
        raise DataError(f"{path}: {images.shape[0]} images but {label_key!r} is not a list of "
                        f"as many integers")
    _check_labels(labels, n_classes, str(path))
    return images, labels.astype(np.int64)


def load_cifar(name, data_dir=None):
    """CIFAR-10 or CIFAR-100 (Krizhevsky 2009), python version; fine labels for CIFAR-100.

    Returns
    -------
    Dataset with x of shape (N, 3072) in (channel, row, column) order, float32 in [0, 1].
    """
    _, _, train_files, test_files, _, n_classes = CIFAR[name]
    root = data_root(data_dir)
    batches = _cifar_batches(name, root)

    def split(files, what):
        images = np.concatenate([batches[f][0] for f in files])
        _check_not_empty(images, f"{name} {what}", root)
        return _to_unit(images), np.concatenate([batches[f][1] for f in files])

    x_train, y_train = split(train_files, "train")
    x_test, y_test = split(test_files, "test")
    return Dataset(x_train, y_train, x_test, y_test, n_classes, CIFAR_IMAGE_SHAPE, name)


# --- shared ---

def _check_not_empty(images, what, where):
    """A split without images would train on nothing or report a test error of NaN."""
    if images.shape[0] == 0:
        raise DataError(f"{what}: the files in {where} hold no images; re-copy the dataset")


def _check_labels(labels, n_classes, what):
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"{what} labels: found labels {labels.min()}..{labels.max()}, "
                        f"expected 0..{n_classes - 1}")


def _to_unit(a):
    """uint8 images -> float32 in [0, 1], flattened to (N, D).

    One float32 array is allocated and written directly: the ufunc converts the
    bytes in small internal buffers, so no float64 or second float32 copy exists
    (a 2 GiB IDX file becomes 8 GiB, not 8 GiB twice).
    """
    out = np.empty((a.shape[0], math.prod(a.shape[1:])), dtype=np.float32)  # (N, D)
    np.divide(a.reshape(out.shape), np.float32(255), out=out, dtype=np.float32)
    return out


def channel_stats(x, image_shape):
    """Per-channel mean and standard deviation of flattened images; two lists of C floats."""
    c = image_shape[0]
    per_channel = x.reshape(x.shape[0], c, -1)  # (N, C, H*W)
    mean = per_channel.mean(axis=(0, 2), dtype=np.float64)
    std = per_channel.std(axis=(0, 2), dtype=np.float64)
    return mean.tolist(), std.tolist()


def standardize_images(x, stats):
    """``(x - mean) / std`` per colour channel, for flattened images.

    Parameters
    ----------
    x : array of shape (N, D_img), NumPy or CuPy
        Images in (channel, row, column) order.
    stats : dict with "mean" and "std", lists of C floats

    Returns
    -------
    array of shape (N, D_img), of x's dtype (float32 for integer images)
    """
    xp = xp_of(x)
    dtype = x.dtype if x.dtype.kind == "f" else np.float32
    per_channel = x.shape[1] // len(stats["mean"])
    mean = xp.asarray(np.repeat(np.asarray(stats["mean"], dtype=dtype), per_channel))  # (D_img,)
    std = xp.asarray(np.repeat(np.asarray(stats["std"], dtype=dtype), per_channel))  # (D_img,)
    out = xp.subtract(x, mean, dtype=dtype)  # (N, D_img)
    out /= std
    return out


def standardize(data, stats=None):
    """Shift and scale each channel to mean 0 and std 1.

    Parameters
    ----------
    data : Dataset
    stats : dict with "mean" and "std" lists, optional
        Defaults to the training set's own :func:`channel_stats`.

    Returns
    -------
    (Dataset, stats)
    """
    if stats is None:
        mean, std = channel_stats(data.x_train, data.image_shape)
        stats = {"mean": mean, "std": std}
    return Dataset(standardize_images(data.x_train, stats), data.y_train,
                   standardize_images(data.x_test, stats), data.y_test,
                   data.n_classes, data.image_shape, data.name), stats


def hold_out(data, n_val, seed):
    """Split ``n_val`` validation images off the training set.

    The held-out images depend on ``seed`` only (a stream apart from the training
    draws), so every run of a seed, whatever its algorithm or learning rate, is
    validated on the same images and never trains on them.

    Returns
    -------
    (Dataset, x_val, y_val)
        The dataset with the remaining training images (in their original order) and
        the test set unchanged; x_val of shape (n_val, D_img), y_val of shape (n_val,).
    """
    n_train = data.x_train.shape[0]
    if not 0 <= n_val < n_train:
        raise DataError(f"--validation {n_val} must be at least 0 and below the "
                        f"{n_train} training images of {data.name}")
    rng = np.random.default_rng([seed, 0, VALIDATION_STREAM])  # epoch 0 never occurs
    val = np.sort(rng.permutation(n_train)[:n_val])  # (n_val,)
    keep = np.ones(n_train, dtype=bool)
    keep[val] = False
    rest = Dataset(data.x_train[keep], data.y_train[keep], data.x_test, data.y_test,
                   data.n_classes, data.image_shape, data.name)
    return rest, data.x_train[val], data.y_train[val]


LOADERS = {"mnist": load_mnist, "fashion-mnist": load_fashion_mnist,
           "cifar10": lambda data_dir=None: load_cifar("cifar10", data_dir),
           "cifar100": lambda data_dir=None: load_cifar("cifar100", data_dir)}


def load_dataset(name, data_dir=None):
    """Load the dataset ``name`` (one of :data:`DATASETS`).

    Raises
    ------
    DataError
        If the name is unknown, or its files are missing (and cannot be downloaded)
        or malformed.
    """
    if name not in LOADERS:
        raise DataError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return LOADERS[name](data_dir)
