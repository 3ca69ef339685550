/* Rotary position embedding (RoPE, Su et al. 2021), applied in one pass.

       (y_{2i}, y_{2i+1}) = (x_{2i} c_i - x_{2i+1} s_i,  x_{2i} s_i + x_{2i+1} c_i),   i < R/2
       y_j = x_j                                                                          j >= R

   with c_i = cos(pos w_i), s_i = sin(pos w_i) given per (batch, time). The backward is the
   rotation by the opposite angle (s -> -s). In eager PyTorch the same rotation is a cast to
   float32, a complex multiplication and a cast back, each a pass over q or k.

   x (B, T, H, D) with any batch, time and head strides and contiguous D; y likewise (the
   caller's layout: (B, T, H, D) or heads first, (B, H, T, D), contiguous); cs, sn (B, T, R/2)
   contiguous, float32 (float64 with float64 x). dtype 0 float32, 1 float64, 2 bfloat16 (uint16,
   computed in float32, rounded to nearest even). */

#include "bf16.h"
#include "jobs.h"

#define ROPE_INLINE static inline __attribute__((always_inline))

typedef struct {
    const void *x, *cs, *sn;
    void *y;
    int64_t T, H, D, R, sb, st, sh, yb, yt, yh, r0, r1;
    int dtype, sign;
} rope_job_t;

#define ROPE_SAME(v) (v)

/* One head's rotated pairs, i < half: x of type TI, y of type TO, computed in CT. */
#define ROPE_HEAD(S, TI, TO, CT, LOAD, STORE)                                                   \
ROPE_INLINE void rope_head_##S(const TI *restrict x, TO *restrict y, const CT *restrict c,       \
                               const CT *restrict s, CT sg, int64_t half) {                     \
    _Pragma("omp simd")                                                                         \
    for (int64_t i = 0; i < half; i++) {                                                        \
        CT x1 = LOAD(x[2 * i]), x2 = LOAD(x[2 * i + 1]), si = sg * s[i];                        \
        y[2 * i] = STORE(x1 * c[i] - x2 * si);                                                  \
        y[2 * i + 1] = STORE(x1 * si + x2 * c[i]);                                              \
    }                                                                                           \
}

ROPE_HEAD(f32, float, float, float, ROPE_SAME, ROPE_SAME)
ROPE_HEAD(f64, double, double, double, ROPE_SAME, ROPE_SAME)
ROPE_HEAD(bf16_to_f32, uint16_t, float, float, bf16_load, ROPE_SAME)

/* bfloat16: a chunk of the pairs rotated in float32, then stored by bf16_store_row (bf16.h). */
#define ROPE_CHUNK 128
ROPE_INLINE void rope_head_bf16(const uint16_t *restrict x, uint16_t *restrict y, const float *restrict c,
                                const float *restrict s, float sg, int64_t half) {
    float yf[2 * ROPE_CHUNK];
    for (int64_t i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
        int64_t m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
        rope_head_bf16_to_f32(x + 2 * i0, yf, c + i0, s + i0, sg, m);
        bf16_store_row(y + 2 * i0, yf, 2 * m);
    }
}

/* Rows r0 .. r1 of (B T) for storage TY computed in CT; sign -1 rotates back (the backward). */
#define ROPE_DEFINE(S, TY, CT)                                                                  \
static void rope_rows_##S(const rope_job_t *j) {                                                \
    const int64_t half = j->R / 2, D = j->D;                                                    \
    const CT sg = (CT)j->sign;                                                                  \
    for (int64_t r = j->r0; r < j->r1; r++) {                                                   \
        const int64_t b = r / j->T, t = r % j->T;                                               \
        const CT *c = (const CT *)j->cs + r * half, *s = (const CT *)j->sn + r * half;          \
        for (int64_t h = 0; h < j->H; h++) {                                                    \
            const TY *x = (const TY *)j->x + b * j->sb + t * j->st + h * j->sh;                 \
            TY *y = (TY *)j->y + b * j->yb + t * j->yt + h * j->yh;                             \
            rope_head_##S(x, y, c, s, sg, half);                                                \
            for (int64_t k = j->R; k < D; k++) y[k] = x[k];                                     \
        }                                                                                       \
    }                                                                                           \
}

ROPE_DEFINE(f32, float, float)
ROPE_DEFINE(f64, double, double)
ROPE_DEFINE(bf16, uint16_t, float)

static void *rope_job(void *arg) {
    const rope_job_t *j = (const rope_job_t *)arg;
    if (j->dtype == 0) rope_rows_f32(j);
    else if (j->dtype == 1) rope_rows_f64(j);
    else rope_rows_bf16(j);
    return 0;
}

int zoo_rotary(int dtype, int sign, const void *x, const void *cs, const void *sn, void *y, int64_t B, int64_t T,
               int64_t H, int64_t D, int64_t R, const int64_t *st, int threads) {
    rope_job_t jobs[64];
    int64_t rows = B * T;
    threads = zoo_threads(threads, rows);
    for (int k = 0; k < threads; k++) {
        rope_job_t j = {x,     cs,    sn,    y,     T,     H,     D,     R, st[0], st[1], st[2], st[3], st[4], st[5],
                        rows * k / threads, rows * (k + 1) / threads, dtype, sign};
        jobs[k] = j;
    }
    zoo_run_jobs(rope_job, jobs, sizeof(rope_job_t), threads);
    return 0;
}
