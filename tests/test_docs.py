"""The documented commands as a user types them: every ``python -m ffnumpy...`` line of a
bash block in the README and the pages of docs/ works (in small form) and leaves the
repository as it was; the README's test command is CI's; every link resolves; the pages
list every flag of every command."""
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ffnumpy.backend import BackendError, get_xp
from tests.conftest import make_tiny_cifar, make_tiny_mnist

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
COMMANDS = ["train", "predict", "experiments", "figures", "bench"]
README_MAX_LINES = 250  # a front page: nanoGPT's README is 234 lines, llm.c's 267
# small form of a documented training command: one short epoch of a narrow net
SMALL = ["--epochs", "1", "--batch-size", "120", "--width", "16"]
# of a preset that trains: one row, one epoch (its rows hold out 10,000 validation images)
SMALL_PRESET = ["--only", "bp-2x500-lr0.01", "--epochs", "1"]
SMALL_BENCH = ["--width", "16", "--repeats", "1"]
SMALL_WHOLE_RUN = ["--epochs", "1"]


def code_blocks(text, language="bash"):
    """Every ``language`` code block of a Markdown text, in order."""
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def code_block(after, language="bash"):
    """The first ``language`` code block of the README after the text ``after``."""
    return code_blocks(README[README.index(after):], language)[0]


def documented_commands():
    """(page, command) for every ``python -m ffnumpy.*`` line of a bash block (its comment
    left out), README first."""
    return [(page.name, line.split("#")[0].strip()) for page in PAGES
            for block in code_blocks(page.read_text()) for line in block.splitlines()
            if line.startswith("python -m ffnumpy.")]


def git_status():
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                          cwd=REPO, capture_output=True, text=True, check=True).stdout


def has_gpu():
    try:
        get_xp("cupy")
        return True
    except BackendError:
        return False


def small_form(module, rest, tmp_path, i, first_run):
    """The arguments of a documented command, made small and pointed at tmp_path."""
    data, big = tmp_path / "data", tmp_path / "big"
    if module == "ffnumpy.experiments":
        out = ["--runs", str(tmp_path / "exp"), "--results", str(tmp_path / "results")]
        if rest[0] == "table1" and not {"--list", "--table-only"} & set(rest):
            return [*rest, *SMALL_PRESET, "--data-dir", str(big), *out]
        return [*rest, *out, *([] if "--table-only" in rest else ["--list"])]
    if module == "ffnumpy.bench":
        return [*rest, *SMALL_BENCH, *(SMALL_WHOLE_RUN if "--whole-run" in rest else [])]
    if module == "ffnumpy.figures":
        return [*rest, "--out", str(tmp_path / "figures")]
    if "data_cache/runs/<run>" in rest:
        return [str(first_run) if a == "data_cache/runs/<run>" else a for a in rest]
    assert module == "ffnumpy.train", module
    return [*rest, *SMALL, "--data-dir", str(big if "--validation" in rest else data),
            "--out", str(tmp_path / f"run{i}"), "--overwrite"]


def test_documented_commands_work_and_leave_the_repository_clean(tmp_path):
    data, big = tmp_path / "data", tmp_path / "big"
    for name in ("mnist", "fashion-mnist"):
        make_tiny_mnist(data / name, n_train=240, n_test=60)
    make_tiny_cifar(data, "cifar10")
    make_tiny_mnist(big / "mnist", n_train=10240, n_test=60)
    before = git_status()
    first_run, ran = None, []
    commands = {}  # each distinct command once, on the first page that shows it
    for page, line in documented_commands():
        commands.setdefault(line, page)
    for i, (line, page) in enumerate(commands.items()):
        args = shlex.split(line)
        module, rest = args[2], args[3:]
        rest = small_form(module, rest, tmp_path, i, first_run)
        if module == "ffnumpy.train" and first_run is None:
            first_run = tmp_path / f"run{i}"
        result = subprocess.run([sys.executable, "-m", module, *rest], cwd=REPO,
                                capture_output=True, text=True, timeout=600)
        if "--backend" in rest and "cupy" in rest and not has_gpu():
            assert result.returncode == 2, (page, line)  # documented: one line, exit 2
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        else:
            assert result.returncode == 0, (page, line, result.stderr)
        ran.append(module)
    assert ran.count("ffnumpy.train") >= 6
    assert {f"ffnumpy.{c}" for c in COMMANDS} <= set(ran)
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


def test_readme_is_a_front_page_in_the_documented_order():
    assert len(README.splitlines()) <= README_MAX_LINES
    order = ["# ffnumpy", "docs/figure3_test_error.png", "## What holds of the paper",
             "## Set-up", "## Using it", "## Notebooks", "## Documentation site", "## More"]
    places = [README.index(mark) for mark in order]
    assert places == sorted(places)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_pages_speak_of_the_project_as_it_is(page):
    text = page.read_text()
    commit_hash = r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b"
    for diary in (r"\bissue \d", r"load average", r"\bthis session\b", commit_hash):
        assert not re.search(diary, text, flags=re.I), (page.name, diary)


def test_pyproject_dependencies_are_requirements_txt_and_the_licence_is_mit():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [line.split("#")[0].strip()
                    for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert project["dependencies"] == [r for r in requirements if r]
    assert project["name"] == "ffnumpy"
    assert project["license"] == "MIT"
    licence = (REPO / "LICENSE").read_text()
    assert licence.startswith("MIT License") and "the ffnumpy authors" in licence
    for target in project["scripts"].values():
        module, func = target.split(":")
        assert callable(getattr(__import__(module, fromlist=[func]), func))


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_page_lists_every_flag(command):
    """Each flag that ``--help`` prints appears in docs/cli.md as a flag (in backticks or in
    the help output the page shows)."""
    shown = subprocess.run([sys.executable, "-m", f"ffnumpy.{command}", "--help"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", shown)) - {"--help"}
    assert flags
    page = (REPO / "docs" / "cli.md").read_text()
    missing = [f for f in sorted(flags) if not re.search(rf"(?<![\w-]){f}(?![\w-])", page)]
    assert not missing, missing
    assert re.search(r"--optimizer \{adam,sgd\}", page)


def slug(heading):
    """The anchor a code host (and the site, myst_heading_anchors) gives a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower()).replace(" ", "-")
    return re.sub(r"[^\w\-]", "", text)


def anchors(path):
    if path.suffix != ".md":
        return None  # a notebook's or a file's anchors are not checked here
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_resolves(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or page.name != "README.md"
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # an external address: not followed (the site must work offline)
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), (page.name, link)
        if anchor and anchors(path) is not None:
            assert anchor in anchors(path), (page.name, link)


def test_printed_commands_name_the_interpreter():
    from ffnumpy.train import command

    printed = shlex.split(command("--resume", "a folder"))
    assert printed == [sys.executable, "-m", "ffnumpy.train", "--resume", "a folder"]
