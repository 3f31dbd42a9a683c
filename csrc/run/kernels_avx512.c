/*
 * kernels_avx512.c — the kernel set for AVX-512 (F, BW, VL, VNNI) CPUs:
 * Ice Lake and later Xeons, AMD Zen 4 and later.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma (see
 * CMakeLists.txt) and only called after kernels.c has checked the CPU.
 *
 * The matmuls read weights packed in panels of 16 rows (pack.c; see "panel
 * matmuls" below): fp32 with fused multiply-adds, Q8 with VNNI (u8 x s8)
 * dot products, exact, then runq's float accumulation over groups in
 * runq's order. A Q8_0 model whose group size is not a multiple of 4 stays
 * row-major: its matmul takes rows in blocks of 16, one accumulator each,
 * and one reduction tree per block (reduce16_epi32). fp32 models always
 * read panels here (the row-major fp32 product in the table is avx2's).
 * Quantization is exact too. The fp32 models' attention reads the key
 * cache a block of 16 positions (one register of scores) at a time. The
 * exact softmax, SwiGLU and attention (Q8_0 models) vectorize libm's expf
 * bit for bit; rmsnorm and the fast swiglu are the avx2 set's.
 */
#include "internal.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

static inline __mmask16 tail_mask16(int n) { return (__mmask16)((1u << n) - 1u); }

/* Matrix rows go in blocks of 16, one accumulator each; reduce16 sums each
 * accumulator's lanes into one lane of the result. Its tree (128-bit
 * blocks, then pairs of lanes) puts slot k's sum in lane slot_row[k], so
 * slot k holds row slot_row[k] and lane r comes out as row r. Every slot
 * is summed in the same order, whatever the others hold. */
static const int slot_row[16] = {0, 4, 8, 12, 2, 6, 10, 14, 1, 5, 9, 13, 3, 7, 11, 15};

static inline __m512i reduce16_epi32(const __m512i v[16]) {
    __m512i a[8], b[4], c[2];
    for (int i = 0; i < 8; i++) {
        a[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0x44),
                                _mm512_shuffle_i32x4(v[2 * i], v[2 * i + 1], 0xEE));
    }
    for (int i = 0; i < 4; i++) {
        b[i] = _mm512_add_epi32(_mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], 0x88),
                                _mm512_shuffle_i32x4(a[2 * i], a[2 * i + 1], 0xDD));
    }
    for (int i = 0; i < 2; i++) {
        c[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(b[2 * i], b[2 * i + 1]),
                                _mm512_unpackhi_epi64(b[2 * i], b[2 * i + 1]));
    }
    __m512i x = _mm512_unpacklo_epi32(c[0], c[1]), y = _mm512_unpackhi_epi32(c[0], c[1]);
    return _mm512_add_epi32(_mm512_unpacklo_epi64(x, y), _mm512_unpackhi_epi64(x, y));
}

/* Row pointers for a block of `rows` (<= 16) rows from `first`, in slot
 * order; a short block repeats its first row, whose extra results are
 * dropped. */
#define BLOCK_ROWS(ptr, base, first, rows, n)                                         \
    for (int k = 0; k < 16; k++) {                                                    \
        int r_ = slot_row[k];                                                          \
        ptr[k] = (base) + (size_t)((first) + (r_ < (rows) ? r_ : 0)) * (size_t)(n); \
    }

/* -------------------------------------------------------------- matmul */

static void matmul_q8(float *out, const int8_t *x_q, const float *x_s, int nt, const int8_t *wq,
                      const float *ws, const int32_t *row_sums, int n, int d, int gs, int i0,
                      int i1) {
    int ng = n / gs; /* whole input groups; a tail of n % gs inputs is ignored */
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    for (int i = i0; i < i1; i += 16) {
        int rows = i1 - i < 16 ? i1 - i : 16;
        __mmask16 keep = tail_mask16(rows);
        const int8_t *wr[16];
        BLOCK_ROWS(wr, wq, i, rows, n);
        /* group g of row r starts at flat index r*n + g*gs: its scale is
         * ws[(r*n)/gs + g] (a group may straddle two rows) */
        const __m512i row = _mm512_mask_add_epi32(_mm512_set1_epi32(i), keep, _mm512_set1_epi32(i),
                                                  _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                                    10, 11, 12, 13, 14, 15));
        __m512i scale_index;
        if (n % gs == 0) {
            scale_index = _mm512_mullo_epi32(row, _mm512_set1_epi32(ng));
        } else {
            int first[16];
            _mm512_storeu_si512(first, row);
            for (int r = 0; r < 16; r++) first[r] = (int)((size_t)first[r] * (size_t)n / (size_t)gs);
            scale_index = _mm512_loadu_si512(first);
        }
        for (int t = 0; t < nt; t++) {
            const int8_t *xq = x_q + (size_t)t * n;
            const float *xs = x_s + (size_t)t * ng;
            __m512 val = _mm512_setzero_ps();
            for (int g = 0; g < ng; g++) {
                size_t j = (size_t)g * gs;
                __m512i acc[16];
                for (int k = 0; k < 16; k++) acc[k] = _mm512_setzero_si512();
                for (int c = 0; c < gs; c += 64) {
                    __mmask64 m = gs - c >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (gs - c)) - 1);
                    /* x + 128 as unsigned; masked-off lanes meet w = 0 and add nothing */
                    __m512i xu = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, xq + j + c), bias);
                    for (int k = 0; k < 16; k++) {
                        acc[k] = _mm512_dpbusd_epi32(acc[k], xu, _mm512_maskz_loadu_epi8(m, wr[k] + j + c));
                    }
                }
                /* (x + 128) . w - 128 * sum(w) = x . w, exactly */
                __m512i sums = _mm512_maskz_loadu_epi32(keep, row_sums + (size_t)g * d + i);
                __m512i dot = _mm512_sub_epi32(reduce16_epi32(acc), _mm512_slli_epi32(sums, 7));
                __m512 scale = _mm512_i32gather_ps(_mm512_add_epi32(scale_index, _mm512_set1_epi32(g)),
                                                   ws, 4);
                /* runq's order, lane by lane: ((float)ival * w_scale) * x_scale */
                val = _mm512_add_ps(val, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), scale),
                                                       _mm512_set1_ps(xs[g])));
            }
            _mm512_mask_storeu_ps(out + (size_t)t * d + i, keep, val);
        }
    }
}

/* ------------------------------------------------------ panel matmuls
 * Weights packed by pack.c: a panel's 16 rows are the 16 lanes of a
 * vector, so each input element is one broadcast times one weight load for
 * every row of the panel, and no output needs a horizontal sum. The panels
 * of a row range are one contiguous stream. Several tokens share each
 * weight load (T of them at a time, T a constant the compiler unrolls).
 *
 * fp32: each output is one chain of fused multiply-adds over the columns in
 * order (run.c's order, with FMA): the same operations for every number of
 * tokens and panels per tile and every row range (batch invariance),
 * within 1e-4 of scalar.
 * Q8: per group an exact int32 dot product ((w + 128) . x - 128 sum(x)),
 * then runq's val += ((float)dot * w_scale) * x_scale, groups in order:
 * bit-identical to scalar. */

/* Lanes lo..hi-1 of a panel. */
static inline __mmask16 lane_range(int lo, int hi) {
    return (__mmask16)(((1u << hi) - 1u) & ~((1u << lo) - 1u));
}

/* How far ahead of the current column a decode streams its panels in, in
 * bytes: fp32 reads four panels at once (four streams), Q8_0 one. */
#ifndef TS_Q8_PREFETCH
#define TS_Q8_PREFETCH 8192
#endif
/* Matrices smaller than this (tok105's are 13-45 KB) are read without the
 * decode's software prefetch: they stay in the cache, where the prefetches
 * are pure cost (tok105 Q8_0 decode: about 7%). */
#ifndef TS_Q8_PREFETCH_MIN_BYTES
#define TS_Q8_PREFETCH_MIN_BYTES 65536
#endif
#ifndef TS_PANEL_PREFETCH
#define TS_PANEL_PREFETCH 1024
#endif

/* Batches and prefill: the first token tile of a panel group reads the
 * panels from memory, the later tiles from the cache; while those run, the
 * next group's panels are prefetched into L2, so that its first tile does
 * not wait on memory either (a 32-token batch re-reads every weight each
 * step). `left` cache lines from `at`, `each` per tile after the first. */
typedef struct next_panels {
    const char *at;
    int left, each;
} next_panels;

/* How many tiles a loop of tiles of `widest` tokens, then 4, 2 and 1, takes
 * for nt tokens. */
static inline int tile_count(int nt, int widest) {
    int r = nt % widest;
    return nt / widest + (r >= 4) + (r % 4 >= 2) + (r % 2);
}

static inline next_panels next_panels_start(const void *at, int lines, int tiles) {
    next_panels np = {(const char *)at, tiles > 1 ? lines : 0, 0};
    np.each = tiles > 1 ? (np.left + tiles - 2) / (tiles - 1) : 0;
    return np;
}

/* The share of tile number `tile` (none for the first): its lines, from *at. */
static inline int next_panels_take(next_panels *np, int tile, const char **at) {
    int lines = tile > 0 ? (np->each < np->left ? np->each : np->left) : 0;
    *at = np->at;
    if (lines == 0) return 0; /* np->at may be NULL (nothing next) */
    np->at += (size_t)lines * 64;
    np->left -= lines;
    return lines;
}

/* Up to `count` of a tile's *lines lines from *at: one loop iteration's part. */
static inline void prefetch_part(const char **at, int *lines, int count) {
    for (int k = 0; k < count && *lines > 0; k++, (*lines)--, *at += 64) _mm_prefetch(*at, _MM_HINT_T1);
}

/* P consecutive panels times T tokens: P * T accumulators, one per
 * output, each a single chain of fused multiply-adds over the columns in
 * order. Per column, P weight loads and T broadcasts feed P * T FMAs, so
 * wide tiles (prefill, batches) are bound by the FMA units rather than by
 * loads; a decode (T = 1) keeps P chains in flight. keep[p]: the lanes of
 * panel p to store. */
static inline __attribute__((always_inline)) void tile_f32(float *out, int d, const float *x, int n,
                                                           const float *w, const __mmask16 *keep,
                                                           const char *pf, int pf_lines,
                                                           const int P, const int T) {
    const size_t stride = (size_t)n * 16; /* one panel */
    __m512 acc[4][6];
    for (int p = 0; p < P; p++) {
        for (int t = 0; t < T; t++) acc[p][t] = _mm512_setzero_ps();
    }
    /* pf_lines cache lines from pf (the next panels), spread over the columns */
    const int pf_per_quad = pf_lines > 0 ? (pf_lines + n / 4 - 1) / (n / 4 > 0 ? n / 4 : 1) : 0;
    int j = 0;
    for (; j + 4 <= n; j += 4) {
        if (T == 1) {
            /* one line of each panel a column; stream the next ones in */
            for (int p = 0; p < P; p++) {
                const char *ahead = (const char *)(w + p * stride + (size_t)j * 16) + TS_PANEL_PREFETCH;
                for (int c = 0; c < 4; c++) _mm_prefetch(ahead + 64 * c, _MM_HINT_T0);
            }
        }
        prefetch_part(&pf, &pf_lines, pf_per_quad);
        for (int c = 0; c < 4; c++) {
            __m512 wv[4];
            for (int p = 0; p < P; p++) wv[p] = _mm512_load_ps(w + p * stride + (size_t)(j + c) * 16);
            for (int t = 0; t < T; t++) {
                __m512 xv = _mm512_set1_ps(x[(size_t)t * n + j + c]);
                for (int p = 0; p < P; p++) acc[p][t] = _mm512_fmadd_ps(xv, wv[p], acc[p][t]);
            }
        }
    }
    for (; j < n; j++) {
        __m512 wv[4];
        for (int p = 0; p < P; p++) wv[p] = _mm512_load_ps(w + p * stride + (size_t)j * 16);
        for (int t = 0; t < T; t++) {
            __m512 xv = _mm512_set1_ps(x[(size_t)t * n + j]);
            for (int p = 0; p < P; p++) acc[p][t] = _mm512_fmadd_ps(xv, wv[p], acc[p][t]);
        }
    }
    for (int p = 0; p < P; p++) {
        for (int t = 0; t < T; t++) {
            _mm512_mask_storeu_ps(out + (size_t)t * d + (size_t)p * 16, keep[p], acc[p][t]);
        }
    }
}

/* Tokens of one group of P panels, T at a time, prefetching what comes
 * next (the next group, or the next call's first) under the later tiles
 * (see next_panels). */
static inline __attribute__((always_inline)) void panels_f32(float *out, int d, const float *x,
                                                             int nt, int n, const float *w,
                                                             const __mmask16 *keep, const int P,
                                                             ts_panels_next next) {
    next_panels ahead = next_panels_start(next.at, next.lines, tile_count(nt, 6));
    int tile = 0;
#define TS_F32_TILE(T)                                                                        \
    do {                                                                                      \
        const char *pf;                                                                       \
        int lines = next_panels_take(&ahead, tile++, &pf);                                    \
        tile_f32(out + (size_t)t * d, d, x + (size_t)t * n, n, w, keep, pf, lines, P, T);     \
    } while (0)
    int t = 0;
    for (; t + 6 <= nt; t += 6) TS_F32_TILE(6);
    if (nt - t >= 4) {
        TS_F32_TILE(4);
        t += 4;
    }
    if (nt - t >= 2) {
        TS_F32_TILE(2);
        t += 2;
    }
    if (t < nt) TS_F32_TILE(1);
#undef TS_F32_TILE
}

static void matmul_f32_panels(float *out, const float *x, int nt, const float *wp, int n, int d,
                              int i0, int i1, ts_panels_next after) {
    int p0 = i0 / 16, p1 = (i1 + 15) / 16;
    for (int p = p0; p < p1;) {
        /* four panels at a time, but three first where four would leave a
         * lone panel: a one-panel tile loads a weight vector and T
         * broadcasts for its T FMAs, so loads bound it. A thread's share of
         * 288 rows (stories15M, 2 threads) is 9 panels: 3 + 4 + 2, not
         * 4 + 4 + 1 (its 256-token prefill: 24.5-25.0k -> 24.9-25.5k tok/s) */
        int left = p1 - p;
        int P = left >= 4 ? (left % 4 == 1 ? 3 : 4) : left;
        __mmask16 keep[4];
        for (int k = 0; k < P; k++) {
            int r0 = (p + k) * 16;
            keep[k] = lane_range(i0 > r0 ? i0 - r0 : 0, i1 - r0 < 16 ? i1 - r0 : 16);
        }
        /* a masked store writes lanes lo..hi-1 of each panel only */
        float *o = out + (size_t)p * 16;
        const float *w = wp + (size_t)p * (size_t)n * 16;
        /* a panel is n lines of 16 floats */
        int rest = p1 - p - P;
        ts_panels_next next = {w + (size_t)P * n * 16, (rest >= 4 ? 4 : rest) * n};
        if (rest == 0) next = after;
        if (P == 4) {
            panels_f32(o, d, x, nt, n, w, keep, 4, next);
        } else if (P == 3) {
            panels_f32(o, d, x, nt, n, w, keep, 3, next);
        } else if (P == 2) {
            panels_f32(o, d, x, nt, n, w, keep, 2, next);
        } else {
            panels_f32(o, d, x, nt, n, w, keep, 1, next);
        }
        p += P;
    }
}

static inline __attribute__((always_inline)) void panel_q8(float *out, int d, const int8_t *x,
                                                           const float *xs, const int32_t *xsum,
                                                           int n, const uint8_t *w,
                                                           const float *s, int gs,
                                                           __mmask16 keep, const char *pf,
                                                           int pf_lines, int stream, const int T) {
    int ng = n / gs, quads = gs / 4;
    __m512 val[8];
    for (int t = 0; t < T; t++) val[t] = _mm512_setzero_ps();
    /* pf_lines cache lines from pf (the next panel), spread over the groups */
    /* (a row shorter than a group has no groups: nothing to spread over) */
    const int pf_per_group = pf_lines > 0 && ng > 0 ? (pf_lines + ng - 1) / ng : 0;
    for (int g = 0; g < ng; g++) {
        prefetch_part(&pf, &pf_lines, pf_per_group);
        const uint8_t *wg = w + (size_t)g * quads * 64;
        const int8_t *xg = x + (size_t)g * gs;
        /* T == 1: two chains (even and odd quads; integer sums in any order are exact) */
        __m512i acc[8], acc1 = _mm512_setzero_si512();
        for (int t = 0; t < T; t++) acc[t] = _mm512_setzero_si512();
        int c = 0;
        if (T == 1) {
            for (; c + 2 <= quads; c += 2) {
                /* decode reads every weight once, as one stream: keep it
                 * far enough ahead to cover a trip to memory (not for small
                 * matrices, which stay in the cache and only pay for it) */
                if (stream) {
                    _mm_prefetch((const char *)(wg + (size_t)c * 64) + TS_Q8_PREFETCH, _MM_HINT_T0);
                    _mm_prefetch((const char *)(wg + (size_t)c * 64) + TS_Q8_PREFETCH + 64,
                                 _MM_HINT_T0);
                }
                int32_t xa, xb;
                memcpy(&xa, xg + 4 * c, 4);
                memcpy(&xb, xg + 4 * c + 4, 4);
                acc[0] = _mm512_dpbusd_epi32(acc[0], _mm512_load_si512(wg + (size_t)c * 64),
                                             _mm512_set1_epi32(xa));
                acc1 = _mm512_dpbusd_epi32(acc1, _mm512_load_si512(wg + (size_t)c * 64 + 64),
                                           _mm512_set1_epi32(xb));
            }
        }
        for (; c < quads; c++) {
            __m512i wv = _mm512_load_si512(wg + (size_t)c * 64);
            for (int t = 0; t < T; t++) {
                int32_t xv;
                memcpy(&xv, xg + (size_t)t * n + 4 * c, 4);
                acc[t] = _mm512_dpbusd_epi32(acc[t], wv, _mm512_set1_epi32(xv));
            }
        }
        if (T == 1) acc[0] = _mm512_add_epi32(acc[0], acc1);
        __m512 sc = _mm512_load_ps(s + (size_t)g * 16);
        for (int t = 0; t < T; t++) {
            /* (w + 128) . x - 128 * sum(x) = w . x, exactly */
            __m512i dot = _mm512_sub_epi32(acc[t], _mm512_set1_epi32(xsum[(size_t)t * ng + g] * 128));
            /* runq's order, lane by lane: ((float)ival * w_scale) * x_scale */
            val[t] = _mm512_add_ps(val[t], _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(dot), sc),
                                                         _mm512_set1_ps(xs[(size_t)t * ng + g])));
        }
    }
    for (int t = 0; t < T; t++) _mm512_mask_storeu_ps(out + (size_t)t * d, keep, val[t]);
}

static void matmul_q8_panels(float *out, const int8_t *xq, const float *xs, const int32_t *xsum,
                             int nt, const uint8_t *wp, const float *sp, int n, int d, int gs,
                             int i0, int i1, ts_panels_next after) {
    size_t ng = (size_t)(n / gs);
    const int stream = (size_t)n * (size_t)d >= TS_Q8_PREFETCH_MIN_BYTES;
    for (int p = i0 / 16; p * 16 < i1; p++) {
        int r0 = p * 16;
        int lo = i0 > r0 ? i0 - r0 : 0, hi = i1 - r0 < 16 ? i1 - r0 : 16;
        __mmask16 keep = lane_range(lo, hi);
        const uint8_t *w = wp + (size_t)p * ng * (size_t)gs * 16;
        const float *s = sp + (size_t)p * ng * 16;
        float *o = out + r0;
        /* prefetch the next panel's weights (n * 16 bytes: n / 4 lines; its
         * scales are few), or the next call's, while the tiles after the
         * first run */
        ts_panels_next next = {w + ng * (size_t)gs * 16, n / 4};
        if ((p + 1) * 16 >= i1) next = after;
        next_panels ahead = next_panels_start(next.at, next.lines, tile_count(nt, 8));
        int t = 0, tile = 0;
#define TS_Q8_TILE(T)                                                                          \
    do {                                                                                       \
        const char *pf;                                                                        \
        int lines = next_panels_take(&ahead, tile++, &pf);                                     \
        panel_q8(o + (size_t)t * d, d, xq + (size_t)t * n, xs + (size_t)t * ng,                \
                 xsum + (size_t)t * ng, n, w, s, gs, keep, pf, lines, stream, T);              \
    } while (0)
        for (; t + 8 <= nt; t += 8) TS_Q8_TILE(8);
        for (; t + 4 <= nt; t += 4) TS_Q8_TILE(4);
        for (; t + 2 <= nt; t += 2) TS_Q8_TILE(2);
        for (; t < nt; t++) TS_Q8_TILE(1);
#undef TS_Q8_TILE
    }
}

/* ------------------------------------------------------------ the rest */

static void quantize_q8(int8_t *q, float *s, const float *x, int n, int gs) {
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * gs;
        int8_t *qg = q + (size_t)g * gs;
        __m512 vmax = _mm512_setzero_ps();
        for (int k = 0; k < gs; k += 16) {
            __mmask16 m = gs - k >= 16 ? 0xFFFF : tail_mask16(gs - k);
            /* abs first: maxps returns its second operand for a NaN, so NaNs are skipped */
            vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, xg + k)), vmax);
        }
        float scale = _mm512_reduce_max_ps(vmax) / 127.0f;
        s[g] = scale;
        if (scale == 0.0f) {
            memset(qg, 0, (size_t)gs);
            continue;
        }
        const __m512 vs = _mm512_set1_ps(scale), half = _mm512_set1_ps(0.5f);
        const __m512 one = _mm512_set1_ps(1.0f), lim = _mm512_set1_ps(127.0f);
        for (int k = 0; k < gs; k += 16) {
            __mmask16 m = gs - k >= 16 ? 0xFFFF : tail_mask16(gs - k);
            __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, xg + k), vs);
            /* round half away from zero, exactly: trunc, then the exact fraction */
            __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m512 f = _mm512_sub_ps(v, t);
            t = _mm512_mask_add_ps(t, _mm512_cmp_ps_mask(f, half, _CMP_GE_OQ), t, one);
            t = _mm512_mask_sub_ps(t, _mm512_cmp_ps_mask(f, _mm512_sub_ps(_mm512_setzero_ps(), half),
                                                         _CMP_LE_OQ),
                                   t, one);
            t = _mm512_min_ps(_mm512_max_ps(t, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
            /* NaN (from a NaN input) quantizes to 0, as in the scalar set */
            t = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), t);
            _mm_mask_storeu_epi8(qg + k, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
        }
    }
}

/* e^x to about 2 ulp: x = k ln2 + r, |r| <= ln2/2, a degree-6 polynomial
 * for e^r, then a scale by 2^k. Returns 0 below -80 (e^-80 is 2e-35), so
 * that no product downstream turns denormal. */
static inline __m512 exp_ps(__m512 x) {
    __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-80.0f), _CMP_GE_OQ);
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_maskz_scalef_ps(keep, p, k);
}

/* One head's attention. A key block (TS_KEY_BLOCK = 16 positions) is one
 * register of scores: lane-parallel fused multiply-adds over the head, in
 * four accumulators (dimensions i mod 4) so consecutive adds do not wait on
 * each other. Lanes past n_pos become -inf, which the max ignores and
 * exp_ps turns into 0. The weighted sum of the values keeps four partial
 * sums per 16 dimensions and applies 1/sum once at the end. */
static void attention(float *out, float *att, const float *q, const float *keys,
                      const float *values, int n_pos, int head_size) {
    const __m512 scale = _mm512_set1_ps(sqrtf(head_size)), ninf = _mm512_set1_ps(-INFINITY);
    __m512 vmax = ninf;
    for (int t = 0; t < n_pos; t += TS_KEY_BLOCK) {
        const float *kb = keys + (size_t)t * head_size; /* t is a block's first position */
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        int i = 0;
        for (; i + 4 <= head_size; i += 4) {
            const float *k = kb + (size_t)i * TS_KEY_BLOCK;
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[i]), _mm512_loadu_ps(k), a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(q[i + 1]), _mm512_loadu_ps(k + 16), a1);
            a2 = _mm512_fmadd_ps(_mm512_set1_ps(q[i + 2]), _mm512_loadu_ps(k + 32), a2);
            a3 = _mm512_fmadd_ps(_mm512_set1_ps(q[i + 3]), _mm512_loadu_ps(k + 48), a3);
        }
        for (; i < head_size; i++) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(q[i]), _mm512_loadu_ps(kb + (size_t)i * TS_KEY_BLOCK), a0);
        }
        __m512 s = _mm512_div_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)), scale);
        if (n_pos - t < TS_KEY_BLOCK) s = _mm512_mask_mov_ps(ninf, tail_mask16(n_pos - t), s);
        _mm512_storeu_ps(att + t, s);
        vmax = _mm512_max_ps(vmax, s);
    }

    /* softmax over whole blocks (the -inf lanes give 0), unnormalized */
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(vmax));
    __m512 sum = _mm512_setzero_ps();
    for (int t = 0; t < n_pos; t += TS_KEY_BLOCK) {
        __m512 e = exp_ps(_mm512_sub_ps(_mm512_loadu_ps(att + t), mx));
        sum = _mm512_add_ps(sum, e);
        _mm512_storeu_ps(att + t, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));

    /* weighted sum of the values, 16 dimensions at a time */
    const size_t hs = (size_t)head_size;
    for (int c = 0; c < head_size; c += 16) {
        __mmask16 m = head_size - c >= 16 ? 0xFFFF : tail_mask16(head_size - c);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *v = values + c;
        int p = 0;
        for (; p + 4 <= n_pos; p += 4, v += 4 * hs) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(att[p]), _mm512_maskz_loadu_ps(m, v), a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(att[p + 1]), _mm512_maskz_loadu_ps(m, v + hs), a1);
            a2 = _mm512_fmadd_ps(_mm512_set1_ps(att[p + 2]), _mm512_maskz_loadu_ps(m, v + 2 * hs), a2);
            a3 = _mm512_fmadd_ps(_mm512_set1_ps(att[p + 3]), _mm512_maskz_loadu_ps(m, v + 3 * hs), a3);
        }
        for (; p < n_pos; p++, v += hs) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(att[p]), _mm512_maskz_loadu_ps(m, v), a0);
        }
        __m512 total = _mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3));
        _mm512_mask_storeu_ps(out + c, m, _mm512_mul_ps(total, inv));
    }
}

/* ------------------------------------------------- exact exponentials
 * libm's expf, 16 at a time, bit for bit. Each lane is computed in double
 * precision and rounded to float. libm's expf rounds a double with a
 * relative error below 1e-10 (at most 1/590 of a float's ulp; 0.502 ulp in
 * all), so whenever our value lies 1/256 ulp or farther from the midpoint
 * between two floats, both round to the same float (checked against glibc
 * over all 2^32 inputs). The lanes nearer a midpoint (about 0.8%), and
 * inputs in (-104, -87) or past 88 (results near or past the float range)
 * or NaN, are handed to expf itself; at or below -104 both give +0. So
 * sums of exponentials (softmax, the SiLU gate) keep the scalar set's bits
 * at a fraction of the cost. */

/* e^x = 2^(k/16) e^r with k = round(16 x / ln2) and |r| <= ln2/32: 2^(k/16)
 * is a 16-entry table's 2^(j/16) (j = k mod 16) with floor(k/16) added to
 * its exponent, e^r the Taylor series to r^5 (relative error below 2^-42,
 * against the 2^-32 the 1/256-ulp margin needs). Valid for |x| < 110. */
static inline __m512d exp_pd(__m512d x) {
    /* k + 1.5 * 2^52: k in the low bits, two's complement (the shift trick) */
    const __m512d shift = _mm512_set1_pd(0x1.8p52);
    __m512d kd = _mm512_fmadd_pd(x, _mm512_set1_pd(0x1.71547652b82fep+4), shift); /* 16/ln2 */
    const __m512i kbits = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    /* r = x - k ln2/16, ln2/16 in two parts (Cody and Waite): k times the
     * first, of 32 bits, is exact (|k| < 2^12) */
    __m512d r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(0x1.62e42feep-5), x);
    r = _mm512_fnmadd_pd(kd, _mm512_set1_pd(0x1.a39ef35793c76p-37), r);
    __m512d p = _mm512_set1_pd(1.0 / 120);
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 24));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0 / 6));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(0.5));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(1.0));
    /* 2^(j/16), j = 0..15, each the double nearest */
    const __m512d low8 = _mm512_setr_pd(0x1p+0, 0x1.0b5586cf9890fp+0, 0x1.172b83c7d517bp+0,
                                        0x1.2387a6e756238p+0, 0x1.306fe0a31b715p+0,
                                        0x1.3dea64c123422p+0, 0x1.4bfdad5362a27p+0,
                                        0x1.5ab07dd485429p+0);
    const __m512d high8 = _mm512_setr_pd(0x1.6a09e667f3bcdp+0, 0x1.7a11473eb0187p+0,
                                         0x1.8ace5422aa0dbp+0, 0x1.9c49182a3f090p+0,
                                         0x1.ae89f995ad3adp+0, 0x1.c199bdd85529cp+0,
                                         0x1.d5818dcfba487p+0, 0x1.ea4afa2a490dap+0);
    const __m512d t = _mm512_permutex2var_pd(low8, kbits, high8); /* uses kbits' low 4 bits */
    /* floor(k/16) into the exponent field: the bits above it fall off */
    const __m512i scale = _mm512_slli_epi64(_mm512_srli_epi64(kbits, 4), 52);
    return _mm512_castsi512_pd(_mm512_add_epi64(_mm512_castpd_si512(_mm512_mul_pd(p, t)), scale));
}

/* 8 lanes: their floats, and which lie within 1/256 ulp of a rounding
 * midpoint. A double keeps 29 bits below a float's last place; the
 * midpoint is 1 followed by zeros there. They are read in y's own binade,
 * so a value just below a power of two is judged on that binade's finer
 * grid, as its rounding is. */
static inline __m256 exp_half(__m256 x8, __mmask8 *near) {
    const __m512d y = exp_pd(_mm512_cvtps_pd(x8));
    const __m512i below = _mm512_and_si512(_mm512_castpd_si512(y), _mm512_set1_epi64((1 << 29) - 1));
    const __m512i off = _mm512_abs_epi64(_mm512_sub_epi64(below, _mm512_set1_epi64(1 << 28)));
    *near = _mm512_cmp_epi64_mask(off, _mm512_set1_epi64(1 << 21), _MM_CMPINT_LT);
    return _mm512_cvtpd_ps(y);
}

/* expf of 16 lanes: those in (-104, -87) or past 88 (results near or past
 * the float range), NaN, and those near a midpoint go to expf itself; at or
 * below -104 both give +0. */
static inline __m512 expf_exact(__m512 x) {
    const __mmask16 in_range = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ) &
                               _mm512_cmp_ps_mask(x, _mm512_set1_ps(88.0f), _CMP_LE_OQ);
    const __mmask16 zero = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_LE_OQ);
    const __m512 safe = _mm512_mask_mov_ps(_mm512_setzero_ps(), in_range, x);
    __mmask8 near_lo, near_hi;
    const __m256 lo = exp_half(_mm512_castps512_ps256(safe), &near_lo);
    const __m256 hi = exp_half(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(safe), 1)),
                               &near_hi);
    __m512 y = _mm512_maskz_mov_ps((__mmask16)~zero,
                                   _mm512_castpd_ps(_mm512_insertf64x4(
                                       _mm512_castps_pd(_mm512_castps256_ps512(lo)),
                                       _mm256_castps_pd(hi), 1)));
    const unsigned slow = (~in_range & ~zero) | ((near_lo | (unsigned)near_hi << 8) & in_range);
    /* lane by lane, in registers: no array on the stack, which ASan's
     * fake stack (detect_stack_use_after_return) would not align to 64 */
    for (unsigned m = slow & 0xffffu; m; m &= m - 1) {
        const int i = __builtin_ctz(m);
        const float xi = _mm512_cvtss_f32(_mm512_permutexvar_ps(_mm512_set1_epi32(i), x));
        y = _mm512_mask_mov_ps(y, (__mmask16)(1u << i), _mm512_set1_ps(expf(xi)));
    }
    return y;
}

/* ts_k_sum_unordered's test and sum, 16 floats at a time: q = x / ulp
 * must lie in [-0, 2^23) (an unsigned compare of its bits also rejects
 * negatives and NaNs), its fraction must not be one half, and the rounded
 * q are summed as integers. A lane sums at most 8 values (< 2^26) before
 * the lanes are added into a 64-bit total, so nothing wraps. */
static int sum_unordered(const float *x, int n, float *s) {
    float ulp, inv_ulp;
    int64_t start;
    if (!ts_k_binade(*s, &ulp, &inv_ulp, &start)) return 0;
    const __m512 inv = _mm512_set1_ps(inv_ulp), half = _mm512_set1_ps(0.5f);
    const __m512i limit = _mm512_set1_epi32(0x4b000000); /* the bits of 2^23 */
    int64_t steps = 0;
    for (int i = 0; i < n; i += 128) {
        __m512i acc = _mm512_setzero_si512();
        __mmask16 bad = 0;
        const int end = n - i < 128 ? n : i + 128;
        for (int j = i; j < end; j += 16) {
            const __mmask16 in = end - j >= 16 ? 0xFFFF : tail_mask16(end - j);
            const __m512 q = _mm512_mul_ps(_mm512_maskz_loadu_ps(in, x + j), inv);
            bad |= _mm512_cmp_epu32_mask(_mm512_castps_si512(q), limit, _MM_CMPINT_NLT) &
                   _mm512_cmp_ps_mask(q, _mm512_setzero_ps(), _CMP_NEQ_UQ); /* -0 is fine */
            const __m512 part = _mm512_sub_ps(q, _mm512_roundscale_ps(q, _MM_FROUND_TO_NEG_INF |
                                                                             _MM_FROUND_NO_EXC));
            bad |= _mm512_cmp_ps_mask(part, half, _CMP_EQ_OQ);
            acc = _mm512_add_epi32(acc, _mm512_cvt_roundps_epi32(q, _MM_FROUND_TO_NEAREST_INT |
                                                                        _MM_FROUND_NO_EXC));
        }
        if (bad) return 0;
        steps += _mm512_reduce_add_epi32(acc);
        if (start + steps >= (int64_t)1 << 24) return 0; /* a partial sum left the binade */
    }
    *s = (float)(start + steps) * ulp;
    return 1;
}

/* ts_k_select_at_least with compressed vectors: a whole vector's
 * selection is stored 16 lanes wide (the lanes past it are overwritten by
 * the next, and fit: the count never passes i), the last one masked. A
 * vector kept whole or not at all (most of a flat or a sparse row) skips
 * the compress. */
static int select_at_least(const float *x, int n, float floor, float *values, int32_t *indices,
                           float *lo, float *hi) {
    const __m512 f = _mm512_set1_ps(floor);
    __m512 least = _mm512_set1_ps(INFINITY), greatest = _mm512_set1_ps(-INFINITY);
    __m512i index = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i step = _mm512_set1_epi32(16);
    int count = 0, i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(x + i);
        const __mmask16 keep = _mm512_cmp_ps_mask(v, f, _CMP_GE_OQ);
        if (keep == 0xFFFF) { /* a flat row's every vector: nothing to compress */
            _mm512_storeu_ps(values + count, v);
            _mm512_storeu_si512(indices + count, index);
        } else if (keep) { /* none: nothing to store (a sparse row's most) */
            _mm512_storeu_ps(values + count, _mm512_maskz_compress_ps(keep, v));
            _mm512_storeu_si512(indices + count, _mm512_maskz_compress_epi32(keep, index));
        }
        least = _mm512_mask_min_ps(least, keep, v, least);
        greatest = _mm512_mask_max_ps(greatest, keep, v, greatest);
        count += __builtin_popcount((unsigned)keep);
        index = _mm512_add_epi32(index, step);
    }
    if (i < n) {
        const __mmask16 in = tail_mask16(n - i);
        const __m512 v = _mm512_maskz_loadu_ps(in, x + i);
        const __mmask16 keep = _mm512_mask_cmp_ps_mask(in, v, f, _CMP_GE_OQ);
        _mm512_mask_compressstoreu_ps(values + count, keep, v);
        _mm512_mask_compressstoreu_epi32(indices + count, keep, index);
        least = _mm512_mask_min_ps(least, keep, v, least);
        greatest = _mm512_mask_max_ps(greatest, keep, v, greatest);
        count += __builtin_popcount((unsigned)keep);
    }
    *lo = _mm512_reduce_min_ps(least), *hi = _mm512_reduce_max_ps(greatest);
    return count;
}

/* ts_k_softmax bit for bit: the max and the division are exact in any
 * order; the sum stays in order (ts_k_sum_in_order). */
static void softmax_exact(float *x, int n) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
    float max_val = _mm512_reduce_max_ps(vmax);
    for (; i < n; i++) {
        if (x[i] > max_val) max_val = x[i];
    }
    /* the scalar loop's first element is its starting max: a NaN there
     * (or anywhere, through expf) poisons the same way below */
    if (n > 0 && !(x[0] == x[0])) max_val = x[0];
    const __m512 vm = _mm512_set1_ps(max_val);
    float sum = 0.0f;
    if (n >= 4096) { /* a vocabulary: long runs within one binade */
        /* 256 at a time, summed while they are in L1 */
        for (int b = 0; b < n; b += 256) {
            const int end = n - b < 256 ? n : b + 256;
            for (i = b; i + 16 <= end; i += 16) {
                _mm512_storeu_ps(x + i, expf_exact(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm)));
            }
            for (; i < end; i++) x[i] = expf(x[i] - max_val);
            ts_k_sum_in_order(sum_unordered, x + b, end - b, &sum);
        }
    } else { /* attention: a short sum crosses a binade every few values */
        for (i = 0; i + 16 <= n; i += 16) {
            _mm512_storeu_ps(x + i, expf_exact(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm)));
            for (int j = 0; j < 16; j++) sum += x[i + j];
        }
        for (; i < n; i++) {
            x[i] = expf(x[i] - max_val);
            sum += x[i];
        }
    }
    const __m512 vs = _mm512_set1_ps(sum);
    for (i = 0; i + 16 <= n; i += 16) _mm512_storeu_ps(x + i, _mm512_div_ps(_mm512_loadu_ps(x + i), vs));
    for (; i < n; i++) x[i] /= sum;
}

/* ------------------------------------------- a vocabulary's first look
 * A peaked distribution's top-p needs the exact probabilities of its few
 * candidates only, and run.c's exact max and sum. exp_sum_approx computes
 * every exponential in single precision (a degree-7 Taylor series on
 * |r| <= ln2/2, then 2^k by vscalefps): within 2^-23 of expf over every
 * input in [-87, 0] (checked against glibc over all of them), half the
 * 2^-22 bound (TS_EXP_APPROX_REL) the sampler's margins assume, and 0
 * below -87, where expf is under 2^-125.5: such a value adds under a fifth
 * of an ulp to any sum the margins are taken on (2^-100 or more), and is
 * far below any cutoff (one is 2^-55 or more, with a sum of 1 or more). The
 * in-order sum still comes out exact: within a binade of the running sum
 * S, fl(S + v) = S + round(v / ulp) ulp, and an approximate v rounds the
 * same as the exact one unless v / ulp lies within the bound of a
 * midpoint. A block with such a lane, or whose sum would leave the binade,
 * goes again 16 at a time, and a vector that still fails is redone with
 * expf_exact and added one by one. */

/* e^d for d <= 0 (no NaN), to 2^-23 relative from -87 up; 0 below it
 * (e^-87 is 2^-125.5: no denormal results, which cost a microcode assist
 * each on some CPUs) */
static inline __m512 exp_approx(__m512 d) {
    const __mmask16 tiny = _mm512_cmp_ps_mask(d, _mm512_set1_ps(-87.0f), _CMP_LT_OQ); /* -inf too */
    d = _mm512_max_ps(d, _mm512_set1_ps(-87.0f));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(d, _mm512_set1_ps(0x1.715476p+0f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = d - k ln2, ln2 in two parts: k times the first (16 bits) is exact */
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0x1.62e4p-1f), d);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0x1.7f7d1cp-20f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps((__mmask16)~tiny, _mm512_scalef_ps(p, k));
}

/* The vectors of x[i0, i1) (from a multiple of 16): their exponentials
 * into v, and the ulps they add onto *units, when no lane lies near a
 * midpoint and the sum stays in its binade. Returns whether they did. */
static inline int add_block(const float *x, int i0, int i1, __m512 vm, float *v, float inv_ulp,
                            int64_t *units) {
    /* |q - round(q)| + q * rel must stay under a half (less a little) */
    const __m512 rel = _mm512_set1_ps(TS_EXP_APPROX_REL), below = _mm512_set1_ps(0.5f - 0x1p-24f);
    const __m512 inv = _mm512_set1_ps(inv_ulp);
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    __m512i steps = _mm512_setzero_si512();
    __mmask16 sure = 0xFFFF;
    for (int i = i0; i < i1; i += 16) {
        const __mmask16 in = i1 - i >= 16 ? 0xFFFF : tail_mask16(i1 - i);
        const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(in, x + i), vm);
        const __m512 e = _mm512_maskz_mov_ps(in, exp_approx(d));
        _mm512_mask_storeu_ps(v + i, in, e);
        const __m512 q = _mm512_mul_ps(e, inv);
        const __m512i whole = _mm512_cvt_roundps_epi32(q, _MM_FROUND_TO_NEAREST_INT |
                                                              _MM_FROUND_NO_EXC);
        const __m512 off = _mm512_castsi512_ps(_mm512_and_si512(
            _mm512_castps_si512(_mm512_sub_ps(q, _mm512_cvtepi32_ps(whole))), magnitude));
        sure &= _mm512_cmp_ps_mask(_mm512_fmadd_ps(q, rel, off), below, _CMP_LT_OQ);
        /* a sure lane has q < 2^21 (q * rel is under a half); the sum is
         * used only when every lane is sure */
        steps = _mm512_add_epi32(steps, whole);
    }
    if (sure != 0xFFFF) return 0;
    const int64_t next = *units + _mm512_reduce_add_epi32(steps);
    if (next >= ((int64_t)1 << 24) - 1) return 0;
    *units = next;
    return 1;
}

static int exp_sum_approx(const float *x, int n, float reach, int most, float *v, float *max_out,
                          float *sum_out) {
    __m512 vmax = _mm512_set1_ps(-INFINITY);
    __mmask16 nan = 0;
    for (int i = 0; i < n; i += 16) {
        const __mmask16 in = n - i >= 16 ? 0xFFFF : tail_mask16(n - i);
        const __m512 xv = _mm512_maskz_loadu_ps(in, x + i);
        nan |= _mm512_mask_cmp_ps_mask(in, xv, xv, _CMP_UNORD_Q);
        vmax = _mm512_mask_max_ps(vmax, in, vmax, xv);
    }
    const float max_val = _mm512_reduce_max_ps(vmax);
    if (nan || !isfinite(max_val)) return 0;
    /* the gate: a flat row stops after `most` logits within reach */
    const __m512 near = _mm512_set1_ps(max_val - reach);
    int within = 0;
    for (int i = 0; i < n; i += 16) {
        const __mmask16 in = n - i >= 16 ? 0xFFFF : tail_mask16(n - i);
        const __mmask16 hit = _mm512_mask_cmp_ps_mask(in, _mm512_maskz_loadu_ps(in, x + i), near,
                                                      _CMP_GE_OQ);
        within += __builtin_popcount((unsigned)hit);
        if (within > most) return 0;
    }
    const __m512 vm = _mm512_set1_ps(max_val);
    float sum = 0.0f, ulp = 0.0f, inv_ulp = 0.0f;
    int64_t units = 0; /* sum = units * ulp, units in [2^23, 2^24), while `binade` */
    int binade = 0;
    /* 128 at a time (a lane adds under 2^21 ulps: no int32 lane wraps);
     * a block that fails goes again, 16 at a time */
    for (int b = 0; b < n; b += 128) {
        const int b_end = n - b < 128 ? n : b + 128;
        if (binade && add_block(x, b, b_end, vm, v, inv_ulp, &units)) continue;
        for (int i = b; i < b_end; i += 16) {
            const int end = b_end - i < 16 ? b_end : i + 16;
            if (binade) {
                if (add_block(x, i, end, vm, v, inv_ulp, &units)) continue;
                sum = (float)units * ulp;
            }
            /* this vector exactly, in order */
            const __mmask16 in = end - i == 16 ? 0xFFFF : tail_mask16(end - i);
            const __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(in, x + i), vm);
            _mm512_mask_storeu_ps(v + i, in, exp_approx(d));
            const __m512 exact = expf_exact(_mm512_mask_mov_ps(_mm512_setzero_ps(), in, d));
            for (int j = 0; j < end - i; j++) {
                sum += _mm512_cvtss_f32(_mm512_permutexvar_ps(_mm512_set1_epi32(j), exact));
            }
            binade = ts_k_binade(sum, &ulp, &inv_ulp, &units);
        }
    }
    if (binade) sum = (float)units * ulp;
    *max_out = max_val, *sum_out = sum;
    return 1;
}

/* ts_k_probs_exact, 16 gathered at a time */
static void probs_exact(const float *x, const int32_t *index, int m, float max, float sum,
                        float *out) {
    const __m512 vm = _mm512_set1_ps(max), vs = _mm512_set1_ps(sum);
    for (int j = 0; j < m; j += 16) {
        const __mmask16 in = m - j >= 16 ? 0xFFFF : tail_mask16(m - j);
        const __m512i idx = _mm512_maskz_loadu_epi32(in, index + j);
        const __m512 xv = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, idx, x, 4);
        const __m512 e = expf_exact(_mm512_mask_sub_ps(_mm512_setzero_ps(), in, xv, vm));
        _mm512_mask_storeu_ps(out + j, in, _mm512_div_ps(e, vs));
    }
}

/* The scalar swiglu bit for bit: h * (1 / (1 + e^-h)) * g, each step
 * rounded as there. */
static void swiglu_exact(float *h, const float *g, int n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(h + i);
        /* -v as the scalar code negates: the sign bit flipped (NaNs too) */
        __m512 neg = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v),
                                                          _mm512_set1_epi32((int)0x80000000u)));
        __m512 e = expf_exact(neg);
        v = _mm512_mul_ps(v, _mm512_div_ps(one, _mm512_add_ps(one, e)));
        _mm512_storeu_ps(h + i, _mm512_mul_ps(v, _mm512_loadu_ps(g + i)));
    }
    ts_kernels_scalar.swiglu(h + i, g + i, n - i); /* the tail */
}

/* The scores of `nb` (1 to 4) consecutive key blocks, side by side so that
 * their chains of dependent adds overlap; each lane still sums its
 * position over the head in order, with a separate multiply and add. */
static inline __attribute__((always_inline)) void exact_scores(float *att, const float *q,
                                                               const float *kb, size_t block,
                                                               int head_size, __m512 scale,
                                                               int nb) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int i = 0; i < head_size; i++) {
        const __m512 qi = _mm512_set1_ps(q[i]);
        const float *k = kb + (size_t)i * TS_KEY_BLOCK;
        s0 = _mm512_add_ps(s0, _mm512_mul_ps(qi, _mm512_loadu_ps(k)));
        if (nb > 1) s1 = _mm512_add_ps(s1, _mm512_mul_ps(qi, _mm512_loadu_ps(k + block)));
        if (nb > 2) s2 = _mm512_add_ps(s2, _mm512_mul_ps(qi, _mm512_loadu_ps(k + 2 * block)));
        if (nb > 3) s3 = _mm512_add_ps(s3, _mm512_mul_ps(qi, _mm512_loadu_ps(k + 3 * block)));
    }
    /* lanes past n_pos land in att's padding and are not read */
    _mm512_storeu_ps(att, _mm512_div_ps(s0, scale));
    if (nb > 1) _mm512_storeu_ps(att + TS_KEY_BLOCK, _mm512_div_ps(s1, scale));
    if (nb > 2) _mm512_storeu_ps(att + 2 * TS_KEY_BLOCK, _mm512_div_ps(s2, scale));
    if (nb > 3) _mm512_storeu_ps(att + 3 * TS_KEY_BLOCK, _mm512_div_ps(s3, scale));
}

/* The lanes of 16 dimensions from c that lie in the head (none past it). */
static inline __mmask16 head_lanes(int head_size, int c) {
    return c >= head_size ? 0 : head_size - c >= 16 ? 0xFFFF : tail_mask16(head_size - c);
}

/* The scalar attention bit for bit (Q8_0 models): each position's score
 * summed over the head in order with a separate multiply and add, 16
 * positions to a register and four key blocks at a time; softmax_exact;
 * each output dimension summed over positions in order, 64 dimensions at a
 * time in four registers. A single chain of dependent adds would wait on
 * the adder's latency at every step; four run side by side, and no lane's
 * sum changes order. */
static void attention_exact(float *out, float *att, const float *q, const float *keys,
                            const float *values, int n_pos, int head_size) {
    const __m512 scale = _mm512_set1_ps(sqrtf(head_size));
    const size_t block = (size_t)TS_KEY_BLOCK * head_size;
    const int n_blocks = (n_pos + TS_KEY_BLOCK - 1) / TS_KEY_BLOCK;
    int b = 0;
    for (; b + 4 <= n_blocks; b += 4) {
        exact_scores(att + b * TS_KEY_BLOCK, q, keys + b * block, block, head_size, scale, 4);
    }
    /* the last one to three blocks, with as many chains */
    const float *kb = keys + b * block;
    float *ab = att + b * TS_KEY_BLOCK;
    if (n_blocks - b == 3) exact_scores(ab, q, kb, block, head_size, scale, 3);
    if (n_blocks - b == 2) exact_scores(ab, q, kb, block, head_size, scale, 2);
    if (n_blocks - b == 1) exact_scores(ab, q, kb, block, head_size, scale, 1);
    softmax_exact(att, n_pos);

    for (int c = 0; c < head_size; c += 64) {
        /* a lane past the head loads and stores nothing */
        const __mmask16 m0 = head_lanes(head_size, c), m1 = head_lanes(head_size, c + 16),
                        m2 = head_lanes(head_size, c + 32), m3 = head_lanes(head_size, c + 48);
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *v = values + c;
        const size_t ahead = 8 * (size_t)head_size;
        for (int p = 0; p < n_pos; p++, v += head_size) {
            const __m512 w = _mm512_set1_ps(att[p]);
            /* the row 8 positions on: a batch's many short caches come from
             * DRAM, too short for the hardware prefetcher to start on */
            for (int l = 0; l < 4; l++) _mm_prefetch((const char *)(v + ahead) + 64 * l, _MM_HINT_T0);
            a0 = _mm512_add_ps(a0, _mm512_mul_ps(w, _mm512_maskz_loadu_ps(m0, v)));
            a1 = _mm512_add_ps(a1, _mm512_mul_ps(w, _mm512_maskz_loadu_ps(m1, v + 16)));
            a2 = _mm512_add_ps(a2, _mm512_mul_ps(w, _mm512_maskz_loadu_ps(m2, v + 32)));
            a3 = _mm512_add_ps(a3, _mm512_mul_ps(w, _mm512_maskz_loadu_ps(m3, v + 48)));
        }
        _mm512_mask_storeu_ps(out + c, m0, a0);
        _mm512_mask_storeu_ps(out + c + 16, m1, a1);
        _mm512_mask_storeu_ps(out + c + 32, m2, a2);
        _mm512_mask_storeu_ps(out + c + 48, m3, a3);
    }
}

/* As the avx2 set's argmax, 16 lanes at a time. */
static int32_t argmax(const float *x, int n) {
    if (isnan(x[0])) return 0; /* nothing is greater than it */
    __m512 m = _mm512_set1_ps(x[0]);
    int i = 0;
    for (; i + 16 <= n; i += 16) m = _mm512_max_ps(_mm512_loadu_ps(x + i), m);
    if (i < n) {
        __mmask16 tail = tail_mask16(n - i);
        m = _mm512_mask_max_ps(m, tail, _mm512_maskz_loadu_ps(tail, x + i), m);
    }
    const __m512 b = _mm512_set1_ps(_mm512_reduce_max_ps(m));
    for (i = 0; i < n; i += 16) {
        __mmask16 in = n - i >= 16 ? 0xFFFF : tail_mask16(n - i);
        __mmask16 eq = _mm512_mask_cmp_ps_mask(in, _mm512_maskz_loadu_ps(in, x + i), b, _CMP_EQ_OQ);
        if (eq) return i + __builtin_ctz((unsigned)eq);
    }
    return 0; /* not reached: the maximum is one of x */
}

const ts_kernels ts_kernels_avx512 = {
    .name = "avx512",
    /* fp32 models always read panels here; the row-major product is avx2's */
    .matmul_f32 = ts__avx2_matmul_f32,
    .matmul_q8 = matmul_q8,
    .matmul_f32_panels = matmul_f32_panels,
    .matmul_q8_panels = matmul_q8_panels,
    .quantize_q8 = quantize_q8,
    /* shared with the avx2 set (see kernels_avx2.c) */
    .rmsnorm = ts__avx2_rmsnorm,
    .swiglu = ts__avx2_swiglu,
    .swiglu_exact = swiglu_exact,
    .softmax_exact = softmax_exact,
    .attention = attention,
    .attention_exact = attention_exact,
    .argmax = argmax,
    .sum_unordered = sum_unordered,
    .select_at_least = select_at_least,
    .exp_sum_approx = exp_sum_approx,
    .probs_exact = probs_exact,
};
