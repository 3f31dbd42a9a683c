/*
 * sampler.c — run.c's sampler: greedy, multinomial and top-p, with the
 * same xorshift64* RNG so a seed gives the same tokens. Top-k, min-p and
 * the repetition / presence / frequency penalties are additions (the order
 * is tinystories.h's); each at 0 leaves run.c's behaviour untouched.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct prob_index {
    float prob;
    int32_t index;
} prob_index;

struct ts_sampler {
    int vocab_size;
    float temperature;
    float top_p;
    int top_k;
    float min_p;
    float repetition_penalty; /* 1: off */
    float presence_penalty;
    float frequency_penalty;
    uint64_t state;
    /* the sequence so far, for the penalties (allocated only with one on) */
    int32_t *seen;          /* distinct tokens of the sequence, in first-seen order */
    int n_seen;
    int32_t *sampled_count; /* vocab_size: times sampled; -1: only in the prompt; 0: not seen */
    void (*softmax)(float *x, int n); /* ts_k_softmax, or a kernel set's exact one */
    int32_t (*argmax)(const float *x, int n); /* the kernel set's (all are exact) */
    /* the kernel set's */
    int (*sum_unordered)(const float *x, int n, float *s);
    int (*select_at_least)(const float *x, int n, float floor, float *values, int32_t *indices,
                           float *lo, float *hi);
    int (*exp_sum_approx)(const float *x, int n, float reach, int most, float *v, float *max,
                          float *sum); /* or NULL */
    void (*probs_exact)(const float *x, const int32_t *index, int m, float max, float sum,
                        float *out);
    /* top-p's candidates, as filtered (index order), then bucketed: each
     * vocab_size entries (the top-k heap uses `candidates` too) */
    prob_index *candidates; /* also the sorts' input and output */
    prob_index *scratch;    /* the merge sort's */
    float *prob;            /* filtered */
    int32_t *index;
    float *bucket_prob;     /* bucketed: the most likely bucket first */
    int32_t *bucket_place;  /* walked buckets: each slot's candidate, by its place in the
                             * bucket's index order (see token_at) */
    float *cdf;             /* running sums, where a bucket was walked one by one */
    int32_t *bucket_of;     /* vocab_size: each filtered candidate's bucket */
    int32_t *bucket_start;  /* vocab_size + 1: counts, then offsets */
    int32_t *span_first;    /* vocab_size: the first bucket of each summed span */
    float *span_end;        /* vocab_size: the running sum after each span */
    unsigned char *walked;  /* vocab_size: bucket b's cdf is set, its candidates sorted */
    float *approx;          /* vocab_size: top-p's first look, with exp_sum_approx */
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
    if (isnan(params->min_p) || params->min_p < 0.0f || params->min_p > 1.0f) {
        return ts__fail(err, TS_ERR_ARG, "ts_sampler_new: min_p %g must be in [0, 1]",
                        (double)params->min_p);
    }
    if (!isfinite(params->repetition_penalty) || params->repetition_penalty < 0.0f) {
        return ts__fail(err, TS_ERR_ARG,
                        "ts_sampler_new: repetition_penalty %g must be finite and > 0 (0: off)",
                        (double)params->repetition_penalty);
    }
    if (!isfinite(params->presence_penalty) || !isfinite(params->frequency_penalty)) {
        return ts__fail(err, TS_ERR_ARG,
                        "ts_sampler_new: presence_penalty %g and frequency_penalty %g must be finite",
                        (double)params->presence_penalty, (double)params->frequency_penalty);
    }
    ts_sampler *s = calloc(1, sizeof *s);
    if (!s) return ts__fail(err, TS_ERR_NOMEM, "ts_sampler_new: out of memory");
    s->vocab_size = vocab_size;
    s->temperature = params->temperature;
    s->top_p = params->top_p;
    s->top_k = params->top_k;
    s->min_p = params->min_p;
    s->repetition_penalty = params->repetition_penalty == 0.0f ? 1.0f : params->repetition_penalty;
    s->presence_penalty = params->presence_penalty;
    s->frequency_penalty = params->frequency_penalty;
    /* 0 is xorshift's fixed point (every draw would be 0): a documented stand-in */
    s->state = params->seed ? params->seed : TS_SEED_ZERO_STATE;
    const ts_kernels *k = NULL;
    int chosen = ts__kernels_select(NULL, &k, NULL) == TS_OK;
    s->softmax = chosen && k->softmax_exact ? k->softmax_exact : ts_k_softmax;
    s->argmax = chosen && k->argmax ? k->argmax : ts_kernels_scalar.argmax;
    s->sum_unordered = chosen && k->sum_unordered ? k->sum_unordered : ts_k_sum_unordered;
    s->select_at_least = chosen && k->select_at_least ? k->select_at_least : ts_k_select_at_least;
    s->exp_sum_approx = chosen ? k->exp_sum_approx : NULL;
    s->probs_exact = chosen && k->probs_exact ? k->probs_exact : ts_k_probs_exact;
    const size_t v = (size_t)vocab_size;
    s->candidates = malloc(v * sizeof *s->candidates);
    s->scratch = malloc(v * sizeof *s->scratch);
    s->prob = malloc(v * sizeof *s->prob);
    s->index = malloc(v * sizeof *s->index);
    s->bucket_prob = malloc(v * sizeof *s->bucket_prob);
    s->bucket_place = malloc(v * sizeof *s->bucket_place);
    s->cdf = malloc(v * sizeof *s->cdf);
    s->bucket_of = malloc(v * sizeof *s->bucket_of);
    s->bucket_start = malloc((v + 1) * sizeof *s->bucket_start);
    s->span_first = malloc((v + 1) * sizeof *s->span_first);
    s->span_end = malloc(v * sizeof *s->span_end);
    s->walked = malloc(v);
    if (s->exp_sum_approx) s->approx = malloc(v * sizeof *s->approx);
    int penalties = s->repetition_penalty != 1.0f || s->presence_penalty != 0.0f ||
                    s->frequency_penalty != 0.0f;
    if (penalties) {
        s->seen = malloc((size_t)vocab_size * sizeof *s->seen);
        s->sampled_count = calloc((size_t)vocab_size, sizeof *s->sampled_count);
    }
    if (!s->candidates || !s->scratch || !s->prob || !s->index || !s->bucket_prob ||
        !s->bucket_place || !s->cdf || !s->bucket_of || !s->bucket_start || !s->span_first ||
        !s->span_end || !s->walked || (s->exp_sum_approx && !s->approx) ||
        (penalties && (!s->seen || !s->sampled_count))) {
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
    free(s->prob);
    free(s->index);
    free(s->bucket_prob);
    free(s->bucket_place);
    free(s->cdf);
    free(s->bucket_of);
    free(s->bucket_start);
    free(s->span_first);
    free(s->span_end);
    free(s->walked);
    free(s->approx);
    free(s->seen);
    free(s->sampled_count);
    free(s);
}

void ts_sampler_accept(ts_sampler *s, int32_t token, int is_prompt) {
    if (!s || !s->sampled_count || token < 0 || token >= s->vocab_size) return;
    int32_t *count = &s->sampled_count[token];
    if (*count == 0) s->seen[s->n_seen++] = token;
    if (!is_prompt) {
        *count = *count < 0 ? 1 : *count + 1;
    } else if (*count == 0) {
        *count = -1;
    }
}

void ts_sampler_clear(ts_sampler *s) {
    if (!s || !s->sampled_count) return;
    for (int i = 0; i < s->n_seen; i++) s->sampled_count[s->seen[i]] = 0;
    s->n_seen = 0;
}

/* Steps 1 and 2 of tinystories.h's order, on the raw logits. */
static void apply_penalties(const ts_sampler *s, float *logits) {
    for (int i = 0; i < s->n_seen; i++) {
        int32_t t = s->seen[i];
        float x = logits[t];
        if (s->repetition_penalty != 1.0f) {
            x = x > 0.0f ? x / s->repetition_penalty : x * s->repetition_penalty;
        }
        int32_t c = s->sampled_count[t];
        if (c > 0) x -= s->presence_penalty + (float)c * s->frequency_penalty;
        logits[t] = x;
    }
}

/* Step 6: tokens below min_p times the top probability leave the draw. */
static void apply_min_p(float *logits, int n, float min_p) {
    float max = logits[0];
    for (int i = 1; i < n; i++) max = logits[i] > max ? logits[i] : max;
    const float floor = max + logf(min_p);
    for (int i = 0; i < n; i++) {
        if (logits[i] < floor) logits[i] = -INFINITY;
    }
}

/* xorshift64*, as run.c */
static uint32_t random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1DULL) >> 32);
}

static float random_f32(uint64_t *state) { return (random_u32(state) >> 8) / 16777216.0f; }

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

/* The filtered candidates' probabilities into buckets, the most likely
 * bucket first, in index order within a bucket. A bucket is a range of
 * float bit patterns, which order positive floats as their values do: so
 * each binade between the least and the greatest gets as many buckets,
 * about n0 / 16 in all, and probabilities spread over several orders of
 * magnitude (a real model's) fill them about as evenly as near-equal ones
 * do. Their tokens stay where they are: only the one drawn is looked up
 * (token_at), which saves a store per candidate. The bucket of p is a
 * non-decreasing function of p, so the buckets, each sorted by itself, in
 * bucket order, are exactly the sorted order. Returns the bucket count, or
 * 0 when the probabilities do not spread over a usable range (all equal,
 * or not finite). */
static int bucket_candidates(ts_sampler *s, int n0, float lo, float hi) {
    if (!(lo > 0.0f) || !(hi > lo) || !isfinite(hi)) return 0;
    uint32_t lo_bits, hi_bits;
    memcpy(&lo_bits, &lo, sizeof lo_bits);
    memcpy(&hi_bits, &hi, sizeof hi_bits);
    const uint32_t want = n0 / 16 > 1 ? (uint32_t)(n0 / 16) : 1u;
    int shift = 0;
    while (((hi_bits - lo_bits) >> shift) >= want) shift++;
    const int nb = (int)((hi_bits - lo_bits) >> shift) + 1;
    if (nb < 2) return 0;
    int32_t *start = s->bucket_start, *bucket = s->bucket_of;
    const float *prob = s->prob;
    /* descending: the top bucket is 0 (a loop the compiler vectorizes) */
    for (int i = 0; i < n0; i++) {
        uint32_t bits;
        memcpy(&bits, &prob[i], sizeof bits);
        bucket[i] = nb - 1 - (int)((bits - lo_bits) >> shift);
    }
    memset(start, 0, ((size_t)nb + 1) * sizeof *start);
    for (int i = 0; i < n0; i++) start[bucket[i] + 1]++;
    for (int b = 0; b < nb; b++) start[b + 1] += start[b];
    /* start[b] runs from bucket b's first slot to bucket b + 1's */
    for (int i = 0; i < n0; i++) {
        int at = start[bucket[i]]++;
        s->bucket_prob[at] = prob[i];
    }
    memmove(start + 1, start, (size_t)nb * sizeof *start);
    start[0] = 0;
    return nb;
}

/* Stable sort by probability, descending: insertion for the few
 * candidates of a bucket, merge sort beyond. */
static void sort_desc_stable(prob_index *a, prob_index *tmp, int n) {
    if (n > 16) {
        sort_desc(a, tmp, (size_t)n);
        return;
    }
    for (int i = 1; i < n; i++) {
        prob_index v = a[i];
        int j = i;
        /* move past strictly smaller ones only: stability */
        for (; j > 0 && a[j - 1].prob < v.prob; j--) a[j] = a[j - 1];
        a[j] = v;
    }
}

/* Sorts bucket b's candidates and sets their running sums from `sum`,
 * the sum before the bucket, up to the first that passes top_p. Returns
 * that one's slot, or -1. */
static int walk_bucket(ts_sampler *s, int b, float *sum) {
    const int b0 = s->bucket_start[b], n = s->bucket_start[b + 1] - b0;
    prob_index *c = s->candidates;
    for (int i = 0; i < n; i++) c[i] = (prob_index){s->bucket_prob[b0 + i], i}; /* its place */
    sort_desc_stable(c, s->scratch, n);
    s->walked[b] = 1;
    float cumulative = *sum;
    int cut = -1;
    for (int i = 0; i < n; i++) {
        s->bucket_prob[b0 + i] = c[i].prob;
        s->bucket_place[b0 + i] = c[i].index;
        if (cut >= 0) continue;
        cumulative += c[i].prob;
        s->cdf[b0 + i] = cumulative;
        if (cumulative > s->top_p) cut = b0 + i;
    }
    *sum = cumulative;
    return cut;
}

/* The running sum through buckets [b, e), spans of them at a time: a span
 * sum_unordered takes (and that stays within top_p) is summed at once; one
 * it refuses is halved, down to single buckets that are sorted and walked.
 * Each span goes on the list (span_first, span_end). Stops at the cut. */
static void sum_buckets(ts_sampler *s, int b, int e, float *sum, int *n_spans, int *cut) {
    if (*cut >= 0) return;
    const int32_t *start = s->bucket_start;
    if (start[b] == start[e]) return; /* empty: adds nothing */
    float end = *sum;
    if (s->sum_unordered(s->bucket_prob + start[b], start[e] - start[b], &end) &&
        !(end > s->top_p)) {
        *sum = end;
    } else if (e - b == 1) {
        *cut = walk_bucket(s, b, sum);
    } else {
        sum_buckets(s, b, b + (e - b) / 2, sum, n_spans, cut);
        sum_buckets(s, b + (e - b) / 2, e, sum, n_spans, cut);
        return;
    }
    s->span_first[*n_spans] = b;
    s->span_end[*n_spans] = *sum;
    ++*n_spans;
}

/* The token in `slot` (of n0 candidates in nb buckets; a walked one): a bucket
 * holds its candidates in index order until its walk sorts them, and
 * bucket_place keeps each one's place in that order, so it is the place-th
 * candidate i (in index order) with bucket_of[i] == the slot's bucket. */
static int32_t token_at(const ts_sampler *s, int n0, int nb, int slot) {
    int b = 0, e = nb; /* the slot's bucket: the last b < nb with bucket_start[b] <= slot */
    while (e - b > 1) {
        const int mid = b + (e - b) / 2;
        if (s->bucket_start[mid] <= slot) {
            b = mid;
        } else {
            e = mid;
        }
    }
    const int32_t *of = s->bucket_of;
    int place = s->bucket_place[slot], i = 0;
    for (; i + 16 <= n0; i += 16) { /* whole blocks first: a count the compiler vectorizes */
        int here = 0;
        for (int j = 0; j < 16; j++) here += of[i + j] == b;
        if (here > place) break;
        place -= here;
    }
    for (; i < n0; i++) {
        if (of[i] == b && place-- == 0) break;
    }
    return s->index[i < n0 ? i : n0 - 1]; /* i < n0: bucket b holds place + 1 of them */
}

/* The first i in [a, z] with r < v[i], else z, for v[a..z] that never
 * decreases (what run.c's walk to the first r < cdf finds). */
static int first_above(const float *v, int a, int z, float r) {
    while (a < z) {
        int mid = a + (z - a) / 2;
        if (r < v[mid]) {
            z = mid;
        } else {
            a = mid + 1;
        }
    }
    return a;
}

/* ------------------------------------------------ top-p, flat distributions
 *
 * Many candidates over a narrow range (a near-flat distribution: a high
 * temperature, or a model that has not learned much) are where sorting
 * costs the most, and where their sums are easiest to know without it.
 * Their range is cut into buckets of width w = 2^e, so every bucket's
 * lower edge is a multiple of w. Once the running sum S has an ulp u of at
 * least 2w, every rounding midpoint near S + p (a multiple of u / 2, or of
 * u past the next power of two) is a multiple of w too: S + p rounds the
 * same for every p strictly inside a bucket. So the sum needs only each
 * bucket's count, with the candidates that lie exactly on its lower edge
 * counted apart (they sort last in it, and can meet a tie). The top
 * buckets, summed while S is still finer than that, are sorted and summed
 * one by one; only the bucket the draw lands in is looked at again. */

enum { FLAT_MIN_CANDIDATES = 4096 };

typedef struct flat_buckets {
    int nb;          /* buckets, the top one first */
    int e;           /* their width, 2^e */
    int64_t n_base;  /* the lowest bucket's lower edge / 2^e */
} flat_buckets;

/* bucket b's lower edge, in units of 2^e */
static int64_t flat_edge_units(const flat_buckets *f, int b) { return f->n_base + (f->nb - 1 - b); }

/* Sub-bucket ids (2b inside bucket b, 2b + 1 on its lower edge) into
 * bucket_of, their counts into bucket_start. Returns 0 where the
 * candidates do not allow it: then nothing else was touched. */
static int flat_bucket(ts_sampler *s, int n0, float lo, float hi, flat_buckets *f) {
    if (!(lo >= 0x1p-100f) || !(hi > lo) || !(hi <= 1.0f)) return 0;
    int e, e_hi;
    frexpf((hi - lo) * 8.0f / (float)n0, &e); /* 2^e: about one bucket per 8 candidates */
    frexpf(hi, &e_hi);                        /* hi in [2^(e_hi-1), 2^e_hi): ulp 2^(e_hi-24) */
    if (e < e_hi - 23) e = e_hi - 23;         /* at least two ulps of every candidate */
    const float inv_w = ldexpf(1.0f, -e);
    const float n_base = floorf(lo * inv_w);  /* below 2^24: exact */
    const float base = ldexpf(n_base, e);
    /* p - base is exact for p in [base, 2 base] (Sterbenz), and so is its scaling */
    if (!(base > 0.0f) || !(hi <= 2.0f * base)) return 0;
    const int nb = (int)((hi - base) * inv_w) + 1;
    if (nb < 2 || 2 * nb > n0) return 0;
    f->nb = nb, f->e = e, f->n_base = (int64_t)n_base;
    const float *prob = s->prob;
    int32_t *id = s->bucket_of;
    for (int i = 0; i < n0; i++) { /* a loop the compiler vectorizes */
        const float t = (prob[i] - base) * inv_w;
        const int j = (int)t;
        id[i] = 2 * (nb - 1 - j) + ((float)j == t);
    }
    int32_t *count = s->bucket_start;
    memset(count, 0, (size_t)(2 * nb) * sizeof *count);
    for (int i = 0; i < n0; i++) count[id[i]]++;
    return 1;
}

/* What every candidate of bucket b adds once S is coarse enough: the
 * bucket's middle stands in for those inside it, its edge is exact. */
static void flat_values(const flat_buckets *f, int b, float *inside, float *on_edge) {
    const int64_t edge = flat_edge_units(f, b);
    *inside = ldexpf((float)(2 * edge + 1), f->e - 1);
    *on_edge = ldexpf((float)edge, f->e);
}

/* S's binade, as ts_k_binade gives it, with its ulp's exponent */
static int flat_binade(float sum, float *ulp, int *ulp_exp, int64_t *units) {
    float inv_ulp;
    if (!ts_k_binade(sum, ulp, &inv_ulp, units)) return 0;
    frexpf(*ulp, ulp_exp);
    --*ulp_exp; /* ulp = 2^ulp_exp */
    return 1;
}

/* The walk's place: the running sum, and the cut once it passes top_p */
typedef struct flat_walk {
    float sum;
    int cut_bucket, cut_rank; /* -1 until the sum passes top_p */
} flat_walk;

/* Adds `n` candidates that all round as `p` does, one by one; stops at the cut. */
static int flat_add_each(flat_walk *w, float p, int n, float top_p, int rank0, int b) {
    for (int k = 0; k < n; k++) {
        w->sum += p;
        if (w->sum > top_p) {
            w->cut_bucket = b, w->cut_rank = rank0 + k;
            return 1;
        }
    }
    return 0;
}

/* Bucket b's candidates into s->candidates in run.c's order: those inside
 * it by probability (descending, index order among equals), then those on
 * its edge in index order, each with its place in s->prob; returns how many. */
static int flat_bucket_members(ts_sampler *s, int n0, int b) {
    const int32_t *id = s->bucket_of;
    prob_index *c = s->candidates;
    int n = 0;
    for (int i = 0; i < n0; i += 16) { /* a block is read twice only if it holds one */
        const int end = n0 - i < 16 ? n0 : i + 16;
        int here = 0;
        for (int j = i; j < end; j++) here += (id[j] >> 1) == b; /* vectorized */
        if (!here) continue;
        for (int j = i; j < end; j++) {
            if ((id[j] >> 1) == b) c[n++] = (prob_index){s->prob[j], j};
        }
    }
    /* the edge ones are the smallest, and equal: the stable sort puts them
     * last, in index order */
    sort_desc(c, s->scratch, (size_t)n);
    return n;
}

/* run.c's top-p draw for candidates flat_bucket took. Returns 0, having
 * changed nothing the bucket path reads, where the top buckets turn out
 * too many or their sum too small. */
static int flat_sample(ts_sampler *s, int n0, const flat_buckets *f, float coin, int32_t *token) {
    const int nb = f->nb, e = f->e;
    const int32_t *count = s->bucket_start;
    const float top_p = s->top_p;
    /* the top buckets: until S surely has an ulp of 2^(e+1) (S >= 2^(e+24)),
     * with room for the float sum's rounding */
    const double bulk_from = ldexp(1.0625, e + 24);
    double low = 0.0;
    int b_top = 0, k_top = 0;
    while (b_top < nb && low < bulk_from) {
        const int m = count[2 * b_top] + count[2 * b_top + 1];
        low += (double)m * ldexp((double)flat_edge_units(f, b_top), e);
        k_top += m;
        b_top++;
    }
    if (b_top == nb || k_top > n0 / 4 || k_top > 8192) return 0;
    float *values = s->bucket_prob, lo_unused, hi_unused;
    int32_t *places = s->bucket_place;
    const float top_floor = ldexpf((float)flat_edge_units(f, b_top - 1), e);
    if (s->select_at_least(s->prob, n0, top_floor, values, places, &lo_unused, &hi_unused) != k_top) {
        return 0; /* cannot happen: they are the ones counted */
    }
    prob_index *c = s->candidates;
    for (int k = 0; k < k_top; k++) c[k] = (prob_index){values[k], places[k]};
    sort_desc(c, s->scratch, (size_t)k_top);
    flat_walk w = {0.0f, -1, -1};
    for (int k = 0; k < k_top; k++) {
        w.sum += c[k].prob;
        s->cdf[k] = w.sum;
        if (w.sum > top_p) {
            const float r = coin * w.sum;
            *token = s->index[c[first_above(s->cdf, 0, k, r)].index];
            return 1;
        }
    }
    if (!(w.sum >= ldexpf(1.0f, e + 24))) return 0;
    const float top_sum = w.sum;
    /* the bulk: a bucket's count at once where it stays in S's binade,
     * below the cut and clear of ties; else its candidates one by one */
    float *after = s->span_end; /* after[b]: the sum through bucket b */
    float ulp;
    int ulp_exp;
    int64_t units; /* S = units * ulp, units in [2^23, 2^24) */
    if (!flat_binade(w.sum, &ulp, &ulp_exp, &units)) return 0;
    int b = b_top;
    for (; b < nb; b++) {
        const int n_in = count[2 * b], n_edge = count[2 * b + 1];
        const int64_t edge = flat_edge_units(f, b);
        const int m = ulp_exp - e; /* >= 1: S's ulp is 2^m bucket widths */
        if (m > 40) return 0;      /* not with probabilities that sum to about 1 */
        const int64_t half = (int64_t)1 << (m - 1);
        const int64_t q = (edge + half) >> m; /* the ulps each adds */
        const int tie = n_edge > 0 && (edge & ((half << 1) - 1)) == half;
        const int64_t next_units = units + (int64_t)(n_in + n_edge) * q;
        const float next = (float)next_units * ulp; /* exact below 2^24 units */
        if (!tie && next_units < ((int64_t)1 << 24) && !(next > top_p)) {
            units = next_units;
            after[b] = w.sum = next;
            continue;
        }
        float inside, on_edge;
        flat_values(f, b, &inside, &on_edge);
        const int cut = flat_add_each(&w, inside, n_in, top_p, 0, b) ||
                        flat_add_each(&w, on_edge, n_edge, top_p, n_in, b);
        after[b] = w.sum;
        if (cut) break;
        if (!flat_binade(w.sum, &ulp, &ulp_exp, &units)) return 0;
    }
    int last_bucket = w.cut_bucket, last_rank = w.cut_rank;
    if (w.cut_bucket < 0) { /* rounding: all of them; the last is the lowest bucket's last */
        last_bucket = nb - 1;
        while (count[2 * last_bucket] + count[2 * last_bucket + 1] == 0) last_bucket--;
        last_rank = count[2 * last_bucket] + count[2 * last_bucket + 1] - 1;
    }
    const float r = coin * w.sum;
    if (r < top_sum) {
        *token = s->index[c[first_above(s->cdf, 0, k_top - 1, r)].index];
        return 1;
    }
    int rb = first_above(after, b_top, last_bucket, r), rank = last_rank;
    if (r < after[rb]) { /* the first in bucket rb whose running sum passes r */
        float sum = rb > b_top ? after[rb - 1] : top_sum, inside, on_edge;
        flat_values(f, rb, &inside, &on_edge);
        const int n_in = count[2 * rb];
        const int n_all = rb == last_bucket ? last_rank + 1 : n_in + count[2 * rb + 1];
        int k = 0;
        for (; k < n_all - 1; k++) {
            sum += k < n_in ? inside : on_edge;
            if (r < sum) break;
        }
        rank = k;
    } else {
        rb = last_bucket;
    }
    const int n_members = flat_bucket_members(s, n0, rb);
    if (rank >= n_members) rank = n_members - 1; /* cannot happen: the counts are these */
    *token = s->index[s->candidates[rank].index];
    return 1;
}

/* run.c's nucleus sampling: the smallest set of most likely tokens whose
 * probabilities exceed top_p, then a draw within it. run.c sorts every
 * candidate and sums them in that order. Only the sums matter, and a
 * run of candidates whose sum sum_unordered takes (no binade crossed, no
 * tie) sums the same in any order. So the candidates go into buckets, and
 * only the buckets where the order matters are sorted: those
 * sum_unordered refuses (about log2 of the candidates' spread), the one
 * where the sum passes top_p and the one the draw lands in. The sums are
 * run.c's, so the draw is the same. Many candidates over a narrow range
 * take the flat path above first: it counts them instead of moving them. */
static int32_t sample_candidates(ts_sampler *s, int n0, float lo, float hi, float coin) {
    flat_buckets flat;
    int32_t token;
    if (n0 >= FLAT_MIN_CANDIDATES && flat_bucket(s, n0, lo, hi, &flat) &&
        flat_sample(s, n0, &flat, coin, &token)) {
        return token;
    }
    int nb = n0 > 64 ? bucket_candidates(s, n0, lo, hi) : 0;
    if (nb == 0) { /* one bucket of them all */
        nb = 1;
        s->bucket_start[0] = 0;
        s->bucket_start[1] = n0;
        memcpy(s->bucket_prob, s->prob, (size_t)n0 * sizeof *s->prob);
        memset(s->bucket_of, 0, (size_t)n0 * sizeof *s->bucket_of);
    }
    memset(s->walked, 0, (size_t)nb);
    float cumulative = 0.0f;
    int n_spans = 0, last = -1;
    sum_buckets(s, 0, nb, &cumulative, &n_spans, &last);
    /* where the last span stops: the cut's bucket, or the last bucket */
    s->span_first[n_spans] = last >= 0 ? s->span_first[n_spans - 1] + 1 : nb;
    if (last < 0) { /* rounding: all of them, the last in sorted order too */
        last = n0 - 1;
        int b = nb - 1;
        while (s->bucket_start[b] == n0) b--; /* empty ones at the end */
        float before = 0.0f; /* the sum before bucket b: sum_unordered took it in a span */
        if (!s->walked[b]) {
            int k = n_spans - 1;
            before = k > 0 ? s->span_end[k - 1] : 0.0f;
            s->sum_unordered(s->bucket_prob + s->bucket_start[s->span_first[k]],
                             s->bucket_start[b] - s->bucket_start[s->span_first[k]], &before);
            walk_bucket(s, b, &before);
        }
    }
    /* run.c's draw: the first i <= last with r < cdf[i], else last. The
     * sums never decrease, so the first span whose end exceeds r holds it. */
    const float r = coin * cumulative;
    const int a = first_above(s->span_end, 0, n_spans - 1, r);
    if (!(r < s->span_end[a])) return token_at(s, n0, nb, last);
    /* halve the span down to the bucket: a part of what sum_unordered took
     * it takes too */
    float before = a > 0 ? s->span_end[a - 1] : 0.0f;
    int b = s->span_first[a], e = s->walked[b] ? b + 1 : s->span_first[a + 1];
    while (e - b > 1) {
        int mid = b + (e - b) / 2;
        float end = before;
        s->sum_unordered(s->bucket_prob + s->bucket_start[b],
                         s->bucket_start[mid] - s->bucket_start[b], &end);
        if (r < end) {
            e = mid;
        } else {
            b = mid, before = end;
        }
    }
    if (!s->walked[b]) walk_bucket(s, b, &before);
    const int hi_slot = s->bucket_start[b + 1] - 1 < last ? s->bucket_start[b + 1] - 1 : last;
    return token_at(s, n0, nb, first_above(s->cdf, s->bucket_start[b], hi_slot, r));
}

/* run.c's top-p cutoff: probabilities below (1 - top_p) / (n - 1) can't be
 * in the set */
static float topp_cutoff(const ts_sampler *s, int n) { return (1.0f - s->top_p) / (n - 1); }

static int32_t sample_topp(ts_sampler *s, const float *p, int n, float coin) {
    const float cutoff = topp_cutoff(s, n);
    float lo, hi;
    const int n0 = s->select_at_least(p, n, cutoff, s->prob, s->index, &lo, &hi);
    if (n0 == 0) return s->argmax(p, n); /* only with NaNs or n == 1 */
    return sample_candidates(s, n0, lo, hi, coin);
}

/* Top-p's first look, for a peaked distribution (few logits near the
 * largest): sample_topp without the exact probability of every token.
 * exp_sum_approx gives run.c's max and sum exactly and each exponential
 * to within TS_EXP_APPROX_REL; those that could reach the cutoff (a few
 * more than the candidates) get their exact probabilities, and the
 * candidates are the ones that do, in index order as sample_topp selects
 * them. The rest is sample_topp's. */
enum { FIRST_LOOK_MIN_VOCAB = 4096 };

/* The first look's candidates into s->prob and s->index (as sample_topp's
 * selection has them), with their least and greatest; returns how many. */
static int first_look_candidates(ts_sampler *s, const float *logits, int n, float max, float sum,
                                 float *lo, float *hi) {
    const float cutoff = topp_cutoff(s, n);
    /* p >= cutoff needs v >= cutoff * sum (1 - 2^-23), so v' at least this */
    const float floor = cutoff * sum * (1.0f - 4.0f * TS_EXP_APPROX_REL);
    const int maybe = s->select_at_least(s->approx, n, floor, s->prob, s->index, lo, hi);
    s->probs_exact(logits, s->index, maybe, max, sum, s->prob);
    int n0 = 0;
    *lo = INFINITY, *hi = -INFINITY;
    for (int j = 0; j < maybe; j++) {
        const float p = s->prob[j];
        if (!(p >= cutoff)) continue;
        *lo = p < *lo ? p : *lo;
        *hi = p > *hi ? p : *hi;
        s->prob[n0] = p;
        s->index[n0++] = s->index[j];
    }
    return n0;
}

static int32_t sample_topp_first_look(ts_sampler *s, float *logits, int n, float max, float sum,
                                      float coin) {
    float lo, hi;
    const int n0 = first_look_candidates(s, logits, n, max, sum, &lo, &hi);
    if (n0 == 0) { /* a cutoff above every probability: sample_topp's argmax */
        s->softmax(logits, n);
        return sample_topp(s, logits, n, coin);
    }
    return sample_candidates(s, n0, lo, hi, coin);
}

int ts__sampler_first_look_check(ts_sampler *s, const float *logits, float *prob, int *n_exact,
                                 int *n_look) {
    const int n = s->vocab_size;
    float max, sum, lo, hi;
    if (!s->exp_sum_approx || !(s->top_p > 0 && s->top_p < 1) ||
        !s->exp_sum_approx(logits, n, INFINITY, n, s->approx, &max, &sum)) {
        return 0;
    }
    /* sample_topp's selection from the exact softmax */
    memcpy(prob, logits, (size_t)n * sizeof *prob);
    s->softmax(prob, n);
    const float cutoff = topp_cutoff(s, n);
    *n_exact = s->select_at_least(prob, n, cutoff, s->prob, s->index, &lo, &hi);
    /* side by side: the exact one's first, then the first look's */
    for (int j = 0; j < *n_exact; j++) {
        prob[j] = s->prob[j];
        s->bucket_place[j] = s->index[j];
    }
    *n_look = first_look_candidates(s, logits, n, max, sum, &lo, &hi);
    int same = *n_look == *n_exact;
    for (int j = 0; same && j < *n_look; j++) {
        same = s->index[j] == s->bucket_place[j] &&
               memcmp(&s->prob[j], &prob[j], sizeof prob[j]) == 0;
    }
    return same ? 1 : -1;
}

/* a is a worse candidate than b: smaller, or as large with a higher index
 * (a NaN counts as -inf, so that the order stays one) */
static int worse(prob_index a, prob_index b) {
    float x = isnan(a.prob) ? -INFINITY : a.prob, y = isnan(b.prob) ? -INFINITY : b.prob;
    return x < y || (x == y && a.index > b.index);
}

/* Restores the heap below position i (the worst candidate at the root). */
static void sift_down(prob_index *heap, int k, int i) {
    for (;;) {
        int child = 2 * i + 1;
        if (child >= k) return;
        if (child + 1 < k && worse(heap[child + 1], heap[child])) child++;
        if (!worse(heap[child], heap[i])) return;
        prob_index t = heap[i];
        heap[i] = heap[child];
        heap[child] = t;
        i = child;
    }
}

/* Keeps exactly the k largest logits (ties: lower index first), the set a
 * stable sort by value would put first. A heap of the k best so far, its
 * worst at the root, sees every logit once: O(n) but for the few that
 * displace the root (O(n log k) at worst), where sorting all 32,000 logits
 * of a real vocabulary took a millisecond. */
static void apply_top_k(ts_sampler *s, float *logits, int n, int k) {
    prob_index *heap = s->candidates;
    for (int i = 0; i < k; i++) {
        heap[i].index = i;
        heap[i].prob = logits[i];
    }
    for (int i = k / 2 - 1; i >= 0; i--) sift_down(heap, k, i);
    for (int i = k; i < n; i++) {
        prob_index c = {.index = i, .prob = logits[i]};
        if (worse(heap[0], c)) { /* a later index never wins a tie */
            heap[0] = c;
            sift_down(heap, k, 0);
        }
    }
    for (int i = 0; i < n; i++) logits[i] = -INFINITY;
    for (int j = 0; j < k; j++) logits[heap[j].index] = heap[j].prob;
}

int32_t ts_sampler_sample(ts_sampler *s, float *logits) {
    int n = s->vocab_size;
    if (s->n_seen > 0) apply_penalties(s, logits);
    if (s->temperature == 0.0f || s->min_p >= 1.0f) return s->argmax(logits, n);
    /* x / 1 is x, bit for bit */
    if (s->temperature != 1.0f) {
        for (int i = 0; i < n; i++) logits[i] /= s->temperature;
    }
    if (s->top_k > 0 && s->top_k < n) apply_top_k(s, logits, n, s->top_k);
    if (s->min_p > 0.0f) apply_min_p(logits, n, s->min_p);
    if (s->exp_sum_approx && s->top_p > 0 && s->top_p < 1 && n >= FIRST_LOOK_MIN_VOCAB) {
        /* a candidate's logit is at least max + log(cutoff): its share of
         * the sum is at most e^(x - max); with more than n / 16 of them in
         * reach, the exact softmax costs less than the first look would */
        const float reach = 1e-3f - logf(topp_cutoff(s, n));
        float max, sum;
        if (s->exp_sum_approx(logits, n, reach, n / 16, s->approx, &max, &sum)) {
            return sample_topp_first_look(s, logits, n, max, sum, random_f32(&s->state));
        }
    }
    s->softmax(logits, n);
    float coin = random_f32(&s->state);
    if (s->top_p <= 0 || s->top_p >= 1) return sample_mult(logits, n, coin);
    return sample_topp(s, logits, n, coin);
}
