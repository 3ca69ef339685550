/* The float vector math shared by the compiled CPU kernels.

   libm's expf/log1pf/expm1f are scalar calls that gcc does not vectorise without
   -ffast-math, so a loop that calls them runs one lane at a time. These are
   Cephes-style range reductions and polynomials written with selects and bit
   manipulation, no calls, so that `omp simd` loops containing them vectorise
   (cbuild.py builds with -fno-trapping-math, which lets gcc if-convert the
   selects without AVX-512 masks). Double precision keeps libm. */
#ifndef ZOO_VMATH_H
#define ZOO_VMATH_H

#include <math.h>
#include <stdint.h>

/* Cephes' expf polynomial: e^r = 1 + r + r^2 P(r) for |r| <= ln(2)/2. */
static inline float vexp_poly(float r) {
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    return p * r + 5.0000001201e-1f;
}

/* exp for float lanes: Cephes' expf (range reduction + degree-6 polynomial,
   ~1 ulp), written so that the compiler vectorises it, which libm's expf is not
   without -ffast-math: n rounds by adding and subtracting 1.5 * 2^23 (floorf
   does not vectorise), and 2^n is built in the exponent bits. Below -87 it returns 0. */
static inline float vexpf(float x) {
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = vexp_poly(r);
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    union { int32_t i; float f; } scale = {bits};
    return x < -87.0f ? 0.0f : p * scale.f;
}

/* log(1 + x) for float lanes with x in [0, 1] (what log-space addition needs: x =
   exp(-|gap|)), ~1.4 ulp: Cephes' logf polynomial on f in [sqrt(1/2) - 1, sqrt(2) - 1].
   1 + x = 2^n (1 + f) with n = 0, f = x (exact, so tiny x keep full precision) or, above
   sqrt(2) - 1, n = 1, f = x/2 - 1/2 (one rounding). log1p(0) is exactly 0. */
static inline float vlog1pf01(float x) {
    int big = x > 0.41421356f;
    float f = big ? 0.5f * x - 0.5f : x;
    float e = big ? 1.0f : 0.0f;
    float z = f * f;
    float p = 7.0376836292e-2f;
    p = p * f - 1.1514610310e-1f;
    p = p * f + 1.1676998740e-1f;
    p = p * f - 1.2420140846e-1f;
    p = p * f + 1.4249322787e-1f;
    p = p * f - 1.6668057665e-1f;
    p = p * f + 2.0000714765e-1f;
    p = p * f - 2.4999993993e-1f;
    p = p * f + 3.3333331174e-1f;
    float y = p * f * z - 2.12194440e-4f * e - 0.5f * z;
    return (f + y) + 0.693359375f * e;  /* ln 2 split in two: n ln 2 adds no rounding */
}

/* exp for x <= 0 (sigmoids, decays, log-space gaps), the same values as vexpf with
   fewer instructions: no upper clamp, and 2^n straight from the bits of n + 1.5 * 2^23
   (its low mantissa bits hold n, so shifting them into the exponent field gives 2^n)
   instead of a float-to-int conversion. e^r - 1 = r + r^2 P(r) is vexpf's polynomial
   without its 1: accurate where exp(x) - 1 would cancel (near 0, n = 0 and r = x). */
typedef struct { float scale, em1; } vexp_parts_t;
static inline vexp_parts_t vexp_parts_le0(float x) {
    float xc = x < -87.0f ? -87.0f : x;  /* NaN stays NaN */
    float t = xc * 1.44269504088896341f + 12582912.0f;
    float n = t - 12582912.0f;
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = vexp_poly(r);
    union { float f; uint32_t u; } tb = {t};
    union { uint32_t u; float f; } sb = {(tb.u + 127u) << 23};
    vexp_parts_t out = {sb.f, p * r * r + r};  /* e^x = scale (1 + em1) */
    return out;
}

/* e^x for x <= 0 (~1 ulp); 0 below -87, like vexpf. */
static inline float vexpf_le0(float x) {
    vexp_parts_t v = vexp_parts_le0(x);
    return x < -87.0f ? 0.0f : (v.em1 + 1.0f) * v.scale;
}

/* e^x and e^x - 1 for x <= 0 from one range reduction: e^x - 1 = 2^n (e^r - 1) + (2^n - 1),
   the last term exact (~1.5 ulp, no cancellation near 0). Below -87: 0 and -1. */
typedef struct { float e, em1; } vexp2_t;
static inline vexp2_t vexp_expm1f_le0(float x) {
    vexp_parts_t v = vexp_parts_le0(x);
    vexp2_t out = {x < -87.0f ? 0.0f : (v.em1 + 1.0f) * v.scale,
                   x < -87.0f ? -1.0f : v.em1 * v.scale + (v.scale - 1.0f)};
    return out;
}

#endif
