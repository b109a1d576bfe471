# Compact storage: float16 / bfloat16 params, grads and state buffers, a float32
# master copy of 16-bit params, round-to-nearest-even or stochastic rounding.
# Included by _kernels.pxi (it uses its Slot, Scalars, Kind, _apply, _prepare,
# _snapshot, _checked_layout, _thread_count).
#
# Design: the math is the float32 element loops of _kernels.pxi, unchanged, run on
# tiles of COMPACT_TILE elements.  Per tile, each 16-bit input is widened into an L1
# scratch row (float32 buffers and the master are used in place), the float32 loop
# runs on the rows, and each 16-bit output is rounded back from its row: one pass over
# memory, the same float32 results as the float32 kernel, then one rounding per store.
# Stochastic rounding takes its bits from a hash of (seed, step, role, element index)
# (_compact.h), so the result does not depend on threads or tiles.  Tile boundaries
# are multiples of COMPACT_TILE within each array (thread chunks are too).

from libc.stdint cimport uint16_t

from numpy import dtype as _np_dtype

cdef extern from "_compact.h":
    int FO_F32
    int FO_BF16
    int FO_F16
    int NPY_HALF
    int NPY_USERDEF
    int FASTOPTIM_HAVE_F16C
    ctypedef struct fo_key:
        uint32_t lo
        uint32_t hi
    fo_key fo_make_key(uint64_t seed, uint64_t step, unsigned role) noexcept nogil
    void fo_widen(int code, const void* src, float* dst, Py_ssize_t n) noexcept nogil
    void fo_narrow(int code, int stochastic, const float* src, void* dst, Py_ssize_t n,
                   uint64_t index, fo_key k) noexcept nogil

cdef enum:
    COMPACT_TILE = 512        # elements per tile: 5 float32 rows = 10 KiB of L1
    COMPACT_ROWS = 5          # param, grad, 3 state buffers
    COMPACT_BUFS = 6          # param, grad, state 0-2, master: the roles of a call

HAVE_F16C = bool(FASTOPTIM_HAVE_F16C)
COMPACT_TILE_ELEMENTS = COMPACT_TILE

cdef struct CompactSlot:
    char* buf[6]              # param, grad, state 0-2, master (NULL when unused)
    Py_ssize_t n
    fo_key keys[4]            # stochastic rounding: param, state 0-2

cdef struct CompactCall:
    int code[5]               # storage of param, grad, state 0-2 (FO_*)
    bint stochastic


# bfloat16's NumPy type number (ml_dtypes registers it at import); -1 until looked up.
cdef int _BF16_NUM = -1


cdef int _bf16_num():
    global _BF16_NUM
    if _BF16_NUM == -1:
        import ml_dtypes
        _BF16_NUM = (<cnp.dtype> _np_dtype(ml_dtypes.bfloat16)).type_num
    return _BF16_NUM


cdef int _storage_code(cnp.ndarray a) except -2:
    """FO_* of a buffer, or -1 for a dtype the compact kernels do not store."""
    cdef int t = cnp.PyArray_TYPE(a)
    if t == cnp.NPY_FLOAT:
        return FO_F32
    if t == NPY_HALF:
        return FO_F16
    if t >= NPY_USERDEF and a.dtype.name == "bfloat16" and t == _bf16_num():
        return FO_BF16
    return -1


# ---------------------------------------------------------------------------
# Tiles and threads
# ---------------------------------------------------------------------------

cdef void _compact_range(Kind kind, const CompactSlot* s, const CompactCall* cc,
                         Py_ssize_t lo, Py_ssize_t hi, const Scalars* c) noexcept nogil:
    cdef float rows[COMPACT_ROWS * COMPACT_TILE]
    cdef float* row[5]
    cdef Slot t
    cdef Py_ssize_t a = lo, b, n
    cdef int r
    for r in range(COMPACT_ROWS):
        row[r] = rows + r * COMPACT_TILE
    while a < hi:
        b = min(hi, (a // COMPACT_TILE + 1) * COMPACT_TILE)
        n = b - a
        # Inputs: float32 in place, 16-bit widened into its row (the master stands
        # in for a 16-bit param: it holds the exact weights).
        for r in range(5):
            if s.buf[r] == NULL:
                row[r] = NULL
            elif r == 0 and s.buf[5] != NULL:
                row[r] = <float*> s.buf[5] + a
            elif cc.code[r] == FO_F32:
                row[r] = <float*> s.buf[r] + a
            else:
                row[r] = rows + r * COMPACT_TILE
                fo_widen(cc.code[r], <uint16_t*> s.buf[r] + a, row[r], n)
        t.p = <char*> row[0]
        t.g = <char*> row[1]
        t.s0 = <char*> row[2]
        t.s1 = <char*> row[3]
        t.s2 = <char*> row[4]
        t.n = n
        _apply(kind, False, &t, 0, n, c)
        # Outputs: every 16-bit buffer but the grad rounded back from its row.
        for r in range(5):
            if r != 1 and s.buf[r] != NULL and cc.code[r] != FO_F32:
                fo_narrow(cc.code[r], cc.stochastic, row[r], <uint16_t*> s.buf[r] + a, n,
                          <uint64_t> a, s.keys[0 if r == 0 else r - 1])
        a = b


cdef void _compact_drive(Kind kind, const CompactSlot* slots, Py_ssize_t nslots,
                         Py_ssize_t total, const CompactCall* cc, const Scalars* c,
                         int n_threads) noexcept nogil:
    # _drive's scheme (one parallel region, large arrays split, small ones dealt out
    # whole) with chunks on tile boundaries.
    cdef Py_ssize_t k, lo, hi, per
    cdef int tid, team
    if n_threads <= 1 or total < PARALLEL_MIN_ELEMENTS or not FASTOPTIM_HAVE_OPENMP:
        for k in range(nslots):
            _compact_range(kind, &slots[k], cc, 0, slots[k].n, c)
        return
    with parallel(num_threads=n_threads):
        tid = threadid()
        team = fastoptim_omp_num_threads()
        for k in range(nslots):
            if slots[k].n >= SPLIT_MIN_ELEMENTS:
                per = (slots[k].n + team - 1) // team
                per = ((per + COMPACT_TILE - 1) // COMPACT_TILE) * COMPACT_TILE
                lo = min(<Py_ssize_t> tid * per, slots[k].n)
                hi = min(lo + per, slots[k].n)
                if lo < hi:
                    _compact_range(kind, &slots[k], cc, lo, hi, c)
            elif k % team == tid:
                _compact_range(kind, &slots[k], cc, 0, slots[k].n, c)


# ---------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------

_ROLE_DTYPES = ("float32, float16 or bfloat16",) * 5 + ("float32",)


cdef char* _checked_compact(object obj, tuple names, int role, Py_ssize_t index,
                            bint indexed, cnp.ndarray ref, int* code) except? NULL:
    """Check one buffer of a compact call; its storage goes to code[role] (the first
    array of a list sets it, the others must match)."""
    cdef cnp.ndarray a
    cdef int got
    if not cnp.PyArray_Check(obj):
        raise TypeError(f"{_label(names, role, index, indexed)} must be a numpy.ndarray "
                        f"of {_ROLE_DTYPES[role]}, got {type(obj).__name__}")
    if not cnp.PyArray_CheckExact(obj) and isinstance(obj, _MaskedArray):
        raise TypeError(f"{_label(names, role, index, indexed)} is a masked array; the "
                        f"update would ignore its mask: pass a plain ndarray (.data, or "
                        f".filled(...))")
    a = <cnp.ndarray> obj
    got = _storage_code(a)
    if got < 0 or (role == 5 and got != FO_F32):
        raise TypeError(f"{_label(names, role, index, indexed)} must have dtype "
                        f"{_ROLE_DTYPES[role]}, got {a.dtype}")
    if index == 0:
        code[role] = got
    elif got != code[role]:
        raise TypeError(f"{_label(names, role, index, indexed)} has dtype {a.dtype} but "
                        f"{names[role]}[0] has dtype {_STORAGE_NAMES[code[role]]}: the "
                        f"arrays of one list share one dtype")
    return _checked_layout(a, names, role, index, indexed, ref, role != 1)


_STORAGE_NAMES = {0: "float32", 1: "bfloat16", 2: "float16"}


cdef CompactSlot* _gather_compact(tuple names, list lists, bint indexed,
                                  CompactCall* cc, Py_ssize_t* total) except NULL:
    """Check every array of a compact call (lists: param, grad, state 0-2, master; None
    where unused) and collect their pointers.  Raises before any kernel runs."""
    cdef Py_ssize_t n = len(lists[0]), k, e = 0, r
    cdef CompactSlot* slots = <CompactSlot*> malloc(max(n, 1) * sizeof(CompactSlot))
    cdef Extent* ext = <Extent*> malloc(max(n * COMPACT_BUFS, 1) * sizeof(Extent))
    cdef int code[6]
    cdef cnp.ndarray p
    cdef size_t max_end_all = 0, max_end_w = 0, nbytes
    cdef char* ptr
    if slots == NULL or ext == NULL:
        free(slots)
        free(ext)
        raise MemoryError()
    try:
        total[0] = 0
        for k in range(n):
            for r in range(COMPACT_BUFS):
                slots[k].buf[r] = NULL
                if lists[r] is None:
                    continue
                obj = lists[r][k]
                ptr = _checked_compact(obj, names, r, k, indexed,
                                       None if r == 0 else p, code)
                if r == 0:
                    p = <cnp.ndarray> obj
                slots[k].buf[r] = ptr
                nbytes = <size_t> cnp.PyArray_NBYTES(<cnp.ndarray> obj)
                if nbytes:
                    ext[e].start = <size_t> ptr
                    ext[e].end = <size_t> ptr + nbytes
                    ext[e].writeable = r != 1
                    ext[e].role = r
                    ext[e].index = k
                    e += 1
            slots[k].n = cnp.PyArray_SIZE(p)
            total[0] += slots[k].n
        if n > 0:
            if code[0] == FO_F32 and lists[5] is not None:
                raise ValueError("master is only for float16/bfloat16 params (a float32 "
                                 "param holds its exact weights itself): pass master=None")
            for r in range(5):
                cc.code[r] = code[r] if lists[r] is not None else FO_F32
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


cdef int _run_compact(Kind kind, tuple names, tuple arrays, tuple used, object master,
                      bint stochastic, object seeds, object step, Scalars* c,
                      object n_threads) except -1:
    """_run for compact storage: `master` (None, or arrays like param) and, when
    stochastic, `seeds` (one int in [0, 2**64) per array) and `step` (an int >= 1)."""
    cdef bint indexed
    cdef Py_ssize_t total = 0, n, k
    cdef CompactSlot* slots
    cdef CompactCall cc
    cdef uint64_t seed_k, step_u = 0
    cdef unsigned role
    cdef int threads = _thread_count(n_threads)
    names = names + ("state[1]",) * (5 - len(names)) + ("master",)
    lists, indexed = _prepare(names[:len(arrays)], arrays, used)
    lists = lists + [None] * (5 - len(lists))
    n = len(lists[0])
    if master is None:
        lists.append(None)
    elif indexed:
        lists.append(_snapshot(master, "master", n))
    else:
        lists.append((master,))
    if stochastic:
        if type(step) is not int or not 1 <= step < 2 ** 63:
            raise ValueError(f"step must be an int in [1, 2**63), got {step!r}")
        step_u = <uint64_t> step
        if not isinstance(seeds, (tuple, list)) or len(seeds) != n:
            raise ValueError(f"seeds must be a list of {n} ints (one per array)")
        seeds = tuple(seeds)
        for s in seeds:
            if type(s) is not int or not 0 <= s < 2 ** 64:
                raise ValueError(f"every seed must be an int in [0, 2**64), got {s!r}")
    cc.stochastic = stochastic
    slots = _gather_compact(names, lists, indexed, &cc, &total)
    if stochastic:
        for k in range(n):
            seed_k = <uint64_t> seeds[k]
            for role in range(4):
                slots[k].keys[role] = fo_make_key(seed_k, step_u, role)
    c.has_state0 = lists[2] is not None
    c.has_state1 = lists[3] is not None
    c.has_state2 = lists[4] is not None
    with nogil:
        _compact_drive(kind, slots, n, total, &cc, c, threads)
    free(slots)
    return 0


# ---------------------------------------------------------------------------
# Entry points: the float32 kernels' arguments, then master, stochastic, seeds, step
# ---------------------------------------------------------------------------

def sgd_compact(param, grad, momentum_buffer, master, double lr, double momentum,
                double dampening, bint nesterov, double weight_decay, bint maximize,
                bint first, bint stochastic, seeds, step, n_threads):
    cdef Scalars c
    _sgd_scalars(&c, lr, momentum, dampening, nesterov, weight_decay, maximize, first)
    _run_compact(KIND_SGD, ("param", "grad", "momentum_buffer"),
                 (param, grad, momentum_buffer), (True, True, momentum != 0), master,
                 stochastic, seeds, step, &c, n_threads)


def rmsprop_compact(param, grad, square_avg, momentum_buffer, grad_avg, master, double lr,
                    double alpha, double eps, double weight_decay, double momentum,
                    bint centered, bint maximize, bint stochastic, seeds, step, n_threads):
    cdef Scalars c
    _rmsprop_scalars(&c, lr, alpha, eps, weight_decay, momentum, maximize)
    _run_compact(KIND_RMSPROP, ("param", "grad", "square_avg", "momentum_buffer", "grad_avg"),
                 (param, grad, square_avg, momentum_buffer, grad_avg),
                 (True, True, True, momentum > 0, centered), master, stochastic, seeds,
                 step, &c, n_threads)


def adam_compact(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, master, bint amsgrad,
                 double beta1, double beta2, double eps, double weight_decay, bint l2,
                 double decay, double step_size, double bc2_sqrt, bint maximize,
                 bint stochastic, seeds, step, n_threads):
    cdef Scalars c
    _adam_scalars(&c, beta1, beta2, eps, weight_decay, l2, decay, step_size, bc2_sqrt,
                  maximize)
    _run_compact(KIND_ADAM, ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
                 (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq),
                 (True, True, True, True, amsgrad), master, stochastic, seeds, step, &c,
                 n_threads)


# ---------------------------------------------------------------------------
# Test hooks: the conversions alone
# ---------------------------------------------------------------------------

_HOOK_NAMES = ("float32 array", "", "16-bit array")


def round_to_16bit(src, dst, bint stochastic=False, seed=0, step=1, role=0):
    """dst[...] = src rounded (contiguous float32 src -> float16/bfloat16 dst of the
    same size), the way the kernels store a 16-bit buffer of role `role` (0 = param,
    1-3 = state 0-2) at `step`.  Lets tests check the conversions on every bit pattern."""
    cdef int code[6]
    cdef char* s = _checked_compact(src, _HOOK_NAMES, 0, 0, False, None, code)
    cdef char* d = _checked_compact(dst, _HOOK_NAMES, 2, 0, False, None, code)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray> src), a, b
    cdef fo_key k = fo_make_key(<uint64_t> seed, <uint64_t> step, <unsigned> role)
    if code[0] != FO_F32 or code[2] == FO_F32 or n != cnp.PyArray_SIZE(<cnp.ndarray> dst):
        raise ValueError("src must be float32 and dst float16/bfloat16 of the same size")
    with nogil:
        a = 0
        while a < n:  # tiles as in the kernels (the hash's high word is per tile)
            b = min(n, (a // COMPACT_TILE + 1) * COMPACT_TILE)
            fo_narrow(code[2], stochastic, <float*> s + a, <uint16_t*> d + a, b - a,
                      <uint64_t> a, k)
            a = b


def widen_16bit(src, dst):
    """dst[...] = src widened (float16/bfloat16 src -> float32 dst of the same size)."""
    cdef int code[6]
    cdef char* s = _checked_compact(src, _HOOK_NAMES, 2, 0, False, None, code)
    cdef char* d = _checked_compact(dst, _HOOK_NAMES, 0, 0, False, None, code)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(<cnp.ndarray> src)
    if code[0] != FO_F32 or code[2] == FO_F32 or n != cnp.PyArray_SIZE(<cnp.ndarray> dst):
        raise ValueError("src must be float16/bfloat16 and dst float32 of the same size")
    with nogil:
        fo_widen(code[2], <uint16_t*> s, <float*> d, n)
