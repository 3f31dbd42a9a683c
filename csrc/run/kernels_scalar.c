/*
 * kernels_scalar.c — the reference numeric primitives.
 *
 * These define the library's numbers: each sum runs left to right in float,
 * exactly as llama2.c's run.c/runq.c compiled with gcc -O3 (and
 * -ffp-contract=off, so no fused multiply-adds). SIMD versions must
 * reproduce these or be compared against them.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

static void matmul_f32(float *out, const float *x, int nt, const float *w, int n, int d, int i0,
                       int i1) {
    for (int t = 0; t < nt; t++) {
        const float *xt = x + (size_t)t * n;
        for (int i = i0; i < i1; i++) {
            const float *row = w + (size_t)i * (size_t)n;
            float val = 0.0f;
            for (int j = 0; j < n; j++) {
                val += row[j] * xt[j];
            }
            out[(size_t)t * d + i] = val;
        }
    }
}

static void matmul_q8(float *out, const int8_t *x_q, const float *x_s, int nt, const int8_t *wq,
                      const float *ws, const int32_t *row_sums, int n, int d, int gs, int i0,
                      int i1) {
    (void)row_sums;
    for (int t = 0; t < nt; t++) {
        const int8_t *xq = x_q + (size_t)t * n;
        const float *xs = x_s + (size_t)t * (n / gs);
        for (int i = i0; i < i1; i++) {
            size_t in = (size_t)i * (size_t)n;
            float val = 0.0f;
            /* runq's loop: whole groups only (j + gs <= n), and the weight scale
             * is looked up by the flat index of the group's first element. When
             * gs does not divide n (w2 when gs does not divide hidden_dim) this
             * skips the last n % gs inputs and lets a group straddle two rows'
             * scales; that is what runq computes, so we do it too. */
            for (int j = 0; j + gs <= n; j += gs) {
                int32_t ival = 0;
                for (int k = 0; k < gs; k++) {
                    ival += (int32_t)xq[j + k] * (int32_t)wq[in + j + k];
                }
                /* runq's order: ((float)ival * w_scale) * x_scale */
                val += ((float)ival) * ws[(in + j) / gs] * xs[j / gs];
            }
            out[(size_t)t * d + i] = val;
        }
    }
}

static void quantize_q8(int8_t *q, float *s, const float *x, int n, int gs) {
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * gs;
        float wmax = 0.0f;
        for (int i = 0; i < gs; i++) {
            float v = fabsf(xg[i]);
            if (v > wmax) wmax = v;
        }
        float scale = wmax / 127.0f;
        s[g] = scale;
        for (int i = 0; i < gs; i++) {
            /* runq divides by a zero scale here; x86 turns the NaN into 0,
             * so an all-zero group quantizes to zeros, minus the UB. */
            double r = scale == 0.0f ? 0.0 : round(xg[i] / scale);
            /* Only non-finite activations land outside [-127, 127]; clamp
             * them so the conversion stays defined. */
            if (!(r >= -127.0 && r <= 127.0)) r = r > 0.0 ? 127.0 : (r < 0.0 ? -127.0 : 0.0);
            q[(size_t)g * gs + i] = (int8_t)r;
        }
    }
}

static void rmsnorm(float *o, const float *x, const float *w, int n) {
    float ss = 0.0f;
    for (int j = 0; j < n; j++) {
        ss += x[j] * x[j];
    }
    ss /= n;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    for (int j = 0; j < n; j++) {
        o[j] = w[j] * (ss * x[j]);
    }
}

int ts_k_sum_unordered(const float *x, int n, float *s) {
    const float s0 = *s;
    if (!(s0 >= 0x1p-100f && s0 < 0x1p100f)) return 0;
    int e;
    frexpf(s0, &e); /* s0 in [2^(e-1), 2^e): its floats are the multiples of ulp */
    const float ulp = ldexpf(1.0f, e - 24), inv_ulp = ldexpf(1.0f, 24 - e);
    const int64_t start = (int64_t)(s0 * inv_ulp); /* in [2^23, 2^24) */
    int64_t steps = 0;
    for (int i = 0; i < n; i++) {
        /* x / ulp: exact (or below 2^-126, where it rounds to 0 either way) */
        const float q = x[i] * inv_ulp;
        if (!(q >= 0.0f && q < 0x1p23f)) return 0; /* negative, NaN, or past the binade */
        const float whole = floorf(q), part = q - whole; /* both exact */
        if (part == 0.5f) return 0; /* a tie: its rounding depends on the sum so far */
        steps += (int64_t)whole + (part > 0.5f);
    }
    if (start + steps >= (int64_t)1 << 24) return 0; /* a partial sum left the binade */
    *s = (float)(start + steps) * ulp;
    return 1;
}

int ts_k_binade(float s0, float *ulp, float *inv_ulp, int64_t *start) {
    if (!(s0 >= 0x1p-100f && s0 < 0x1p100f)) return 0;
    uint32_t bits;
    memcpy(&bits, &s0, sizeof bits);
    const uint32_t biased = bits >> 23; /* s0 in [2^(biased-127), 2^(biased-126)) */
    const uint32_t ulp_bits = (biased - 23) << 23, inv_bits = (277 - biased) << 23;
    memcpy(ulp, &ulp_bits, sizeof *ulp);
    memcpy(inv_ulp, &inv_bits, sizeof *inv_ulp);
    *start = (bits & 0x7fffff) | 0x800000;
    return 1;
}

int ts_k_select_at_least(const float *x, int n, float floor, float *values, int32_t *indices,
                         float *lo, float *hi) {
    int count = 0;
    float least = INFINITY, greatest = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (x[i] >= floor) {
            values[count] = x[i];
            indices[count] = i;
            count++;
            least = x[i] < least ? x[i] : least;
            greatest = x[i] > greatest ? x[i] : greatest;
        }
    }
    *lo = least, *hi = greatest;
    return count;
}

/* x[0..n) into *s in order: the whole at once if it can go, else its
 * halves, down to pieces of 16 that go one float at a time. A piece
 * fails where a partial sum crosses a binade (about log2(n) times in a
 * softmax) or meets a tie (rare), so few pieces are halved. */
static void sum_piece(int (*sum_unordered)(const float *, int, float *), const float *x, int n,
                      float *s) {
    if (sum_unordered(x, n, s)) return;
    if (n <= 16) {
        float sum = *s;
        for (int i = 0; i < n; i++) sum += x[i];
        *s = sum;
        return;
    }
    sum_piece(sum_unordered, x, n / 2, s);
    sum_piece(sum_unordered, x + n / 2, n - n / 2, s);
}

void ts_k_sum_in_order(int (*sum_unordered)(const float *, int, float *), const float *x, int n,
                       float *s) {
    enum { BLOCK = 256 };
    for (int i = 0; i < n; i += BLOCK) {
        sum_piece(sum_unordered, x + i, n - i < BLOCK ? n - i : BLOCK, s);
    }
}

void ts_k_probs_exact(const float *x, const int32_t *index, int m, float max, float sum,
                      float *out) {
    for (int j = 0; j < m; j++) out[j] = expf(x[index[j]] - max) / sum;
}

void ts_k_softmax(float *x, int n) {
    float max_val = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] > max_val) max_val = x[i];
    }
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) {
        x[i] /= sum;
    }
}

static void swiglu(float *h, const float *g, int n) {
    for (int i = 0; i < n; i++) {
        float val = h[i];
        val *= (1.0f / (1.0f + expf(-val)));
        val *= g[i];
        h[i] = val;
    }
}

static void attention(float *out, float *att, const float *q, const float *keys,
                      const float *values, int n_pos, int head_size) {
    for (int t = 0; t < n_pos; t++) {
        float score = 0.0f;
        for (int i = 0; i < head_size; i++) {
            score += q[i] * keys[ts__key_index(t, i, head_size)];
        }
        score /= sqrtf(head_size);
        att[t] = score;
    }
    ts_k_softmax(att, n_pos);

    /* weighted sum of the values, accumulated position by position */
    for (int i = 0; i < head_size; i++) out[i] = 0.0f;
    for (int t = 0; t < n_pos; t++) {
        const float *vt = values + (size_t)t * head_size;
        float a = att[t];
        for (int i = 0; i < head_size; i++) {
            out[i] += a * vt[i];
        }
    }
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++) {
        if (x[i] > x[best]) best = i;
    }
    return best;
}

const ts_kernels ts_kernels_scalar = {
    .name = "scalar",
    .matmul_f32 = matmul_f32,
    .matmul_q8 = matmul_q8,
    .quantize_q8 = quantize_q8,
    .rmsnorm = rmsnorm,
    .swiglu = swiglu,
    .attention = attention,
    .attention_exact = attention,
    .argmax = argmax,
    .sum_unordered = ts_k_sum_unordered,
    .select_at_least = ts_k_select_at_least,
    .probs_exact = ts_k_probs_exact,
};
