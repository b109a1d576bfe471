/* Build- and run-time facts the Cython kernels need, kept out of the .pyx
 * so that the extension builds (and works single-threaded) without OpenMP
 * and on CPUs other than x86-64. */
#ifndef FASTOPTIM_PLATFORM_H
#define FASTOPTIM_PLATFORM_H

#ifdef _OPENMP
#include <omp.h>
#define FASTOPTIM_HAVE_OPENMP 1
static inline int fastoptim_omp_max_threads(void) { return omp_get_max_threads(); }
static inline int fastoptim_omp_thread_num(void) { return omp_get_thread_num(); }
static inline int fastoptim_omp_num_threads(void) { return omp_get_num_threads(); }
/* The processors this process may run on now (libgomp follows the affinity mask). */
static inline int fastoptim_omp_num_procs(void) { return omp_get_num_procs(); }
#else
#define FASTOPTIM_HAVE_OPENMP 0
static inline int fastoptim_omp_max_threads(void) { return 1; }
static inline int fastoptim_omp_thread_num(void) { return 0; }
static inline int fastoptim_omp_num_threads(void) { return 1; }
static inline int fastoptim_omp_num_procs(void) { return 1; }
#endif

/* 1 when the CPU (and OS) can run the AVX2+FMA build of the kernels (built with F16C
 * too: every AVX2 CPU has it, but it is checked like the others). */
static inline int fastoptim_cpu_has_avx2_fma(void) {
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

/* 1 when fma()/fmaf() compile to one hardware instruction (not a library call). */
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define FASTOPTIM_HAVE_FMA 1
#else
#define FASTOPTIM_HAVE_FMA 0
#endif

/* Which instruction set this translation unit was compiled for. */
#if defined(__AVX2__) && defined(__FMA__)
#define FASTOPTIM_ISA "avx2+fma"
#elif defined(__x86_64__)
#define FASTOPTIM_ISA "sse2"
#elif defined(__aarch64__)
#define FASTOPTIM_ISA "neon"
#else
#define FASTOPTIM_ISA "generic"
#endif

#endif
