"""C source of the fused selective scan (Mamba-1), compiled with the CPU scan in cpu_kernel.py.

One pass over time per (batch row, channel block); the (D, N) state of a block
stays in cache and the (batch, T, D, N) decays and inputs are never stored.
The backward recomputes the states chunk by chunk from checkpoints the forward
saved every K steps, then runs the reverse recurrence over the chunk.

    h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t        y_t = C_t . h_t

Layouts (contiguous): u, dt, y, gy, du, ddt (B, L, D); Bm, Cm (B, L, N);
A (D, N); h0, hl, ghl, dh0 (B, D, N); ck (B, ceil(L/K), D, N);
dA partial (B, D, N); dB, dC partial (channel blocks, B, L, N).
"""

SOURCE = r"""
#include <stdlib.h>

/* vexpf (float exp that vectorises) comes from cpu_vmath_src.py, placed first. */

typedef struct {
    const void *u, *dt, *A, *Bm, *Cm, *h0, *gy, *ghl, *ck_in;
    void *y, *hl, *ck, *du, *ddt, *dA, *dB, *dC, *dh0;
    int64_t B, L, D, N, K, block;
    int begin, end, err;
} sjob_t;

/* One time step of the state for channels [d0, d0 + nd): h = exp(dt A) h + dt u B. */
#define SS_STEP(T, EXP, h, t)                                                          \
    for (int64_t d = 0; d < nd; d++) {                                                  \
        T dtv = DT[(b * L + t) * D + d0 + d], bu = dtv * U[(b * L + t) * D + d0 + d];  \
        const T *restrict Ad = AA + (d0 + d) * N;                                       \
        const T *restrict Bt = BM + (b * L + t) * N;                                    \
        T *restrict hd = (h) + d * N;                                                   \
        _Pragma("omp simd")                                                             \
        for (int64_t n = 0; n < N; n++) hd[n] = EXP(dtv * Ad[n]) * hd[n] + bu * Bt[n]; \
    }

#define SS_FWD(T, EXP)                                                                  \
    const T *U = j->u, *DT = j->dt, *AA = j->A, *BM = j->Bm, *CM = j->Cm, *H0 = j->h0;  \
    T *Y = j->y, *HL = j->hl, *CK = j->ck;                                              \
    int64_t B = j->B, L = j->L, D = j->D, N = j->N, K = j->K, nck = (L + K - 1) / K;    \
    int64_t nblk = (D + j->block - 1) / j->block;                                       \
    (void)B;                                                                            \
    for (int item = j->begin; item < j->end; item++) {                                  \
        int64_t b = item / nblk, d0 = (item % nblk) * j->block;                         \
        int64_t nd = D - d0 < j->block ? D - d0 : j->block;                             \
        T *h = HL + (b * D + d0) * N;                                                   \
        if (H0) memcpy(h, H0 + (b * D + d0) * N, nd * N * sizeof(T));                   \
        else memset(h, 0, nd * N * sizeof(T));                                          \
        for (int64_t t = 0; t < L; t++) {                                               \
            if (t % K == 0 && CK)                                                       \
                memcpy(CK + ((b * nck + t / K) * D + d0) * N, h, nd * N * sizeof(T));   \
            SS_STEP(T, EXP, h, t)                                                       \
            const T *restrict Ct = CM + (b * L + t) * N;                                \
            for (int64_t d = 0; d < nd; d++) {                                          \
                const T *restrict hd = h + d * N;                                       \
                T acc = 0;                                                              \
                _Pragma("omp simd reduction(+:acc)")                                    \
                for (int64_t n = 0; n < N; n++) acc += Ct[n] * hd[n];                   \
                Y[(b * L + t) * D + d0 + d] = acc;                                      \
            }                                                                           \
        }                                                                               \
    }

/* Reverse pass. G holds dL/dh_t flowing in from the future (a_{t+1} g_{t+1});
   hbuf[0] is the state before the chunk, hbuf[s + 1] the state after its step s. */
#define SS_BWD(T, EXP)                                                                  \
    const T *U = j->u, *DT = j->dt, *AA = j->A, *BM = j->Bm, *CM = j->Cm;               \
    const T *GY = j->gy, *GHL = j->ghl, *CKI = j->ck_in;                                \
    T *DU = j->du, *DDT = j->ddt, *DA = j->dA, *DB = j->dB, *DC = j->dC, *DH0 = j->dh0;  \
    int64_t B = j->B, L = j->L, D = j->D, N = j->N, K = j->K, nck = (L + K - 1) / K;    \
    int64_t nblk = (D + j->block - 1) / j->block;                                       \
    T *G = malloc(j->block * N * sizeof(T));                                            \
    T *hbuf = malloc((K + 1) * j->block * N * sizeof(T));                               \
    T *accB = malloc(N * sizeof(T)), *accC = malloc(N * sizeof(T));                     \
    if (!G || !hbuf || !accB || !accC) { j->err = 1; goto done; }                       \
    for (int item = j->begin; item < j->end; item++) {                                  \
        int64_t b = item / nblk, blk = item % nblk, d0 = blk * j->block;                \
        int64_t nd = D - d0 < j->block ? D - d0 : j->block;                             \
        if (GHL) memcpy(G, GHL + (b * D + d0) * N, nd * N * sizeof(T));                 \
        else memset(G, 0, nd * N * sizeof(T));                                          \
        T *dAb = DA + (b * D + d0) * N;                                                 \
        memset(dAb, 0, nd * N * sizeof(T));                                             \
        for (int64_t c = nck - 1; c >= 0; c--) {                                        \
            int64_t t0 = c * K, t1 = t0 + K < L ? t0 + K : L;                           \
            memcpy(hbuf, CKI + ((b * nck + c) * D + d0) * N, nd * N * sizeof(T));       \
            for (int64_t t = t0; t < t1; t++) {                                         \
                T *hn = hbuf + (t - t0 + 1) * nd * N;                                   \
                memcpy(hn, hn - nd * N, nd * N * sizeof(T));                            \
                SS_STEP(T, EXP, hn, t)                                                  \
            }                                                                           \
            for (int64_t t = t1 - 1; t >= t0; t--) {                                    \
                const T *restrict Bt = BM + (b * L + t) * N, *restrict Ct = CM + (b * L + t) * N; \
                const T *hcur = hbuf + (t - t0 + 1) * nd * N, *hprev = hcur - nd * N;   \
                memset(accB, 0, N * sizeof(T));                                         \
                memset(accC, 0, N * sizeof(T));                                         \
                for (int64_t d = 0; d < nd; d++) {                                      \
                    int64_t i = (b * L + t) * D + d0 + d;                               \
                    T dtv = DT[i], uv = U[i], gyv = GY[i], bu = dtv * uv, sbg = 0, sdt = 0; \
                    const T *restrict Ad = AA + (d0 + d) * N;                           \
                    const T *restrict hc = hcur + d * N, *restrict hp = hprev + d * N;  \
                    T *restrict Gd = G + d * N, *restrict dAd = dAb + d * N;            \
                    T *restrict aB = accB, *restrict aC = accC;                         \
                    _Pragma("omp simd reduction(+:sbg,sdt)")                            \
                    for (int64_t n = 0; n < N; n++) {                                   \
                        T a = EXP(dtv * Ad[n]);                                         \
                        T g = Gd[n] + Ct[n] * gyv;                                      \
                        T ga = g * hp[n] * a;                                           \
                        aC[n] += gyv * hc[n];                                           \
                        aB[n] += g * bu;                                                \
                        dAd[n] += ga * dtv;                                             \
                        sdt += ga * Ad[n];                                              \
                        sbg += Bt[n] * g;                                               \
                        Gd[n] = a * g;                                                  \
                    }                                                                   \
                    DDT[i] = sdt + uv * sbg;                                            \
                    DU[i] = dtv * sbg;                                                  \
                }                                                                       \
                memcpy(DB + ((blk * B + b) * L + t) * N, accB, N * sizeof(T));          \
                memcpy(DC + ((blk * B + b) * L + t) * N, accC, N * sizeof(T));          \
            }                                                                           \
        }                                                                               \
        if (DH0) memcpy(DH0 + (b * D + d0) * N, G, nd * N * sizeof(T));                \
    }                                                                                   \
done:                                                                                   \
    free(G); free(hbuf); free(accB); free(accC);

static void *ss_fwd_f(void *p) { sjob_t *j = p; SS_FWD(float, vexpf) return 0; }
static void *ss_fwd_d(void *p) { sjob_t *j = p; SS_FWD(double, exp) return 0; }
static void *ss_bwd_f(void *p) { sjob_t *j = p; SS_BWD(float, vexpf) return 0; }
static void *ss_bwd_d(void *p) { sjob_t *j = p; SS_BWD(double, exp) return 0; }

/* kind: 0 forward f32, 1 forward f64, 2 backward f32, 3 backward f64. Returns 0 on success. */
int zoo_selective_scan(int kind, const void *u, const void *dt, const void *A, const void *Bm,
                       const void *Cm, const void *h0, const void *gy, const void *ghl, const void *ck_in,
                       void *y, void *hl, void *ck, void *du, void *ddt, void *dA, void *dB, void *dC,
                       void *dh0, int64_t B, int64_t L, int64_t D, int64_t N, int64_t K, int64_t block,
                       int threads) {
    void *(*fn)(void *) = kind == 0 ? ss_fwd_f : kind == 1 ? ss_fwd_d : kind == 2 ? ss_bwd_f : ss_bwd_d;
    int64_t items = B * ((D + block - 1) / block);
    threads = zoo_threads(threads, items);
    sjob_t jobs[64];
    for (int k = 0; k < threads; k++) {
        sjob_t j = {u, dt, A, Bm, Cm, h0, gy, ghl, ck_in, y, hl, ck, du, ddt, dA, dB, dC, dh0,
                    B, L, D, N, K, block, (int)(items * k / threads), (int)(items * (k + 1) / threads), 0};
        jobs[k] = j;
    }
    zoo_run_jobs(fn, jobs, sizeof jobs[0], threads);
    int err = 0;
    for (int k = 0; k < threads; k++) err |= jobs[k].err;
    return err;
}
"""
