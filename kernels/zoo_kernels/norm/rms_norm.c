/* RMSNorm (Zhang & Sennrich 2019), fused, forward and backward.

       r = 1 / sqrt(mean_i x_i^2 + eps)           per row of n
       y_i = x_i r w_i
       dx_i = r g_i w_i - x_i r^3 <g w, x> / n,   dw_i = sum over rows of g_i x_i r

   Forward: one pass per row reads x, writes y (float32 or, under CPU bf16 autocast, bfloat16:
   the matmul that follows would cast it anyway) and r (float32). Backward: one pass per row reads
   g, x, r and writes dx; dw is summed per block of NORM_BLOCK rows into `dwp` (blocks x n), which
   Python adds up, so the result does not depend on the thread count. In eager PyTorch the
   backward is five elementwise passes and two reductions (zoo_core's _RMSNormFn).

   Types: x, w and dx float32 with y and g float32 or bfloat16 (uint16, rounded to nearest even),
   or all float64 (xdt 1). Rows are contiguous (n elements) and consecutive. */

#include "bf16.h"
#include "jobs.h"
#include "vmath.h"

#define NORM_BLOCK 32
#define NORM_INLINE static inline __attribute__((always_inline))

typedef struct {
    const void *x, *w, *g, *rin;
    void *y, *rout, *dx, *dwp;
    int64_t n, b0, b1, rows;
    double eps;
    int f64, ybf16, backward;
} norm_job_t;

#define NORM_SAME(v) (v)

/* y = x rs w for one row: stored directly, or for a bf16 y computed in float32 a chunk at a time
   and stored by bf16_store_row (bf16.h). */
#define NORM_CHUNK 256
#define NORM_Y(S, T)                                                                                \
NORM_INLINE void norm_y_##S(T *restrict y, const T *restrict x, const T *restrict w, T rs, int64_t n) { \
    _Pragma("omp simd")                                                                             \
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * rs * w[i];                                        \
}
NORM_Y(f32, float)
NORM_Y(f64, double)
NORM_INLINE void norm_y_f32_bf16(uint16_t *restrict y, const float *restrict x, const float *restrict w, float rs,
                                 int64_t n) {
    float yf[NORM_CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += NORM_CHUNK) {
        int64_t m = n - i0 < NORM_CHUNK ? n - i0 : NORM_CHUNK;
        _Pragma("omp simd")
        for (int64_t i = 0; i < m; i++) yf[i] = x[i0 + i] * rs * w[i0 + i];
        bf16_store_row(y + i0, yf, m);
    }
}

/* Rows of block b0 .. b1 for x of type TX (computed in CT), y and g of type TY. */
#define NORM_DEFINE(S, TX, TY, CT, LOAD, SQRT)                                                      \
static void norm_forward_##S(const norm_job_t *j) {                                                 \
    const int64_t n = j->n;                                                                         \
    const TX *w = (const TX *)j->w;                                                                 \
    for (int64_t r = j->b0 * NORM_BLOCK; r < j->b1 * NORM_BLOCK && r < j->rows; r++) {              \
        const TX *x = (const TX *)j->x + r * n;                                                     \
        TY *y = (TY *)j->y + r * n;                                                                 \
        CT ss = 0;                                                                                  \
        _Pragma("omp simd reduction(+:ss)")                                                         \
        for (int64_t i = 0; i < n; i++) ss += x[i] * x[i];                                          \
        CT rs = (CT)1 / SQRT(ss / (CT)n + (CT)j->eps);                                              \
        ((CT *)j->rout)[r] = rs;                                                                    \
        norm_y_##S(y, x, w, rs, n);                                                                 \
    }                                                                                               \
}                                                                                                   \
static void norm_backward_##S(const norm_job_t *j) {                                                \
    const int64_t n = j->n;                                                                         \
    const TX *w = (const TX *)j->w;                                                                 \
    for (int64_t b = j->b0; b < j->b1; b++) {                                                       \
        CT *dw = (CT *)j->dwp + b * n;                                                              \
        _Pragma("omp simd")                                                                         \
        for (int64_t i = 0; i < n; i++) dw[i] = 0;                                                  \
        for (int64_t r = b * NORM_BLOCK; r < (b + 1) * NORM_BLOCK && r < j->rows; r++) {            \
            const TX *x = (const TX *)j->x + r * n;                                                 \
            const TY *g = (const TY *)j->g + r * n;                                                 \
            TX *dx = (TX *)j->dx + r * n;                                                           \
            const CT rs = ((const CT *)j->rin)[r];                                                  \
            CT dot = 0;                                                                             \
            _Pragma("omp simd reduction(+:dot)")                                                    \
            for (int64_t i = 0; i < n; i++) dot += LOAD(g[i]) * w[i] * x[i];                        \
            const CT c = rs * rs * rs * dot / (CT)n;                                                \
            _Pragma("omp simd")                                                                     \
            for (int64_t i = 0; i < n; i++) {                                                       \
                CT gi = LOAD(g[i]);                                                                 \
                dx[i] = rs * gi * w[i] - x[i] * c;                                                  \
                dw[i] += gi * x[i] * rs;                                                            \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
}

NORM_DEFINE(f32, float, float, float, NORM_SAME, sqrtf)
NORM_DEFINE(f32_bf16, float, uint16_t, float, bf16_load, sqrtf)
NORM_DEFINE(f64, double, double, double, NORM_SAME, sqrt)

static void *norm_job(void *arg) {
    const norm_job_t *j = (const norm_job_t *)arg;
    if (j->f64)
        j->backward ? norm_backward_f64(j) : norm_forward_f64(j);
    else if (j->ybf16)
        j->backward ? norm_backward_f32_bf16(j) : norm_forward_f32_bf16(j);
    else
        j->backward ? norm_backward_f32(j) : norm_forward_f32(j);
    return 0;
}

/* Forward (backward = 0): y and rout from x, w. Backward: dx and dwp from x, w, g, rin. */
int zoo_rms_norm(int backward, int f64, int ybf16, const void *x, const void *w, const void *g, const void *rin,
                 void *y, void *rout, void *dx, void *dwp, int64_t rows, int64_t n, double eps, int threads) {
    norm_job_t jobs[64];
    int64_t blocks = (rows + NORM_BLOCK - 1) / NORM_BLOCK;
    threads = zoo_threads(threads, blocks);
    for (int k = 0; k < threads; k++) {
        norm_job_t j = {x, w, g, rin, y, rout, dx, dwp, n, blocks * k / threads, blocks * (k + 1) / threads,
                        rows, eps, f64, ybf16, backward};
        jobs[k] = j;
    }
    zoo_run_jobs(norm_job, jobs, sizeof(norm_job_t), threads);
    return 0;
}
