/* The fused causal depthwise conv1d (+ SiLU).

       p_t = bias + sum_k w_k xpad_{t+k},   y_t = act(p_t),   xpad = cat(prev, x) over time

   One pass over time per (batch row, channel block), channels vectorised: each x
   row is read from memory once and from L1 by the next W-1 steps. The backward
   recomputes p (nothing is saved but the inputs), keeps the last W gradients
   gp_t = gy_t act'(p_t) in a ring, and writes d xpad_j = sum_k w_k gp_{j-k} as
   soon as j's last term is known, so dx and dprev are written once.

   Documents: rs (B, T) uint8, 1 where a document starts (NULL: none). A tap that reaches
   before its output's document start reads zero: output t's taps start at
   k0 = W-1 - (t - start_t), and d xpad_i sums only the outputs before the next start after
   row i (both are 0 without a start, so the loops are today's).

   Layouts: x, prev with any batch/time strides, channels contiguous; wt (W, C)
   (the weight transposed, so channels are contiguous); bias (C), zeros without
   one; y, gy, dx (B, T, C), dprev (B, W-1, C); dw (B, W, C) and db (B, C) per
   batch row (Python sums the rows, so the result does not depend on the thread
   count). */

#include <stdlib.h>

#include "jobs.h"
#include "vmath.h"

typedef struct {
    const void *x, *prev, *wt, *bias, *gy;
    const uint8_t *rs;
    void *y, *dx, *dprev, *dw, *db;
    int64_t sx_b, sx_t, sp_b, sp_t, T, C, W, block;
    int silu, begin, end, err;
} cjob_t;

/* Channels go in tiles of CV_TILE: the tile functions are inlined with n == CV_TILE (a
   constant: gcc keeps the tile's sums in registers across the taps, ~1.4x faster than a
   pass over the whole row per tap), then once with the tail n < CV_TILE. They are inline
   functions, so that no `omp simd` _Pragma ends up inside a macro argument. */
#define CV_TILE 64
#define CV_TILES(CALL)                                                                    \
    for (int64_t d1 = 0; d1 < nd; d1 += CV_TILE) {                                        \
        if (nd - d1 >= CV_TILE) { const int64_t n = CV_TILE; CALL; }                      \
        else { const int64_t n = nd - d1; CALL; }                                         \
    }
#define CV_INLINE static inline __attribute__((always_inline))

/* dw and db sum T terms per channel: CV_SUM_EVERY steps go into a partial, then into the
   row's total, so float32 rounding grows with K + T / K, not T. */
#define CV_SUM_EVERY 64

/* Where rows t .. t + W-1 of xpad = cat(prev, x) lie, for one batch row from one channel:
   taps k < kp read prev, the others x; taps k < k0 reach before the document start and are
   skipped. Two loops over taps, no select per tap: gcc 12 if-converts one and then
   vectorises the tap loop, with gathers. */
typedef struct { const void *x, *p; int64_t sx_t, sp_t, t, kp, k0; } cv_rows_t;
#define CV_ROWS(TY, t, d1, k0)                                                            \
    ((cv_rows_t){(const TY *)j->x + b * j->sx_b + d0 + (d1), (const TY *)j->prev + b * j->sp_b + d0 + (d1), \
                 j->sx_t, j->sp_t, (t), (t) < W - 1 ? W - 1 - (t) : 0, (k0)})
#define CV_TAPS(TY, r, CALL)                                                              \
    for (int64_t k = (r).k0; k < (r).kp; k++) {                                           \
        const TY *xr = (const TY *)(r).p + ((r).t + k) * (r).sp_t; CALL;                  \
    }                                                                                     \
    for (int64_t k = (r).kp > (r).k0 ? (r).kp : (r).k0; k < W; k++) {                     \
        const TY *xr = (const TY *)(r).x + ((r).t + k - (W - 1)) * (r).sx_t; CALL;        \
    }

#define CV_DEFINE(TY, S, EXP)                                                             \
/* acc += a * b over n channels */                                                        \
CV_INLINE void cv_fma_##S(TY *restrict acc, const TY *restrict a, const TY *restrict b, int64_t n) { \
    _Pragma("omp simd")                                                                   \
    for (int64_t d = 0; d < n; d++) acc[d] += a[d] * b[d];                                \
}                                                                                         \
                                                                                          \
/* acc = bias + the taps in order k = 0 .. W-1 (the forward and backward round alike) */  \
CV_INLINE void cv_pre_##S(TY *restrict acc, cv_rows_t r, const TY *restrict wt,          \
                          const TY *restrict bi, int64_t W, int64_t C, int64_t n) {        \
    _Pragma("omp simd")                                                                   \
    for (int64_t d = 0; d < n; d++) acc[d] = bi[d];                                       \
    CV_TAPS(TY, r, cv_fma_##S(acc, wt + k * C, xr, n))                                     \
}                                                                                         \
                                                                                          \
CV_INLINE void cv_fwd_tile_##S(TY *restrict y, cv_rows_t r, const TY *restrict wt,       \
                               const TY *restrict bi, int64_t W, int64_t C, int64_t n, int silu) { \
    TY acc[CV_TILE];                                                                      \
    cv_pre_##S(acc, r, wt, bi, W, C, n);                                                  \
    if (silu) {                                                                           \
        _Pragma("omp simd")                                                               \
        for (int64_t d = 0; d < n; d++) y[d] = acc[d] / (1 + EXP(-acc[d]));               \
    } else {                                                                              \
        _Pragma("omp simd")                                                               \
        for (int64_t d = 0; d < n; d++) y[d] = acc[d];                                    \
    }                                                                                     \
}                                                                                         \
                                                                                          \
/* gp = gy act'(p) into g and the partial sums pb (db) and pw (dw, row stride bs);        \
   SiLU'(p) = s (1 + p (1 - s)), s = sigmoid(p) */                                        \
CV_INLINE void cv_grad_tile_##S(TY *restrict g, const TY *restrict gy, TY *restrict pb,   \
                                TY *restrict pw, int64_t bs, cv_rows_t r,                 \
                                const TY *restrict wt, const TY *restrict bi, int64_t W,  \
                                int64_t C, int64_t n, int silu) {                         \
    if (silu) {                                                                           \
        TY acc[CV_TILE];                                                                  \
        cv_pre_##S(acc, r, wt, bi, W, C, n);                                              \
        _Pragma("omp simd")                                                               \
        for (int64_t d = 0; d < n; d++) {                                                 \
            TY p = acc[d], s = 1 / (1 + EXP(-p));                                         \
            g[d] = gy[d] * (s * (1 + p * (1 - s)));                                       \
        }                                                                                 \
    } else {                                                                              \
        memcpy(g, gy, n * sizeof(TY));                                                    \
    }                                                                                     \
    _Pragma("omp simd")                                                                   \
    for (int64_t d = 0; d < n; d++) pb[d] += g[d];                                        \
    CV_TAPS(TY, r, cv_fma_##S(pw + k * bs, g, xr, n))                                      \
}                                                                                         \
                                                                                          \
/* o = d xpad_i = sum_k w_k gp_{i-k}, k = k0 .. W-1 in order; gp_i is in ring row slot =   \
   i % W, so gp_{i-k} in row slot - k, wrapped: two loops, no modulo or select per tap */ \
CV_INLINE void cv_dxpad_tile_##S(TY *restrict o, const TY *ring, int64_t bs, int64_t slot, \
                                 const TY *restrict wt, int64_t k0, int64_t W, int64_t C, int64_t n) { \
    TY acc[CV_TILE];                                                                      \
    _Pragma("omp simd")                                                                   \
    for (int64_t d = 0; d < n; d++) acc[d] = 0;                                           \
    for (int64_t k = k0; k <= slot; k++) cv_fma_##S(acc, wt + k * C, ring + (slot - k) * bs, n); \
    for (int64_t k = k0 > slot + 1 ? k0 : slot + 1; k < W; k++)                           \
        cv_fma_##S(acc, wt + k * C, ring + (slot - k + W) * bs, n);                       \
    memcpy(o, acc, n * sizeof(TY));                                                       \
}                                                                                         \
                                                                                          \
static void *cv_fwd_##S(void *p) {                                                        \
    cjob_t *j = p;                                                                        \
    int64_t T = j->T, C = j->C, W = j->W, nblk = (C + j->block - 1) / j->block;           \
    for (int item = j->begin; item < j->end; item++) {                                    \
        int64_t b = item / nblk, d0 = (item % nblk) * j->block;                           \
        int64_t nd = C - d0 < j->block ? C - d0 : j->block;                               \
        const TY *wt = (const TY *)j->wt + d0, *bi = (const TY *)j->bias + d0;            \
        const uint8_t *rs = j->rs ? j->rs + b * T : 0;                                    \
        int64_t start = -W;  /* the document start: before the row, all taps count */     \
        for (int64_t t = 0; t < T; t++) {                                                 \
            TY *y = (TY *)j->y + (b * T + t) * C + d0;                                    \
            if (rs && rs[t]) start = t;                                                   \
            int64_t k0 = W - 1 - (t - start) > 0 ? W - 1 - (t - start) : 0;               \
            CV_TILES(cv_fwd_tile_##S(y + d1, CV_ROWS(TY, t, d1, k0), wt + d1, bi + d1, W, C, n, j->silu)) \
        }                                                                                 \
    }                                                                                     \
    return 0;                                                                             \
}                                                                                         \
                                                                                          \
/* For each row i of xpad: gp_i into the ring (0 past the end) and the partial sums, then \
   d xpad_i into dprev's row (i < W-1) or dx's. */                                        \
static void *cv_bwd_##S(void *p) {                                                        \
    cjob_t *j = p;                                                                        \
    int64_t T = j->T, C = j->C, W = j->W, bs = j->block, nblk = (C + bs - 1) / bs;        \
    /* ring: gp of the last W rows; pw, pb: partial sums of dw and db */                  \
    TY *ring = malloc((2 * W + 1) * bs * sizeof(TY));                                     \
    if (!ring) { j->err = 1; return 0; }                                                  \
    TY *pw = ring + W * bs, *pb = pw + W * bs;                                            \
    for (int item = j->begin; item < j->end; item++) {                                    \
        int64_t b = item / nblk, d0 = (item % nblk) * bs;                                 \
        int64_t nd = C - d0 < bs ? C - d0 : bs;                                           \
        const TY *wt = (const TY *)j->wt + d0, *bi = (const TY *)j->bias + d0;            \
        TY *DW = (TY *)j->dw + b * W * C + d0, *DB = (TY *)j->db + b * C + d0;            \
        const uint8_t *rs = j->rs ? j->rs + b * T : 0;                                    \
        int64_t start = -W;                                                               \
        memset(ring, 0, (2 * W + 1) * bs * sizeof(TY));  /* gp before t = 0 is 0 */       \
        for (int64_t k = 0; k < W; k++) memset(DW + k * C, 0, nd * sizeof(TY));           \
        memset(DB, 0, nd * sizeof(TY));                                                   \
        for (int64_t i = 0; i < T + W - 1; i++) {                                         \
            TY *g = ring + (i % W) * bs;                                                  \
            TY *o = i < W - 1 ? (TY *)j->dprev + (b * (W - 1) + i) * C + d0               \
                              : (TY *)j->dx + (b * T + i - (W - 1)) * C + d0;             \
            /* row i (x position s = i - (W-1)) feeds outputs s .. i before the first start \
               r in (s, i]: taps k >= kd = i - r + 1 */                                   \
            int64_t kd = 0;                                                               \
            if (rs) {                                                                     \
                int64_t r = i - (W - 1) + 1 > 0 ? i - (W - 1) + 1 : 0;                    \
                while (r <= i && r < T && !rs[r]) r++;                                    \
                if (r <= i && r < T) kd = i - r + 1;                                      \
                if (i < T && rs[i]) start = i;                                            \
            }                                                                             \
            if (i < T) {                                                                  \
                const TY *gy = (const TY *)j->gy + (b * T + i) * C + d0;                  \
                int64_t k0 = W - 1 - (i - start) > 0 ? W - 1 - (i - start) : 0;           \
                CV_TILES(cv_grad_tile_##S(g + d1, gy + d1, pb + d1, pw + d1, bs, CV_ROWS(TY, i, d1, k0), \
                                          wt + d1, bi + d1, W, C, n, j->silu);            \
                         cv_dxpad_tile_##S(o + d1, ring + d1, bs, i % W, wt + d1, kd, W, C, n)) \
                if (i % CV_SUM_EVERY == CV_SUM_EVERY - 1 || i == T - 1) {                 \
                    for (int64_t k = 0; k <= W; k++) {  /* k == W: db */                  \
                        TY *restrict tot = k < W ? DW + k * C : DB, *restrict pk = pw + k * bs; \
                        _Pragma("omp simd")                                               \
                        for (int64_t d = 0; d < nd; d++) { tot[d] += pk[d]; pk[d] = 0; }  \
                    }                                                                     \
                }                                                                         \
            } else {                                                                      \
                memset(g, 0, nd * sizeof(TY));  /* gp after T - 1 is 0 */                 \
                CV_TILES(cv_dxpad_tile_##S(o + d1, ring + d1, bs, i % W, wt + d1, kd, W, C, n)) \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    free(ring);                                                                           \
    return 0;                                                                             \
}

CV_DEFINE(float, f, vexpf)
CV_DEFINE(double, d, exp)

/* kind: 0 forward f32, 1 forward f64, 2 backward f32, 3 backward f64. st: x's and prev's
   (batch, time) strides; rs: the document starts (B, T) or NULL. Returns 0 on success. */
int zoo_causal_conv(int kind, const void *x, const void *prev, const uint8_t *rs, const void *wt, const void *bias,
                    const void *gy, void *y, void *dx, void *dprev, void *dw, void *db, const int64_t *st,
                    int64_t B, int64_t T, int64_t C, int64_t W, int64_t block, int silu, int threads) {
    void *(*fn)(void *) = kind == 0 ? cv_fwd_f : kind == 1 ? cv_fwd_d : kind == 2 ? cv_bwd_f : cv_bwd_d;
    int64_t items = B * ((C + block - 1) / block);
    threads = zoo_threads(threads, items);
    cjob_t jobs[64];
    for (int k = 0; k < threads; k++) {
        cjob_t j = {x, prev, wt, bias, gy, rs, y, dx, dprev, dw, db, st[0], st[1], st[2], st[3], T, C, W, block,
                    silu, (int)(items * k / threads), (int)(items * (k + 1) / threads), 0};
        jobs[k] = j;
    }
    zoo_run_jobs(fn, jobs, sizeof jobs[0], threads);
    int err = 0;
    for (int k = 0; k < threads; k++) err |= jobs[k].err;
    return err;
}
