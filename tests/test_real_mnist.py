"""One real-data check: a short SymBa run on the real MNIST shipped in data_cache/mnist/.

Measured on the 2-core CI machine (seed 0, default settings): test error 17.59% after
epoch 1, 11.72% after 2, 9.02% after 3. The bound leaves about 4 points of margin for
BLAS differences between machines; an implementation that does not learn stays near 90%.
"""
import pytest

from ffnumpy.train import main


@pytest.mark.slow
def test_symba_learns_real_mnist_in_three_epochs(tmp_path):
    metrics = main(["mnist", "--epochs", "3", "--out", str(tmp_path / "run")])
    errors = [r["test_error"] for r in metrics["epochs"]]
    assert errors[-1] < 0.13
    assert errors[-1] < errors[0]  # it improves with training
