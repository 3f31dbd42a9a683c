/*
 * test_sampler.c — ts_sampler against run.c's sampler written out plainly
 * (softmax with libm's expf and sums in order, every candidate sorted,
 * linear walks), on logits shaped like a real model's (peaked, or spread
 * as a Gaussian: probabilities over orders of magnitude, and a few hundred
 * candidates among 32,000), like a random model's (near-uniform values),
 * with ties, with -inf and across temperatures, top-p values and seeds:
 * the same token every time.
 * Then the additions (penalties, min_p), each applied plainly to the
 * logits as tinystories.h orders them before run.c's procedure.
 */
#include "internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

/* ------------------------------------------------- run.c's procedure */

typedef struct ref_candidate {
    float prob;
    int index;
} ref_candidate;

/* probability descending; ties keep index order (glibc's qsort is a stable
 * merge sort, and the candidates start in index order) */
static int ref_compare(const void *a, const void *b) {
    const ref_candidate *x = a, *y = b;
    if (x->prob > y->prob) return -1;
    if (x->prob < y->prob) return 1;
    return (x->index > y->index) - (x->index < y->index);
}

static uint32_t ref_random_u32(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (uint32_t)((*state * 0x2545F4914F6CDD1DULL) >> 32);
}

static int ref_sample(float *x, int n, float temperature, float topp, uint64_t *state,
                      ref_candidate *c) {
    if (temperature == 0.0f) {
        int best = 0;
        for (int i = 1; i < n; i++) {
            if (x[i] > x[best]) best = i;
        }
        return best;
    }
    for (int i = 0; i < n; i++) x[i] /= temperature;
    float max_val = x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] > max_val) max_val = x[i];
    }
    float sum = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= sum;
    float coin = (ref_random_u32(state) >> 8) / 16777216.0f;
    if (topp <= 0 || topp >= 1) {
        float cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += x[i];
            if (coin < cdf) return i;
        }
        return n - 1;
    }
    const float cutoff = (1.0f - topp) / (n - 1);
    int n0 = 0;
    for (int i = 0; i < n; i++) {
        if (x[i] >= cutoff) {
            c[n0].index = i;
            c[n0].prob = x[i];
            n0++;
        }
    }
    if (n0 == 0) {
        /* every probability NaN (all logits -inf): run.c would read c[-1];
         * ts_sampler takes the argmax of the probabilities, index 0 */
        return 0;
    }
    qsort(c, (size_t)n0, sizeof *c, ref_compare);
    float cumulative = 0.0f;
    int last = n0 - 1;
    for (int i = 0; i < n0; i++) {
        cumulative += c[i].prob;
        if (cumulative > topp) {
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

/* -------------------------------------------------------------- logits */

static uint64_t rng = 0x9E3779B97F4A7C15ULL;

static double uniform(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0;
}

/* GAUSSIAN: probabilities over orders of magnitude, many of them candidates;
 * GAUSSIAN_WIDE: a few hundred candidates out of a vocabulary (the first look) */
enum shape { NEAR_UNIFORM, PEAKED, TIES, WITH_NEG_INF, GAUSSIAN, GAUSSIAN_WIDE, SHAPES };

static void make_logits(float *x, int n, enum shape shape) {
    for (int i = 0; i < n; i++) {
        double u = uniform();
        switch (shape) {
        case NEAR_UNIFORM: x[i] = (float)(0.05 * (u - 0.5)); break;
        case PEAKED: x[i] = (float)(-8.0 * u + (i % 97 == 0 ? 9.0 * uniform() : 0.0)); break;
        case TIES: x[i] = (float)floor(4.0 * u) * 0.5f; break;
        case WITH_NEG_INF: x[i] = u < 0.3 ? -INFINITY : (float)(3.0 * u); break;
        case GAUSSIAN:
        case GAUSSIAN_WIDE: {
            const double g = sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * uniform());
            x[i] = (float)(g * (shape == GAUSSIAN ? 2.5 : 6.0));
            break;
        }
        default: x[i] = 0.0f;
        }
    }
}

/* Flat distributions of many candidates, where the sampler sums bucket
 * counts instead of sorting: spreads from a thousandth to two nats, logits
 * on a coarse grid (so that many probabilities are equal, and many sit on
 * a bucket's edge) or not, and top-p values whose cut falls early, late or
 * never. Returns the number of draws compared. */
static int compare_flat(void) {
    const int sizes[] = {4096, 6001, 32000};
    const double spreads[] = {0.001, 0.01, 0.05, 0.2, 1.0, 2.0};
    const float top_ps[] = {0.9f, 0.5f, 0.99f, 0.01f, 0.2f, 0x1.fffffep-1f};
    int compared = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int n = sizes[si];
        float *logits = malloc((size_t)n * sizeof *logits);
        float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
        ref_candidate *cand = malloc((size_t)n * sizeof *cand);
        for (size_t di = 0; di < sizeof spreads / sizeof spreads[0]; di++) {
            for (int grid = 0; grid < 2; grid++) {
                for (size_t pi = 0; pi < sizeof top_ps / sizeof top_ps[0]; pi++) {
                    const float temperature = pi % 2 ? 1.0f : 0.9f;
                    uint64_t seed = 7 + si * 1000 + di * 100 + (uint64_t)grid * 10 + pi;
                    ts_sampling params = {.temperature = temperature, .top_p = top_ps[pi], .seed = seed};
                    ts_sampler *s = NULL;
                    ts_error err = {0};
                    CHECK(ts_sampler_new(n, &params, &s, &err) == TS_OK);
                    if (!s) continue;
                    uint64_t state = seed;
                    int same = 1;
                    for (int step = 0; step < 6; step++) {
                        for (int i = 0; i < n; i++) {
                            double u = uniform() - 0.5;
                            if (grid) u = floor(u * 64.0) / 64.0;
                            logits[i] = (float)(spreads[di] * u);
                        }
                        memcpy(a, logits, (size_t)n * sizeof *a);
                        memcpy(b, logits, (size_t)n * sizeof *b);
                        int got = ts_sampler_sample(s, a);
                        int want = ref_sample(b, n, temperature, top_ps[pi], &state, cand);
                        if (got != want) same = 0;
                        compared++;
                    }
                    if (!same) {
                        fprintf(stderr, "  flat n=%d spread=%g grid=%d top_p=%g: tokens differ\n", n,
                                spreads[di], grid, (double)top_ps[pi]);
                    }
                    CHECK(same);
                    ts_sampler_free(s);
                }
            }
        }
        free(logits);
        free(a);
        free(b);
        free(cand);
    }
    return compared;
}

/* The first look's candidates against the exact softmax's selection, token
 * for token and bit for bit (ts__sampler_first_look_check), with 64 logits
 * stepped one float apart across the one whose probability is the cutoff:
 * the candidates the approximate exponentials leave in doubt. On peaked
 * rows a step moves p by about 16 ulps; on near-flat rows with top_p
 * 1e-4 (the cutoff near 1 / n, so x - max is small) by a fraction of one,
 * so some land on the cutoff itself. Returns the number of rows compared. */
static int compare_first_look(void) {
    const int n = 32000;
    const float top_ps[] = {0.9f, 0.5f, 0.99f, 0x1.fffffep-1f, 1e-4f};
    float *x = malloc((size_t)n * sizeof *x), *scratch = malloc((size_t)n * sizeof *scratch);
    int rows = 0;
    for (int trial = 0; trial < 60; trial++) {
        const float top_p = top_ps[trial % 5];
        const int flat = trial % 5 == 4;
        ts_sampling params = {.temperature = 1.0f, .top_p = top_p, .seed = 1};
        ts_sampler *s = NULL;
        ts_error err = {0};
        CHECK(ts_sampler_new(n, &params, &s, &err) == TS_OK);
        if (!s) break;
        for (int i = 0; i < n; i++) {
            const double g = sqrt(-2.0 * log(uniform() + 1e-300)) * cos(6.283185307179586 * uniform());
            x[i] = flat ? (float)(0.01 * uniform()) : (float)(g * (trial % 3 == 0 ? 6.0 : 4.0));
        }
        /* the logit at the cutoff: max + log(cutoff * sum), from the exact sum */
        for (int round = 0; round < 2; round++) {
            float max = x[0], sum = 0.0f;
            for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
            for (int i = 0; i < n; i++) sum += expf(x[i] - max);
            const float cutoff = (1.0f - top_p) / (n - 1);
            float t = max + logf(cutoff * sum);
            for (int k = 0; k < 32; k++) t = nextafterf(t, -INFINITY);
            for (int k = 0; k < 64; k++, t = nextafterf(t, INFINITY)) x[(k * 499 + trial) % n] = t;
        }
        int n_exact = 0, n_look = 0;
        const int same = ts__sampler_first_look_check(s, x, scratch, &n_exact, &n_look);
        if (same == 0) { /* no first look in this kernel set */
            ts_sampler_free(s);
            break;
        }
        if (same != 1) {
            fprintf(stderr, "  first look trial %d top_p=%g: %d candidates, exact %d\n", trial,
                    (double)top_p, n_look, n_exact);
        }
        CHECK(same == 1);
        rows++;
        ts_sampler_free(s);
    }
    free(x), free(scratch);
    return rows;
}

/* The additions written out from tinystories.h's order: `history` is the
 * sequence (prompt first, n_prompt of it), then run.c's procedure. */
static int ref_sample_with(float *x, int n, const ts_sampling *p, const int *history,
                           int n_history, int n_prompt, uint64_t *state, ref_candidate *c) {
    int *count = calloc((size_t)n, sizeof *count);
    char *seen = calloc((size_t)n, 1);
    for (int i = 0; i < n_history; i++) {
        seen[history[i]] = 1;
        if (i >= n_prompt) count[history[i]]++;
    }
    for (int t = 0; t < n; t++) {
        if (!seen[t]) continue;
        if (p->repetition_penalty != 0.0f && p->repetition_penalty != 1.0f) {
            x[t] = x[t] > 0.0f ? x[t] / p->repetition_penalty : x[t] * p->repetition_penalty;
        }
        if (count[t] > 0) x[t] -= p->presence_penalty + (float)count[t] * p->frequency_penalty;
    }
    free(count);
    free(seen);
    if (p->min_p >= 1.0f) return ref_sample(x, n, 0.0f, p->top_p, state, c);
    if (p->temperature != 0.0f && p->min_p > 0.0f) {
        float max = -INFINITY;
        for (int i = 0; i < n; i++) {
            if (p->temperature != 1.0f) x[i] /= p->temperature;
            if (x[i] > max) max = x[i];
        }
        for (int i = 0; i < n; i++) {
            if (x[i] < max + logf(p->min_p)) x[i] = -INFINITY;
        }
        return ref_sample(x, n, 1.0f, p->top_p, state, c);
    }
    return ref_sample(x, n, p->temperature, p->top_p, state, c);
}

/* Penalties and min_p over sequences sampled step by step. */
static int compare_additions(void) {
    const int sizes[] = {7, 105, 32000};
    const ts_sampling cases[] = {
        /* temperature, top_p, top_k, seed, min_p, repetition, presence, frequency */
        {1.0f, 0.9f, 0, 11, 0.0f, 1.3f, 0.0f, 0.0f},
        {0.8f, 0.0f, 0, 12, 0.0f, 0.7f, 0.0f, 0.0f},
        {1.0f, 0.9f, 0, 13, 0.0f, 0.0f, 0.6f, 0.3f},
        {0.0f, 0.9f, 0, 14, 0.0f, 1.5f, 1.0f, 0.5f},
        {1.0f, 0.0f, 0, 15, 0.2f, 0.0f, 0.0f, 0.0f},
        {1.7f, 0.9f, 0, 16, 0.05f, 1.1f, -0.5f, 0.2f},
        {1.3f, 0.9f, 0, 17, 1.0f, 0.0f, 0.0f, 0.0f},
    };
    int compared = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *logits = malloc((size_t)n * sizeof *logits);
        float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
        ref_candidate *cand = malloc((size_t)n * sizeof *cand);
        enum { PROMPT = 5, STEPS = 30 };
        int history[PROMPT + STEPS];
        for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
            const ts_sampling *p = &cases[ci];
            for (int shape = 0; shape < SHAPES; shape++) {
                ts_sampler *s = NULL;
                ts_error err = {0};
                CHECK(ts_sampler_new(n, p, &s, &err) == TS_OK);
                if (!s) continue;
                uint64_t state = p->seed;
                int n_history = 0, same = 1;
                ts_sampler_clear(s);
                for (int i = 0; i < PROMPT; i++) {
                    history[n_history++] = (i * 7919) % n;
                    ts_sampler_accept(s, history[n_history - 1], 1);
                }
                for (int step = 0; step < STEPS; step++) {
                    make_logits(logits, n, (enum shape)shape);
                    /* peaked logits over a small vocabulary: the penalties must bite */
                    memcpy(a, logits, (size_t)n * sizeof *a);
                    memcpy(b, logits, (size_t)n * sizeof *b);
                    int got = ts_sampler_sample(s, a);
                    int want =
                        ref_sample_with(b, n, p, history, n_history, PROMPT, &state, cand);
                    if (got != want) same = 0;
                    ts_sampler_accept(s, got, 0);
                    history[n_history++] = got;
                    compared++;
                }
                if (!same) {
                    fprintf(stderr, "  additions: n=%d case=%zu shape=%d: tokens differ\n", n, ci,
                            shape);
                }
                CHECK(same);
                ts_sampler_free(s);
            }
        }
        free(logits);
        free(a);
        free(b);
        free(cand);
    }
    return compared;
}

/* The penalties change the draw the way their definition says, seen from
 * outside: a heavy repetition penalty on a greedy sampler never picks a
 * token twice while unseen ones are left; min_p = 1 is greedy at any
 * temperature. */
static void check_effects(void) {
    enum { N = 12 };
    ts_sampling rep = {0.0f, 0.9f, 0, 3, 0.0f, 1000.0f, 0.0f, 0.0f};
    ts_sampler *s = NULL;
    ts_error err = {0};
    CHECK(ts_sampler_new(N, &rep, &s, &err) == TS_OK);
    int used[N] = {0};
    for (int step = 0; s && step < N; step++) {
        float x[N];
        for (int i = 0; i < N; i++) x[i] = 1.0f + (float)i * 0.01f; /* positive: divided */
        int t = ts_sampler_sample(s, x);
        CHECK(!used[t]);
        used[t] = 1;
        ts_sampler_accept(s, t, 0);
    }
    ts_sampler_free(s);

    ts_sampling minp = {2.0f, 0.0f, 0, 9, 1.0f, 0.0f, 0.0f, 0.0f};
    CHECK(ts_sampler_new(N, &minp, &s, &err) == TS_OK);
    for (int step = 0; s && step < 100; step++) {
        float x[N];
        for (int i = 0; i < N; i++) x[i] = (float)((i * 5) % N);
        CHECK(ts_sampler_sample(s, x) == 7); /* (7 * 5) % 12 == 11 is the largest */
    }
    ts_sampler_free(s);
}

int main(void) {
    const int sizes[] = {2, 7, 105, 512, 32000};
    const float temperatures[] = {1.0f, 0.8f, 1.7f, 0.0f};
    /* 0x1.fffffep-1: the float below 1, where the sum often never passes it */
    const float top_ps[] = {0.9f, 0.5f, 0.99f, 0x1.fffffep-1f, 0.0f, 1.0f};
    int compared = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        int n = sizes[si];
        float *logits = malloc((size_t)n * sizeof *logits);
        float *a = malloc((size_t)n * sizeof *a), *b = malloc((size_t)n * sizeof *b);
        ref_candidate *cand = malloc((size_t)n * sizeof *cand);
        for (int shape = 0; shape < SHAPES; shape++) {
            for (size_t ti = 0; ti < sizeof temperatures / sizeof temperatures[0]; ti++) {
                for (size_t pi = 0; pi < sizeof top_ps / sizeof top_ps[0]; pi++) {
                    uint64_t seed = 1 + si * 1000 + (uint64_t)shape * 100 + ti * 10 + pi;
                    ts_sampling params = {.temperature = temperatures[ti], .top_p = top_ps[pi], .top_k = 0, .seed = seed};
                    ts_sampler *s = NULL;
                    ts_error err = {0};
                    CHECK(ts_sampler_new(n, &params, &s, &err) == TS_OK);
                    if (!s) continue;
                    uint64_t state = seed;
                    int steps = n >= 32000 ? 12 : 40, same = 1;
                    for (int step = 0; step < steps; step++) {
                        make_logits(logits, n, (enum shape)shape);
                        memcpy(a, logits, (size_t)n * sizeof *a);
                        memcpy(b, logits, (size_t)n * sizeof *b);
                        int got = ts_sampler_sample(s, a);
                        int want = ref_sample(b, n, temperatures[ti], top_ps[pi], &state, cand);
                        if (got != want) same = 0;
                        compared++;
                    }
                    if (!same) {
                        fprintf(stderr, "  n=%d shape=%d temperature=%g top_p=%g: tokens differ\n", n,
                                shape, (double)temperatures[ti], (double)top_ps[pi]);
                    }
                    CHECK(same);
                    ts_sampler_free(s);
                }
            }
        }
        free(logits);
        free(a);
        free(b);
        free(cand);
    }
    printf("%d draws compared with run.c's procedure\n", compared);
    printf("%d draws of flat distributions compared\n", compare_flat());
    printf("%d draws with penalties and min_p compared\n", compare_additions());
    printf("%d first-look candidate sets compared\n", compare_first_look());
    check_effects();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
