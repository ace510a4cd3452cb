"""The set-up every notebook opens with, in one line, so its first cell is about the math.

    from nbsetup import setup; ROOT, QUICK = setup()

It chooses the threads (see below), puts the repository root on ``sys.path`` (so
``import ffnumpy`` finds this checkout), selects matplotlib's non-interactive Agg backend in
quick mode, and sets NumPy's print options. It writes nothing: figures for ``docs/`` are
written only by ``python -m ffnumpy.figures``.

Threads. The notebooks run with one thread unless ``$FFNUMPY_NUM_THREADS`` says otherwise,
the same knob that sets ffnumpy's own thread pool (``ffnumpy.backend``). ``setup`` applies
that number to the BLAS library too, through the usual environment variables, set before
NumPy is first imported. One thread, for two reasons: a float32 matrix product summed in a
different order by another thread count gives different last bits, which a training run
amplifies into a different printed test error; and on a busy machine several BLAS threads
fighting for the cores are many times slower than one.

``slider`` turns a "try this" cell's drawing function into interactive controls where a
live Jupyter kernel with ipywidgets runs, and draws it once with its plain default otherwise.
"""
import os
import sys
from pathlib import Path

QUICK_ENV = "FFNUMPY_QUICK"  # "1" in the test suite: small, fast, no windows
THREADS_ENV = "FFNUMPY_NUM_THREADS"  # ffnumpy.backend's knob, applied to BLAS here as well
NOTEBOOK_THREADS = "1"  # reproducible numbers, and fast on a busy machine (module docstring)
BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
PRINT_PRECISION = 6


def set_threads():
    """Set $FFNUMPY_NUM_THREADS (default 1) and the BLAS thread variables to it.

    Returns the thread count. The variables only take effect if NumPy is not imported yet
    (a fresh kernel); where it is, the count is applied through threadpoolctl if installed.
    """
    threads = os.environ.setdefault(THREADS_ENV, NOTEBOOK_THREADS)
    for name in BLAS_THREAD_VARS:
        os.environ[name] = threads
    if "numpy" in sys.modules:  # too late for the variables: limit the loaded BLAS instead
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            return int(threads)
        threadpool_limits(int(threads), user_api="blas")
    return int(threads)


def setup():
    """Prepare a notebook's kernel.

    Returns
    -------
    root : pathlib.Path
        The repository root (the folder above ``notebooks/``).
    quick : bool
        True when $FFNUMPY_QUICK is "1": notebooks then use small grids and short runs.
    """
    set_threads()  # before NumPy is imported
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


def slider(draw, **ranges):
    """Draw ``draw()`` with its defaults, under sliders that redraw it where a kernel runs.

    ``ranges`` maps a keyword argument of ``draw`` to ``(low, high, step)``. With ipywidgets
    installed, ``ipywidgets.interact`` builds one slider per argument (starting at the
    function's default) and draws at once, then again on every move; it never waits for a
    move, so a notebook still runs top to bottom. Without ipywidgets, and in quick mode (the
    test suite: nobody moves a slider there, and an error inside a widget's output would not
    fail the cell), ``draw`` runs once with its defaults, in the cell itself.
    """
    try:
        import ipywidgets
    except ImportError:
        ipywidgets = None
    if ipywidgets is None or os.environ.get(QUICK_ENV) == "1":
        draw()
        return
    import inspect

    defaults = inspect.signature(draw).parameters
    controls = {name: ipywidgets.FloatSlider(value=defaults[name].default, min=low, max=high,
                                             step=step, continuous_update=False)
                for name, (low, high, step) in ranges.items()}
    ipywidgets.interact(draw, **controls)
