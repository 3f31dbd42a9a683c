/*
 * test_kernels.c — every kernel set this CPU runs against the scalar
 * reference, without Python (so it also runs on a cross-built arm64 binary
 * under qemu: .ci/cross-arm64).
 *
 *   test_kernels [MODEL_DIR]
 *
 * Kernel by kernel, on odd sizes (tails of every vector loop, group sizes
 * that do not divide n, int8 weights of -128, ties in the quantizer):
 *   - matmul_q8, quantize_q8 and attention_exact bit-identical to scalar;
 *   - the panel matmuls on pack.c's layouts (Q8 bit-identical, fp32 within
 *     rounding), and the exact softmax and SwiGLU bit-identical;
 *   - matmul_f32, rmsnorm, swiglu and attention within 1e-4 relative;
 *   - batch invariance: a matmul output is bit-identical whatever the
 *     number of tokens and the row range of the call.
 * With MODEL_DIR (or $TS_TEST_MODEL_DIR) holding tok105's model5000.bin and
 * model5000_q80.bin: 256 tokens' logits within 1e-4 of scalar for the fp32
 * model (the largest difference is printed), bit-identical for Q8_0 (the v2
 * file and quantize-on-load), and a prompt evaluated as a batch equal to
 * one token at a time. Also the count of runnable threads the thread pool
 * reads before it tries a team again after a pause.
 */
#include "internal.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* -------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x2545F4914F6CDD1DULL;

static uint64_t next_u64(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* uniform in [-amp, amp) */
static float frand(float amp) {
    return amp * ((float)(next_u64() >> 40) / 8388608.0f - 1.0f);
}

static float *randv(size_t n, float amp) {
    float *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = frand(amp);
    return x;
}

/* |got - want| <= atol + rtol * |want|, both finite (or both the same
 * infinity) */
static int close_to(float got, float want, double atol, double rtol) {
    if (isinf(want)) return got == want;
    return isfinite(got) && fabs((double)got - want) <= atol + rtol * fabs((double)want);
}

static int all_close(const float *got, const float *want, size_t n, double atol, double rtol) {
    for (size_t i = 0; i < n; i++) {
        if (!close_to(got[i], want[i], atol, rtol)) {
            fprintf(stderr, "  [%zu]: got %.9g, want %.9g\n", i, got[i], want[i]);
            return 0;
        }
    }
    return 1;
}

static const ts_kernels *scalar;

/* ---------------------------------------------------------- the kernels */

/* An fp32 matmul's outputs against scalar's, each within 1e-6 of the sum of
 * its terms' magnitudes (rounding errors scale with them). */
static int matmul_close(const float *got, const float *want, const float *w, const float *x,
                        int nt, int n, int d) {
    int ok = 1;
    for (int t = 0; t < nt; t++) {
        for (int i = 0; i < d; i++) {
            double mag = 0;
            for (int j = 0; j < n; j++) mag += fabs((double)w[(size_t)i * n + j] * x[(size_t)t * n + j]);
            ok &= fabs((double)got[t * d + i] - want[t * d + i]) <= 1e-6 * mag + 1e-30;
        }
    }
    return ok;
}

static void test_matmul_f32(const ts_kernels *k) {
    const int ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 33, 64, 100};
    const int ds[] = {1, 3, 4, 5, 9, 17};
    const int nt = 3;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        for (size_t b = 0; b < sizeof ds / sizeof ds[0]; b++) {
            int n = ns[a], d = ds[b];
            float *w = randv((size_t)d * n, 1.0f), *x = randv((size_t)nt * n, 1.0f);
            float *want = calloc((size_t)nt * d, sizeof(float));
            float *got = calloc((size_t)nt * d, sizeof(float));
            float *part = calloc((size_t)nt * d, sizeof(float));
            scalar->matmul_f32(want, x, nt, w, n, d, 0, d);
            k->matmul_f32(got, x, nt, w, n, d, 0, d);
            int ok = matmul_close(got, want, w, x, nt, n, d);
            CHECK(ok);
            if (!ok) fprintf(stderr, "  %s matmul_f32 n=%d d=%d\n", k->name, n, d);
            /* one token at a time, over ragged row ranges: the same bits */
            for (int t = 0; t < nt; t++) {
                for (int i0 = 0; i0 < d;) {
                    int i1 = i0 + 1 + (i0 + t) % 6;
                    if (i1 > d) i1 = d;
                    k->matmul_f32(part + (size_t)t * d, x + (size_t)t * n, 1, w, n, d, i0, i1);
                    i0 = i1;
                }
            }
            CHECK(memcmp(part, got, (size_t)nt * d * sizeof(float)) == 0);
            free(w), free(x), free(want), free(got), free(part);
        }
    }
}

static void test_matmul_q8(const ts_kernels *k) {
    /* (n, gs): gs dividing n or not (runq's flattened groups), gs below,
     * at and above the vector widths */
    const int cases[][2] = {{16, 16}, {32, 16}, {64, 64}, {128, 64}, {40, 16}, {24, 8},
                            {48, 24}, {100, 32}, {72, 8},  {17, 4},   {96, 48}, {33, 33},
                            {80, 80}, {136, 64}, {12, 1}};
    const int ds[] = {1, 3, 4, 5, 9, 17};
    const int nt = 3;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t b = 0; b < sizeof ds / sizeof ds[0]; b++) {
            int n = cases[c][0], gs = cases[c][1], d = ds[b], ng = n / gs;
            size_t nw = (size_t)d * n, nscales = nw / gs + 1;
            int8_t *wq = malloc(nw), *xq = malloc((size_t)nt * n);
            for (size_t i = 0; i < nw; i++) wq[i] = (int8_t)(next_u64() >> 56); /* -128..127 */
            for (size_t i = 0; i < (size_t)nt * n; i++) xq[i] = (int8_t)((int)(next_u64() % 255) - 127);
            float *ws = randv(nscales, 0.05f), *xs = randv((size_t)nt * ng, 0.05f);
            int32_t *row_sums = calloc((size_t)d * ng, sizeof(int32_t));
            for (int i = 0; i < d; i++) {
                for (int g = 0; g < ng; g++) {
                    int32_t sum = 0;
                    for (int j = 0; j < gs; j++) sum += wq[(size_t)i * n + (size_t)g * gs + j];
                    row_sums[(size_t)g * d + i] = sum;
                }
            }
            float *want = calloc((size_t)nt * d, sizeof(float));
            float *got = calloc((size_t)nt * d, sizeof(float));
            float *part = calloc((size_t)nt * d, sizeof(float));
            scalar->matmul_q8(want, xq, xs, nt, wq, ws, row_sums, n, d, gs, 0, d);
            k->matmul_q8(got, xq, xs, nt, wq, ws, row_sums, n, d, gs, 0, d);
            int same = memcmp(got, want, (size_t)nt * d * sizeof(float)) == 0;
            CHECK(same);
            if (!same) fprintf(stderr, "  %s matmul_q8 n=%d gs=%d d=%d\n", k->name, n, gs, d);
            for (int t = 0; t < nt; t++) {
                for (int i0 = 0; i0 < d;) {
                    int i1 = i0 + 1 + (i0 + t) % 6;
                    if (i1 > d) i1 = d;
                    k->matmul_q8(part + (size_t)t * d, xq + (size_t)t * n, xs + (size_t)t * ng, 1,
                                 wq, ws, row_sums, n, d, gs, i0, i1);
                    i0 = i1;
                }
            }
            CHECK(memcmp(part, got, (size_t)nt * d * sizeof(float)) == 0);
            free(wq), free(xq), free(ws), free(xs), free(row_sums), free(want), free(got), free(part);
        }
    }
}

/* The panel matmuls on pack.c's layouts: fp32 within rounding of scalar,
 * Q8 bit-identical; both the same bits for one token or many, for row
 * ranges that cut panels anywhere, and a row range written alone. */
static void test_matmul_panels(const ts_kernels *k) {
    if (!k->matmul_f32_panels && !k->matmul_q8_panels) return;
    const int cases[][2] = {{16, 16}, {64, 64}, {40, 8}, {100, 32}, {136, 64}, {17, 4},
                            {48, 12}, {288, 32}, {96, 48}, {8, 4}};
    const int ds[] = {1, 5, 16, 17, 33, 48, 80, 144};
    const int nts[] = {1, 2, 3, 5, 9, 13, 6, 7};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (size_t b = 0; b < sizeof ds / sizeof ds[0]; b++) {
            int n = cases[c][0], gs = cases[c][1], d = ds[b], ng = n / gs, nt = nts[(c + b) % 8];
            size_t nw = (size_t)d * n, panels = ts__panel_count(d);
            float *w = randv(nw, 1.0f), *x = randv((size_t)nt * n, 1.0f);
            float *want = calloc((size_t)nt * d, sizeof(float));
            float *got = calloc((size_t)nt * d, sizeof(float));
            float *part = malloc((size_t)nt * d * sizeof(float));
            if (k->matmul_f32_panels) {
                float *wp = aligned_alloc(64, (panels * n * TS_PANEL * sizeof(float) + 63) / 64 * 64);
                ts__pack_f32(wp, w, d, n);
                scalar->matmul_f32(want, x, nt, w, n, d, 0, d);
                /* with the next matmul's panels named (the same ones): only
                 * what is prefetched may change */
                ts_panels_next after = {wp, (int)(panels < 4 ? panels : 4) * n};
                k->matmul_f32_panels(got, x, nt, wp, n, d, 0, d, after);
                int ok = matmul_close(got, want, w, x, nt, n, d);
                CHECK(ok);
                if (!ok) fprintf(stderr, "  %s matmul_f32_panels n=%d d=%d\n", k->name, n, d);
                /* token by token over ragged row ranges; rows outside stay untouched */
                for (size_t i = 0; i < (size_t)nt * d; i++) part[i] = -7.0f;
                for (int t = 0; t < nt; t++) {
                    for (int i0 = 0; i0 < d;) {
                        int i1 = i0 + 1 + (i0 * 7 + t) % 19;
                        if (i1 > d) i1 = d;
                        k->matmul_f32_panels(part + (size_t)t * d, x + (size_t)t * n, 1, wp, n, d, i0, i1,
                                             (ts_panels_next){NULL, 0});
                        i0 = i1;
                    }
                }
                CHECK(memcmp(part, got, (size_t)nt * d * sizeof(float)) == 0);
                for (size_t i = 0; i < (size_t)nt * d; i++) part[i] = -7.0f;
                if (d > 3) k->matmul_f32_panels(part, x, nt, wp, n, d, 1, d - 2, after);
                int outside = 1;
                for (int t = 0; t < nt && d > 3; t++) {
                    outside &= part[t * d] == -7.0f && part[t * d + d - 2] == -7.0f &&
                               part[t * d + d - 1] == -7.0f;
                }
                CHECK(outside);
                free(wp);
            }
            if (k->matmul_q8_panels && gs % 4 == 0) {
                int8_t *wq = malloc(nw), *xq = malloc((size_t)nt * n);
                for (size_t i = 0; i < nw; i++) wq[i] = (int8_t)(next_u64() >> 56); /* -128..127 */
                for (size_t i = 0; i < (size_t)nt * n; i++) xq[i] = (int8_t)((int)(next_u64() % 255) - 127);
                float *ws = randv(nw / gs + 1, 0.05f), *xs = randv((size_t)nt * ng, 0.05f);
                int32_t *xsum = calloc((size_t)nt * ng, sizeof(int32_t));
                for (int t = 0; t < nt; t++) {
                    for (int g = 0; g < ng; g++) {
                        for (int j = 0; j < gs; j++) xsum[t * ng + g] += xq[(size_t)t * n + g * gs + j];
                    }
                }
                size_t values = panels * ng * gs * TS_PANEL;
                uint8_t *wp = aligned_alloc(64, (values + 63) / 64 * 64 + 64);
                float *sp = aligned_alloc(64, (panels * ng * TS_PANEL * sizeof(float) + 63) / 64 * 64 + 64);
                ts__pack_q8(wp, sp, wq, ws, d, n, gs);
                scalar->matmul_q8(want, xq, xs, nt, wq, ws, NULL, n, d, gs, 0, d);
                k->matmul_q8_panels(got, xq, xs, xsum, nt, wp, sp, n, d, gs, 0, d,
                                    (ts_panels_next){wp, n / 4});
                int same = memcmp(got, want, (size_t)nt * d * sizeof(float)) == 0;
                CHECK(same);
                if (!same) fprintf(stderr, "  %s matmul_q8_panels n=%d gs=%d d=%d nt=%d\n", k->name, n, gs, d, nt);
                for (int t = 0; t < nt; t++) {
                    for (int i0 = 0; i0 < d;) {
                        int i1 = i0 + 1 + (i0 * 5 + t) % 21;
                        if (i1 > d) i1 = d;
                        k->matmul_q8_panels(part + (size_t)t * d, xq + (size_t)t * n, xs + (size_t)t * ng,
                                            xsum + (size_t)t * ng, 1, wp, sp, n, d, gs, i0, i1,
                                            (ts_panels_next){NULL, 0});
                        i0 = i1;
                    }
                }
                CHECK(memcmp(part, got, (size_t)nt * d * sizeof(float)) == 0);
                free(wq), free(xq), free(ws), free(xs), free(xsum), free(wp), free(sp);
            }
            free(w), free(x), free(want), free(got), free(part);
        }
    }
}

/* The exact softmax and SwiGLU gate (vectorized expf) bit for bit against
 * scalar, over a million inputs from -120 to 100: both sides of every
 * rounding decision the fast path hands back to expf, the ends of the
 * float range, infinities and NaN. */
static void test_exact_exp(const ts_kernels *k) {
    if (!k->softmax_exact && !k->swiglu_exact) return;
    const int n = 1 << 20;
    float *x = malloc((size_t)n * sizeof *x), *a = malloc((size_t)n * sizeof *a);
    float *b = malloc((size_t)n * sizeof *b), *g = randv((size_t)n, 2.0f);
    for (int i = 0; i < n; i++) x[i] = -120.0f + 220.0f * (float)(next_u64() >> 40) / 16777216.0f;
    x[3] = INFINITY, x[5] = -INFINITY, x[7] = NAN, x[9] = 88.72f, x[11] = -87.33f, x[13] = -0.0f;
    if (k->swiglu_exact) {
        memcpy(a, x, (size_t)n * sizeof *a);
        memcpy(b, x, (size_t)n * sizeof *b);
        k->swiglu_exact(a, g, n - 3);
        scalar->swiglu(b, g, n - 3);
        CHECK(memcmp(a, b, (size_t)n * sizeof *a) == 0);
    }
    if (k->softmax_exact) {
        /* softmax of pieces of every length up to 100, and of long rows of
         * modest spread (a real model's logits and attention scores) */
        int same = 1;
        for (int at = 0, len = 1; at + len <= n; at += len, len = len % 100 + 1) {
            float spread = len % 3 == 0 ? 1.0f : 0.05f * (float)(len % 7 + 1);
            for (int i = 0; i < len; i++) a[i] = b[i] = x[at + i] * spread;
            k->softmax_exact(a, len);
            ts_k_softmax(b, len);
            same &= memcmp(a, b, (size_t)len * sizeof *a) == 0;
        }
        for (int i = 0; i < 32000; i++) a[i] = b[i] = x[100000 + i] * 0.02f;
        k->softmax_exact(a, 32000);
        ts_k_softmax(b, 32000);
        same &= memcmp(a, b, 32000 * sizeof *a) == 0;
        CHECK(same);
    }
    free(x), free(a), free(b), free(g);
}

static void test_quantize(const ts_kernels *k) {
    const int gss[] = {1, 2, 3, 4, 5, 8, 12, 16, 17, 32, 64};
    for (size_t a = 0; a < sizeof gss / sizeof gss[0]; a++) {
        int gs = gss[a];
        for (int variant = 0; variant < 5; variant++) {
            int n = gs * 5 + (variant % 3); /* a tail of n % gs values is left alone */
            float *x = randv((size_t)n, variant == 1 ? 1e-3f : 3.0f);
            if (variant == 2) {
                /* ties: max 127 gives scale 1, so k + 0.5 lands halfway */
                for (int i = 0; i < n; i++) x[i] = (float)((int)(next_u64() % 255) - 127) + 0.5f;
                for (int g = 0; g < n / gs; g++) x[g * gs] = g % 2 ? 127.0f : -127.0f;
            }
            if (variant == 3) {
                for (int i = 0; i < gs; i++) x[i] = 0.0f; /* an all-zero group */
                x[gs] = -0.0f;
            }
            if (variant == 4) {
                /* non-finite activations (groups 0 and 1; group 2 is +-inf only) */
                x[0] = NAN;
                if (gs > 1) x[gs + 1] = INFINITY;
                x[2 * gs] = -INFINITY;
            }
            int8_t *qw = malloc((size_t)n), *qg = malloc((size_t)n);
            memset(qw, 0x55, (size_t)n), memset(qg, 0x55, (size_t)n);
            float *sw = calloc((size_t)n / gs + 1, sizeof(float)), *sg = calloc((size_t)n / gs + 1, sizeof(float));
            scalar->quantize_q8(qw, sw, x, n, gs);
            k->quantize_q8(qg, sg, x, n, gs);
            int same = memcmp(qw, qg, (size_t)n) == 0 &&
                       memcmp(sw, sg, (size_t)(n / gs) * sizeof(float)) == 0;
            CHECK(same);
            if (!same) fprintf(stderr, "  %s quantize_q8 gs=%d variant %d\n", k->name, gs, variant);
            free(x), free(qw), free(qg), free(sw), free(sg);
        }
    }
}

static void test_elementwise(const ts_kernels *k) {
    const int ns[] = {1, 3, 4, 7, 8, 9, 16, 33, 128, 288};
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        int n = ns[a];
        float *x = randv((size_t)n, 2.0f), *w = randv((size_t)n, 1.0f);
        float *want = malloc((size_t)n * sizeof(float)), *got = malloc((size_t)n * sizeof(float));
        scalar->rmsnorm(want, x, w, n);
        k->rmsnorm(got, x, w, n);
        CHECK(all_close(got, want, (size_t)n, 1e-6, 1e-5));
        /* in place (o == x) */
        memcpy(got, x, (size_t)n * sizeof(float));
        k->rmsnorm(got, got, w, n);
        CHECK(all_close(got, want, (size_t)n, 1e-6, 1e-5));

        float *h = randv((size_t)n, 20.0f), *g = randv((size_t)n, 1.0f);
        memcpy(want, h, (size_t)n * sizeof(float));
        memcpy(got, h, (size_t)n * sizeof(float));
        scalar->swiglu(want, g, n);
        k->swiglu(got, g, n);
        CHECK(all_close(got, want, (size_t)n, 1e-6, 1e-5));
        free(x), free(w), free(want), free(got), free(h), free(g);
    }
}

/* ------------------------------------------------------ ordered sums */

static float loop_sum(const float *x, int n, float s) {
    for (int i = 0; i < n; i++) s += x[i];
    return s;
}

/* What sum_unordered must say, worked out another way: take the sum when
 * the start is in range, every x is finite and >= 0, no x / ulp has a
 * fraction of exactly one half (in double) and the loop's sum stays in
 * the start's binade. */
static int should_take(const float *x, int n, float s) {
    if (!(s >= 0x1p-100f && s < 0x1p100f)) return 0;
    int e;
    frexp((double)s, &e);
    const double ulp = ldexp(1.0, e - 24);
    for (int i = 0; i < n; i++) {
        if (!(x[i] >= 0.0f) || isinf(x[i])) return 0;
        double q = (double)x[i] / ulp;
        if (q - floor(q) == 0.5) return 0;
    }
    return loop_sum(x, n, s) < ldexp(1.0f, e);
}

enum { SUM_CASES = 9 };

/* Case `kind` of n values and a start: 0 softmax-like values in one binade,
 * 1 the same with a planted tie, 2 a binade crossed, 3 a special value
 * (NaN, inf, negative, -0, subnormal), 4 a special start, 5 wide
 * magnitudes, 6 values on the ulp grid (ties at half steps), 7 zeros,
 * 8 large steps (hundreds of thousands of ulps each). */
static float make_sum_case(float *x, int n, int kind) {
    int e = (int)(next_u64() % 40) - 20;
    float s = ldexpf(1.0f + (float)(next_u64() >> 41) / 16777216.0f, e); /* [2^e, 1.5 * 2^e) */
    const float ulp = ldexpf(1.0f, e - 23);
    /* sums to < 0.4 * 2^e; each value far below the ulp's binade, as a
     * softmax's are (where a value has few bits below the ulp, ties are
     * common) */
    const float each = ldexpf(0.4f, e) / (float)(n > 1024 ? n : 1024);
    for (int i = 0; i < n; i++) x[i] = each * (0.5f + (float)(next_u64() >> 40) / 16777216.0f);
    int at = n > 0 ? (int)(next_u64() % (uint64_t)n) : 0;
    switch (kind) {
    case 1:
        if (n) x[at] = ulp * (float)(next_u64() % 7) + 0.5f * ulp;
        break;
    case 2:
        s = ldexpf(1.999f, e);
        if (n) x[at] += ldexpf(0.01f, e);
        break;
    case 3: {
        const float special[] = {NAN, INFINITY, -1e-30f, -0.0f, 0x1p-140f};
        if (n) x[at] = special[next_u64() % 5];
        break;
    }
    case 4: {
        const float start[] = {0.0f, 0x1p-101f, 0x1p-100f, 0x1.fffffep99f, 0x1p100f, -1.0f, NAN, INFINITY};
        s = start[next_u64() % 8];
        break;
    }
    case 5:
        for (int i = 0; i < n; i++) x[i] = ldexpf(x[i], -(int)(next_u64() % 30));
        break;
    case 6:
        for (int i = 0; i < n; i++) x[i] = 0.5f * ulp * (float)(next_u64() % 9);
        break;
    case 7:
        for (int i = 0; i < n; i++) x[i] = next_u64() % 2 ? 0.0f : -0.0f;
        break;
    case 8:
        for (int i = 0; i < n; i++) x[i] = ulp * (float)(next_u64() % 400000) * 0.999f;
        break;
    }
    return s;
}

/* sum_unordered, the scalar reference first (against should_take and the
 * loop, in three orders), then every set against it; and
 * ts_k_sum_in_order against the loop on everything. */
static void test_sum_unordered(const ts_kernels *k) {
    enum { N = 700 };
    static float x[N], reversed[N], shuffled[N];
    const int ns[] = {0, 1, 2, 5, 15, 16, 17, 31, 33, 127, 128, 129, 255, 256, 300, N};
    int wrong = 0, taken = 0, typical = 0, same_in_order = 1;
    for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++) {
        int n = ns[a];
        for (int trial = 0; trial < 60 * SUM_CASES; trial++) {
            int kind = trial % SUM_CASES;
            float s = make_sum_case(x, n, kind);
            float want = s, got = s;
            int want_ok = ts_k_sum_unordered(x, n, &want), got_ok = k->sum_unordered(x, n, &got);
            if (k == scalar) {
                for (int i = 0; i < n; i++) reversed[i] = shuffled[i] = x[n - 1 - i];
                for (int i = n - 1; i > 0; i--) {
                    int j = (int)(next_u64() % (uint64_t)(i + 1));
                    float t = shuffled[i];
                    shuffled[i] = shuffled[j], shuffled[j] = t;
                }
                if (want_ok != should_take(x, n, s)) wrong++;
                if (want_ok && (want != loop_sum(x, n, s) || want != loop_sum(reversed, n, s) ||
                                want != loop_sum(shuffled, n, s))) {
                    wrong++;
                }
                if (!want_ok && memcmp(&want, &s, sizeof s) != 0) wrong++; /* left alone */
            } else if (got_ok != want_ok || memcmp(&got, &want, sizeof got) != 0) {
                if (!wrong++) {
                    fprintf(stderr, "  %s sum_unordered n=%d kind %d: %d %a, scalar %d %a\n", k->name,
                            n, kind, got_ok, (double)got, want_ok, (double)want);
                }
            }
            if (kind == 0 && n > 0) typical++, taken += want_ok;
            float in_order = s, loop = loop_sum(x, n, s);
            ts_k_sum_in_order(k->sum_unordered, x, n, &in_order);
            same_in_order &= memcmp(&in_order, &loop, sizeof loop) == 0;
        }
    }
    if (wrong) fprintf(stderr, "  %s sum_unordered: %d wrong answers\n", k->name, wrong);
    CHECK(wrong == 0);
    CHECK(same_in_order);
    CHECK(taken * 10 >= typical * 9); /* the fast path is the usual one */
    /* a softmax's row of 32,000, summed from 0 in order */
    static float big[32000];
    for (int i = 0; i < 32000; i++) big[i] = 3.1e-5f * (1.0f + frand(0.025f));
    float in_order = 0.0f, loop = loop_sum(big, 32000, 0.0f);
    ts_k_sum_in_order(k->sum_unordered, big, 32000, &in_order);
    CHECK(in_order == loop);
}

/* select_at_least against the scalar loop: every length to 40 and a
 * vocabulary's, floors that keep none, some and all, ties with the floor,
 * both zeros, infinities and NaNs. The outputs have room for exactly n, so
 * ASan sees a store past them. */
static void test_select_at_least(const ts_kernels *k) {
    int bad = 0;
    for (int n = 1; n <= 32000 && !bad; n = n < 40 ? n + 1 : n * 4 + 7) {
        float *x = malloc((size_t)n * sizeof *x);
        float *want_v = malloc((size_t)n * sizeof *want_v), *got_v = malloc((size_t)n * sizeof *got_v);
        int32_t *want_i = malloc((size_t)n * sizeof *want_i), *got_i = malloc((size_t)n * sizeof *got_i);
        for (int trial = 0; trial < 60 && !bad; trial++) {
            int kind = trial % 6;
            for (int i = 0; i < n; i++) x[i] = kind == 0 ? (float)(rand() % 5) * 0.25f : frand(1.0f);
            if (kind == 2) x[rand() % n] = NAN, x[rand() % n] = INFINITY, x[rand() % n] = -INFINITY;
            if (kind == 3) for (int i = 0; i < n; i++) x[i] = i % 2 ? -0.0f : 0.0f;
            const float floors[] = {0.5f, 0.0f, -2.0f, 2.0f, -0.0f, 0.25f};
            float floor = floors[trial % 6], want_lo, want_hi, got_lo, got_hi;
            int want = ts_k_select_at_least(x, n, floor, want_v, want_i, &want_lo, &want_hi);
            int got = k->select_at_least(x, n, floor, got_v, got_i, &got_lo, &got_hi);
            if (got != want || memcmp(got_v, want_v, (size_t)want * sizeof *got_v) != 0 ||
                memcmp(got_i, want_i, (size_t)want * sizeof *got_i) != 0 || got_lo != want_lo ||
                got_hi != want_hi) {
                fprintf(stderr, "  %s select_at_least n=%d kind %d floor %g: %d kept, scalar %d\n",
                        k->name, n, kind, (double)floor, got, want);
                bad = 1;
            }
        }
        free(x), free(want_v), free(got_v), free(want_i), free(got_i);
    }
    CHECK(!bad);
}

/* exp_sum_approx: its exponentials within 2^-23 of expf (half the bound
 * the sampler's margins assume) over every 61st float of [-87, 0], and 0
 * below (to -104, and -inf); its max and sum bit for bit those of the scalar softmax's
 * loop, on vocabularies flat, peaked, with -inf, with ties and tiny
 * values, and lengths that leave a tail; the gate (`most` logits within
 * `reach`) and NaN / infinite rows refused. */
static void test_exp_sum_approx(const ts_kernels *k) {
    enum { CHUNK = 1 << 16 };
    float *x = malloc(CHUNK * sizeof *x), *v = malloc(CHUNK * sizeof *v);
    double worst = 0.0;
    int bad_abs = 0;
    uint32_t bits = 0x80000000u; /* -0, then down to -104 */
    const float m104 = -104.0f;
    uint32_t last;
    memcpy(&last, &m104, sizeof last);
    while (bits <= last) {
        int n = 1;
        x[0] = 0.0f; /* the max: v[i] = e^x[i] */
        for (; n < CHUNK && bits <= last; n++, bits += 61) memcpy(&x[n], &bits, sizeof bits);
        if (bits > last) x[n++] = -104.0f, x[n++] = -INFINITY;
        float max, sum;
        CHECK(k->exp_sum_approx(x, n, INFINITY, n, v, &max, &sum) && max == 0.0f);
        for (int i = 0; i < n; i++) {
            const float e = expf(x[i]);
            const double err = fabs((double)v[i] - (double)e);
            if (x[i] >= -87.0f) {
                if (err / (double)v[i] > worst) worst = err / (double)v[i];
            } else if (v[i] != 0.0f) {
                bad_abs++;
            }
        }
    }
    CHECK(worst <= 0x1p-23 && 0x1p-23 <= TS_EXP_APPROX_REL);
    CHECK(bad_abs == 0);
    if (worst > 0x1p-23 || bad_abs) {
        fprintf(stderr, "  %s exp_sum_approx: worst relative error %g, %d not 0 below -87\n",
                k->name, worst, bad_abs);
    }
    /* the max and the in-order sum */
    int wrong = 0;
    for (int trial = 0; trial < 48; trial++) {
        const int n = trial % 3 == 0 ? 32000 : trial % 3 == 1 ? 4103 : 50257;
        float *y = malloc((size_t)n * sizeof *y), *w = malloc((size_t)n * sizeof *w);
        const int kind = trial % 8;
        for (int i = 0; i < n; i++) {
            const float u = (float)(next_u64() >> 40) / 16777216.0f;
            switch (kind) {
            case 0: y[i] = 0.05f * (u - 0.5f); break;                /* flat */
            case 1: y[i] = 12.0f * u * u * u - 6.0f; break;         /* skewed */
            case 2: y[i] = i % 211 == 0 ? 20.0f * u : -30.0f * u; break; /* peaked */
            case 3: y[i] = u < 0.5f ? -INFINITY : u; break;
            case 4: y[i] = (float)(int)(u * 8.0f) * 0.5f; break;    /* ties */
            case 5: y[i] = -110.0f * u; break;                      /* below the float range */
            case 6: y[i] = u < 0.999f ? -95.0f : 0.0f; break;       /* tiny ones, few large */
            default: y[i] = 3.0f * frand(1.0f); break;
            }
        }
        float max, sum, want_max = y[0], want_sum = 0.0f;
        for (int i = 1; i < n; i++) want_max = y[i] > want_max ? y[i] : want_max;
        for (int i = 0; i < n; i++) want_sum += expf(y[i] - want_max);
        if (!k->exp_sum_approx(y, n, INFINITY, n, w, &max, &sum) || max != want_max ||
            sum != want_sum) {
            fprintf(stderr, "  %s exp_sum_approx n=%d kind %d: sum %a, loop %a\n", k->name, n, kind,
                    (double)sum, (double)want_sum);
            wrong++;
        }
        /* the gate: `most` counts logits within `reach` of the max */
        int within = 0;
        for (int i = 0; i < n; i++) within += y[i] >= want_max - 2.0f;
        CHECK(k->exp_sum_approx(y, n, 2.0f, within, w, &max, &sum) == 1);
        CHECK(k->exp_sum_approx(y, n, 2.0f, within - 1, w, &max, &sum) == 0);
        free(y), free(w);
    }
    CHECK(wrong == 0);
    float row[20];
    for (int i = 0; i < 20; i++) row[i] = (float)i;
    float max, sum;
    row[13] = NAN;
    CHECK(k->exp_sum_approx(row, 20, INFINITY, 20, v, &max, &sum) == 0);
    row[13] = INFINITY;
    CHECK(k->exp_sum_approx(row, 20, INFINITY, 20, v, &max, &sum) == 0);
    free(x), free(v);
}

/* probs_exact bit for bit against the scalar one: gathered indices in any
 * order, lengths that leave a tail, -inf and tiny logits. */
static void test_probs_exact(const ts_kernels *k) {
    enum { N = 5000 };
    float *x = malloc(N * sizeof *x), *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    int32_t *index = malloc(N * sizeof *index);
    for (int i = 0; i < N; i++) x[i] = i % 17 == 0 ? -INFINITY : 40.0f * frand(1.0f);
    for (int i = 0; i < N; i++) index[i] = (int32_t)(next_u64() % N);
    int same = 1;
    for (int m = 0; m <= N; m = m < 40 ? m + 1 : m * 3 + 1) {
        k->probs_exact(x, index, m, 40.0f, 3.25f, a);
        ts_k_probs_exact(x, index, m, 40.0f, 3.25f, b);
        same &= memcmp(a, b, (size_t)m * sizeof *a) == 0;
    }
    CHECK(same);
    free(x), free(a), free(b), free(index);
}

/* One layer's KV caches for 2 kv heads shared by 4 query heads (GQA), laid
 * out by internal.h's helpers with room for 20 positions more than are in
 * use: every slot not in use (the last key block's lanes past n_pos, the
 * positions beyond) holds junk, NaN or huge, which must not reach a result.
 * att is exactly n_pos rounded up to a block, so ASan sees overruns. */
/* argmax: the first largest, NaNs skipped unless first, as the scalar loop:
 * every length up to past two vectors, the maximum at every place, ties,
 * both zeros, infinities and NaNs anywhere. */
static void test_argmax(const ts_kernels *k) {
    enum { N = 40 };
    float x[N];
    int bad = 0;
    for (int n = 1; n <= N && !bad; n++) {
        for (int trial = 0; trial < 400 && !bad; trial++) {
            int kind = trial % 8;
            for (int i = 0; i < n; i++) {
                x[i] = kind == 0 ? (float)(rand() % 5) - 2.0f : frand(3.0f); /* 0: many ties */
            }
            int at = rand() % n, at2 = rand() % n;
            if (kind == 1) x[at] = x[at2] = 7.0f;                           /* a tied maximum */
            if (kind == 2) x[at] = NAN;                                      /* a NaN anywhere */
            if (kind == 3) x[0] = NAN;                                       /* a NaN first */
            if (kind == 4) for (int i = 0; i < n; i++) x[i] = i % 2 ? -0.0f : 0.0f;
            if (kind == 5) x[at] = INFINITY, x[at2] = NAN;
            if (kind == 6) for (int i = 0; i < n; i++) x[i] = i == at ? 1.0f : NAN;
            if (kind == 7) for (int i = 0; i < n; i++) x[i] = -INFINITY;
            int want = ts_kernels_scalar.argmax(x, n), got = k->argmax(x, n);
            if (want != got) {
                fprintf(stderr, "  %s argmax n=%d kind %d: %d, scalar %d\n", k->name, n, kind, got, want);
                bad = 1;
            }
        }
    }
    CHECK(!bad);
    /* a real vocabulary's worth, the maximum near the end */
    static float big[32000];
    for (int i = 0; i < 32000; i++) big[i] = frand(5.0f);
    big[31999] = 9.0f;
    CHECK(k->argmax(big, 32000) == 31999);
    big[12345] = 9.0f;
    CHECK(k->argmax(big, 32000) == 12345);
}

static void test_attention(const ts_kernels *k) {
    const int hss[] = {1, 3, 4, 5, 8, 16, 17, 32, 48, 64, 72};
    const int nps[] = {1, 2, 3, 5, 8, 9, 15, 16, 17, 31, 33, 47, 64, 65, 100, 129};
    enum { N_HEADS = 4, N_KV = 2 };
    for (size_t a = 0; a < sizeof hss / sizeof hss[0]; a++) {
        for (size_t b = 0; b < sizeof nps / sizeof nps[0]; b++) {
            for (int nan_junk = 0; nan_junk < 2; nan_junk++) {
                int hs = hss[a], np = nps[b];
                size_t span = ts__kv_seq(np + 20) * (size_t)hs; /* one kv head's */
                float *keys = malloc(N_KV * span * sizeof(float));
                float *values = malloc(N_KV * span * sizeof(float));
                for (size_t i = 0; i < N_KV * span; i++) {
                    keys[i] = values[i] = nan_junk ? NAN : (i % 2 ? 1e30f : -1e30f);
                }
                for (int kv = 0; kv < N_KV; kv++) {
                    for (int t = 0; t < np; t++) {
                        for (int i = 0; i < hs; i++) {
                            keys[kv * span + ts__key_index(t, i, hs)] = frand(2.0f);
                            values[kv * span + (size_t)t * hs + i] = frand(1.0f);
                        }
                    }
                }
                float *att = malloc(ts__kv_seq(np) * sizeof(float));
                float *want = malloc((size_t)hs * sizeof(float)), *got = malloc((size_t)hs * sizeof(float));
                for (int h = 0; h < N_HEADS; h++) {
                    const float *kh = keys + (h / (N_HEADS / N_KV)) * span;
                    const float *vh = values + (h / (N_HEADS / N_KV)) * span;
                    float *q = randv((size_t)hs, 2.0f);
                    scalar->attention(want, att, q, kh, vh, np, hs);
                    k->attention(got, att, q, kh, vh, np, hs);
                    int ok = all_close(got, want, (size_t)hs, 1e-5, 1e-4);
                    CHECK(ok);
                    if (!ok) fprintf(stderr, "  %s attention hs=%d n_pos=%d head %d\n", k->name, hs, np, h);
                    k->attention_exact(got, att, q, kh, vh, np, hs);
                    int same = memcmp(got, want, (size_t)hs * sizeof(float)) == 0;
                    CHECK(same);
                    if (!same) {
                        fprintf(stderr, "  %s attention_exact hs=%d n_pos=%d head %d\n", k->name, hs, np, h);
                    }
                    free(q);
                }
                free(keys), free(values), free(att), free(want), free(got);
            }
        }
    }
}

/* ------------------------------------------------------ the real models */

/* n tokens' logits (n * vocab floats) of `path` under kernel set `name`,
 * evaluated as one prompt, and (when one_by_one is set) again one token at
 * a time, which must give the same bits. */
static float *model_logits(const char *path, const char *name, int quantize, const int32_t *ids,
                           int n, int one_by_one) {
    ts_load_options o = ts_load_options_default();
    o.kernels = name;
    o.quantize = quantize;
    ts_model *m = NULL;
    ts_session *s = NULL;
    ts_error err = {0};
    if (ts_model_load_with(path, &o, &m, &err) != TS_OK || ts_session_new(m, 0, &s, &err) != TS_OK) {
        fprintf(stderr, "%s\n", err.message);
        failures++;
        ts_model_free(m);
        return NULL;
    }
    CHECK(strcmp(ts_model_kernels(m), name) == 0);
    int vocab = ts_model_config(m)->vocab_size;
    float *out = malloc((size_t)n * vocab * sizeof(float));
    CHECK(ts_session_eval(s, ids, (size_t)n, 0, out, &err) == TS_OK);
    if (one_by_one) {
        ts_session *s1 = NULL;
        CHECK(ts_session_new(m, 1, &s1, &err) == TS_OK);
        int same = 1;
        for (int t = 0; s1 && t < n; t++) {
            CHECK(ts_session_eval(s1, ids + t, 1, t, NULL, &err) == TS_OK);
            same &= memcmp(ts_session_logits(s1), out + (size_t)t * vocab, (size_t)vocab * sizeof(float)) == 0;
        }
        CHECK(same);
        if (!same) fprintf(stderr, "  %s %s: prefill != one token at a time\n", name, path);
        ts_session_free(s1);
    }
    ts_session_free(s);
    ts_model_free(m);
    return out;
}

static void test_models(const char *dir, const char *name) {
    char mpath[1024], qpath[1024];
    snprintf(mpath, sizeof mpath, "%s/model5000.bin", dir);
    snprintf(qpath, sizeof qpath, "%s/model5000_q80.bin", dir);
    enum { N = 256, VOCAB = 105 };
    int32_t ids[N];
    ids[0] = 1;
    for (int i = 1; i < N; i++) ids[i] = (int32_t)(next_u64() % VOCAB);

    /* fp32: within 1e-4 */
    float *want = model_logits(mpath, "scalar", 0, ids, N, 0);
    float *got = model_logits(mpath, name, 0, ids, N, 1);
    if (want && got) {
        double maxdiff = 0;
        for (size_t i = 0; i < (size_t)N * VOCAB; i++) {
            double diff = fabs((double)got[i] - want[i]);
            if (!(diff <= maxdiff)) maxdiff = diff; /* NaN sticks */
        }
        printf("%s: model5000.bin, %d tokens: max |logit - scalar| = %.3g\n", name, N, maxdiff);
        CHECK(all_close(got, want, (size_t)N * VOCAB, 1e-4, 1e-4));
    }
    free(want), free(got);

    /* Q8_0: the v2 file and quantize-on-load, bit-identical */
    for (int k = 0; k < 2; k++) {
        const char *path = k ? mpath : qpath;
        want = model_logits(path, "scalar", k, ids, N, 0);
        got = model_logits(path, name, k, ids, N, 1);
        if (want && got) {
            int same = memcmp(got, want, (size_t)N * VOCAB * sizeof(float)) == 0;
            CHECK(same);
            printf("%s: %s%s, %d tokens: logits %s scalar's\n", name,
                   k ? "model5000.bin" : "model5000_q80.bin",
                   k ? " quantized on load" : "", N, same ? "bit-identical to" : "DIFFER from");
        }
        free(want), free(got);
    }
}

/* ------------------------------------------------------------ team sizes */

/* n tokens of `path` through ts__forward with a team of `threads` (teams
 * larger than this machine included: ts__batch_new does not cap them), as
 * one prompt block or one token at a time: vocab floats per token. */
static float *team_logits(const ts_model *m, int threads, const int32_t *ids, int n, int prefill) {
    const ts_config *p = &m->config;
    size_t cache = (size_t)p->n_layers * ts__kv_seq(p->seq_len) * (size_t)m->kv_dim;
    float *keys = calloc(cache, sizeof(float)), *values = calloc(cache, sizeof(float));
    float *out = calloc((size_t)n * p->vocab_size, sizeof(float));
    ts_row *rows = calloc((size_t)n, sizeof *rows);
    ts_batch *b = ts__batch_new(m, n, threads);
    CHECK(keys && values && out && rows && b);
    if (keys && values && out && rows && b) {
        for (int t = 0; t < n; t++) {
            rows[t] = (ts_row){ids[t], t, keys, values, out + (size_t)t * p->vocab_size};
        }
        if (prefill) {
            ts__forward(b, rows, n);
        } else {
            for (int t = 0; t < n; t++) ts__forward(b, rows + t, 1);
        }
    }
    ts__batch_free(b);
    free(keys), free(values), free(rows);
    return out;
}

/* Every output is computed the same way whichever thread of the team owns
 * it: logits bit-identical for teams of 1 to 5 (uneven shares of the 4 kv
 * heads and of the rows), prompt blocks and single tokens alike. */
static void test_team_sizes(const char *dir) {
    static const char *files[] = {"model5000.bin", "model5000_q80.bin"};
    enum { N = 40 };
    int32_t ids[N];
    ids[0] = 1;
    for (int i = 1; i < N; i++) ids[i] = (int32_t)(next_u64() % 105);
    for (int f = 0; f < 2; f++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, files[f]);
        ts_model *m = NULL;
        ts_error err = {0};
        if (ts_model_load(path, &m, &err) != TS_OK) {
            fprintf(stderr, "%s\n", err.message);
            failures++;
            continue;
        }
        size_t bytes = (size_t)N * m->config.vocab_size * sizeof(float);
        int before = failures;
        float *want = team_logits(m, 1, ids, N, 1);
        for (int threads = 1; threads <= 5; threads++) {
            for (int prefill = 0; prefill < 2; prefill++) {
                ts__pool_resume(); /* the last team's stalls must not make this one run alone */
                float *got = team_logits(m, threads, ids, N, prefill);
                int same = want && got && memcmp(got, want, bytes) == 0;
                CHECK(same);
                if (!same) {
                    fprintf(stderr, "  %s: team of %d, %s: logits differ from one thread's\n",
                            files[f], threads, prefill ? "prompt block" : "one token at a time");
                }
                free(got);
            }
        }
        printf("%s: teams of 1-5 threads: logits %s\n", files[f],
               failures == before ? "bit-identical" : "DIFFER");
        free(want);
        ts_model_free(m);
    }
}

/* The runnable-thread count pool.c reads when a pause ends: with three
 * spinning threads besides this one, at least four (Linux; elsewhere the
 * count is unknown, -1). */
static _Atomic int spin_stop;
static void *spin(void *arg) {
    (void)arg;
    while (!atomic_load(&spin_stop)) {
    }
    return NULL;
}

static void test_runnable_threads(void) {
    pthread_t spinners[3];
    int started = 0;
    atomic_store(&spin_stop, 0);
    for (; started < 3; started++) {
        if (pthread_create(&spinners[started], NULL, spin, NULL) != 0) break;
    }
    CHECK(started == 3);
    int seen = ts__runnable_threads();
    atomic_store(&spin_stop, 1);
    for (int i = 0; i < started; i++) pthread_join(spinners[i], NULL);
#if defined(__linux__)
    CHECK(seen >= 1 + started);
#else
    CHECK(seen == -1);
#endif
    printf("runnable threads with %d spinning: %d\n", started, seen);
}

int main(int argc, char **argv) {
    (void)tmp_path, (void)write_bytes; /* check.h's file helpers: not needed here */
    ts_error err = {0};
    if (ts__kernels_select("scalar", &scalar, &err) != TS_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 2;
    }
    test_sum_unordered(scalar); /* the reference, against the loop */
    const char *dir = argc > 1 ? argv[1] : getenv("TS_TEST_MODEL_DIR");
    char sets[64];
    snprintf(sets, sizeof sets, "%s", ts_kernels_available());
    printf("kernel sets: %s\n", sets);
    int tested = 0;
    for (char *name = strtok(sets, " "); name; name = strtok(NULL, " ")) {
        if (strcmp(name, "scalar") == 0) continue;
        const ts_kernels *k = NULL;
        CHECK(ts__kernels_select(name, &k, &err) == TS_OK);
        if (!k) continue;
        int before = failures;
        test_matmul_f32(k);
        test_matmul_q8(k);
        test_matmul_panels(k);
        test_exact_exp(k);
        test_quantize(k);
        test_elementwise(k);
        test_attention(k);
        if (k->argmax) test_argmax(k);
        if (k->sum_unordered) test_sum_unordered(k);
        if (k->select_at_least) test_select_at_least(k);
        if (k->exp_sum_approx) test_exp_sum_approx(k);
        if (k->probs_exact) test_probs_exact(k);
        if (dir && *dir) test_models(dir, name);
        printf("%s: %s\n", name, failures == before ? "matches scalar" : "FAILED");
        tested++;
    }
    if (dir && *dir) test_team_sizes(dir);
    test_runnable_threads();
    if (!tested) printf("note: no kernel set besides scalar on this CPU\n");
    if (!dir || !*dir) printf("note: no model directory given, skipping the real-model checks\n");
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
