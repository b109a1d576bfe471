# The compiled core of fastoptim, included by _kernels_baseline.pyx and
# _kernels_avx2.pyx: the same source built twice with different instruction sets,
# one picked at import time by fastoptim._backend.
#
# Design, from the inside out:
#   1. `_<opt>_range`: converts the call's constants to the buffers' dtype and picks
#      the update rule; `_apply_rule` runs it over [lo, hi) of raw pointers element by
#      element (fused float/double type, one read and one write per buffer: one pass),
#      in blocks of staged cache lines when the buffers share a page offset.
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

cdef enum:
    LINE_BYTES = 64     # a cache line (see _apply_rule)
    BLOCK = 16          # elements per staged block: one line of float32, two of float64
    COLLIDE_BYTES = 512 # buffers this close modulo 4 KiB go through the staged loop
    STAGED_MIN = 2048   # ...when the range has at least this many elements


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


cdef inline floating _centered_sq(floating sq, floating ga) noexcept nogil:
    # sq - ga * ga.  torch computes it as one fused multiply-add (addcmul), so an
    # infinite sq stays infinite when ga * ga alone overflows (a finite ga): inf,
    # where the separately rounded product gives inf - inf = NaN.
    cdef floating d = sq - ga * ga
    if sq == INFINITY and fabs(ga) < INFINITY:
        d = sq
    return d


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


# The update rules.  `_update` computes one element of one rule; `_apply_rule` loops it
# over a range, on the caller's buffers or on staged copies of their cache lines.  Both
# are fused over these marker types (one per rule), so each rule gets its own compiled
# loop with only its own arithmetic in it, and that arithmetic is written once.
ctypedef struct RuleSgd:
    char unused
ctypedef struct RuleSgdMomentum:
    char unused
ctypedef struct RuleRmsprop:
    char unused
ctypedef struct RuleRmspropMomentum:
    char unused
ctypedef struct RuleRmspropCentered:
    char unused
ctypedef struct RuleRmspropCenteredMomentum:
    char unused
ctypedef struct RuleAdamReciprocal:        # Adam/AdamW without L2, beta1 > 0.5: FMA division
    char unused
ctypedef struct RuleAdam:
    char unused
ctypedef struct RuleAmsgradReciprocal:
    char unused
ctypedef struct RuleAmsgrad:
    char unused
ctypedef struct RuleAxpy1:                 # the probe with 1 to 4 updated buffers
    char unused
ctypedef struct RuleAxpy2:
    char unused
ctypedef struct RuleAxpy3:
    char unused
ctypedef struct RuleAxpy4:
    char unused

ctypedef fused Rule:
    RuleSgd
    RuleSgdMomentum
    RuleRmsprop
    RuleRmspropMomentum
    RuleRmspropCentered
    RuleRmspropCenteredMomentum
    RuleAdamReciprocal
    RuleAdam
    RuleAmsgradReciprocal
    RuleAmsgrad
    RuleAxpy1
    RuleAxpy2
    RuleAxpy3
    RuleAxpy4

# The constants of one call, converted to the buffers' dtype once (indices into an
# array: one array type for both dtypes).
cdef enum:
    K_LR
    K_SIGN
    K_WD
    K_MOM
    K_OMD
    K_ALPHA
    K_OMA
    K_EPS
    K_W
    K_OMW
    K_B2
    K_OMB2
    K_STEP
    K_BC2
    K_DECAY
    K_Y_HI
    K_Y_LO
    N_CONST

cdef struct Flags:
    bint l2
    bint first
    bint nesterov
    bint low_weight


cdef inline void _update(Rule* rule, floating* p, const floating* g, floating* s0,
                         floating* s1, floating* s2, Py_ssize_t i, const floating* k,
                         const Flags* f) noexcept nogil:
    # Element i of one step.  s0, s1, s2 are the rule's state buffers:
    # SGD: momentum_buffer; RMSprop: square_avg, momentum_buffer, grad_avg;
    # Adam: exp_avg, exp_avg_sq, max_exp_avg_sq; probe: the extra updated buffers.
    cdef floating gi, pi, b, sqi, gai, avg, mi, vi, vm, denom, d
    if Rule is RuleSgd or Rule is RuleSgdMomentum:
        gi = k[K_SIGN] * g[i]
        if f.l2:
            gi = gi + k[K_WD] * p[i]
        if Rule is RuleSgdMomentum:
            if f.first:
                b = gi
            else:
                b = s0[i] * k[K_MOM] + k[K_OMD] * gi
            s0[i] = b
            if f.nesterov:
                gi = gi + k[K_MOM] * b
            else:
                gi = b
        p[i] = p[i] - k[K_LR] * gi
    elif (Rule is RuleRmsprop or Rule is RuleRmspropMomentum or
          Rule is RuleRmspropCentered or Rule is RuleRmspropCenteredMomentum):
        gi = k[K_SIGN] * g[i]
        if f.l2:
            gi = gi + k[K_WD] * p[i]
        sqi = s0[i] * k[K_ALPHA] + k[K_OMA] * gi * gi
        s0[i] = sqi
        if Rule is RuleRmspropCentered or Rule is RuleRmspropCenteredMomentum:
            gai = _lerp(s2[i], gi, k[K_W], k[K_OMW], f.low_weight)
            s2[i] = gai
            avg = _sqrt(_centered_sq(sqi, gai)) + k[K_EPS]
        else:
            avg = _sqrt(sqi) + k[K_EPS]
        if Rule is RuleRmspropMomentum or Rule is RuleRmspropCenteredMomentum:
            b = s1[i] * k[K_MOM] + gi / avg
            s1[i] = b
            p[i] = p[i] - k[K_LR] * b
        else:
            p[i] = p[i] - k[K_LR] * (gi / avg)
    elif Rule is RuleAdamReciprocal or Rule is RuleAmsgradReciprocal:
        # No per-element flags: with them the compiler does not vectorize so large a
        # loop (the FMA division needs L2-free Adam or AdamW, beta1 > 0.5).
        gi = k[K_SIGN] * g[i]
        pi = p[i] * k[K_DECAY]
        mi = s0[i] + k[K_W] * (gi - s0[i])   # torch's lerp for weight < 0.5
        s0[i] = mi
        vi = s1[i] * k[K_B2] + k[K_OMB2] * gi * gi
        s1[i] = vi
        if Rule is RuleAmsgradReciprocal:
            vi = _nan_max(s2[i], vi)
            s2[i] = vi
        denom = _div_by_reciprocal(_sqrt(vi), k[K_BC2], k[K_Y_HI], k[K_Y_LO]) + k[K_EPS]
        p[i] = pi - k[K_STEP] * (mi / denom)
    elif Rule is RuleAdam or Rule is RuleAmsgrad:
        gi = k[K_SIGN] * g[i]
        pi = p[i]
        if f.l2:
            gi = gi + k[K_WD] * pi
        pi = pi * k[K_DECAY]
        mi = _lerp(s0[i], gi, k[K_W], k[K_OMW], f.low_weight)
        s0[i] = mi
        vi = s1[i] * k[K_B2] + k[K_OMB2] * gi * gi
        s1[i] = vi
        if Rule is RuleAmsgrad:
            vi = _nan_max(s2[i], vi)
            s2[i] = vi
        denom = _sqrt(vi) / k[K_BC2] + k[K_EPS]
        p[i] = pi - k[K_STEP] * (mi / denom)
    else:
        d = k[K_LR] * g[i]
        p[i] = p[i] + d
        if Rule is not RuleAxpy1:
            s0[i] = s0[i] + d
        if Rule is RuleAxpy3 or Rule is RuleAxpy4:
            s1[i] = s1[i] + d
        if Rule is RuleAxpy4:
            s2[i] = s2[i] + d


cdef inline bint _uses_state(Rule* rule, int which) noexcept nogil:
    # Whether `rule` reads and writes state buffer s0 (which=0), s1 or s2.
    if which == 0:
        return Rule is not RuleSgd and Rule is not RuleAxpy1
    if which == 1:
        return (Rule is RuleRmspropMomentum or Rule is RuleRmspropCenteredMomentum or
                Rule is RuleAdamReciprocal or Rule is RuleAdam or
                Rule is RuleAmsgradReciprocal or Rule is RuleAmsgrad or
                Rule is RuleAxpy3 or Rule is RuleAxpy4)
    return (Rule is RuleRmspropCentered or Rule is RuleRmspropCenteredMomentum or
            Rule is RuleAmsgradReciprocal or Rule is RuleAmsgrad or Rule is RuleAxpy4)


cdef inline bint _lines_collide(const Slot* s) noexcept nogil:
    # True when two of the slot's buffers start less than COLLIDE_BYTES apart modulo
    # 4 KiB, so that element i of both lies in the same or a nearby L1 set.
    cdef const char* ptrs[5]
    cdef size_t off[5]
    cdef size_t d
    cdef int n = 0, a, b
    ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4] = s.p, s.g, s.s0, s.s1, s.s2
    for a in range(5):
        if ptrs[a] != NULL:
            off[n] = (<size_t> ptrs[a]) & 4095
            n += 1
    for a in range(n):
        for b in range(a + 1, n):
            d = (off[a] - off[b]) & 4095
            if d < COLLIDE_BYTES or d > 4096 - COLLIDE_BYTES:
                return True
    return False


cdef inline void _load_block(floating* block, const floating* src) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(BLOCK):
        block[j] = src[j]


cdef inline void _store_block(floating* dst, const floating* block) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(BLOCK):
        dst[j] = block[j]


cdef inline void _apply_rule(Rule* rule, floating* p, const Slot* s, Py_ssize_t lo,
                           Py_ssize_t hi, const floating* k, const Flags* f) noexcept nogil:
    # Apply `rule` to [lo, hi).  Large arrays from NumPy all start at the same offset
    # in a 4 KiB page, so element i of every buffer maps to the same L1 set, and on
    # AMD Zen the L1 way predictor (a hash of virtual address bits 12-27) then often
    # cannot hold two of those lines at once: a loop alternating loads and stores
    # between the buffers refills a line from L2 on nearly every access (measured up
    # to 4x slower, in L1, L2 and DRAM alike; bench/experiments/README.md).  For such
    # buffers the loop goes by blocks of 16 elements (one cache line of float32, two
    # of float64): the loads of each buffer back to back, the update of the copies,
    # then the stores, so each line is touched once for loading and once for storing.
    # Elsewhere the plain loop is as fast or faster.  Each element is computed by the
    # same `_update` either way: the results are identical.
    cdef const floating* g = <const floating*> s.g
    cdef floating* s0 = <floating*> s.s0
    cdef floating* s1 = <floating*> s.s1
    cdef floating* s2 = <floating*> s.s2
    cdef Py_ssize_t i, j, a
    cdef floating lp[BLOCK]
    cdef floating lg[BLOCK]
    cdef floating l0[BLOCK]
    cdef floating l1[BLOCK]
    cdef floating l2[BLOCK]
    # Not staged: SGD (its loop is so light that the staging costs more than the
    # conflicts: up to 1.4x on same-offset buffers that do not conflict, at most 17%
    # gained on ones that do) and short ranges (the unvectorized head and tail of the
    # staged loop cost ~0.2 us at 1,000 elements).  bench/experiments/kernels_ab.py.
    if (Rule is RuleSgd or Rule is RuleSgdMomentum or hi - lo < STAGED_MIN
            or not _lines_collide(s)):
        for i in range(lo, hi):
            _update(rule, p, g, s0, s1, s2, i, k, f)
        return
    # Up to param's first line boundary (p is aligned to its dtype), then whole blocks.
    a = lo + <Py_ssize_t> (((-<size_t> (p + lo)) & (LINE_BYTES - 1)) // sizeof(floating))
    a = min(a, hi)
    for i in range(lo, a):
        _update(rule, p, g, s0, s1, s2, i, k, f)
    while a + BLOCK <= hi:
        _load_block(lg, g + a)
        _load_block(lp, p + a)
        if _uses_state(rule, 0):
            _load_block(l0, s0 + a)
        if _uses_state(rule, 1):
            _load_block(l1, s1 + a)
        if _uses_state(rule, 2):
            _load_block(l2, s2 + a)
        for j in range(BLOCK):
            _update(rule, lp, lg, l0, l1, l2, j, k, f)
        # Stores in the reverse order of the loads: the line loaded last is the one
        # most likely still in L1.
        if _uses_state(rule, 2):
            _store_block(s2 + a, l2)
        if _uses_state(rule, 1):
            _store_block(s1 + a, l1)
        if _uses_state(rule, 0):
            _store_block(s0 + a, l0)
        _store_block(p + a, lp)
        a += BLOCK
    for i in range(a, hi):
        _update(rule, p, g, s0, s1, s2, i, k, f)


cdef void _sgd_range(floating* p, const Slot* s, Py_ssize_t lo, Py_ssize_t hi,
                     const Scalars* c) noexcept nogil:
    cdef floating k[N_CONST]
    cdef Flags f
    k[K_LR] = <floating> c.lr
    k[K_SIGN] = <floating> c.sign
    k[K_WD] = <floating> c.weight_decay
    k[K_MOM] = <floating> c.momentum
    k[K_OMD] = <floating> c.one_minus_dampening
    f.l2, f.first, f.nesterov = c.l2, c.first, c.nesterov
    if c.has_state0:
        _apply_rule(<RuleSgdMomentum*> NULL, p, s, lo, hi, k, &f)
    else:
        _apply_rule(<RuleSgd*> NULL, p, s, lo, hi, k, &f)


cdef void _rmsprop_range(floating* p, const Slot* s, Py_ssize_t lo, Py_ssize_t hi,
                         const Scalars* c) noexcept nogil:
    cdef floating k[N_CONST]
    cdef Flags f
    k[K_LR] = <floating> c.lr
    k[K_SIGN] = <floating> c.sign
    k[K_WD] = <floating> c.weight_decay
    k[K_ALPHA] = <floating> c.alpha
    k[K_OMA] = <floating> c.one_minus_alpha
    k[K_EPS] = <floating> c.eps
    k[K_MOM] = <floating> c.momentum
    k[K_W] = <floating> c.lerp_weight
    k[K_OMW] = <floating> 1.0 - k[K_W]
    f.l2 = c.l2
    f.low_weight = fabs(c.lerp_weight) < 0.5
    # One rule per buffer set (s1: momentum_buffer, s2: grad_avg), so no loop loads
    # from a NULL pointer.
    if not c.has_state1 and not c.has_state2:
        _apply_rule(<RuleRmsprop*> NULL, p, s, lo, hi, k, &f)
    elif not c.has_state2:
        _apply_rule(<RuleRmspropMomentum*> NULL, p, s, lo, hi, k, &f)
    elif not c.has_state1:
        _apply_rule(<RuleRmspropCentered*> NULL, p, s, lo, hi, k, &f)
    else:
        _apply_rule(<RuleRmspropCenteredMomentum*> NULL, p, s, lo, hi, k, &f)


cdef void _adam_range(floating* p, const Slot* s, Py_ssize_t lo, Py_ssize_t hi,
                      const Scalars* c) noexcept nogil:
    cdef floating k[N_CONST]
    cdef Flags f
    k[K_SIGN] = <floating> c.sign
    k[K_WD] = <floating> c.weight_decay
    k[K_DECAY] = <floating> c.decay
    k[K_W] = <floating> c.lerp_weight
    k[K_OMW] = <floating> 1.0 - k[K_W]
    k[K_B2] = <floating> c.beta2
    k[K_OMB2] = <floating> c.one_minus_beta2
    k[K_STEP] = <floating> c.step_size
    k[K_BC2] = <floating> c.bc2_sqrt
    k[K_EPS] = <floating> c.eps
    f.l2 = c.l2
    f.low_weight = fabs(c.lerp_weight) < 0.5
    cdef bint by_reciprocal = (_divide_by_reciprocal_ok(k[K_BC2], k[K_EPS]) and not f.l2
                               and f.low_weight)
    if by_reciprocal:
        _reciprocal_parts(k[K_BC2], &k[K_Y_HI], &k[K_Y_LO])
    # Four rules: amsgrad (s2: max_exp_avg_sq) or not x FMA division or not.
    if not c.has_state2 and by_reciprocal:
        _apply_rule(<RuleAdamReciprocal*> NULL, p, s, lo, hi, k, &f)
    elif not c.has_state2:
        _apply_rule(<RuleAdam*> NULL, p, s, lo, hi, k, &f)
    elif by_reciprocal:
        _apply_rule(<RuleAmsgradReciprocal*> NULL, p, s, lo, hi, k, &f)
    else:
        _apply_rule(<RuleAmsgrad*> NULL, p, s, lo, hi, k, &f)


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
    # a += scale * b and x += scale * b for each extra buffer x (s0, s1, s2 in turn),
    # driven through the same cache-line loop as the optimizers.
    cdef floating k[N_CONST]
    cdef Flags f
    k[K_LR] = <floating> c.lr
    f.l2 = f.first = f.nesterov = f.low_weight = False
    if not c.has_state0:
        _apply_rule(<RuleAxpy1*> NULL, a, s, lo, hi, k, &f)
    elif not c.has_state1:
        _apply_rule(<RuleAxpy2*> NULL, a, s, lo, hi, k, &f)
    elif not c.has_state2:
        _apply_rule(<RuleAxpy3*> NULL, a, s, lo, hi, k, &f)
    else:
        _apply_rule(<RuleAxpy4*> NULL, a, s, lo, hi, k, &f)


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


# the optimizer classes' armed-step check
include "_kernels_plan.pxi"
