"""Getting dataset files safely: verified downloads, contained extraction, inert unpickling.

* :func:`fetch` streams a file from the first source that works into a temporary file
  beside its destination, with a progress bar, checks the length and the published
  checksum, and only then renames it into place. An interrupted, truncated or corrupted
  transfer never leaves a file under the final name.
* :func:`extract_tar` extracts only regular files and folders, refuses any member whose
  path leaves the target folder, and renames the finished folder into place.
* :func:`load_pickle` unpickles with an allow-list: plain containers, bytes, str,
  numbers and the NumPy array-reconstruction callables that the CIFAR files use. A
  pickle that names anything else (``os.system``, ``builtins.eval``, ...) is refused
  before it can run.

Set ``FFNUMPY_OFFLINE=1`` to forbid downloads; a missing file is then one clear error.
"""
import contextlib
import hashlib
import io
import os
import pickle
import shutil
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

def extract_tar(archive, target, top):
    """Extract the folder ``top`` of ``archive`` to ``target/top``, safely and atomically.

    Only regular files and folders are extracted; a member that is a link or a device,
    or whose path is absolute or climbs out with ``..``, stops the extraction with
    :class:`UnsafeFileError` and nothing is left behind. The archive unpacks into a
    temporary folder that is renamed to ``target/top`` at the end.
    """
    with made_folder(target):
        return _extract_into(archive, Path(target), top)


def _extract_into(archive, target, top):
    staging = target / f".extract-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            size = sum(m.size for m in members)
            if size > MAX_ARCHIVE_BYTES:
                raise UnsafeFileError(f"{archive}: members claim {size} bytes in all, more "
                                      "than a dataset of this kind holds; refusing to extract")
            for m in members:
                _extract_member(tar, m, staging, archive)
        if not (staging / top).is_dir():
            raise UnsafeFileError(f"{archive}: holds no folder {top}/; is it the right archive?")
        final = target / top
        shutil.rmtree(final, ignore_errors=True)
        os.replace(staging / top, final)
        fsync_dir(target)
        return final
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise UnsafeFileError(f"{archive}: cannot be extracted ({exc}); the file is "
                              "truncated or corrupted") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract_member(tar, member, staging, archive):
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
        raise UnsafeFileError(f"{archive}: member {member.name!r} points outside the target "
                              "folder; refusing to extract a hostile archive")
    dest = staging.joinpath(*parts)
    if not dest.resolve().is_relative_to(staging.resolve()):
        raise UnsafeFileError(f"{archive}: member {member.name!r} resolves outside the target "
                              "folder; refusing to extract")
    if member.isdir():
        dest.mkdir(parents=True, exist_ok=True)
    elif member.isfile():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, CHUNK)
    else:
        raise UnsafeFileError(f"{archive}: member {member.name!r} is a link or a special file; "
                              "a dataset archive holds only files and folders")


# --- pickles ---

def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn  # NumPy >= 2
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 use it for bytes."""
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeFileError(f"the pickle encodes bytes as {encoding!r}, not latin1")
    return text.encode("latin1")


# (module, name) -> the object it may resolve to. Arrays pickle as
# _reconstruct(ndarray, shape, dtype) plus a state tuple; Python 3 writes bytes in
# protocol 2 as _codecs.encode(str, "latin1"); nothing else is callable.
ALLOWED_GLOBALS = {
    ("_codecs", "encode"): _latin1_encode,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
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
    data = path.read_bytes()
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except UnsafeFileError as exc:
        raise UnsafeFileError(f"{path}: {exc}") from None
    except Exception as exc:  # a malformed pickle raises many kinds; all mean "corrupted"
        raise UnsafeFileError(f"{path}: not a readable data pickle ({type(exc).__name__}: "
                              f"{exc}); the file is truncated or corrupted") from None
