"""Overlay and intrinsic class patterns; negative labels."""
import numpy as np
import pytest

from ffnumpy.labels import (
    icp_encoder,
    icp_patterns,
    make_encoder,
    sample_negative_labels,
)


def test_icp_shape_rate_and_values():
    patterns = icp_patterns(10, 784, 0.1, np.random.default_rng(0))
    assert patterns.shape == (10, 784)
    assert set(np.unique(patterns)) == {0.0, 1.0}
    # 7840 Bernoulli(0.1) draws: mean 0.1, standard error 0.0034
    assert abs(patterns.mean() - 0.1) < 0.015
    assert len({p.tobytes() for p in patterns}) == 10  # one distinct pattern per class


@pytest.mark.parametrize("rate", [0.3, 0.8])
def test_icp_rate_is_respected(rate):
    patterns = icp_patterns(10, 784, rate, np.random.default_rng(1))
    assert abs(patterns.mean() - rate) < 0.03


def test_icp_is_deterministic_under_a_seed():
    a = icp_patterns(10, 100, 0.1, np.random.default_rng(7))
    b = icp_patterns(10, 100, 0.1, np.random.default_rng(7))
    c = icp_patterns(10, 100, 0.1, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("rate", [0.0, -0.1, 1.5])
def test_icp_rejects_bad_rates(rate):
    with pytest.raises(ValueError, match="ICP rate"):
        icp_patterns(10, 100, rate, np.random.default_rng(0))


def test_icp_encoding_is_image_then_pattern():
    rng = np.random.default_rng(0)
    enc = icp_encoder(10, 784, 784, 0.1, rng)
    x = rng.random((3, 784)).astype(np.float32)
    y = np.array([4, 0, 9])
    encoded = enc.encode(x, y)
    assert encoded.shape == (3, 1568)
    np.testing.assert_array_equal(encoded[:, :784], x)  # nothing of the image is lost
    np.testing.assert_array_equal(encoded[:, 784:], enc.codes[y, 784:])


def test_overlay_replaces_the_first_c_pixels():
    enc = make_encoder("overlay", 10, (1, 28, 28), 0.1, np.random.default_rng(0))
    x = np.full((2, 784), 0.5, dtype=np.float32)
    encoded = enc.encode(x, np.array([3, 7]))
    assert encoded.shape == (2, 784)
    np.testing.assert_array_equal(encoded[0, :10], np.eye(10)[3])
    np.testing.assert_array_equal(encoded[1, :10], np.eye(10)[7])
    np.testing.assert_array_equal(encoded[:, 10:], 0.5)
    np.testing.assert_array_equal(x, 0.5)  # the caller's images are untouched


@pytest.mark.parametrize("n_classes", [2, 10, 100])
def test_negatives_are_never_the_true_label_and_cover_all_others(n_classes):
    rng = np.random.default_rng(0)
    y = rng.integers(0, n_classes, size=200_000)
    y_neg = sample_negative_labels(y, n_classes, rng)
    assert np.all(y_neg != y)
    assert y_neg.min() >= 0 and y_neg.max() < n_classes
    # given the true label 0, every wrong label is about equally likely
    counts = np.bincount(y_neg[y == 0], minlength=n_classes)[1:]
    expected = (y == 0).sum() / (n_classes - 1)
    assert np.all(np.abs(counts - expected) < 6 * np.sqrt(expected))


def test_hard_negatives_are_wrong_and_follow_the_scores(rng):
    from ffnumpy.labels import sample_hard_negative_labels

    n, c = 20000, 5
    y = rng.integers(0, c, size=n)
    scores = np.tile(np.log(np.array([1.0, 2.0, 3.0, 4.0, 10.0])), (n, 1))  # softmax ∝ 1:2:3:4:10
    neg = sample_hard_negative_labels(scores, y, rng)
    assert (neg != y).all() and neg.min() >= 0 and neg.max() < c
    rows = y == 4  # true label 4: the others in proportion 1:2:3:4
    freq = np.bincount(neg[rows], minlength=c)[:4] / rows.sum()
    np.testing.assert_allclose(freq, np.array([1, 2, 3, 4]) / 10, atol=0.02)
    rows = y == 0  # label 4 dominates: 10 / (2 + 3 + 4 + 10)
    assert abs((neg[rows] == 4).mean() - 10 / 19) < 0.03


def test_hard_negatives_survive_huge_gaps(rng):
    from ffnumpy.labels import sample_hard_negative_labels

    y = np.array([0, 1, 2])
    scores = np.array([[1e4, 0, 0], [0, 1e4, 0], [5.0, 5.0, 1e4]])
    for _ in range(20):
        neg = sample_hard_negative_labels(scores, y, rng)
        assert (neg != y).all()
