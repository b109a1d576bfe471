/* Encoding and decoding of 8-bit blockwise state (see _kernels_quant8.pxi).
 *
 * Both are table lookups, which GCC does not vectorize for generic x86-64 tuning (it
 * never emits gathers), and AVX2 gathers were no faster than scalar loads (slower on
 * Zen 3).  So the AVX2 build does the arithmetic eight lanes at a time with
 * intrinsics and the lookups as scalar loads put together into a vector; every other
 * build runs scalar loops.  Both compute the same floats and codes (the same single
 * roundings and integer operations per element). */
#ifndef FASTOPTIM_QUANT8_H
#define FASTOPTIM_QUANT8_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#define FASTOPTIM_Q8_BASE 0x3380   /* |y| bits >> 16 of 2**-24: the first bucket */
#define FASTOPTIM_Q8_NB 3073       /* buckets up to that of 1.0 */

static inline uint32_t fastoptim_float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float fastoptim_bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* max |x| as the bit pattern of the magnitude (magnitudes order like their bits;
 * a NaN gives a pattern above that of infinity). */
static inline uint32_t fastoptim_q8_absmax_bits(const float* x, ptrdiff_t n) {
    const uint32_t* u = (const uint32_t*) x;   /* built with -fno-strict-aliasing */
    uint32_t amax = 0, a;
    ptrdiff_t j;
    for (j = 0; j < n; j++) {
        a = u[j] & 0x7fffffffu;
        amax = a > amax ? a : amax;
    }
    return amax;
}

static inline uint8_t fastoptim_q8_code_of(float y, const uint32_t* lut) {
    uint32_t u = fastoptim_float_bits(y), a = u & 0x7fffffffu, e;
    int32_t b = (int32_t) (a >> 16) - FASTOPTIM_Q8_BASE;
    b = b < 0 ? 0 : (b > FASTOPTIM_Q8_NB - 1 ? FASTOPTIM_Q8_NB - 1 : b);
    e = lut[(uint32_t) b + (u >> 31) * FASTOPTIM_Q8_NB];
    return (uint8_t) ((a & 0xffffu) >= (e >> 16) ? (e >> 8) : e);
}

#ifdef __AVX2__
/* table[idx lane] for the eight lanes, by scalar loads: two indices per 64-bit
 * extract.  vpgatherdd did no better on Zen 4 and was slower on Zen 3. */
static inline __m256i fastoptim_q8_lookup8(const uint32_t* table, __m256i idx) {
    __m128i lo = _mm256_castsi256_si128(idx), hi = _mm256_extracti128_si256(idx, 1);
    uint64_t q0 = (uint64_t) _mm_cvtsi128_si64(lo), q1 = (uint64_t) _mm_extract_epi64(lo, 1);
    uint64_t q2 = (uint64_t) _mm_cvtsi128_si64(hi), q3 = (uint64_t) _mm_extract_epi64(hi, 1);
    return _mm256_setr_epi32((int) table[(uint32_t) q0], (int) table[q0 >> 32],
                             (int) table[(uint32_t) q1], (int) table[q1 >> 32],
                             (int) table[(uint32_t) q2], (int) table[q2 >> 32],
                             (int) table[(uint32_t) q3], (int) table[q3 >> 32]);
}
#endif

/* codes[j] = the code of x[j] * scale, by the bucket table. */
static inline void fastoptim_q8_encode(const float* x, ptrdiff_t n, float scale,
                                       const uint32_t* lut, uint8_t* codes) {
    ptrdiff_t j = 0;
#ifdef __AVX2__
    const __m256 vscale = _mm256_set1_ps(scale);
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff), base = _mm256_set1_epi32(FASTOPTIM_Q8_BASE);
    const __m256i last = _mm256_set1_epi32(FASTOPTIM_Q8_NB - 1);
    const __m256i negative_half = _mm256_set1_epi32(FASTOPTIM_Q8_NB);
    const __m256i low16 = _mm256_set1_epi32(0xffff);
    /* byte 0 of each 32-bit lane to the lane's first four bytes */
    const __m256i first_bytes = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                                 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    for (; j + 8 <= n; j += 8) {
        __m256i u = _mm256_castps_si256(_mm256_mul_ps(_mm256_loadu_ps(x + j), vscale));
        __m256i a = _mm256_and_si256(u, magnitude);
        /* (a >> 16) - base clamped to [0, last]: the upper 16 bits of each lane are 0,
         * so 16-bit saturating subtraction and minimum do it */
        __m256i b = _mm256_min_epu16(_mm256_subs_epu16(_mm256_srli_epi32(a, 16), base), last);
        b = _mm256_add_epi32(b, _mm256_and_si256(_mm256_srai_epi32(u, 31), negative_half));
        __m256i e = fastoptim_q8_lookup8(lut, b);
        __m256i below = _mm256_cmpgt_epi32(_mm256_srli_epi32(e, 16), _mm256_and_si256(a, low16));
        __m256i r = _mm256_shuffle_epi8(_mm256_blendv_epi8(_mm256_srli_epi32(e, 8), e, below), first_bytes);
        _mm_storel_epi64((__m128i*) (codes + j), _mm_unpacklo_epi32(_mm256_castsi256_si128(r),
                                                                    _mm256_extracti128_si256(r, 1)));
    }
#endif
    for (; j < n; j++)
        codes[j] = fastoptim_q8_code_of(x[j] * scale, lut);
}

/* out[j] = code[codes[j]] * absmax.  Eight codes come in one 64-bit load and are
 * taken apart by shifts: one load per code fewer (the word trick needs a
 * little-endian target; elsewhere the codes are read one by one). */
static inline void fastoptim_q8_decode(const uint8_t* codes, float absmax, const float* code,
                                       float* out, ptrdiff_t n) {
    ptrdiff_t j = 0;
#if defined(__AVX2__)
    const __m256 scale = _mm256_set1_ps(absmax);
    for (; j + 8 <= n; j += 8) {
        uint64_t w;
        memcpy(&w, codes + j, 8);
        __m128 lo = _mm_setr_ps(code[w & 0xff], code[(w >> 8) & 0xff], code[(w >> 16) & 0xff],
                                code[(w >> 24) & 0xff]);
        __m128 hi = _mm_setr_ps(code[(w >> 32) & 0xff], code[(w >> 40) & 0xff],
                                code[(w >> 48) & 0xff], code[w >> 56]);
        _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_set_m128(hi, lo), scale));
    }
#elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    for (; j + 8 <= n; j += 8) {
        uint64_t w;
        int k;
        memcpy(&w, codes + j, 8);
        for (k = 0; k < 8; k++)
            out[j + k] = code[(w >> (8 * k)) & 0xff] * absmax;
    }
#endif
    for (; j < n; j++)
        out[j] = code[codes[j]] * absmax;
}

#endif
