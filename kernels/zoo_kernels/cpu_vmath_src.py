"""C source of the float vector math shared by the compiled CPU kernels (placed first in cpu_kernel.SOURCE).

libm's expf/log1pf/expm1f are scalar calls that gcc does not vectorise without
-ffast-math, so a loop that calls them runs one lane at a time. These are
Cephes-style range reductions and polynomials written with selects, bit
manipulation and no calls or branches, so that `omp simd` loops containing
them vectorise. Double precision keeps libm.
"""

SOURCE = r"""
#include <math.h>
#include <stdint.h>

/* exp for float lanes: Cephes' expf (range reduction + degree-6 polynomial,
   ~1 ulp), written so that the compiler vectorises it, which libm's expf is not
   without -ffast-math: n rounds by adding and subtracting 1.5 * 2^23 (floorf
   does not vectorise), and 2^n is built in the exponent bits. Below -87 it returns 0. */
static inline float vexpf(float x) {
    float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    union { int32_t i; float f; } scale = {bits};
    return x < -87.0f ? 0.0f : p * scale.f;
}

/* log(1 + x) for float lanes (~1 ulp), Cephes' logf polynomial on a reduced argument.
   u = 1 + x rounds; c, what that rounding lost, is exact (Fast2Sum) and is added back
   after the reduction u = 2^n m, m in [sqrt(1/2), sqrt(2)), so tiny x keep full precision.
   n and m come from the bits: subtracting sqrt(1/2)'s bit pattern makes the exponent
   field floor(log2(u / sqrt(1/2))). -1 gives -inf, below -1 or NaN gives NaN. */
static inline float vlog1pf(float x) {
    float u = 1.0f + x;
    float c = x > 1.0f ? 1.0f - (u - x) : x - (u - 1.0f);
    union { float f; int32_t i; } ub = {u};
    int32_t n = (ub.i - 0x3f3504f3) >> 23;
    int32_t ie = n > 127 ? 0 : 127 - n;  /* 2^-n; 0 once u >= 2^127 sqrt(2), where c no longer matters */
    union { int32_t i; float f; } mb = {ub.i - n * (1 << 23)}, inv = {ie * (1 << 23)};
    float f = (mb.f - 1.0f) + c * inv.f;  /* m - 1 is exact (Sterbenz) */
    /* e = n as float through the bits of 1.5 * 2^23 + n: gcc treats (float)n as
       possibly trapping and then refuses to if-convert, so the loop would not vectorise */
    union { int32_t i; float f; } eb = {0x4b400000 + n};
    float z = f * f, e = eb.f - 12582912.0f;
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
    float r = (f + y) + 0.693359375f * e;  /* ln 2 split in two: n ln 2 adds no rounding */
    r = x < INFINITY ? r : x;  /* +inf, NaN */
    r = x == -1.0f ? -INFINITY : r;
    return x < -1.0f ? NAN : r;
}

/* exp(x) - 1 for float lanes, x <= 88. Near 0 exp(x) - 1 cancels, so there
   (|x| < 0.5) a degree-8 Taylor polynomial (truncation < 0.2 ulp); elsewhere
   the subtraction loses at most ~1 bit. */
static inline float vexpm1f(float x) {
    float p = 1.0f / 40320.0f;
    p = p * x + 1.0f / 5040.0f;
    p = p * x + 1.0f / 720.0f;
    p = p * x + 1.0f / 120.0f;
    p = p * x + 1.0f / 24.0f;
    p = p * x + 1.0f / 6.0f;
    p = p * x + 0.5f;
    float small = x + (x * x) * p;
    return fabsf(x) < 0.5f ? small : vexpf(x) - 1.0f;
}
"""
