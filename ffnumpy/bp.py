r"""The backprop baseline: a ReLU MLP with a softmax output and cross-entropy.

The same hidden widths as the FF networks, plus a linear output layer of C units.
The backward pass through all layers is written by hand from the pieces of
:mod:`ffnumpy.layers`; the images enter as they are (no label in the input, no
normalisation), as in the paper's BP rows (Table 1, "Labeling Method: None").
"""
from .backend import xp_of
from .layers import (
    init_linear,
    linear_backward,
    linear_forward,
    relu_backward,
    relu_forward,
)
from .optim import make_optimizer

# --- softmax cross-entropy ---

def softmax_cross_entropy(logits, y):
    r"""Mean cross-entropy of a softmax over ``logits`` against labels ``y``.

    .. math:: L = \frac{1}{B}\sum_i \Big(\log \sum_c e^{z_{ic}} - z_{i y_i}\Big)

    Stable: the row maximum is subtracted before exponentiating.

    Parameters
    ----------
    logits : array of shape (B, C)
    y : integer array of shape (B,)

    Returns
    -------
    loss : scalar array
    """
    xp = xp_of(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)  # (B, C), every entry <= 0
    log_z = xp.log(xp.exp(shifted).sum(axis=1))  # (B,)
    picked = shifted[xp.arange(y.shape[0]), y]  # (B,)
    return (log_z - picked).mean()


def softmax_cross_entropy_grad(logits, y):
    r"""Gradient of :func:`softmax_cross_entropy` with respect to the logits.

    .. math:: \frac{\partial L}{\partial z_{ic}} = \frac{1}{B}\big(\mathrm{softmax}(z_i)_c
              - [c = y_i]\big)

    Returns
    -------
    dlogits : array of shape (B, C)
    """
    xp = xp_of(logits)
    shifted = logits - logits.max(axis=1, keepdims=True)  # (B, C)
    p = xp.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)  # (B, C), softmax
    p[xp.arange(y.shape[0]), y] -= 1.0
    return p / logits.shape[0]


# --- the whole network, forward and backward ---

def mlp_forward(x, W, b):
    """Forward pass: ReLU after every layer but the last, which gives the logits.

    Parameters
    ----------
    x : array of shape (B, D_in)
    W, b : lists of L arrays, W[l] of shape (D_l, D_l-1), b[l] of shape (D_l,)

    Returns
    -------
    logits : array of shape (B, C)
    caches : list of per-layer caches for :func:`mlp_backward`
    """
    caches = []
    h = x
    for l in range(len(W)):
        z, lin_cache = linear_forward(h, W[l], b[l])  # (B, D_l)
        if l < len(W) - 1:
            h, relu_cache = relu_forward(z)
        else:
            h, relu_cache = z, None
        caches.append((lin_cache, relu_cache))
    return h, caches


def mlp_backward(dlogits, caches):
    r"""Backward pass through every layer, output to input (the chain rule by hand).

    For layer l with :math:`h_l = \mathrm{ReLU}(h_{l-1} W_l^\top + b_l)`:
    :math:`dz_l = dh_l \cdot [z_l > 0]`, :math:`dW_l = dz_l^\top h_{l-1}`,
    :math:`db_l = \sum dz_l`, and :math:`dh_{l-1} = dz_l W_l`.

    Returns
    -------
    dW, db : lists of arrays, the shapes of W and b
    """
    L = len(caches)
    dW, db = [None] * L, [None] * L
    dh = dlogits
    for l in reversed(range(L)):
        lin_cache, relu_cache = caches[l]
        dz = dh if relu_cache is None else relu_backward(dh, relu_cache)
        dh, dW[l], db[l] = linear_backward(dz, lin_cache, need_dx=l > 0)
    return dW, db


class BPNet:
    """ReLU MLP trained end to end by backpropagation (the paper's BP baseline).

    Parameters
    ----------
    d_in : int
    widths : sequence of int
        Hidden units per layer.
    n_classes : int
    xp : module
    rng : numpy.random.Generator
    optimizer, lr : str, float
    dtype : str
    """

    def __init__(self, d_in, widths, n_classes, xp, rng, optimizer="adam", lr=0.001,
                 dtype="float32"):
        self.xp, self.dtype = xp, dtype
        dims = [d_in] + list(widths) + [n_classes]
        self.W, self.b = [], []
        for d_prev, d_out in zip(dims[:-1], dims[1:]):
            W, b = init_linear(d_prev, d_out, rng, dtype)
            self.W.append(xp.asarray(W))
            self.b.append(xp.asarray(b))
        self.optimizers = [make_optimizer(optimizer, self.params(), lr)]  # one for all layers
        self.input_stats = None  # an InputStats that predict applies (load_model sets it)

    @property
    def n_layers(self):
        return len(self.W)

    def params(self):
        return [p for pair in zip(self.W, self.b) for p in pair]

    def train_step(self, x, y, y_neg=None):
        """One backprop update on a minibatch. Returns the loss as a (1, 1) device array.

        ``y_neg`` is accepted and ignored (backprop has no negatives), so every model
        shares :meth:`ffnumpy.model.FFNet.train_step`'s signature.
        """
        logits, caches = mlp_forward(x, self.W, self.b)
        loss = softmax_cross_entropy(logits, y)
        dW, db = mlp_backward(softmax_cross_entropy_grad(logits, y), caches)
        self.optimizers[0].step([g for pair in zip(dW, db) for g in pair])
        return loss.reshape(1, 1)

    def logits(self, x, chunk=8192):
        """Logits for every row of ``x``, computed in chunks. Shape (N, C)."""
        xp = self.xp
        return xp.concatenate([mlp_forward(x[s:s + chunk], self.W, self.b)[0]
                               for s in range(0, x.shape[0], chunk)])

    def predict(self, x):
        """The softmax argmax for raw images ``x`` (N, D_img). Shape (N,).

        A model trained with ``--standardize`` and loaded by
        :func:`ffnumpy.saving.load_model` standardises ``x`` first with its saved
        statistics (``input_stats``, a :class:`ffnumpy.saving.InputStats`).
        """
        if self.input_stats is not None:
            x = self.input_stats.apply(x)  # (N, D_img), as training standardised
        return self.logits(x).argmax(axis=1)
