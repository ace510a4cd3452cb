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

Containment: every file of a folder is opened relative to a descriptor of that folder
with ``O_NOFOLLOW`` (:func:`open_in`), so a file name that is a symbolic link is refused,
never followed: a folder someone hands over cannot make ffnumpy write or read outside it.
Reading an archive checks every size its entries declare against the bytes present and
against a memory budget before anything is allocated (:func:`load_archive`).
"""
import contextlib
import errno
import json
import math
import os
import secrets
import signal
import stat
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np

FORMAT = "ffnumpy-checkpoint"
FORMAT_VERSION = 1
META_KEY = "__meta__"


EXIT_NONFINITE = 3  # the exit code of a file holding NaN or infinity (as train's NaN guard)
TMP_SUFFIX = ".tmp"  # every temporary file is ".<name>.<random>.tmp"
TMP_STEM_CHARS = 40  # of the target's name in a temporary's: the temporary never outgrows it
MAX_HEADER_NESTING = 64  # a JSON header deeper than this is damaged (ours nest 4 deep)
# Deflate expands at most about 1032-fold, so a member declaring more than this many bytes
# per stored byte cannot hold what it declares (np.savez stores members uncompressed).
MAX_DEFLATE_RATIO = 1032


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, damaged or of another format version."""

    code = 2  # the command's usage exit code


class NonFiniteError(CheckpointError):
    """A checkpoint or model holds NaN or infinity in its weights, optimiser state or
    statistics: a diverged run, which must not be trained on or evaluated."""

    code = EXIT_NONFINITE


class SymlinkError(OSError):
    """A file of a run folder is a symbolic link (or not a regular file); refused."""


# --- contained files ---

@contextlib.contextmanager
def folder_fd(folder):
    """A descriptor of ``folder`` for ``*at``-style calls (``dir_fd=``) in the block."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        exc.filename = str(folder)
        raise
    try:
        yield fd
    finally:
        os.close(fd)


def open_in(dir_fd, name, flags, mode=0o666, folder=""):
    """``os.open(name, flags | O_NOFOLLOW, dir_fd=dir_fd)`` for a plain ``name`` (no slash).

    The file is opened relative to its folder's descriptor and never through a symbolic
    link; one that is not a regular file (a link, a FIFO, a device) is refused.

    Raises
    ------
    SymlinkError
        If ``name`` is a symbolic link or not a regular file (errno ELOOP).
    OSError
        As ``os.open``; ``filename`` names ``folder/name``.
    """
    path = os.path.join(str(folder), name)
    try:  # O_NONBLOCK: a FIFO planted under the name must not hang the open; cleared below
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode,
                     dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SymlinkError(errno.ELOOP, "a symbolic link; refusing to follow it",
                               path) from None
        exc.filename = path
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise SymlinkError(errno.ELOOP, "not a regular file; refusing to use it", path)
    os.set_blocking(fd, True)
    return fd


def open_file(path, flags=os.O_RDONLY, mode=0o666):
    """Open ``path`` with :func:`open_in` relative to its folder: never through a link."""
    path = Path(path)
    with folder_fd(path.parent) as dfd:
        return open_in(dfd, path.name, flags, mode, path.parent)


def fsync_dir(folder):
    with folder_fd(folder) as fd:
        os.fsync(fd)


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


def as_command(entry):
    """Run a command's ``entry()`` as the process's last act.

    Standard output and error replace what their encoding cannot show (a non-ASCII path
    under an ASCII-only locale prints as escapes instead of failing), and once ``entry``
    returns or exits, SIGINT and SIGTERM are ignored: a second Ctrl-C while the
    interpreter shuts down (joining worker threads) then prints no traceback.
    """
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict":  # surrogateescape already copes
            with contextlib.suppress(AttributeError, ValueError, OSError):
                stream.reconfigure(errors="backslashreplace")
    try:
        entry()
    finally:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_IGN)


def silence_stdout():
    """Send the rest of standard output to /dev/null (after it failed: a closed pipe, a
    full disk). The file descriptor itself is redirected, so the interpreter's last flush
    at exit cannot fail and print a traceback either."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (captured): replace it
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the process
    finally:
        os.close(devnull)


def temporary_name(name):
    """A fresh hidden name beside ``name``, never longer than ``name`` allows plus a few
    characters: ".<name, cut>.<random>.tmp"."""
    return f".{name[:TMP_STEM_CHARS]}.{secrets.token_hex(4)}{TMP_SUFFIX}"


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file, then move it to ``path`` atomically.

    The temporary is created in ``path``'s folder with ``O_EXCL | O_NOFOLLOW`` relative
    to a descriptor of that folder, and renamed over ``path`` there: a symbolic link at
    ``path`` is replaced, never followed.

    Raises
    ------
    OSError
        From the file system (disk full, read-only, not a folder), with ``filename``
        naming ``path`` (never the temporary); ``path`` is then unchanged.
    """
    path = Path(path)
    with signals_held():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with folder_fd(path.parent) as dfd:
                _write_in(dfd, path.name, write)
        except OSError as exc:
            exc.filename = str(path)
            raise


def _write_in(dfd, name, write):
    """The body of :func:`atomic_write`, inside the folder ``dfd``."""
    if len(os.fsencode(name)) > os.fpathconf(dfd, "PC_NAME_MAX"):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG))
    tmp = temporary_name(name)
    fd = open_in(dfd, tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), file_mode())
            os.fsync(f.fileno())
        os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        os.fsync(dfd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dfd)
        raise


def remove_in(folder, names):
    """Remove the files ``names`` of ``folder`` (links themselves, never their targets);
    a name that is not there is skipped. Returns the names removed."""
    removed = []
    with folder_fd(folder) as dfd:
        for name in names:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                continue
            except OSError as exc:
                exc.filename = os.path.join(str(folder), name)
                raise
            removed.append(name)
        if removed:
            os.fsync(dfd)
    return removed


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


def load_archive(path, budget=None):
    """Load an archive written by :func:`save_archive`.

    The file is opened without following a symbolic link, and every entry's declared
    size is checked before anything is allocated: against the bytes the file holds
    (a stored entry holds what it declares; a compressed one at most
    :data:`MAX_DEFLATE_RATIO` times its bytes), against its ``.npy`` header's shape and
    dtype, and, in all, against ``budget``.

    Parameters
    ----------
    path : str or Path
    budget : int, optional
        Bytes the arrays may take in all; default: the host memory available.

    Returns
    -------
    arrays : dict of numpy arrays
    meta : dict

    Raises
    ------
    CheckpointError
        If the file is missing, a link, truncated or corrupted, declares more than it
        holds or than memory allows, is not an ffnumpy archive, or is of another format
        version.
    """
    path = Path(path)
    try:
        fd = open_file(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror or exc}); use an "
                              "earlier checkpoint or retrain") from None
    if budget is None:
        from .backend import available_memory  # numpy only: loads nothing heavy

        budget = available_memory(np)[0]
    try:
        with os.fdopen(fd, "rb") as f, zipfile.ZipFile(f) as archive:
            arrays = _read_entries(archive, os.fstat(f.fileno()).st_size, budget)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}; the file was damaged or edited, use an "
                              "earlier checkpoint or retrain") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError,
            SyntaxError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: truncated or corrupted ({type(exc).__name__}: {exc}); "
                              "use an earlier checkpoint or retrain") from None
    if META_KEY not in arrays:
        raise CheckpointError(f"{path}: not an ffnumpy checkpoint (no {META_KEY} entry)")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
    except (json.JSONDecodeError, RecursionError) as exc:
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise CheckpointError(f"{path}: damaged header ({what}); use an earlier checkpoint "
                              "or retrain") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: damaged header (a JSON {type(meta).__name__}, "
                              "not an object); use an earlier checkpoint or retrain")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ffnumpy checkpoint (format {meta.get('format')!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('version')} but this ffnumpy "
                              f"reads version {FORMAT_VERSION}; use the ffnumpy that wrote it")
    return arrays, meta


def _read_entries(archive, file_bytes, budget):
    """Every ``.npy`` entry of an open zip ``archive``, sizes checked before allocation."""
    infos = archive.infolist()
    declared = 0
    for info in infos:
        if not info.filename.endswith(".npy"):
            raise CheckpointError(f"entry {info.filename!r} is not an array")
        most = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED
                                     else MAX_DEFLATE_RATIO)
        if info.compress_size > file_bytes or info.file_size > most:
            raise CheckpointError(f"entry {info.filename!r} declares {info.file_size} bytes "
                                  f"but the file holds {min(info.compress_size, file_bytes)}")
        declared += info.file_size
    if budget is not None and declared > budget:
        raise CheckpointError(f"its entries declare {declared} bytes in all, more than the "
                              f"{budget} bytes of memory available")
    arrays = {}
    for info in infos:
        with archive.open(info) as member:
            arrays[info.filename[:-len(".npy")]] = _read_npy(member, info)
    return arrays


def _read_npy(member, info):
    """One array from an archive entry whose header agrees with the entry's size."""
    version = np.lib.format.read_magic(member)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(member)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(member)
    else:
        raise CheckpointError(f"entry {info.filename!r} has .npy version {version}")
    if dtype.hasobject:
        raise CheckpointError(f"entry {info.filename!r} holds Python objects")
    n_bytes = math.prod(shape) * dtype.itemsize
    held = info.file_size - member.tell()
    if n_bytes != held:
        raise CheckpointError(f"entry {info.filename!r} declares shape {shape} of {dtype} "
                              f"({n_bytes} bytes) but holds {held} bytes")
    data = bytearray(n_bytes)
    view, got = memoryview(data), 0
    while got < n_bytes:
        n = member.readinto(view[got:])
        if not n:
            raise CheckpointError(f"entry {info.filename!r} ends after {got} of {n_bytes} bytes")
        got += n
    return np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
