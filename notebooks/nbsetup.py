"""The set-up every notebook opens with, in one line, so its first cell is about the math.

    from nbsetup import setup; ROOT, QUICK = setup()

It puts the repository root on ``sys.path`` (so ``import ffnumpy`` finds this checkout),
selects matplotlib's non-interactive Agg backend in quick mode, and sets NumPy's print
options. It writes nothing: figures for ``docs/`` are written only by
``python -m ffnumpy.figures``.
"""
import os
import sys
from pathlib import Path

QUICK_ENV = "FFNUMPY_QUICK"  # "1" in the test suite: small, fast, no windows
PRINT_PRECISION = 6


def setup():
    """Prepare a notebook's kernel.

    Returns
    -------
    root : pathlib.Path
        The repository root (the folder above ``notebooks/``).
    quick : bool
        True when $FFNUMPY_QUICK is "1": notebooks then use small grids and short runs.
    """
    import numpy as np

    root = Path(__file__).resolve().parent.parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    quick = os.environ.get(QUICK_ENV) == "1"
    if quick:
        import matplotlib

        matplotlib.use("Agg")
    np.set_printoptions(precision=PRINT_PRECISION, suppress=True)
    return root, quick
