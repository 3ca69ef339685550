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

#endif
