/*
 * sampler.c — run.c's sampler: greedy, multinomial and top-p, with the
 * same xorshift64* RNG so a seed gives the same tokens. Top-k is an
 * addition; top_k = 0 leaves run.c's behaviour untouched.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>

typedef struct prob_index {
    float prob;
    int32_t index;
} prob_index;

struct ts_sampler {
    int vocab_size;
    float temperature;
    float top_p;
    int top_k;
    uint64_t state;
    prob_index *candidates; /* vocab_size */
    prob_index *scratch;    /* vocab_size, for the merge sort */
};

ts_status ts_sampler_new(int vocab_size, const ts_sampling *params, ts_sampler **out,
                         ts_error *err) {
    if (!out) return ts__fail(err, TS_ERR_ARG, "ts_sampler_new: out is NULL");
    *out = NULL;
    if (!params) return ts__fail(err, TS_ERR_ARG, "ts_sampler_new: params is NULL");
    if (vocab_size <= 0) {
        return ts__fail(err, TS_ERR_ARG, "ts_sampler_new: vocab_size %d must be positive", vocab_size);
    }
    if (!isfinite(params->temperature) || params->temperature < 0.0f) {
        return ts__fail(err, TS_ERR_ARG, "ts_sampler_new: temperature %g must be finite and >= 0",
                        (double)params->temperature);
    }
    if (isnan(params->top_p)) return ts__fail(err, TS_ERR_ARG, "ts_sampler_new: top_p is NaN");
    if (params->top_k < 0) {
        return ts__fail(err, TS_ERR_ARG, "ts_sampler_new: top_k %d must be >= 0", params->top_k);
    }
    if (params->seed == 0) {
        /* 0 is xorshift's fixed point: every draw would be 0 */
        return ts__fail(err, TS_ERR_ARG, "ts_sampler_new: seed must not be 0");
    }
    ts_sampler *s = calloc(1, sizeof *s);
    if (!s) return ts__fail(err, TS_ERR_NOMEM, "ts_sampler_new: out of memory");
    s->vocab_size = vocab_size;
    s->temperature = params->temperature;
    s->top_p = params->top_p;
    s->top_k = params->top_k;
    s->state = params->seed;
    s->candidates = malloc((size_t)vocab_size * sizeof *s->candidates);
    s->scratch = malloc((size_t)vocab_size * sizeof *s->scratch);
    if (!s->candidates || !s->scratch) {
        ts_sampler_free(s);
        return ts__fail(err, TS_ERR_NOMEM, "ts_sampler_new: out of memory");
    }
    *out = s;
    return TS_OK;
}

void ts_sampler_free(ts_sampler *s) {
    if (!s) return;
    free(s->candidates);
    free(s->scratch);
    free(s);
}

/* xorshift64*, as run.c */
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1DULL) >> 32);
}

static float random_f32(uint64_t *state) { return (random_u32(state) >> 8) / 16777216.0f; }

static int32_t argmax(const float *p, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++) {
        if (p[i] > p[best]) best = i;
    }
    return best;
}

/* Stable merge sort by probability, descending. run.c uses qsort, which in
 * glibc is a stable merge sort here: equal probabilities keep index order. */
static void sort_desc(prob_index *a, prob_index *tmp, size_t n) {
    if (n < 2) return;
    size_t h = n / 2;
    sort_desc(a, tmp, h);
    sort_desc(a + h, tmp, n - h);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        /* take from the right only when strictly greater: stability */
        tmp[k++] = a[j].prob > a[i].prob ? a[j++] : a[i++];
    }
    while (i < h) tmp[k++] = a[i++];
    while (j < n) tmp[k++] = a[j++];
    for (k = 0; k < n; k++) a[k] = tmp[k];
}

static int32_t sample_mult(const float *p, int n, float coin) {
    float cdf = 0.0f;
    for (int i = 0; i < n; i++) {
        cdf += p[i];
        if (coin < cdf) return i;
    }
    return n - 1; /* rounding */
}

/* run.c's nucleus sampling: the smallest set of most likely tokens whose
 * probabilities exceed top_p, then a draw within it. */
static int32_t sample_topp(ts_sampler *s, const float *p, int n, float coin) {
    prob_index *c = s->candidates;
    /* probabilities below (1 - top_p) / (n - 1) can't be in the set */
    const float cutoff = (1.0f - s->top_p) / (n - 1);
    int n0 = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] >= cutoff) {
            c[n0].index = i;
            c[n0].prob = p[i];
            n0++;
        }
    }
    if (n0 == 0) return argmax(p, n); /* only with NaNs or n == 1 */
    sort_desc(c, s->scratch, (size_t)n0);
    float cumulative = 0.0f;
    int last = n0 - 1; /* rounding: all of them */
    for (int i = 0; i < n0; i++) {
        cumulative += c[i].prob;
        if (cumulative > s->top_p) {
            last = i;
            break;
        }
    }
    float r = coin * cumulative;
    float cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += c[i].prob;
        if (r < cdf) return c[i].index;
    }
    return c[last].index;
}

/* Keeps exactly the k largest logits (ties: lower index first). */
static void apply_top_k(ts_sampler *s, float *logits, int n, int k) {
    prob_index *c = s->candidates;
    for (int i = 0; i < n; i++) {
        c[i].index = i;
        c[i].prob = logits[i];
    }
    sort_desc(c, s->scratch, (size_t)n);
    for (int i = k; i < n; i++) logits[c[i].index] = -INFINITY;
}

int32_t ts_sampler_sample(ts_sampler *s, float *logits) {
    int n = s->vocab_size;
    if (s->temperature == 0.0f) return argmax(logits, n);
    for (int i = 0; i < n; i++) logits[i] /= s->temperature;
    if (s->top_k > 0 && s->top_k < n) apply_top_k(s, logits, n, s->top_k);
    ts_k_softmax(logits, n);
    float coin = random_f32(&s->state);
    if (s->top_p <= 0 || s->top_p >= 1) return sample_mult(logits, n, coin);
    return sample_topp(s, logits, n, coin);
}
