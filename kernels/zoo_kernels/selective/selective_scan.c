/* The fused selective scan (Mamba-1).

   One pass over time per (batch row, channel block); the (D, N) state of a block
   stays in cache and the (batch, T, D, N) decays and inputs are never stored.
   The backward recomputes the states chunk by chunk from checkpoints the forward
   saved every K steps (keeping that chunk's decays too, so each exp is taken
   once per pass), then runs the reverse recurrence over the chunk.

       h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t        y_t = C_t . h_t

   Inside, a block's state is held (N, channels): every inner loop runs along
   channels, which are contiguous in u, dt and y, so y = C . h and the dt and u
   gradients are vector sums over n rather than a horizontal sum per channel
   (2x faster forward and backward than the (channels, N) layout at Mamba's N = 16).

   Document resets: R (B, L) bytes or NULL; R[b, t] != 0 zeroes step t's decay (h_t = dt_t u_t B_t),
   forward and backward (the decay array holds the 0, so the reverse pass needs nothing else).

   Layouts (contiguous): u, dt, y, gy, du, ddt (B, L, D); Bm, Cm (B, L, N); R (B, L);
   A (D, N); h0, hl, ghl, dh0 (B, D, N); ck (B, ceil(L/K), D, N);
   dA partial (B, D, N); dB, dC partial (channel blocks, B, L, N). */

#include <stdlib.h>

#include "jobs.h"
#include "vmath.h"


typedef struct {
    const void *u, *dt, *A, *Bm, *Cm, *h0, *gy, *ghl, *ck_in;
    const unsigned char *R;
    void *y, *hl, *ck, *du, *ddt, *dA, *dB, *dC, *dh0;
    int64_t B, L, D, N, K, block;
    int begin, end, err;
} sjob_t;

/* The kernels keep a block's (N, nd) arrays with channels innermost, so every inner loop runs
   over channels: vectors along d, no horizontal sums per channel. The tensors outside are
   (.., D, N): these copy a (nd, N) slab of one into an (N, nd) array and back. */
#define SS_TO_ND(T, dst, src, nd, N)                                                    \
    for (int64_t d = 0; d < nd; d++)                                                    \
        for (int64_t n = 0; n < N; n++) (dst)[n * (nd) + d] = (src)[d * (N) + n];
#define SS_FROM_ND(T, dst, src, nd, N)                                                  \
    for (int64_t d = 0; d < nd; d++)                                                    \
        for (int64_t n = 0; n < N; n++) (dst)[d * (N) + n] = (src)[n * (nd) + d];

#define SS_JOB_SETUP(T)                                                                 \
    const T *U = j->u, *DT = j->dt, *AA = j->A, *BM = j->Bm, *CM = j->Cm;               \
    const unsigned char *RS = j->R;                                                     \
    int64_t B = j->B, L = j->L, D = j->D, N = j->N, K = j->K, nck = (L + K - 1) / K;    \
    int64_t nblk = (D + j->block - 1) / j->block, S = N * j->block;                     \
    (void)B;

/* h (N, nd) <- exp(dt_t A) h + dt_t u_t B_t for step t; the decays go to `a` when it is not 0. */
#define SS_STEP(T, EXP, hout, hin, a, t)                                                \
    {                                                                                   \
        const T *restrict dtp = DT + (b * L + t) * D + d0, *restrict up = U + (b * L + t) * D + d0; \
        const T *restrict Bt = BM + (b * L + t) * N;                                    \
        _Pragma("omp simd")                                                             \
        for (int64_t d = 0; d < nd; d++) bu[d] = dtp[d] * up[d];                        \
        if (RS && RS[b * L + t]) { /* a document starts at t: decay 0 */                \
            for (int64_t n = 0; n < N; n++) {                                           \
                T bn = Bt[n], *ho = (hout) + n * nd, *restrict an = (a) ? (a) + n * nd : 0; \
                _Pragma("omp simd")                                                     \
                for (int64_t d = 0; d < nd; d++) ho[d] = bu[d] * bn;                    \
                if (an) memset(an, 0, nd * sizeof(T));                                  \
            }                                                                           \
        } else                                                                          \
        for (int64_t n = 0; n < N; n++) {                                               \
            T bn = Bt[n];                                                               \
            const T *restrict An = At + n * nd, *hi = (hin) + n * nd; /* hi may be ho */   \
            T *ho = (hout) + n * nd, *restrict an = (a) ? (a) + n * nd : 0;              \
            if (an) {                                                                   \
                _Pragma("omp simd")                                                     \
                for (int64_t d = 0; d < nd; d++) {                                      \
                    T e = EXP(dtp[d] * An[d]);                                          \
                    an[d] = e;                                                          \
                    ho[d] = e * hi[d] + bu[d] * bn;                                     \
                }                                                                       \
            } else {                                                                    \
                _Pragma("omp simd")                                                     \
                for (int64_t d = 0; d < nd; d++) ho[d] = EXP(dtp[d] * An[d]) * hi[d] + bu[d] * bn; \
            }                                                                           \
        }                                                                               \
    }

#define SS_FWD(T, EXP)                                                                  \
    SS_JOB_SETUP(T)                                                                     \
    const T *H0 = j->h0;                                                                \
    T *Y = j->y, *HL = j->hl, *CK = j->ck;                                              \
    T *At = malloc(S * sizeof(T)), *h = malloc(S * sizeof(T)), *bu = malloc(j->block * sizeof(T)); \
    if (!At || !h || !bu) { j->err = 1; goto done; }                                    \
    for (int item = j->begin; item < j->end; item++) {                                  \
        int64_t b = item / nblk, d0 = (item % nblk) * j->block;                         \
        int64_t nd = D - d0 < j->block ? D - d0 : j->block;                             \
        SS_TO_ND(T, At, AA + d0 * N, nd, N)                                             \
        if (H0) { SS_TO_ND(T, h, H0 + (b * D + d0) * N, nd, N) }                        \
        else memset(h, 0, nd * N * sizeof(T));                                          \
        for (int64_t t = 0; t < L; t++) {                                               \
            if (t % K == 0 && CK) { SS_FROM_ND(T, CK + ((b * nck + t / K) * D + d0) * N, h, nd, N) } \
            SS_STEP(T, EXP, h, h, (T *)0, t)                                            \
            const T *restrict Ct = CM + (b * L + t) * N;                                \
            T *restrict yp = Y + (b * L + t) * D + d0;                                  \
            _Pragma("omp simd")                                                         \
            for (int64_t d = 0; d < nd; d++) yp[d] = 0;                                 \
            for (int64_t n = 0; n < N; n++) {                                           \
                T cn = Ct[n];                                                           \
                const T *restrict hn = h + n * nd;                                      \
                _Pragma("omp simd")                                                     \
                for (int64_t d = 0; d < nd; d++) yp[d] += cn * hn[d];                   \
            }                                                                           \
        }                                                                               \
        SS_FROM_ND(T, HL + (b * D + d0) * N, h, nd, N)                                  \
    }                                                                                   \
done:                                                                                   \
    free(At); free(h); free(bu);

/* Reverse pass. G holds dL/dh_t flowing in from the future (a_{t+1} g_{t+1}). Per chunk of K
   steps, hbuf[0] is the state before the chunk (its checkpoint), hbuf[s + 1] the state after
   its step s, and abuf[s] that step's decays, all recomputed from the checkpoint. */
#define SS_BWD(T, EXP)                                                                  \
    SS_JOB_SETUP(T)                                                                     \
    const T *GY = j->gy, *GHL = j->ghl, *CKI = j->ck_in;                                \
    T *DU = j->du, *DDT = j->ddt, *DA = j->dA, *DB = j->dB, *DC = j->dC, *DH0 = j->dh0;  \
    T *At = malloc(S * sizeof(T)), *G = malloc(S * sizeof(T)), *dAt = malloc(S * sizeof(T)); \
    T *hbuf = malloc((K + 1) * S * sizeof(T)), *abuf = malloc(K * S * sizeof(T));      \
    T *bu = malloc(j->block * sizeof(T)), *sbg = malloc(j->block * sizeof(T)), *sdt = malloc(j->block * sizeof(T)); \
    if (!At || !G || !dAt || !hbuf || !abuf || !bu || !sbg || !sdt) { j->err = 1; goto done; } \
    for (int item = j->begin; item < j->end; item++) {                                  \
        int64_t b = item / nblk, blk = item % nblk, d0 = blk * j->block;                \
        int64_t nd = D - d0 < j->block ? D - d0 : j->block, s = nd * N;                 \
        SS_TO_ND(T, At, AA + d0 * N, nd, N)                                             \
        if (GHL) { SS_TO_ND(T, G, GHL + (b * D + d0) * N, nd, N) }                      \
        else memset(G, 0, s * sizeof(T));                                               \
        memset(dAt, 0, s * sizeof(T));                                                  \
        for (int64_t c = nck - 1; c >= 0; c--) {                                        \
            int64_t t0 = c * K, t1 = t0 + K < L ? t0 + K : L;                           \
            SS_TO_ND(T, hbuf, CKI + ((b * nck + c) * D + d0) * N, nd, N)                \
            for (int64_t t = t0; t < t1; t++)                                           \
                SS_STEP(T, EXP, hbuf + (t - t0 + 1) * s, hbuf + (t - t0) * s, abuf + (t - t0) * s, t) \
            for (int64_t t = t1 - 1; t >= t0; t--) {                                    \
                int64_t i0 = (b * L + t) * D + d0;                                      \
                const T *restrict dtp = DT + i0, *restrict up = U + i0, *restrict gyp = GY + i0; \
                const T *restrict Bt = BM + (b * L + t) * N, *restrict Ct = CM + (b * L + t) * N; \
                const T *hprev = hbuf + (t - t0) * s, *hcur = hprev + s, *ap = abuf + (t - t0) * s; \
                T *restrict dBt = DB + ((blk * B + b) * L + t) * N, *restrict dCt = DC + ((blk * B + b) * L + t) * N; \
                _Pragma("omp simd")                                                     \
                for (int64_t d = 0; d < nd; d++) { bu[d] = dtp[d] * up[d]; sbg[d] = 0; sdt[d] = 0; } \
                for (int64_t n = 0; n < N; n++) {                                       \
                    T bn = Bt[n], cn = Ct[n], accB = 0, accC = 0;                       \
                    const T *restrict An = At + n * nd, *restrict an = ap + n * nd;     \
                    const T *restrict hp = hprev + n * nd, *restrict hc = hcur + n * nd; \
                    T *restrict Gn = G + n * nd, *restrict dAn = dAt + n * nd;          \
                    _Pragma("omp simd reduction(+:accB,accC)")                          \
                    for (int64_t d = 0; d < nd; d++) {                                  \
                        T g = Gn[d] + cn * gyp[d];                                      \
                        T ga = g * hp[d] * an[d];                                       \
                        accC += gyp[d] * hc[d];                                         \
                        accB += g * bu[d];                                              \
                        dAn[d] += ga * dtp[d];                                          \
                        sdt[d] += ga * An[d];                                           \
                        sbg[d] += bn * g;                                               \
                        Gn[d] = an[d] * g;                                              \
                    }                                                                   \
                    dBt[n] = accB;                                                      \
                    dCt[n] = accC;                                                      \
                }                                                                       \
                _Pragma("omp simd")                                                     \
                for (int64_t d = 0; d < nd; d++) {                                      \
                    DDT[i0 + d] = sdt[d] + up[d] * sbg[d];                              \
                    DU[i0 + d] = dtp[d] * sbg[d];                                       \
                }                                                                       \
            }                                                                           \
        }                                                                               \
        SS_FROM_ND(T, DA + (b * D + d0) * N, dAt, nd, N)                                \
        if (DH0) { SS_FROM_ND(T, DH0 + (b * D + d0) * N, G, nd, N) }                    \
    }                                                                                   \
done:                                                                                   \
    free(At); free(G); free(dAt); free(hbuf); free(abuf); free(bu); free(sbg); free(sdt);

static void *ss_fwd_f(void *p) { sjob_t *j = p; SS_FWD(float, vexpf) return 0; }
static void *ss_fwd_d(void *p) { sjob_t *j = p; SS_FWD(double, exp) return 0; }
static void *ss_bwd_f(void *p) { sjob_t *j = p; SS_BWD(float, vexpf) return 0; }
static void *ss_bwd_d(void *p) { sjob_t *j = p; SS_BWD(double, exp) return 0; }

/* kind: 0 forward f32, 1 forward f64, 2 backward f32, 3 backward f64. Returns 0 on success. */
int zoo_selective_scan(int kind, const void *u, const void *dt, const void *A, const void *Bm,
                       const void *Cm, const void *R, const void *h0, const void *gy, const void *ghl, const void *ck_in,
                       void *y, void *hl, void *ck, void *du, void *ddt, void *dA, void *dB, void *dC,
                       void *dh0, int64_t B, int64_t L, int64_t D, int64_t N, int64_t K, int64_t block,
                       int threads) {
    void *(*fn)(void *) = kind == 0 ? ss_fwd_f : kind == 1 ? ss_fwd_d : kind == 2 ? ss_bwd_f : ss_bwd_d;
    int64_t items = B * ((D + block - 1) / block);
    threads = zoo_threads(threads, items);
    sjob_t jobs[64];
    for (int k = 0; k < threads; k++) {
        sjob_t j = {u, dt, A, Bm, Cm, h0, gy, ghl, ck_in, R, y, hl, ck, du, ddt, dA, dB, dC, dh0,
                    B, L, D, N, K, block, (int)(items * k / threads), (int)(items * (k + 1) / threads), 0};
        jobs[k] = j;
    }
    zoo_run_jobs(fn, jobs, sizeof jobs[0], threads);
    int err = 0;
    for (int k = 0; k < threads; k++) err |= jobs[k].err;
    return err;
}
