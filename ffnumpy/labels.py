r"""Putting the label into the input: one-hot overlay (FF) or intrinsic class patterns (SymBa).

Both encodings write the label into input positions that the image does not use
(overlay first blanks them), so every encoded input splits into two parts with
disjoint support,

.. math:: x_c = \text{base}(x) + \text{code}_c ,

an image part shared by all C candidate labels and a per-class code. Two consequences
make training and prediction cheap: the first layer's product splits,
:math:`W x_c = W\,\text{base}(x) + W \text{code}_c`, and so does the squared length
that normalisation needs, :math:`\lVert x_c\rVert^2 = \lVert\text{base}(x)\rVert^2 +
\lVert\text{code}_c\rVert^2`. See :mod:`ffnumpy.fused` and notebook 08.
"""
import numpy as np

LABEL_KINDS = ("icp", "overlay")


class LabelEncoder:
    """Encodes (image, label) pairs as one input vector.

    Attributes
    ----------
    kind : {"icp", "overlay"}
    n_classes : int
        C.
    d_image : int
        Pixels per image, D_img (channels x height x width).
    d_in : int
        Width of an encoded input, D_in.
    codes : numpy array of shape (C, D_in)
        Row c is the label part of every input labelled c (zero where the base lives).
    base_cols : slice
        The input columns that the image part occupies.
    """

    def __init__(self, kind, codes, d_image, base_cols, blank):
        self.kind = kind
        self.codes = codes
        self.n_classes, self.d_in = codes.shape
        self.d_image = d_image
        self.base_cols = base_cols
        self.blank = blank  # image pixels zeroed by the encoding (overlay's first C pixels)

    def base(self, x):
        """The image part of the encoding, over columns ``base_cols``.

        Parameters
        ----------
        x : array of shape (B, D_img)

        Returns
        -------
        array of shape (B, D_img): ``x`` itself for ICP; for overlay a copy with the
        first C pixels set to 0.
        """
        if self.blank == 0:
            return x
        x = x.copy()
        x[:, : self.blank] = 0
        return x

    def encode(self, x, y, xp=np):
        """Full encoded inputs: base(x) placed at ``base_cols`` plus code[y].

        Only for illustration, tests and notebooks; training and prediction never
        build these (they use the split product).

        Parameters
        ----------
        x : array of shape (B, D_img)
        y : integer array of shape (B,)

        Returns
        -------
        array of shape (B, D_in)
        """
        codes = xp.asarray(self.codes, dtype=x.dtype)
        out = codes[y]  # (B, D_in), a copy
        out[:, self.base_cols] += self.base(x)
        return out

    @classmethod
    def from_state(cls, kind, codes, d_image):
        codes = np.asarray(codes)
        n_classes = codes.shape[0]
        if kind == "overlay":
            return cls(kind, codes, d_image, slice(0, d_image), blank=n_classes)
        return cls(kind, codes, d_image, slice(0, d_image), blank=0)


def overlay_encoder(n_classes, d_image, dtype="float32"):
    """Hinton's FF labels: the first C pixels are replaced by a one-hot of the label."""
    if n_classes > d_image:
        raise ValueError(f"overlay needs at least C={n_classes} pixels, the image has {d_image}")
    codes = np.zeros((n_classes, d_image), dtype=dtype)  # (C, D_img)
    codes[np.arange(n_classes), np.arange(n_classes)] = 1
    return LabelEncoder("overlay", codes, d_image, slice(0, d_image), blank=n_classes)


def icp_patterns(n_classes, pattern_size, rate, rng, dtype="float32"):
    """Intrinsic class patterns, SymBa (arXiv:2303.08418v1) Sec. 3.3 and Fig. 4.

    One fixed random binary pattern per class, each pixel 1 with probability ``rate``.

    Parameters
    ----------
    n_classes : int
    pattern_size : int
        Pixels per pattern (H*W for one pattern channel).
    rate : float in (0, 1]
        The ICP rate (paper: 0.1).
    rng : numpy.random.Generator

    Returns
    -------
    numpy array of shape (C, pattern_size) with entries 0 and 1
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"ICP rate must be in (0, 1], got {rate}")
    return (rng.random((n_classes, pattern_size)) < rate).astype(dtype)  # (C, P)


def icp_encoder(n_classes, d_image, pattern_size, rate, rng, dtype="float32"):
    """SymBa's labels: a class pattern concatenated to the image as extra channel(s).

    Notes
    -----
    The paper concatenates the pattern "to input channels"; for a fully connected
    network that is a concatenation of the flattened image and the flattened pattern.
    ``pattern_size`` is H*W for one extra channel (the default for every dataset).
    """
    patterns = icp_patterns(n_classes, pattern_size, rate, rng, dtype)  # (C, P)
    codes = np.zeros((n_classes, d_image + pattern_size), dtype=dtype)  # (C, D_img + P)
    codes[:, d_image:] = patterns
    return LabelEncoder("icp", codes, d_image, slice(0, d_image), blank=0)


PAPER_LABELS = {"bp": None, "ff": "overlay", "symba": "icp"}  # paper Tables 1-2; BP takes none


def make_encoder(kind, n_classes, image_shape, icp_rate, rng, dtype="float32",
                 per_channel=False):
    """Build the label encoder ``kind`` for images of shape (channels, H, W).

    ICP adds one H x W pattern channel, or with ``per_channel`` one per image channel.
    Overlay writes the one-hot into the first C pixel positions (for C = 100 on a
    32 x 32 x 3 image: 100 of 3072 inputs, the paper's 9.77% of a 1024-pixel plane).
    """
    channels, height, width = image_shape
    d_image = channels * height * width
    if kind == "overlay":
        return overlay_encoder(n_classes, d_image, dtype)
    if kind == "icp":
        pattern_size = height * width * (channels if per_channel else 1)
        return icp_encoder(n_classes, d_image, pattern_size, icp_rate, rng, dtype)
    raise ValueError(f"labels must be one of {LABEL_KINDS}, got {kind!r}")


def sample_negative_labels(y, n_classes, rng):
    """A uniformly drawn wrong label for each true label, never the true one.

    ``(y + k) mod C`` with k uniform on {1, ..., C-1} is uniform over the C-1 wrong labels.

    Parameters
    ----------
    y : numpy integer array of shape (B,)
    n_classes : int
    rng : numpy.random.Generator

    Returns
    -------
    numpy integer array of shape (B,)
    """
    return (y + rng.integers(1, n_classes, size=y.shape)) % n_classes


def sample_hard_negative_labels(scores, y, rng):
    """A wrong label for each row, drawn with probability softmax(scores) over the wrong ones.

    Hinton's reference code makes its negatives this way: labels the model already
    confuses with the true one are drawn most often.

    Parameters
    ----------
    scores : numpy array of shape (N, C)
        The model's goodness of each image with each label.
    y : numpy integer array of shape (N,)
        True labels; never drawn.
    rng : numpy.random.Generator

    Returns
    -------
    numpy integer array of shape (N,)
    """
    n, c = scores.shape
    rows = np.arange(n)
    p = np.exp(scores - scores.max(axis=1, keepdims=True), dtype=np.float64)  # (N, C)
    p[rows, y] = 0.0
    total = p.sum(axis=1, keepdims=True)  # (N, 1)
    uniform = np.ones_like(p)
    uniform[rows, y] = 0.0
    p = np.where(total > 0, p, uniform)  # every wrong label underflowed: uniform
    cum = p.cumsum(axis=1)  # (N, C), flat across the true label
    target = (1.0 - rng.random(n))[:, None] * cum[:, -1:]  # in (0, total]
    return np.minimum((cum < target).sum(axis=1), c - 1)
