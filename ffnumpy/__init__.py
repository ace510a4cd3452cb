"""ffnumpy: Forward-Forward and SymBa in NumPy/CuPy, every gradient derived by hand."""
from .backend import get_xp
from .config import Config
from .data import load_dataset
from .saving import build_model, load_model

__version__ = "0.1.0"
__all__ = ["Config", "build_model", "get_xp", "load_dataset", "load_model"]
