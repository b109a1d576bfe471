/* 16-bit storage for the compact kernels (fastoptim/_kernels_compact.pxi): widen
 * bfloat16 / float16 to float32, and narrow float32 back, rounding to nearest even
 * or stochastically, over short runs of a tile (plain loops GCC vectorizes).
 *
 * Every function is defined on bit patterns, and fastoptim/reference.py implements
 * the same definitions in NumPy:
 *   bfloat16 = the top 16 bits of a float32.  Widen: u << 16.  Nearest even:
 *     (u + 0x7FFF + ((u >> 16) & 1)) >> 16 (ml_dtypes' cast); NaN -> sign | 0x7FC0
 *     (ml_dtypes' quiet NaN); overflow rounds to inf as the carry says.
 *   float16 = IEEE binary16.  Nearest even equals NumPy's astype(float16) (F16C's
 *     vcvtps2ph in the AVX2 build, integer code in the baseline build); overflow -> inf,
 *     results below the smallest subnormal -> 0, NaN -> sign | 0x7E00 | top payload bits.
 *   Stochastic rounding adds uniform random bits below the result's last place to the
 *     magnitude, then truncates (so P(round up) = the discarded fraction); for float16
 *     subnormal results the random bits are the top `shift` bits of the 32-bit hash.
 *   Random bits: fo_hash(i, key) with key = fo_key(seed, step, role) (below), for
 *     element index i of the array: the same bits for any thread count or tiling.
 */
#ifndef FASTOPTIM_COMPACT_H
#define FASTOPTIM_COMPACT_H

#include <stdint.h>
#include <string.h>
#include <stddef.h>
#if defined(__F16C__)
#include <immintrin.h>
#define FASTOPTIM_HAVE_F16C 1
#else
#define FASTOPTIM_HAVE_F16C 0
#endif

/* Storage codes of a compact buffer. */
enum { FO_F32 = 0, FO_BF16 = 1, FO_F16 = 2 };

typedef struct {
    uint32_t lo;   /* xor-ed into the element index's low 32 bits */
    uint32_t hi;   /* added after, with the index's high 32 bits folded in */
} fo_key;

static inline uint64_t fo_splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* The key of one (seed, step, role) stream; role 0 = param, 1-3 = state buffers 0-2. */
static inline fo_key fo_make_key(uint64_t seed, uint64_t step, unsigned role) {
    uint64_t z = fo_splitmix64(fo_splitmix64(seed) ^ (step * 4u + role));
    fo_key k;
    k.lo = (uint32_t) z;
    k.hi = (uint32_t) (z >> 32);
    return k;
}

/* lowbias32 (Chris Wellons' integer hash): a bijection with good avalanche. */
static inline uint32_t fo_mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

/* The part of the hash input that depends on the index's high word (per tile: a tile
 * never crosses a multiple of 2**32). */
static inline uint32_t fo_hi_term(fo_key k, uint64_t index) {
    return k.hi ^ ((uint32_t) (index >> 32) * 0x9E3779B9u);
}

static inline uint32_t fo_hash(uint32_t index_lo, uint32_t key_lo, uint32_t hi_term) {
    return fo_mix32((index_lo ^ key_lo) + hi_term);
}

static inline uint32_t fo_bits(float x) { uint32_t u; memcpy(&u, &x, 4); return u; }
static inline float fo_float(uint32_t u) { float x; memcpy(&x, &u, 4); return x; }

/* ---------------------------------------------------------------- bfloat16 */
static inline uint16_t fo_bf16_round(uint32_t u, uint32_t inc) {
    uint32_t nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
    uint32_t r = (u + inc) >> 16;
    return (uint16_t) (nan ? (((u >> 16) & 0x8000u) | 0x7FC0u) : r);
}

static void fo_widen_bf16(const uint16_t* src, float* dst, ptrdiff_t n) {
    for (ptrdiff_t j = 0; j < n; j++)
        dst[j] = fo_float((uint32_t) src[j] << 16);
}

static void fo_narrow_bf16_rne(const float* src, uint16_t* dst, ptrdiff_t n) {
    for (ptrdiff_t j = 0; j < n; j++) {
        uint32_t u = fo_bits(src[j]);
        dst[j] = fo_bf16_round(u, 0x7FFFu + ((u >> 16) & 1u));
    }
}

static void fo_narrow_bf16_sr(const float* src, uint16_t* dst, ptrdiff_t n,
                              uint64_t index, fo_key k) {
    uint32_t hi = fo_hi_term(k, index), base = (uint32_t) index;
    for (ptrdiff_t j = 0; j < n; j++) {
        uint32_t r = fo_hash(base + (uint32_t) j, k.lo, hi);
        dst[j] = fo_bf16_round(fo_bits(src[j]), r >> 16);
    }
}

/* ----------------------------------------------------------------- float16 */
/* float32 bits -> float16 bits.  stochastic = 0: nearest even; else r is the hash. */
static inline uint16_t fo_f16_round(uint32_t u, int stochastic, uint32_t r) {
    uint32_t sign = (u >> 16) & 0x8000u;
    uint32_t f = u & 0x7FFFFFFFu;
    uint32_t e = f >> 23;
    /* normal result (e >= 113): rebias, round the 13 low bits away, clamp to inf */
    uint32_t base = f - (112u << 23);
    uint32_t inc = stochastic ? (r >> 19) : (0xFFFu + ((base >> 13) & 1u));
    uint32_t on = (base + inc) >> 13;
    /* subnormal result (e < 113): value = full / 2**shift in units of 2**-24 */
    uint32_t es = e < 113u ? (e ? e : 1u) : 112u;
    uint32_t full = (f & 0x7FFFFFu) | (e ? 0x800000u : 0u);
    uint32_t shift = 126u - es;                      /* 14 .. 125 */
    uint32_t sh2 = shift < 31u ? shift : 31u;
    uint32_t sh1 = shift - sh2;
    uint32_t fa = full >> (sh1 < 31u ? sh1 : 31u);   /* shift > 31: below half of 2**-24 */
    uint32_t inc_s = stochastic ? (r >> (32u - sh2))
                                : (((1u << (sh2 - 1u)) - 1u) + ((fa >> sh2) & 1u));
    uint32_t os = (fa + inc_s) >> sh2;
    uint32_t o = e < 113u ? os : (on > 0x7C00u ? 0x7C00u : on);
    o = f > 0x7F800000u ? (0x7E00u | ((f >> 13) & 0x3FFu)) : o;
    return (uint16_t) (o | sign);
}

static inline float fo_f16_widen1(uint16_t h) {
    uint32_t sign = (uint32_t) (h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    uint32_t normal = ((e + 112u) << 23) | (m << 13);
    uint32_t special = 0x7F800000u | (m << 13);
    uint32_t sub = fo_bits((float) m * 5.9604644775390625e-08f);  /* m * 2**-24, exact */
    uint32_t u = e == 0x1Fu ? special : (e == 0 ? sub : normal);
    return fo_float(u | sign);
}

static void fo_widen_f16(const uint16_t* src, float* dst, ptrdiff_t n) {
    ptrdiff_t j = 0;
#if FASTOPTIM_HAVE_F16C
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*) (src + j))));
#endif
    for (; j < n; j++)
        dst[j] = fo_f16_widen1(src[j]);
}

static void fo_narrow_f16_rne(const float* src, uint16_t* dst, ptrdiff_t n) {
    ptrdiff_t j = 0;
#if FASTOPTIM_HAVE_F16C
    for (; j + 8 <= n; j += 8)
        _mm_storeu_si128((__m128i*) (dst + j),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; j < n; j++)
        dst[j] = fo_f16_round(fo_bits(src[j]), 0, 0);
}

static void fo_narrow_f16_sr(const float* src, uint16_t* dst, ptrdiff_t n,
                             uint64_t index, fo_key k) {
    uint32_t hi = fo_hi_term(k, index), base = (uint32_t) index;
    for (ptrdiff_t j = 0; j < n; j++) {
        uint32_t r = fo_hash(base + (uint32_t) j, k.lo, hi);
        dst[j] = fo_f16_round(fo_bits(src[j]), 1, r);
    }
}

/* ------------------------------------------------------------ dispatchers */
static inline void fo_widen(int code, const void* src, float* dst, ptrdiff_t n) {
    if (code == FO_BF16)
        fo_widen_bf16((const uint16_t*) src, dst, n);
    else
        fo_widen_f16((const uint16_t*) src, dst, n);
}

/* Narrow n floats into element `index` onward of dst (a 16-bit buffer). */
static inline void fo_narrow(int code, int stochastic, const float* src, void* dst,
                             ptrdiff_t n, uint64_t index, fo_key k) {
    uint16_t* d = (uint16_t*) dst;
    if (code == FO_BF16) {
        if (stochastic) fo_narrow_bf16_sr(src, d, n, index, k);
        else fo_narrow_bf16_rne(src, d, n);
    } else {
        if (stochastic) fo_narrow_f16_sr(src, d, n, index, k);
        else fo_narrow_f16_rne(src, d, n);
    }
}

#endif
