/* Stream probes for page_offsets.py: d = s * (sum of the read-only streams), then
 * x += d for every read-write stream, float32, one thread, AVX2.
 *
 * probe_plain:  per 8-float vector, each read-write stream is loaded and stored in
 *               turn (what a compiled optimizer loop does: load m, store m, load v, ...).
 * probe_staged: per 64-byte line (16 floats), every load of every stream first (each
 *               stream's two vectors back to back), then the stores (fastoptim's
 *               `_apply_rule` for buffers at the same page offset).
 * Buffers must be 64-byte aligned for probe_staged to touch whole lines. */
#include <immintrin.h>
#include <stddef.h>

#define MAXS 8

void probe_plain(float** ro, int nro, float** rw, int nrw, long n, float s) {
    __m256 vs = _mm256_set1_ps(s);
    for (long i = 0; i + 8 <= n; i += 8) {
        __m256 d = _mm256_loadu_ps(ro[0] + i);
        for (int j = 1; j < nro; j++) d = _mm256_add_ps(d, _mm256_loadu_ps(ro[j] + i));
        d = _mm256_mul_ps(d, vs);
        for (int j = 0; j < nrw; j++)
            _mm256_storeu_ps(rw[j] + i, _mm256_add_ps(_mm256_loadu_ps(rw[j] + i), d));
    }
}

void probe_staged(float** ro, int nro, float** rw, int nrw, long n, float s) {
    __m256 vs = _mm256_set1_ps(s);
    __m256 x[MAXS], y[MAXS];
    for (long i = 0; i + 16 <= n; i += 16) {
        __m256 d0 = _mm256_loadu_ps(ro[0] + i), d1 = _mm256_loadu_ps(ro[0] + i + 8);
        for (int j = 1; j < nro; j++) {
            d0 = _mm256_add_ps(d0, _mm256_loadu_ps(ro[j] + i));
            d1 = _mm256_add_ps(d1, _mm256_loadu_ps(ro[j] + i + 8));
        }
        for (int j = 0; j < nrw; j++) { x[j] = _mm256_loadu_ps(rw[j] + i); y[j] = _mm256_loadu_ps(rw[j] + i + 8); }
        d0 = _mm256_mul_ps(d0, vs);
        d1 = _mm256_mul_ps(d1, vs);
        for (int j = 0; j < nrw; j++) {
            _mm256_storeu_ps(rw[j] + i, _mm256_add_ps(x[j], d0));
            _mm256_storeu_ps(rw[j] + i + 8, _mm256_add_ps(y[j], d1));
        }
    }
}
