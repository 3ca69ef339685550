/* The gated activation of GLU MLPs (Shazeer 2020) and of Griffin's gate branch, fused.

       y = act(g) * v                      act = SiLU or tanh-GeLU
       dg = dy * v * act'(g),  dv = dy * act(g)

   One pass forward (reads g and v, writes y) and one backward (reads dy, g and v, writes dg and
   dv; act(g) is recomputed, nothing is saved). In eager PyTorch the same math is five
   elementwise passes (silu, mul; mul, silu_backward, mul), each streaming its operands from
   memory: at a small model's sizes the tensors outgrow the caches and these passes cost about
   as much as the MLP's smaller matmul (benchmarks/results/).

   Layouts: `rows` rows of `n` elements; each operand has its own row stride (elements) and
   contiguous elements, so g and v may be the two halves of one (rows, 2n) tensor and dg, dv
   the halves of its gradient. dtype 0 float32, 1 float64, 2 bfloat16 (stored as uint16,
   computed in float32, rounded to nearest even on store). */

#include "bf16.h"
#include "jobs.h"
#include "vmath.h"

enum { GLU_SILU = 0, GLU_GELU_TANH = 1 };

typedef struct {
    const void *g, *v, *dy;
    void *y, *dg, *dv;
    int64_t n, sg, sv, sdy, sy, sdg, sdv, r0, r1;
    int act, dtype, backward;
} glu_job_t;

#define GLU_INLINE static inline __attribute__((always_inline))

/* act(x), and act'(x) in *d, both as x s and its derivative with s a logistic sigmoid (no
   cancellation where act is near zero). SiLU: s = sigma(x), act' = s (1 + x (1 - s)).
   tanh-GeLU: x/2 (1 + tanh(u)) = x sigma(2u), u = c (x + a x^3),
   act' = s + 2 x s (1 - s) c (1 + 3 a x^2). */
#define GLU_ACT(NAME, CT, EXP)                                                                      \
GLU_INLINE CT NAME(int act, CT x, CT *d) {                                                          \
    const CT c = (CT)0.7978845608028654, a = (CT)0.044715;                                          \
    CT x2 = x * x, z = act == GLU_SILU ? x : 2 * c * x * (1 + a * x2);                              \
    CT s = 1 / (1 + EXP(-z));                                                                       \
    CT dz = act == GLU_SILU ? 1 : 2 * c * (1 + 3 * a * x2);                                         \
    *d = s + x * s * (1 - s) * dz;                                                                  \
    return x * s;                                                                                   \
}

GLU_ACT(act_f, float, vexpf)
GLU_ACT(act_d, double, exp)

/* One row with inputs of type TI that load as LOAD and outputs of type TY that store as STORE,
   computed in CT (float32 out of bfloat16 in for the chunks of the bf16 rows below). The
   activation is chosen by selects on a loop-invariant flag, so each loop vectorises. */
#define GLU_ROW(NAME, TI, TY, CT, ACT, LOAD, STORE)                                                \
GLU_INLINE void NAME##_forward(int act, const TI *restrict g, const TI *restrict v, TY *restrict y, \
                               int64_t n) {                                                         \
    _Pragma("omp simd")                                                                             \
    for (int64_t i = 0; i < n; i++) {                                                               \
        CT d;                                                                                       \
        y[i] = STORE(ACT(act, LOAD(g[i]), &d) * LOAD(v[i]));                                        \
    }                                                                                               \
}                                                                                                   \
GLU_INLINE void NAME##_backward(int act, const TI *restrict g, const TI *restrict v,                \
                                const TI *restrict dy, TY *restrict dg, TY *restrict dv, int64_t n) {  \
    _Pragma("omp simd")                                                                             \
    for (int64_t i = 0; i < n; i++) {                                                               \
        CT d, gy = LOAD(dy[i]);                                                                     \
        CT a = ACT(act, LOAD(g[i]), &d);                                                            \
        dg[i] = STORE(gy * LOAD(v[i]) * d);                                                         \
        dv[i] = STORE(gy * a);                                                                      \
    }                                                                                               \
}

#define GLU_SAME(x) (x)
GLU_ROW(glu_f32, float, float, float, act_f, GLU_SAME, GLU_SAME)
GLU_ROW(glu_f64, double, double, double, act_d, GLU_SAME, GLU_SAME)
GLU_ROW(glu_bf16_to_f32, uint16_t, float, float, act_f, bf16_load, GLU_SAME)

/* bfloat16: a chunk of each row computed in float32, then stored by bf16_store_row (bf16.h). */
#define GLU_CHUNK 256
GLU_INLINE void glu_bf16_forward(int act, const uint16_t *restrict g, const uint16_t *restrict v,
                                 uint16_t *restrict y, int64_t n) {
    float yf[GLU_CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += GLU_CHUNK) {
        int64_t m = n - i0 < GLU_CHUNK ? n - i0 : GLU_CHUNK;
        glu_bf16_to_f32_forward(act, g + i0, v + i0, yf, m);
        bf16_store_row(y + i0, yf, m);
    }
}
GLU_INLINE void glu_bf16_backward(int act, const uint16_t *restrict g, const uint16_t *restrict v,
                                  const uint16_t *restrict dy, uint16_t *restrict dg, uint16_t *restrict dv,
                                  int64_t n) {
    float dgf[GLU_CHUNK], dvf[GLU_CHUNK];
    for (int64_t i0 = 0; i0 < n; i0 += GLU_CHUNK) {
        int64_t m = n - i0 < GLU_CHUNK ? n - i0 : GLU_CHUNK;
        glu_bf16_to_f32_backward(act, g + i0, v + i0, dy + i0, dgf, dvf, m);
        bf16_store_row(dg + i0, dgf, m);
        bf16_store_row(dv + i0, dvf, m);
    }
}

#define GLU_ROWS(NAME, TY)                                                                          \
    for (int64_t r = j->r0; r < j->r1; r++) {                                                       \
        const TY *g = (const TY *)j->g + r * j->sg, *v = (const TY *)j->v + r * j->sv;              \
        if (j->backward)                                                                            \
            NAME##_backward(j->act, g, v, (const TY *)j->dy + r * j->sdy, (TY *)j->dg + r * j->sdg, \
                            (TY *)j->dv + r * j->sdv, j->n);                                        \
        else                                                                                        \
            NAME##_forward(j->act, g, v, (TY *)j->y + r * j->sy, j->n);                             \
    }

static void *glu_job(void *arg) {
    glu_job_t *j = (glu_job_t *)arg;
    if (j->dtype == 0) GLU_ROWS(glu_f32, float)
    else if (j->dtype == 1) GLU_ROWS(glu_f64, double)
    else GLU_ROWS(glu_bf16, uint16_t)
    return 0;
}

/* Forward (backward = 0): y from g, v. Backward: dg, dv from g, v, dy. Rows split over threads. */
int zoo_glu(int backward, int act, int dtype, const void *g, const void *v, const void *dy, void *y, void *dg,
            void *dv, int64_t rows, int64_t n, const int64_t *st, int threads) {
    glu_job_t jobs[64];
    threads = zoo_threads(threads, rows);
    for (int k = 0; k < threads; k++) {
        glu_job_t j = {g, v, dy, y, dg, dv, n, st[0], st[1], st[2], st[3], st[4], st[5],
                       rows * k / threads, rows * (k + 1) / threads, act, dtype, backward};
        jobs[k] = j;
    }
    zoo_run_jobs(glu_job, jobs, sizeof(glu_job_t), threads);
    return 0;
}
