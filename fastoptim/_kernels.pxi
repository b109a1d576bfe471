# The compiled core of fastoptim, included by _kernels_baseline.pyx and
# _kernels_avx2.pyx: the same source built twice with different instruction sets,
# one picked at import time by fastoptim._backend.
#
# Design, from the inside out:
#   1. `_<opt>_range`: a typed loop over [lo, hi) of raw pointers applying one
#      optimizer's update rule element by element (fused float/double type, float
#      constants for float buffers, one read and one write per buffer: one pass).
#   2. `_drive`: spreads the arrays of one call over OpenMP threads in ONE parallel
#      region (large arrays split into cache-line aligned chunks, small ones dealt
#      out whole), or runs them serially below a size threshold.
#   3. `def sgd/rmsprop/adam`: snapshot the arrays into tuples (which hold a
#      reference to every array until the call returns), check everything that could
#      corrupt memory (required buffers present, type, dtype, size, layout,
#      writeability, overlap, thread count) with the GIL held, then release it once
#      for the whole model.  They trust nothing their caller checked.
# Every element's result depends only on that element, so the result is the same
# bit for bit whatever the thread count or chunking.

import numbers

from numpy.ma import MaskedArray as _MaskedArray

from cython.parallel cimport parallel, threadid
from libc.stdlib cimport malloc, free, qsort
from libc.math cimport sqrt, sqrtf, fabs, fabsf, pow, isfinite, fma, fmaf, INFINITY
from libc.stdint cimport uint32_t, uint64_t
cimport numpy as cnp

cnp.import_array()

cdef extern from "_platform.h":
    int FASTOPTIM_HAVE_OPENMP
    int FASTOPTIM_HAVE_FMA
    const char* FASTOPTIM_ISA
    int fastoptim_omp_max_threads() noexcept nogil
    int fastoptim_omp_thread_num() noexcept nogil
    int fastoptim_omp_num_threads() noexcept nogil
    int fastoptim_omp_num_procs() noexcept nogil
    int fastoptim_cpu_has_avx2_fma() noexcept nogil

ctypedef fused floating:
    float
    double

ISA = FASTOPTIM_ISA.decode()
HAVE_OPENMP = bool(FASTOPTIM_HAVE_OPENMP)
HAVE_FMA = bool(FASTOPTIM_HAVE_FMA)

# Below this many elements per call, OpenMP fork/join costs more than it saves
# (measured crossover on the 2-core dev machine: see bench/ and README).
cdef Py_ssize_t PARALLEL_MIN_ELEMENTS = 16384
# Arrays at least this large are split across threads; smaller ones go whole.
cdef Py_ssize_t SPLIT_MIN_ELEMENTS = 8192
# Chunk boundaries are multiples of this many elements (64 bytes of float32).
cdef Py_ssize_t CHUNK_ALIGN = 16


def cpu_has_avx2_fma():
    return bool(fastoptim_cpu_has_avx2_fma())


def omp_max_threads():
    return fastoptim_omp_max_threads()


# The processors this process may run on, read at import and by refresh_max_threads
# (asking the OS costs a system call: not once per kernel call).
cdef int MAX_THREADS = max(fastoptim_omp_num_procs(), 1)


def max_threads():
    """The most threads one call uses: the processors this process could run on when
    last asked (1 in a build without OpenMP).  Larger requests are capped to it."""
    return MAX_THREADS


def refresh_max_threads():
    """Read the processor count again (after the CPU affinity mask changed)."""
    global MAX_THREADS
    MAX_THREADS = max(fastoptim_omp_num_procs(), 1)
    return MAX_THREADS


cdef int _thread_count(object n_threads) except -1:
    # The compiled layer's own check: more threads than processors only slow a call
    # down, and a huge request makes the OpenMP runtime abort the process.
    if type(n_threads) is not int and (isinstance(n_threads, bool) or
                                       not isinstance(n_threads, numbers.Integral)):
        raise TypeError(f"n_threads must be an int >= 1, got {type(n_threads).__name__}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be an int >= 1, got {n_threads}")
    return MAX_THREADS if n_threads > MAX_THREADS else <int> n_threads


def get_parallel_min_elements():
    return PARALLEL_MIN_ELEMENTS


def set_parallel_min_elements(Py_ssize_t n):
    global PARALLEL_MIN_ELEMENTS
    if n < 0:
        raise ValueError(f"parallel_min_elements must be >= 0, got {n}")
    PARALLEL_MIN_ELEMENTS = n


# ---------------------------------------------------------------------------
# Per-call data
# ---------------------------------------------------------------------------

cdef struct Slot:
    # One parameter array and the buffers that go with it (NULL when unused).
    char* p
    char* g
    char* s0
    char* s1
    char* s2
    Py_ssize_t n

cdef struct Scalars:
    # Everything in double; each range loop converts to the buffer's dtype once.
    double lr
    double sign            # -1 when maximizing: negation is exact
    double weight_decay
    double momentum
    double one_minus_dampening
    double alpha
    double one_minus_alpha
    double eps
    double beta2
    double one_minus_beta2
    double lerp_weight     # Adam: 1 - beta1; RMSProp centered: 1 - alpha
    double step_size       # Adam: lr / (1 - beta1**t)
    double bc2_sqrt        # Adam: sqrt(1 - beta2**t)
    double decay           # AdamW: 1 - lr * weight_decay (1.0 otherwise: exact)
    bint l2                # add weight_decay * p to the gradient
    bint first             # SGD: step == 1, the buffer starts as the gradient
    bint nesterov
    bint has_state0
    bint has_state1
    bint has_state2
    int op                 # the generated loops (_kernels_elementwise.pxi): which optimizer,
    int flags              # which loop variant (bit k: flag k of its template entry on)
    double x[12]           # and its scalars, in the template entry's order

cdef enum Kind:
    KIND_SGD
    KIND_RMSPROP
    KIND_ADAM
    KIND_AXPY      # the bandwidth probe
    KIND_ELEMENTWISE  # the loops generated from _kernels_elementwise.pxi.tp (Scalars.op)


# ---------------------------------------------------------------------------
# 1. Element loops
# ---------------------------------------------------------------------------

cdef inline floating _sqrt(floating x) noexcept nogil:
    if floating is float:
        return sqrtf(x)
    else:
        return sqrt(x)


cdef inline floating _lerp(floating a, floating b, floating w, floating one_minus_w,
                           bint low_weight) noexcept nogil:
    # torch's CPU lerp: the formula depends on |weight| < 0.5.
    if low_weight:
        return a + w * (b - a)
    return b - (b - a) * one_minus_w


cdef void _sgd_range(floating* p, const Slot* s, Py_ssize_t lo, Py_ssize_t hi,
                     const Scalars* c) noexcept nogil:
    cdef const floating* g = <const floating*> s.g       # IN
    cdef floating* buf = <floating*> s.s0                 # IN/OUT momentum buffer
    cdef floating lr = <floating> c.lr
    cdef floating sign = <floating> c.sign
    cdef floating wd = <floating> c.weight_decay
    cdef floating mom = <floating> c.momentum
    cdef floating omd = <floating> c.one_minus_dampening
    cdef bint l2 = c.l2, first = c.first, nesterov = c.nesterov
    cdef floating gi, b
    cdef Py_ssize_t i
    if not c.has_state0:
        for i in range(lo, hi):
            gi = sign * g[i]
            if l2:
                gi = gi + wd * p[i]
            p[i] = p[i] - lr * gi
        return
    for i in range(lo, hi):
        gi = sign * g[i]
        if l2:
            gi = gi + wd * p[i]
        if first:
            b = gi
        else:
            b = buf[i] * mom + omd * gi
        buf[i] = b
        if nesterov:
            gi = gi + mom * b
        else:
            gi = b
        p[i] = p[i] - lr * gi


cdef inline floating _centered_sq(floating sq, floating ga) noexcept nogil:
    # sq - ga * ga.  torch computes it as one fused multiply-add (addcmul), so an
    # infinite sq stays infinite when ga * ga alone overflows (a finite ga): inf,
    # where the separately rounded product gives inf - inf = NaN.
    cdef floating d = sq - ga * ga
    if sq == INFINITY and fabs(ga) < INFINITY:
        d = sq
    return d


cdef void _rmsprop_range(floating* p, const Slot* s, Py_ssize_t lo, Py_ssize_t hi,
                         const Scalars* c) noexcept nogil:
    cdef const floating* g = <const floating*> s.g       # IN
    cdef floating* sq = <floating*> s.s0                  # IN/OUT square_avg
    cdef floating* buf = <floating*> s.s1                 # IN/OUT momentum buffer or NULL
    cdef floating* ga = <floating*> s.s2                  # IN/OUT grad_avg (centered) or NULL
    cdef floating lr = <floating> c.lr
    cdef floating sign = <floating> c.sign
    cdef floating wd = <floating> c.weight_decay
    cdef floating alpha = <floating> c.alpha
    cdef floating oma = <floating> c.one_minus_alpha
    cdef floating eps = <floating> c.eps
    cdef floating mom = <floating> c.momentum
    cdef floating w = <floating> c.lerp_weight
    cdef floating omw = <floating> 1.0 - w
    cdef bint low_weight = fabs(c.lerp_weight) < 0.5
    cdef bint l2 = c.l2
    cdef floating gi, sqi, gai, avg, b
    cdef Py_ssize_t i
    # Four loops for the four buffer sets, so no loop loads from a NULL pointer.
    if not c.has_state1 and not c.has_state2:
        for i in range(lo, hi):
            gi = sign * g[i]
            if l2:
                gi = gi + wd * p[i]
            sqi = sq[i] * alpha + oma * gi * gi
            sq[i] = sqi
            avg = _sqrt(sqi) + eps
            p[i] = p[i] - lr * (gi / avg)
    elif c.has_state1 and not c.has_state2:
        for i in range(lo, hi):
            gi = sign * g[i]
            if l2:
                gi = gi + wd * p[i]
            sqi = sq[i] * alpha + oma * gi * gi
            sq[i] = sqi
            avg = _sqrt(sqi) + eps
            b = buf[i] * mom + gi / avg
            buf[i] = b
            p[i] = p[i] - lr * b
    elif not c.has_state1:
        for i in range(lo, hi):
            gi = sign * g[i]
            if l2:
                gi = gi + wd * p[i]
            sqi = sq[i] * alpha + oma * gi * gi
            sq[i] = sqi
            gai = _lerp(ga[i], gi, w, omw, low_weight)
            ga[i] = gai
            avg = _sqrt(_centered_sq(sqi, gai)) + eps
            p[i] = p[i] - lr * (gi / avg)
    else:
        for i in range(lo, hi):
            gi = sign * g[i]
            if l2:
                gi = gi + wd * p[i]
            sqi = sq[i] * alpha + oma * gi * gi
            sq[i] = sqi
            gai = _lerp(ga[i], gi, w, omw, low_weight)
            ga[i] = gai
            avg = _sqrt(_centered_sq(sqi, gai)) + eps
            b = buf[i] * mom + gi / avg
            buf[i] = b
            p[i] = p[i] - lr * b


cdef inline floating _nan_max(floating stored, floating new) noexcept nogil:
    # np.maximum(stored, new) (torch.maximum too): NaN from either side wins.  The
    # caller stores it unconditionally so the loop vectorizes (a blend, not a branch).
    if stored >= new or stored != stored:
        return stored
    return new


cdef inline floating _fma(floating a, floating b, floating c) noexcept nogil:
    if floating is float:
        return fmaf(a, b, c)
    else:
        return fma(a, b, c)


cdef inline bint _divide_by_reciprocal_ok(floating c, floating eps) noexcept nogil:
    # When _div_by_reciprocal(x, c, ...) equals x / c for every x = sqrt(v) the Adam
    # loop can meet: 0, or >= 2**-75 (float32) / 2**-537 (float64), up to 2**64 /
    # 2**512, inf or NaN.  c in [2**-30, 1] keeps every intermediate far from
    # underflow and overflow, and eps != 0 makes the sign of a zero quotient
    # irrelevant.  Without a hardware FMA (the baseline x86-64 build) fma is a
    # library call: divide instead.
    return (FASTOPTIM_HAVE_FMA and eps != 0 and c >= <floating> 9.313225746154785e-10
            and c <= 1)


cdef inline void _reciprocal_parts(floating c, floating* y_hi, floating* y_lo) noexcept nogil:
    # y_hi = RN(1/c); y_hi + y_lo = 1/c to about twice the precision ((1 - y_hi*c) is exact)
    y_hi[0] = 1 / c
    y_lo[0] = _fma(-y_hi[0], c, <floating> 1) * y_hi[0]


cdef inline floating _div_by_reciprocal(floating x, floating c, floating y_hi,
                                        floating y_lo) noexcept nogil:
    # x / c rounded exactly as a division would be, with FMAs in place of the divide
    # (sqrt and the two divides are the bottleneck of the in-cache Adam loop).
    # y_hi = RN(1/c) and y_hi + y_lo = 1/c to about twice the precision, so q is a
    # faithful quotient; then r = x - q*c is exact and RN(q + r*y_hi) = RN(x/c)
    # (Markstein's theorem; the conditions are checked by _divide_by_reciprocal_ok).
    cdef floating q = _fma(x, y_hi, x * y_lo)
    cdef floating r = _fma(-q, c, x)
    q = _fma(r, y_hi, q)
    # x / c >= x when c <= 1.  For x = inf or NaN, q is NaN and the max (x86 maxps:
    # the second operand when unordered) gives x, which is what x / c gives.
    return q if q > x else x


cdef void _adam_range(floating* p, const Slot* s, Py_ssize_t lo, Py_ssize_t hi,
                      const Scalars* c) noexcept nogil:
    cdef const floating* g = <const floating*> s.g       # IN
    cdef floating* m = <floating*> s.s0                   # IN/OUT exp_avg
    cdef floating* v = <floating*> s.s1                   # IN/OUT exp_avg_sq
    cdef floating* vmax = <floating*> s.s2                # IN/OUT max_exp_avg_sq or NULL
    cdef floating sign = <floating> c.sign
    cdef floating wd = <floating> c.weight_decay
    cdef floating decay = <floating> c.decay
    cdef floating w = <floating> c.lerp_weight
    cdef floating omw = <floating> 1.0 - w
    cdef bint low_weight = fabs(c.lerp_weight) < 0.5
    cdef floating b2 = <floating> c.beta2
    cdef floating omb2 = <floating> c.one_minus_beta2
    cdef floating step_size = <floating> c.step_size
    cdef floating bc2_sqrt = <floating> c.bc2_sqrt
    cdef floating eps = <floating> c.eps
    cdef bint l2 = c.l2
    # The FMA division runs in loops with no per-element flags (plain L2-free Adam or
    # AdamW, beta1 > 0.5): with flags left in, the compiler cannot unswitch so large
    # a loop and does not vectorize it.  Every other case divides.
    cdef bint by_reciprocal = (_divide_by_reciprocal_ok(bc2_sqrt, eps) and not l2
                               and low_weight)
    cdef floating y_hi = 1, y_lo = 0
    cdef floating gi, pi, mi, vi, vm, denom
    cdef Py_ssize_t i
    if by_reciprocal:
        _reciprocal_parts(bc2_sqrt, &y_hi, &y_lo)
    # Four loops: amsgrad or not x FMA division or not.
    if not c.has_state2 and by_reciprocal:
        for i in range(lo, hi):
            gi = sign * g[i]
            pi = p[i] * decay
            mi = m[i] + w * (gi - m[i])   # torch's lerp for weight < 0.5
            m[i] = mi
            vi = v[i] * b2 + omb2 * gi * gi
            v[i] = vi
            denom = _div_by_reciprocal(_sqrt(vi), bc2_sqrt, y_hi, y_lo) + eps
            p[i] = pi - step_size * (mi / denom)
    elif not c.has_state2:
        for i in range(lo, hi):
            gi = sign * g[i]
            pi = p[i]
            if l2:
                gi = gi + wd * pi
            pi = pi * decay
            mi = _lerp(m[i], gi, w, omw, low_weight)
            m[i] = mi
            vi = v[i] * b2 + omb2 * gi * gi
            v[i] = vi
            denom = _sqrt(vi) / bc2_sqrt + eps
            p[i] = pi - step_size * (mi / denom)
    elif by_reciprocal:
        for i in range(lo, hi):
            gi = sign * g[i]
            pi = p[i] * decay
            mi = m[i] + w * (gi - m[i])   # torch's lerp for weight < 0.5
            m[i] = mi
            vi = v[i] * b2 + omb2 * gi * gi
            v[i] = vi
            vm = _nan_max(vmax[i], vi)
            vmax[i] = vm
            denom = _div_by_reciprocal(_sqrt(vm), bc2_sqrt, y_hi, y_lo) + eps
            p[i] = pi - step_size * (mi / denom)
    else:
        for i in range(lo, hi):
            gi = sign * g[i]
            pi = p[i]
            if l2:
                gi = gi + wd * pi
            pi = pi * decay
            mi = _lerp(m[i], gi, w, omw, low_weight)
            m[i] = mi
            vi = v[i] * b2 + omb2 * gi * gi
            v[i] = vi
            vm = _nan_max(vmax[i], vi)
            vmax[i] = vm
            denom = _sqrt(vm) / bc2_sqrt + eps
            p[i] = pi - step_size * (mi / denom)


include "_kernels_elementwise.pxi"


cdef inline void _apply(Kind kind, bint dbl, const Slot* s, Py_ssize_t lo, Py_ssize_t hi,
                        const Scalars* c) noexcept nogil:
    if kind == KIND_ADAM:
        if dbl:
            _adam_range(<double*> s.p, s, lo, hi, c)
        else:
            _adam_range(<float*> s.p, s, lo, hi, c)
    elif kind == KIND_SGD:
        if dbl:
            _sgd_range(<double*> s.p, s, lo, hi, c)
        else:
            _sgd_range(<float*> s.p, s, lo, hi, c)
    elif kind == KIND_RMSPROP:
        if dbl:
            _rmsprop_range(<double*> s.p, s, lo, hi, c)
        else:
            _rmsprop_range(<float*> s.p, s, lo, hi, c)
    elif kind == KIND_ELEMENTWISE:
        _elementwise_apply(dbl, s, lo, hi, c)
    else:
        if dbl:
            _axpy_range(<double*> s.p, s, lo, hi, c)
        else:
            _axpy_range(<float*> s.p, s, lo, hi, c)


# ---------------------------------------------------------------------------
# 2. Threads
# ---------------------------------------------------------------------------

cdef inline Py_ssize_t _share_start(Py_ssize_t n, int tid, int nthreads) noexcept nogil:
    # Where thread tid's static, contiguous, cache-line aligned chunk of [0, n) starts
    # (its end is _share_start(n, tid + 1, nthreads)).  Returned, not written through
    # a pointer: inside a Cython `with parallel` block only a variable that is assigned
    # is made thread-private, so `&lo` passed to a helper would be one shared `lo` that
    # both threads write (a race that made one thread redo the other's chunk).
    cdef Py_ssize_t per = (n + nthreads - 1) // nthreads
    per = ((per + CHUNK_ALIGN - 1) // CHUNK_ALIGN) * CHUNK_ALIGN
    return min(<Py_ssize_t> tid * per, n)


cdef void _drive(Kind kind, bint dbl, const Slot* slots, Py_ssize_t nslots,
                 Py_ssize_t total, const Scalars* c, int n_threads) noexcept nogil:
    cdef Py_ssize_t k, lo, hi
    cdef int tid, team
    if n_threads <= 1 or total < PARALLEL_MIN_ELEMENTS or not FASTOPTIM_HAVE_OPENMP:
        for k in range(nslots):
            _apply(kind, dbl, &slots[k], 0, slots[k].n, c)
        return
    with parallel(num_threads=n_threads):
        tid = threadid()
        # The runtime may give fewer threads than asked: share by the real team.
        team = fastoptim_omp_num_threads()
        for k in range(nslots):
            if slots[k].n >= SPLIT_MIN_ELEMENTS:
                lo = _share_start(slots[k].n, tid, team)
                hi = _share_start(slots[k].n, tid + 1, team)
                if lo < hi:
                    _apply(kind, dbl, &slots[k], lo, hi, c)
            elif k % team == tid:
                _apply(kind, dbl, &slots[k], 0, slots[k].n, c)


# ---------------------------------------------------------------------------
# 3. Checked entry points
# ---------------------------------------------------------------------------

cdef struct Extent:
    # The bytes one array occupies, for the overlap check.
    size_t start
    size_t end
    int writeable
    int role        # index into the names tuple
    Py_ssize_t index


cdef int _cmp_extent(const void* a, const void* b) noexcept nogil:
    cdef size_t sa = (<const Extent*> a).start
    cdef size_t sb = (<const Extent*> b).start
    return (sa > sb) - (sa < sb)


cdef str _label(tuple names, int role, Py_ssize_t index, bint indexed):
    return f"{names[role]}[{index}]" if indexed else names[role]


cdef str _shape_str(object a):
    return str(tuple((<object> a).shape))


cdef char* _checked(object obj, tuple names, int role, Py_ssize_t index, bint indexed,
                    cnp.ndarray ref, bint writeable) except? NULL:
    """Check one array against the reference (the param) and return its data."""
    cdef cnp.ndarray a
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{_label(names, role, index, indexed)} must be a numpy.ndarray of "
                        f"float32 or float64, got {type(obj).__name__}")
    if not cnp.PyArray_CheckExact(obj) and isinstance(obj, _MaskedArray):
        # Its mask would be silently ignored: every element is updated.
        raise TypeError(f"{_label(names, role, index, indexed)} is a masked array; the "
                        f"update would ignore its mask: pass a plain ndarray (.data, or "
                        f".filled(...)) and apply the mask yourself")
    a = <cnp.ndarray> obj
    if ref is None:
        if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT and cnp.PyArray_TYPE(a) != cnp.NPY_DOUBLE:
            raise TypeError(f"{_label(names, role, index, indexed)} must have dtype float32 "
                            f"or float64, got {a.dtype}")
    elif cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(ref):
        raise TypeError(f"{_label(names, role, index, indexed)} has dtype {a.dtype} but "
                        f"{_label(names, 0, index if role != 0 else 0, indexed)} has dtype "
                        f"{ref.dtype}: all arrays of one call must share one dtype")
    return _checked_layout(a, names, role, index, indexed, ref, writeable)


cdef char* _checked_layout(cnp.ndarray a, tuple names, int role, Py_ssize_t index,
                           bint indexed, cnp.ndarray ref, bint writeable) except? NULL:
    """The checks of _checked after the dtype: byte order, shape, layout, alignment,
    writeability (shared with the compact kernels, whose dtypes differ per buffer)."""
    cdef int flags
    if not cnp.PyArray_ISNOTSWAPPED(a):
        raise TypeError(f"{_label(names, role, index, indexed)} must be in native byte order, "
                        f"got dtype {a.dtype.str!r}")
    if ref is not None and role != 0 and not cnp.PyArray_SAMESHAPE(a, ref):
        raise ValueError(f"{_label(names, role, index, indexed)} has shape {_shape_str(a)} but "
                         f"{_label(names, 0, index, indexed)} has shape {_shape_str(ref)}")
    flags = cnp.PyArray_FLAGS(a)
    if not (flags & cnp.NPY_ARRAY_C_CONTIGUOUS or flags & cnp.NPY_ARRAY_F_CONTIGUOUS):
        raise ValueError(f"{_label(names, role, index, indexed)} must be contiguous (C or "
                         f"Fortran order); fastoptim never updates a silent copy, so pass a "
                         f"contiguous array (np.ascontiguousarray) and keep using that one")
    if ref is not None and role != 0:
        # Element k must be the same element in every buffer: same memory order.
        if (cnp.PyArray_IS_C_CONTIGUOUS(a) != cnp.PyArray_IS_C_CONTIGUOUS(ref) and
                cnp.PyArray_IS_F_CONTIGUOUS(a) != cnp.PyArray_IS_F_CONTIGUOUS(ref)):
            raise ValueError(f"{_label(names, role, index, indexed)} and "
                             f"{_label(names, 0, index, indexed)} have different memory "
                             f"orders (C vs Fortran); use the same order for both")
    if not flags & cnp.NPY_ARRAY_ALIGNED:
        raise ValueError(f"{_label(names, role, index, indexed)} must be aligned to its dtype")
    if writeable and not flags & cnp.NPY_ARRAY_WRITEABLE:
        raise ValueError(f"{_label(names, role, index, indexed)} must be writeable: it is "
                         f"updated in place")
    return <char*> cnp.PyArray_DATA(a)


cdef tuple _snapshot(object arrays, str name, Py_ssize_t n):
    """The sequence read once into a tuple.  The tuple holds a reference to every
    array until the call returns, so neither another thread replacing an element nor
    a __getitem__/__iter__ that makes fresh arrays can free memory the kernel uses."""
    cdef tuple snap
    if not isinstance(arrays, (tuple, list)):
        raise TypeError(f"{name} must be a list or tuple of arrays, got {type(arrays).__name__}")
    snap = tuple(arrays)
    if n >= 0 and len(snap) != n:
        raise ValueError(f"{name} has {len(snap)} arrays but param has {n}")
    return snap


cdef Slot* _gather(tuple names, object lists, bint indexed, bint params_writeable,
                   bint* is_double, Py_ssize_t* total) except NULL:
    """Check every array of a call and collect their data pointers.

    lists[0] are the params, lists[1] the grads (read only), lists[2:] state
    buffers (None when the options do not use them).  Raises before any kernel runs.
    """
    cdef Py_ssize_t n = len(lists[0]), k, e = 0, nbufs = len(lists), r
    cdef Slot* slots = <Slot*> malloc(max(n, 1) * sizeof(Slot))
    cdef Extent* ext = <Extent*> malloc(max(n * nbufs, 1) * sizeof(Extent))
    cdef char* ptrs[5]
    cdef cnp.ndarray p, a
    cdef size_t max_end_all = 0, max_end_w = 0, nbytes
    if slots == NULL or ext == NULL:
        free(slots)
        free(ext)
        raise MemoryError()
    try:
        total[0] = 0
        for k in range(n):
            ptrs[0] = ptrs[1] = ptrs[2] = ptrs[3] = ptrs[4] = NULL
            obj = lists[0][k]
            ptrs[0] = _checked(obj, names, 0, k, indexed,
                               None if k == 0 else <cnp.ndarray> lists[0][0],
                               params_writeable)
            p = <cnp.ndarray> obj
            for r in range(1, nbufs):
                if lists[r] is None:
                    continue
                ptrs[r] = _checked(lists[r][k], names, r, k, indexed, p, r != 1)
            nbytes = <size_t> cnp.PyArray_NBYTES(p)
            slots[k].p = ptrs[0]
            slots[k].g = ptrs[1]
            slots[k].s0 = ptrs[2] if nbufs > 2 else NULL
            slots[k].s1 = ptrs[3] if nbufs > 3 else NULL
            slots[k].s2 = ptrs[4] if nbufs > 4 else NULL
            slots[k].n = cnp.PyArray_SIZE(p)
            total[0] += slots[k].n
            if nbytes:
                for r in range(nbufs):
                    if ptrs[r] != NULL:
                        ext[e].start = <size_t> ptrs[r]
                        ext[e].end = <size_t> ptrs[r] + nbytes
                        ext[e].writeable = r > 1 or (r == 0 and params_writeable)
                        ext[e].role = r
                        ext[e].index = k
                        e += 1
        is_double[0] = n > 0 and cnp.PyArray_TYPE(<cnp.ndarray> lists[0][0]) == cnp.NPY_DOUBLE
        # Any two buffers overlapping, unless both are only read (two grads).
        qsort(ext, e, sizeof(Extent), _cmp_extent)
        for k in range(e):
            if ext[k].start < (max_end_all if ext[k].writeable else max_end_w):
                for r in range(k):
                    if (ext[r].end > ext[k].start and (ext[r].writeable or ext[k].writeable)):
                        raise ValueError(
                            f"{_label(names, ext[r].role, ext[r].index, indexed)} and "
                            f"{_label(names, ext[k].role, ext[k].index, indexed)} share memory; "
                            f"every updated buffer needs its own memory")
            max_end_all = max(max_end_all, ext[k].end)
            if ext[k].writeable:
                max_end_w = max(max_end_w, ext[k].end)
    except BaseException:
        free(slots)
        free(ext)
        raise
    free(ext)
    return slots


cdef list _prepare(tuple names, tuple arrays, tuple used):
    """Single arrays or sequences -> tuples of equal length, one per buffer; None
    for a buffer the options do not use (used[r] false: whatever was passed is
    ignored).  A used buffer must be given: the loops would read NULL."""
    cdef bint indexed = not cnp.PyArray_Check(arrays[0])
    cdef Py_ssize_t n = -1, r
    cdef list lists = []
    if indexed and not isinstance(arrays[0], (tuple, list)):
        raise TypeError(f"{names[0]} must be a numpy.ndarray or a list/tuple of them, "
                        f"got {type(arrays[0]).__name__}")
    for r in range(len(arrays)):
        a = arrays[r]
        if not used[r]:
            lists.append(None)
        elif a is None:
            raise TypeError(f"{names[r]} is required here: a numpy.ndarray of float32 or "
                            f"float64{' (a list/tuple of them)' if indexed else ''}, got None")
        elif indexed:
            lists.append(_snapshot(a, names[r], n))
            if r == 0:
                n = len(lists[0])
        else:
            lists.append((a,))
    return [lists, indexed]


cdef int _run(Kind kind, tuple names, tuple arrays, tuple used, Scalars* c,
              object n_threads) except -1:
    cdef bint indexed, dbl = False
    cdef Py_ssize_t total = 0, n
    cdef Slot* slots
    cdef int threads = _thread_count(n_threads)
    # `lists` holds the snapshot tuples, so every array lives until the kernel is done.
    lists, indexed = _prepare(names, arrays, used)
    n = len(lists[0])
    slots = _gather(names, lists, indexed, True, &dbl, &total)
    c.has_state0 = len(lists) > 2 and lists[2] is not None
    c.has_state1 = len(lists) > 3 and lists[3] is not None
    c.has_state2 = len(lists) > 4 and lists[4] is not None
    with nogil:
        _drive(kind, dbl, slots, n, total, c, threads)
    free(slots)
    return 0


cdef void _sgd_scalars(Scalars* c, double lr, double momentum, double dampening,
                       bint nesterov, double weight_decay, bint maximize, bint first) noexcept:
    c.lr = lr
    c.sign = -1.0 if maximize else 1.0
    c.weight_decay = weight_decay
    c.l2 = weight_decay != 0
    c.momentum = momentum
    c.one_minus_dampening = 1.0 - dampening
    c.nesterov = nesterov
    c.first = first


cdef void _rmsprop_scalars(Scalars* c, double lr, double alpha, double eps,
                           double weight_decay, double momentum, bint maximize) noexcept:
    c.lr = lr
    c.sign = -1.0 if maximize else 1.0
    c.weight_decay = weight_decay
    c.l2 = weight_decay != 0
    c.alpha = alpha
    c.one_minus_alpha = 1.0 - alpha
    c.lerp_weight = 1.0 - alpha
    c.eps = eps
    c.momentum = momentum


cdef void _adam_scalars(Scalars* c, double beta1, double beta2, double eps,
                        double weight_decay, bint l2, double decay, double step_size,
                        double bc2_sqrt, bint maximize) noexcept:
    c.sign = -1.0 if maximize else 1.0
    c.weight_decay = weight_decay
    c.l2 = l2
    c.decay = decay
    c.lerp_weight = 1.0 - beta1
    c.beta2 = beta2
    c.one_minus_beta2 = 1.0 - beta2
    c.eps = eps
    c.step_size = step_size
    c.bc2_sqrt = bc2_sqrt


def sgd(param, grad, momentum_buffer, double lr, double momentum,
        double dampening, bint nesterov, double weight_decay, bint maximize,
        bint first, n_threads):
    cdef Scalars c
    _sgd_scalars(&c, lr, momentum, dampening, nesterov, weight_decay, maximize, first)
    _run(KIND_SGD, ("param", "grad", "momentum_buffer"),
         (param, grad, momentum_buffer), (True, True, momentum != 0), &c, n_threads)


def rmsprop(param, grad, square_avg, momentum_buffer, grad_avg, double lr,
            double alpha, double eps, double weight_decay, double momentum,
            bint centered, bint maximize, n_threads):
    cdef Scalars c
    _rmsprop_scalars(&c, lr, alpha, eps, weight_decay, momentum, maximize)
    _run(KIND_RMSPROP, ("param", "grad", "square_avg", "momentum_buffer", "grad_avg"),
         (param, grad, square_avg, momentum_buffer, grad_avg),
         (True, True, True, momentum > 0, centered), &c, n_threads)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, bint amsgrad, double beta1,
         double beta2, double eps, double weight_decay, bint l2, double decay,
         double step_size, double bc2_sqrt, bint maximize, n_threads):
    cdef Scalars c
    _adam_scalars(&c, beta1, beta2, eps, weight_decay, l2, decay, step_size, bc2_sqrt, maximize)
    _run(KIND_ADAM, ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
         (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
         (True, True, True, True, amsgrad), &c, n_threads)


# ---------------------------------------------------------------------------
# Reductions for gradient clipping and the non-finite guard
# ---------------------------------------------------------------------------

# Sums are taken per block of this many elements, then the block sums are added in
# order: the result does not depend on how blocks are shared among threads.
cdef Py_ssize_t NORM_BLOCK = 4096


cdef double _block_pow_sum(const floating* x, Py_ssize_t lo, Py_ssize_t hi,
                           int mode, double p) noexcept nogil:
    # mode 1: sum |x|, 2: sum x*x, 3: max |x|, 0: sum |x|**p
    cdef double acc0 = 0, acc1 = 0, acc2 = 0, acc3 = 0, a
    cdef Py_ssize_t i = lo
    if mode == 3:
        for i in range(lo, hi):
            a = fabs(<double> x[i])
            if not (acc0 >= a):   # NaN-propagating max
                acc0 = a
        return acc0
    if mode == 2:
        while i + 4 <= hi:
            acc0 += <double> x[i] * <double> x[i]
            acc1 += <double> x[i + 1] * <double> x[i + 1]
            acc2 += <double> x[i + 2] * <double> x[i + 2]
            acc3 += <double> x[i + 3] * <double> x[i + 3]
            i += 4
        while i < hi:
            acc0 += <double> x[i] * <double> x[i]
            i += 1
    elif mode == 1:
        while i + 4 <= hi:
            acc0 += fabs(<double> x[i])
            acc1 += fabs(<double> x[i + 1])
            acc2 += fabs(<double> x[i + 2])
            acc3 += fabs(<double> x[i + 3])
            i += 4
        while i < hi:
            acc0 += fabs(<double> x[i])
            i += 1
    else:
        for i in range(lo, hi):
            acc0 += pow(fabs(<double> x[i]), p)
    return (acc0 + acc1) + (acc2 + acc3)


cdef Py_ssize_t _nblocks(Py_ssize_t n) noexcept nogil:
    return (n + NORM_BLOCK - 1) // NORM_BLOCK


def norm_pow_sum(arrays, double norm_type, n_threads=1):
    """sum over all arrays of |x|**norm_type (max |x| for inf), in double.

    Deterministic: blocks of NORM_BLOCK elements are reduced independently and
    their results combined in a fixed order, whatever the thread count.
    """
    cdef tuple names = ("grads",)
    cdef int threads = _thread_count(n_threads)
    lists, indexed = _prepare(names, (arrays,), (True,))
    cdef tuple arrs = lists[0]
    cdef Py_ssize_t n = len(arrs), k, b, nb = 0, total = 0
    cdef int mode = 3 if norm_type == float("inf") else (
        2 if norm_type == 2.0 else (1 if norm_type == 1.0 else 0))
    cdef double result = 0.0
    cdef bint dbl = False
    cdef Slot* slots = _gather(names, [arrs], indexed, False, &dbl, &total)
    cdef Py_ssize_t* first_block = <Py_ssize_t*> malloc((n + 1) * sizeof(Py_ssize_t))
    cdef double* partial = NULL
    cdef Py_ssize_t lo, hi, j, kk
    cdef int tid, team
    if first_block != NULL:
        for k in range(n):
            first_block[k] = nb
            nb += _nblocks(slots[k].n)
        first_block[n] = nb
        partial = <double*> malloc(max(nb, 1) * sizeof(double))
    if partial == NULL:
        free(first_block)
        free(slots)
        raise MemoryError()
    with nogil:
        if threads > 1 and total >= PARALLEL_MIN_ELEMENTS and FASTOPTIM_HAVE_OPENMP:
            with parallel(num_threads=threads):
                tid = threadid()
                team = fastoptim_omp_num_threads()
                for j in range(nb):
                    if j % team == tid:
                        kk = _slot_of_block(first_block, n, j)
                        lo = (j - first_block[kk]) * NORM_BLOCK
                        hi = min(lo + NORM_BLOCK, slots[kk].n)
                        partial[j] = _block_dispatch(&slots[kk], lo, hi, mode, norm_type, dbl)
        else:
            for k in range(n):
                for b in range(first_block[k], first_block[k + 1]):
                    lo = (b - first_block[k]) * NORM_BLOCK
                    hi = min(lo + NORM_BLOCK, slots[k].n)
                    partial[b] = _block_dispatch(&slots[k], lo, hi, mode, norm_type, dbl)
        for b in range(nb):
            if mode == 3:
                if not (result >= partial[b]):
                    result = partial[b]
            else:
                result += partial[b]
    free(partial)
    free(first_block)
    free(slots)
    return result


cdef Py_ssize_t _slot_of_block(const Py_ssize_t* first_block, Py_ssize_t n,
                               Py_ssize_t j) noexcept nogil:
    # Binary search: the array whose blocks contain block j.
    cdef Py_ssize_t lo = 0, hi = n - 1, mid
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if first_block[mid] <= j:
            lo = mid
        else:
            hi = mid - 1
    return lo


cdef inline double _block_dispatch(const Slot* s, Py_ssize_t lo, Py_ssize_t hi, int mode,
                                   double p, bint dbl) noexcept nogil:
    if dbl:
        return _block_pow_sum(<const double*> s.p, lo, hi, mode, p)
    return _block_pow_sum(<const float*> s.p, lo, hi, mode, p)


def all_finite(arrays):
    """True when no element of any array is NaN or infinite."""
    cdef tuple names = ("grads",)
    lists, indexed = _prepare(names, (arrays,), (True,))
    cdef Py_ssize_t total = 0, k, i, n = len(lists[0])
    cdef bint dbl = False, ok = True
    cdef Slot* slots = _gather(names, lists, indexed, False, &dbl, &total)
    with nogil:
        for k in range(n):
            if dbl:
                ok = _finite_range(<const double*> slots[k].p, slots[k].n)
            else:
                ok = _finite_range(<const float*> slots[k].p, slots[k].n)
            if not ok:
                break
    free(slots)
    return bool(ok)


cdef bint _finite_range(const floating* x, Py_ssize_t n) noexcept nogil:
    # NaN and inf are the values whose exponent bits are all ones.  Testing the bits
    # with an integer OR keeps the loop vectorizable (a float sum would not be
    # reordered into SIMD lanes without -ffast-math).  CPython extensions are built
    # with -fno-strict-aliasing, so reading the float's bits through an int is sound.
    cdef const uint32_t* u32 = <const uint32_t*> x
    cdef const uint64_t* u64 = <const uint64_t*> x
    cdef uint32_t bad32 = 0
    cdef uint64_t bad64 = 0
    cdef Py_ssize_t i, lo = 0, hi
    while lo < n:
        hi = min(lo + NORM_BLOCK, n)
        if floating is float:
            for i in range(lo, hi):
                bad32 |= (u32[i] & 0x7f800000u) == 0x7f800000u
            if bad32:
                return False
        else:
            for i in range(lo, hi):
                bad64 |= (u64[i] & 0x7ff0000000000000ull) == 0x7ff0000000000000ull
            if bad64:
                return False
        lo = hi
    return True


# ---------------------------------------------------------------------------
# Bandwidth probes for the benchmarks
# ---------------------------------------------------------------------------

cdef void _axpy_range(floating* a, const Slot* s, Py_ssize_t lo, Py_ssize_t hi,
                      const Scalars* c) noexcept nogil:
    cdef const floating* b = <const floating*> s.g
    cdef floating* x0 = <floating*> s.s0
    cdef floating* x1 = <floating*> s.s1
    cdef floating* x2 = <floating*> s.s2
    cdef floating scale = <floating> c.lr
    cdef floating d
    cdef Py_ssize_t i
    # One loop per number of extra streams, so no loop loads from a NULL pointer.
    if not c.has_state0:
        for i in range(lo, hi):
            a[i] = a[i] + scale * b[i]
    elif not c.has_state1:
        for i in range(lo, hi):
            d = scale * b[i]
            a[i] = a[i] + d
            x0[i] = x0[i] + d
    elif not c.has_state2:
        for i in range(lo, hi):
            d = scale * b[i]
            a[i] = a[i] + d
            x0[i] = x0[i] + d
            x1[i] = x1[i] + d
    else:
        for i in range(lo, hi):
            d = scale * b[i]
            a[i] = a[i] + d
            x0[i] = x0[i] + d
            x1[i] = x1[i] + d
            x2[i] = x2[i] + d


def stream_axpy(a, b, double s, n_threads):
    """a += s * b in place: the simplest loop with the optimizers' access pattern
    (read every buffer once, write the updated one back).  Driven like the
    optimizers (same checks, same threads and threshold)."""
    stream_probe(a, b, (), s, n_threads)


def stream_probe(a, b, states, double s, n_threads):
    """a += s * b and x += s * b for each x in `states` (0 to 3 arrays), in place:
    a trivial loop with an optimizer's own streams and traffic (Adam: read
    param, grad, exp_avg, exp_avg_sq, write param, exp_avg, exp_avg_sq), so its
    time is the limit that optimizer's kernel can reach on these buffers."""
    cdef Scalars c
    if not isinstance(states, (tuple, list)) or len(states) > 3:
        raise TypeError("states must be a list or tuple of at most 3 arrays")
    states = tuple(states) + (None,) * (3 - len(states))
    c.lr = s
    _run(KIND_AXPY, ("a", "b", "states[0]", "states[1]", "states[2]"),
         (a, b) + states, (True, True) + tuple(x is not None for x in states), &c, n_threads)


# ---------------------------------------------------------------------------
# Test hook: the Adam loop's division by sqrt(1 - beta2**t)
# ---------------------------------------------------------------------------

cdef void _divide_range(floating* x, Py_ssize_t n, floating c, bint by_reciprocal) noexcept nogil:
    cdef floating y_hi, y_lo
    cdef Py_ssize_t i
    if by_reciprocal:
        _reciprocal_parts(c, &y_hi, &y_lo)
        for i in range(n):
            x[i] = _div_by_reciprocal(x[i], c, y_hi, y_lo)
    else:
        for i in range(n):
            x[i] = x[i] / c


def divide_like_adam(x, double c):
    """Divide the contiguous float array x in place by c (rounded to x's dtype) the way the
    Adam loops divide sqrt(v) by sqrt(1 - beta2**t); return True when that was the
    FMA division, False when it was a plain division.  Lets tests compare the FMA
    division with IEEE division on millions of values directly."""
    cdef char* data = _checked(x, ("x",), 0, 0, False, None, True)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray> x)
    cdef bint fast
    if cnp.PyArray_TYPE(<cnp.ndarray> x) == cnp.NPY_DOUBLE:
        # eps only decides whether the FMA division may be used: any nonzero value
        fast = _divide_by_reciprocal_ok(<double> c, <double> 1)
        with nogil:
            _divide_range(<double*> data, n, <double> c, fast)
    else:
        fast = _divide_by_reciprocal_ok(<float> c, <float> 1)
        with nogil:
            _divide_range(<float*> data, n, <float> c, fast)
    return fast
include "_kernels_factored.pxi"


include "_kernels_layers.pxi"


# ---------------------------------------------------------------------------
# float16 / bfloat16 storage, master weights, stochastic rounding
# ---------------------------------------------------------------------------

include "_kernels_compact.pxi"


# 8-bit blockwise quantized state
include "_kernels_quant8.pxi"
