"""The notebooks' exercise checker (notebooks/exercises.py) and the shape of every exercise.

Fast: no notebook is executed here. The checker must call a wrong answer wrong, a missing one
"not answered yet", and a right one right, without printing the expected value; every
exercise cell a learner sees must hold a placeholder, not an answer; every worked solution
must sit in a hidden cell that runs only in solutions mode. (tests/test_notebooks.py runs the
notebooks with the worked solutions on, so each solution is checked by the same checker.)
"""
import ast
import contextlib
import os
import re
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "notebooks"))

import exercises  # noqa: E402  (lives beside the notebooks)
import nbsetup  # noqa: E402

CHECK = re.compile(r"""check_answer\(\s*["'](\d\d\.\d+)["']\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)""")


def notebook_cells():
    """(notebook name, cell) for every code cell of every notebooks/NN_*.ipynb."""
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code":
                yield path.name, cell


def is_solution(cell):
    return "solution" in cell.metadata.get("tags", [])


# --- the checker ---

@pytest.fixture
def learner_mode(monkeypatch):
    monkeypatch.delenv(exercises.SOLUTIONS_ENV, raising=False)


def right_answer(key):
    if key == "04.1":  # a function: the normalisation's backward pass
        return lambda dx_hat, x: _dx_of(dx_hat, x)
    return exercises.ANSWERS[key].value


def _dx_of(dx_hat, x):
    n = np.sqrt((x * x).sum(axis=1, keepdims=True) + 1e-8)  # ffnumpy.layers.NORM_EPS
    x_hat = x / n
    return (dx_hat - x_hat * (x_hat * dx_hat).sum(axis=1, keepdims=True)) / n


def wrong_answer(key):
    value = exercises.ANSWERS[key].value
    if key == "04.1":
        return lambda dx_hat, x: dx_hat  # forgets the normalisation
    if isinstance(value, tuple):
        return tuple(not v if isinstance(v, bool) else 2 * v + 1 for v in value)
    return 2 * value + 1


@pytest.mark.parametrize("key", sorted(exercises.ANSWERS))
def test_missing_answer_is_not_answered_yet(key, learner_mode, capsys):
    assert exercises.verdict(key, ...)[0] == exercises.NOT_ANSWERED
    exercises.check_answer(key, ...)
    assert "not answered yet" in capsys.readouterr().out


@pytest.mark.parametrize("key", sorted(exercises.ANSWERS))
def test_wrong_answer_is_wrong_and_not_shown(key, learner_mode, capsys):
    word, message = exercises.verdict(key, wrong_answer(key))
    assert word == exercises.WRONG
    exercises.check_answer(key, wrong_answer(key))  # learner mode: says so, does not raise
    out = capsys.readouterr().out
    assert "wrong" in out
    expected = exercises.ANSWERS[key].value
    for v in (expected if isinstance(expected, tuple) else (expected,)):
        if v is not None and not isinstance(v, bool):
            shown = message.replace(key, "").replace(exercises.ANSWERS[key].kind, "")
            assert f"{v}" not in shown, "the message shows the answer"


@pytest.mark.parametrize("key", sorted(exercises.ANSWERS))
def test_right_answer_is_right(key, learner_mode):
    assert exercises.verdict(key, right_answer(key))[0] == exercises.RIGHT


def test_tolerance_and_types():
    assert exercises.verdict("01.2", 0.1269)[0] == exercises.RIGHT  # 4 digits suffice
    assert exercises.verdict("01.2", 0.13)[0] == exercises.WRONG
    assert exercises.verdict("07.2", (2.63, 1.42, "yes"))[0] == exercises.WRONG  # bool wanted
    assert exercises.verdict("06.1", (7.84,))[0] == exercises.WRONG  # one number short
    assert exercises.verdict("01.1", "four")[0] == exercises.WRONG
    assert exercises.verdict("01.1", np.float32(4.0))[0] == exercises.RIGHT
    assert exercises.verdict("04.1", 3.0)[0] == exercises.WRONG  # not a function


def test_solutions_mode_fails_a_wrong_answer(monkeypatch):
    monkeypatch.setenv(exercises.SOLUTIONS_ENV, "1")
    with pytest.raises(AssertionError, match="wrong"):
        exercises.check_answer("01.1", 5.0)
    exercises.check_answer("01.1", ...)  # unanswered learner cells still run in solutions mode
    exercises.check_answer("01.1", 4.0)


# --- the exercises in the notebooks ---

def test_every_learner_cell_holds_a_placeholder_not_an_answer():
    seen = {}
    for name, cell in notebook_cells():
        if is_solution(cell):
            continue
        for key, var in CHECK.findall(cell.source):
            assert key in exercises.ANSWERS, f"{name}: no expected answer for {key}"
            assert key[:2] == name[:2], f"{name}: checks {key}, another notebook's exercise"
            assert re.search(rf"^{var} = \.\.\.  # your answer", cell.source, re.M), \
                f"{name}: exercise {key} must start from '{var} = ...  # your answer'"
            seen[key] = seen.get(key, 0) + 1
    assert seen == {key: 1 for key in exercises.ANSWERS}, "each exercise checked once"


def test_every_worked_solution_is_hidden_runs_only_on_request_and_is_checked():
    solved = set()
    for name, cell in notebook_cells():
        if not is_solution(cell):
            assert "if SOLUTIONS:" not in cell.source, f"{name}: a solution cell not tagged"
            continue
        assert cell.metadata.get("jupyter", {}).get("source_hidden") is True, name
        body = [line for line in cell.source.splitlines() if not line.startswith("#")]
        assert body[0] == "if SOLUTIONS:" and all(
            not line or line.startswith("    ") for line in body[1:]), \
            f"{name}: a worked solution runs only under 'if SOLUTIONS:'"
        solved.update(key for key, _ in CHECK.findall(cell.source))
    assert solved == set(exercises.ANSWERS), "every exercise's worked solution meets the checker"


def _names(source):
    """(names a cell binds, names it reads) at any depth; function arguments count as bound."""
    bound, read = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.Lambda)):
            bound.update(a.arg for a in node.args.args + node.args.kwonlyargs)
            if isinstance(node, ast.FunctionDef):
                bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
    return bound, read


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")),
                         ids=lambda p: p.stem)
def test_learner_cells_need_nothing_from_a_hidden_solution(path):
    # a learner runs the notebook with the solutions off: no cell they run may read a name
    # that only a worked solution defines
    learner, solution_only = set(), set()
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        bound, read = _names(cell.source)
        if is_solution(cell):
            solution_only |= bound - learner
            continue
        missing = (read - bound) & solution_only
        assert not missing, f"{path.name}: a learner cell reads {sorted(missing)}, " \
                            "defined only in a worked solution"
        learner |= bound
        solution_only -= bound


# --- the notebooks' set-up ---

def test_slider_draws_once_with_the_default(monkeypatch):
    calls = []

    def draw(knob=2.0):
        calls.append(knob)

    for quick in ("1", "0"):  # without and (where installed) with ipywidgets
        monkeypatch.setenv(nbsetup.QUICK_ENV, quick)
        calls.clear()
        nbsetup.slider(draw, knob=(0.5, 10.0, 0.5))
        assert calls == [2.0]


def _blas_restored():
    """Restores this process's BLAS threads on exit (set_threads limits the loaded BLAS)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=None, user_api="blas")


def test_threads_default_to_one_and_follow_ffnumpy_knob(monkeypatch):
    monkeypatch.delenv(nbsetup.THREADS_ENV, raising=False)
    for name in nbsetup.BLAS_THREAD_VARS:
        monkeypatch.setenv(name, "7")  # set_threads overrides whatever was there
    with _blas_restored():
        assert nbsetup.set_threads() == 1
        assert all(os.environ[name] == "1" for name in nbsetup.BLAS_THREAD_VARS)
        monkeypatch.setenv(nbsetup.THREADS_ENV, "2")
        assert nbsetup.set_threads() == 2
        assert os.environ["OMP_NUM_THREADS"] == "2"
