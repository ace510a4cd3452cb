"""Getting dataset files safely: verified downloads, contained extraction, inert unpickling.

* :func:`fetch` streams a file from the first source that works into a temporary file
  beside its destination, with a progress bar, checks the length and the published
  checksum, and only then renames it into place. An interrupted, truncated or corrupted
  transfer never leaves a file under the final name.
* :func:`read_tar_members` streams the files of one folder of an archive into memory,
  writing nothing: an archive in a folder the user points at is only read. A member
  that is a link or a special file, or whose path is absolute or climbs out with
  ``..``, is refused as hostile.
* :func:`load_pickle` unpickles with an allow-list: plain containers, bytes, str,
  numbers and the NumPy array-reconstruction callables that the CIFAR files use, each
  in the one form those files use it (an empty array then filled from the bytes
  present; no Python-object dtype). A pickle that names anything else
  (``os.system``, ``builtins.eval``, ``numpy.ndarray`` called with a buffer and
  strides, ...) is refused before it can run or allocate.

Set ``FFNUMPY_OFFLINE=1`` to forbid downloads; a missing file is then one clear error.
"""
import contextlib
import hashlib
import io
import os
import pickle
import tarfile
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from .checkpoint import fsync_dir

OFFLINE_ENV = "FFNUMPY_OFFLINE"
TIMEOUT_S = 30  # per connection attempt and per read
CHUNK = 1 << 20
MAX_ARCHIVE_BYTES = 4 << 30  # refuse archives that unpack to more than 4 GiB
MAX_PICKLE_BYTES = 1 << 30


class DownloadError(OSError):
    """No source gave a good copy of a file; the message says what each source did."""


class UnsafeFileError(ValueError):
    """A file tried to do something a data file must not (leave its folder, run code)."""


# --- folders ---

@contextlib.contextmanager
def made_folder(folder):
    """Create ``folder`` (and missing parents) for the block; if the block fails, remove
    the folders it created that are still empty, so a failure leaves nothing behind."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    folder.mkdir(parents=True, exist_ok=True)
    try:
        yield folder
    except BaseException:
        for made in missing:  # innermost first
            with contextlib.suppress(OSError):
                made.rmdir()  # only succeeds when empty
        raise


# --- downloads ---

def offline():
    return os.environ.get(OFFLINE_ENV, "") not in ("", "0")


def md5_of(path):
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(urls, dest, md5, progress=True):
    """Download ``dest`` from the first of ``urls`` that gives a complete, verified copy.

    Parameters
    ----------
    urls : sequence of str
        Sources tried in order; a failure of one (no connection, HTTP error, short
        transfer, checksum mismatch) moves on to the next.
    dest : Path
        Final location. Written only once the copy is complete and verified.
    md5 : str
        Published MD5 of the file.

    Raises
    ------
    DownloadError
        If every source failed, or downloads are switched off (``FFNUMPY_OFFLINE``).
    """
    dest = Path(dest)
    if offline():
        raise DownloadError(f"{dest.name} is missing and downloads are off ({OFFLINE_ENV} is "
                            f"set); put the file at {dest} (or point --data-dir at a folder "
                            "holding it)")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    failures = []
    with made_folder(dest.parent):
        for url in urls:
            try:
                _stream(url, tmp, progress)
                got = md5_of(tmp)
                if got != md5:
                    raise DownloadError(f"checksum mismatch (MD5 {got}, published {md5}); the "
                                        "partial file was deleted")
                os.replace(tmp, dest)
                fsync_dir(dest.parent)
                return dest
            except (OSError, urllib.error.URLError, ValueError) as exc:
                failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
            finally:
                tmp.unlink(missing_ok=True)
        tried = "; ".join(failures)
        raise DownloadError(f"could not download {dest.name} ({tried}). Without network, copy "
                            f"the file to {dest} (or point --data-dir at a folder holding it)")


def _stream(url, tmp, progress):
    """Copy ``url`` into ``tmp``, checking the byte count against Content-Length."""
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
        total = response.headers.get("Content-Length")
        total = int(total) if total is not None else None
        received = 0
        with open(tmp, "wb") as f, tqdm(total=total, unit="B", unit_scale=True,
                                        desc=Path(url).name, disable=None if progress else True,
                                        leave=False) as bar:
            while True:
                block = response.read(CHUNK)
                if not block:
                    break
                f.write(block)
                received += len(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    if total is not None and received != total:
        raise DownloadError(f"transfer cut short: {received} of {total} bytes")


# --- archives ---

def read_tar_members(archive, top, names):
    """The files ``top/<name>`` of ``archive`` for each of ``names``, as bytes, read in
    one pass; nothing is written anywhere.

    Every member is checked, wanted or not: only regular files and folders, no path that
    is absolute or climbs out with ``..``, and at most :data:`MAX_ARCHIVE_BYTES` in all.

    Returns
    -------
    dict name -> bytes (a wanted name the archive lacks is absent)

    Raises
    ------
    UnsafeFileError
        For a hostile member, or an archive that is truncated, corrupted or holds no
        folder ``top/``.
    """
    wanted = {f"{top}/{name}": name for name in names}
    found, total, has_top = {}, 0, False
    try:
        with tarfile.open(archive, "r|*") as tar:  # a stream: members in archive order
            for member in tar:
                _check_member(member, archive)
                total += member.size
                if total > MAX_ARCHIVE_BYTES:
                    raise UnsafeFileError(f"{archive}: members claim more than "
                                          f"{MAX_ARCHIVE_BYTES} bytes, more than a dataset "
                                          "of this kind holds; refusing to read it")
                name = member.name.rstrip("/")
                has_top = has_top or name == top or name.startswith(f"{top}/")
                if member.isfile() and name in wanted:
                    with tar.extractfile(member) as src:
                        found[wanted[name]] = src.read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeFileError(f"{archive}: cannot be read ({exc}); the file is truncated or "
                              "corrupted") from None
    if not has_top:
        raise UnsafeFileError(f"{archive}: holds no folder {top}/; is it the right archive?")
    return found


def _check_member(member, archive):
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise UnsafeFileError(f"{archive}: member {member.name!r} points outside its folder; "
                              "refusing a hostile archive")
    if not (member.isdir() or member.isfile()):
        raise UnsafeFileError(f"{archive}: member {member.name!r} is a link or a special file; "
                              "a dataset archive holds only files and folders")


# --- pickles ---

def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


class _ArrayType:
    """What ``numpy.ndarray`` resolves to in a data pickle: a name that
    :func:`_reconstruct_empty` accepts, not the class itself, so a pickle cannot call
    ``ndarray(shape, dtype, buffer, offset, strides)`` and declare any size it likes."""

    def __new__(cls, *args):
        raise UnsafeFileError("the pickle calls numpy.ndarray itself, a form data files "
                              "never use (it can declare any size over a few bytes)")


def _reconstruct_empty(subtype, shape, dtype):
    """NumPy's ``_reconstruct`` as pickles use it: an empty array, which the pickle's
    state then fills (NumPy checks those bytes against the shape before allocating)."""
    if subtype is not _ArrayType or shape != (0,):
        raise UnsafeFileError("the pickle builds an array in a form data files never use")
    return _reconstruct()(np.ndarray, shape, dtype)


def _plain_dtype(*args):
    """``numpy.dtype``, refusing Python-object dtypes (their arrays unpickle elements)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafeFileError("the pickle asks for an array of Python objects")
    return dtype


def _empty_bytes(*args):
    """``bytes()`` as protocol-2 pickles written by Python 3 spell ``b''``; only that."""
    if args:
        raise UnsafeFileError("the pickle calls bytes() with arguments")
    return b""


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it for bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeFileError(f"the pickle encodes bytes as {encoding!r}, not latin1")
    return text.encode("latin1")


# (module, name) -> the object it may resolve to. Arrays pickle as
# _reconstruct(ndarray, (0,), b"b") plus a state tuple; Python 3 writes bytes in
# protocol 2 as _codecs.encode(str, "latin1"), and b"" as bytes(); nothing else is callable.
ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_empty,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_empty,
    ("numpy", "ndarray"): _ArrayType,
    ("numpy", "dtype"): _plain_dtype,
    ("__builtin__", "bytes"): _empty_bytes,
    ("builtins", "bytes"): _empty_bytes,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafeFileError(f"the pickle asks for {module}.{name}, which a data file "
                                  "never needs; refusing to load it (it could run code)") from None


def load_pickle(path):
    """Unpickle a data file with the allow-list of :data:`ALLOWED_GLOBALS`.

    Strings in the file are read as bytes (``encoding="bytes"``), as the CIFAR python
    version was written by Python 2.

    Raises
    ------
    UnsafeFileError
        If the pickle names a global outside the allow-list, or cannot be read.
    """
    path = Path(path)
    size = path.stat().st_size
    if size > MAX_PICKLE_BYTES:
        raise UnsafeFileError(f"{path}: {size} bytes, far more than a data batch; refusing")
    return loads_pickle(path.read_bytes(), path)


def loads_pickle(data, where):
    """:func:`load_pickle` for the bytes ``data`` (read from ``where``, named in errors)."""
    if len(data) > MAX_PICKLE_BYTES:
        raise UnsafeFileError(f"{where}: {len(data)} bytes, far more than a data batch; "
                              "refusing")
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafeFileError as exc:
        raise UnsafeFileError(f"{where}: {exc}") from None
    except Exception as exc:  # a malformed pickle raises many kinds; all mean "corrupted"
        raise UnsafeFileError(f"{where}: not a readable data pickle ({type(exc).__name__}: "
                              f"{exc}); the file is truncated or corrupted") from None
