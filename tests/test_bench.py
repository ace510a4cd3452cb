"""The benchmark: what it counts (products, FLOPs, memory) and that it runs and reports.

No timing is compared or bounded anywhere here (the machines are shared): the tests
check the shapes and FLOP counts that the printed bounds are timed on, the memory
claim the README plots, and the structure of what the benchmark prints and returns."""
import numpy as np
import pytest

from ffnumpy import bench
from ffnumpy.bench import flops, memory_by_depth, prediction_shapes, training_shapes


def test_memory_of_a_step_is_flat_with_depth_for_symba_and_grows_for_backprop():
    mem = memory_by_depth([2, 6], width=64, batch=512)
    assert mem["symba"][1] <= 1.05 * mem["symba"][0]  # two alternating activation buffers
    assert mem["bp"][1] > 1.3 * mem["bp"][0]  # backprop keeps every layer's activations


def test_training_shapes_count_the_shared_first_layer_product_once():
    # 2 batches (one partial), MNIST with ICP: D_img 784, D_in 794, 10 classes, 2 x 500
    split = training_shapes(6000, 4096, 784, 794, 10, [500, 500], split_first=True)
    naive = training_shapes(6000, 4096, 784, 794, 10, [500, 500], split_first=False)
    assert split[(4096, 784, 500)] == 1 and (8192, 794, 500) not in split
    assert naive[(8192, 794, 500)] == 1 and naive[(3808, 794, 500)] == 1
    assert 0.5 < flops(split) / flops(naive) < 0.7  # the first layer's two products halve


def test_flops_of_a_product_and_of_prediction():
    assert flops({(2, 3, 4): 5}) == 2 * 2 * 3 * 4 * 5
    # 10,000 test images, 10 labels, 2 x 500, one chunk: the first layer's image product
    # once per image instead of once per (image, label)
    ours = prediction_shapes(10000, 10, 784, 794, [500, 500], True, 10000)
    naive = prediction_shapes(10000, 10, 784, 794, [500, 500], False, 10000)
    assert ours == {(10000, 784, 500): 1, (10, 794, 500): 1, (100000, 500, 500): 1}
    assert flops(naive) - flops(ours) == 2 * 500 * (100000 * 794 - 10000 * 784 - 10 * 794)


@pytest.mark.slow
def test_bench_prints_times_bounds_and_ratios(capsys):
    results = bench.main(["--algo", "symba", "bp", "--width", "32", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "matmul bound (ours shapes)" in out and "ratio" in out
    symba = results[0]
    for key in ("train_s", "predict_s", "train_bound_ours", "predict_bound_ours",
                "train_bound_naive", "train_ratio_ours", "predict_ratio_naive"):
        assert np.isfinite(symba[key]) and symba[key] > 0
    # the bounds are timed on these products: ours do fewer operations than the naive ones
    assert symba["train_flops_ours"] < 0.7 * symba["train_flops_naive"]
    assert symba["predict_flops_ours"] < 0.5 * symba["predict_flops_naive"]
    assert results[1]["peak_step_bytes"] > 0 and "train_bound_naive" not in results[1]


def test_whole_run_splits_a_training_run(tiny_mnist, capsys):
    """``--whole-run``: a real training process, its wall time split into parts."""
    r = bench.whole_run(["mnist", "--data-dir", str(tiny_mnist), "--epochs", "3",
                         "--width", "16", "--batch-size", "60"])
    assert (r["epochs"], r["checkpoints"]) == (3, 2)  # after epoch 1 (none yet), at the end
    for key in ("wall", "startup", "train", "evaluation", "checkpointing"):
        assert np.isfinite(r[key]) and r[key] > 0
    assert r["other"] == pytest.approx(r["wall"] - r["startup"] - r["train"]
                                       - r["evaluation"] - r["checkpointing"])
    line = bench.format_whole_run(r, 120)
    for part in ("wall", "ratio", "start-up", "evaluation", "checkpointing", "(2 checkpoints)",
                 "projected to 120 epochs"):
        assert part in line


def test_whole_run_reports_a_failed_run_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="the training run failed"):
        bench.whole_run(["mnist", "--data-dir", str(tmp_path / "nothing"), "--epochs", "1"])


@pytest.mark.parametrize("flags, said", [
    (["--width", "100000"], "not enough memory"),
    (["--layers", str(10**30)], "not enough memory"),
])
def test_a_network_too_large_for_memory_is_refused_before_it_runs(capsys, monkeypatch, flags,
                                                                  said):
    """The benchmark checks its networks against memory as train does: one line, exit 2,
    nothing measured."""
    measured = []
    monkeypatch.setattr(bench, "bench_config", lambda *a: measured.append(a))
    with pytest.raises(SystemExit) as exc:
        bench.main(flags)
    err = capsys.readouterr().err
    assert exc.value.code == 2 and said in err and len(err.strip().splitlines()) == 1
    assert measured == []


def test_an_unwritable_memory_plot_is_said_before_the_benchmark(tmp_path, capsys, monkeypatch):
    measured = []
    monkeypatch.setattr(bench, "bench_config", lambda *a: measured.append(a))
    with pytest.raises(SystemExit) as exc:
        bench.main(["--memory-plot", str(tmp_path / "missing" / "memory.png")])
    assert exc.value.code == 2 and "cannot write into" in capsys.readouterr().err
    assert measured == []
