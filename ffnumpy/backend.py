"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports CuPy. Everything else receives an array
module ``xp`` and writes code that runs on either (CuPy mirrors the NumPy API).
Random numbers are always drawn on the host with a ``numpy.random.Generator``
and moved to the device with :func:`asarray`, so a NumPy run and a CuPy run with
the same seed see identical numbers.
"""
import math
import os
import platform
import signal
import sys
import threading
from types import ModuleType

COMMANDS = ("ffnumpy.train", "ffnumpy.predict")  # started as python -m ...
SCRIPTS = ("ffnumpy-train", "ffnumpy-predict")  # or as these console scripts


# --- start-up ---
# Loading NumPy takes a moment, in which a Ctrl-C would print a KeyboardInterrupt traceback
# and a SIGTERM would end the process without a word. When ffnumpy is loaded by one of its
# commands, this module (the package's first) makes either signal end it with one line
# until the command's main() takes over (startup_done). Imported as a library: no effect.

def _started_as_command():
    argv = getattr(sys, "orig_argv", [])
    as_module = any(a == "-m" and b in COMMANDS for a, b in zip(argv, argv[1:]))
    return as_module or os.path.basename(sys.argv[0] if sys.argv else "") in SCRIPTS


def _stop_during_startup(signum, frame):
    name = signal.Signals(signum).name
    os.write(2, f"ffnumpy: {name} while starting; nothing was written, run the command "
                f"again to start it\n".encode())
    os._exit(128 + signum)


_STARTUP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_startup_handlers = False
if threading.current_thread() is threading.main_thread() and _started_as_command():
    for _sig in _STARTUP_SIGNALS:
        signal.signal(_sig, _stop_during_startup)
    _startup_handlers = True


def startup_done():
    """Give SIGINT and SIGTERM back their usual handlers (KeyboardInterrupt, end) once a
    command's main() is ready to handle them itself."""
    global _startup_handlers
    if _startup_handlers and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _startup_handlers = False


import numpy as np  # noqa: E402 - after the start-up handlers, as it takes a moment to load

BACKENDS = ("numpy", "cupy")


def _usable_cores():
    """Cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _thread_count():
    """Threads for NumPy's element-wise work: $FFNUMPY_NUM_THREADS, else the usable cores;
    and the one-line error for a value that is not a positive integer (then the usable
    cores, so that importing ffnumpy never fails; :func:`get_xp` reports the error)."""
    value = os.environ.get("FFNUMPY_NUM_THREADS", "")
    if not value:
        return _usable_cores(), None
    if not (value.isascii() and value.isdigit()) or int(value) < 1:
        return _usable_cores(), (f"FFNUMPY_NUM_THREADS must be a positive integer, got "
                                 f"{value!r}; set it to one (e.g. 2) or unset it to use every "
                                 "usable core")
    return int(value), None


# NumPy's ufuncs run on one core and release the GIL, so element-wise passes over
# row blocks run in parallel on a thread pool (BLAS already uses every core for the
# products). Blocks smaller than MIN_BLOCK_ELEMENTS are not worth a thread; blocks of
# at most MAX_BLOCK_ELEMENTS (1 MiB of float32) keep a chain of passes in a core's
# cache instead of streaming each pass from memory.
N_THREADS, THREADS_ERROR = _thread_count()
MIN_BLOCK_ELEMENTS = 1 << 16
MAX_BLOCK_ELEMENTS = 1 << 18
_POOL = None  # the thread pool, started by _pool() when run_blocks first needs it
_POOL_LOCK = threading.Lock()


def _pool():
    """The thread pool of :data:`N_THREADS` threads, started on first use (importing
    ffnumpy starts no thread); None with one thread."""
    global _POOL
    if _POOL is None and N_THREADS > 1:
        with _POOL_LOCK:
            if _POOL is None:
                from concurrent.futures import ThreadPoolExecutor  # loaded only when used

                _POOL = ThreadPoolExecutor(N_THREADS, thread_name_prefix="ffnumpy")
    return _POOL


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine."""


def get_xp(name: str = "numpy") -> ModuleType:
    """Return the array module for ``name`` ("numpy" or "cupy").

    Raises
    ------
    BackendError
        If ``name`` is unknown, or CuPy is not installed, or no CUDA GPU is visible, or
        $FFNUMPY_NUM_THREADS is not a positive integer.
        The message names what is missing and how to fix it.
    """
    if THREADS_ERROR:
        raise BackendError(THREADS_ERROR)
    if name == "numpy":
        return np
    if name != "cupy":
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    try:
        import cupy  # the only cupy import in ffnumpy
    except ImportError as exc:
        raise BackendError(
            f"--backend cupy needs CuPy, which could not be imported ({exc}); install the wheel "
            "matching your CUDA, e.g. 'pip install cupy-cuda12x', or use --backend numpy"
        ) from None
    try:
        n_gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver missing or broken: CuPy raises its own error types
        raise BackendError(
            f"--backend cupy found CuPy but no usable CUDA GPU ({type(exc).__name__}: {exc}); "
            "check the NVIDIA driver with nvidia-smi, or use --backend numpy"
        ) from None
    if n_gpus == 0:
        raise BackendError("--backend cupy found CuPy but no CUDA GPU; use --backend numpy")
    return cupy


def xp_of(a) -> ModuleType:
    """The array module an array belongs to (NumPy or CuPy)."""
    return np if isinstance(a, (np.ndarray, np.generic)) else _cupy_module()


def _cupy_module() -> ModuleType:
    import cupy

    return cupy


def asarray(xp: ModuleType, a, dtype=None):
    """Move a host (NumPy) array to the backend ``xp``, optionally casting."""
    return xp.asarray(a, dtype=dtype)


def to_host(a) -> np.ndarray:
    """Bring an array back to a NumPy array on the host (no-op for NumPy)."""
    if isinstance(a, np.ndarray):
        return a
    get = getattr(a, "get", None)
    return get() if get is not None else np.asarray(a)


def synchronize(xp: ModuleType) -> None:
    """Wait for queued device work; call before reading a clock on the GPU."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def device_name(xp: ModuleType) -> str:
    """Human-readable name of the device ``xp`` computes on, e.g. "CPU: AMD EPYC, 2 cores,
    scipy-openblas 0.3.31.188.0" or the GPU's name."""
    if xp is np:
        return f"CPU: {_cpu_model()}, {_usable_cores()} cores, {_blas_name()}"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def _cpu_model():
    """The processor's model name (Linux /proc/cpuinfo), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas_name():
    """The BLAS NumPy was built with, from NumPy's build configuration."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except (TypeError, KeyError):  # NumPy before 1.25 has no mode="dicts"
        return "BLAS unknown"


def take_rows(table, idx, out):
    """``out[...] = table[idx]`` without a temporary (NumPy buffers ``take`` unless told
    that the indices need no checking; CuPy's ``take`` has no ``mode`` and never buffers)."""
    if isinstance(table, np.ndarray):
        return np.take(table, idx, axis=0, out=out, mode="clip")  # idx is valid by construction
    return xp_of(table).take(table, idx, axis=0, out=out)


class Workspace:
    """Named scratch arrays that are reused from step to step instead of reallocated.

    A fresh multi-megabyte array costs more than the arithmetic done on it: the
    operating system hands it out as untouched pages, which are zeroed one fault at
    a time when first written (measured: a 2 x 500 SymBa step spends 17 of its
    114 ms on this). Each name keeps one flat buffer, grown when a larger shape is
    asked for; :meth:`get` returns a view of its first elements. Two live arrays
    must therefore have different names.
    """

    def __init__(self, xp, dtype):
        self.xp, self.dtype = xp, dtype
        self._flat = {}

    def get(self, name, shape):
        """An uninitialised array of ``shape`` backed by the buffer ``name``."""
        size = math.prod(shape)
        flat = self._flat.get(name)
        if flat is None or flat.size < size:
            flat = self._flat[name] = self.xp.empty(size, dtype=self.dtype)
        return flat[:size].reshape(shape)

    @property
    def nbytes(self):
        """Bytes held by all buffers."""
        return sum(a.nbytes for a in self._flat.values())


def row_blocks(xp, n_rows, row_size, segment=None):
    """Slices covering ``range(n_rows)`` for element-wise work to run with :func:`run_blocks`.

    No slice crosses a multiple of ``segment`` (default: ``n_rows``), so a block never
    mixes, say, positive and negative rows. With NumPy each segment is cut into pieces
    enough to keep :data:`N_THREADS` threads busy and of at most
    :data:`MAX_BLOCK_ELEMENTS` elements, but none under :data:`MIN_BLOCK_ELEMENTS`; with
    CuPy each segment is one slice (a kernel already fills the GPU).
    """
    segment = segment or n_rows
    n_segments = -(-n_rows // segment)
    pieces = 1
    if xp is np:
        size = segment * row_size
        wanted = max(-(-N_THREADS // n_segments), -(-size // MAX_BLOCK_ELEMENTS))
        pieces = max(1, min(wanted, size // MIN_BLOCK_ELEMENTS, segment))
    blocks = []
    for start in range(0, n_rows, segment):
        stop = min(start + segment, n_rows)
        edges = [start + (stop - start) * i // pieces for i in range(pieces + 1)]
        blocks += [slice(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    return blocks


def run_blocks(xp, fn, blocks):
    """Call ``fn(block)`` for every block: with NumPy on the thread pool, with CuPy in order.

    With NumPy the blocks are dealt out as :data:`N_THREADS` contiguous runs, one task
    per thread. ``fn`` must only run array operations that write to its own block.
    """
    pool = None if xp is not np or len(blocks) == 1 else _pool()
    if pool is None:
        for block in blocks:
            fn(block)
        return
    n = min(N_THREADS, len(blocks))
    runs = [blocks[len(blocks) * i // n:len(blocks) * (i + 1) // n] for i in range(n)]
    for _ in pool.map(lambda run: [fn(block) for block in run], runs):  # re-raises
        pass


# --- memory ---

CGROUP_MEMORY = "/sys/fs/cgroup"  # cgroup v2: memory.max and memory.current of this process


def _host_available():
    """Bytes of host memory a new allocation can get: MemAvailable from /proc/meminfo,
    capped by the cgroup's limit less its usage; None where neither can be read."""
    figures = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    figures.append(int(line.split()[1]) * 1024)  # the file counts kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(os.path.join(CGROUP_MEMORY, "memory.max")) as f:
            limit = f.read().strip()
        if limit != "max":
            with open(os.path.join(CGROUP_MEMORY, "memory.current")) as f:
                figures.append(int(limit) - int(f.read()))
    except (OSError, ValueError):
        pass
    return min(figures) if figures else None


def available_memory(xp: ModuleType):
    """Bytes that can still be allocated where ``xp`` computes, and where that figure comes
    from: host memory for NumPy, free device memory (plus CuPy's pooled free blocks) for
    CuPy. The bytes are None where the system does not say."""
    if xp is np:
        return _host_available(), "host memory available (MemAvailable)"
    free, _ = xp.cuda.runtime.memGetInfo()
    pooled = xp.get_default_memory_pool().free_bytes()
    return free + pooled, f"free memory on the GPU ({device_name(xp)})"
