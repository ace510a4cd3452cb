"""The fast path of :mod:`ffnumpy.fused` against the readable layer of :mod:`ffnumpy.layers`,
function by function in float64, and what FFNet reports from it: the per-step statistics
and the goodness summed at prediction."""
import numpy as np
import pytest

from ffnumpy import fused
from ffnumpy.backend import Workspace
from ffnumpy.labels import icp_encoder, overlay_encoder
from ffnumpy.layers import ff_layer_backward, ff_layer_forward
from ffnumpy.losses import LOSSES, goodness, goodness_backward
from ffnumpy.model import STEP_STATS, FFNet

RTOL = 1e-12  # float64, the same products summed in another order


def _encoder(labels, rng):
    if labels == "icp":
        return icp_encoder(4, 12, 9, 0.4, rng, dtype="float64")
    return overlay_encoder(4, 12, dtype="float64")


def _batch(rng, encoder, B=6):
    x = rng.uniform(0.0, 1.0, size=(B, encoder.d_image))  # (B, D_img)
    y = rng.integers(0, encoder.n_classes, B)
    y_neg = (y + rng.integers(1, encoder.n_classes, B)) % encoder.n_classes
    return x, y, y_neg


# --- the layer functions ---

@pytest.mark.parametrize("labels", ["icp", "overlay"])
@pytest.mark.parametrize("norm", ["l2", "rms"])
@pytest.mark.parametrize("kind", ["sum", "mean"])
def test_first_layer_forward_and_weight_grad_equal_the_reference(rng, labels, norm, kind):
    """Split product and normalisation after it: h, G and n; then dW and db through the class
    table: all equal ff_layer_forward / ff_layer_backward on the encoded inputs."""
    encoder = _encoder(labels, rng)
    x, y, y_neg = _batch(rng, encoder)
    W = rng.standard_normal((7, encoder.d_in))
    b = rng.standard_normal(7) * 0.1
    codes = encoder.codes
    base = encoder.base(x)
    h, g, n = fused.first_layer_forward(np, base, [y, y_neg], W, b, codes,
                                        (codes * codes).sum(axis=1), encoder.base_cols, norm,
                                        kind, Workspace(np, "float64"))
    x_enc = np.concatenate([encoder.encode(x, y), encoder.encode(x, y_neg)])  # (2B, D_in)
    h_ref, cache = ff_layer_forward(x_enc, W, b, norm)
    np.testing.assert_allclose(h, h_ref, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(g, goodness(h_ref, kind), rtol=RTOL)
    np.testing.assert_allclose(n[:, 0], cache[0][1][:, 0], rtol=RTOL)
    dg = rng.standard_normal(12)  # any dL/dG
    _, dW_ref, db_ref = ff_layer_backward(goodness_backward(dg, h_ref, kind), cache)
    dz_coef = fused.dz_coefficients(np, dg[:6], dg[6:], kind, h.shape[1])
    dW = fused.first_layer_weight_grad(np, h, dz_coef[:, None] / n, base, y, y_neg, codes,
                                       encoder.base_cols, Workspace(np, "float64"))
    np.testing.assert_allclose(fused.bias_grad(dz_coef, h), db_ref, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(dW, dW_ref, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("norm", ["l2", "rms"])
@pytest.mark.parametrize("kind", ["sum", "mean"])
def test_hidden_layer_forward_and_weight_grad_equal_the_reference(rng, norm, kind):
    h_in = np.maximum(rng.standard_normal((10, 8)), 0)  # (2B, D_in), ReLU activities
    W, b = rng.standard_normal((5, 8)), rng.standard_normal(5) * 0.1
    row_sq_in = fused.row_sq_from_goodness(goodness(h_in, kind), kind, 8)
    h, g, n = fused.hidden_layer_forward(np, h_in, row_sq_in, W, b, norm, kind,
                                         np.empty((10, 5)))
    h_ref, cache = ff_layer_forward(h_in, W, b, norm)
    np.testing.assert_allclose(h, h_ref, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(g, goodness(h_ref, kind), rtol=RTOL)
    dg = rng.standard_normal(10)
    _, dW_ref, db_ref = ff_layer_backward(goodness_backward(dg, h_ref, kind), cache)
    dz_coef = fused.dz_coefficients(np, dg[:5], dg[5:], kind, 5)
    dW = fused.hidden_layer_weight_grad(np, h, dz_coef[:, None] / n, h_in,
                                        Workspace(np, "float64"))
    np.testing.assert_allclose(fused.bias_grad(dz_coef, h), db_ref, rtol=RTOL, atol=1e-14)
    np.testing.assert_allclose(dW, dW_ref, rtol=1e-10, atol=1e-14)


# --- what FFNet reports ---

@pytest.mark.parametrize("algo", ["symba", "ff"])
@pytest.mark.parametrize("kind", ["sum", "mean"])
def test_step_statistics_are_the_loss_and_the_mean_gradient_per_pair(rng, algo, kind):
    """train_step's statistics, by name: each layer's loss, and the mean over the B pairs
    of |dL_i/dG_pos,i| and |dL_i/dG_neg,i| for pair i's own loss (reduction "none"),
    from the explicit layers on encoded inputs."""
    encoder = _encoder("icp", rng)
    net = FFNet(encoder, (7, 5), np, rng, algo=algo, goodness_kind=kind, optimizer="sgd",
                lr=0.0, dtype="float64")
    x, y, y_neg = _batch(rng, encoder)
    loss_fn, grad_fn = LOSSES[algo]
    stats = net.train_step(x, y, y_neg)  # (L, len(STEP_STATS))
    assert stats.shape == (2, len(STEP_STATS))
    h = np.concatenate([encoder.encode(x, y), encoder.encode(x, y_neg)])  # (2B, D_in)
    for l in range(net.n_layers):
        h, _ = ff_layer_forward(h, net.W[l], net.b[l], net.norm)
        g = goodness(h, kind)
        per_pair = grad_fn(g[:6], g[6:], **net.loss_params, reduction="none")  # (B,), (B,)
        want = {"loss": loss_fn(g[:6], g[6:], **net.loss_params),
                "mean_abs_dg_pos": np.abs(per_pair[0]).mean(),
                "mean_abs_dg_neg": np.abs(per_pair[1]).mean()}
        for field, value in want.items():
            np.testing.assert_allclose(stats[l, STEP_STATS.index(field)], value, rtol=RTOL,
                                       err_msg=f"layer {l + 1} {field}")


def test_skip_first_layer_leaves_layer_1_out_of_the_prediction(rng):
    """With skip_first_layer the summed goodness is that of layers 2..L only, and the
    prediction is its argmax; without it every layer counts."""
    encoder = _encoder("overlay", rng)
    nets = [FFNet(encoder, (9, 7, 5), np, np.random.default_rng(3), skip_first_layer=skip,
                  dtype="float64") for skip in (False, True)]
    x = rng.uniform(0.0, 1.0, size=(40, encoder.d_image))
    per_layer = nets[0].goodness_per_label(x, per_layer=True)  # (L, N, C)
    assert np.all(per_layer[0].sum(axis=1) > 0)  # layer 1 has something to leave out
    for net, counted in zip(nets, (per_layer, per_layer[1:])):
        np.testing.assert_allclose(net.goodness_per_label(x), counted.sum(axis=0), rtol=RTOL)
        np.testing.assert_array_equal(net.predict(x), counted.sum(axis=0).argmax(axis=1))
    assert not np.array_equal(nets[0].predict(x), nets[1].predict(x))  # it matters here
