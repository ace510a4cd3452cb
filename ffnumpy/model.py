r"""FF and SymBa networks: a stack of FF layers, each trained by its own loss.

Every minibatch updates every layer. Layer l receives the activities of layer l-1
computed in the same forward pass, as plain numbers: no gradient crosses between
layers. Positive and negative samples are stacked into one (2B, D) array so that
each layer does one matrix product for both.

:class:`FFNet` holds the network (weights, optimisers, label encoder) and its
:meth:`FFNet.train_step` is notebook 03's loop: per layer, forward, loss and gradient,
backward, optimiser step, next layer's input. The layer arithmetic is the fast path of
:mod:`ffnumpy.fused` (the first layer's product split into an image part and a label
table, the normalisation applied to the product, work buffers and row blocks), which
the tests prove equal to :func:`ffnumpy.layers.ff_layer_forward` /
``ff_layer_backward`` on explicitly encoded inputs, in float64.
"""
from . import fused
from .backend import Workspace, take_rows
from .layers import init_linear
from .losses import LOSSES
from .optim import make_optimizer

# Activities per prediction chunk (candidate labels x images x the widest layer): each of
# the two activation buffers holds at most this many floats (64 MiB in float32), whatever
# the width or the number of classes. Measured on MNIST 2 x 500: 2^24 predicts about 2%
# faster than 2^23 (larger products, fewer calls).
PREDICT_ELEMENTS = 1 << 24

# The per-layer statistics of a training step, in the column order of train_step's array;
# the names are the keys of an epoch's record in metrics.json.
STEP_STATS = ("loss", "mean_abs_dg_pos", "mean_abs_dg_neg")


def step_stats(xp, loss, dg_pos, dg_neg):
    r"""One layer's row of :meth:`FFNet.train_step`'s statistics, in :data:`STEP_STATS` order.

    The loss, and the mean over the B pairs of :math:`|\partial L_i/\partial G_{pos,i}|`
    and :math:`|\partial L_i/\partial G_{neg,i}|` (the quantities of Eqs. 6-7), with
    :math:`L_i` pair i's own loss. The batch loss is the mean of the :math:`L_i`, so its
    gradients ``dg_pos``, ``dg_neg`` are those over B, and their absolute sum is that mean.

    Returns
    -------
    array of shape (len(STEP_STATS),)
    """
    return xp.stack([loss, xp.abs(dg_pos).sum(), xp.abs(dg_neg).sum()])


class FFNet:
    """A Forward-Forward network trained with the FF loss or the SymBa loss.

    Parameters
    ----------
    encoder : ffnumpy.labels.LabelEncoder
    widths : sequence of int
        Units per layer, e.g. (500, 500).
    xp : module
        numpy or cupy.
    rng : numpy.random.Generator
        Draws the initial weights (on the host).
    algo : {"symba", "ff"}
    goodness_kind : {"sum", "mean"}
    norm : {"l2", "rms"}
    theta, alpha : float
        FF threshold, SymBa scale.
    optimizer, lr : str, float
    skip_first_layer : bool
        Leave layer 1 out of the goodness summed at prediction (Hinton's reference code).
    dtype : str
    """

    def __init__(self, encoder, widths, xp, rng, algo="symba", goodness_kind="sum",
                 norm="l2", theta=2.0, alpha=4.0, optimizer="adam", lr=0.001,
                 skip_first_layer=False, dtype="float32"):
        if algo not in LOSSES:
            raise ValueError(f"FFNet algo must be one of {tuple(LOSSES)}, got {algo!r}")
        self.xp, self.dtype = xp, dtype
        self.algo, self.goodness_kind, self.norm = algo, goodness_kind, norm
        self.loss_params = {"theta": theta} if algo == "ff" else {"alpha": alpha}
        self.skip_first_layer = skip_first_layer
        self.input_stats = None  # an InputStats that predict applies (load_model sets it)
        self.workspace = Workspace(xp, dtype)  # per-step arrays, reused (see Workspace)
        self.set_encoder(encoder)
        d_ins = [encoder.d_in] + list(widths[:-1])
        self.W, self.b = [], []
        for d_in, d_out in zip(d_ins, widths):
            W, b = init_linear(d_in, d_out, rng, dtype)
            self.W.append(xp.asarray(W))
            self.b.append(xp.asarray(b))
        self.optimizers = [make_optimizer(optimizer, [W, b], lr) for W, b in zip(self.W, self.b)]

    def set_encoder(self, encoder):
        """Use ``encoder``'s label codes (e.g. the ICP patterns saved with a model)."""
        self.encoder = encoder
        self.codes = self.xp.asarray(encoder.codes, dtype=self.dtype)  # (C, D_in)
        self.code_sq = (self.codes * self.codes).sum(axis=1)  # (C,)

    @property
    def n_layers(self):
        return len(self.W)

    def params(self):
        """All parameter arrays in a fixed order: W1, b1, W2, b2, ..."""
        return [p for pair in zip(self.W, self.b) for p in pair]

    # --- one layer, forward and backward (the fast path: ffnumpy.fused) ---

    def _layer_forward(self, l, h_in, g_in, base, labels):
        """Layer ``l``'s activities h (K*B, D_l), goodness g (K*B,) and normalising lengths
        n (K*B, 1): layer 1 from the image part ``base`` paired with each label assignment
        in ``labels`` (:func:`fused.first_layer_forward`), a later layer from the layer
        below's activities ``h_in`` and goodness ``g_in`` (:func:`fused.hidden_layer_forward`).
        """
        if l == 0:
            return fused.first_layer_forward(
                self.xp, base, labels, self.W[0], self.b[0], self.codes, self.code_sq,
                self.encoder.base_cols, self.norm, self.goodness_kind, self.workspace)
        row_sq_in = fused.row_sq_from_goodness(g_in, self.goodness_kind, h_in.shape[1])
        out = self.workspace.get(fused.activity_buffer(l), (h_in.shape[0], self.W[l].shape[0]))
        return fused.hidden_layer_forward(self.xp, h_in, row_sq_in, self.W[l], self.b[l],
                                          self.norm, self.goodness_kind, out)

    def _layer_backward(self, l, h, n, dg_pos, dg_neg, h_in, base, labels):
        """Layer ``l``'s dW and db from dL/dG of its positive and negative rows; the other
        inputs are those of :meth:`_layer_forward` (``labels``: [y, y_neg])."""
        if l == 0:
            return fused.first_layer_backward(
                self.xp, h, n, dg_pos, dg_neg, self.goodness_kind, base, *labels, self.codes,
                self.encoder.base_cols, self.workspace)
        return fused.hidden_layer_backward(self.xp, h, n, dg_pos, dg_neg, self.goodness_kind,
                                           h_in, self.workspace)

    # --- training ---

    def train_step(self, x, y, y_neg):
        """One update of every layer from its own loss on a minibatch (notebook 03's loop).

        Parameters
        ----------
        x : array of shape (B, D_img)
            Images (without labels).
        y, y_neg : integer arrays of shape (B,)
            True labels (positives) and wrong labels (negatives), on the device.

        Returns
        -------
        stats : array of shape (L, len(STEP_STATS)), on the device
            Per layer, the fields of :data:`STEP_STATS` in that order (:func:`step_stats`).
            Not synchronised: read only when logging.
        """
        B, labels = x.shape[0], [y, y_neg]  # rows :B positives, rows B: negatives
        loss_fn, grad_fn = LOSSES[self.algo]
        base = self.encoder.base(x)  # (B, D_img): the image part of every encoded input
        h_in = g_in = None
        stats = []
        for l in range(self.n_layers):
            h, g, n = self._layer_forward(l, h_in, g_in, base, labels)  # (2B, D_l), (2B,), (2B, 1)
            loss = loss_fn(g[:B], g[B:], **self.loss_params)  # Eq. (3) or (11)
            dg_pos, dg_neg = grad_fn(g[:B], g[B:], **self.loss_params)  # (B,), (B,)
            dW, db = self._layer_backward(l, h, n, dg_pos, dg_neg, h_in, base, labels)
            self.optimizers[l].step([dW, db])
            stats.append(step_stats(self.xp, loss, dg_pos, dg_neg))
            h_in, g_in = h, g  # the next layer's input, as plain numbers
        return self.xp.stack(stats)  # (L, len(STEP_STATS))

    # --- prediction ---

    def goodness_per_label(self, x, per_layer=False):
        """Goodness of every image paired with every label.

        Parameters
        ----------
        x : array of shape (N, D_img)
        per_layer : bool
            Return each layer's goodness separately instead of the sum.

        Returns
        -------
        array of shape (N, C), the goodness summed over the counted layers, or of
        shape (L, N, C) with ``per_layer``.
        """
        out, _ = self.goodness_and_dead_fraction(x)  # (L, N, C)
        return out if per_layer else self.sum_layers(out)

    def goodness_and_dead_fraction(self, x, y=None):
        """Per-layer goodness of every image with every label, and the dead ReLUs, in one pass.

        A unit that never fires on positive data gets no gradient (dL/dh = 2 dL/dG h is 0
        where h is 0), so it stays dead. Its fraction per layer is read from the rows of
        the same pass that pair each image with its true label (no second pass).

        Parameters
        ----------
        x : array of shape (N, D_img)
        y : integer array of shape (N,), optional
            True labels; without them only the goodness is computed.

        Returns
        -------
        goodness : array of shape (L, N, C)
            As :meth:`goodness_per_label` with ``per_layer``.
        dead : array of shape (L,), or None without ``y``
            Per layer, the fraction of units silent on every image of ``x`` paired with
            its label.
        """
        xp, C = self.xp, self.encoder.n_classes
        every_label, chunk = list(range(C)), self.prediction_chunk(C)
        out = xp.zeros((self.n_layers, x.shape[0], C), dtype=self.dtype)  # (L, N, C)
        active = [xp.zeros(w.shape[0], dtype=bool) for w in self.W]  # (D_l,) per layer
        for start in range(0, x.shape[0], chunk):
            base = self.encoder.base(x[start:start + chunk])  # (B, D_img)
            B = base.shape[0]
            if y is not None:  # image i with its own label c is row c*B + i
                yb = xp.asarray(y[start:start + B], dtype=xp.int64)  # (B,)
                true_rows = yb * B + xp.arange(B)  # (B,)
            h = g = None
            for l in range(self.n_layers):  # every image with every candidate label
                # h: (C*B, D_l) in a work buffer that layer l+2 overwrites, so used now
                h, g, _ = self._layer_forward(l, h, g, base, every_label)
                out[l, start:start + B] = g.reshape(C, B).T  # (B, C)
                if y is not None:
                    h_true = self.workspace.get("h_true", (B, h.shape[1]))  # (B, D_l)
                    take_rows(h, true_rows, out=h_true)
                    active[l] |= h_true.max(axis=0) > 0  # (D_l,)
        dead = None if y is None else xp.stack([1.0 - a.mean() for a in active])  # (L,)
        return out, dead

    def prediction_chunk(self, n_labels):
        """Images per chunk when each is paired with ``n_labels`` labels (see PREDICT_ELEMENTS)."""
        return max(1, PREDICT_ELEMENTS // (n_labels * max(w.shape[0] for w in self.W)))

    def sum_layers(self, per_layer):
        """Sum (L, N, C) per-layer goodness over the layers that count at prediction."""
        first = 1 if self.skip_first_layer and self.n_layers > 1 else 0
        return per_layer[first:].sum(axis=0)  # (N, C)

    def predict(self, x):
        """Label with the highest summed goodness, argmax_y G(x, y) (paper Sec. 3.3). Shape (N,).

        ``x`` holds raw images (N, D_img) in [0, 1]; a model trained with ``--standardize``
        and loaded by :func:`ffnumpy.saving.load_model` standardises them first with its
        saved statistics (``input_stats``).
        """
        if self.input_stats is not None:
            x = self.input_stats.apply(x)  # (N, D_img), as training standardised
        return self.goodness_per_label(x).argmax(axis=1)

