"""ffnumpy: Forward-Forward and SymBa in NumPy/CuPy, every gradient derived by hand."""
import os

# OpenBLAS's worker threads spin for about 2^28 cycles (~0.1 s) after each product
# before they sleep, so the element-wise passes between products, which ffnumpy runs
# on threads of its own (backend.run_blocks), would find every other core busy.
# 2^4 cycles makes them sleep at once. Read when NumPy loads OpenBLAS, so it only
# takes effect when ffnumpy is imported first (as by its commands); a value already
# set is kept. Measured on the project's 2-core CPU: SymBa epoch 1.34x -> 1.27x of
# its product bound (README, "Speed").
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
__all__ = ["Config", "build_model", "get_xp", "load_dataset", "load_model"]

# The names above are loaded when first used (PEP 562), so that importing one small
# module (``from ffnumpy import losses``) loads that module and what it imports, not
# the data, download and saving machinery.
_HOMES = {"Config": "config", "build_model": "saving", "get_xp": "backend",
          "load_dataset": "data", "load_model": "saving"}


def __getattr__(name):
    if name not in _HOMES:
        raise AttributeError(f"module 'ffnumpy' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted([*globals(), *_HOMES])
