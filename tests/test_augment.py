"""The CIFAR augmentation: shapes, determinism, and that crop and flip move the right pixels."""
import numpy as np

from ffnumpy import augment


def _images(rng, n=5, shape=(3, 8, 6)):
    return rng.random((n, int(np.prod(shape)))).astype(np.float32), shape


def test_shapes_and_dtype(rng):
    x, shape = _images(rng)
    out = augment.apply(x, shape, augment.draw(x.shape[0], rng))
    assert out.shape == x.shape and out.dtype == x.dtype


def test_same_seed_same_draws():
    a = augment.draw(100, np.random.default_rng([3, 7]))
    b = augment.draw(100, np.random.default_rng([3, 7]))
    for name in ("dy", "dx", "flip"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert 0 <= a.dy.min() and a.dy.max() <= 2 * augment.PAD and 0 < a.flip.mean() < 1


def test_centre_crop_without_flip_is_the_identity(rng):
    x, shape = _images(rng)
    aug = augment.draw(x.shape[0], rng, crop=False, flip=False)
    np.testing.assert_array_equal(augment.apply(x, shape, aug), x)


def test_flip_mirrors_every_row_of_every_channel(rng):
    x, shape = _images(rng)
    aug = augment.draw(x.shape[0], rng, crop=False)
    aug.flip[:] = [True, False, True, False, True]
    out = augment.apply(x, shape, aug).reshape(-1, *shape)
    images = x.reshape(-1, *shape)
    np.testing.assert_array_equal(out[0], images[0][:, :, ::-1])
    np.testing.assert_array_equal(out[1], images[1])


def test_crop_shifts_and_pads_with_zeros(rng):
    x, shape = _images(rng, n=1)
    aug = augment.Augmentation(dy=np.array([augment.PAD + 2]), dx=np.array([augment.PAD - 3]),
                               flip=np.array([False]))
    out = augment.apply(x, shape, aug).reshape(shape)
    image = x.reshape(shape)
    # output pixel (i, j) is input pixel (i + 2, j - 3), zero where that falls outside
    np.testing.assert_array_equal(out[:, :-2, 3:], image[:, 2:, :-3])
    assert (out[:, -2:, :] == 0).all() and (out[:, :, :3] == 0).all()


def test_switching_crop_off_keeps_the_flips():
    a = augment.draw(50, np.random.default_rng(0))
    b = augment.draw(50, np.random.default_rng(0), crop=False)
    np.testing.assert_array_equal(a.flip, b.flip)
    assert (b.dy == augment.PAD).all()
