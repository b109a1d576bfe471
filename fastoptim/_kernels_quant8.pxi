# 8-bit blockwise quantized optimizer state (fastoptim.quantized.QuantizedState),
# included by _kernels.pxi.
#
# A state buffer is stored as uint8 codes (the param's shape) and one float32 absmax
# per block of Q8_BLOCK consecutive elements (memory order): element = map[code] *
# absmax, with bitsandbytes' dynamic map (signed for first moments, unsigned for
# second moments; fastoptim.reference.dynamic_map).  One pass per tile of blocks:
# decode the tile's state into float temporaries (they stay in L1), run the float
# kernel's own element loop (_apply: the update is the float32/float64 one, operation
# for operation), then re-encode each block (new absmax, nearest code) and write.
# Blocks are never split across threads and every block's result depends only on
# its own elements, so the result is the same for any thread count.  A state buffer
# may also stay a float array of the param's dtype ("plain": Schedule-Free's z next to
# an 8-bit exp_avg_sq): the loop updates it in place, as the float kernel does.
#
# Encoding a value x of a block: y = x * RN(1 / max(absmax, 1e-38)) (clamped to
# [-1, 1]); its code is the number of midpoints of neighbouring map values below y
# (fastoptim.reference.quantize_blockwise).  Instead of a binary search the kernel
# looks y up by the top 16 bits of its float32 pattern (sign, exponent and 7 mantissa
# bits: a "bucket").  Map values are far enough apart that at most one midpoint falls
# in a bucket, so a table entry holds the code below that midpoint, the code above it
# and the low 16 bits where it switches: one load and one compare per element, which
# vectorizes (_quant8.h).  The table is built in fastoptim.quantized from the
# reference rule, which also checks that no bucket holds two midpoints.

from libc.stdint cimport uint8_t, int32_t
from libc.string cimport memset
from libc.math cimport NAN

import numpy as np

cdef extern from "_quant8.h":
    enum:
        FASTOPTIM_Q8_BASE   # the first bucket: |y| bits >> 16 of 2**-24
        FASTOPTIM_Q8_NB     # buckets per sign, up to that of 1.0
    uint32_t fastoptim_float_bits(float f) noexcept nogil
    float fastoptim_bits_float(uint32_t u) noexcept nogil
    uint32_t fastoptim_q8_absmax_bits(const float* x, Py_ssize_t n) noexcept nogil
    void fastoptim_q8_encode(const float* x, Py_ssize_t n, float scale, const uint32_t* lut,
                             uint8_t* codes) noexcept nogil
    void fastoptim_q8_decode(const uint8_t* codes, float absmax, const float* code,
                             float* out, Py_ssize_t n) noexcept nogil

Q8_BLOCK = 256
# Buckets: |y| bits >> 16 from that of 2**-24 (every smaller magnitude shares the
# first bucket) to that of 1.0; positive values first, then negative ones.
Q8_BUCKET_BASE = FASTOPTIM_Q8_BASE
Q8_BUCKETS = FASTOPTIM_Q8_NB
cdef enum:
    _Q8_BLOCK = 256
    _Q8_TILE_BLOCKS = 4             # blocks decoded, updated and encoded per pass
    _Q8_TILE = _Q8_BLOCK * _Q8_TILE_BLOCKS


cdef class Quant8Codec:
    """One code map (256 sorted float32 values) and its bucket table (2 * Q8_BUCKETS
    uint32 entries: code below | code above << 8 | switch point << 16), copied into
    the object.  Any table content is memory-safe: a code is always < 256."""
    cdef float code[256]
    cdef uint32_t lut[2 * FASTOPTIM_Q8_NB]
    cdef readonly int zero_code

    def __cinit__(self, code, lut):
        cdef Py_ssize_t i
        if (not isinstance(code, cnp.ndarray) or code.dtype != np.float32 or code.shape != (256,)
                or not isinstance(lut, cnp.ndarray) or lut.dtype != np.uint32
                or lut.shape != (2 * FASTOPTIM_Q8_NB,)):
            raise TypeError("Quant8Codec needs code: float32 (256,) and lut: uint32 "
                            f"({2 * FASTOPTIM_Q8_NB},)")
        self.zero_code = -1
        for i in range(256):
            self.code[i] = code[i]
            if code[i] == 0 and self.zero_code < 0:
                self.zero_code = <int> i
        if self.zero_code < 0:
            raise ValueError("the code map must hold 0")
        for i in range(2 * FASTOPTIM_Q8_NB):
            self.lut[i] = lut[i]


cdef struct QSlot:
    # One param array, its grad and the codes/absmax of up to three state buffers
    # (or the data of a plain one).
    char* p
    char* g
    uint8_t* codes[3]
    float* absmax[3]
    char* plain[3]
    Py_ssize_t n


cdef struct QCodecs:
    const float* code[3]
    const uint32_t* lut[3]
    uint8_t zero[3]
    bint used[3]     # 8-bit
    bint plain[3]    # a float array of the param's dtype


cdef inline void _q8_decode(const uint8_t* codes, float absmax, const float* code,
                            floating* out, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t j
    if floating is float:
        fastoptim_q8_decode(codes, absmax, code, out, n)
    else:
        for j in range(n):
            out[j] = <double> (code[codes[j]] * absmax)


cdef void _q8_encode(const floating* x, Py_ssize_t n, const uint32_t* lut, uint8_t zero,
                     uint8_t* codes, float* absmax_out) noexcept nogil:
    # One block: absmax = max |x|, then the code of every x * RN(1 / absmax).
    cdef float narrow[_Q8_BLOCK]
    cdef const float* xs
    cdef uint32_t amax
    cdef float absmax
    cdef Py_ssize_t j
    if floating is double:
        for j in range(n):
            narrow[j] = <float> x[j]   # the state is float32: round first
        xs = narrow
    else:
        xs = x
    amax = fastoptim_q8_absmax_bits(xs, n)
    if amax >= 0x7f800000u:
        # A NaN or an infinity: the block decodes as NaN from now on.
        absmax_out[0] = NAN
        memset(codes, zero, n)
        return
    absmax = fastoptim_bits_float(amax)
    fastoptim_q8_encode(xs, n, (<float> 1) / (absmax if absmax > <float> 1e-38 else <float> 1e-38),
                        lut, codes)
    absmax_out[0] = absmax


cdef void _q8_range(Kind kind, const QSlot* s, Py_ssize_t b0, Py_ssize_t b1,
                    const Scalars* c, const QCodecs* q, bint encode_only,
                    floating* unused) noexcept nogil:
    # Blocks [b0, b1) of one array, a tile at a time, through temporaries on this
    # thread's stack.  (`unused` only selects the specialization.)
    cdef floating scratch[3 * _Q8_TILE]
    cdef Slot t
    cdef Py_ssize_t lo, hi, n, blk, off, k
    cdef floating* state[3]
    cdef char* bufs[3]
    cdef int r
    cdef size_t item = sizeof(floating)
    for r in range(3):
        state[r] = scratch + r * _Q8_TILE
    lo = b0
    while lo < b1:
        hi = min(lo + _Q8_TILE_BLOCKS, b1)
        off = lo * _Q8_BLOCK
        n = min(hi * _Q8_BLOCK, s.n) - off
        for r in range(3):
            if q.plain[r]:
                bufs[r] = s.plain[r] + off * item
            elif q.used[r]:
                bufs[r] = <char*> state[r]
            else:
                bufs[r] = NULL
        t.s0, t.s1, t.s2 = bufs[0], bufs[1], bufs[2]
        if encode_only:
            # QuantizedState.from_array: the values are the param array.
            for blk in range(lo, hi):
                k = (blk - lo) * _Q8_BLOCK
                _q8_encode(<floating*> (s.p + (off + k) * item), min(_Q8_BLOCK, n - k),
                           q.lut[0], q.zero[0], s.codes[0] + off + k,
                           s.absmax[0] + blk)
            lo = hi
            continue
        for r in range(3):
            if q.used[r]:
                for blk in range(lo, hi):
                    k = (blk - lo) * _Q8_BLOCK
                    _q8_decode(s.codes[r] + off + k, s.absmax[r][blk], q.code[r],
                               state[r] + k, min(_Q8_BLOCK, n - k))
        t.p = s.p + off * item
        t.g = s.g + off * item
        t.n = n
        _apply(kind, floating is double, &t, 0, n, c)
        for r in range(3):
            if q.used[r]:
                for blk in range(lo, hi):
                    k = (blk - lo) * _Q8_BLOCK
                    _q8_encode(state[r] + k, min(_Q8_BLOCK, n - k), q.lut[r], q.zero[r],
                               s.codes[r] + off + k, s.absmax[r] + blk)
        lo = hi


cdef inline Py_ssize_t _q8_blocks(Py_ssize_t n) noexcept nogil:
    return (n + _Q8_BLOCK - 1) // _Q8_BLOCK


cdef inline void _q8_apply(Kind kind, bint dbl, const QSlot* s, Py_ssize_t b0, Py_ssize_t b1,
                           const Scalars* c, const QCodecs* q, bint encode_only) noexcept nogil:
    if dbl:
        _q8_range(kind, s, b0, b1, c, q, encode_only, <double*> NULL)
    else:
        _q8_range(kind, s, b0, b1, c, q, encode_only, <float*> NULL)


cdef void _q8_drive(Kind kind, bint dbl, const QSlot* slots, Py_ssize_t nslots,
                    Py_ssize_t total, const Scalars* c, const QCodecs* q, bint encode_only,
                    int n_threads) noexcept nogil:
    # _drive's scheme with blocks as the unit: large arrays are split into
    # contiguous runs of whole blocks, small ones dealt out whole.
    cdef Py_ssize_t k, lo, hi
    cdef int tid, team
    if n_threads <= 1 or total < PARALLEL_MIN_ELEMENTS or not FASTOPTIM_HAVE_OPENMP:
        for k in range(nslots):
            _q8_apply(kind, dbl, &slots[k], 0, _q8_blocks(slots[k].n), c, q, encode_only)
        return
    with parallel(num_threads=n_threads):
        tid = threadid()
        team = fastoptim_omp_num_threads()
        for k in range(nslots):
            if slots[k].n >= SPLIT_MIN_ELEMENTS:
                lo = _share_start(_q8_blocks(slots[k].n), tid, team)
                hi = _share_start(_q8_blocks(slots[k].n), tid + 1, team)
                if lo < hi:
                    _q8_apply(kind, dbl, &slots[k], lo, hi, c, q, encode_only)
            elif k % team == tid:
                _q8_apply(kind, dbl, &slots[k], 0, _q8_blocks(slots[k].n), c, q,
                          encode_only)


# ---------------------------------------------------------------------------
# Checked entry points
# ---------------------------------------------------------------------------

cdef char* _q8_checked(object obj, tuple names, int role, Py_ssize_t index, bint indexed,
                       cnp.ndarray ref, bint is_codes) except? NULL:
    """Check codes (uint8, ref's shape and memory order) or absmax (float32, one per
    block) of one state buffer; both are written in place."""
    cdef cnp.ndarray a
    cdef str label = _label(names, role, index, indexed)
    cdef str what = ("a numpy.ndarray of uint8" if is_codes else
                     "a 1-d numpy.ndarray of float32")
    cdef int flags
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{label} must be {what}, got {type(obj).__name__}")
    if not cnp.PyArray_CheckExact(obj) and isinstance(obj, _MaskedArray):
        raise TypeError(f"{label} is a masked array: pass a plain ndarray")
    a = <cnp.ndarray> obj
    flags = cnp.PyArray_FLAGS(a)
    if is_codes:
        if cnp.PyArray_TYPE(a) != cnp.NPY_UINT8:
            raise TypeError(f"{label} must have dtype uint8, got {a.dtype}")
        if not cnp.PyArray_SAMESHAPE(a, ref):
            raise ValueError(f"{label} has shape {_shape_str(a)} but "
                             f"{_label(names, 0, index, indexed)} has shape {_shape_str(ref)}")
        if (cnp.PyArray_IS_C_CONTIGUOUS(a) != cnp.PyArray_IS_C_CONTIGUOUS(ref) and
                cnp.PyArray_IS_F_CONTIGUOUS(a) != cnp.PyArray_IS_F_CONTIGUOUS(ref)):
            raise ValueError(f"{label} and {_label(names, 0, index, indexed)} must be "
                             f"contiguous in the same memory order (C or Fortran)")
    else:
        if cnp.PyArray_TYPE(a) != cnp.NPY_FLOAT or not cnp.PyArray_ISNOTSWAPPED(a):
            raise TypeError(f"{label} must have dtype float32 (native byte order), "
                            f"got {a.dtype}")
        if cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_DIM(a, 0) != _q8_blocks(cnp.PyArray_SIZE(ref)):
            raise ValueError(f"{label} must have shape ({_q8_blocks(cnp.PyArray_SIZE(ref))},) "
                             f"(one per {_Q8_BLOCK} elements of "
                             f"{_label(names, 0, index, indexed)}), got {_shape_str(a)}")
        if not flags & cnp.NPY_ARRAY_ALIGNED:
            raise ValueError(f"{label} must be aligned to its dtype")
    if not (flags & cnp.NPY_ARRAY_C_CONTIGUOUS or flags & cnp.NPY_ARRAY_F_CONTIGUOUS):
        raise ValueError(f"{label} must be contiguous")
    if not flags & cnp.NPY_ARRAY_WRITEABLE:
        raise ValueError(f"{label} must be writeable: it is updated in place")
    return <char*> cnp.PyArray_DATA(a)


cdef QSlot* _q8_gather(tuple names, list lists, bint indexed, bint params_writeable,
                       const QCodecs* q, bint* is_double, Py_ssize_t* total) except NULL:
    """Check every array of a call (lists: params, grads or None, then codes and
    absmax of each state, None when unused; a plain state: its array in the codes
    place, None for absmax) and collect their data pointers."""
    cdef Py_ssize_t n = len(lists[0]), k, e = 0, nbufs = len(lists), r, j
    cdef QSlot* slots = <QSlot*> malloc(max(n, 1) * sizeof(QSlot))
    cdef Extent* ext = <Extent*> malloc(max(n * nbufs, 1) * sizeof(Extent))
    cdef char* ptr
    cdef cnp.ndarray p
    cdef size_t max_end_all = 0, max_end_w = 0
    if slots == NULL or ext == NULL:
        free(slots)
        free(ext)
        raise MemoryError()
    try:
        total[0] = 0
        for k in range(n):
            obj = lists[0][k]
            slots[k].p = _checked(obj, names, 0, k, indexed,
                                  None if k == 0 else <cnp.ndarray> lists[0][0],
                                  params_writeable)
            p = <cnp.ndarray> obj
            slots[k].g = NULL
            slots[k].n = cnp.PyArray_SIZE(p)
            total[0] += slots[k].n
            for j in range(3):
                slots[k].codes[j] = NULL
                slots[k].absmax[j] = NULL
                slots[k].plain[j] = NULL
            for r in range(1, nbufs):
                if lists[r] is None:
                    continue
                a = lists[r][k]
                if r == 1:
                    ptr = _checked(a, names, 1, k, indexed, p, False)
                    slots[k].g = ptr
                elif q.plain[(r - 2) // 2]:
                    ptr = _checked(a, names, r, k, indexed, p, True)
                    slots[k].plain[(r - 2) // 2] = ptr
                else:
                    ptr = _q8_checked(a, names, r, k, indexed, p, r % 2 == 0)
                    if r % 2 == 0:
                        slots[k].codes[(r - 2) // 2] = <uint8_t*> ptr
                    else:
                        slots[k].absmax[(r - 2) // 2] = <float*> ptr
                if cnp.PyArray_NBYTES(<cnp.ndarray> a):
                    ext[e].start = <size_t> ptr
                    ext[e].end = <size_t> ptr + <size_t> cnp.PyArray_NBYTES(<cnp.ndarray> a)
                    ext[e].writeable = r != 1
                    ext[e].role = r
                    ext[e].index = k
                    e += 1
            if cnp.PyArray_NBYTES(p):
                ext[e].start = <size_t> slots[k].p
                ext[e].end = <size_t> slots[k].p + <size_t> cnp.PyArray_NBYTES(p)
                ext[e].writeable = params_writeable
                ext[e].role = 0
                ext[e].index = k
                e += 1
        is_double[0] = n > 0 and cnp.PyArray_TYPE(<cnp.ndarray> lists[0][0]) == cnp.NPY_DOUBLE
        # Any two buffers overlapping, unless both are only read.
        qsort(ext, e, sizeof(Extent), _cmp_extent)
        for k in range(e):
            if ext[k].start < (max_end_all if ext[k].writeable else max_end_w):
                for r in range(k):
                    if ext[r].end > ext[k].start and (ext[r].writeable or ext[k].writeable):
                        raise ValueError(
                            f"{_label(names, ext[r].role, ext[r].index, indexed)} and "
                            f"{_label(names, ext[k].role, ext[k].index, indexed)} share "
                            f"memory; every updated buffer needs its own memory")
            max_end_all = max(max_end_all, ext[k].end)
            if ext[k].writeable:
                max_end_w = max(max_end_w, ext[k].end)
    except BaseException:
        free(slots)
        free(ext)
        raise
    free(ext)
    return slots


cdef int _q8_run(Kind kind, tuple names, tuple arrays, tuple used, tuple codecs,
                 Scalars* c, object n_threads, bint encode_only=False,
                 tuple plain=(False, False, False)) except -1:
    """arrays: (param, grad, codes0, absmax0, codes1, absmax1, codes2, absmax2);
    codecs: the Quant8Codec of each state (None when unused or plain); plain[r]: state
    r is a float array (in place of codes r; absmax r None and unused)."""
    cdef bint indexed, dbl = False
    cdef Py_ssize_t total = 0, n
    cdef QSlot* slots
    cdef QCodecs q
    cdef Quant8Codec codec
    cdef int r
    cdef int threads = _thread_count(n_threads)
    for r in range(3):
        q.plain[r] = plain[r]
        q.used[r] = used[2 + 2 * r] and not q.plain[r]
        if q.used[r]:
            if not isinstance(codecs[r], Quant8Codec):
                raise TypeError(f"codec {r} must be a Quant8Codec")
            codec = <Quant8Codec> codecs[r]
            q.code[r] = codec.code
            q.lut[r] = codec.lut
            q.zero[r] = <uint8_t> codec.zero_code
        else:
            q.code[r] = NULL
            q.lut[r] = NULL
            q.zero[r] = 0
    # `lists` holds the snapshot tuples (and `codecs` the tables) until the kernel is done.
    lists, indexed = _prepare(names, arrays, used)
    n = len(lists[0])
    slots = _q8_gather(names, lists, indexed, not encode_only, &q, &dbl, &total)
    c.has_state0 = q.used[0] or q.plain[0]
    c.has_state1 = q.used[1] or q.plain[1]
    c.has_state2 = q.used[2] or q.plain[2]
    with nogil:
        _q8_drive(kind, dbl, slots, n, total, c, &q, encode_only, threads)
    free(slots)
    return 0


cdef tuple _Q8_NAMES_SGD = ("param", "grad", "momentum_buffer.codes", "momentum_buffer.absmax")
cdef tuple _Q8_NAMES_RMSPROP = ("param", "grad", "square_avg.codes", "square_avg.absmax",
                                "momentum_buffer.codes", "momentum_buffer.absmax",
                                "grad_avg.codes", "grad_avg.absmax")
cdef tuple _Q8_NAMES_ADAM = ("param", "grad", "exp_avg.codes", "exp_avg.absmax",
                             "exp_avg_sq.codes", "exp_avg_sq.absmax",
                             "max_exp_avg_sq.codes", "max_exp_avg_sq.absmax")


def quant8_encode(values, codes, absmax, Quant8Codec codec not None, n_threads):
    """Encode float32/float64 `values` into codes and absmax (in place)."""
    cdef Scalars c
    _q8_run(KIND_AXPY, ("values", "grad", "codes", "absmax"),
            (values, None, codes, absmax, None, None, None, None),
            (True, False, True, True, False, False, False, False),
            (codec, None, None), &c, n_threads, True)


def sgd8(param, grad, buf_codes, buf_absmax, Quant8Codec signed not None, double lr,
         double momentum, double dampening, bint nesterov, double weight_decay,
         bint maximize, bint first, n_threads):
    """sgd with an 8-bit momentum buffer (momentum != 0)."""
    cdef Scalars c
    _sgd_scalars(&c, lr, momentum, dampening, nesterov, weight_decay, maximize, first)
    _q8_run(KIND_SGD, _Q8_NAMES_SGD,
            (param, grad, buf_codes, buf_absmax, None, None, None, None),
            (True, True, True, True, False, False, False, False),
            (signed, None, None), &c, n_threads)


def rmsprop8(param, grad, sq_codes, sq_absmax, buf_codes, buf_absmax, ga_codes, ga_absmax,
             Quant8Codec signed not None, Quant8Codec unsigned not None, double lr,
             double alpha, double eps, double weight_decay, double momentum, bint centered,
             bint maximize, n_threads):
    """rmsprop with 8-bit square_avg (unsigned), momentum_buffer and grad_avg (signed)."""
    cdef Scalars c
    _rmsprop_scalars(&c, lr, alpha, eps, weight_decay, momentum, maximize)
    _q8_run(KIND_RMSPROP, _Q8_NAMES_RMSPROP,
            (param, grad, sq_codes, sq_absmax, buf_codes, buf_absmax, ga_codes, ga_absmax),
            (True, True, True, True, momentum > 0, momentum > 0, centered, centered),
            (unsigned, signed, signed), &c, n_threads)


def adam8(param, grad, m_codes, m_absmax, v_codes, v_absmax, vmax_codes, vmax_absmax,
          Quant8Codec signed not None, Quant8Codec unsigned not None, bint amsgrad,
          double beta1, double beta2, double eps, double weight_decay, bint l2, double decay,
          double step_size, double bc2_sqrt, bint maximize, n_threads):
    """adam with 8-bit exp_avg (signed), exp_avg_sq and max_exp_avg_sq (unsigned)."""
    cdef Scalars c
    _adam_scalars(&c, beta1, beta2, eps, weight_decay, l2, decay, step_size, bc2_sqrt, maximize)
    _q8_run(KIND_ADAM, _Q8_NAMES_ADAM,
            (param, grad, m_codes, m_absmax, v_codes, v_absmax, vmax_codes, vmax_absmax),
            (True, True, True, True, True, True, amsgrad, amsgrad),
            (signed, unsigned, unsigned), &c, n_threads)
