"""A dense network as matrices and vectors, with every parameter in one flat buffer.

Layer ``i`` computes ``a_i = f_i(a_{i-1} @ W_i + b_i)`` on a mini-batch of row vectors
(``W_i`` has shape ``(n_in, n_out)``, i.e. ``f(W x + b)`` for column vectors ``x``), with
``f`` applied element-wise; the last layer's ``f`` is the output function: softmax
(classes), logistic (binary / multilabel), identity (regression) or exp (Poisson
regression, log link).  X may be a scipy.sparse matrix (used by the first layer only).

Memory layout (the point of this module):

* ``params_flat`` is ONE contiguous array ``[W_1, ..., W_L, b_1, ..., b_L]``; the
  ``coefs``/``intercepts`` lists are views into it.  ``grads_flat`` has the same layout
  and ``coef_grads``/``intercept_grads`` are views into it.  One fused optimizer call
  over ``params_flat`` therefore updates the whole network.  The weights come first so
  that the L2 penalty is one dot product over ``params_flat[:n_weights]``.
* Activation, delta and scratch buffers are allocated once for a batch capacity and
  reused: matrix products and all element-wise work write into them (``out=``); a
  smaller (final, partial) batch uses views of the first rows, cached per batch size,
  so a training epoch allocates no arrays.

Losses (per mini-batch of ``n`` rows, targets ``Y`` of shape ``(n, n_outputs)``), each
paired with its canonical output so that ``dL/dz = (out - Y) / n`` for all four:

* softmax cross-entropy: ``mean_rows(logsumexp(z) - sum(Y * z))`` computed after
  subtracting each row's maximum (stable).
* logistic: binary cross-entropy summed over the outputs, ``softplus(z) - Y * z`` (stable).
* identity: squared error (scikit-learn's ``squared_loss``), ``sum((out - Y)**2) / (2 n)``.
* exp: half Poisson deviance, ``sum(Y log Y - Y z + exp(z) - Y) / n`` (``0 log 0 = 0``).
* L2 penalty as scikit-learn's MLP: ``+ alpha / (2 n) * sum_i sum(W_i**2)`` and
  ``+ alpha / n * W_i`` on the weight gradients (biases are not penalised).

With per-row sample weights ``w`` (scikit-learn's weighting), each row's loss and delta
are multiplied by ``w_i`` and every ``n`` above becomes ``sum(w)``.

Compiled layer kernels (``fused=True``, the default; ``_kernels_layers.pxi``): the matrix
products run in BLAS (in training, where every BLAS is at one thread, scipy's gemm called
from compiled code on two fixed blocks of output rows over fastoptim's kernel threads,
fused with the passes below: ``_kernels_gemm.pxi``; otherwise, without scipy, and for
sparse X NumPy's) and everything element-wise around them is one pass each:
bias add + relu (tanh and the logistic use NumPy's SIMD tanh after the bias add), the
output function + loss + delta + bias gradient, activation derivative x delta + bias
gradient, and the L2 term added to each layer's weight gradient.  ``net.fused = False``
runs the NumPy reference path, the same formulas: the same bits for the forward pass,
the derivatives and (with an identity output) the weight gradients; bias gradients and
losses within rounding (the kernels sum in double in a fixed order), softmax / logistic /
exp outputs within a few ulp (libm's exp and log here, NumPy's SIMD ones there).
"""

import numbers

import numpy as np

from .._alloc import zeros_grad_like
from fastoptim._backend import kernels as _K, resolve_n_threads

from ._training import make_optimizer, train

# np.matmul's BLAS call (the same bits) with a third of its call overhead: the
# products of a mini-batch are small
_dot = np.ndarray.dot
_TRANSPOSED_MAX_MACS = 1 << 19
_gemm = None                # the compiled products: None = not tried yet, then True/False


def _load_gemm():
    """Hand scipy's BLAS gemm (its Cython module's capsules) to the compiled products
    (_kernels_gemm.pxi); False without scipy or when anything about them is unexpected:
    NumPy's products then, as before."""
    try:
        import scipy.linalg.cython_blas as cython_blas
        capi = cython_blas.__pyx_capi__
        return bool(_K.gemm_load(capi["dgemm"], capi["sgemm"]))
    except (ImportError, AttributeError, KeyError, TypeError):
        return False


def _gemm_ready():
    """True when the compiled products can be used (loaded once per process)."""
    global _gemm
    if _gemm is None:
        _gemm = _load_gemm()
    return _gemm and _K.gemm_ready()

__all__ = ["MLP", "ACTIVATIONS", "OUTPUTS"]

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
_ACTIVATION_ALIASES = {"logistic": "sigmoid", "linear": "identity"}
OUTPUTS = ("softmax", "identity", "logistic", "exp")
_OUTPUT_ALIASES = {"linear": "identity", "sigmoid": "logistic"}


def _is_sparse(X):
    """A scipy.sparse matrix or array (without importing scipy)."""
    return type(X).__module__.startswith("scipy.sparse") and hasattr(X, "tocsr")


def _refuse_masked(X, name):
    if isinstance(X, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array: its mask would be ignored; pass "
                        f"{name}.filled(value) or drop the masked rows")


# ---- element-wise functions, in place (z is overwritten by f(z)) -------------------------

def _relu(z, zeros):
    np.maximum(z, zeros, out=z)    # an array of zeros: ~3x faster than the scalar 0.0


def _tanh(z, zeros):
    np.tanh(z, out=z)


def _sigmoid(z, zeros):
    # 1 / (1 + exp(-z)) == (1 + tanh(z / 2)) / 2: no overflow for any z, no branches.
    np.multiply(z, 0.5, out=z)
    np.tanh(z, out=z)
    np.add(z, 1.0, out=z)
    np.multiply(z, 0.5, out=z)


def _identity(z, zeros):
    pass


def _expit(z):
    """1 / (1 + exp(-z)) in place, exactly 0 or 1 only where the float runs out (as
    scipy's expit; the output layer's probabilities, where saturation shows)."""
    e = np.exp(-np.abs(z))
    pos = z >= 0
    np.divide(np.where(pos, 1.0, e), 1.0 + e, out=z)


# ---- derivatives from the activation's OUTPUT a, applied in place: d *= f'(.) -----------

def _relu_deriv(a, d, s, mask):
    np.greater(a, 0.0, out=mask)   # a = relu(z) > 0  <=>  z > 0
    np.multiply(d, mask, out=d)


def _tanh_deriv(a, d, s, mask):
    np.multiply(a, a, out=s)       # 1 - tanh**2
    np.subtract(1.0, s, out=s)
    np.multiply(d, s, out=d)


def _sigmoid_deriv(a, d, s, mask):
    np.subtract(1.0, a, out=s)     # a (1 - a)
    np.multiply(s, a, out=s)
    np.multiply(d, s, out=d)


def _identity_deriv(a, d, s, mask):
    pass


_FORWARD = {"relu": _relu, "tanh": _tanh, "sigmoid": _sigmoid, "identity": _identity}
_DERIV = {"relu": _relu_deriv, "tanh": _tanh_deriv, "sigmoid": _sigmoid_deriv,
          "identity": _identity_deriv}


_ACT_CODE = {name: _K.LAYER_ACTIVATIONS.index(name) for name in ACTIVATIONS}
_OUT_CODE = {name: _K.LAYER_OUTPUTS.index(name) for name in OUTPUTS}
_IDENTITY, _RELU = _ACT_CODE["identity"], _ACT_CODE["relu"]


def _check_name(kind, value, allowed, aliases):
    if isinstance(value, str):
        value = aliases.get(value, value)
        if value in allowed:
            return value
    raise ValueError(f"{kind} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def _check_representable(a, dtype, name):
    """Refuse NaN/inf, and finite values that the conversion to ``dtype`` would overflow."""
    if a.dtype.kind != "f" or a.size == 0:
        return
    if not np.isfinite(a).all():
        raise ValueError(f"Input {name} contains NaN or infinity.")
    big = np.finfo(dtype).max
    if a.dtype.itemsize > np.dtype(dtype).itemsize and np.abs(a).max() > big:
        raise ValueError(f"{name} holds finite values beyond {np.dtype(dtype).name}'s range "
                         f"(+-{big:.4g}); train in float64 or rescale {name}")


def _check_dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dt}")
    return dt


class _Views:
    """Per-batch-size views of the preallocated buffers (cached; no data allocation)."""

    __slots__ = ("x", "y", "acts", "deltas", "scratch", "zeros", "masks", "row", "row2d",
                 "ones", "forward", "backward")


class MLP:
    """A dense feed-forward network whose weights and biases live in one flat buffer.

    Parameters
    ----------
    layer_sizes : sequence of int
        ``[n_inputs, hidden_1, ..., n_outputs]``, at least two entries, e.g.
        ``[64, 128, 64, 10]``.
    activation : {"relu", "tanh", "sigmoid", "identity"}
        Hidden-layer activation (``"logistic"`` is accepted for ``"sigmoid"``).
    output : {"softmax", "identity", "logistic", "exp"}
        Output function and loss: softmax with cross-entropy (classification), logistic
        with binary cross-entropy per output (binary / multilabel), identity with squared
        error (regression), exp with the half Poisson deviance (counts).
    dtype : float32 or float64
    alpha : float, default 0
        L2 penalty (scikit-learn's convention, see the module docstring).
    seed : int, None or numpy.random.Generator
        Initialisation: He-uniform ``U(+-sqrt(6 / fan_in))`` for ReLU layers,
        Glorot-uniform ``U(+-sqrt(6 / (fan_in + fan_out)))`` for the others (including
        the output layer); biases start at zero.

    Attributes
    ----------
    params_flat, grads_flat : ndarray of shape (n_params,)
        All parameters / gradients; ``coefs``, ``intercepts``, ``coef_grads`` and
        ``intercept_grads`` are views into them.  Optimize with e.g.
        ``opt = fastoptim.optim.Adam([net.params_flat]); opt.step([net.grads_flat])``.
    """

    def __init__(self, layer_sizes, activation="relu", output="softmax", *,
                 dtype=np.float32, alpha=0.0, seed=None):
        sizes = tuple(layer_sizes)
        if len(sizes) < 2:
            raise ValueError(f"layer_sizes needs at least 2 entries (inputs, outputs), got {sizes}")
        for s in sizes:
            if isinstance(s, (bool, np.bool_)) or not isinstance(s, numbers.Integral) or s < 1:
                raise ValueError(f"layer sizes must be positive ints, got {sizes}")
        self.layer_sizes = tuple(int(s) for s in sizes)
        self.activation = _check_name("activation", activation, ACTIVATIONS, _ACTIVATION_ALIASES)
        self.output = _check_name("output", output, OUTPUTS, _OUTPUT_ALIASES)
        self.dtype = _check_dtype(dtype)
        shapes = list(zip(self.layer_sizes[:-1], self.layer_sizes[1:]))
        self.n_weights = sum(a * b for a, b in shapes)
        self.n_params = self.n_weights + sum(b for _, b in shapes)
        self.params_flat = np.zeros(self.n_params, dtype=self.dtype)
        # at its own page offset, away from params_flat and the optimizer's state
        self.grads_flat = zeros_grad_like(self.params_flat)
        self.coefs, self.intercepts = self._split(self.params_flat, shapes)
        self.coef_grads, self.intercept_grads = self._split(self.grads_flat, shapes)
        # per layer, the (start, stop) ranges of its weights and bias in params_flat
        self._layer_pieces = tuple(
            ((off, off + a * b), (boff, boff + b)) for (a, b), off, boff in zip(
                shapes, np.cumsum([0] + [a * b for a, b in shapes[:-1]]).tolist(),
                (self.n_weights + np.cumsum([0] + [b for _, b in shapes[:-1]])).tolist()))
        self.weights_flat = self.params_flat[:self.n_weights]
        self.weight_grads_flat = self.grads_flat[:self.n_weights]
        self.alpha = alpha
        # scikit-learn reports the squared error averaged over the outputs (its gradient
        # is that of the sum); True makes the reported data loss that average
        self.mean_over_outputs = False
        self._act = _FORWARD[self.activation]
        self._deriv = _DERIV[self.activation]
        self._act_code = _ACT_CODE[self.activation]
        self._out_code = _OUT_CODE[self.output]
        # per layer, the fused forward pass: the kernel's code (bias add + relu, or the
        # bias add alone) and the NumPy activation to run after it (tanh / logistic:
        # NumPy's SIMD tanh) or None; the output layer's function comes with its loss
        hidden = ((_RELU, None) if self._act_code == _RELU else
                  (_IDENTITY, None if self.activation == "identity" else self._act))
        self._forward_steps = (hidden,) * (self.n_layers - 1) + ((_IDENTITY, None),)
        #: True: the compiled layer kernels (fastoptim/_kernels_layers.pxi); False: the
        #: NumPy reference path they are tested against
        self.fused = True
        self._gscratch = None
        self._wts = [None] * self.n_layers
        self._capacity = 0
        self._views = {}
        self.init_params(seed)

    # -- layout -------------------------------------------------------------------------

    @property
    def alpha(self):
        """L2 penalty strength (scikit-learn's convention); may be changed between fits."""
        return self._alpha

    @alpha.setter
    def alpha(self, alpha):
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not alpha >= 0 \
                or not np.isfinite(alpha):
            raise ValueError(f"alpha must be a finite real >= 0, got {alpha!r}")
        self._alpha = float(alpha)

    @property
    def n_layers(self):
        """Number of weight layers (len(layer_sizes) - 1)."""
        return len(self.layer_sizes) - 1

    @staticmethod
    def _split(flat, shapes):
        ws, bs, off = [], [], 0
        for a, b in shapes:
            ws.append(flat[off:off + a * b].reshape(a, b))
            off += a * b
        for _, b in shapes:
            bs.append(flat[off:off + b])
            off += b
        return ws, bs

    def init_params(self, seed=None):
        """(Re)initialise weights (He / Glorot uniform) and zero the biases, in place."""
        rng = np.random.default_rng(seed)
        last = self.n_layers - 1
        for i, W in enumerate(self.coefs):
            fan_in, fan_out = W.shape
            if i < last and self.activation == "relu":
                limit = np.sqrt(6.0 / fan_in)
            else:
                limit = np.sqrt(6.0 / (fan_in + fan_out))
            W[...] = rng.uniform(-limit, limit, size=W.shape)
        for b in self.intercepts:
            b[...] = 0
        return self

    def __getstate__(self):
        return {"layer_sizes": self.layer_sizes, "activation": self.activation,
                "output": self.output, "dtype": self.dtype.str, "alpha": self.alpha,
                "mean_over_outputs": self.mean_over_outputs, "params": self.params_flat.copy()}

    def __setstate__(self, state):
        self.__init__(state["layer_sizes"], state["activation"], state["output"],
                      dtype=np.dtype(state["dtype"]), alpha=state["alpha"], seed=0)
        self.params_flat[...] = state["params"]
        self.mean_over_outputs = state.get("mean_over_outputs", False)

    def __repr__(self):
        return (f"MLP({list(self.layer_sizes)}, activation={self.activation!r}, "
                f"output={self.output!r}, dtype=np.{self.dtype.name}, alpha={self.alpha})")

    # -- buffers ------------------------------------------------------------------------

    def reserve(self, n):
        """Allocate the work buffers for mini-batches of up to ``n`` rows (grow only)."""
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral) \
                or not 0 <= n < 2 ** 63:
            raise ValueError(f"n must be an int >= 0 (rows per batch), got {n!r}")
        n = int(n)
        if n <= self._capacity:
            return
        dt, sizes = self.dtype, self.layer_sizes
        self._xbuf = np.empty((n, sizes[0]), dtype=dt)
        self._ybuf = np.empty((n, sizes[-1]), dtype=dt)
        self._acts = [np.empty((n, s), dtype=dt) for s in sizes[1:]]
        self._deltas = [np.empty((n, s), dtype=dt) for s in sizes[1:]]
        self._scratch = np.empty(n * max(sizes[1:]), dtype=dt)
        self._zeros = np.zeros(n * max(sizes[1:]), dtype=dt)     # ReLU's comparand
        self._zeros.flags.writeable = False
        self._mask = np.empty(n * max(sizes[1:]), dtype=np.bool_)
        self._row = np.empty(n, dtype=dt)
        self._ones = np.ones(n, dtype=dt)          # bias gradients: ones @ delta (gemv)
        self._ones.flags.writeable = False
        self._capacity = n
        self._views = {}

    def _get_views(self, n):
        v = self._views.get(n)
        if v is None:
            if n > self._capacity:
                self.reserve(n)
            if len(self._views) > 8:
                self._views.clear()
            v = _Views()
            v.x = self._xbuf[:n]
            v.y = self._ybuf[:n]
            v.acts = [a[:n] for a in self._acts]
            v.deltas = [d[:n] for d in self._deltas]
            v.scratch = [self._scratch[:n * s].reshape(n, s) for s in self.layer_sizes[1:]]
            v.zeros = [self._zeros[:n * s].reshape(n, s) for s in self.layer_sizes[1:]]
            v.masks = [self._mask[:n * s].reshape(n, s) for s in self.layer_sizes[1:]]
            v.row = self._row[:n]
            v.row2d = v.row.reshape(n, 1)
            v.ones = self._ones[:n]
            # the fused path's per-layer arguments, looked up once: forward (W, b, z,
            # kernel code, NumPy activation after it or None); backward from the last
            # layer (i, its input and that transposed, or None for the batch's, W's
            # gradient, W, a buffer for W.T or None, the delta below or None, the bias
            # gradient below or None)
            v.forward = tuple((W, b, z, *step) for W, b, z, step in zip(
                self.coefs, self.intercepts, v.acts, self._forward_steps))
            v.backward = tuple(
                (i, v.acts[i - 1] if i else None, v.acts[i - 1].T if i else None,
                 self.coef_grads[i], self.coefs[i], self._transposed(i, n) if i else None,
                 v.deltas[i - 1] if i else None, self.intercept_grads[i - 1] if i else None)
                for i in range(self.n_layers - 1, -1, -1))
            self._views[n] = v
        return v

    # -- forward / backward on one batch (inputs already of the right dtype) ------------

    def _forward(self, X, v, nt=None, products=False):
        """Fill v.acts; return the output layer's pre-activation (logits / outputs).
        ``products``: the compiled products (see _loss_grad_batch)."""
        if not self.fused:
            return self._forward_reference(X, v)
        if nt is None:
            nt = resolve_n_threads(None)
        a = X
        for W, b, z, code, after in v.forward:
            if a is X and type(X) is not np.ndarray and _is_sparse(X):
                z[...] = X @ W
                _K.dense_forward(z, b, code, nt)
            elif products:
                _K.dense_forward_product(a, W, b, z, code, nt)
            else:
                _dot(a, W, z)
                _K.dense_forward(z, b, code, nt)
            if after is not None:
                after(z, None)
            a = z
        return a

    def _forward_reference(self, X, v):
        a = X
        last = self.n_layers - 1
        for i, (W, b) in enumerate(zip(self.coefs, self.intercepts)):
            z = v.acts[i]
            if i == 0 and _is_sparse(a):
                z[...] = a @ W
            else:
                np.matmul(a, W, out=z)
            np.add(z, b, out=z)
            if i < last:
                self._act(z, v.zeros[i])
            a = z
        return a

    def _outputs(self, z, v):
        """z := the output function of z, in place (predictions)."""
        if self.fused:
            _K.output_forward(z, self._out_code, resolve_n_threads(None))
        else:
            self._output_loss(z, None, v)

    def _batch_loss_sum(self, z, Y, v):
        """z := the output function of z; return the loss summed over the rows."""
        if not self.fused:
            return self._output_loss(z, Y, v)
        return _K.output_backward(z, Y, None, float(max(z.shape[0], 1)), self._out_code,
                                  v.deltas[-1], None, False, resolve_n_threads(None))

    def _softmax_xent(self, z, Y, v, w=None):
        """z := softmax(z) in place; return the summed (not averaged) cross-entropy."""
        row, row2d = v.row, v.row2d
        np.maximum.reduce(z, axis=1, out=row)
        np.subtract(z, row2d, out=z)
        if Y is not None:
            zy = float(np.vdot(Y, z)) if w is None else np.einsum("ij,ij->i", Y, z)
        np.exp(z, out=z)
        np.add.reduce(z, axis=1, out=row)
        np.divide(z, row2d, out=z)
        if Y is None:
            return 0.0
        np.log(row, out=row)
        if w is None:
            return float(np.add.reduce(row)) - zy
        return float(np.vdot(w, row - zy))

    def _output_loss(self, z, Y, v, w=None):
        """z := the output function of z, in place; return the loss summed over the rows
        (each row weighted by w when given); 0.0 when Y is None."""
        if self.output == "softmax":
            return self._softmax_xent(z, Y, v, w)
        s = v.scratch[-1]
        if Y is None:
            per = None
        elif self.output == "identity":
            np.subtract(z, Y, out=s)
            if w is None:
                return 0.5 * float(np.vdot(s, s))
            np.multiply(s, s, out=s)
            per = 0.5 * s
        elif self.output == "logistic":           # softplus(z) - Y z, stably
            np.abs(z, out=s)
            np.negative(s, out=s)
            np.exp(s, out=s)
            np.log1p(s, out=s)
            per = s + np.maximum(z, 0.0) - Y * z
        else:                                      # exp: Y log Y - Y z + exp(z) - Y
            with np.errstate(divide="ignore", invalid="ignore"):
                ylogy = np.where(Y > 0, Y * np.log(np.where(Y > 0, Y, 1)), 0.0)
            per = ylogy - Y * z - Y
        if self.output == "logistic":
            _expit(z)
        elif self.output == "exp":
            np.exp(z, out=z)
            if per is not None:
                per = per + z
        if per is None:
            return 0.0
        if w is None:
            return float(per.sum())
        return float(np.vdot(w, per.sum(axis=1)))

    def _loss_grad_batch(self, X, Y, v, w=None, *, total=None, accumulate=False,
                         penalty=True, after_layer=None, n_threads=None, products=False):
        """Mean loss (+ L2 penalty) of one batch; fills grads_flat.

        ``w``: per-row sample weights, or None (all ones).  Gradient accumulation over
        micro-batches of one batch: ``total`` is the whole batch's row count (or weight
        sum), ``accumulate`` adds to grads_flat instead of writing it, and ``penalty``
        (the L2 term, in loss and gradient) is given to exactly one micro-batch.
        ``after_layer(i)``: called once layer i's gradients are final (fused path only;
        its weights are not read again by this backward).  ``n_threads``: the layer
        kernels' thread count (None: fastoptim's default).  ``products``: the matrix
        products in compiled code too (scipy's gemm on fixed row blocks over those
        threads, fused with the layer kernels; the caller has checked _gemm_ready() and
        keeps every BLAS at one thread: see _Epochs.threads); same bits at any count."""
        n = X.shape[0]
        if total is None:
            total = n if w is None else float(np.add.reduce(w, dtype=np.float64))
        if not self.fused:
            if after_layer is not None:
                raise ValueError("after_layer needs the fused path")
            return self._loss_grad_reference(X, Y, v, w, total, accumulate, penalty)
        nt = resolve_n_threads(n_threads)
        dense = type(X) is np.ndarray
        out = self._forward(X, v, nt, products)
        d = v.deltas[-1]
        loss = _K.output_backward(out, Y, w, float(total), self._out_code, d,
                                  self.intercept_grads[-1], accumulate, nt) / total
        if self.mean_over_outputs:
            loss /= self.layer_sizes[-1]
        alpha = self._alpha if penalty else 0.0
        sumsq = 0.0
        for i, a_prev, a_prev_t, g, W, wt, dp, bias_grad in v.backward:
            target = self._grad_scratch(i) if accumulate else g
            compiled = products and (a_prev is not None or dense)
            if compiled:
                # both products and the derivative mask in one call; W is read before
                # layer i is stepped (after_layer below)
                _K.backward_products(X if a_prev is None else a_prev, d, W, target, dp,
                                     self._act_code, bias_grad, accumulate, wt, nt)
            elif a_prev is not None:
                _dot(a_prev_t, d, target)
            elif not dense and _is_sparse(X):
                target[...] = X.T @ d
            else:
                _dot(X.T, d, target)
            if accumulate:
                _K.axpy_sumsq(g, target, 1.0, nt)
            if alpha:
                sumsq += _K.axpy_sumsq(g, W, alpha / total, nt)
            if dp is not None and not compiled:     # before layer i may be stepped
                if wt is None:
                    np.matmul(d, W.T, out=dp)
                else:
                    _K.transpose_into(W, wt[0])
                    _dot(d, wt[0], dp)
            if after_layer is not None:
                after_layer(i)
            if dp is not None:
                if not compiled:
                    _K.dense_backward(dp, a_prev, self._act_code, bias_grad, accumulate, nt)
                d = dp
        if alpha:
            loss += 0.5 * alpha / total * sumsq
        return loss

    def _transposed(self, i, rows):
        """A buffer for layer i's weights transposed (twice: the compiled products'
        two threads make a copy each), or None: for a small product (rows x W.size up
        to _TRANSPOSED_MAX_MACS) ``d @ W.T`` runs faster as the plain product with W's
        contiguous transpose (OpenBLAS's small-matrix kernels; measured -12 % on 64 x
        128 x 64 float64, +3 % at 200 rows); its sums can differ from np.matmul(d, W.T)'s
        in the last bits (OpenBLAS's transposed-operand kernels add in another order)."""
        if rows * self.coefs[i].size > _TRANSPOSED_MAX_MACS:
            return None
        wt = self._wts[i]
        if wt is None:
            wt = self._wts[i] = np.empty((2, *self.coefs[i].shape[::-1]), dtype=self.dtype)
        return wt

    def _grad_scratch(self, i):
        """A scratch matrix for layer i's weight gradient (the largest layer's size,
        shared): accumulation adds a micro-batch's product without a parameter-sized
        buffer."""
        if self._gscratch is None:
            self._gscratch = np.empty(max(W.size for W in self.coefs), dtype=self.dtype)
        return self._gscratch[:self.coefs[i].size].reshape(self.coefs[i].shape)

    def _loss_grad_reference(self, X, Y, v, w, total, accumulate, penalty):
        """The NumPy path of _loss_grad_batch (the kernels' reference)."""
        before = self.grads_flat.copy() if accumulate else None
        n = X.shape[0]
        out = self._forward(X, v)
        loss = self._output_loss(out, Y, v, w) / total
        if self.mean_over_outputs:
            loss /= self.layer_sizes[-1]
        d = v.deltas[-1]
        np.subtract(out, Y, out=d)
        if w is None:
            np.multiply(d, 1.0 / total, out=d)
        else:
            np.multiply(d, (w / total).reshape(-1, 1), out=d)
        for i in range(self.n_layers - 1, -1, -1):
            a_prev = X if i == 0 else v.acts[i - 1]
            if i == 0 and _is_sparse(a_prev):
                self.coef_grads[0][...] = a_prev.T @ d
            else:
                np.matmul(a_prev.T, d, out=self.coef_grads[i])
            np.matmul(v.ones[:n], d, out=self.intercept_grads[i])
            if i > 0:
                dp = v.deltas[i - 1]
                np.matmul(d, self.coefs[i].T, out=dp)
                self._deriv(v.acts[i - 1], dp, v.scratch[i - 1], v.masks[i - 1])
                d = dp
        if self.alpha and penalty:
            w, gw = self.weights_flat, self.weight_grads_flat
            loss += 0.5 * self.alpha / total * float(np.vdot(w, w))
            np.add(gw, w * (self.alpha / total), out=gw)
        if accumulate:
            self.grads_flat += before
        return loss

    def _gather(self, X, Y, idx, v):
        """Copy rows idx of X (and Y) into the batch buffers; return the views."""
        if type(X) is np.ndarray:
            xb = v.x
            _K.take_rows(X, idx, xb)      # one memcpy per row
        else:
            xb = X[idx]                   # sparse
        if Y is not None:
            _K.take_rows(Y, idx, v.y)
            return xb, v.y
        return xb, None

    # -- public API ---------------------------------------------------------------------

    def check_X(self, X, name="X"):
        """X as a C-contiguous 2-D array (or CSR matrix) of this network's dtype with the
        right width.  A finite float64 value beyond float32's range is refused by name
        for a float32 network (it would become infinity)."""
        _refuse_masked(X, name)
        sparse = _is_sparse(X)
        if not sparse:
            X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
        if X.shape[1] != self.layer_sizes[0]:
            raise ValueError(f"{name} has {X.shape[1]} features, but the network expects "
                             f"{self.layer_sizes[0]}")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got dtype {X.dtype}")
        if sparse:
            X = X.tocsr()
            _check_representable(X.data, self.dtype, name)
            return X.astype(self.dtype) if X.dtype != self.dtype else X
        _check_representable(X, self.dtype, name)
        return np.ascontiguousarray(X, dtype=self.dtype)

    def targets(self, y, name="y"):
        """Targets as a C-contiguous (n, n_outputs) array of this network's dtype.

        For a softmax output, a 1-D ``y`` holds class indices ``0..n_outputs-1`` (turned
        into one-hot rows); a 2-D ``y`` holds per-class target probabilities.  For the
        other outputs a 1-D ``y`` is allowed when there is one output.
        """
        _refuse_masked(y, name)
        y = np.asarray(y)
        k = self.layer_sizes[-1]
        if y.ndim == 1 and self.output == "softmax":
            if y.dtype.kind not in "iu" or (y.size and (y.min() < 0 or y.max() >= k)):
                raise ValueError(f"1-D {name} must hold class indices in [0, {k}) for a "
                                 f"softmax output with {k} units")
            Y = np.zeros((y.shape[0], k), dtype=self.dtype)
            Y[np.arange(y.shape[0]), y] = 1
            return Y
        if y.ndim == 1 and k == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[1] != k:
            raise ValueError(f"{name} must have shape (n_samples, {k}), got {y.shape}")
        if y.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got dtype {y.dtype}")
        _check_representable(y, self.dtype, name)
        return np.ascontiguousarray(y, dtype=self.dtype)

    def _batches(self, n):
        chunk = max(self._capacity, min(n, 512))
        self.reserve(chunk)
        for start in range(0, n, chunk):
            yield start, min(start + chunk, n)

    def forward(self, X):
        """Network output for every row of X: probabilities (softmax, logistic) or values
        (identity, exp).

        Returns a new (n_samples, n_outputs) array; works through X in chunks of the
        buffer capacity.
        """
        X = self.check_X(X)
        n = X.shape[0]
        out = np.empty((n, self.layer_sizes[-1]), dtype=self.dtype)
        for start, stop in self._batches(n):
            v = self._get_views(stop - start)
            z = self._forward(X[start:stop], v)
            self._outputs(z, v)
            out[start:stop] = z
        return out

    predict = forward

    def loss(self, X, Y, *, penalty=True):
        """Mean loss over all rows of X (no gradients), plus the L2 penalty with n = len(X)."""
        X = self.check_X(X)
        Y = self.targets(Y)
        n = X.shape[0]
        if Y.shape[0] != n:
            raise ValueError(f"X and Y have different lengths: {n} != {Y.shape[0]}")
        if n == 0:
            raise ValueError("cannot compute a loss on zero samples")
        total = 0.0
        for start, stop in self._batches(n):
            v = self._get_views(stop - start)
            z = self._forward(X[start:stop], v)
            total += self._batch_loss_sum(z, Y[start:stop], v)
        loss = total / n
        if self.mean_over_outputs:
            loss /= self.layer_sizes[-1]
        if penalty and self.alpha:
            loss += 0.5 * self.alpha / n * float(np.vdot(self.weights_flat, self.weights_flat))
        return loss

    def loss_and_grad(self, X, Y):
        """Mean loss of the batch (X, Y) plus the L2 penalty; gradients into grads_flat.

        X and Y are processed as one batch (the buffers grow to ``len(X)`` if needed).
        """
        X = self.check_X(X)
        Y = self.targets(Y)
        n = X.shape[0]
        if Y.shape[0] != n or n == 0:
            raise ValueError(f"need matching non-empty X and Y, got {n} and {Y.shape[0]} rows")
        v = self._get_views(n)
        return self._loss_grad_batch(X, Y, v)

    def fit(self, X, y, *, optimizer=None, epochs=10, batch_size=64, shuffle=True,
            seed=None, scheduler=None, validation_data=None, validation_fraction=None,
            early_stopping=False, patience=10, tol=1e-4, verbose=False, progress=None):
        """Train in place with mini-batches; return a :class:`~fastoptim.nn.History`.

        ``y``: see :meth:`targets` (class indices or (n, n_outputs) targets).
        ``optimizer``: an optimizer built on ``[net.params_flat]`` (e.g.
        ``fastoptim.optim.Adam([net.params_flat], lr=1e-3)``), an optimizer class or
        factory called as ``factory([net.params_flat])``, a solver name ("adam", "sgd",
        "rmsprop") or None (Adam, lr=1e-3).  ``scheduler``: a fastoptim.lr_scheduler
        object bound to that optimizer (so pass an optimizer instance with it).
        Validation: ``validation_data=(X_val, y_val)``, or ``validation_fraction`` of the
        training rows split off (seeded by ``seed``; stratified for class indices).
        ``early_stopping`` stops after more than ``patience`` epochs without the
        validation loss improving by ``tol`` and restores the best weights.
        """
        from fastoptim.datasets._split import _split_indices

        X = self.check_X(X)
        Y = self.targets(y)
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X and y have different lengths: {X.shape[0]} != {Y.shape[0]}")
        if X.shape[0] == 0:
            raise ValueError("cannot train on zero samples")
        rng = np.random.default_rng(seed)
        X_val = Y_val = None
        if validation_data is not None:
            if validation_fraction is not None:
                raise ValueError("give validation_data or validation_fraction, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (X_val, y_val), got "
                                f"{type(validation_data).__name__}")
            X_val = self.check_X(validation_data[0], "X_val")
            Y_val = self.targets(validation_data[1], "y_val")
            if X_val.shape[0] != Y_val.shape[0] or X_val.shape[0] == 0:
                raise ValueError("validation X and y must be non-empty and of equal length")
        elif validation_fraction is not None:
            if not 0.0 < validation_fraction < 1.0:
                raise ValueError("validation_fraction must be in (0, 1), "
                                 f"got {validation_fraction!r}")
            n = X.shape[0]
            n_val = int(np.ceil(validation_fraction * n))
            if not 0 < n_val < n:
                raise ValueError(f"validation_fraction={validation_fraction} leaves an empty split")
            y1 = np.asarray(y)
            strat = self.output == "softmax" and y1.ndim == 1
            tr, va = _split_indices(y1 if strat else None, n, n_val, strat, rng)
            X, X_val, Y, Y_val = X[tr], X[va], Y[tr], Y[va]
        if optimizer is None:
            optimizer = "adam"
        if isinstance(optimizer, str):
            optimizer = make_optimizer(optimizer, [self.params_flat])
        elif not hasattr(optimizer, "step") and callable(optimizer):
            optimizer = optimizer([self.params_flat])
        elif not hasattr(optimizer, "step"):
            raise TypeError("optimizer must be None, a solver name, an optimizer or an "
                            f"optimizer class/factory, got {type(optimizer).__name__}")
        return train(self, X, Y, optimizer, epochs=epochs, batch_size=batch_size,
                     shuffle=shuffle, seed=rng, scheduler=scheduler, X_val=X_val,
                     Y_val=Y_val, early_stopping=early_stopping, monitor="val_loss",
                     patience=patience, tol=tol, verbose=verbose, progress=progress)
