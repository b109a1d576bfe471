# Dense-layer kernels for fastoptim.nn: the element-wise work of one mini-batch around
# the matrix products (which stay in NumPy's BLAS), each fused into ONE pass over the
# (rows, units) matrix:
#   dense_forward    z := f(z + b)                       (bias add + relu / identity)
#   dense_backward   d := d * f'(a); bias_grad (+)= column sums of d
#   output_backward  z := out(z); loss; d := (out - Y) * row scale; bias_grad (+)= sums
#   output_forward   z := out(z)                          (predictions)
#   axpy_sumsq       y += c * x; return sum(x * x)        (L2 fold, gradient accumulation)
#   take_rows        out := src[rows]                     (a mini-batch's rows)
#   transpose_into   dst := src.T                         (a weight matrix for the delta
#                                                          product: see transpose_into)
# Included once from _kernels.pxi (it uses that file's `floating`, `_thread_count`,
# `_MaskedArray` and OpenMP helpers).
#
# Formulas are those of the NumPy path in fastoptim/nn/_network.py, operation by
# operation (the build rounds every operation: -ffp-contract=off), so relu, identity,
# the derivatives, the L2 fold and the deltas give the same bits; the output layer's
# exp/log/log1p come from libm here and from NumPy's own SIMD code there (a few ulp
# apart), and the sums (column sums, losses) are taken in double in a fixed order.
#
# Threads: a batch's rows are cut into blocks of ROW_BLOCK rows; threads take whole
# blocks and the column sums are kept per block, then added block after block, so the
# result does not depend on the thread count.

from libc.math cimport exp, expf, log, logf, log1p, log1pf
from libc.string cimport memcpy, memset
from cpython.ref cimport PyObject
from numpy import bool_ as _np_bool

cdef extern from "_layers.h":
    double fo_axpy_sumsq_d(double* y, const double* x, double c, Py_ssize_t lo,
                           Py_ssize_t hi) noexcept nogil
    double fo_axpy_sumsq_f(float* y, const float* x, float c, Py_ssize_t lo,
                           Py_ssize_t hi) noexcept nogil
    void fo_transpose_d(const double* src, double* dst, Py_ssize_t k,
                        Py_ssize_t m) noexcept nogil
    void fo_transpose_f(const float* src, float* dst, Py_ssize_t k,
                        Py_ssize_t m) noexcept nogil

cdef enum Activation:
    ACT_IDENTITY = 0
    ACT_RELU = 1
    ACT_TANH = 2
    ACT_SIGMOID = 3

cdef enum Output:
    OUT_SOFTMAX = 0
    OUT_IDENTITY = 1
    OUT_LOGISTIC = 2
    OUT_EXP = 3

#: the codes the layer kernels take, by position
LAYER_ACTIVATIONS = ("identity", "relu", "tanh", "sigmoid")
LAYER_OUTPUTS = ("softmax", "identity", "logistic", "exp")
LAYER_FORWARD_ACTIVATIONS = LAYER_ACTIVATIONS[:2]

# Rows per block of the row split (and of the per-block column sums).
cdef Py_ssize_t ROW_BLOCK = 16
# Below this much work per call (elements x cost of the element's function), a second
# thread costs more than it saves.  Cheap elements (relu) cost 1, libm calls 16.
cdef Py_ssize_t LAYER_PARALLEL_MIN_WORK = 65536


def get_layer_parallel_min_work():
    return LAYER_PARALLEL_MIN_WORK


def set_layer_parallel_min_work(Py_ssize_t n):
    global LAYER_PARALLEL_MIN_WORK
    if n < 0:
        raise ValueError(f"layer_parallel_min_work must be >= 0, got {n}")
    LAYER_PARALLEL_MIN_WORK = n


# ---------------------------------------------------------------------------
# Scalar functions in the buffer's precision
# ---------------------------------------------------------------------------

cdef inline floating _exp_f(floating x) noexcept nogil:
    if floating is float:
        return expf(x)
    else:
        return exp(x)


cdef inline floating _log_f(floating x) noexcept nogil:
    if floating is float:
        return logf(x)
    else:
        return log(x)


cdef inline floating _log1p_f(floating x) noexcept nogil:
    if floating is float:
        return log1pf(x)
    else:
        return log1p(x)


cdef inline floating _fabs_f(floating x) noexcept nogil:
    if floating is float:
        return fabsf(x)
    else:
        return fabs(x)


cdef inline floating _relu(floating x) noexcept nogil:
    # np.maximum(x, 0): x when x > 0 or NaN, else +0 (also for x = -0)
    if x > 0 or x != x:
        return x
    return 0


# ---------------------------------------------------------------------------
# Row loops: rows [r0, r1) of an (n, m) C-contiguous matrix
# ---------------------------------------------------------------------------

cdef void _forward_rows(floating* z, const floating* b, Py_ssize_t m, Py_ssize_t r0,
                        Py_ssize_t r1, int act) noexcept nogil:
    cdef Py_ssize_t r, j
    cdef floating* row
    for r in range(r0, r1):
        row = z + r * m
        if act == ACT_RELU:
            for j in range(m):
                row[j] = _relu(row[j] + b[j])
        else:
            for j in range(m):
                row[j] = row[j] + b[j]


cdef inline void _add_row(double* acc, const floating* row, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(m):
        acc[j] += row[j]


cdef void _backward_rows(floating* d, const floating* a, Py_ssize_t m, Py_ssize_t r0,
                         Py_ssize_t r1, int act, double* colsum) noexcept nogil:
    # d *= f'(a), f' from the activation's output a; colsum (m doubles, or NULL) += rows
    cdef Py_ssize_t r, j
    cdef floating* dr
    cdef const floating* ar
    cdef floating one = 1, zero = 0
    for r in range(r0, r1):
        dr = d + r * m
        ar = a + r * m
        if act == ACT_RELU:
            for j in range(m):
                dr[j] = dr[j] * (one if ar[j] > 0 else zero)   # d * (a > 0), as NumPy
        elif act == ACT_TANH:
            for j in range(m):
                dr[j] = dr[j] * (one - ar[j] * ar[j])
        elif act == ACT_SIGMOID:
            for j in range(m):
                dr[j] = dr[j] * ((one - ar[j]) * ar[j])
        if colsum != NULL:
            _add_row(colsum, dr, m)


cdef void _output_fn_rows(floating* z, Py_ssize_t m, Py_ssize_t r0, Py_ssize_t r1,
                          int out) noexcept nogil:
    # z := out(z) (no targets: predictions)
    cdef Py_ssize_t r, j
    cdef floating* row
    cdef floating mx, e, s
    cdef floating one = 1
    for r in range(r0, r1):
        row = z + r * m
        if out == OUT_SOFTMAX:
            mx = row[0]
            for j in range(1, m):
                if not (mx >= row[j]):
                    mx = row[j]
            s = 0
            for j in range(m):
                e = _exp_f(row[j] - mx)
                row[j] = e
                s = s + e
            for j in range(m):
                row[j] = row[j] / s
        elif out == OUT_LOGISTIC:
            for j in range(m):
                e = _exp_f(-_fabs_f(row[j]))
                row[j] = (one if row[j] >= 0 else e) / (one + e)
        elif out == OUT_EXP:
            for j in range(m):
                row[j] = _exp_f(row[j])


cdef double _output_rows(floating* z, const floating* Y, const floating* w, floating total,
                         floating inv_n, floating* d, Py_ssize_t m, Py_ssize_t r0,
                         Py_ssize_t r1, int out, double* colsum) noexcept nogil:
    # z := out(z); per-row loss (times w[r]) summed in double; d := (out - Y) * scale
    cdef Py_ssize_t r, j
    cdef floating* zr
    cdef const floating* yr
    cdef floating* dr
    cdef floating x, y, e, s, mx, scale
    cdef floating one = 1, half = 0.5
    cdef double row_loss, zy, total_loss = 0
    for r in range(r0, r1):
        zr = z + r * m
        yr = Y + r * m
        dr = d + r * m
        scale = inv_n if w == NULL else w[r] / total
        row_loss = 0
        if out == OUT_SOFTMAX:
            mx = zr[0]
            for j in range(1, m):
                if not (mx >= zr[j]):
                    mx = zr[j]
            s = 0
            zy = 0
            for j in range(m):
                x = zr[j] - mx
                zy += <double> yr[j] * <double> x
                e = _exp_f(x)
                zr[j] = e
                s = s + e
            for j in range(m):
                zr[j] = zr[j] / s
            row_loss = <double> _log_f(s) - zy
        elif out == OUT_IDENTITY:
            for j in range(m):
                x = zr[j] - yr[j]
                row_loss += <double> x * <double> x
            row_loss = 0.5 * row_loss
        elif out == OUT_LOGISTIC:
            # softplus(z) - y z, stably; then z := expit(z) as scipy's
            for j in range(m):
                x = zr[j]
                y = yr[j]
                e = _exp_f(-_fabs_f(x))
                row_loss += (<double> _log1p_f(e) + <double> (x if x > 0 else 0)
                             - <double> y * <double> x)
                zr[j] = (one if x >= 0 else e) / (one + e)
        else:
            # y log y - y z + exp(z) - y, with 0 log 0 = 0
            for j in range(m):
                x = zr[j]
                y = yr[j]
                e = _exp_f(x)
                if y > 0:
                    row_loss += <double> y * <double> _log_f(y)
                row_loss += <double> e - <double> y * <double> x - <double> y
                zr[j] = e
        for j in range(m):
            dr[j] = (zr[j] - yr[j]) * scale
        if colsum != NULL:
            _add_row(colsum, dr, m)
        total_loss += row_loss if w == NULL else <double> w[r] * row_loss
    return total_loss


# ---------------------------------------------------------------------------
# Driver: blocks of rows over threads, fixed-order column sums
# ---------------------------------------------------------------------------

cdef struct LayerCall:
    int op              # 0 forward, 1 backward, 2 output forward, 3 output backward
    int fn              # activation or output code
    char* z             # forward/output: z (in/out); backward: d (in/out)
    const char* other   # forward: bias; backward: a; output backward: Y
    const char* w       # output backward: sample weights or NULL
    char* d             # output backward: delta
    char* bias_grad     # (m,) or NULL
    bint accumulate     # bias_grad += sums (else =)
    double total
    double inv_n
    Py_ssize_t n
    Py_ssize_t m


cdef double _block(const LayerCall* c, bint dbl, Py_ssize_t blk, double* colsum) noexcept nogil:
    cdef Py_ssize_t r0 = blk * ROW_BLOCK
    cdef Py_ssize_t r1 = min(r0 + ROW_BLOCK, c.n)
    if c.op == 0:
        if dbl:
            _forward_rows(<double*> c.z, <const double*> c.other, c.m, r0, r1, c.fn)
        else:
            _forward_rows(<float*> c.z, <const float*> c.other, c.m, r0, r1, c.fn)
    elif c.op == 1:
        if dbl:
            _backward_rows(<double*> c.z, <const double*> c.other, c.m, r0, r1, c.fn, colsum)
        else:
            _backward_rows(<float*> c.z, <const float*> c.other, c.m, r0, r1, c.fn, colsum)
    elif c.op == 2:
        if dbl:
            _output_fn_rows(<double*> c.z, c.m, r0, r1, c.fn)
        else:
            _output_fn_rows(<float*> c.z, c.m, r0, r1, c.fn)
    elif dbl:
        return _output_rows(<double*> c.z, <const double*> c.other, <const double*> c.w,
                            <double> c.total, <double> c.inv_n, <double*> c.d, c.m, r0, r1,
                            c.fn, colsum)
    else:
        return _output_rows(<float*> c.z, <const float*> c.other, <const float*> c.w,
                            <float> c.total, <float> c.inv_n, <float*> c.d, c.m, r0, r1,
                            c.fn, colsum)
    return 0


cdef double _drive_layer(const LayerCall* c, bint dbl, int threads, Py_ssize_t cost,
                         double* partial, double* losses) noexcept nogil:
    # partial: nblocks x m doubles (zeroed) when column sums are wanted, else NULL;
    # losses: nblocks doubles.  Returns the loss summed block after block.
    cdef Py_ssize_t nb = (c.n + ROW_BLOCK - 1) // ROW_BLOCK, blk, j
    cdef int tid, team
    cdef double loss = 0
    if (threads > 1 and nb > 1 and FASTOPTIM_HAVE_OPENMP
            and c.n * c.m * cost >= LAYER_PARALLEL_MIN_WORK):
        with parallel(num_threads=threads):
            tid = threadid()
            team = fastoptim_omp_num_threads()
            # contiguous runs of blocks per thread (neighbouring rows share cache lines)
            for blk in range(nb):
                if blk * team // nb == tid:
                    losses[blk] = _block(c, dbl, blk,
                                         NULL if partial == NULL else partial + blk * c.m)
    else:
        for blk in range(nb):
            losses[blk] = _block(c, dbl, blk, NULL if partial == NULL else partial + blk * c.m)
    for blk in range(nb):
        loss += losses[blk]
    if partial != NULL:
        _sum_partials(c, dbl, partial, nb)
    return loss


cdef void _sum_partials(const LayerCall* c, bint dbl, double* partial,
                        Py_ssize_t nb) noexcept nogil:
    # bias_grad (+)= the nb per-block column sums in partial, added block after block
    cdef Py_ssize_t blk, j
    cdef double* sums
    for blk in range(1, nb):
        sums = partial + blk * c.m
        for j in range(c.m):
            partial[j] += sums[j]
    if dbl:
        for j in range(c.m):
            if c.accumulate:
                (<double*> c.bias_grad)[j] = (<double*> c.bias_grad)[j] + <double> partial[j]
            else:
                (<double*> c.bias_grad)[j] = <double> partial[j]
    else:
        for j in range(c.m):
            if c.accumulate:
                (<float*> c.bias_grad)[j] = (<float*> c.bias_grad)[j] + <float> partial[j]
            else:
                (<float*> c.bias_grad)[j] = <float> partial[j]


cdef enum:
    LAYER_STACK_DOUBLES = 1024    # scratch of a mini-batch-sized call: on the stack


cdef double _run_layer(LayerCall* c, bint dbl, object n_threads, Py_ssize_t cost) except? -1.0:
    # Scratch first (a failed allocation changes nothing), then one GIL-free call.
    cdef int threads = _thread_count(n_threads)
    cdef Py_ssize_t nb = (c.n + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t n_partial = nb * c.m if c.bias_grad != NULL and c.n > 0 else 0
    cdef double on_stack[LAYER_STACK_DOUBLES]
    cdef double* scratch = on_stack
    cdef double* partial = NULL
    cdef double loss
    if max(nb, 1) + n_partial > LAYER_STACK_DOUBLES:
        scratch = <double*> malloc((max(nb, 1) + n_partial) * sizeof(double))
        if scratch == NULL:
            raise MemoryError()
    if n_partial:
        partial = scratch + max(nb, 1)
        memset(partial, 0, n_partial * sizeof(double))
    with nogil:
        if c.n == 0 and c.bias_grad != NULL and not c.accumulate:
            memset(c.bias_grad, 0, c.m * (sizeof(double) if dbl else sizeof(float)))
        loss = _drive_layer(c, dbl, threads, cost, partial, scratch) if c.n > 0 else 0.0
    if scratch != on_stack:
        free(scratch)
    return loss


# ---------------------------------------------------------------------------
# Checked entry points
# ---------------------------------------------------------------------------

cdef struct _Extents:
    # the byte ranges of one call's arrays so far (a call takes at most 7), kept in C:
    # these checks run on every mini-batch
    int n
    size_t start[8]
    size_t end[8]
    bint writeable[8]
    PyObject* name[8]       # the argument names: str constants of this module


cdef char* _layer_array(object obj, str name, object ref, Py_ssize_t rows, Py_ssize_t cols,
                        bint writeable, _Extents* extents) except NULL:
    """obj: a C-contiguous, aligned, native float32/float64 array of ref's dtype and
    shape (rows, cols) (cols -1: 1-D of rows; -2: any shape of rows elements); its byte
    range goes to extents (no two may overlap unless both are only read)."""
    cdef cnp.ndarray a
    cdef Py_ssize_t nd = 1 if cols < 0 else 2
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{name} must be a numpy.ndarray of float32 or float64, got "
                        f"{type(obj).__name__}")
    if not cnp.PyArray_CheckExact(obj) and isinstance(obj, _MaskedArray):
        raise TypeError(f"{name} is a masked array: its mask would be ignored")
    a = <cnp.ndarray> obj
    if ref is None:
        if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT and cnp.PyArray_TYPE(a) != cnp.NPY_DOUBLE:
            raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    elif cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(<cnp.ndarray> ref):
        raise TypeError(f"{name} has dtype {a.dtype}, expected {(<cnp.ndarray> ref).dtype} "
                        f"(one dtype per call)")
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"{name} must be in native byte order, got dtype {a.dtype.str!r}")
    if cols == -2:
        if cnp.PyArray_SIZE(a) != rows:
            raise ValueError(f"{name} must have {rows} elements, got shape {_shape_str(a)}")
    elif cnp.PyArray_NDIM(a) != nd:
        raise ValueError(f"{name} must be {nd}-D, got shape {_shape_str(a)}")
    elif cnp.PyArray_DIM(a, 0) != rows or (nd == 2 and cnp.PyArray_DIM(a, 1) != cols):
        want = str((rows,)) if nd == 1 else str((rows, cols))
        raise ValueError(f"{name} must have shape {want}, got {_shape_str(a)}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"{name} must be C-contiguous")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"{name} must be aligned to its dtype")
    if writeable and not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"{name} must be writeable: it is updated in place")
    cdef size_t start = <size_t> cnp.PyArray_DATA(a)
    cdef size_t end = start + <size_t> cnp.PyArray_NBYTES(a)
    cdef int k
    if end != start:
        for k in range(extents.n):
            if start < extents.end[k] and extents.start[k] < end and (
                    extents.writeable[k] or writeable):
                raise ValueError(f"{name} and {<object> extents.name[k]} share memory; each "
                                 f"needs its own")
        k = extents.n
        extents.start[k], extents.end[k], extents.writeable[k] = start, end, writeable
        extents.name[k] = <PyObject*> name
        extents.n = k + 1
    return <char*> cnp.PyArray_DATA(a)


cdef int _code(object value, str name, tuple names) except -1:
    if type(value) is not int and (isinstance(value, bool) or
                                   not isinstance(value, numbers.Integral)):
        raise TypeError(f"{name} must be an int code, got {type(value).__name__}")
    if not 0 <= value < len(names):
        raise ValueError(f"{name} must be a code in [0, {len(names)}) for "
                         f"{', '.join(names)}; got {value}")
    return <int> value


cdef tuple _matrix_shape(object z, str name):
    if not cnp.PyArray_Check(z):
        raise TypeError(f"{name} must be a numpy.ndarray of float32 or float64, got "
                        f"{type(z).__name__}")
    if cnp.PyArray_NDIM(<cnp.ndarray> z) != 2:
        raise ValueError(f"{name} must be 2-D (rows, units), got shape {_shape_str(z)}")
    return cnp.PyArray_DIM(<cnp.ndarray> z, 0), cnp.PyArray_DIM(<cnp.ndarray> z, 1)


def dense_forward(z, bias, activation, n_threads=1):
    """z := f(z + bias) in place, for the (n, m) matmul output z and the (m,) bias;
    ``activation``: a code into LAYER_FORWARD_ACTIVATIONS (identity, relu).  tanh and
    the logistic are left to NumPy's SIMD tanh after the bias add (identity): libm's
    scalar tanh is an order of magnitude slower than the pass it would save."""
    cdef LayerCall c
    cdef _Extents ext
    ext.n = 0
    c.fn = _code(activation, "activation", LAYER_FORWARD_ACTIVATIONS)
    c.n, c.m = _matrix_shape(z, "z")
    c.z = _layer_array(z, "z", None, c.n, c.m, True, &ext)
    c.other = _layer_array(bias, "bias", z, c.m, -1, False, &ext)
    c.op, c.bias_grad, c.w, c.d, c.accumulate = 0, NULL, NULL, NULL, False
    _run_layer(&c, cnp.PyArray_TYPE(<cnp.ndarray> z) == cnp.NPY_DOUBLE, n_threads, 1)


def dense_backward(d, a, activation, bias_grad=None, accumulate=False, n_threads=1):
    """d := d * f'(a) in place (a: the activation's output, same shape as d); then
    ``bias_grad`` (m,) := (``accumulate``: +=) the column sums of d, if given."""
    cdef LayerCall c
    cdef _Extents ext
    ext.n = 0
    c.fn = _code(activation, "activation", LAYER_ACTIVATIONS)
    c.n, c.m = _matrix_shape(d, "d")
    c.z = _layer_array(d, "d", None, c.n, c.m, True, &ext)
    c.other = _layer_array(a, "a", d, c.n, c.m, False, &ext)
    c.bias_grad = NULL if bias_grad is None else _layer_array(bias_grad, "bias_grad", d, c.m,
                                                              -1, True, &ext)
    c.accumulate = _flag(accumulate, "accumulate")
    c.op, c.w, c.d = 1, NULL, NULL
    _run_layer(&c, cnp.PyArray_TYPE(<cnp.ndarray> d) == cnp.NPY_DOUBLE, n_threads, 1)


def output_forward(z, output, n_threads=1):
    """z := out(z) in place: softmax rows, logistic, identity or exp (a code into
    LAYER_OUTPUTS)."""
    cdef LayerCall c
    cdef _Extents ext
    ext.n = 0
    c.fn = _code(output, "output", LAYER_OUTPUTS)
    c.n, c.m = _matrix_shape(z, "z")
    c.z = _layer_array(z, "z", None, c.n, c.m, True, &ext)
    c.op, c.other, c.bias_grad, c.w, c.d, c.accumulate = 2, NULL, NULL, NULL, NULL, False
    _run_layer(&c, cnp.PyArray_TYPE(<cnp.ndarray> z) == cnp.NPY_DOUBLE, n_threads,
               16 if c.fn != OUT_IDENTITY else 1)


def output_backward(z, Y, sample_weight, double total, output, d, bias_grad=None,
                    accumulate=False, n_threads=1):
    """The output layer in one pass: z := out(z) in place; d := (out - Y) * scale with
    scale = 1 / total, or sample_weight[i] / total per row when given; ``bias_grad``
    := (``accumulate``: +=) the column sums of d.  Returns the loss summed over the rows
    (each times its weight), in double: cross-entropy (softmax), binary cross-entropy
    (logistic), half the squared error (identity), half Poisson deviance (exp)."""
    cdef LayerCall c
    cdef _Extents ext
    ext.n = 0
    c.fn = _code(output, "output", LAYER_OUTPUTS)
    c.n, c.m = _matrix_shape(z, "z")
    if c.m < 1:
        raise ValueError("z needs at least one column (output unit)")
    if not (total > 0 and total < INFINITY):
        raise ValueError(f"total must be a finite number > 0 (rows or sum of weights), "
                         f"got {total}")
    c.z = _layer_array(z, "z", None, c.n, c.m, True, &ext)
    c.other = _layer_array(Y, "Y", z, c.n, c.m, False, &ext)
    c.w = NULL if sample_weight is None else _layer_array(sample_weight, "sample_weight", z,
                                                          c.n, -1, False, &ext)
    c.d = _layer_array(d, "d", z, c.n, c.m, True, &ext)
    c.bias_grad = NULL if bias_grad is None else _layer_array(bias_grad, "bias_grad", z, c.m,
                                                              -1, True, &ext)
    c.accumulate = _flag(accumulate, "accumulate")
    c.op = 3
    c.total = total
    c.inv_n = 1.0 / total
    return _run_layer(&c, cnp.PyArray_TYPE(<cnp.ndarray> z) == cnp.NPY_DOUBLE, n_threads,
                      16 if c.fn != OUT_IDENTITY else 1)


cdef bint _flag(object value, str name) except -1:
    if not isinstance(value, (bool, _np_bool)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


cdef inline double _axpy_sumsq_range(floating* y, const floating* x, floating c,
                                     Py_ssize_t lo, Py_ssize_t hi) noexcept nogil:
    # the loop is in _layers.h: the sum in four lanes combined in a fixed order
    if floating is float:
        return fo_axpy_sumsq_f(y, x, c, lo, hi)
    else:
        return fo_axpy_sumsq_d(y, x, c, lo, hi)


def axpy_sumsq(y, x, double c, n_threads=1):
    """y += c * x in place (c rounded to the arrays' dtype first, as NumPy does with a
    Python float); return sum(x * x) in double, summed in blocks of a fixed size in a
    fixed order.  y and x: contiguous arrays of one dtype and shape."""
    cdef _Extents ext
    ext.n = 0
    for name, a in (("x", x), ("y", y)):
        if not cnp.PyArray_Check(a):
            raise TypeError(f"{name} must be a numpy.ndarray of float32 or float64, got "
                            f"{type(a).__name__}")
    if (<object> y).shape != (<object> x).shape:
        raise ValueError(f"y has shape {_shape_str(y)} but x has shape {_shape_str(x)}")
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray> x)
    cdef char* px = _layer_array(x, "x", None, n, -2, False, &ext)
    cdef char* py = _layer_array(y, "y", x, n, -2, True, &ext)
    cdef int threads = _thread_count(n_threads)
    cdef bint dbl = cnp.PyArray_TYPE(<cnp.ndarray> x) == cnp.NPY_DOUBLE
    cdef Py_ssize_t nb = (n + NORM_BLOCK - 1) // NORM_BLOCK, b, lo, hi
    cdef double* partial = <double*> malloc(max(nb, 1) * sizeof(double))
    cdef double total = 0
    cdef int tid, team
    if partial == NULL:
        raise MemoryError()
    with nogil:
        if threads > 1 and n >= PARALLEL_MIN_ELEMENTS and nb > 1 and FASTOPTIM_HAVE_OPENMP:
            with parallel(num_threads=threads):
                tid = threadid()
                team = fastoptim_omp_num_threads()
                for b in range(nb):
                    if b * team // nb == tid:
                        lo = b * NORM_BLOCK
                        hi = min(lo + NORM_BLOCK, n)
                        if dbl:
                            partial[b] = _axpy_sumsq_range(<double*> py, <const double*> px,
                                                           <double> c, lo, hi)
                        else:
                            partial[b] = _axpy_sumsq_range(<float*> py, <const float*> px,
                                                           <float> c, lo, hi)
        else:
            for b in range(nb):
                lo = b * NORM_BLOCK
                hi = min(lo + NORM_BLOCK, n)
                if dbl:
                    partial[b] = _axpy_sumsq_range(<double*> py, <const double*> px,
                                                   <double> c, lo, hi)
                else:
                    partial[b] = _axpy_sumsq_range(<float*> py, <const float*> px,
                                                   <float> c, lo, hi)
        for b in range(nb):
            total += partial[b]
    free(partial)
    return total


def take_rows(src, rows, out):
    """out := src[rows] (rows of a C-contiguous (n, m) float32/float64 matrix, ``rows``
    a 1-D numpy.intp array of indices in [0, n)), one memcpy per row: a mini-batch's
    rows, without np.take's per-row overhead.  Every index is checked first."""
    cdef _Extents ext
    ext.n = 0
    cdef Py_ssize_t n, m, k, i, r, row_bytes
    n, m = _matrix_shape(src, "src")
    if not cnp.PyArray_Check(rows) or cnp.PyArray_TYPE(<cnp.ndarray> rows) != cnp.NPY_INTP \
            or cnp.PyArray_NDIM(<cnp.ndarray> rows) != 1:
        raise TypeError("rows must be a 1-D numpy.ndarray of numpy.intp indices")
    cdef cnp.ndarray idx = <cnp.ndarray> rows
    k = cnp.PyArray_DIM(idx, 0)
    cdef char* s = _layer_array(src, "src", None, n, m, False, &ext)
    cdef char* d = _layer_array(out, "out", src, k, m, True, &ext)
    cdef Py_ssize_t stride = cnp.PyArray_STRIDE(idx, 0)
    cdef char* ip = <char*> cnp.PyArray_DATA(idx)
    for i in range(k):
        r = (<cnp.npy_intp*> (ip + i * stride))[0]
        if not 0 <= r < n:
            raise ValueError(f"rows[{i}] = {r} is out of range for src with {n} rows")
    row_bytes = m * cnp.PyArray_ITEMSIZE(<cnp.ndarray> src)
    with nogil:
        for i in range(k):
            r = (<cnp.npy_intp*> (ip + i * stride))[0]
            memcpy(d + i * row_bytes, s + r * row_bytes, row_bytes)


cdef void _transpose(bint dbl, const char* src, char* dst, Py_ssize_t k,
                     Py_ssize_t m) noexcept nogil:
    # dst := src.T for a (k, m) matrix (nothing when dst is NULL)
    if dst == NULL:
        return
    if dbl:
        fo_transpose_d(<const double*> src, <double*> dst, k, m)
    else:
        fo_transpose_f(<const float*> src, <float*> dst, k, m)


def transpose_into(src, dst):
    """dst := src.T for a C-contiguous (k, m) float32/float64 matrix and a C-contiguous
    (m, k) one (element copies).  The delta product d @ W.T runs as d @ dst on the
    contiguous transpose: BLAS's plain (no-transpose) product, faster than its
    transposed-operand one at these sizes (its sums can differ from np.matmul(d, W.T)'s
    in the last bits: OpenBLAS's transposed-operand kernels add in another order)."""
    cdef _Extents ext
    ext.n = 0
    cdef Py_ssize_t k, m
    k, m = _matrix_shape(src, "src")
    cdef char* s = _layer_array(src, "src", None, k, m, False, &ext)
    cdef char* d = _layer_array(dst, "dst", src, m, k, True, &ext)
    cdef bint dbl = cnp.PyArray_TYPE(<cnp.ndarray> src) == cnp.NPY_DOUBLE
    with nogil:
        _transpose(dbl, s, d, k, m)


# the matrix products around these kernels, on fixed row blocks (scipy's BLAS)
include "_kernels_gemm.pxi"
