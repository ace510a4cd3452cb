r"""The fast path of one FF layer: the same numbers as :mod:`ffnumpy.layers`, fewer products.

:func:`ffnumpy.layers.ff_layer_forward` is the readable layer (notebook 03):

.. math:: n = \sqrt{k \lVert x\rVert^2 + \epsilon}, \qquad \hat x = x / n, \qquad
          z = \hat x W^\top + b, \qquad h = \max(0, z), \qquad G = \textstyle\sum_j h_j^2

(:math:`k = 1` for "l2", :math:`1/D_{in}` for "rms"; G may also be the mean, then
:math:`G = \frac1D\sum_j h_j^2`). This module computes the same h, G, dW and db in a
different order. Notebook 08 derives every step and proves it equal in float64; the
tests (``tests/test_layers.py``, ``tests/test_fused.py``) do the same.

Three rewrites
--------------
1. **Normalise the product, not the input.** n is one number per row, so
   :math:`\hat x W^\top = (x W^\top) / n`: dividing the (B, D_out) product costs
   B D_out divisions instead of B D_in, and no normalised copy of x is made. For a
   hidden layer, :math:`\lVert x\rVert^2` is the goodness that the layer below
   already computed (times its width for mean goodness), so n costs nothing.
2. **Split the first layer's product.** A label encoder writes the label into
   columns the image leaves empty (:mod:`ffnumpy.labels`): the input of image x with
   label c is :math:`x_c = \text{base}(x) + \text{code}_c` with disjoint supports, so

   .. math:: x_c W^\top = \text{base}(x) W^\top + \text{code}_c W^\top, \qquad
             \lVert x_c\rVert^2 = \lVert\text{base}(x)\rVert^2 + \lVert\text{code}_c\rVert^2 .

   The image product is computed once per image and shared by the image's positive and
   negative (training) or by all C candidate labels (prediction); the code products
   form a (C, D_1) table.
3. **The weight gradient through the class table.** With :math:`dz = dL/dz`,
   :math:`dW = dz^\top \hat x = \sum_i (dz_i / n_i)\, x_i^\top`, and with the split
   input,

   .. math:: dW = \sum_{\text{images}} \Big(\frac{dz_{pos}}{n_{pos}} +
             \frac{dz_{neg}}{n_{neg}}\Big) \text{base}(x)^\top
             + \sum_c \Big(\sum_{i:\,y_i = c} \frac{dz_i}{n_i}\Big) \text{code}_c^\top ,

   one (D_1, B) x (B, D_img) product plus a (D_1, C) x (C, D_in) one. The inner sum is
   ``dz_by_class``, a product of dz/n with the one-hot matrix of the labels.

The backward pass needs no ReLU mask: :math:`dL/dh = c\, dL/dG\; h` (c = 2, or 2/D for
mean goodness) is already 0 where z <= 0. So :math:`dz_i = r_i h_i` with one
coefficient :math:`r_i = c\, dL/dG_i` per row (``dz_coef``), db is the
vector-matrix product :math:`r^\top h`, and :math:`dz_i / n_i = (r_i / n_i) h_i`
is a single scaling pass over h.

Work buffers and row blocks
---------------------------
Every per-step array is a view of a reused buffer (:class:`ffnumpy.backend.Workspace`);
the element-wise passes between products run over blocks of rows
(:func:`ffnumpy.backend.run_blocks`: on threads with NumPy, in order with CuPy). A
block function takes the rows first and writes only those rows, so the result does not
depend on the blocking (tests/test_backend.py).
"""
from functools import partial

from .backend import row_blocks, run_blocks, take_rows, xp_of
from .layers import NORM_EPS, norm_scale
from .losses import goodness, goodness_backward_factor

# Activities alternate between two buffers: layer l reads layer l-1's and writes its own,
# so layer l+2 overwrites layer l's (a caller reads them before asking for more).
ACTIVITY_BUFFERS = ("h_even_layer", "h_odd_layer")


def activity_buffer(l):
    """Name of the work buffer that holds layer ``l``'s activities (0-based)."""
    return ACTIVITY_BUFFERS[l % 2]


# --- normalisation from row sums of squares ---

def norm_lengths(row_sq, norm, width):
    r"""The normalising lengths :math:`n = \sqrt{k\, \lVert x\rVert^2 + \epsilon}`.

    Parameters
    ----------
    row_sq : array of shape (R,)
        :math:`\lVert x\rVert^2` of each input row.
    norm : {"l2", "rms"}
    width : int
        D_in, the width of the input rows (k = 1/D_in for "rms").

    Returns
    -------
    n : array of shape (R, 1)
    """
    norm_k = norm_scale(norm, width)
    return xp_of(row_sq).sqrt(norm_k * row_sq + NORM_EPS)[:, None]  # (R, 1)


def row_sq_from_goodness(g, goodness_kind, width):
    r"""Row sums of squares :math:`\lVert h\rVert^2` from the goodness of ``h``:
    G itself for "sum", :math:`D\,G` for "mean" (the next layer's normalisation needs it)."""
    return g if goodness_kind == "sum" else g * width  # (R,)


# --- forward: bias, ReLU and goodness after the product ---

def relu_goodness_rows(rows, z, n, b, g, goodness_kind):
    r"""On ``rows`` in place: :math:`h = \max(0, z / n + b)`, then :math:`G` of each row.

    Parameters
    ----------
    rows : slice
    z : array of shape (R, D_out)
        The unnormalised product :math:`x W^\top`; overwritten by h.
    n : array of shape (R, 1)
    b : array of shape (D_out,)
    g : array of shape (R,)
        Receives the goodness of these rows.
    goodness_kind : {"sum", "mean"}
    """
    xp = xp_of(z)
    h = z[rows]  # (rows, D_out), a view
    h /= n[rows]  # rewrite 1: the normalisation applied to the product
    h += b
    xp.maximum(h, 0, out=h)  # ReLU in place
    g[rows] = goodness(h, goodness_kind)


def split_product_rows(rows, z, image_products, code_products, labels, rows_per_label):
    r"""On ``rows`` (within one label block): :math:`z = \text{base}(x) W^\top +
    \text{code}_y W^\top` (rewrite 2).

    Parameters
    ----------
    rows : slice
        Rows of z inside one block ``k*B .. (k+1)*B - 1``.
    z : array of shape (K*B, D_1)
        Receives the products.
    image_products : array of shape (B, D_1)
        :math:`\text{base}(x) W^\top`, shared by the K label blocks.
    code_products : array of shape (C, D_1)
        :math:`\text{code}_c W^\top`.
    labels : list of K label assignments
        An integer array of shape (B,) or one int per block.
    rows_per_label : int
        B.
    """
    xp = xp_of(z)
    block, first_image = divmod(rows.start, rows_per_label)
    images = slice(first_image, first_image + rows.stop - rows.start)
    y = labels[block]
    if isinstance(y, int):  # one label for every image: a broadcast add
        xp.add(image_products[images], code_products[y], out=z[rows])
    else:
        take_rows(code_products, y[images], out=z[rows])
        z[rows] += image_products[images]


def first_layer_rows(rows, z, n, b, g, goodness_kind, image_products, code_products, labels,
                     rows_per_label):
    """:func:`split_product_rows` then :func:`relu_goodness_rows` on the same rows, so that
    the block is still in cache for the second pass."""
    split_product_rows(rows, z, image_products, code_products, labels, rows_per_label)
    relu_goodness_rows(rows, z, n, b, g, goodness_kind)


def first_layer_forward(xp, base, labels, W, b, codes, code_sq, base_cols, norm, goodness_kind,
                        workspace):
    r"""Layer 1 for every image paired with each label assignment in ``labels``.

    .. math:: z_{x,c} = \frac{\text{base}(x) W^\top + \text{code}_c W^\top}{n_{x,c}} + b,
              \qquad n_{x,c} = \sqrt{k(\lVert\text{base}(x)\rVert^2 +
              \lVert\text{code}_c\rVert^2) + \epsilon}

    Parameters
    ----------
    xp : module
        The array module (numpy, cupy): it runs the products and the row blocks.
    base : array of shape (B, D_img)
        The image part of the encoded inputs, ``encoder.base(x)``.
    labels : list of K label assignments
        Each an integer array of shape (B,), or one int for every image (K=2 for the
        positives and negatives of training; the C ints 0 .. C-1 at prediction).
    W : array of shape (D_1, D_in)
    b : array of shape (D_1,)
    codes : array of shape (C, D_in)
        The label codes (zero on ``base_cols``).
    code_sq : array of shape (C,)
        :math:`\lVert\text{code}_c\rVert^2`.
    base_cols : slice
        The input columns the image part occupies.
    norm : {"l2", "rms"}
    goodness_kind : {"sum", "mean"}
    workspace : ffnumpy.backend.Workspace

    Returns
    -------
    h : array of shape (K*B, D_1)
        Activities in the buffer :func:`activity_buffer` (0); rows k*B .. (k+1)*B-1
        pair the images with ``labels[k]``.
    g : array of shape (K*B,)
        Goodness.
    n : array of shape (K*B, 1)
        Normalising lengths of the encoded inputs.
    """
    B, D_1 = base.shape[0], W.shape[0]
    image_products = xp.matmul(base, W[:, base_cols].T,
                               out=workspace.get("image_products", (B, D_1)))  # (B, D_1)
    code_products = codes @ W.T  # (C, D_1)
    base_sq = goodness(base, "sum")  # (B,): row sums of squares
    row_sq = xp.concatenate([base_sq + code_sq[y] for y in labels])  # (K*B,)
    n = norm_lengths(row_sq, norm, codes.shape[1])  # (K*B, 1)
    z = workspace.get(activity_buffer(0), (len(labels) * B, D_1))  # (K*B, D_1)
    g = xp.empty(z.shape[0], dtype=z.dtype)  # (K*B,)
    fill = partial(first_layer_rows, z=z, n=n, b=b, g=g, goodness_kind=goodness_kind,
                   image_products=image_products, code_products=code_products,
                   labels=labels, rows_per_label=B)
    run_blocks(xp, fill, row_blocks(xp, z.shape[0], D_1, segment=B))  # no block spans labels
    return z, g, n


def hidden_layer_forward(xp, h_in, row_sq_in, W, b, norm, goodness_kind, out):
    r"""Layer l > 1 from layer l-1's raw activities, normalising the product (rewrite 1).

    .. math:: z = \frac{h_{in} W^\top}{n} + b, \qquad
              n = \sqrt{k\lVert h_{in}\rVert^2 + \epsilon}

    Parameters
    ----------
    xp : module
    h_in : array of shape (R, D_in)
    row_sq_in : array of shape (R,)
        :math:`\lVert h_{in}\rVert^2`, from layer l-1's goodness
        (:func:`row_sq_from_goodness`).
    W : array of shape (D_out, D_in)
    b : array of shape (D_out,)
    norm : {"l2", "rms"}
    goodness_kind : {"sum", "mean"}
    out : array of shape (R, D_out)
        Work buffer that receives the activities.

    Returns
    -------
    h, g, n : as :func:`first_layer_forward`
    """
    n = norm_lengths(row_sq_in, norm, h_in.shape[1])  # (R, 1)
    z = xp.matmul(h_in, W.T, out=out)  # (R, D_out)
    g = xp.empty(z.shape[0], dtype=z.dtype)  # (R,)
    fill = partial(relu_goodness_rows, z=z, n=n, b=b, g=g, goodness_kind=goodness_kind)
    run_blocks(xp, fill, row_blocks(xp, z.shape[0], z.shape[1]))
    return z, g, n


# --- backward: from dL/dG to dW and db ---

def dz_coefficients(xp, dg_pos, dg_neg, goodness_kind, width):
    r"""The coefficient :math:`r_i = c\, \partial L/\partial G_i` of each row, with
    :math:`dz_i = r_i h_i` (c = 2 for "sum", 2/D for "mean"; no ReLU mask needed).

    Returns
    -------
    dz_coef : array of shape (2B,)
        Positives first, then negatives.
    """
    return xp.concatenate([dg_pos, dg_neg]) * goodness_backward_factor(goodness_kind,
                                                                       width)  # (2B,)


def bias_grad(dz_coef, h):
    r""":math:`db = \sum_i dz_i = \sum_i r_i h_i = r^\top h`, one vector-matrix product.

    Returns
    -------
    db : array of shape (D_out,)
    """
    return dz_coef @ h  # (D_out,)


def scale_rows(rows, h, dz_coef_over_n, out):
    r"""On ``rows``: :math:`dz_i / n_i = (r_i / n_i)\, h_i`."""
    xp_of(h).multiply(h[rows], dz_coef_over_n[rows], out=out[rows])


def pair_rows(images, h, dz_coef_over_n, dz_over_n, dz_over_n_per_image):
    r"""On the images ``images``: dz/n of the positive rows and the negative rows, and
    their sum per image, :math:`dz_{pos}/n_{pos} + dz_{neg}/n_{neg}` (rewrite 3)."""
    B = dz_over_n_per_image.shape[0]
    neg = slice(B + images.start, B + images.stop)
    scale_rows(images, h, dz_coef_over_n, dz_over_n)
    scale_rows(neg, h, dz_coef_over_n, dz_over_n)
    xp_of(h).add(dz_over_n[images], dz_over_n[neg], out=dz_over_n_per_image[images])


def first_layer_weight_grad(xp, h, dz_coef_over_n, base, y, y_neg, codes, base_cols, workspace):
    r"""dL/dW_1 through the image part and the class table (rewrite 3).

    .. math:: dW = \Big(\frac{dz_{pos}}{n_{pos}} + \frac{dz_{neg}}{n_{neg}}\Big)^\top
              \text{base}(x) \;\text{on base\_cols}\; + \;\text{dz\_by\_class}\;
              \text{codes}, \qquad
              \text{dz\_by\_class}_{:, c} = \sum_{i:\, y_i = c} \frac{dz_i}{n_i}

    Parameters
    ----------
    xp : module
    h : array of shape (2B, D_1)
        Activities of the positives, then the negatives.
    dz_coef_over_n : array of shape (2B, 1)
        :math:`r_i / n_i`.
    base : array of shape (B, D_img)
    y, y_neg : integer arrays of shape (B,)
        Labels of the positives and of the negatives.
    codes : array of shape (C, D_in)
    base_cols : slice
    workspace : ffnumpy.backend.Workspace

    Returns
    -------
    dW : array of shape (D_1, D_in), in a work buffer
    """
    B, D_1 = base.shape[0], h.shape[1]
    n_classes, d_in = codes.shape
    dz_over_n = workspace.get("dz_over_n", h.shape)  # (2B, D_1)
    dz_over_n_per_image = workspace.get("dz_over_n_per_image", (B, D_1))  # (B, D_1)
    fill = partial(pair_rows, h=h, dz_coef_over_n=dz_coef_over_n, dz_over_n=dz_over_n,
                   dz_over_n_per_image=dz_over_n_per_image)
    run_blocks(xp, fill, row_blocks(xp, B, 2 * D_1))
    labels = xp.concatenate([y, y_neg])  # (2B,)
    onehot = labels[:, None] == xp.arange(n_classes)[None, :]  # (2B, C)
    # (D_1, 2B) @ (2B, C): BLAS is several times faster this way round than (C, 2B) @ ...
    dz_by_class = dz_over_n.T @ onehot.astype(dz_over_n.dtype)  # (D_1, C)
    dW = xp.matmul(dz_by_class, codes, out=workspace.get("dW_codes", (D_1, d_in)))  # (D_1, D_in)
    dW_base = xp.matmul(dz_over_n_per_image.T, base,
                        out=workspace.get("dW", (D_1, base.shape[1])))  # (D_1, D_img)
    dW[:, base_cols] += dW_base
    return dW


def hidden_layer_weight_grad(xp, h, dz_coef_over_n, h_in, workspace):
    r""":math:`dL/dW_l = (dz/n)^\top h_{in}` for a layer l > 1, with
    :math:`dz_i/n_i = (r_i/n_i) h_i` (rewrite 1 on the backward side: the raw input,
    scaled rows of dz).

    Returns
    -------
    dW : array of shape (D_l, D_l-1), in a work buffer
    """
    dz_over_n = workspace.get("dz_over_n", h.shape)  # (2B, D_l)
    fill = partial(scale_rows, h=h, dz_coef_over_n=dz_coef_over_n, out=dz_over_n)
    run_blocks(xp, fill, row_blocks(xp, h.shape[0], h.shape[1]))
    return xp.matmul(dz_over_n.T, h_in,
                     out=workspace.get("dW", (h.shape[1], h_in.shape[1])))  # (D_l, D_l-1)


# --- the two backward passes ---

def first_layer_backward(xp, h, n, dg_pos, dg_neg, goodness_kind, base, y, y_neg, codes,
                         base_cols, workspace):
    r"""dW and db of layer 1 from dL/dG of its positive and negative rows.

    .. math:: dz_i = r_i h_i, \qquad db = r^\top h, \qquad
              dW = \text{first\_layer\_weight\_grad}(r / n)

    Parameters
    ----------
    xp : module
    h : array of shape (2B, D_1)
    n : array of shape (2B, 1)
        As returned by :func:`first_layer_forward` with labels ``[y, y_neg]``.
    dg_pos, dg_neg : arrays of shape (B,)
        dL/dG of the positive and the negative rows.
    goodness_kind : {"sum", "mean"}
    base, y, y_neg, codes, base_cols, workspace
        As :func:`first_layer_weight_grad`.

    Returns
    -------
    dW : array of shape (D_1, D_in)
    db : array of shape (D_1,)
    """
    dz_coef = dz_coefficients(xp, dg_pos, dg_neg, goodness_kind, h.shape[1])  # (2B,)
    db = bias_grad(dz_coef, h)  # (D_1,)
    dW = first_layer_weight_grad(xp, h, dz_coef[:, None] / n, base, y, y_neg, codes,
                                 base_cols, workspace)  # (D_1, D_in)
    return dW, db


def hidden_layer_backward(xp, h, n, dg_pos, dg_neg, goodness_kind, h_in, workspace):
    r"""dW and db of a layer l > 1 from dL/dG, as :func:`first_layer_backward` with
    :func:`hidden_layer_weight_grad`; ``h_in`` is the layer's raw input (2B, D_l-1).

    Returns
    -------
    dW : array of shape (D_l, D_l-1)
    db : array of shape (D_l,)
    """
    dz_coef = dz_coefficients(xp, dg_pos, dg_neg, goodness_kind, h.shape[1])  # (2B,)
    db = bias_grad(dz_coef, h)  # (D_l,)
    dW = hidden_layer_weight_grad(xp, h, dz_coef[:, None] / n, h_in, workspace)  # (D_l, D_l-1)
    return dW, db
