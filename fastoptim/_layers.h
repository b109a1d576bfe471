/* Loops of the dense-layer kernels (fastoptim/_kernels_layers.pxi) that GCC does not
 * vectorize well from Cython's C: written here with GCC/Clang vector types (a portable
 * extension: SSE2 pairs in the baseline build, AVX2 in the other), and as plain loops
 * for other compilers.  Both forms do the same operations in the same order on every
 * element and lane, so they give the same bits.
 *
 * fo_axpy_sumsq_{d,f}(y, x, c, lo, hi): y[i] = y[i] + c * x[i] for i in [lo, hi), and
 * return sum(x[i] * x[i]) in double, taken in four lanes: lane k adds the squares of
 * x[lo + 4 j + k] for j = 0, 1, ... in order; the last (hi - lo) % 4 squares go to lane
 * 0; the result is (lane0 + lane1) + (lane2 + lane3).  (GCC vectorizes the plain loop
 * across iterations with a scalar add chain per lane: ~4x slower.)
 */
#ifndef FASTOPTIM_LAYERS_H
#define FASTOPTIM_LAYERS_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
typedef double fo_v4d __attribute__((vector_size(32)));
typedef float fo_v4f __attribute__((vector_size(16)));
#define FASTOPTIM_LAYERS_VECTOR 1
#else
#define FASTOPTIM_LAYERS_VECTOR 0
#endif

static inline double fo_axpy_sumsq_d(double* y, const double* x, double c, ptrdiff_t lo,
                                     ptrdiff_t hi) {
    ptrdiff_t i = lo;
    double acc[4] = {0, 0, 0, 0};
#if FASTOPTIM_LAYERS_VECTOR
    fo_v4d vacc = {0, 0, 0, 0}, vc = {c, c, c, c}, xv, yv;
    for (; i + 4 <= hi; i += 4) {
        memcpy(&xv, x + i, sizeof xv);       /* unaligned loads and stores */
        memcpy(&yv, y + i, sizeof yv);
        vacc = vacc + xv * xv;
        yv = yv + vc * xv;
        memcpy(y + i, &yv, sizeof yv);
    }
    memcpy(acc, &vacc, sizeof vacc);
#else
    for (; i + 4 <= hi; i += 4) {
        int k;
        for (k = 0; k < 4; k++) {
            acc[k] += x[i + k] * x[i + k];
            y[i + k] = y[i + k] + c * x[i + k];
        }
    }
#endif
    for (; i < hi; i++) {
        acc[0] += x[i] * x[i];
        y[i] = y[i] + c * x[i];
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static inline double fo_axpy_sumsq_f(float* y, const float* x, float c, ptrdiff_t lo,
                                     ptrdiff_t hi) {
    ptrdiff_t i = lo;
    double acc[4] = {0, 0, 0, 0};
#if FASTOPTIM_LAYERS_VECTOR
    fo_v4d vacc = {0, 0, 0, 0}, xd;
    fo_v4f vc = {c, c, c, c}, xv, yv;
    for (; i + 4 <= hi; i += 4) {
        memcpy(&xv, x + i, sizeof xv);
        memcpy(&yv, y + i, sizeof yv);
        xd = __builtin_convertvector(xv, fo_v4d);
        vacc = vacc + xd * xd;
        yv = yv + vc * xv;
        memcpy(y + i, &yv, sizeof yv);
    }
    memcpy(acc, &vacc, sizeof vacc);
#else
    for (; i + 4 <= hi; i += 4) {
        int k;
        for (k = 0; k < 4; k++) {
            acc[k] += (double)x[i + k] * (double)x[i + k];
            y[i + k] = y[i + k] + c * x[i + k];
        }
    }
#endif
    for (; i < hi; i++) {
        acc[0] += (double)x[i] * (double)x[i];
        y[i] = y[i] + c * x[i];
    }
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/* fo_transpose_{d,f}(src, dst, k, m): dst (m, k) := src (k, m).T, both C-contiguous:
 * 4 x 4 blocks transposed in registers (vector shuffles), the edges element by element.
 * The blocks go down a strip of src one cache line (64 bytes) wide, so each line of src
 * is read once (a weight matrix may not fit in L1), and the strip's dst rows are
 * written along. */
#if FASTOPTIM_LAYERS_VECTOR
typedef long long fo_v4i64 __attribute__((vector_size(32)));
typedef int fo_v4i32 __attribute__((vector_size(16)));
#if defined(__clang__)
#define FO_SHUFFLE(V, M, a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define FO_SHUFFLE(V, M, a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (M){i0, i1, i2, i3})
#endif
#define FO_STRIP(T) ((ptrdiff_t)(64 / sizeof(T)))
#define FO_TRANSPOSE_BLOCKS(T, V, M)                                                      \
    for (jb = 0; jb < j4; jb += FO_STRIP(T))                                              \
    for (i = 0; i + 4 <= k; i += 4) {                                                     \
        for (j = jb; j < j4 && j < jb + FO_STRIP(T); j += 4) {                            \
            V r0, r1, r2, r3, t0, t1, t2, t3, c0, c1, c2, c3;                             \
            memcpy(&r0, src + (i + 0) * m + j, sizeof r0);                                \
            memcpy(&r1, src + (i + 1) * m + j, sizeof r1);                                \
            memcpy(&r2, src + (i + 2) * m + j, sizeof r2);                                \
            memcpy(&r3, src + (i + 3) * m + j, sizeof r3);                                \
            t0 = FO_SHUFFLE(V, M, r0, r1, 0, 4, 2, 6);                                    \
            t1 = FO_SHUFFLE(V, M, r0, r1, 1, 5, 3, 7);                                    \
            t2 = FO_SHUFFLE(V, M, r2, r3, 0, 4, 2, 6);                                    \
            t3 = FO_SHUFFLE(V, M, r2, r3, 1, 5, 3, 7);                                    \
            c0 = FO_SHUFFLE(V, M, t0, t2, 0, 1, 4, 5);                                    \
            c1 = FO_SHUFFLE(V, M, t1, t3, 0, 1, 4, 5);                                    \
            c2 = FO_SHUFFLE(V, M, t0, t2, 2, 3, 6, 7);                                    \
            c3 = FO_SHUFFLE(V, M, t1, t3, 2, 3, 6, 7);                                    \
            memcpy(dst + (j + 0) * k + i, &c0, sizeof c0);                                \
            memcpy(dst + (j + 1) * k + i, &c1, sizeof c1);                                \
            memcpy(dst + (j + 2) * k + i, &c2, sizeof c2);                                \
            memcpy(dst + (j + 3) * k + i, &c3, sizeof c3);                                \
        }                                                                                 \
    }
#else
#define FO_TRANSPOSE_BLOCKS(T, V, M) i = 0; j = 0; jb = 0; (void)jb;
#endif

#define FO_TRANSPOSE_BODY(T, V, M)                                                        \
    ptrdiff_t i, j, jb, i4 = k / 4 * 4, j4 = m / 4 * 4;                                   \
    FO_TRANSPOSE_BLOCKS(T, V, M)                                                          \
    if (!FASTOPTIM_LAYERS_VECTOR) { i4 = 0; j4 = 0; }                                     \
    for (i = 0; i < k; i++)                                                               \
        for (j = (i < i4 ? j4 : 0); j < m; j++)                                           \
            dst[j * k + i] = src[i * m + j];

static inline void fo_transpose_d(const double* src, double* dst, ptrdiff_t k, ptrdiff_t m) {
    FO_TRANSPOSE_BODY(double, fo_v4d, fo_v4i64)
}

static inline void fo_transpose_f(const float* src, float* dst, ptrdiff_t k, ptrdiff_t m) {
    FO_TRANSPOSE_BODY(float, fo_v4f, fo_v4i32)
}

#endif
