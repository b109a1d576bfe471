# The matrix products of fastoptim.nn's mini-batches on both cores: BLAS gemm called
# from compiled code, each OpenMP thread computing FIXED blocks of a product's output,
# fused with the layer kernel that follows on the same rows while they are in cache:
#   dense_forward_product  z := f(a @ W + b)                        (bias add + act)
#   backward_products      grad := a.T @ d;  dp := (d @ W.T) * f'(a),
#                          bias_grad (+)= column sums of dp          (one region)
# Included once from _kernels_layers.pxi (it uses that file's LayerCall, _block,
# _sum_partials, _layer_array and ROW_BLOCK).
#
# BLAS: scipy's (scipy.linalg.cython_blas exports dgemm/sgemm as PyCapsules, Fortran
# interface), fetched at run time by gemm_load() -- no build dependency on scipy, and
# without it fastoptim.nn keeps NumPy's products.  NumPy's own BLAS is not reachable
# from C.  The caller keeps that BLAS at one thread while two of ours call it
# (fastoptim/nn/_training.py): its threads would fight ours for the cores.
#
# Bits: every product is cut into the same two blocks of output rows whatever the
# thread count (the rows of z and dp at a multiple of ROW_BLOCK, the rows of grad in
# halves), one gemm call per block, run one after the other on one thread or side by
# side on two; the summation dimension is never split.  Each output element is then
# the sum BLAS computes for that block.  Whether that is the sum of the whole product
# depends on BLAS's kernel choice by size.  Measured with OpenBLAS 0.3.30 SkylakeX
# (scipy) against 0.3.31 (NumPy), 400 random shapes of 16-256 rows: a @ W and a.T @ d
# always gave np.matmul's bits up to ~1e6 multiply-adds (a 64 x 64 x 300 float64 one
# above that did not); d @ W.T on the contiguous W.T always gave NumPy's bits for
# d @ np.ascontiguousarray(W.T) -- what the NumPy products of the fused path compute
# for small products -- but that itself differs from np.matmul(d, W.T) in the last bits
# on many shapes (OpenBLAS's transposed-operand kernels sum in another order); d @ W.T
# with BLAS transposing W (larger products) gave np.matmul(d, W.T)'s bits on most
# shapes, not all.

from cpython.pycapsule cimport PyCapsule_CheckExact, PyCapsule_GetName, PyCapsule_GetPointer
from libc.limits cimport INT_MAX

ctypedef void (*_dgemm_fn)(char* transa, char* transb, int* m, int* n, int* k,
                           double* alpha, double* a, int* lda, double* b, int* ldb,
                           double* beta, double* c, int* ldc) noexcept nogil
ctypedef void (*_sgemm_fn)(char* transa, char* transb, int* m, int* n, int* k,
                           float* alpha, float* a, int* lda, float* b, int* ldb,
                           float* beta, float* c, int* ldc) noexcept nogil

# set once by a successful gemm_load() (never back to NULL: a call in flight on another
# thread took its pointer before releasing the GIL)
cdef _dgemm_fn _dgemm = NULL
cdef _sgemm_fn _sgemm = NULL

# the capsules' names: the C signature scipy's Cython module declares
_GEMM_SIGNATURE = ("void (char *, char *, int *, int *, int *, {t} *, {t} *, int *, {t} *, "
                   "int *, {t} *, {t} *, int *)")
_GEMM_SCALAR = "__pyx_t_5scipy_6linalg_11cython_blas_{}"

# Below this many multiply-adds per call the products run on one thread.  Measured on
# digits' 64-128-64-10 float64 network at 64 rows, quiet 2-core machine
# (bench/experiments/gemm_threads.py), one thread -> two: 64 x 64 x 10 forward (41k)
# 2.2 -> 2.1 us (a tie), its backward (82k) 5.0 -> 4.0 us; 64 x 64 x 128 (524k)
# forward 20.0 -> 11.1 us, backward 40.8 -> 22.8 us.
cdef Py_ssize_t GEMM_PARALLEL_MIN_MACS = 65536


def get_gemm_parallel_min_macs():
    return GEMM_PARALLEL_MIN_MACS


def set_gemm_parallel_min_macs(Py_ssize_t n):
    global GEMM_PARALLEL_MIN_MACS
    if n < 0:
        raise ValueError(f"gemm_parallel_min_macs must be >= 0, got {n}")
    GEMM_PARALLEL_MIN_MACS = n


cdef void* _capsule_pointer(object capsule, str scalar, str name) except? NULL:
    if not PyCapsule_CheckExact(capsule):
        raise TypeError(f"{name} must be a PyCapsule, got {type(capsule).__name__}")
    cdef const char* raw = PyCapsule_GetName(capsule)
    if raw == NULL:
        return NULL
    cdef bytes got = raw
    if got != _GEMM_SIGNATURE.format(t=_GEMM_SCALAR.format(scalar)).encode():
        return NULL
    return PyCapsule_GetPointer(capsule, raw)


def gemm_load(dgemm_capsule, sgemm_capsule):
    """Use the dgemm / sgemm in these capsules (scipy.linalg.cython_blas.__pyx_capi__):
    True when both carry the signature expected and compute a small product right,
    else False (and whatever was loaded before stays).  TypeError for non-capsules."""
    global _dgemm, _sgemm
    cdef void* d = _capsule_pointer(dgemm_capsule, "d", "dgemm_capsule")
    cdef void* s = _capsule_pointer(sgemm_capsule, "s", "sgemm_capsule")
    if d == NULL or s == NULL or not (_gemm_works(d, True) and _gemm_works(s, False)):
        return False
    _dgemm, _sgemm = <_dgemm_fn> d, <_sgemm_fn> s
    return True


def gemm_ready():
    """True after a successful gemm_load()."""
    return _dgemm != NULL and _sgemm != NULL


cdef bint _gemm_works(void* fn, bint dbl):
    # a 2 x 3 @ 3 x 2 product of small integers (exact) through the row-major wrapper,
    # plain and with each operand transposed
    cdef double ad[6]
    cdef double bd[6]
    cdef double bdt[6]
    cdef double cd[4]
    cdef float af[6]
    cdef float bf[6]
    cdef float bft[6]
    cdef float cf[4]
    cdef double want[4]
    cdef int i, j, t
    for i in range(6):
        ad[i] = i + 1                               # A = [[1 2 3], [4 5 6]]
        af[i] = i + 1
        bd[i] = 6 - i                               # B = [[6 5], [4 3], [2 1]]
        bf[i] = 6 - i
    for i in range(2):
        for j in range(3):
            bdt[i * 3 + j] = bd[j * 2 + i]          # B.T, contiguous
            bft[i * 3 + j] = bf[j * 2 + i]
    want[0], want[1], want[2], want[3] = 20, 14, 56, 41
    for t in range(2):                              # B, then B.T transposed by BLAS
        if dbl:
            _gemm_rm(fn, True, False, t == 1, 2, 2, 3, <const char*> ad, 3,
                     <const char*> bdt if t else <const char*> bd, 3 if t else 2,
                     <char*> cd, 2)
        else:
            _gemm_rm(fn, False, False, t == 1, 2, 2, 3, <const char*> af, 3,
                     <const char*> bft if t else <const char*> bf, 3 if t else 2,
                     <char*> cf, 2)
        for i in range(4):
            if (cd[i] if dbl else cf[i]) != want[i]:
                return False
    return True


cdef void _gemm_rm(void* fn, bint dbl, bint ta, bint tb, int M, int N, int K,
                   const char* A, int lda,
                   const char* B, int ldb, char* C, int ldc) noexcept nogil:
    # Row-major C (M x N) := op(A) (M x K) @ op(B) (K x N): the Fortran call on the
    # transposes, C.T = op(B).T @ op(A).T, as NumPy's (cblas row-major) call to BLAS
    cdef char opb = b'T' if tb else b'N'
    cdef char opa = b'T' if ta else b'N'
    cdef double one_d = 1, zero_d = 0
    cdef float one_f = 1, zero_f = 0
    cdef Py_ssize_t r
    if M <= 0 or N <= 0:
        return
    if K <= 0:                                      # an empty sum: zeros
        for r in range(M):
            memset(C + r * ldc * (8 if dbl else 4), 0, N * (8 if dbl else 4))
        return
    if dbl:
        (<_dgemm_fn> fn)(&opb, &opa, &N, &M, &K, &one_d, <double*> B, &ldb, <double*> A, &lda,
               &zero_d, <double*> C, &ldc)
    else:
        (<_sgemm_fn> fn)(&opb, &opa, &N, &M, &K, &one_f, <float*> B, &ldb, <float*> A, &lda,
               &zero_f, <float*> C, &ldc)


cdef struct _Product:
    # row-major C (M x N) := op(A) @ op(B) by `gemm` (the dtype's); a part computes
    # C's rows [r0, r1) and then runs `layer` (or nothing: NULL) on its ROW_BLOCKs
    void* gemm
    bint ta
    bint tb
    int N
    int K
    const char* A
    int lda
    const char* B
    int ldb
    char* C
    int ldc
    const LayerCall* layer
    double* partial           # the layer's per-ROW_BLOCK column sums, or NULL


cdef struct _Part:
    const _Product* prod
    Py_ssize_t r0
    Py_ssize_t r1
    char* wt                  # this part's room for W.T (its product's B is NULL), or NULL


cdef void _run_part(const _Part* part, bint dbl, const char* own_b) noexcept nogil:
    # own_b: the thread's copy of B, for a product whose B is NULL
    cdef const _Product* p = part.prod
    cdef Py_ssize_t size = 8 if dbl else 4, blk
    cdef Py_ssize_t r0 = part.r0
    if part.r1 <= r0:
        return
    # rows r0.. of op(A): rows of A, or columns when A is transposed
    _gemm_rm(p.gemm, dbl, p.ta, p.tb, <int> (part.r1 - r0), p.N, p.K,
             p.A + r0 * size * (1 if p.ta else p.lda), p.lda,
             own_b if p.B == NULL else p.B, p.ldb, p.C + r0 * size * p.ldc, p.ldc)
    if p.layer != NULL:
        for blk in range(r0 // ROW_BLOCK, (part.r1 + ROW_BLOCK - 1) // ROW_BLOCK):
            _block(p.layer, dbl, blk, NULL if p.partial == NULL else p.partial + blk * p.layer.m)


cdef void _run_parts(const _Part* parts, int n_parts, bint dbl, int threads,
                     const char* W, Py_ssize_t k, Py_ssize_t m) noexcept nogil:
    # part p on thread p * team // n_parts: the parts, not the threads, fix the bits.
    # A part with room for W.T (the (k, m) W transposed) fills it first: on two threads
    # each makes its own copy (no thread waits for another's, nor reads its cache
    # lines); on one, the first copy serves every part
    cdef int tid, team, p
    cdef char* shared = NULL
    if threads > 1 and FASTOPTIM_HAVE_OPENMP:
        with parallel(num_threads=threads):
            tid = threadid()
            team = fastoptim_omp_num_threads()
            for p in range(n_parts):
                if p * team // n_parts == tid:
                    if parts[p].r1 > parts[p].r0:
                        _transpose(dbl, W, parts[p].wt, k, m)
                    _run_part(&parts[p], dbl, parts[p].wt)
    else:
        for p in range(n_parts):
            if shared == NULL and parts[p].wt != NULL and parts[p].r1 > parts[p].r0:
                shared = parts[p].wt
                _transpose(dbl, W, shared, k, m)
            _run_part(&parts[p], dbl, shared)


cdef inline Py_ssize_t _row_split(Py_ssize_t n) noexcept nogil:
    # the first block's rows: half of the ROW_BLOCKs, rounded up
    return min(((n + ROW_BLOCK - 1) // ROW_BLOCK + 1) // 2 * ROW_BLOCK, n)


cdef int _blas_size(Py_ssize_t n, str what) except -1:
    if n > INT_MAX:
        raise ValueError(f"{what} ({n}) is beyond BLAS's 32-bit sizes")
    return <int> n


cdef void* _gemm_for(bint dbl) except NULL:
    cdef void* fn = <void*> _dgemm if dbl else <void*> _sgemm
    if fn == NULL:
        raise RuntimeError("the BLAS products are not loaded (gemm_load)")
    return fn


cdef int _gemm_threads(object n_threads, Py_ssize_t macs) except -1:
    cdef int threads = _thread_count(n_threads)
    return threads if macs >= GEMM_PARALLEL_MIN_MACS else 1


def dense_forward_product(a, W, bias, z, activation, n_threads=1):
    """z := f(a @ W + bias): a (n, k), W (k, m), bias (m,), z (n, m) written (sharing no
    memory with the others); ``activation`` as for dense_forward.  Same arrays' rules
    as the layer kernels (C-contiguous, aligned, one dtype).  The rows of z in two
    fixed blocks, one gemm call and one bias + activation pass each."""
    cdef LayerCall c
    cdef _Extents ext
    cdef _Product p
    cdef _Part parts[2]
    cdef Py_ssize_t n, k, m
    ext.n = 0
    c.fn = _code(activation, "activation", LAYER_FORWARD_ACTIVATIONS)
    n, k = _matrix_shape(a, "a")
    m = _matrix_shape(W, "W")[1]
    c.n, c.m = n, m
    p.A = _layer_array(a, "a", None, n, k, False, &ext)
    p.B = _layer_array(W, "W", a, k, m, False, &ext)
    c.other = _layer_array(bias, "bias", a, m, -1, False, &ext)
    c.z = p.C = _layer_array(z, "z", a, n, m, True, &ext)
    c.op, c.bias_grad, c.w, c.d, c.accumulate = 0, NULL, NULL, NULL, False
    p.ta, p.tb, p.N, p.K = False, False, _blas_size(m, "units"), _blas_size(k, "inputs")
    p.lda, p.ldb, p.ldc = p.K, p.N, p.N
    _blas_size(n, "rows")
    p.layer, p.partial = &c, NULL
    cdef bint dbl = cnp.PyArray_TYPE(<cnp.ndarray> a) == cnp.NPY_DOUBLE
    cdef int threads = _gemm_threads(n_threads, n * k * m)
    p.gemm = _gemm_for(dbl)
    cdef Py_ssize_t h = _row_split(n)
    parts[0].prod = parts[1].prod = &p
    parts[0].wt = parts[1].wt = NULL
    parts[0].r0, parts[0].r1, parts[1].r0, parts[1].r1 = 0, h, h, n
    with nogil:
        _run_parts(parts, 2, dbl, threads, NULL, 0, 0)


def backward_products(a, d, W, grad, dp, activation, bias_grad=None, accumulate=False,
                      wt=None, n_threads=1):
    """One layer's products in backward: grad (k, m) := a.T @ d for its input a (n, k)
    and delta d (n, m); and, unless dp is None, the delta below dp (n, k) := (d @ W.T)
    * f'(a) for its weights W (k, m) (``activation``: a code into LAYER_ACTIVATIONS, f'
    from the activation's output a, as dense_backward) with ``bias_grad`` (k,) :=
    (``accumulate``: +=) the column sums of dp in a fixed order.  ``wt``: None, or room
    for two copies of W.T (2 m k elements of d's dtype, C-contiguous): the delta product
    then runs on a contiguous W.T made there (BLAS's plain product, faster than its
    transposed-operand one on small products; each thread makes its own copy).  The outputs share no
    memory with anything else.  Each product in two fixed blocks of output rows."""
    cdef LayerCall c
    cdef _Extents ext
    cdef _Product pg, pd
    cdef _Part parts[4]
    cdef Py_ssize_t n, k, m
    ext.n = 0
    c.fn = _code(activation, "activation", LAYER_ACTIVATIONS)
    n, k = _matrix_shape(a, "a")
    m = _matrix_shape(d, "d")[1]
    pg.B = _layer_array(d, "d", None, n, m, False, &ext)
    pg.A = _layer_array(a, "a", d, n, k, False, &ext)
    pg.C = _layer_array(grad, "grad", d, k, m, True, &ext)
    cdef bint delta = dp is not None
    cdef char* wtp = NULL
    cdef const char* wp = NULL
    if delta:
        pd.B = wp = _layer_array(W, "W", d, k, m, False, &ext)
        c.z = pd.C = _layer_array(dp, "dp", d, n, k, True, &ext)
        c.bias_grad = NULL if bias_grad is None else _layer_array(
            bias_grad, "bias_grad", d, k, -1, True, &ext)
        if wt is not None:
            wtp = _layer_array(wt, "wt", d, 2 * k * m, -2, True, &ext)
    elif bias_grad is not None or wt is not None:
        raise ValueError("bias_grad and wt go with dp (the delta below)")
    c.accumulate = _flag(accumulate, "accumulate")
    cdef int N = _blas_size(m, "units"), K = _blas_size(k, "inputs")
    _blas_size(n, "rows")
    # grad's rows are a's columns: op(A) = a.T, rows r0.. start at column r0 of a
    pg.ta, pg.tb, pg.N, pg.K, pg.lda, pg.ldb, pg.ldc = True, False, N, <int> n, K, N, N
    pg.layer, pg.partial = NULL, NULL
    cdef bint dbl = cnp.PyArray_TYPE(<cnp.ndarray> d) == cnp.NPY_DOUBLE
    cdef int threads = _gemm_threads(n_threads, (2 if delta else 1) * n * k * m)
    pg.gemm = pd.gemm = _gemm_for(dbl)
    cdef Py_ssize_t h = _row_split(n), hk = (k + 1) // 2
    cdef Py_ssize_t nb = (n + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t n_partial = nb * k if delta and c.bias_grad != NULL and n > 0 else 0
    cdef double on_stack[LAYER_STACK_DOUBLES]
    cdef double* partial = NULL
    if n_partial > LAYER_STACK_DOUBLES:
        partial = <double*> malloc(n_partial * sizeof(double))
        if partial == NULL:
            raise MemoryError()
    elif n_partial:
        partial = on_stack
    if n_partial:
        memset(partial, 0, n_partial * sizeof(double))
    # the parts alternate grad's and dp's blocks: two threads get one of each
    parts[0].prod = parts[2].prod = &pg
    parts[0].r0, parts[0].r1, parts[2].r0, parts[2].r1 = 0, hk, hk, k
    parts[1].prod = parts[3].prod = &pd
    parts[1].r0, parts[1].r1, parts[3].r0, parts[3].r1 = 0, h, h, n
    parts[0].wt = parts[2].wt = NULL
    parts[1].wt, parts[3].wt = wtp, NULL if wtp == NULL else wtp + k * m * (8 if dbl else 4)
    if delta:
        c.op, c.w, c.d, c.n, c.m, c.other = 1, NULL, NULL, n, k, pg.A
        # dp := d @ W.T: on the thread's W.T (B = NULL), else W transposed by BLAS
        pd.A, pd.ta, pd.lda, pd.N, pd.K, pd.ldc = pg.B, False, N, K, N, K
        pd.tb, pd.ldb = wtp == NULL, N
        if wtp != NULL:
            pd.B, pd.ldb = NULL, K
        pd.layer, pd.partial = &c, partial
    else:
        parts[1].r1 = parts[3].r1 = 0        # nothing to do
    with nogil:
        _run_parts(parts, 4, dbl, threads, wp, k, m)
        if delta and c.bias_grad != NULL:
            if n_partial:
                _sum_partials(&c, dbl, partial, nb)
            elif not c.accumulate:                   # no rows: zero sums
                memset(c.bias_grad, 0, k * (8 if dbl else 4))
    if partial != NULL and partial != on_stack:
        free(partial)
