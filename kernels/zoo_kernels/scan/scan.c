/* The compiled CPU linear and log-space scans (zoo_kernels/scan/cpu.py calls zoo_scan). */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "jobs.h"
#include "vmath.h"

/* A (B, L, D) scan over dim 1. Strides are in elements; channels are contiguous.
   Work items are (batch row, channel block) pairs, split evenly over threads. */
typedef struct {
    const void *a, *x, *h0; void *out, *last;
    int64_t B, L, D, block, sa_b, sa_t, sx_b, sx_t, so_b, so_t, sh_b;
    int reverse, begin, end;
} job_t;

#define SCAN_BODY(T, STEP)                                                           \
    const T *A = (const T *)j->a, *X = (const T *)j->x, *H0 = (const T *)j->h0;     \
    T *O = (T *)j->out, *LAST = (T *)j->last;                                        \
    int64_t nblk = (j->D + j->block - 1) / j->block;                                 \
    for (int item = j->begin; item < j->end; item++) {                               \
        int64_t b = item / nblk, d0 = (item % nblk) * j->block;                      \
        int64_t n = j->D - d0 < j->block ? j->D - d0 : j->block;                     \
        const T *prev = H0 ? H0 + b * j->sh_b + d0 : 0;                              \
        for (int64_t s = 0; s < j->L; s++) {                                         \
            int64_t t = j->reverse ? j->L - 1 - s : s;                               \
            const T *restrict at = A + b * j->sa_b + t * j->sa_t + d0;               \
            const T *restrict xt = X + b * j->sx_b + t * j->sx_t + d0;               \
            T *restrict ot = O + b * j->so_b + t * j->so_t + d0;                     \
            if (prev) {                                                              \
                const T *restrict p = prev;                                          \
                _Pragma("omp simd") /* lets gcc if-convert the log step's selects */ \
                for (int64_t d = 0; d < n; d++) { STEP; }                            \
            } else {                                                                 \
                memcpy(ot, xt, n * sizeof(T));                                       \
            }                                                                        \
            prev = ot;                                                               \
        }                                                                            \
        T *restrict lt = LAST + b * j->D + d0;                                       \
        if (prev) memcpy(lt, prev, n * sizeof(T));                                   \
    }

/* float: vexpf_le0/vlog1pf01 (vmath.h), so the channel loop vectorises; libm's calls do not.
   Subtracting max(m, -FLT_MAX) keeps m == -inf exact without a select on the result:
   the gap is -inf, its exp 0, its log1p 0, and -inf + 0 = -inf. */
static inline float lae_f(float u, float v) {
    float m = u > v ? u : v, k = u > v ? v : u, mc = m > -FLT_MAX ? m : -FLT_MAX;
    return m + vlog1pf01(vexpf_le0(k - mc));
}
static inline double lae_d(double u, double v) {
    double m = u > v ? u : v, k = u > v ? v : u;
    return m == -INFINITY ? m : m + log1p(exp(k - m));
}

static void *lin_f(void *p) { job_t *j = p; SCAN_BODY(float, ot[d] = at[d] * p[d] + xt[d]) return 0; }
static void *lin_d(void *p) { job_t *j = p; SCAN_BODY(double, ot[d] = at[d] * p[d] + xt[d]) return 0; }
static void *log_f(void *p) { job_t *j = p; SCAN_BODY(float, ot[d] = lae_f(at[d] + p[d], xt[d])) return 0; }
static void *log_d(void *p) { job_t *j = p; SCAN_BODY(double, ot[d] = lae_d(at[d] + p[d], xt[d])) return 0; }

/* kind: 0 linear f32, 1 linear f64, 2 log f32, 3 log f64. Returns 0 on success. */
int zoo_scan(int kind, const void *a, const void *x, const void *h0, void *out, void *last,
             int64_t B, int64_t L, int64_t D, int64_t block,
             int64_t sa_b, int64_t sa_t, int64_t sx_b, int64_t sx_t,
             int64_t so_b, int64_t so_t, int64_t sh_b, int reverse, int threads) {
    void *(*fn)(void *) = kind == 0 ? lin_f : kind == 1 ? lin_d : kind == 2 ? log_f : log_d;
    int64_t items = B * ((D + block - 1) / block);
    threads = zoo_threads(threads, items);
    job_t jobs[64];
    for (int k = 0; k < threads; k++) {
        job_t j = {a, x, h0, out, last, B, L, D, block, sa_b, sa_t, sx_b, sx_t, so_b, so_t, sh_b, reverse,
                   (int)(items * k / threads), (int)(items * (k + 1) / threads)};
        jobs[k] = j;
    }
    zoo_run_jobs(fn, jobs, sizeof jobs[0], threads);
    return 0;
}
