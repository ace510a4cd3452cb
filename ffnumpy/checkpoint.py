"""Atomic files: checkpoints, saved models and JSON metrics that survive a crash.

Every file is written to a temporary name in the same folder, flushed and fsynced,
then renamed over the target (``os.replace`` is atomic on POSIX), and the folder is
fsynced, so a reader sees either the old complete file or the new complete file,
never a partial one. A checkpoint is one ``.npz`` archive: arrays under their names
plus a JSON header (format version, configuration, epoch, metrics, RNG state) in
the entry ``__meta__``. Nothing in it is pickled, so loading never runs code.

A SIGINT or SIGTERM that arrives during a write is held until the file is in place
(:func:`signals_held`), so a second Ctrl-C never leaves a half-written checkpoint.
Files get the mode a plain ``open`` would give (0o666 less the umask), not
``mkstemp``'s 0o600. A failed write raises the ``OSError`` with ``filename`` set to
the target, and leaves the previous file and no temporary behind.
"""
import contextlib
import json
import os
import signal
import tempfile
import threading
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "ffnumpy-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, damaged or of another format version."""


def fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_mode():
    """The mode ``open`` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)  # the only way to read it: set and restore at once
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def signal_handlers(handlers):
    """Install ``{signum: handler}`` for the block and restore the previous handlers after.

    Python runs signal handlers in the main thread and sets them only there, so outside
    it the block runs with the handlers as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM until the block ends, then deliver any that arrived.

    Handlers that only record the signal are swapped in for the block (blocking the
    signal in one thread would not stop the kernel from handing it to another). Outside
    the main thread: no effect.
    """
    arrived = []
    record = {sig: lambda signum, frame: arrived.append(signum)
              for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with signal_handlers(record):
            yield
    finally:
        for sig in dict.fromkeys(arrived):  # each kind once, in order of arrival
            signal.raise_signal(sig)


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file, then move it to ``path`` atomically.

    Raises
    ------
    OSError
        From the file system (disk full, read-only, not a folder), with ``filename``
        naming ``path`` when the error did not name a file; ``path`` is then unchanged.
    """
    path = Path(path)
    with signals_held():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        except OSError as exc:
            exc.filename = exc.filename or str(path)
            raise
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fchmod(f.fileno(), file_mode())
                os.fsync(f.fileno())
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError) and not exc.filename:
                exc.filename = str(path)
            raise


def describe_os_error(exc):
    """One line for a file-system error: the path and the cause, e.g.
    "cannot write run/metrics.json: No space left on device"."""
    return f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}"


def write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    data = (json.dumps(obj, indent=2) + "\n").encode()
    atomic_write(path, lambda f: f.write(data))


def save_archive(path, arrays, meta):
    """Save host arrays and a JSON-able ``meta`` dict as one atomic ``.npz`` file."""
    header = {"format": FORMAT, "version": FORMAT_VERSION, **meta}
    payload = {k: np.asarray(v) for k, v in arrays.items()}
    payload[META_KEY] = np.array(json.dumps(header))  # a unicode array: no pickle needed
    atomic_write(path, lambda f: np.savez(f, **payload))


def load_archive(path):
    """Load an archive written by :func:`save_archive`.

    Returns
    -------
    arrays : dict of numpy arrays
    meta : dict

    Raises
    ------
    CheckpointError
        If the file is missing, truncated or corrupted, not an ffnumpy archive, or of
        another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupted ({type(exc).__name__}: {exc}); "
                              "use an earlier checkpoint or retrain") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: not an ffnumpy checkpoint (no {META_KEY} entry)")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: damaged header ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged header (a JSON {type(meta).__name__}, "
                              "not an object); use an earlier checkpoint or retrain")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ffnumpy checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('version')} but this ffnumpy "
                              f"reads version {FORMAT_VERSION}; use the ffnumpy that wrote it")
    return arrays, meta
