/* bfloat16 storage for the compiled CPU kernels: a bf16 value is the high 16 bits of a float32.
   Kernels load it into float32, compute there, and store the result rounded to nearest even
   (NaN stays a quiet NaN, never rounded into infinity). Both are plain integer arithmetic and
   selects, so loops over them vectorise. */
#ifndef ZOO_BF16_H
#define ZOO_BF16_H

#include <stdint.h>

static inline __attribute__((always_inline)) float bf16_load(uint16_t b) {
    union { uint32_t u; float f; } c = {(uint32_t)b << 16};
    return c.f;
}

static inline __attribute__((always_inline)) uint16_t bf16_store(float f) {
    union { float f; uint32_t u; } c = {f};
    uint32_t u = c.u;
    uint16_t nan = (uint16_t)((u >> 16) | 0x40);
    uint16_t rounded = (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    return (u & 0x7fffffffu) > 0x7f800000u ? nan : rounded;
}

/* n float32 values stored as bf16, rounded to nearest even. With AVX512-BF16 the CPU converts
   16 at a time (VCVTNEPS2BF16; it also takes float32 denormals as zero, the one difference from
   bf16_store); else bf16_store per value. Kernels compute a chunk of a row in float32 and store it
   with this: the conversion is then one instruction per 16 values instead of a dozen. */
#if defined(__AVX512BF16__) && defined(__AVX512BW__)
#include <immintrin.h>
static inline void bf16_store_row(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        __m256i y = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i));
        _mm256_mask_storeu_epi16(dst + i, m, y);
    }
}
#else
static inline void bf16_store_row(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_store(src[i]);
}
#endif

#endif
