"""Experiment presets: every row is a valid training command, rows run, resume and skip,
and the generated table traces each figure to its command."""
import json

import pytest

from ffnumpy import experiments
from ffnumpy.config import config_from_args
from ffnumpy.experiments import PRESETS, main, train_argv
from tests.conftest import make_tiny_cifar, make_tiny_mnist


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_row_is_a_valid_train_command(preset):
    rows = PRESETS[preset]()
    assert rows and len({r.name for r in rows}) == len(rows)
    for row in rows:
        cfg, _ = config_from_args(train_argv(row.flags, epochs=3))
        assert cfg.epochs == 3 and cfg.dataset == row.flags["dataset"]


def test_table1_has_the_papers_twelve_rows():
    rows = PRESETS["table1"]()
    assert len(rows) == 12 and {r.flags["algo"] for r in rows} == {"bp", "ff", "symba"}
    assert sorted(r.paper for r in rows if r.flags["algo"] == "symba") == [1.42, 1.52, 1.65, 1.77]


def _run(tmp_path, *args):
    return main(list(args) + ["--epochs", "2", "--out", str(tmp_path / "runs"),
                              "--results", str(tmp_path / "results")])


def test_seeds_preset_runs_resumes_and_aggregates(tmp_path):
    data = make_tiny_mnist(tmp_path / "data" / "mnist").parent
    _run(tmp_path, "seeds", "--only", "bp-*", "--data-dir", str(data))
    table = (tmp_path / "results" / "seeds.md").read_text()
    assert "| bp-2x500 | 1.74 |" in table and "| bp-2x500 | 3 |" in table
    assert "not run" in table  # the FF and SymBa rows were not selected
    row = json.loads((tmp_path / "results" / "seeds" / "bp-2x500-s1-e2.json").read_text())
    assert len(row["epochs"]) == 2 and row["config"]["seed"] == 1
    assert "python -m ffnumpy.train mnist --algo bp" in table
    # a second call finds every row done and trains nothing
    before = (tmp_path / "runs" / "bp-2x500-e2" / "metrics.json").stat().st_mtime_ns
    _run(tmp_path, "seeds", "--only", "bp-*", "--data-dir", str(data))
    assert (tmp_path / "runs" / "bp-2x500-e2" / "metrics.json").stat().st_mtime_ns == before


def test_cifar_presets_run_on_small_data(tmp_path):
    root = make_tiny_cifar(tmp_path / "data", "cifar10", n_train=100, n_test=20)
    make_tiny_cifar(root, "cifar100", n_train=100, n_test=20)
    _run(tmp_path, "table2", "--only", "symba-cifar100-*", "ff-cifar10-3x2000",
         "--data-dir", str(root))
    table = (tmp_path / "results" / "table2.md").read_text()
    assert "| symba-cifar100-3x3072 | 70.72 |" in table and "2/2" in table


def test_a_diverged_row_is_recorded_and_not_retried(tmp_path, monkeypatch):
    calls = []

    def diverge(argv):
        calls.append(argv)
        raise SystemExit(3)

    monkeypatch.setattr(experiments, "train_main", diverge)
    _run(tmp_path, "fig4", "--only", "symba-icp0.02-*")
    _run(tmp_path, "fig4", "--only", "symba-icp0.02-*")
    assert len(calls) == 1
    assert (tmp_path / "runs" / "symba-icp0.02-cifar10-3x3072-e2" / "DIVERGED").is_file()


def test_unknown_row_pattern_lists_the_rows(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["table3", "--only", "nothing*"])
    assert "matches no row" in str(exc.value) and "ff-icp-cifar10-3x3072" in str(exc.value)
