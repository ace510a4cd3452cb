"""`python -m ffnumpy.figures` writes every figure the README shows, and the Figure 3 panel
reads whatever runs a preset holds (seeds, two learning rates, runs cut short)."""
import json
import re
from pathlib import Path

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from ffnumpy import figures, losses  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_the_command_writes_every_png_that_docs_and_readme_use(tmp_path):
    written = figures.main(["--out", str(tmp_path)])
    names = {p.name for p in tmp_path.iterdir()}
    assert names == {p.name for p in written} == {f"{n}.png" for n in figures.FIGURES}
    assert names == {p.name for p in (ROOT / "docs").glob("*.png")}, \
        "docs/ holds a PNG the command does not write, or lacks one it does"
    pages = "\n".join(p.read_text() for p in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
    assert names == set(re.findall(r"(\w+\.png)", pages)), \
        "a figure the command writes is shown on no page, or a page shows one it does not write"
    assert all((tmp_path / n).stat().st_size > 10_000 for n in names)


def test_only_writes_the_named_figure(tmp_path):
    figures.main(["--only", "memory_by_depth", "--out", str(tmp_path)])
    assert [p.name for p in tmp_path.iterdir()] == ["memory_by_depth.png"]


def test_a_missing_metrics_file_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        figures.main(["--only", "gradient_balance", "--results", str(tmp_path),
                      "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("gradient_balance: cannot draw it:")
    assert "ff-2x500-lr0.001-e120.json" in err
    assert "Traceback" not in err


def test_a_damaged_metrics_file_is_named(tmp_path, capsys):
    (tmp_path / "fig4").mkdir()
    (tmp_path / "fig4" / "cut.json").write_text('{"config": {"algo"')
    with pytest.raises(SystemExit):
        figures.main(["--only", "figure4_icp_rate", "--results", str(tmp_path),
                      "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "cut.json is not valid JSON" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name", ["figure3_test_error", "figure4_icp_rate", "gradient_balance"])
def test_an_empty_results_folder_is_an_error_not_an_empty_figure(tmp_path, capsys, name):
    with pytest.raises(SystemExit) as exit_info:
        figures.main(["--only", name, "--results", str(tmp_path), "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 1 and err.startswith(f"{name}: cannot draw it:")
    assert "--results" in err and len(err.strip().splitlines()) == 1


def test_an_unwritable_out_folder_is_said_before_drawing(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("")
    drawn = []
    monkeypatch.setitem(figures.FIGURES, "figure1_losses", lambda results: drawn.append(1))
    with pytest.raises(SystemExit) as exit_info:
        figures.main(["--only", "figure1_losses", "--out", str(tmp_path / "file" / "figs")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "cannot write into" in err and "--out" in err
    assert drawn == [] and "Traceback" not in err


@pytest.mark.parametrize("content", [b"peak step memory symba: garbage\n", b"\xff\xfe\x00\x01",
                                     b"peak step memory bp: 2L=\n"])
def test_a_damaged_bench_file_is_one_clear_line(tmp_path, capsys, content):
    (tmp_path / figures.BENCH_FILE).write_bytes(content)
    with pytest.raises(SystemExit):
        figures.main(["--only", "memory_by_depth", "--results", str(tmp_path),
                      "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert err.startswith("memory_by_depth: cannot draw it:") and "Traceback" not in err


def test_figure1_fields_are_the_papers_derivatives():
    """The fields Figure 1 draws are the paper's closed forms (Eqs. 6-7 and 11), written
    out here independently of the library, on a grid shaped like the figure's."""
    g_pos, g_neg = np.meshgrid(np.linspace(0, 6, 7), np.linspace(0, 5, 6))  # (6, 7)
    theta, alpha = 2.0, 4.0
    fields = figures.gradient_fields(g_pos, g_neg, theta=theta, alpha=alpha)
    sig = lambda u: 1 / (1 + np.exp(-u))
    np.testing.assert_allclose(fields["ff"][0], -sig(theta - g_pos), rtol=1e-12)
    np.testing.assert_allclose(fields["ff"][1], sig(g_neg - theta), rtol=1e-12)
    delta = g_pos - g_neg
    np.testing.assert_allclose(fields["symba"][0], -alpha * sig(-alpha * delta), rtol=1e-12)
    np.testing.assert_allclose(fields["symba"][1], alpha * sig(-alpha * delta), rtol=1e-12)
    assert fields["ff"][0].shape == g_pos.shape


def _run(folder, algo, lr, errors, planned, width=1000, seed=0, val=False, labels=None):
    cfg = {"dataset": "cifar10", "algo": algo, "layers": 3, "width": width, "lr": lr,
           "labels": labels or {"ff": "overlay", "symba": "icp"}.get(algo, "icp"),
           "epochs": planned, "batch_size": 4096, "optimizer": "adam", "seed": seed}
    epochs = [{"epoch": i + 1, "test_error": e, **({"val_error": e + 0.01} if val else {})}
              for i, e in enumerate(errors)]
    path = folder / f"{algo}-{labels}-3x{width}-lr{lr}-s{seed}-e{planned}.json"
    path.write_text(json.dumps({"config": cfg, "device": "test", "epochs": epochs,
                                "final_test_error": errors[-1]}))


@pytest.fixture
def results(tmp_path):
    """A results folder: the committed Table 1 runs, and CIFAR-10 runs cut short at 3 of
    120 epochs with both learning rates, two seeds, a val_error key, a wider run and a
    SymBa run with overlay labels."""
    (tmp_path / "table1").symlink_to(ROOT / "data_cache" / "results" / "table1")
    table2 = tmp_path / "table2"
    table2.mkdir()
    _run(table2, "symba", 0.01, [0.8, 0.7, 0.6], 120)
    _run(table2, "symba", 0.01, [0.8, 0.72, 0.62], 120, seed=1, val=True)
    _run(table2, "symba", 0.001, [0.85, 0.8, 0.75], 120)
    _run(table2, "ff", 0.001, [0.9, 0.88, 0.86], 120)
    _run(table2, "ff", 0.01, [0.9, 0.9, 0.9], 120, val=True)
    _run(table2, "bp", 0.01, [0.7, 0.6, 0.55], 120, width=3072)  # another width: left out
    _run(table2, "symba", 0.01, [0.2, 0.1, 0.1], 120, labels="overlay")  # not the pairing
    return tmp_path


def test_figure3_takes_the_runs_a_preset_holds(results):
    fig = figures.plot_figure3(results=results)
    cifar = fig.axes[1]
    assert "3 x 1000" in cifar.get_title() and "after 3 of 120 epochs" in cifar.get_title()
    assert "final" not in cifar.get_title().lower()
    labels = [t.get_text() for t in cifar.get_legend().get_texts()]
    assert any(t.startswith("SymBa, lr 0.01 (better of 0.001, 0.01") and "2 seeds" in t
               for t in labels)
    assert any(t.startswith("FF, lr 0.001 (better of") for t in labels)
    assert not any(t.startswith("BP") for t in labels)
    mnist_labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert sum("3 seeds" in t for t in mnist_labels) == 3
    assert "120 epochs" in fig.axes[0].get_title()


def test_figure3_counts_epochs_trained_not_only_those_evaluated(tmp_path):
    table2 = tmp_path / "table2"
    table2.mkdir()
    _run(table2, "symba", 0.001, [0.8, 0.7, 0.6, 0.5], 120)
    m = json.loads(next(table2.glob("*.json")).read_text())
    m["config"]["eval_every"] = 2
    for record in m["epochs"][::2]:  # epochs 1 and 3 were not evaluated
        del record["test_error"]
    next(table2.glob("*.json")).write_text(json.dumps(m))
    title = figures.plot_figure3(results=tmp_path).axes[1].get_title()
    assert "after 4 of 120 epochs" in title and "test error every 2 epochs" in title


def test_best_rate_is_chosen_by_the_last_epochs():
    def run(errors):
        return {"epochs": [{"epoch": i + 1, "test_error": e} for i, e in enumerate(errors)]}
    # lr 0.01 starts worse but ends better
    by_lr = {0.001: [run([0.3] + [0.2] * 10)], 0.01: [run([0.9] + [0.1] * 10)]}
    assert figures.best_rate(by_lr) == 0.01


def test_memory_figure_reads_the_committed_benchmark():
    memory = figures.read_memory()
    depths, symba = memory["symba"]
    assert depths == list(range(2, 9)) and len(set(symba)) == 1  # flat with depth
    assert np.all(np.diff(memory["bp"][1]) > 0)                   # grows with depth


def test_labels_figure_says_so_when_cifar10_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(figures, "SHARED_DATASETS", tmp_path / "none")
    fig = figures.plot_labels_overlay_vs_icp(data_dir=tmp_path / "empty")
    assert "CIFAR-10 not found" in fig._suptitle.get_text()


def test_figure4_marks_stopped_and_diverged_runs(tmp_path):
    fig4 = tmp_path / "fig4"
    fig4.mkdir()

    def run(name, rate, lr, errors, planned=120, **extra):
        cfg = {"dataset": "cifar10", "algo": "symba", "layers": 3, "width": 1000, "lr": lr,
               "labels": "icp", "epochs": planned, **({"icp_rate": rate} if rate else {})}
        epochs = [{"epoch": i + 1, "test_error": e} for i, e in enumerate(errors)]
        (fig4 / f"{name}.json").write_text(json.dumps({"config": cfg, "epochs": epochs,
                                                       **extra}))

    run("default-rate", None, 0.001, [0.6, 0.5], planned=2)  # no icp_rate: the default 0.1
    run("sparse", 0.02, 0.001, [0.7, 0.55], planned=2)
    run("sparse-fast", 0.02, 0.01, [0.8], planned=2, diverged=True)
    run("dense", 0.8, 0.001, [0.85], planned=2)  # stopped after 1 of 2 epochs
    run("other-width", 0.3, 0.001, [0.5, 0.4], planned=2)
    (fig4 / "other-width.json").write_text(
        (fig4 / "other-width.json").read_text().replace('"width": 1000', '"width": 3072'))
    assert set(figures.icp_runs(fig4)) == {(0.1, 0.001), (0.02, 0.001), (0.02, 0.01),
                                           (0.8, 0.001)}
    left, right = figures.plot_figure4(results=tmp_path).axes
    rates = sorted(set(figures.experiments.ICP_RATES) | {0.02, 0.1, 0.8})
    assert [t.get_text() for t in left.get_xticklabels()] == [f"{r:g}" for r in rates]
    notes = [t.get_text() for t in left.texts]
    assert "NaN at epoch 2" in notes and "epoch 1" in notes
    # every rate of the preset without a run at lr 0.001 is marked, at its own place
    not_run = [t.xy[0] for t in left.texts if t.get_text() == "not run"]
    assert sorted(not_run) == [r for r in rates if r not in (0.02, 0.1, 0.8)]
    hollow = [line for line in left.lines if line.get_marker() == "o"
              and line.get_markerfacecolor() == "white" and len(line.get_xdata()) == 1]
    assert [float(line.get_xdata()[0]) for line in hollow] == [0.8]
    labels = left.get_legend_handles_labels()[1]
    assert "lr 0.001, 2 epochs" in labels and "lr 0.01, diverged" in labels
    assert len(right.lines) == 4
    assert right.get_legend_handles_labels()[1] == ["rate 0.02", "rate 0.1", "rate 0.8"]


def test_figure3_draws_the_papers_cifar_width_once_its_runs_are_complete(tmp_path):
    table2 = tmp_path / "table2"
    table2.mkdir()
    _run(table2, "symba", 0.001, [0.6] * 30, 120)                 # 3 x 1000, 30 epochs
    _run(table2, "symba", 0.001, [0.5] * 60, 120, width=3072)      # 3 x 3072, half-way
    assert "3 x 1000" in figures.plot_figure3(results=tmp_path).axes[1].get_title()
    _run(table2, "symba", 0.001, [0.5] * 120, 120, width=3072)     # complete
    title = figures.plot_figure3(results=tmp_path).axes[1].get_title()
    assert "3 x 3072" in title and "120 epochs" in title
