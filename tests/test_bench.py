"""The benchmark: it runs and reports its ratios, and the memory claim it plots holds.

No timing is asserted (the machines are shared); the ratios are printed, not tested."""
import numpy as np
import pytest

from ffnumpy import bench
from ffnumpy.bench import memory_by_depth, training_shapes


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

    def flops(shapes):
        return sum(2 * m * k * n * c for (m, k, n), c in shapes.items())

    assert 0.5 < flops(split) / flops(naive) < 0.7  # the first layer's two products halve


@pytest.mark.slow
def test_bench_prints_times_bounds_and_ratios(capsys):
    results = bench.main(["--algo", "symba", "bp", "--width", "32", "--repeats", "1"])
    out = capsys.readouterr().out
    assert "matmul bound (ours shapes)" in out and "ratio" in out
    symba = results[0]
    for key in ("train_s", "predict_s", "train_bound_ours", "predict_bound_ours",
                "train_bound_naive"):
        assert np.isfinite(symba[key]) and symba[key] > 0
    assert symba["train_bound_ours"] < symba["train_bound_naive"]
    assert results[1]["peak_step_bytes"] > 0
