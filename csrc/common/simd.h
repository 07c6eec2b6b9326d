// Runtime choice of instruction set for hot CPU loops. Wheels are built for baseline x86-64
// (SSE2); AK_SIMD_CLONES makes GCC compile a function also for x86-64-v3 (AVX2 + FMA) and
// x86-64-v4 (AVX-512) and pick the best one for the running CPU when the library loads.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 11
#define AK_SIMD_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define AK_SIMD_CLONES
#endif
