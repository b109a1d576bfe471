/* NAdam's and Schedule-Free's float32 loops divide v by bias_correction2 = 1 - beta2**t
 * (a per-call scalar c) on top of their per-element divides.  Can FMAs replace that
 * divide exactly and faster?  Each loop below is the template's body (fastoptim/
 * _kernels_elementwise.pxi.tp) with `v / c` computed four ways, one thread, in cache:
 *   div       v / c (what the kernels do)
 *   markstein q = RN(v*y_hi + RN(v*y_lo)), r = v - q*c, RN(q + r*y_hi): 4 operations, but
 *             exact only for v >= 2**-102 and below overflow (the residual underflows)
 *   guarded   markstein on v scaled by 2**48 below 2**-90, largest-float clamp, scale
 *             back in the final FMA with eps: exact for every v (eps >= 2**-38)
 *   widened   (float)((double)v * RN64(1/c)): exact for every float32 v (the double
 *             product is within 2**-52 of v/c, every float32 rounding boundary at least
 *             2**-49 away), no FMA needed
 *   gcc -O3 -fno-math-errno -ffp-contract=off -mavx2 -mfma scalar_divide.c -lm && ./a.out */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline float markstein(float x, float negc, float y_hi, float y_lo) {
    float q = fmaf(x, y_hi, x * y_lo);
    return fmaf(fmaf(q, negc, x), y_hi, q);
}
static inline float guarded(float x, float negc, float y_hi, float y_a, float y_b, float eps) {
    float sel = (float) (x < 8.077935669463161e-28f);     /* 2**-90: no branch, vectorizes */
    float up = fmaf(sel, 281474976710656.0f, 1.0f);       /* 2**48 or 1 */
    float sd = fmaf(sel, -0.99999994f, 1.0f);             /* 2**-24 or 1 */
    x = x * up;
    float q = fmaf(x, y_a, x * y_b);                       /* y_b >= 0: overflow is +inf */
    q = q < FLT_MAX ? q : FLT_MAX;
    return fmaf(sqrtf(fmaf(fmaf(q, negc, x), y_hi, q)), sd, eps);
}
#define NADAM(DENOM) for (long i = 0; i < n; i++) { \
    float gi = g[i], pi = p[i] * 1.0f, mi = m[i] + 0.1f * (gi - m[i]); m[i] = mi; \
    float vi = v[i] * 0.999f + 0.001f * gi * gi; v[i] = vi; float denom = DENOM; \
    pi = pi + (-1e-4f * gi) / denom; p[i] = pi + (-1e-3f * mi) / denom; }
#define SF(DENOM) for (long i = 0; i < n; i++) { \
    float gi = g[i], yi = p[i], zi = m[i], vi = v[i] * 0.999f + 0.001f * gi * gi; v[i] = vi; \
    gi = gi / (DENOM); yi = yi + 0.1f * (zi - yi); p[i] = yi + -1e-4f * gi; m[i] = zi - 1e-3f * gi; }
#define ARGS float* restrict p, const float* restrict g, float* restrict m, float* restrict v, \
    long n, float c, double inv_c, float negc, float y_hi, float y_lo, float y_a, float y_b
#define KERNELS(NAME, BODY) \
    __attribute__((noinline)) void NAME##_div(ARGS) { BODY(sqrtf(vi / c) + 1e-8f) } \
    __attribute__((noinline)) void NAME##_markstein(ARGS) { \
        BODY(sqrtf(markstein(vi, negc, y_hi, y_lo)) + 1e-8f) } \
    __attribute__((noinline)) void NAME##_guarded(ARGS) { \
        BODY(guarded(vi, negc, y_hi, y_a, y_b, 1e-8f)) } \
    __attribute__((noinline)) void NAME##_widened(ARGS) { \
        BODY(sqrtf((float) ((double) vi * inv_c)) + 1e-8f) }
KERNELS(nadam, NADAM)
KERNELS(sf, SF)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(void) {
    long n = 32768;  /* 65,536 elements on two threads */
    float *p = aligned_alloc(64, 4 * n), *g = aligned_alloc(64, 4 * n);
    float *m = aligned_alloc(64, 4 * n), *v = aligned_alloc(64, 4 * n);
    for (long i = 0; i < n; i++) {
        p[i] = rand() / (float) RAND_MAX; g[i] = rand() / (float) RAND_MAX - 0.5f;
        m[i] = 0; v[i] = 0.1f;
    }
    float c = 0.005f, y_hi = 1 / c, y_lo = fmaf(-y_hi, c, 1) * y_hi, y_a = y_hi, y_b = y_lo;
    if (y_lo < 0) { y_a = nextafterf(y_hi, 0); y_b = fmaf(-y_a, c, 1) * y_a; }
    void (*fns[2][4])(ARGS) = {{nadam_div, nadam_markstein, nadam_guarded, nadam_widened},
                               {sf_div, sf_markstein, sf_guarded, sf_widened}};
    const char* names[4] = {"div", "markstein", "guarded", "widened"};
    for (int k = 0; k < 2; k++) {
        double best[4] = {1e9, 1e9, 1e9, 1e9};
        for (int r = 0; r < 200; r++)  /* interleaved rounds, best of */
            for (int f = 0; f < 4; f++) {
                double t0 = now();
                for (int j = 0; j < 20; j++)
                    fns[k][f](p, g, m, v, n, c, 1.0 / c, -c, y_hi, y_lo, y_a, y_b);
                double t = (now() - t0) / 20;
                if (t < best[f]) best[f] = t;
            }
        printf("%s:", k ? "schedule-free" : "nadam");
        for (int f = 0; f < 4; f++)
            printf("  %s %.2f us (%.2f)", names[f], best[f] * 1e6, best[f] / best[0]);
        printf("\n");
    }
    return 0;
}
