"""The paper's CIFAR augmentation (Sec. 4): random crop after zero padding, horizontal flip.

Vectorised over the batch on the host, with no per-image Python loop: the crop and
the flip are one gather along the rows and one along the columns of the padded
images. The random draws for a whole epoch are made at its start from the epoch's
generator (:func:`draw`), so an interrupted run resumes with the same augmentation.
"""
from dataclasses import dataclass

import numpy as np

PAD = 4  # pixels of zero padding on each side before the crop, as is usual for CIFAR


@dataclass
class Augmentation:
    """One epoch's draws, one row per training image (in the order of the epoch).

    Attributes
    ----------
    dy, dx : integer arrays of shape (N,)
        Crop offsets in [0, 2 * pad] inside the padded image.
    flip : bool array of shape (N,)
        Mirror the crop left to right.
    pad : int
    """

    dy: np.ndarray
    dx: np.ndarray
    flip: np.ndarray
    pad: int = PAD

    def __getitem__(self, index):
        return Augmentation(self.dy[index], self.dx[index], self.flip[index], self.pad)


def draw(n, rng, crop=True, flip=True, pad=PAD):
    """Draw crop offsets and flips for ``n`` images from ``rng``.

    ``crop=False`` gives offsets ``pad`` (the centre, the image unchanged) and
    ``flip=False`` no flips; the draws are made either way, so switching one part off
    does not change the other's random numbers.
    """
    dy = rng.integers(0, 2 * pad + 1, size=n)
    dx = rng.integers(0, 2 * pad + 1, size=n)
    mirror = rng.random(n) < 0.5
    if not crop:
        dy = dx = np.full(n, pad)
    if not flip:
        mirror = np.zeros(n, dtype=bool)
    return Augmentation(dy, dx, mirror, pad)


def apply(x, image_shape, aug):
    """Crop and flip a batch of flattened images.

    Parameters
    ----------
    x : numpy array of shape (B, C*H*W)
    image_shape : tuple (C, H, W)
    aug : Augmentation with B rows

    Returns
    -------
    numpy array of shape (B, C*H*W), same dtype
    """
    C, H, W = image_shape
    B, p = x.shape[0], aug.pad
    padded = np.zeros((B, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
    padded[:, :, p:p + H, p:p + W] = x.reshape(B, C, H, W)
    rows = aug.dy[:, None] + np.arange(H)  # (B, H)
    cols = np.where(aug.flip[:, None], np.arange(W)[::-1], np.arange(W)) + aug.dx[:, None]
    out = np.take_along_axis(padded, rows[:, None, :, None], axis=2)  # (B, C, H, W + 2p)
    out = np.take_along_axis(out, cols[:, None, None, :], axis=3)  # (B, C, H, W)
    return out.reshape(B, C * H * W)
