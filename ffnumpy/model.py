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

For speed (README, "Speed"), every per-step array lives in a reused work buffer
(:class:`ffnumpy.backend.Workspace`) and the element-wise passes between products run
over row blocks (:func:`ffnumpy.backend.run_blocks`: threads with NumPy); the results do
not depend on the blocking (tests/test_backend.py).
"""
from .backend import Workspace, row_blocks, run_blocks, take_rows
from .data import standardize_images
from .layers import NORM_EPS, init_linear, norm_scale
from .losses import LOSSES, goodness, goodness_backward_factor
from .optim import make_optimizer

# Activities per prediction chunk (candidate labels x images x the widest layer): each of
# the two activation buffers holds at most this many floats (64 MiB in float32), whatever
# the width or the number of classes. Measured on MNIST 2 x 500: 2^24 predicts about 2%
# faster than 2^23 (larger products, fewer calls).
PREDICT_ELEMENTS = 1 << 24


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
        self.input_stats = None  # per-channel mean/std that predict applies (load_model sets it)
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

    # --- one layer's forward pass, with the normalisation folded in ---

    def _first_layer(self, base, labels):
        """Layer 1 for each image paired with each label in ``labels``.

        Parameters
        ----------
        base : array of shape (B, D_img)
            ``encoder.base(x)``.
        labels : list of K label assignments
            Each an integer array of shape (B,), or one int for every image (K=2 for
            positive and negative in training; at prediction the C ints 0 .. C-1).

        Returns
        -------
        h : array of shape (K*B, D_1)
            Activities; rows k*B .. (k+1)*B-1 hold the images paired with ``labels[k]``.
        g : array of shape (K*B,)
            Goodness.
        n : array of shape (K*B, 1)
            Normalising lengths of the encoded inputs.
        """
        xp, W, ws = self.xp, self.W[0], self.workspace
        k = norm_scale(self.norm, self.encoder.d_in)
        B, D_1 = base.shape[0], W.shape[0]
        z_base = xp.matmul(base, W[:, self.encoder.base_cols].T,
                           out=ws.get("z_base", (B, D_1)))  # (B, D_1): shared by all K
        z_codes = self.codes @ W.T  # (C, D_1)
        base_sq = goodness(base, "sum")  # (B,), row sums of squares
        sq = xp.concatenate([base_sq + self.code_sq[y] for y in labels])  # (K*B,)
        n = xp.sqrt(k * sq + NORM_EPS)[:, None]  # (K*B, 1)
        z = ws.get("z0", (len(labels) * B, D_1))  # (K*B, D_1)

        def fill(rows):  # rows lie in one label block: W base(x) + W code_y
            block, first = divmod(rows.start, B)
            images, y = slice(first, first + rows.stop - rows.start), labels[block]
            if isinstance(y, int):  # one label for all: a broadcast add
                xp.add(z_base[images], z_codes[y], out=z[rows])
            else:
                take_rows(z_codes, y[images], out=z[rows])
                z[rows] += z_base[images]

        return (*self._finish_layer(0, z, n, fill, segment=B), n)

    def _hidden_layer(self, l, h_in, sq_in):
        """Layer l > 1 from layer l-1's raw activities; returns h, g, n as :meth:`_first_layer`.

        ``x_hat W^T = (h W^T) / n``: the normalisation is applied to the (narrower or
        equal) product instead of the input, and n comes from ``sq_in``, the row sums of
        squares that layer l-1's goodness already computed.
        """
        xp, W = self.xp, self.W[l]
        k = norm_scale(self.norm, h_in.shape[1])
        n = xp.sqrt(k * sq_in + NORM_EPS)[:, None]  # (K*B, 1)
        # activations alternate between two buffers: layer l reads l-1's, writes its own
        z = xp.matmul(h_in, W.T, out=self.workspace.get(
            f"z{l % 2}", (h_in.shape[0], W.shape[0])))  # (K*B, D_l)
        return (*self._finish_layer(l, z, n), n)

    def _finish_layer(self, l, z, n, fill=None, segment=None):
        """From the product z = h_in W^T: h = ReLU(z / n + b_l) in place, and the goodness.

        Runs block by block of rows (on threads with NumPy); ``fill(rows)`` first writes
        those rows of z when the product is assembled per block. Returns h and g.
        """
        xp, b = self.xp, self.b[l]
        g = xp.empty(z.shape[0], dtype=z.dtype)  # (K*B,)

        def finish(rows):
            if fill is not None:
                fill(rows)
            h = z[rows]
            h /= n[rows]
            h += b
            xp.maximum(h, 0, out=h)  # ReLU in place
            g[rows] = goodness(h, self.goodness_kind)

        run_blocks(xp, finish, row_blocks(xp, z.shape[0], z.shape[1], segment))
        return z, g

    def _sum_sq(self, g, width):
        """Row sums of squares from a goodness: G itself for "sum", D*G for "mean"."""
        return g if self.goodness_kind == "sum" else g * width

    def _first_layer_dW(self, h, scale, base, y, y_neg):
        """dL/dW_1 from the activities h (2B, D_1) of :meth:`_first_layer` on the positive
        labels ``y`` and the negative ones ``y_neg``, and ``scale`` (2B, 1).

        dL/dz = 2 dG h row by row; with the normalisation's 1/n, dz/n = scale * h.
        Since x_hat = (base + code_y) / n, dW = (dz/n)^T x_hat splits into
        (dz_pos / n_pos + dz_neg / n_neg)^T base on the base columns plus M codes, where
        column c of M (D_1, C) sums dz/n over the rows whose label is c.
        """
        xp, ws = self.xp, self.workspace
        B, D_1 = base.shape[0], h.shape[1]
        dz = ws.get("dz", h.shape)  # (2B, D_1): dz/n
        dz_img = ws.get("dz_img", (B, D_1))  # dz/n of each image's positive plus its negative

        def fill(images):
            pos, neg = images, slice(B + images.start, B + images.stop)
            xp.multiply(h[pos], scale[pos], out=dz[pos])
            xp.multiply(h[neg], scale[neg], out=dz[neg])
            xp.add(dz[pos], dz[neg], out=dz_img[images])

        run_blocks(xp, fill, row_blocks(xp, B, 2 * D_1))
        y = xp.concatenate([y, y_neg])  # (2B,)
        onehot = (y[:, None] == xp.arange(self.encoder.n_classes)[None, :])  # (2B, C)
        # (D_1, 2B) @ (2B, C): BLAS is several times faster this way round than (C, 2B) @ ...
        M = dz.T @ onehot.astype(dz.dtype)  # (D_1, C)
        dW = xp.matmul(M, self.codes,
                       out=ws.get("dW_codes", (D_1, self.encoder.d_in)))  # (D_1, D_in)
        dW_base = xp.matmul(dz_img.T, base, out=ws.get("dW", (D_1, base.shape[1])))  # (D_1, D_img)
        dW[:, self.encoder.base_cols] += dW_base
        return dW

    def _hidden_layer_dW(self, h, scale, h_in):
        """dL/dW_l = (dz/n)^T h_in for layer l > 1, with dz/n = scale * h row by row."""
        xp, ws = self.xp, self.workspace
        dz = ws.get("dz", h.shape)  # (2B, D_l): dL/dz / n, the normalisation's share
        run_blocks(xp, lambda rows: xp.multiply(h[rows], scale[rows], out=dz[rows]),
                   row_blocks(xp, h.shape[0], h.shape[1]))
        return xp.matmul(dz.T, h_in, out=ws.get("dW", (h.shape[1], h_in.shape[1])))  # (D_l, D_l-1)

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
                h, g, n = self._first_layer(base, [y, y_neg])  # (2B, D_1), (2B,), (2B, 1)
            else:
                h, g, n = self._hidden_layer(l, h_in, sq_in)  # (2B, D_l), ...
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
            scale = dg[:, None] / n  # (2B, 1)
            if l == 0:
                dW = self._first_layer_dW(h, scale, base, y, y_neg)
            else:
                dW = self._hidden_layer_dW(h, scale, h_in)
            stats.append(xp.stack([loss, xp.abs(dg_pos).sum(), xp.abs(dg_neg).sum()]))
            self.optimizers[l].step([dW, db])
            h_in, sq_in = h, self._sum_sq(g, h.shape[1])
        return xp.stack(stats)  # (L, 3)

    # --- prediction ---

    def _forward(self, x, labels):
        """Forward pass of every image in ``x`` paired with each label assignment.

        Yields ``(l, h, g)`` per layer: the activities (K*B, D_l) and goodness (K*B,)
        of the stacked rows of :meth:`_first_layer`. ``h`` lives in a workspace buffer
        that layer l+2 overwrites, so the caller uses it before asking for more.
        """
        h, g, _ = self._first_layer(self.encoder.base(x), labels)  # (K*B, D_1)
        for l in range(self.n_layers):
            if l > 0:
                h, g, _ = self._hidden_layer(l, h, self._sum_sq(g, h.shape[1]))
            yield l, h, g

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

        A unit that never fires on positive data gets no gradient from the goodness
        (dL/dh = 2 dL/dG h is 0 where h is 0), so it stays dead. Its fraction per layer
        is read from the rows of the same forward pass that pair each image with its
        true label, so the test error, each layer's own error and the dead fraction
        cost one pass over the C labels (no second pass with the true labels).

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
        xp, C, ws = self.xp, self.encoder.n_classes, self.workspace
        chunk = self.prediction_chunk(C)
        out = xp.zeros((self.n_layers, x.shape[0], C), dtype=self.dtype)  # (L, N, C)
        active = [xp.zeros(w.shape[0], dtype=bool) for w in self.W]  # (D_l,) per layer
        for start in range(0, x.shape[0], chunk):
            xb = x[start:start + chunk]
            B = xb.shape[0]
            if y is not None:  # image i with its own label c is row c*B + i
                yb = xp.asarray(y[start:start + B], dtype=xp.int64)  # (B,)
                true_rows = yb * B + xp.arange(B)  # (B,)
            for l, h, g in self._forward(xb, list(range(C))):  # every candidate label; g: (C*B,)
                out[l, start:start + B] = g.reshape(C, B).T  # (B, C)
                if y is not None:
                    h_true = take_rows(h, true_rows, out=ws.get("h_true", (B, h.shape[1])))
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
            x = standardize_images(x, self.input_stats)
        return self.goodness_per_label(x).argmax(axis=1)

