/*
 * cpu_simd_impl: what the CPU kernel files share to write x86 vector code: the ISA test, the
 * target attributes of each kernel level (the rest of the project is compiled for the baseline
 * ISA; functions with these attributes run only at the level wk_cpu_kernels_isa allows), and a
 * switch that turns a small run-time count into a compile-time one. Internal to backend/cpu.
 */
#ifndef WK_CPU_SIMD_IMPL_H
#define WK_CPU_SIMD_IMPL_H

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define HAVE_X86 1
#else
#define HAVE_X86 0
#endif

#if HAVE_X86
/* WK_CPU_ISA_AVX2 */
#define AVX2 __attribute__((target("avx2,fma,f16c")))
/* WK_CPU_ISA_AVX512 (VNNI included) */
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#endif

#define INLINE inline __attribute__((always_inline))

/* Calls call(C) with C the constant equal to n, for n in 1..2 (WK_CPU_CASES_2), 1..4
 * (WK_CPU_CASES_4) or 1..8 (WK_CPU_CASES_8; anything else: 1), so that loops over C inside an
 * always-inline callee have constant counts. */
#define WK_CPU_CASES_2(n, call)                                                                    \
    if ((n) == 2) {                                                                                \
        call(2);                                                                                   \
    } else {                                                                                       \
        call(1);                                                                                   \
    }

#define WK_CPU_CASES_4(n, call)                                                                    \
    switch (n) {                                                                                   \
    case 4:                                                                                        \
        call(4);                                                                                   \
        break;                                                                                     \
    case 3:                                                                                        \
        call(3);                                                                                   \
        break;                                                                                     \
    case 2:                                                                                        \
        call(2);                                                                                   \
        break;                                                                                     \
    default:                                                                                       \
        call(1);                                                                                   \
        break;                                                                                     \
    }

#define WK_CPU_CASES_8(n, call)                                                                    \
    switch (n) {                                                                                   \
    case 8:                                                                                        \
        call(8);                                                                                   \
        break;                                                                                     \
    case 7:                                                                                        \
        call(7);                                                                                   \
        break;                                                                                     \
    case 6:                                                                                        \
        call(6);                                                                                   \
        break;                                                                                     \
    case 5:                                                                                        \
        call(5);                                                                                   \
        break;                                                                                     \
    default:                                                                                       \
        WK_CPU_CASES_4(n, call)                                                                    \
        break;                                                                                     \
    }

#endif /* WK_CPU_SIMD_IMPL_H */
