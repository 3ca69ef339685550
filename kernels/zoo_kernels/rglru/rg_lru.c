/* The fused RG-LRU (Griffin).

   One pass over time per (batch row, channel block), channels vectorised: the
   gates are computed in registers from x, r_pre, i_pre and never stored, so the
   forward reads three inputs and writes h once. The backward runs time in
   reverse, recomputes the gates and reads the saved h.

       r = sigmoid(r_pre), i = sigmoid(i_pre), q = log a = n r with n = -c softplus(-a_param)
       h_t = a h_{t-1} + s i x,  s = sqrt(1 - a^2) = sqrt(-expm1(q) (1 + a))

   n is computed once per call in Python; da_param's sum over batch rows too.

   Documents: rs (B, L) uint8, 1 where a document starts (NULL: none). There, as in
   RecurrentGemma, a = 0 and the normaliser s is 1: h_t = i x, and nothing flows back to
   h_{t-1} or into r_pre and a_param. Steps with a start take their own channel loop, so
   the others run today's code.

   Layouts: x, r_pre, i_pre, g (B, L, D) with any batch/time strides, channels
   contiguous; n (D); h0 (B, D) with a batch stride (zeros when absent); h, dx,
   dr, di (B, L, D), last, gl, dh0, dap (B, D) contiguous. */

#include <float.h>
#include <stdlib.h>

#include "jobs.h"
#include "vmath.h"

/* Backward, with w_t = dL/dh_t in total (w_{L-1} = g_{L-1} + gl, w_t = g_t + a_{t+1} w_{t+1}):
     dx       = w s i
     di_pre   = w s x i (1 - i)
     dq       = w h_{t-1} a + w i x ds/dq,   ds/dq = -a^2 / s
                (taken as 0 where 1 - a^2 <= tiny: r == 0 gives s == 0, and dq r -> 0 there)
     dr_pre   = dq n r (1 - r)
     da_param = c sigmoid(-a_param) sum_{b,t} dq r     (dq/da_param = r dn/da_param)
     dh0      = a_0 w_0
   The kernel writes dap = sum_t dq r per batch row; Python sums the rows and scales. */

/* sigmoid(v) and sigmoid(-v) = 1 - sigmoid(v) without cancellation: e = exp(-|v|) <= 1
   never overflows and gives 0 (not a clamped tiny value) far in the tails. The two
   gates share one division. a = e^q and em = e^q - 1 come from one range reduction;
   1 - a^2 = -em (1 + a) has no cancellation near a = 1. */
#define RG_GATES(T, EXP, EXPS, SQRT, FABS, rp, ip, nc)                                    \
    T er = EXP(-FABS(rp)), ei = EXP(-FABS(ip));                                           \
    T er1 = 1 + er, ei1 = 1 + ei, inv = 1 / (er1 * ei1), sr = ei1 * inv, si = er1 * inv;  \
    T r = rp >= 0 ? sr : er * sr, rc = rp >= 0 ? er * sr : sr;                            \
    T i = ip >= 0 ? si : ei * si, ic = ip >= 0 ? ei * si : si;                            \
    T q = (nc) * r;                                                                       \
    EXPS(q, a, em)                                                                        \
    T om = -em * (1 + a), s = SQRT(om);                                                   \
    (void)rc; (void)ic;

/* float: vexpf_le0 and vexp_expm1f_le0 (vmath.h; all arguments are <= 0) vectorise;
   double: libm */
#define RG_EXPS_F(q, a, em) vexp2_t q##_e = vexp_expm1f_le0(q); float a = q##_e.e, em = q##_e.em1;
#define RG_EXPS_D(q, a, em) double a = exp(q), em = expm1(q);

typedef struct {
    const void *x, *rp, *ip, *n, *h0, *h, *g, *gl;
    const uint8_t *rs;
    void *out, *last, *dx, *dr, *di, *dap, *dh0;
    int64_t sx_b, sx_t, sr_b, sr_t, si_b, si_t, sg_b, sg_t, sh_b;
    int64_t L, D, block;
    int begin, end, err;
} rjob_t;

#define RG_ITEM                                                                           \
    int64_t b = item / nblk, d0 = (item % nblk) * j->block;                               \
    int64_t nd = D - d0 < j->block ? D - d0 : j->block;

#define RG_INPUTS(T, t)                                                                   \
    const T *restrict xt = X + b * j->sx_b + (t) * j->sx_t + d0;                          \
    const T *restrict rt = RP + b * j->sr_b + (t) * j->sr_t + d0;                         \
    const T *restrict it = IP + b * j->si_b + (t) * j->si_t + d0;                         \
    const T *restrict nc = NC + d0;

#define RG_FWD(T, EXP, EXPS, SQRT, FABS)                                                  \
    const T *X = j->x, *RP = j->rp, *IP = j->ip, *NC = j->n, *H0 = j->h0;                 \
    T *O = j->out, *LAST = j->last;                                                       \
    int64_t L = j->L, D = j->D, nblk = (D + j->block - 1) / j->block;                     \
    for (int item = j->begin; item < j->end; item++) {                                    \
        RG_ITEM                                                                           \
        const T *prev = H0 + b * j->sh_b + d0;                                            \
        for (int64_t t = 0; t < L; t++) {                                                 \
            RG_INPUTS(T, t)                                                               \
            const T *restrict hp = prev;                                                  \
            T *restrict ot = O + (b * L + t) * D + d0;                                    \
            if (j->rs && j->rs[b * L + t]) {  /* a document starts: h = i x */            \
                _Pragma("omp simd")                                                       \
                for (int64_t d = 0; d < nd; d++) {                                        \
                    RG_GATES(T, EXP, EXPS, SQRT, FABS, rt[d], it[d], nc[d])               \
                    ot[d] = i * xt[d]; (void)a; (void)s;                                  \
                }                                                                         \
                prev = ot;                                                                \
                continue;                                                                 \
            }                                                                             \
            _Pragma("omp simd")                                                           \
            for (int64_t d = 0; d < nd; d++) {                                            \
                RG_GATES(T, EXP, EXPS, SQRT, FABS, rt[d], it[d], nc[d])                   \
                ot[d] = a * hp[d] + s * (i * xt[d]);                                      \
            }                                                                             \
            prev = ot;                                                                    \
        }                                                                                 \
        memcpy(LAST + b * D + d0, prev, nd * sizeof(T));                                  \
    }

/* The backward visits rows in descending address order, which the hardware prefetchers
   follow poorly (~1.5x slower at (8, 4096, 256)): fetch the rows RG_AHEAD steps ahead. */
#define RG_AHEAD 4
#define RG_PREFETCH(row)                                                                  \
    for (int64_t d = 0; d < nd; d += 64 / (int64_t)sizeof(*(row))) __builtin_prefetch((row) + d)

/* dap sums L terms per channel: RG_SUM_EVERY steps go into part, then into the row's
   total, so float32 rounding grows with K + L / K, not L. */
#define RG_SUM_EVERY 64

#define RG_BWD(T, EXP, EXPS, SQRT, FABS, TINY)                                            \
    const T *X = j->x, *RP = j->rp, *IP = j->ip, *NC = j->n, *H0 = j->h0, *H = j->h;      \
    const T *G = j->g, *GL = j->gl;                                                       \
    T *DX = j->dx, *DR = j->dr, *DI = j->di, *DAP = j->dap, *DH0 = j->dh0;                \
    int64_t L = j->L, D = j->D, nblk = (D + j->block - 1) / j->block;                     \
    T *part = malloc(j->block * sizeof(T));                                               \
    if (!part) { j->err = 1; return 0; }                                                  \
    for (int item = j->begin; item < j->end; item++) {                                    \
        RG_ITEM                                                                           \
        T *restrict wn = DH0 + b * D + d0;  /* a_{t+1} w_{t+1}; a_0 w_0 = dh0 at the end */ \
        T *restrict tot = DAP + b * D + d0, *restrict pt = part;                          \
        memcpy(wn, GL + b * D + d0, nd * sizeof(T));                                      \
        memset(tot, 0, nd * sizeof(T));                                                   \
        memset(pt, 0, nd * sizeof(T));                                                    \
        for (int64_t t = L - 1; t >= 0; t--) {                                            \
            RG_INPUTS(T, t)                                                               \
            const T *restrict gt = G + b * j->sg_b + t * j->sg_t + d0;                    \
            if (t >= RG_AHEAD) {                                                          \
                RG_PREFETCH(xt - RG_AHEAD * j->sx_t); RG_PREFETCH(rt - RG_AHEAD * j->sr_t); \
                RG_PREFETCH(it - RG_AHEAD * j->si_t); RG_PREFETCH(gt - RG_AHEAD * j->sg_t); \
                if (t > RG_AHEAD) RG_PREFETCH(H + (b * L + t - 1 - RG_AHEAD) * D + d0);   \
            }                                                                             \
            const T *restrict hp = t > 0 ? H + (b * L + t - 1) * D + d0 : H0 + b * j->sh_b + d0; \
            T *restrict dxt = DX + (b * L + t) * D + d0;                                  \
            T *restrict drt = DR + (b * L + t) * D + d0;                                  \
            T *restrict dit = DI + (b * L + t) * D + d0;                                  \
            if (j->rs && j->rs[b * L + t]) {  /* a = 0, s = 1: dq = 0, w stops here */    \
                _Pragma("omp simd")                                                       \
                for (int64_t d = 0; d < nd; d++) {                                        \
                    RG_GATES(T, EXP, EXPS, SQRT, FABS, rt[d], it[d], nc[d])               \
                    T w = gt[d] + wn[d], wi = w * i;                                      \
                    dxt[d] = wi;                                                          \
                    dit[d] = wi * xt[d] * ic;                                             \
                    drt[d] = 0;                                                           \
                    wn[d] = 0; (void)a; (void)s; (void)hp;                                \
                }                                                                         \
                if (t % RG_SUM_EVERY == 0) {                                              \
                    _Pragma("omp simd")                                                   \
                    for (int64_t d = 0; d < nd; d++) { tot[d] += pt[d]; pt[d] = 0; }      \
                }                                                                         \
                continue;                                                                 \
            }                                                                             \
            _Pragma("omp simd")                                                           \
            for (int64_t d = 0; d < nd; d++) {                                            \
                RG_GATES(T, EXP, EXPS, SQRT, FABS, rt[d], it[d], nc[d])                   \
                T w = gt[d] + wn[d], wi = w * i, wix = wi * xt[d];                        \
                /* divide by 1, not 0, where masked: no inf/NaN even transiently */       \
                T dsdq = -(a * a) / (om > TINY ? s : 1);                                  \
                T dq = w * hp[d] * a + wix * (om > TINY ? dsdq : 0);                      \
                dxt[d] = wi * s;                                                          \
                dit[d] = wix * s * ic;                                                    \
                drt[d] = dq * nc[d] * r * rc;                                             \
                pt[d] += dq * r;                                                          \
                wn[d] = a * w;                                                            \
            }                                                                             \
            if (t % RG_SUM_EVERY == 0) {                                                  \
                _Pragma("omp simd")                                                       \
                for (int64_t d = 0; d < nd; d++) { tot[d] += pt[d]; pt[d] = 0; }          \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    free(part);

static void *rg_fwd_f(void *p) { rjob_t *j = p; RG_FWD(float, vexpf_le0, RG_EXPS_F, sqrtf, fabsf) return 0; }
static void *rg_fwd_d(void *p) { rjob_t *j = p; RG_FWD(double, exp, RG_EXPS_D, sqrt, fabs) return 0; }
static void *rg_bwd_f(void *p) {
    rjob_t *j = p; RG_BWD(float, vexpf_le0, RG_EXPS_F, sqrtf, fabsf, FLT_MIN) return 0;
}
static void *rg_bwd_d(void *p) { rjob_t *j = p; RG_BWD(double, exp, RG_EXPS_D, sqrt, fabs, DBL_MIN) return 0; }

/* kind: 0 forward f32, 1 forward f64, 2 backward f32, 3 backward f64. strides: x, r_pre,
   i_pre, g as (batch, time) pairs, then h0's batch stride; rs: document starts or NULL. Returns 0 on success. */
int zoo_rg_lru(int kind, const void *x, const void *rp, const void *ip, const uint8_t *rs, const void *n, const void *h0,
               const void *h, const void *g, const void *gl, void *out, void *last, void *dx, void *dr,
               void *di, void *dap, void *dh0, const int64_t *st, int64_t B, int64_t L, int64_t D,
               int64_t block, int threads) {
    void *(*fn)(void *) = kind == 0 ? rg_fwd_f : kind == 1 ? rg_fwd_d : kind == 2 ? rg_bwd_f : rg_bwd_d;
    int64_t items = B * ((D + block - 1) / block);
    threads = zoo_threads(threads, items);
    rjob_t jobs[64];
    for (int k = 0; k < threads; k++) {
        rjob_t j = {x, rp, ip, n, h0, h, g, gl, rs, out, last, dx, dr, di, dap, dh0,
                    st[0], st[1], st[2], st[3], st[4], st[5], st[6], st[7], st[8], L, D, block,
                    (int)(items * k / threads), (int)(items * (k + 1) / threads), 0};
        jobs[k] = j;
    }
    zoo_run_jobs(fn, jobs, sizeof jobs[0], threads);
    int err = 0;
    for (int k = 0; k < threads; k++) err |= jobs[k].err;
    return err;
}
