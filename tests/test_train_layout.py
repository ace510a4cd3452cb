"""How the code is laid out for a reader: the training loop on one screen with its
bookkeeping in named helpers, modules that import down and never into private names, a
model module that does not import the data module, and a thread pool that starts only
when used."""
import ast
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ffnumpy import train

PACKAGE = Path(__file__).resolve().parent.parent / "ffnumpy"
SCREEN_LINES = 60  # "run on one screen": a terminal or an editor pane at a readable size


def _python(code, **env):
    """Run ``code`` in a fresh Python; returns its standard output, stripped."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, check=True, env={**os.environ, **env}).stdout.strip()


def _imports_from(path):
    """(module, names) of every ``from ... import ...`` of a package module, the module
    written as in the file (".data", "ffnumpy.data")."""
    tree = ast.parse(path.read_text())
    return [("." * node.level + (node.module or ""), [a.name for a in node.names])
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]


# --- the training loop ---

def test_run_fits_on_one_screen_and_defines_no_closure():
    source = inspect.getsource(train.run)
    assert len(source.splitlines()) <= SCREEN_LINES
    inner = [node.name if isinstance(node, ast.FunctionDef) else "lambda"
             for statement in ast.parse(source).body[0].body for node in ast.walk(statement)
             if isinstance(node, (ast.FunctionDef, ast.Lambda))]
    assert not inner, f"run defines {inner} inside itself; make them module-level functions"


@pytest.mark.parametrize("helper, comments", [
    (train.run, ["# --- evaluate ---", "# --- checkpoint ---"]),
    (train.train_epoch, ["# --- the step ---", "# --- stop on a signal ---"]),
])
def test_the_loop_reads_in_sections(helper, comments):
    source = inspect.getsource(helper)
    for comment in comments:
        assert comment in source, f"{helper.__name__} has no section {comment!r}"


def test_the_checkpoint_writer_takes_plain_arguments(tmp_path):
    """write_checkpoint is a module-level function: what it saves is what it is given."""
    from ffnumpy.checkpoint import load_archive
    from ffnumpy.config import Config
    from ffnumpy.saving import CHECKPOINT_FILE, build_model

    cfg = Config(layers=1, width=8)
    model = build_model(cfg, 10, (1, 4, 4), np)
    header = {"config": cfg.as_dict(), "n_classes": 10, "image_shape": [1, 4, 4]}
    metrics = {"epochs": [{"epoch": 1}]}
    y_neg = np.arange(5) % 10
    train.write_checkpoint(tmp_path, model, header, metrics, 2, 3, np.ones((1, 3)), 1.5, y_neg)
    arrays, meta = load_archive(tmp_path / CHECKPOINT_FILE)
    assert (meta["next_epoch"], meta["next_step"], meta["epoch_seconds_so_far"]) == (2, 3, 1.5)
    assert meta["metrics"] == metrics and meta["kind"] == "checkpoint"
    np.testing.assert_array_equal(arrays["stats_sum"], np.ones((1, 3)))
    np.testing.assert_array_equal(arrays["epoch_y_neg"], y_neg)
    np.testing.assert_array_equal(arrays["W0"], model.W[0])
    np.testing.assert_array_equal(arrays["opt0_t"], model.optimizers[0].state_dict()["t"])


# --- layering ---

@pytest.mark.parametrize("module", ["bp", "model"])
def test_the_models_do_not_import_the_data_module(module):
    modules = [m for m, _ in _imports_from(PACKAGE / f"{module}.py")]
    assert not [m for m in modules if m.split(".")[-1] == "data"], modules
    loaded = _python(f"""
        import sys
        import ffnumpy.{module}
        print('ffnumpy.data' in sys.modules)
    """)
    assert loaded == "False"


def test_a_loaded_models_statistics_standardise_as_the_data_module_does():
    from ffnumpy.data import standardize_images
    from ffnumpy.saving import InputStats

    saved = {"mean": [0.25, 0.5], "std": [2.0, 0.5]}
    x = np.random.default_rng(0).random((3, 8))  # (N, D_img): 2 channels of 4 pixels
    stats = InputStats(saved)
    assert stats == saved
    np.testing.assert_array_equal(stats.apply(x), standardize_images(x, saved))
    np.testing.assert_allclose(stats.apply(x)[:, 4:], (x[:, 4:] - 0.5) / 0.5, rtol=1e-15)


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_module_imports_a_private_name_of_another(path):
    """figures.py first among them: it reads other modules through public names only."""
    private = [(module, name) for module, names in _imports_from(path)
               if module.startswith(".") or module.startswith("ffnumpy")
               for name in names if name.startswith("_")]
    assert not private, f"{path.name} imports private names {private}"


# --- the thread pool ---

@pytest.mark.parametrize("module", ["ffnumpy.backend", "ffnumpy.model", "ffnumpy.train"])
def test_importing_starts_no_thread(module):
    out = _python(f"""
        import threading
        import {module}
        from ffnumpy import backend
        print(threading.active_count(), backend._POOL is None)
    """, FFNUMPY_NUM_THREADS="3")
    assert out == "1 True"


def test_the_thread_pool_starts_when_first_used():
    out = _python("""
        import sys, threading
        import numpy as np
        from ffnumpy import backend
        before = threading.active_count(), 'concurrent.futures' in sys.modules
        x = np.zeros(6)
        def fill(rows):
            x[rows] = rows.start + 1
        backend.run_blocks(np, fill, [slice(0, 2), slice(2, 4), slice(4, 6)])
        print(*before, threading.active_count() > 1, x.tolist())
    """, FFNUMPY_NUM_THREADS="3")
    assert out == "1 False True [1.0, 1.0, 3.0, 3.0, 5.0, 5.0]"
