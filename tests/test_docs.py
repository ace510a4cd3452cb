"""The README's commands as a user types them: they work (in small form), leave the
repository as it was, and agree with CI, the package metadata and the command line."""
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from ffnumpy.backend import BackendError, get_xp
from ffnumpy.config import build_parser
from tests.conftest import make_tiny_mnist

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
# small form of a documented training command: one short epoch of a narrow net
SMALL = ["--epochs", "1", "--batch-size", "120", "--width", "16"]
# of a preset: one row, one epoch (its rows hold out 10,000 validation images)
SMALL_PRESET = ["--only", "bp-2x500-lr0.01", "--epochs", "1"]
SMALL_BENCH = ["--width", "16", "--repeats", "1"]


def code_block(after, language="bash"):
    """The first ``language`` code block after the heading or text ``after``."""
    start = README.index(f"```{language}\n", README.index(after)) + len(language) + 4
    return README[start:README.index("```", start)]


def git_status():
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout


def has_gpu():
    try:
        get_xp("cupy")
        return True
    except BackendError:
        return False


def test_documented_commands_work_and_leave_the_repository_clean(tmp_path):
    data, big = tmp_path / "data", tmp_path / "big"
    for name in ("mnist", "fashion-mnist"):
        make_tiny_mnist(data / name, n_train=240, n_test=60)
    make_tiny_mnist(big / "mnist", n_train=10240, n_test=60)
    before = git_status()
    first_run, ran = None, []
    for i, line in enumerate(code_block("## Using it").splitlines()):
        args = shlex.split(line.split("#")[0])
        assert args[:2] == ["python", "-m"], line
        module, rest = args[2], args[3:]
        if module == "ffnumpy.experiments":
            rest = [*rest, *SMALL_PRESET, "--data-dir", str(big), "--runs", str(tmp_path / "exp")]
        elif module == "ffnumpy.bench":
            rest = [*rest, *SMALL_BENCH]
        elif "data_cache/runs/<run>" in rest:
            rest = [str(first_run) if a == "data_cache/runs/<run>" else a for a in rest]
        elif module == "ffnumpy.train":
            first_run = first_run or tmp_path / f"run{i}"
            rest = [*rest, *SMALL, "--data-dir", str(data), "--out", str(tmp_path / f"run{i}")]
        result = subprocess.run([sys.executable, "-m", module, *rest], cwd=REPO,
                                capture_output=True, text=True, timeout=600)
        if "--backend" in rest and "cupy" in rest and not has_gpu():
            assert result.returncode == 2, line  # documented: one line, exit 2
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        else:
            assert result.returncode == 0, (line, result.stderr)
        ran.append(module)
    assert ran.count("ffnumpy.train") >= 6
    assert {"ffnumpy.predict", "ffnumpy.experiments", "ffnumpy.bench"} <= set(ran)
    assert git_status() == before


def test_ci_runs_the_readme_test_command():
    command = code_block("Run the tests").strip()
    assert command.endswith("python -m pytest") and "pip install -e ." in command
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert command in ci
    assert ci[-1] == command  # the last command: its exit code (5 included) is CI's


def test_setup_commands_install_the_package():
    command = code_block("## Set-up").strip()
    assert "pip install -e ." in command and command.endswith("python -m ffnumpy.train mnist")


def test_pyproject_dependencies_are_requirements_txt():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [line.split("#")[0].strip()
                    for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert project["dependencies"] == [r for r in requirements if r]
    assert project["name"] == "ffnumpy"
    for target in project["scripts"].values():
        module, func = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))


def test_readme_lists_every_training_flag():
    parser = build_parser()
    flags = [s for a in parser._actions for s in a.option_strings if s.startswith("--")
             and s not in ("--help",) and not s.startswith("--no-")]
    listed = README[README.index("## Using it"):README.index("From Python")]
    missing = [f for f in flags if f"`{f}" not in listed]
    assert not missing, missing
    assert re.search(r"`--optimizer \{adam,sgd\}`", listed)


def test_printed_commands_name_the_interpreter():
    from ffnumpy.train import command

    printed = shlex.split(command("--resume", "a folder"))
    assert printed == [sys.executable, "-m", "ffnumpy.train", "--resume", "a folder"]
