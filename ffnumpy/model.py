r"""FF and SymBa networks: a stack of FF layers, each trained by its own loss.

Every minibatch updates every layer. Layer l receives the activities of layer l-1
computed in the same forward pass, as plain numbers: no gradient crosses between
layers. Positive and negative samples are stacked into one (2B, D) array so that
each layer does one matrix product for both.

The first layer never builds the label-encoded input. With the split of
:mod:`ffnumpy.labels`, for an image x with label c and n_c the normalising length,

.. math:: z = \frac{W\,\text{base}(x) + W\,\text{code}_c}{n_c} + b, \qquad
          n_c = \sqrt{k(\lVert\text{base}(x)\rVert^2 + \lVert\text{code}_c\rVert^2) + \epsilon}

so the image product ``W base(x)`` is computed once per image and shared by its
positive and its negative (training) or by all C candidate labels (prediction); the
per-class products ``W code_c`` are a (C, D) table. The weight gradient splits the
same way. Tests prove this path equal to :func:`ffnumpy.layers.ff_layer_forward` /
``ff_layer_backward`` on explicitly encoded inputs.
"""
from .backend import take_rows
from .layers import NORM_EPS, init_linear, norm_scale
from .losses import LOSSES, goodness, goodness_backward_factor
from .optim import make_optimizer

# Rows of label-expanded activity (candidates x images) per prediction chunk:
# bounds prediction memory to PREDICT_ROWS x width floats per layer.
PREDICT_ROWS = 16384


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

    # --- one layer's pre-activation, with the normalisation folded in ---

    def _first_layer_z(self, base, labels):
        """Pre-activation of layer 1 for each image paired with each label in ``labels``.

        Parameters
        ----------
        base : array of shape (B, D_img)
            ``encoder.base(x)``.
        labels : list of K integer arrays of shape (B,)
            K label assignments (K=2 for positive and negative in training).

        Returns
        -------
        z : array of shape (K*B, D_1)
            Rows k*B .. (k+1)*B-1 hold the images paired with ``labels[k]``.
        n : array of shape (K*B, 1)
            Normalising lengths.
        """
        xp, W = self.xp, self.W[0]
        k = norm_scale(self.norm, self.encoder.d_in)
        z_base = base @ W[:, self.encoder.base_cols].T  # (B, D_1): shared by all K
        z_codes = self.codes @ W.T  # (C, D_1)
        base_sq = goodness(base, "sum")  # (B,), row sums of squares
        B = base.shape[0]
        z = xp.empty((len(labels) * B, W.shape[0]), dtype=z_base.dtype)  # (K*B, D_1)
        for i, y in enumerate(labels):  # rows i*B .. (i+1)*B-1, filled in place
            zi = z[i * B:(i + 1) * B]
            take_rows(z_codes, y, out=zi)
            zi += z_base
        sq = xp.concatenate([base_sq + self.code_sq[y] for y in labels])  # (K*B,)
        n = xp.sqrt(k * sq + NORM_EPS)[:, None]  # (K*B, 1)
        return self._scale_shift(z, n, 0), n

    def _hidden_layer_z(self, l, h_in, sq_in):
        """Pre-activation of layer l > 1 from the raw activities of layer l-1.

        ``x_hat W^T = (h W^T) / n``: the normalisation is applied to the (narrower or
        equal) product instead of the input, and n comes from ``sq_in``, the row sums of
        squares that layer l-1's goodness already computed. Returns z and n.
        """
        k = norm_scale(self.norm, h_in.shape[1])
        n = self.xp.sqrt(k * sq_in + NORM_EPS)[:, None]  # (K*B, 1)
        return self._scale_shift(h_in @ self.W[l].T, n, l), n  # (K*B, D_l)

    def _scale_shift(self, z, n, l):
        """z / n + b_l, in place: the normalisation applied after the product."""
        z /= n
        z += self.b[l]
        return z

    def _sum_sq(self, g, width):
        """Row sums of squares from a goodness: G itself for "sum", D*G for "mean"."""
        return g if self.goodness_kind == "sum" else g * width

    def _first_layer_dW(self, dz_s, base, labels):
        """dL/dW_1 from dz/n of the stacked rows of :meth:`_first_layer_z`.

        Since x_hat = (base + code_y) / n, dW = (dz/n)^T x_hat splits into
        (sum_k dz_k / n_k)^T base on the base columns plus M codes, where column c
        of M (D_1, C) sums dz/n over the rows whose label is c.
        """
        xp = self.xp
        B = base.shape[0]
        y = xp.concatenate(labels)  # (K*B,)
        onehot = (y[:, None] == xp.arange(self.encoder.n_classes)[None, :])  # (K*B, C)
        # (D_1, K*B) @ (K*B, C): BLAS is several times faster this way round than (C, K*B) @ ...
        M = dz_s.T @ onehot.astype(dz_s.dtype)  # (D_1, C)
        dW = M @ self.codes  # (D_1, D_in)
        dz_img = dz_s[:B] + dz_s[B:2 * B] if len(labels) > 1 else dz_s[:B].copy()  # (B, D_1)
        for k in range(2, len(labels)):
            dz_img += dz_s[k * B:(k + 1) * B]
        dW[:, self.encoder.base_cols] += dz_img.T @ base
        return dW

    # --- training ---

    def train_step(self, x, y, y_neg):
        """One update of every layer from its own loss on a minibatch.

        Parameters
        ----------
        x : array of shape (B, D_img)
            Images (without labels).
        y, y_neg : integer arrays of shape (B,)
            True labels (positives) and wrong labels (negatives), on the device.

        Returns
        -------
        stats : array of shape (L, 3), on the device
            Per layer: the loss, mean |dL/dG_pos| and mean |dL/dG_neg| per pair
            (the quantities of Eqs. 6-7). Not synchronised: read only when logging.
        """
        xp = self.xp
        B = x.shape[0]
        loss_fn, grad_fn = LOSSES[self.algo]
        stats = []
        base = self.encoder.base(x)  # (B, D_img)
        h_in = sq_in = None
        for l in range(self.n_layers):
            if l == 0:
                z, n = self._first_layer_z(base, [y, y_neg])  # (2B, D_1)
            else:
                z, n = self._hidden_layer_z(l, h_in, sq_in)  # (2B, D_l)
            h = xp.maximum(z, 0, out=z)  # (2B, D_l), ReLU in place
            g = goodness(h, self.goodness_kind)  # (2B,)
            g_pos, g_neg = g[:B], g[B:]
            loss = loss_fn(g_pos, g_neg, **self.loss_params)
            dg_pos, dg_neg = grad_fn(g_pos, g_neg, **self.loss_params)
            # dL/dz = dL/dh * [z > 0], and dL/dh = 2 dG h is already 0 wherever z <= 0,
            # so the ReLU mask is implicit (tests compare with ff_layer_backward).
            # dL/dz = dL/dG * dG/dh = (2 dG) h row by row (goodness_backward), so
            # db = sum_rows dL/dz is one vector-matrix product with h, and the scaled
            # dz/n that the weight gradient needs is a single pass over h.
            dg = xp.concatenate([dg_pos, dg_neg]) * goodness_backward_factor(
                self.goodness_kind, h.shape[1])  # (2B,)
            db = dg @ h  # (D_l,)
            dz = h * (dg[:, None] / n)  # (2B, D_l): dL/dz / n, the normalisation's share
            if l == 0:
                dW = self._first_layer_dW(dz, base, [y, y_neg])
            else:
                dW = dz.T @ h_in  # (D_l, D_l-1)
            stats.append(xp.stack([loss, xp.abs(dg_pos).sum(), xp.abs(dg_neg).sum()]))
            self.optimizers[l].step([dW, db])
            h_in, sq_in = h, self._sum_sq(g, h.shape[1])
        return xp.stack(stats)  # (L, 3)

    # --- prediction ---

    def _forward(self, x, labels):
        """Forward pass of every image in ``x`` paired with each label assignment.

        Yields ``(l, h, g)`` per layer: the activities (K*B, D_l) and goodness (K*B,)
        of the stacked rows of :meth:`_first_layer_z`. ``h`` is overwritten by the
        next layer's ReLU only after the caller has used it.
        """
        h, _ = self._first_layer_z(self.encoder.base(x), labels)  # (K*B, D_1)
        sq_in = None
        for l in range(self.n_layers):
            if l > 0:
                h, _ = self._hidden_layer_z(l, h, sq_in)
            h = self.xp.maximum(h, 0, out=h)  # (K*B, D_l)
            g = goodness(h, self.goodness_kind)  # (K*B,)
            yield l, h, g
            sq_in = self._sum_sq(g, h.shape[1])

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
        xp, C = self.xp, self.encoder.n_classes
        chunk = max(1, PREDICT_ROWS // C)
        out = xp.zeros((self.n_layers, x.shape[0], C), dtype=self.dtype)  # (L, N, C)
        for start in range(0, x.shape[0], chunk):
            xb = x[start:start + chunk]
            B = xb.shape[0]
            labels = [xp.full(B, c) for c in range(C)]  # every candidate label
            for l, _, g in self._forward(xb, labels):  # g: (C*B,)
                out[l, start:start + B] = g.reshape(C, B).T  # (B, C)
        return out if per_layer else self.sum_layers(out)

    def dead_fraction(self, x, y):
        """Per layer, the fraction of ReLUs silent on every image of ``x`` paired with its label.

        A unit that never fires on positive data gets no gradient from the goodness
        (dL/dh = 2 dL/dG h is 0 where h is 0), so it stays dead. Returns an (L,) array.
        """
        xp = self.xp
        active = [xp.zeros(w.shape[0], dtype=bool) for w in self.W]
        for start in range(0, x.shape[0], PREDICT_ROWS):
            xb, yb = x[start:start + PREDICT_ROWS], y[start:start + PREDICT_ROWS]
            for l, h, _ in self._forward(xb, [yb]):  # h: (B, D_l)
                active[l] |= h.max(axis=0) > 0
        return xp.stack([1.0 - a.mean() for a in active])  # (L,)

    def sum_layers(self, per_layer):
        """Sum (L, N, C) per-layer goodness over the layers that count at prediction."""
        first = 1 if self.skip_first_layer and self.n_layers > 1 else 0
        return per_layer[first:].sum(axis=0)  # (N, C)

    def predict(self, x):
        """Label with the highest summed goodness, argmax_y G(x, y) (paper Sec. 3.3). Shape (N,)."""
        return self.goodness_per_label(x).argmax(axis=1)

