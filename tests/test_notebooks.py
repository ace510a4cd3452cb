"""Every committed teaching notebook runs top to bottom (quick mode, CPU, no network), is
committed without outputs, and leaves the checkout as it found it. A notebook whose
re-derivation differs from the library fails here, because each one asserts that its
hand-written formulas equal ffnumpy's; the from-zero notebook asserts its own test error.
The exercises' hidden worked solutions run too ($FFNUMPY_SOLUTIONS=1), and each is checked
by the same checker a learner's answer meets (tests/test_exercises.py tests the checker)."""
import re
import subprocess
from pathlib import Path

import matplotlib
import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NAME = re.compile(r"\d\d_[a-z0-9_]+\.ipynb")  # NN_topic.ipynb; nbconvert's copies do not match


def _git(*args):
    """Output of a git command in the checkout, or None outside a git checkout."""
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout


def committed_notebooks():
    """notebooks/NN_*.ipynb known to git (all of them outside a git checkout)."""
    listed = _git("ls-files", "notebooks")
    if listed is None:
        paths = (ROOT / "notebooks").glob("*.ipynb")
    else:
        paths = (ROOT / line for line in listed.splitlines())
    return sorted(p for p in paths if p.parent.name == "notebooks" and NAME.fullmatch(p.name))


NOTEBOOKS = committed_notebooks()


def run_notebook(path):
    """Execute a notebook in its own folder; a failing cell (an assert) raises."""
    from nbclient import NotebookClient

    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return book


@pytest.fixture
def quick_kernel_env(tmp_path, monkeypatch):
    """Quick mode, worked solutions on, Agg, and a private temporary folder for the kernel
    (returned)."""
    tmp = tmp_path / "kernel-tmp"
    tmp.mkdir()
    monkeypatch.setenv("FFNUMPY_QUICK", "1")
    monkeypatch.setenv("FFNUMPY_SOLUTIONS", "1")  # the hidden worked solutions run and are checked
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp))
    # where HOME is read-only, matplotlib and IPython fall back to a temporary folder of
    # their own: point them elsewhere, so that only what a notebook leaves is counted
    monkeypatch.setenv("MPLCONFIGDIR", matplotlib.get_configdir())  # keeps its font cache
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    # notebooks still on the old set-up cell saved figures to this folder (else docs/)
    monkeypatch.setenv("FFNUMPY_FIGURES_DIR", str(tmp_path / "old-figures"))
    return tmp


def test_the_series_is_there():
    names = [p.name for p in NOTEBOOKS]
    assert "05_figure1_loss_landscapes.ipynb" in names
    assert "07_figure3_training_curves.ipynb" in names
    assert (ROOT / "notebooks" / "nbsetup.py").is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, \
                f"{path.name}: strip outputs (jupyter nbconvert --clear-output --inplace)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_opens_with_the_setup_helper(path):
    book = nbformat.read(path, as_version=4)
    first_code = next(c.source for c in book.cells if c.cell_type == "code")
    if "sys.path.insert" in first_code:
        pytest.skip(f"{path.name} still opens with the old set-up cell")
    assert first_code.strip() == "from nbsetup import setup; ROOT, QUICK = setup()"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_leaves_nothing_behind(path, quick_kernel_env):
    before = _git("status", "--porcelain")
    book = run_notebook(path)
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert list(quick_kernel_env.iterdir()) == [], "the notebook left temporary files"
    if before is None:
        pytest.skip("not a git checkout: cannot check that the run changed nothing tracked")
    assert _git("status", "--porcelain") == before, "running the notebook changed the checkout"


def test_a_failing_assert_fails_the_run(tmp_path, quick_kernel_env):
    # the from-zero notebook (03) ends by asserting its own test error: make sure a
    # failing assert in a last cell fails the run rather than passing quietly
    from nbclient.exceptions import CellExecutionError
    from nbformat.v4 import new_code_cell, new_notebook

    path = tmp_path / "99_fails.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("x = 1"),
                                       new_code_cell("assert x == 2, 'error too high'")]), path)
    with pytest.raises(CellExecutionError, match="error too high"):
        run_notebook(path)
