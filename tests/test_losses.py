"""Goodness, FF loss and SymBa loss: values against the paper's formulas, gradients
against float64 central differences, numerical stability and dtype."""
import numpy as np
import pytest

from ffnumpy.gradcheck import GradientCheckError, check_gradient
from ffnumpy.losses import (
    ff_loss,
    ff_loss_grad,
    goodness,
    goodness_backward,
    symba_loss,
    symba_loss_grad,
)


@pytest.fixture
def goodness_pair(rng):
    # goodnesses spread over the interesting range around theta = 2
    return rng.uniform(0.0, 5.0, size=6), rng.uniform(0.0, 5.0, size=6)


@pytest.mark.parametrize("kind", ["sum", "mean"])
def test_goodness_value_and_gradient(rng, kind):
    h = rng.uniform(0.1, 2.0, size=(4, 5))
    expected = (h**2).sum(axis=1) / (1 if kind == "sum" else 5)
    np.testing.assert_allclose(goodness(h, kind), expected, rtol=1e-12)
    w = rng.standard_normal(4)  # dL/dG for an arbitrary linear loss L = w . G
    check_gradient(lambda: w @ goodness(h, kind), h, goodness_backward(w, h, kind), "h")


def test_ff_loss_matches_eqs_2_3(goodness_pair):
    g_pos, g_neg = goodness_pair
    theta = 2.0
    expected = np.log1p(np.exp(theta - g_pos)) + np.log1p(np.exp(g_neg - theta))
    np.testing.assert_allclose(ff_loss(g_pos, g_neg, theta, reduction="none"), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(ff_loss(g_pos, g_neg, theta), expected.mean(), rtol=1e-12)


def test_symba_loss_matches_eqs_10_11(goodness_pair):
    g_pos, g_neg = goodness_pair
    expected = np.log1p(np.exp(-4.0 * (g_pos - g_neg)))
    np.testing.assert_allclose(symba_loss(g_pos, g_neg, 4.0, reduction="none"), expected,
                               rtol=1e-12)


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("theta", [0.5, 2.0, 10.0])
def test_ff_loss_gradient(goodness_pair, theta, reduction):
    g_pos, g_neg = goodness_pair
    dg_pos, dg_neg = ff_loss_grad(g_pos, g_neg, theta, reduction)
    # a weighted sum exercises each per-pair derivative separately; a mean is already scalar
    w = 1.0 if reduction == "mean" else np.linspace(0.5, 1.5, g_pos.size)

    def total():
        return (w * ff_loss(g_pos, g_neg, theta, reduction)).sum()

    check_gradient(total, g_pos, w * dg_pos if reduction == "none" else dg_pos, "g_pos")
    check_gradient(total, g_neg, w * dg_neg if reduction == "none" else dg_neg, "g_neg")


@pytest.mark.parametrize("alpha", [1.0, 4.0])
def test_symba_loss_gradient(goodness_pair, alpha):
    g_pos, g_neg = goodness_pair
    dg_pos, dg_neg = symba_loss_grad(g_pos, g_neg, alpha)
    check_gradient(lambda: symba_loss(g_pos, g_neg, alpha), g_pos, dg_pos, "g_pos")
    check_gradient(lambda: symba_loss(g_pos, g_neg, alpha), g_neg, dg_neg, "g_neg")


def test_symba_gradients_are_symmetric_ff_are_not(rng):
    """Eqs. (6)-(7) and (12): near convergence FF keeps pushing negatives, SymBa is balanced."""
    g_pos = np.full(3, 50.0)  # Omega: positives far above the threshold
    g_neg = np.full(3, 1e-6)  # epsilon: negatives near zero
    dg_pos, dg_neg = ff_loss_grad(g_pos, g_neg, 2.0, reduction="none")
    assert np.all(np.abs(dg_pos) < 1e-20)  # Eq. (6): vanishes
    np.testing.assert_allclose(dg_neg, np.exp(-2.0) / (1 + np.exp(-2.0)), rtol=1e-5)  # Eq. (7)
    s_pos, s_neg = symba_loss_grad(rng.uniform(0, 5, 7), rng.uniform(0, 5, 7), 4.0)
    np.testing.assert_array_equal(s_pos, -s_neg)


@pytest.mark.parametrize("gap", [1e4, -1e4])
def test_losses_stable_for_huge_gaps(gap):
    g_pos, g_neg = np.array([gap, 0.0]), np.array([0.0, gap])
    for loss, grad, param in ((ff_loss, ff_loss_grad, 2.0), (symba_loss, symba_loss_grad, 4.0)):
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow
            value = loss(g_pos, g_neg, param, reduction="none")
            dg_pos, dg_neg = grad(g_pos, g_neg, param, reduction="none")
        assert np.all(np.isfinite(value)) and np.all(np.isfinite(dg_pos))
        assert np.all(np.isfinite(dg_neg))
    # the loss grows linearly with the gap where it is large: alpha * |gap|
    assert symba_loss(np.array([0.0]), np.array([1e4]), 4.0) == pytest.approx(4e4)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_losses_keep_dtype(dtype):
    g = np.linspace(0, 4, 5).astype(dtype)
    h = np.ones((2, 3), dtype=dtype)
    assert goodness(h).dtype == dtype
    assert goodness_backward(g[:2], h).dtype == dtype
    for loss, grad in ((ff_loss, ff_loss_grad), (symba_loss, symba_loss_grad)):
        assert loss(g, g[::-1]).dtype == dtype
        assert all(d.dtype == dtype for d in grad(g, g[::-1]))


def test_checker_rejects_a_wrong_gradient(goodness_pair):
    """Test the tester: a gradient off by a factor inside the sigmoid must fail."""
    g_pos, g_neg = goodness_pair
    right, _ = symba_loss_grad(g_pos, g_neg, 4.0)
    wrong, _ = symba_loss_grad(g_pos, g_neg, 4.0 * 1.01)
    check_gradient(lambda: symba_loss(g_pos, g_neg, 4.0), g_pos, right, "g_pos")
    with pytest.raises(GradientCheckError, match="g_pos"):
        check_gradient(lambda: symba_loss(g_pos, g_neg, 4.0), g_pos, wrong, "g_pos")
    with pytest.raises(GradientCheckError):
        check_gradient(lambda: symba_loss(g_pos, g_neg, 4.0), g_pos, right * 1.0001, "g_pos")
    with pytest.raises(TypeError, match="float64"):
        check_gradient(lambda: 0.0, g_pos.astype(np.float32), right, "g_pos")
