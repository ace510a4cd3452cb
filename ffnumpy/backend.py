"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

This is the only module that imports CuPy. Everything else receives an array
module ``xp`` and writes code that runs on either (CuPy mirrors the NumPy API).
Random numbers are always drawn on the host with a ``numpy.random.Generator``
and moved to the device with :func:`asarray`, so a NumPy run and a CuPy run with
the same seed see identical numbers.
"""
from types import ModuleType

import numpy as np

BACKENDS = ("numpy", "cupy")


class BackendError(RuntimeError):
    """The requested backend cannot be used on this machine."""


def get_xp(name: str = "numpy") -> ModuleType:
    """Return the array module for ``name`` ("numpy" or "cupy").

    Raises
    ------
    BackendError
        If ``name`` is unknown, or CuPy is not installed, or no CUDA GPU is visible.
        The message names what is missing and how to fix it.
    """
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
    """Human-readable name of the device ``xp`` computes on."""
    if xp is np:
        import platform

        return f"CPU ({platform.processor() or platform.machine()})"
    props = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def take_rows(table, idx, out):
    """``out[...] = table[idx]`` without a temporary (NumPy buffers ``take`` unless told
    that the indices need no checking; CuPy's ``take`` has no ``mode`` and never buffers)."""
    if isinstance(table, np.ndarray):
        return np.take(table, idx, axis=0, out=out, mode="clip")  # idx is valid by construction
    return xp_of(table).take(table, idx, axis=0, out=out)
