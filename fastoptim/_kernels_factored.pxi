# Adafactor and Muon: the elementwise parts of two optimizers whose update also
# needs reductions (row and column statistics, norms) or matrix products.
# Included by _kernels.pxi, so it shares its checks (_checked, _gather, _prepare)
# and thread helpers.
#
#   adafactor: per param, three passes (each one OpenMP region when the param is large
#     enough), with the GIL released once for the whole call: (A) row and column sums of g*g and the row sums of p*p, (B) the
#     update u = g / sqrt(max(row_var * col_var / mean(row_var), eps1**2)) and the
#     row sums of u*u, (C) p = p * (1 - lr * weight_decay) - (alpha / denom) * u,
#     with u computed again (storing it would cost a write and a read more), the last
#     multiply-add fused (fma), as torch's CPU add_ with alpha.
#     The scalars between the passes (the lerps of the factors, alpha, denom) are
#     torch's _single_tensor_adafactor, operation for operation.
#   muon_momentum: buf = lerp(buf, g, 1 - momentum); update = lerp(g, buf, momentum)
#     (nesterov) or buf; and the sum of update**2 (its Frobenius norm, which the
#     Newton-Schulz iteration divides by).  The matrix products run in BLAS (NumPy).
#
# Every sum is taken in double in a fixed order that does not depend on the thread
# count: a row (or a block of FACTORED_BLOCK elements) with four accumulators over
# the indices i % 4 (the tail after the last multiple of 4 goes to the first one),
# combined as (a0 + a1) + (a2 + a3); a column over the rows in order; a total over
# the rows (blocks) in order.  fastoptim.reference computes the same sums the same
# way, so the results are equal bit for bit.

# Muon's norm: blocks of this many elements, then the block sums in order.
cdef Py_ssize_t FACTORED_BLOCK = 4096
# Columns per unit of work in the column sums (contiguous, vectorizable).
cdef Py_ssize_t COLUMN_CHUNK = 256


cdef inline floating _clamp_min(floating x, floating lo) noexcept nogil:
    # torch.clamp(x, min=lo): NaN stays NaN.
    return lo if x < lo else x


cdef inline double _sumsq4(const floating* x, Py_ssize_t n) noexcept nogil:
    # sum of x*x in double, in the documented order.
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0
    cdef Py_ssize_t i = 0
    while i + 4 <= n:
        a0 += <double> x[i] * <double> x[i]
        a1 += <double> x[i + 1] * <double> x[i + 1]
        a2 += <double> x[i + 2] * <double> x[i + 2]
        a3 += <double> x[i + 3] * <double> x[i + 3]
        i += 4
    while i < n:
        a0 += <double> x[i] * <double> x[i]
        i += 1
    return (a0 + a1) + (a2 + a3)


cdef struct Factored:
    # One Adafactor param seen as B matrices of R x C (a vector: B = R = 1).
    char* p
    char* g
    char* row      # row_var (B*R) or NULL for a vector
    char* col      # col_var (B*C) or NULL for a vector
    char* var      # variance (n) or NULL for a matrix
    Py_ssize_t B
    Py_ssize_t R
    Py_ssize_t C


cdef struct FactoredScalars:
    double weight       # lerp weight of the factors: step ** beta2_decay
    double rho          # min(lr, 1 / sqrt(step))
    bint rho_float32    # rho is a float32 lr: alpha and -alpha / denom in float32
    double eps1
    double eps2
    double d
    double decay        # 1 - lr * weight_decay
    bint decayed        # weight_decay != 0
    double sign         # -1 when maximizing


cdef inline floating _factored_u(floating gi, floating r, floating c, floating rm,
                                 floating e1sq, floating sign) noexcept nogil:
    # torch: (row_var @ col_var).div_(row_mean).clamp_(min=eps1*eps1).rsqrt_().mul_(grad)
    cdef floating v = _clamp_min((r * c) / rm, e1sq)
    return (<floating> 1 / _sqrt(v)) * (sign * gi)


cdef void _factored_rows_a(const Factored* f, Py_ssize_t lo, Py_ssize_t hi,
                           double* rs, double* ps, bint dbl) noexcept nogil:
    # Pass A, rows [lo, hi): sums of g*g (rs) and p*p (ps) per row.
    cdef Py_ssize_t i, C = f.C
    for i in range(lo, hi):
        if dbl:
            rs[i] = _sumsq4((<const double*> f.g) + i * C, C)
            ps[i] = _sumsq4((<const double*> f.p) + i * C, C)
        else:
            rs[i] = _sumsq4((<const float*> f.g) + i * C, C)
            ps[i] = _sumsq4((<const float*> f.p) + i * C, C)


cdef void _factored_cols_a(const floating* g, Py_ssize_t R, Py_ssize_t C, Py_ssize_t c0,
                           Py_ssize_t c1, double* cs) noexcept nogil:
    # Pass A, columns [c0, c1) of one matrix: sums of g*g over the rows, in order.
    cdef Py_ssize_t r, j
    cdef const floating* row
    for j in range(c0, c1):
        cs[j] = 0
    for r in range(R):
        row = g + r * C
        for j in range(c0, c1):
            cs[j] += <double> row[j] * <double> row[j]


cdef double _factored_rows_b(const floating* g, const floating* rowv, const floating* colv,
                             floating rm, floating e1sq, floating sign, Py_ssize_t C) noexcept nogil:
    # Pass B, one row: sum of u*u in the documented order.
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, u0, u1, u2, u3
    cdef floating r = rowv[0]
    cdef Py_ssize_t j = 0
    while j + 4 <= C:
        u0 = _factored_u(g[j], r, colv[j], rm, e1sq, sign)
        u1 = _factored_u(g[j + 1], r, colv[j + 1], rm, e1sq, sign)
        u2 = _factored_u(g[j + 2], r, colv[j + 2], rm, e1sq, sign)
        u3 = _factored_u(g[j + 3], r, colv[j + 3], rm, e1sq, sign)
        a0 += u0 * u0
        a1 += u1 * u1
        a2 += u2 * u2
        a3 += u3 * u3
        j += 4
    while j < C:
        u0 = _factored_u(g[j], r, colv[j], rm, e1sq, sign)
        a0 += u0 * u0
        j += 1
    return (a0 + a1) + (a2 + a3)


cdef void _factored_rows_c(floating* p, const floating* g, const floating* rowv,
                           const floating* colv, floating rm, floating e1sq, floating sign,
                           floating decay, bint decayed, floating scale,
                           Py_ssize_t C) noexcept nogil:
    # Pass C, one row: p = p * decay + scale * u  (torch: mul_, then add_ with alpha,
    # which on CPU is one fused multiply-add: so is this).
    cdef floating r = rowv[0], pj
    cdef Py_ssize_t j
    for j in range(C):
        pj = p[j]
        if decayed:
            pj = pj * decay
        p[j] = _fma(scale, _factored_u(g[j], r, colv[j], rm, e1sq, sign), pj)


cdef inline floating _vector_u(floating* var, floating gi, floating w, floating omw,
                               bint low_weight, floating e1sq, floating sign) noexcept nogil:
    # variance.lerp_(grad * grad, w); update = variance.clamp(eps1**2).rsqrt() * grad
    cdef floating gs = sign * gi
    cdef floating v = _lerp(var[0], gs * gs, w, omw, low_weight)
    var[0] = v
    return (<floating> 1 / _sqrt(_clamp_min(v, e1sq))) * gs


cdef double _vector_b(floating* var, const floating* g, Py_ssize_t n, floating w,
                      bint low_weight, floating e1sq, floating sign) noexcept nogil:
    # Pass B of a vector: the variance lerp (stored) and the sum of u*u.
    cdef double a0 = 0, a1 = 0, a2 = 0, a3 = 0, u0, u1, u2, u3
    cdef floating omw = <floating> 1 - w
    cdef Py_ssize_t j = 0
    while j + 4 <= n:
        u0 = _vector_u(&var[j], g[j], w, omw, low_weight, e1sq, sign)
        u1 = _vector_u(&var[j + 1], g[j + 1], w, omw, low_weight, e1sq, sign)
        u2 = _vector_u(&var[j + 2], g[j + 2], w, omw, low_weight, e1sq, sign)
        u3 = _vector_u(&var[j + 3], g[j + 3], w, omw, low_weight, e1sq, sign)
        a0 += u0 * u0
        a1 += u1 * u1
        a2 += u2 * u2
        a3 += u3 * u3
        j += 4
    while j < n:
        u0 = _vector_u(&var[j], g[j], w, omw, low_weight, e1sq, sign)
        a0 += u0 * u0
        j += 1
    return (a0 + a1) + (a2 + a3)


cdef void _vector_c(floating* p, const floating* g, const floating* var, Py_ssize_t n,
                    floating e1sq, floating sign, floating decay, bint decayed,
                    floating scale) noexcept nogil:
    # Pass C of a vector, as _factored_rows_c (one fused multiply-add per element).
    cdef floating pj
    cdef Py_ssize_t j
    for j in range(n):
        pj = p[j]
        if decayed:
            pj = pj * decay
        p[j] = _fma(scale, (<floating> 1 / _sqrt(_clamp_min(var[j], e1sq))) * (sign * g[j]), pj)


cdef double _alpha_denom_scale(double psum, double usum, Py_ssize_t n, double rho,
                               bint rho_float32, double eps2, double d,
                               bint dbl) noexcept nogil:
    # torch: alpha = max(eps2, param.norm(2).item() / numel**0.5) * rho_t
    #        denom = max(1.0, update.norm(2).item() / (numel**0.5 * d)); scale = -alpha/denom
    # (norms rounded to the param's dtype as .item() of a tensor of it; Python's max
    # keeps its first argument when the second is NaN.)  rho_t a float32 Tensor lr: the
    # products with it are float32 tensors, the double operand rounded to float32 first.
    cdef double root = sqrt(<double> n)
    cdef double pn = sqrt(psum) if dbl else <double> <float> sqrt(psum)
    cdef double un = sqrt(usum) if dbl else <double> <float> sqrt(usum)
    cdef double alpha = pn / root, denom = un / (root * d)
    cdef float alpha32
    alpha = alpha if alpha > eps2 else eps2
    denom = denom if denom > 1.0 else 1.0
    if rho_float32:
        alpha32 = <float> alpha * <float> rho
        return -alpha32 / <float> denom
    alpha = alpha * rho
    return -alpha / denom


cdef void _adafactor_one(const Factored* f, const FactoredScalars* c, double* rs, double* ps,
                         double* cs, double* us, bint dbl, int threads) noexcept nogil:
    """The whole Adafactor step of one param (see the file's header)."""
    cdef Py_ssize_t B = f.B, R = f.R, C = f.C, rows = B * R, n = B * R * C
    cdef Py_ssize_t i, b, lo, hi, nchunks = (C + COLUMN_CHUNK - 1) // COLUMN_CHUNK
    cdef Py_ssize_t unit, c0, c1
    cdef int tid, team
    cdef bint par = (threads > 1 and n >= PARALLEL_MIN_ELEMENTS and FASTOPTIM_HAVE_OPENMP
                     and f.var == NULL)
    cdef bint low_weight = fabs(c.weight) < 0.5
    cdef double psum = 0, usum = 0, scale
    if n == 0:
        return
    # ---- pass A
    if f.var != NULL:
        if dbl:
            psum = _sumsq4(<const double*> f.p, n)
        else:
            psum = _sumsq4(<const float*> f.p, n)
    elif par:
        with parallel(num_threads=threads):
            tid = threadid()
            team = fastoptim_omp_num_threads()
            lo = _share_start(rows, tid, team)
            hi = _share_start(rows, tid + 1, team)
            _factored_rows_a(f, lo, hi, rs, ps, dbl)
            for unit in range(B * nchunks):
                if unit % team == tid:
                    b = unit // nchunks
                    c0 = (unit % nchunks) * COLUMN_CHUNK
                    c1 = min(c0 + COLUMN_CHUNK, C)
                    if dbl:
                        _factored_cols_a((<const double*> f.g) + b * R * C, R, C, c0, c1,
                                         cs + b * C)
                    else:
                        _factored_cols_a((<const float*> f.g) + b * R * C, R, C, c0, c1,
                                         cs + b * C)
    else:
        _factored_rows_a(f, 0, rows, rs, ps, dbl)
        for b in range(B):
            if dbl:
                _factored_cols_a((<const double*> f.g) + b * R * C, R, C, 0, C, cs + b * C)
            else:
                _factored_cols_a((<const float*> f.g) + b * R * C, R, C, 0, C, cs + b * C)
    if f.var == NULL:
        for i in range(rows):
            psum += ps[i]
    if dbl:
        _adafactor_factors(<double*> f.row, <double*> f.col, f, c, rs, cs, us, <double> 0)
    else:
        _adafactor_factors(<float*> f.row, <float*> f.col, f, c, rs, cs, us, <float> 0)
    # ---- pass B (us[b] holds batch b's clamped mean of row_var; rs is reused for
    # the row sums of u*u)
    if f.var != NULL:
        if dbl:
            usum = _vector_b(<double*> f.var, <const double*> f.g, n, <double> c.weight,
                             low_weight, <double> (c.eps1 * c.eps1), <double> c.sign)
        else:
            usum = _vector_b(<float*> f.var, <const float*> f.g, n, <float> c.weight,
                             low_weight, <float> (c.eps1 * c.eps1), <float> c.sign)
    else:
        if par:
            with parallel(num_threads=threads):
                tid = threadid()
                team = fastoptim_omp_num_threads()
                lo = _share_start(rows, tid, team)
                hi = _share_start(rows, tid + 1, team)
                _adafactor_rows_b(f, c, us, rs, lo, hi, dbl)
        else:
            _adafactor_rows_b(f, c, us, rs, 0, rows, dbl)
        for i in range(rows):
            usum += rs[i]
    scale = _alpha_denom_scale(psum, usum, n, c.rho, c.rho_float32, c.eps2, c.d, dbl)
    # ---- pass C
    if f.var != NULL:
        if dbl:
            _vector_c(<double*> f.p, <const double*> f.g, <const double*> f.var, n,
                      <double> (c.eps1 * c.eps1), <double> c.sign, <double> c.decay,
                      c.decayed, <double> scale)
        else:
            _vector_c(<float*> f.p, <const float*> f.g, <const float*> f.var, n,
                      <float> (c.eps1 * c.eps1), <float> c.sign, <float> c.decay,
                      c.decayed, <float> scale)
    elif par:
        with parallel(num_threads=threads):
            tid = threadid()
            team = fastoptim_omp_num_threads()
            lo = _share_start(rows, tid, team)
            hi = _share_start(rows, tid + 1, team)
            _adafactor_rows_c(f, c, us, lo, hi, scale, dbl)
    else:
        _adafactor_rows_c(f, c, us, 0, rows, scale, dbl)


cdef void _adafactor_factors(floating* rowv, floating* colv, const Factored* f,
                             const FactoredScalars* c, const double* rs, const double* cs,
                             double* rmean, floating like) noexcept nogil:
    # torch: row_mean = norm(g, dim=-1).square_().div_(C); row_var.lerp_(row_mean, w);
    # the same for the columns (div_(R)); row_var.mean(dim=-2).clamp_(min=eps1).
    # A vector (rowv NULL) has no factors.
    cdef floating w = <floating> c.weight, omw = <floating> 1 - w, nrm, mean
    cdef floating fr = <floating> f.R, fc = <floating> f.C, eps1 = <floating> c.eps1
    cdef bint low_weight = fabs(c.weight) < 0.5
    cdef Py_ssize_t i, b, r
    cdef double acc
    if rowv == NULL:
        return
    for i in range(f.B * f.R):
        nrm = <floating> sqrt(rs[i])
        mean = nrm * nrm / fc
        rowv[i] = _lerp(rowv[i], mean, w, omw, low_weight)
    for i in range(f.B * f.C):
        nrm = <floating> sqrt(cs[i])
        mean = nrm * nrm / fr
        colv[i] = _lerp(colv[i], mean, w, omw, low_weight)
    for b in range(f.B):
        acc = 0
        for r in range(f.R):
            acc += <double> rowv[b * f.R + r]
        rmean[b] = <double> _clamp_min(<floating> (acc / <double> f.R), eps1)


cdef void _adafactor_rows_b(const Factored* f, const FactoredScalars* c, const double* rmean,
                            double* out, Py_ssize_t lo, Py_ssize_t hi, bint dbl) noexcept nogil:
    cdef Py_ssize_t i, b, R = f.R, C = f.C
    for i in range(lo, hi):
        b = i // R
        if dbl:
            out[i] = _factored_rows_b((<const double*> f.g) + i * C,
                                      (<const double*> f.row) + i,
                                      (<const double*> f.col) + b * C, <double> rmean[b],
                                      <double> (c.eps1 * c.eps1), <double> c.sign, C)
        else:
            out[i] = _factored_rows_b((<const float*> f.g) + i * C,
                                      (<const float*> f.row) + i,
                                      (<const float*> f.col) + b * C, <float> rmean[b],
                                      <float> (c.eps1 * c.eps1), <float> c.sign, C)


cdef void _adafactor_rows_c(const Factored* f, const FactoredScalars* c, const double* rmean,
                            Py_ssize_t lo, Py_ssize_t hi, double scale, bint dbl) noexcept nogil:
    cdef Py_ssize_t i, b, R = f.R, C = f.C
    for i in range(lo, hi):
        b = i // R
        if dbl:
            _factored_rows_c((<double*> f.p) + i * C, (<const double*> f.g) + i * C,
                             (<const double*> f.row) + i, (<const double*> f.col) + b * C,
                             <double> rmean[b], <double> (c.eps1 * c.eps1), <double> c.sign,
                             <double> c.decay, c.decayed, <double> scale, C)
        else:
            _factored_rows_c((<float*> f.p) + i * C, (<const float*> f.g) + i * C,
                             (<const float*> f.row) + i, (<const float*> f.col) + b * C,
                             <float> rmean[b], <float> (c.eps1 * c.eps1), <float> c.sign,
                             <float> c.decay, c.decayed, <float> scale, C)


cdef object _check_factor(object a, tuple names, int role, Py_ssize_t k, bint indexed,
                          cnp.ndarray p, tuple shape):
    """A row_var / col_var / variance: p's dtype, the given shape, C order, writeable."""
    cdef str label = _label(names, role, k, indexed)
    if a is None:
        raise TypeError(f"{label} is required for a param of {p.ndim} dimensions: a "
                        f"numpy.ndarray of shape {shape}, got None")
    _checked(a, names, role, k, indexed, None, True)
    if cnp.PyArray_TYPE(<cnp.ndarray> a) != cnp.PyArray_TYPE(p):
        raise TypeError(f"{label} has dtype {a.dtype} but {_label(names, 0, k, indexed)} "
                        f"has dtype {p.dtype}")
    if tuple(a.shape) != shape:
        raise ValueError(f"{label} has shape {tuple(a.shape)}; for "
                         f"{_label(names, 0, k, indexed)} of shape {_shape_str(p)} it "
                         f"must be {shape}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> a):
        raise ValueError(f"{label} must be C-contiguous")
    return a


cdef void _check_disjoint(list extents, tuple names, bint indexed) except *:
    """extents: (start, end, writeable, role, index); two overlapping -> ValueError
    unless both are only read (O(n log n) unless something overlaps)."""
    extents.sort()
    cdef Py_ssize_t k, r
    cdef size_t max_end_all = 0, max_end_w = 0
    for k in range(len(extents)):
        start, end, writeable = extents[k][0], extents[k][1], extents[k][2]
        if start < (max_end_all if writeable else max_end_w):
            for r in range(k):
                if extents[r][1] > start and (extents[r][2] or writeable):
                    raise ValueError(
                        f"{_label(names, extents[r][3], extents[r][4], indexed)} and "
                        f"{_label(names, extents[k][3], extents[k][4], indexed)} share "
                        f"memory; every updated buffer needs its own memory")
        max_end_all = max(max_end_all, end)
        if writeable:
            max_end_w = max(max_end_w, end)


def adafactor(param, grad, row_var, col_var, variance, double weight, double rho, eps1,
              double eps2, double d, double decay, bint decayed, bint maximize, n_threads,
              bint rho_float32=False):
    """torch's _single_tensor_adafactor for one array or a list (see the file header).
    ``eps1`` None: the machine epsilon of the params' dtype.  ``rho_float32``: rho is a
    float32 lr (torch's float32 Tensor lr), so alpha = max(eps2, rms) * rho and
    -alpha / denom are float32, as torch's products with a 0-d float32 tensor.
    Everything is checked before anything is written."""
    cdef tuple names = ("param", "grad", "row_var", "col_var", "variance")
    cdef int threads = _thread_count(n_threads)
    cdef bint indexed = not cnp.PyArray_Check(param), dbl
    cdef Py_ssize_t n, k, maxrows = 1, maxcols = 1, nd
    cdef tuple ps, gs, rvs, cvs, vs, shape
    cdef cnp.ndarray p
    cdef list extents = []
    cdef Factored* fs
    cdef FactoredScalars c
    cdef double* rs = NULL
    cdef double* pss = NULL
    cdef double* cs = NULL
    cdef double* us = NULL
    if indexed:
        ps = _snapshot(param, "param", -1)
        n = len(ps)
        gs = _snapshot(grad, "grad", n)
        rvs = (None,) * n if row_var is None else _snapshot(row_var, "row_var", n)
        cvs = (None,) * n if col_var is None else _snapshot(col_var, "col_var", n)
        vs = (None,) * n if variance is None else _snapshot(variance, "variance", n)
    else:
        ps, gs, rvs, cvs, vs, n = (param,), (grad,), (row_var,), (col_var,), (variance,), 1
    fs = <Factored*> malloc(max(n, 1) * sizeof(Factored))
    if fs == NULL:
        raise MemoryError()
    try:
        for k in range(n):
            _checked(ps[k], names, 0, k, indexed, None if k == 0 else ps[0], True)
            p = <cnp.ndarray> ps[k]
            nd = p.ndim
            if nd >= 2 and not cnp.PyArray_IS_C_CONTIGUOUS(p):
                raise ValueError(f"{_label(names, 0, k, indexed)} must be C-contiguous: its "
                                 f"row and column factors run over its last two axes")
            fs[k].p = <char*> cnp.PyArray_DATA(p)
            fs[k].g = _checked(gs[k], names, 1, k, indexed, p, False)
            if nd >= 2 and not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray> gs[k]):
                raise ValueError(f"{_label(names, 1, k, indexed)} must be C-contiguous "
                                 f"like its param")
            extents.append((<size_t> fs[k].p, <size_t> fs[k].p + p.nbytes, True, 0, k))
            extents.append((<size_t> fs[k].g, <size_t> fs[k].g + p.nbytes, False, 1, k))
            fs[k].row = fs[k].col = fs[k].var = NULL
            if nd >= 2:
                shape = (<object> p).shape
                fs[k].C = shape[nd - 1]
                fs[k].R = shape[nd - 2]
                fs[k].B = cnp.PyArray_SIZE(p) // max(fs[k].R * fs[k].C, 1) \
                    if fs[k].R * fs[k].C else 0
                a = _check_factor(rvs[k], names, 2, k, indexed, p, shape[:nd - 1] + (1,))
                fs[k].row = <char*> cnp.PyArray_DATA(<cnp.ndarray> a)
                extents.append((<size_t> fs[k].row, <size_t> fs[k].row + a.nbytes, True, 2, k))
                a = _check_factor(cvs[k], names, 3, k, indexed, p,
                                  shape[:nd - 2] + (1, shape[nd - 1]))
                fs[k].col = <char*> cnp.PyArray_DATA(<cnp.ndarray> a)
                extents.append((<size_t> fs[k].col, <size_t> fs[k].col + a.nbytes, True, 3, k))
                maxrows = max(maxrows, fs[k].B * fs[k].R)
                maxcols = max(maxcols, fs[k].B * fs[k].C)
            else:
                fs[k].B = fs[k].R = 1
                fs[k].C = cnp.PyArray_SIZE(p)
                a = _check_factor(vs[k], names, 4, k, indexed, p,
                                  (<object> p).shape)
                fs[k].var = <char*> cnp.PyArray_DATA(<cnp.ndarray> a)
                extents.append((<size_t> fs[k].var, <size_t> fs[k].var + a.nbytes, True, 4, k))
        _check_disjoint([e for e in extents if e[1] > e[0]], names, indexed)
        if n == 0:
            return
        dbl = cnp.PyArray_TYPE(<cnp.ndarray> ps[0]) == cnp.NPY_DOUBLE
        if eps1 is None:
            eps1 = 2.220446049250313e-16 if dbl else 1.1920928955078125e-07
        c.weight = weight
        c.rho = rho
        c.rho_float32 = rho_float32
        c.eps1 = eps1
        c.eps2 = eps2
        c.d = d
        c.decay = decay
        c.decayed = decayed
        c.sign = -1.0 if maximize else 1.0
        rs = <double*> malloc(maxrows * sizeof(double))
        pss = <double*> malloc(maxrows * sizeof(double))
        us = <double*> malloc(maxrows * sizeof(double))
        cs = <double*> malloc(maxcols * sizeof(double))
        if rs == NULL or pss == NULL or us == NULL or cs == NULL:
            raise MemoryError()
        with nogil:
            for k in range(n):
                _adafactor_one(&fs[k], &c, rs, pss, cs, us, dbl, threads)
    finally:
        free(fs)
        free(rs)
        free(pss)
        free(us)
        free(cs)


cdef void _muon_block(const Slot* s, Py_ssize_t lo, Py_ssize_t hi, double weight,
                      double momentum, bint nesterov, double* out_sum, bint dbl) noexcept nogil:
    # The lerp formula is chosen on the double weights, as torch does.
    cdef bint low_b = fabs(weight) < 0.5, low_n = fabs(momentum) < 0.5
    if dbl:
        out_sum[0] = _muon_range(<const double*> s.g, <double*> s.s0, <double*> s.s1, lo, hi,
                                 <double> weight, low_b, <double> momentum, low_n, nesterov)
    else:
        out_sum[0] = _muon_range(<const float*> s.g, <float*> s.s0, <float*> s.s1, lo, hi,
                                 <float> weight, low_b, <float> momentum, low_n, nesterov)


cdef double _muon_range(const floating* g, floating* buf, floating* out, Py_ssize_t lo,
                        Py_ssize_t hi, floating w, bint low_b, floating momentum, bint low_n,
                        bint nesterov) noexcept nogil:
    # buf.lerp_(g, 1 - momentum); out = g.lerp(buf, momentum) if nesterov else buf;
    # returns the sum of out*out over [lo, hi) in the documented order.
    cdef floating omw = <floating> 1 - w, omm = <floating> 1 - momentum, b
    cdef Py_ssize_t i
    for i in range(lo, hi):
        b = _lerp(buf[i], g[i], w, omw, low_b)
        buf[i] = b
        out[i] = _lerp(g[i], b, momentum, omm, low_n) if nesterov else b
    return _sumsq4(out + lo, hi - lo)


def muon_momentum(param, grad, momentum_buffer, update, double weight, double momentum,
                  bint nesterov, n_threads):
    """Muon's momentum for one array or a list: momentum_buffer (IN/OUT) and update
    (OUT), checked with param (not written here: the caller's NumPy code updates it
    next) as in every kernel.  ``weight`` is 1 - momentum (torch's lerp weight, in
    double).  Returns the sum of update**2 per array (a list when given lists)."""
    cdef tuple names = ("param", "grad", "momentum_buffer", "update")
    cdef int threads = _thread_count(n_threads)
    cdef bint indexed, dbl = False
    cdef Py_ssize_t total = 0, n, k, j, nb = 0, lo, hi, kk
    cdef Slot* slots
    cdef Py_ssize_t* first_block = NULL
    cdef double* partial = NULL
    cdef double acc
    cdef int tid, team
    lists, indexed = _prepare(names, (param, grad, momentum_buffer, update),
                              (True, True, True, True))
    n = len(lists[0])
    slots = _gather(names, lists, indexed, True, &dbl, &total)
    try:
        first_block = <Py_ssize_t*> malloc((n + 1) * sizeof(Py_ssize_t))
        if first_block == NULL:
            raise MemoryError()
        for k in range(n):
            first_block[k] = nb
            nb += (slots[k].n + FACTORED_BLOCK - 1) // FACTORED_BLOCK
        first_block[n] = nb
        partial = <double*> malloc(max(nb, 1) * sizeof(double))
        if partial == NULL:
            raise MemoryError()
        with nogil:
            if threads > 1 and total >= PARALLEL_MIN_ELEMENTS and FASTOPTIM_HAVE_OPENMP:
                with parallel(num_threads=threads):
                    tid = threadid()
                    team = fastoptim_omp_num_threads()
                    for j in range(nb):
                        if j % team == tid:
                            kk = _slot_of_block(first_block, n, j)
                            lo = (j - first_block[kk]) * FACTORED_BLOCK
                            hi = min(lo + FACTORED_BLOCK, slots[kk].n)
                            _muon_block(&slots[kk], lo, hi, weight, momentum, nesterov,
                                        &partial[j], dbl)
            else:
                for k in range(n):
                    for j in range(first_block[k], first_block[k + 1]):
                        lo = (j - first_block[k]) * FACTORED_BLOCK
                        hi = min(lo + FACTORED_BLOCK, slots[k].n)
                        _muon_block(&slots[k], lo, hi, weight, momentum, nesterov,
                                    &partial[j], dbl)
        sums = []
        for k in range(n):
            acc = 0
            for j in range(first_block[k], first_block[k + 1]):
                acc += partial[j]
            sums.append(acc)
    finally:
        free(partial)
        free(first_block)
        free(slots)
    return sums if indexed else sums[0]


cdef void _add_scaled_range(floating* y, const floating* x, Py_ssize_t lo, Py_ssize_t hi,
                            floating alpha) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(lo, hi):
        y[i] = _fma(alpha, x[i], y[i])


def add_scaled(y, x, double alpha, n_threads):
    """y += alpha * x rounded once (a fused multiply-add), in place: what torch's CPU
    ``y.add_(x, alpha=alpha)`` computes (its loops use FMA); alpha is rounded to the
    arrays' dtype first, as torch does.  LBFGS uses it to follow torch's iterates."""
    cdef tuple names = ("y", "x")
    cdef int threads = _thread_count(n_threads)
    cdef bint indexed, dbl = False
    cdef Py_ssize_t total = 0, n, lo, hi
    cdef Slot* slots
    cdef int tid, team
    if not cnp.PyArray_Check(y):
        raise TypeError(f"y must be a numpy.ndarray, got {type(y).__name__}")
    lists, indexed = _prepare(names, (y, x), (True, True))
    slots = _gather(names, lists, indexed, True, &dbl, &total)
    n = slots[0].n if len(lists[0]) else 0
    with nogil:
        if threads > 1 and n >= PARALLEL_MIN_ELEMENTS and FASTOPTIM_HAVE_OPENMP:
            with parallel(num_threads=threads):
                tid = threadid()
                team = fastoptim_omp_num_threads()
                lo = _share_start(n, tid, team)
                hi = _share_start(n, tid + 1, team)
                if dbl:
                    _add_scaled_range(<double*> slots[0].p, <const double*> slots[0].g, lo, hi,
                                      <double> alpha)
                else:
                    _add_scaled_range(<float*> slots[0].p, <const float*> slots[0].g, lo, hi,
                                      <float> alpha)
        elif n:
            if dbl:
                _add_scaled_range(<double*> slots[0].p, <const double*> slots[0].g, 0, n,
                                  <double> alpha)
            else:
                _add_scaled_range(<float*> slots[0].p, <const float*> slots[0].g, 0, n,
                                  <float> alpha)
    free(slots)
