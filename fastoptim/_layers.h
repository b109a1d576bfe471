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

#endif
