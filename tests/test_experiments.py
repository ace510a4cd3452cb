"""Experiment presets: every row is a valid training command, rows run, resume and skip,
the generated table shows both rates with the paper's and the validation pick, marks
stopped and missing runs, and documented commands leave the repository clean."""
import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ffnumpy import experiments
from ffnumpy.config import config_from_args
from ffnumpy.experiments import PRESETS, main, train_argv
from tests.conftest import make_tiny_mnist

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_committed_metrics(tmp_path, monkeypatch):
    """Tables read here come from the test's own run folders, not from the committed
    metrics copies (tests that want those say so)."""
    monkeypatch.setattr(experiments, "RESULTS", tmp_path / "committed")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_row_is_a_valid_train_command(preset):
    rows = PRESETS[preset]()
    assert rows and len({r.name for r in rows}) == len(rows)
    for row in rows:
        cfg, _ = config_from_args(train_argv(row.flags, epochs=3))
        assert cfg.epochs == 3 and cfg.dataset == row.flags["dataset"]


def test_table1_runs_every_row_at_both_rates_with_validation():
    every = {r.name: r for r in PRESETS["table1"]()}
    rows = {name: r for name, r in every.items() if not r.imported}
    # 12 paper rows x 2 rates, and seeds 1 and 2 of the three 2 x 500 rows at both rates
    assert len(rows) == 12 * 2 + 3 * 2 * 2
    # the GPU runs of the six 2000-unit rows are rows of their own (11 runs: FF 3 x 2000 at
    # lr 0.001 ran on the CPU only), never trained by the preset
    imported = {name: r for name, r in every.items() if r.imported}
    assert len(imported) == 11 and "ff-3x2000-h100-lr0.001" not in imported
    assert all(r.group.endswith("-h100") and r.flags["backend"] == "cupy"
               and "validation" not in r.flags for r in imported.values())
    assert train_argv(rows["symba-2x500-lr0.001"].flags) == [
        "mnist", "--algo", "symba", "--layers", "2", "--width", "500", "--lr", "0.001",
        "--validation", "10000", "--eval-every", "2", "--labels", "icp"]
    assert train_argv(rows["bp-3x500-lr0.01"].flags) == [
        "mnist", "--algo", "bp", "--layers", "3", "--width", "500", "--lr", "0.01",
        "--validation", "10000", "--eval-every", "2"]
    assert train_argv(rows["ff-2x500-lr0.01-s2"].flags)[-4:] == ["--labels", "overlay",
                                                                  "--seed", "2"]
    paper = {r.group: r.paper for r in rows.values() if r.flags["algo"] == "symba"}
    assert sorted(paper.values()) == [1.42, 1.52, 1.65, 1.77]


def test_table2_runs_cifar10_at_3x1000_and_shares_rows_with_table3_and_fig4():
    rows = {r.name: r for r in PRESETS["table2"]()}
    assert train_argv(rows["ff-cifar10-3x1000-lr0.01"].flags, data_dir="d") == [
        "cifar10", "--algo", "ff", "--layers", "3", "--width", "1000", "--lr", "0.01",
        "--validation", "5000", "--eval-every", "5", "--labels", "overlay", "--data-dir", "d"]
    table3 = {r.name: r for r in PRESETS["table3"]()}
    fig4 = {r.name: r for r in PRESETS["fig4"]()}
    # the paper's own label pairings (Table 3) and ICP rate 0.1 (Figure 4) are Table 2's runs
    for name in ("symba-cifar10-3x1000-lr0.001", "ff-cifar10-3x1000-lr0.01"):
        assert table3[name].flags == rows[name].flags
    assert fig4["symba-cifar10-3x1000-lr0.01"].flags == rows["symba-cifar10-3x1000-lr0.01"].flags
    assert table3["symba-overlay-cifar10-3x1000-lr0.001"].flags["labels"] == "overlay"
    assert fig4["symba-icp0.02-cifar10-3x1000-lr0.01"].flags["icp_rate"] == 0.02


# --- the table writer, on run folders written by hand ---

def fake_run(runs, row, test, val=None, total=120, done=True, eval_every=2):
    """A run folder for ``row`` whose evaluations (every ``eval_every`` epochs) have the
    test errors ``test`` and validation errors ``val`` (fractions)."""
    cfg, _ = config_from_args(train_argv(row.flags))
    config = {**dataclasses.asdict(cfg), "epochs": total}
    epochs = []
    for i, err in enumerate(test):
        for e in range(i * eval_every + 1, (i + 1) * eval_every):
            epochs.append({"epoch": e, "train_seconds": 1.0})
        record = {"epoch": (i + 1) * eval_every, "train_seconds": 1.0, "test_error": err}
        if val is not None:
            record["val_error"] = val[i]
        epochs.append(record)
    run_dir = runs / f"{row.name}-e120"
    run_dir.mkdir(parents=True)
    metrics = {"config": config, "device": "test CPU", "epochs": epochs}
    if done:
        metrics["final_test_error"] = test[-1]
        (run_dir / "model.npz").write_bytes(b"")
    (run_dir / "config.json").write_text(json.dumps({"config": config}))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def _rows(preset):
    return {r.name: r for r in PRESETS[preset]()}


def _line(table, start, runs=False):
    """The line of paper row ``start`` (of run ``start`` with ``runs``) in ``table``."""
    part = table.split("\nRuns (")[1 if runs else 0]
    (line,) = [ln for ln in part.splitlines() if ln.startswith(f"| {start} |")]
    return line


def _table(tmp_path, preset="table1"):
    main([preset, "--table-only", "--runs", str(tmp_path / "runs"),
          "--results", str(tmp_path / "results")])
    return (tmp_path / "results" / f"{preset}.md").read_text()


def test_table_shows_both_rates_and_the_paper_and_validation_picks(tmp_path):
    rows, runs = _rows("table1"), tmp_path / "runs"
    n = 60  # evaluations of a 120-epoch run evaluated every 2 epochs
    # lr 0.001 ends lower on the test set, lr 0.01 lower on validation (last 3 evaluations)
    fake_run(runs, rows["symba-2x500-lr0.001"], [0.05] * (n - 1) + [0.020],
             [0.04] * (n - 3) + [0.030, 0.030, 0.030])
    fake_run(runs, rows["symba-2x500-lr0.01"], [0.05] * (n - 1) + [0.025],
             [0.04] * (n - 3) + [0.020, 0.030, 0.050])
    table = _table(tmp_path)
    line = _line(table, "symba-2x500")
    cells = [c.strip() for c in line.split("|")[1:-1]]
    assert cells[:4] == ["symba-2x500", "1.65", "**2.00** (120/120)", "2.50 (120/120)"]
    assert cells[4] == "lr 0.001"  # the paper's pick: lower final test error
    assert cells[5] == "lr 0.001 (validation 3.00 vs 3.33)" and cells[6] == "2.00"
    assert cells[7] == "0 (not run: 1, 2)"
    assert f"Generated by `python -m ffnumpy.experiments table1 --table-only --runs {runs}" in table
    assert "not run" in _line(table, "bp-2x500")
    assert json.loads((tmp_path / "results" / "table1" / "symba-2x500-lr0.01-e120.json")
                      .read_text())["final_test_error"] == 0.025


def test_validation_can_pick_the_other_rate(tmp_path):
    rows, runs = _rows("table1"), tmp_path / "runs"
    n = 60
    # the last evaluation alone would pick lr 0.001 (6.00 vs 6.50); the mean of the last
    # three picks lr 0.01
    fake_run(runs, rows["ff-3x500-lr0.001"], [0.08] * (n - 1) + [0.060],
             [0.07] * (n - 3) + [0.080, 0.070, 0.060])
    fake_run(runs, rows["ff-3x500-lr0.01"], [0.08] * (n - 1) + [0.070],
             [0.07] * (n - 3) + [0.060, 0.065, 0.065])
    cells = [c.strip() for c in _line(_table(tmp_path), "ff-3x500").split("|")[1:-1]]
    assert cells[2] == "**6.00** (120/120)" and cells[4] == "lr 0.001"
    assert cells[5] == "lr 0.01 (validation 7.00 vs 6.33)" and cells[6] == "7.00"


def test_a_stopped_run_is_marked_and_picks_are_made_at_equal_epochs(tmp_path):
    rows, runs = _rows("table2"), tmp_path / "runs"
    done = fake_run(runs, rows["symba-cifar10-3x1000-lr0.001"], [0.9, 0.6, 0.5, 0.45] + [0.4] * 20,
                    [0.9, 0.6, 0.5, 0.45] + [0.4] * 20, eval_every=5)
    fake_run(runs, rows["symba-cifar10-3x1000-lr0.01"], [0.9, 0.8, 0.75, 0.7],
             [0.9, 0.8, 0.75, 0.7], done=False, eval_every=5)
    table = _table(tmp_path, "table2")
    cells = [c.strip() for c in _line(table, "symba-cifar10-3x1000").split("|")[1:-1]]
    assert cells[2] == "**40.00** (120/120)"
    assert cells[3] == "70.00 (stopped after 20/120)"
    assert cells[4] == ("lr 0.001, provisional: picked at epoch 20, the last epoch both "
                        "rates reached")
    assert cells[5] == "lr 0.001 (validation 51.67 vs 75.00 at epoch 20)"
    assert cells[6] == "40.00"  # picked at epoch 20 (45.00 there); the row ends at 40.00
    run_line = _line(table, "symba-cifar10-3x1000-lr0.01", runs=True)
    assert "stopped after epoch 20/120: run only until" in run_line
    # a STOPPED file in the run folder gives the reason instead, and a run without a
    # reason may still be training
    (runs / "symba-cifar10-3x1000-lr0.01-e120" / "STOPPED").write_text("power cut\n")
    assert "stopped after epoch 20/120: power cut" in _table(tmp_path, "table2")
    # without its model the finished run counts as stopped too
    (done / "model.npz").unlink()
    table = _table(tmp_path, "table2")
    assert "stopped after epoch 120/120" in _line(table, "symba-cifar10-3x1000-lr0.001",
                                                  runs=True)
    cells = [c.strip() for c in _line(table, "symba-cifar10-3x1000").split("|")[1:-1]]
    assert cells[6] == "40.00 (epoch 120, not final)"


def test_a_run_without_reason_may_still_be_running_and_a_foreign_run_is_flagged(tmp_path):
    rows, runs = _rows("table1"), tmp_path / "runs"
    fake_run(runs, rows["bp-2x500-lr0.001"], [0.1, 0.05], [0.1, 0.05], done=False)
    other = dict(rows["bp-2x500-lr0.01"].flags, lr=0.001)  # a run of another row
    fake_run(runs, dataclasses.replace(rows["bp-2x500-lr0.01"], flags=other), [0.02], [0.02])
    started = runs / "ff-2x500-lr0.01-e120"  # config written, no epoch finished
    started.mkdir()
    (started / "config.json").write_text("{}")
    table = _table(tmp_path)
    assert "started, no epoch finished yet" in _line(table, "ff-2x500-lr0.01", runs=True)
    assert "running or stopped after epoch 4/120" in _line(table, "bp-2x500-lr0.001", runs=True)
    foreign = _line(table, "bp-2x500-lr0.01", runs=True)
    assert "another configuration: lr 0.001 (row: 0.01)" in foreign
    cells = [c.strip() for c in _line(table, "bp-2x500").split("|")[1:-1]]
    assert cells[2] == "5.00 (stopped after 4/120)" and cells[3] == "differs"
    assert cells[4] == "-"  # no pick with one usable rate


# --- running ---

def _run(tmp_path, *args):
    return main(list(args) + ["--epochs", "2", "--runs", str(tmp_path / "runs"),
                              "--results", str(tmp_path / "results")])


def test_seeds_preset_runs_resumes_and_aggregates(tmp_path):
    data = make_tiny_mnist(tmp_path / "data" / "mnist").parent
    _run(tmp_path, "seeds", "--only", "bp-*", "--data-dir", str(data))
    table = (tmp_path / "results" / "seeds.md").read_text()
    line = _line(table, "bp-2x500")
    assert "| 1.74 |" in line and "(3 seeds, 2/2)" in line
    assert "not run" in _line(table, "ff-2x500")  # the FF and SymBa rows were not selected
    row = json.loads((tmp_path / "results" / "seeds" / "bp-2x500-s1-e2.json").read_text())
    assert len(row["epochs"]) == 2 and row["config"]["seed"] == 1
    assert "python -m ffnumpy.train mnist --algo bp" in table
    # a second call finds every row done and trains nothing
    before = (tmp_path / "runs" / "bp-2x500-e2" / "metrics.json").stat().st_mtime_ns
    _run(tmp_path, "seeds", "--only", "bp-*", "--data-dir", str(data))
    assert (tmp_path / "runs" / "bp-2x500-e2" / "metrics.json").stat().st_mtime_ns == before


def _git_status():
    if shutil.which("git") is None:
        pytest.skip("git is not installed: cannot check that the repository stays clean")
    out = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"{REPO} is not a git checkout: cannot check that it stays clean")
    return out.stdout


def test_a_preset_with_default_folders_leaves_the_repository_clean(tmp_path, monkeypatch):
    """The default results and run folders are ones git ignores (asked of git, so that
    the test writes nothing into the checkout); a preset run with them moved to tmp_path
    changes nothing tracked."""
    before = _git_status()
    for default in (experiments.SCRATCH / "seeds.md", experiments.RUNS / "bp-2x500-e1"):
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(default)])
        assert ignored.returncode == 0, f"{default} is not ignored by git"
    monkeypatch.setattr(experiments, "RUNS", tmp_path / "runs")
    monkeypatch.setattr(experiments, "SCRATCH", tmp_path / "scratch")
    data = make_tiny_mnist(tmp_path / "data" / "mnist").parent
    main(["seeds", "--only", "bp-2x500", "--epochs", "1", "--data-dir", str(data)])
    assert (tmp_path / "scratch" / "seeds" / "bp-2x500-e1.json").is_file()
    assert _git_status() == before


def test_a_diverged_row_is_recorded_and_not_retried(tmp_path, monkeypatch):
    calls = []

    def diverge(argv):
        calls.append(argv)
        raise SystemExit(3)

    monkeypatch.setattr(experiments, "train_main", diverge)
    _run(tmp_path, "fig4", "--only", "symba-icp0.02-*-lr0.01")
    _run(tmp_path, "fig4", "--only", "symba-icp0.02-*-lr0.01")
    assert len(calls) == 1
    assert (tmp_path / "runs" / "symba-icp0.02-cifar10-3x1000-lr0.01-e2" / "DIVERGED").is_file()


def test_a_diverged_run_says_so_in_the_table_and_its_metrics_copy(tmp_path):
    rows, runs = _rows("fig4"), tmp_path / "runs"
    run_dir = fake_run(runs, rows["symba-icp0.02-cifar10-3x1000-lr0.01"], [0.8, 0.7],
                       done=False, eval_every=5)
    (run_dir / "DIVERGED").write_text("NaN guard tripped\n")
    table = _table(tmp_path, "fig4")
    assert "diverged (NaN) at epoch 11/120" in _line(table, "symba-icp0.02-cifar10-3x1000-lr0.01",
                                                     runs=True)
    copy = tmp_path / "results" / "fig4" / "symba-icp0.02-cifar10-3x1000-lr0.01-e120.json"
    assert json.loads(copy.read_text())["diverged"] is True


def test_unknown_row_pattern_lists_the_rows(capsys):
    """--only with no match is a usage error (exit 2) that lists the rows."""
    with pytest.raises(SystemExit) as exc:
        main(["table3", "--only", "nothing*"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "matches no row" in err and "ff-icp-cifar10-3x1000-lr0.001" in err


# --- committed tables, damaged files, the plan ---

@pytest.mark.parametrize("preset", ["table1", "table2", "table3", "fig4", "ff-reference",
                                    "symba-best"])
def test_a_committed_table_is_rewritten_from_the_committed_metrics(tmp_path, monkeypatch, preset):
    """The committed tables come from the committed metrics copies alone: written again in
    a checkout without run folders, each is the same table (only the command line that
    wrote it differs)."""
    monkeypatch.setattr(experiments, "RESULTS", REPO / "data_cache" / "results")
    committed = (REPO / "data_cache" / "results" / f"{preset}.md").read_text()
    main([preset, "--table-only", "--runs", str(tmp_path / "no-runs"),
          "--results", str(tmp_path / "results")])
    rewritten = (tmp_path / "results" / f"{preset}.md").read_text()
    body = lambda text: text.split("\n", 3)[3]  # after the title and the "Generated by" line
    assert body(rewritten) == body(committed)


def test_a_table_with_fewer_results_does_not_replace_one_with_more(tmp_path, capsys):
    """Writing a table from an empty runs folder over a table that holds results is
    refused (exit 2, naming where the runs were looked for); the table is unchanged."""
    rows, runs = _rows("table1"), tmp_path / "runs"
    fake_run(runs, rows["bp-2x500-lr0.001"], [0.02], [0.02])
    table = _table(tmp_path)
    shutil.rmtree(tmp_path / "results" / "table1")  # the metrics copies are gone too
    with pytest.raises(SystemExit) as exc:
        main(["table1", "--table-only", "--runs", str(tmp_path / "elsewhere"),
              "--results", str(tmp_path / "results")])
    assert "holds 1 runs with results, the new table would hold 0" in str(exc.value)
    assert str(tmp_path / "elsewhere") in str(exc.value)
    assert (tmp_path / "results" / "table1.md").read_text() == table


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"config": {}}', b"\xff\xfe\x00",
                                     b"[" * 100000])
def test_a_damaged_metrics_file_is_one_line_error(tmp_path, content):
    """A damaged metrics.json (bad JSON, a list, no config, binary, nested deeply) ends
    in one line naming the file, not a traceback."""
    rows, runs = _rows("table1"), tmp_path / "runs"
    run_dir = fake_run(runs, rows["bp-2x500-lr0.001"], [0.02], [0.02])
    (run_dir / "metrics.json").write_bytes(content)
    with pytest.raises(SystemExit) as exc:
        _table(tmp_path)
    message = str(exc.value)
    assert message.startswith("python -m ffnumpy.experiments: error: ")
    assert str(run_dir / "metrics.json") in message and "\n" not in message


@pytest.mark.parametrize("where", ["under-a-file", "read-only"])
def test_an_unwritable_results_folder_is_one_line_error(tmp_path, where):
    """--results under a file or in a read-only folder: one line that says what to do."""
    import os
    if where == "under-a-file":
        (tmp_path / "file").write_text("")
        results = tmp_path / "file" / "results"
    else:
        results = tmp_path / "ro"
        results.mkdir()
        results.chmod(0o500)
        if os.access(results, os.W_OK):
            pytest.skip("running as root: a read-only folder is writable")
    with pytest.raises(SystemExit) as exc:
        main(["table1", "--table-only", "--runs", str(tmp_path / "runs"),
              "--results", str(results)])
    assert "cannot write" in str(exc.value) and "--results" in str(exc.value)


def test_a_long_plan_is_shown_and_needs_yes(tmp_path, monkeypatch, capsys):
    """A preset that would train for hours prints its plan and estimate and asks for
    --yes before anything starts; a short one starts at once."""
    calls = []
    monkeypatch.setattr(experiments, "train_main", lambda argv: calls.append(argv))
    with pytest.raises(SystemExit) as exc:
        main(["table1", "--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "r")])
    assert "add --yes to start it" in str(exc.value) and calls == []
    out = capsys.readouterr().out
    assert "table1: 36 rows, estimated" in out and " h of CPU time" in out
    assert "bp-2x2000-h100-lr0.001: not trained here" in out
    _run(tmp_path, "seeds", "--only", "bp-2x500")  # 2 epochs: minutes at most
    assert len(calls) == 1


def test_the_estimate_grows_with_the_work():
    rows = _rows("table1")
    small, wide = (experiments.epoch_flops(rows[n].flags)
                   for n in ("symba-2x500-lr0.01", "symba-2x2000-lr0.01"))
    assert wide > 5 * small  # 784x2000 + 2000x2000 vs 784x500 + 500x500 per image
    assert experiments.plan_seconds([rows["bp-2x2000-h100-lr0.01"]], None, Path("/none")) == 0
