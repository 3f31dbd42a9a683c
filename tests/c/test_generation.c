/*
 * test_generation.c — ts_generate_options on the real tok105 model: stop
 * tokens, finish reasons, log-probabilities against the session's own
 * logits, the context shift, batch cancellation, and a batch giving each
 * request exactly what it gets alone with the same options.
 */
#include "tinystories.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"

enum { MAX_TOKENS = 2048, TOP = 5 };

typedef struct run {
    int32_t tokens[MAX_TOKENS]; /* sampled (printed) tokens */
    float logprob[MAX_TOKENS];
    int32_t top[MAX_TOKENS][TOP];
    float top_lp[MAX_TOKENS][TOP];
    int n_top;
    int n;
    int finish;
    ts_generate_stats stats;
} run;

static void record(run *r, const ts_token_event *e) {
    if (e->done) {
        r->finish = e->finish_reason;
        return;
    }
    if (e->is_prompt || r->n >= MAX_TOKENS) return;
    r->tokens[r->n] = e->token;
    r->logprob[r->n] = e->logprob;
    r->n_top = e->n_top;
    for (int k = 0; k < e->n_top && k < TOP; k++) {
        r->top[r->n][k] = e->top_tokens[k];
        r->top_lp[r->n][k] = e->top_logprobs[k];
    }
    r->n++;
}

/* One generation through ts_generation_next into *r. */
static ts_status generate(ts_model *m, ts_tokenizer *t, const ts_sampling *sp, const int32_t *prompt,
                          size_t n_prompt, int steps, const ts_generate_options *o, run *r) {
    memset(r, 0, sizeof *r);
    ts_error err = {0};
    ts_session *s = NULL;
    ts_sampler *smp = NULL;
    ts_generation *g = NULL;
    ts_status st = ts_session_new(m, 1, &s, &err);
    if (st == TS_OK) st = ts_sampler_new(ts_model_config(m)->vocab_size, sp, &smp, &err);
    if (st == TS_OK) st = ts_generation_start(s, t, smp, prompt, n_prompt, steps, o, &g, &err);
    while (st == TS_OK) {
        ts_token_event e;
        st = ts_generation_next(g, &e, &err);
        if (st != TS_OK) break;
        record(r, &e);
        if (e.done) break;
    }
    r->stats = ts_generation_stats(g);
    ts_generation_free(g);
    ts_sampler_free(smp);
    ts_session_free(s);
    return st;
}

static int same_run(const run *a, const run *b) {
    if (a->n != b->n || a->finish != b->finish) return 0;
    for (int i = 0; i < a->n; i++) {
        if (a->tokens[i] != b->tokens[i] || a->logprob[i] != b->logprob[i]) return 0;
    }
    return 1;
}

static const int32_t prompt[] = {1, 3, 4, 5};
enum { N_PROMPT = 4 };

static void test_stop_tokens(ts_model *m, ts_tokenizer *t) {
    const int seq_len = ts_model_config(m)->seq_len;
    ts_sampling greedy = {.seed = 1};
    const int32_t none[1] = {0};
    ts_generate_options no_stop = {.stop_tokens = none, .n_stop_tokens = 0};
    run all, cut;
    /* no stop tokens: every position, even past a sampled BOS */
    CHECK(generate(m, t, &greedy, prompt, N_PROMPT, 0, &no_stop, &all) == TS_OK);
    CHECK(all.n == 0 && all.finish == TS_FINISH_LENGTH);
    CHECK(generate(m, t, &greedy, prompt, N_PROMPT, seq_len, &no_stop, &all) == TS_OK);
    CHECK(all.n == seq_len - (N_PROMPT - 1) && all.finish == TS_FINISH_LENGTH);
    CHECK(all.stats.finish_reason == TS_FINISH_LENGTH && all.stats.n_positions == seq_len);
    /* stopping at the first occurrence of the 10th token's id */
    int32_t stop = all.tokens[10];
    int first = 0;
    while (all.tokens[first] != stop) first++;
    ts_generate_options o = {.stop_tokens = &stop, .n_stop_tokens = 1};
    CHECK(generate(m, t, &greedy, prompt, N_PROMPT, seq_len, &o, &cut) == TS_OK);
    if (cut.n != first) fprintf(stderr, "  stop %d: %d tokens, want %d (finish %d)\n", stop, cut.n, first, cut.finish);
    CHECK(cut.n == first && cut.finish == TS_FINISH_STOP);
    CHECK(memcmp(cut.tokens, all.tokens, (size_t)first * sizeof *cut.tokens) == 0);
    /* the default (NULL) is run.c's {BOS} */
    run dflt, bos;
    int32_t bos_id = TS_TOKEN_BOS;
    ts_generate_options only_bos = {.stop_tokens = &bos_id, .n_stop_tokens = 1};
    ts_sampling sampled = {.temperature = 1.0f, .top_p = 0.9f, .seed = 5};
    CHECK(generate(m, t, &sampled, prompt, N_PROMPT, seq_len, NULL, &dflt) == TS_OK);
    CHECK(generate(m, t, &sampled, prompt, N_PROMPT, seq_len, &only_bos, &bos) == TS_OK);
    CHECK(same_run(&dflt, &bos));
    /* a stop id outside the vocabulary is an argument error */
    int32_t bad = 1000;
    ts_generate_options o_bad = {.stop_tokens = &bad, .n_stop_tokens = 1};
    CHECK(generate(m, t, &greedy, prompt, N_PROMPT, 10, &o_bad, &cut) == TS_ERR_ARG);
}

/* Each sampled token's log-probability and top list against the log-softmax
 * of ts_session_eval's logits for the same tokens (teacher-forced). */
static void test_logprobs(ts_model *m, ts_tokenizer *t) {
    const int vocab = ts_model_config(m)->vocab_size;
    ts_sampling sp = {.temperature = 1.0f, .top_p = 0.9f, .seed = 77, .repetition_penalty = 1.3f};
    ts_generate_options o = {.logprobs = 1, .top_logprobs = TOP};
    run r;
    CHECK(generate(m, t, &sp, prompt, N_PROMPT, 60, &o, &r) == TS_OK);
    CHECK(r.n > 10 && r.n_top == TOP);
    int32_t ids[64];
    memcpy(ids, prompt, sizeof prompt);
    memcpy(ids + N_PROMPT, r.tokens, (size_t)r.n * sizeof *ids);
    int n_ids = N_PROMPT + r.n - 1; /* the logits after each token up to the last sampled one's */
    float *logits = malloc((size_t)n_ids * (size_t)vocab * sizeof *logits);
    ts_error err = {0};
    ts_session *s = NULL;
    CHECK(ts_session_new(m, 1, &s, &err) == TS_OK);
    CHECK(s && ts_session_eval(s, ids, (size_t)n_ids, 0, logits, &err) == TS_OK);
    double worst = 0.0;
    for (int i = 0; s && i < r.n; i++) {
        const float *x = logits + (size_t)(N_PROMPT - 1 + i) * (size_t)vocab;
        double max = x[0], z = 0.0;
        for (int v = 1; v < vocab; v++) max = x[v] > max ? x[v] : max;
        for (int v = 0; v < vocab; v++) z += exp((double)x[v] - max);
        double lz = max + log(z);
        worst = fmax(worst, fabs(r.logprob[i] - ((double)x[r.tokens[i]] - lz)));
        for (int k = 0; k < TOP; k++) {
            int32_t id = r.top[i][k];
            worst = fmax(worst, fabs(r.top_lp[i][k] - ((double)x[id] - lz)));
            /* descending; nothing outside the list beats its last */
            if (k) CHECK(r.top_lp[i][k] <= r.top_lp[i][k - 1]);
        }
        for (int v = 0; v < vocab; v++) {
            int in = 0;
            for (int k = 0; k < TOP; k++) in |= r.top[i][k] == v;
            if (!in) CHECK(x[v] <= x[r.top[i][TOP - 1]]);
        }
    }
    CHECK(worst < 1e-4);
    ts_session_free(s);
    free(logits);
    o.top_logprobs = TS_MAX_TOP_LOGPROBS + 1;
    CHECK(generate(m, t, &sp, prompt, N_PROMPT, 60, &o, &r) == TS_ERR_ARG);
}

/* Past the context: generation goes on, and the tokens after a shift are
 * what a fresh session over the kept window predicts (greedy). */
static void test_context_shift(ts_model *m, ts_tokenizer *t) {
    const int seq_len = ts_model_config(m)->seq_len, vocab = ts_model_config(m)->vocab_size;
    const int32_t none[1] = {0};
    ts_sampling greedy = {.seed = 1};
    ts_generate_options o = {.stop_tokens = none, .n_stop_tokens = 0, .context_shift = 1, .n_keep = 1};
    const int steps = 3 * seq_len;
    run r;
    CHECK(generate(m, t, &greedy, prompt, N_PROMPT, steps, &o, &r) == TS_OK);
    CHECK(r.n == steps - (N_PROMPT - 1) && r.finish == TS_FINISH_LENGTH);
    CHECK(r.stats.n_shifts >= 4 && r.stats.n_positions == steps);
    /* the reference: the first shift happens when position seq_len is to
     * be evaluated; the window is then BOS + the last (seq_len - 1) / 2
     * tokens, and the next token is the argmax after it */
    int32_t *all = malloc((size_t)(steps + 1) * sizeof *all);
    memcpy(all, prompt, sizeof prompt);
    memcpy(all + N_PROMPT, r.tokens, (size_t)r.n * sizeof *all);
    int recent = (seq_len - 1) / 2, cur = seq_len; /* all[cur] is evaluated after the shift */
    int32_t *window = malloc((size_t)seq_len * sizeof *window);
    window[0] = all[0];
    memcpy(window + 1, all + cur - recent + 1, (size_t)recent * sizeof *window);
    float *logits = malloc((size_t)(recent + 1) * (size_t)vocab * sizeof *logits);
    ts_error err = {0};
    ts_session *s = NULL;
    CHECK(ts_session_new(m, 1, &s, &err) == TS_OK);
    CHECK(s && ts_session_eval(s, window, (size_t)recent + 1, 0, logits, &err) == TS_OK);
    const float *x = logits + (size_t)recent * (size_t)vocab;
    int best = 0;
    for (int v = 1; v < vocab; v++) best = x[v] > x[best] ? v : best;
    CHECK(best == all[cur + 1]);
    ts_session_free(s);
    free(logits);
    free(window);
    free(all);
    /* n_keep must leave room */
    o.n_keep = seq_len / 2 + 1;
    CHECK(generate(m, t, &greedy, prompt, N_PROMPT, steps, &o, &r) == TS_ERR_ARG);
}

/* A batch gives each request what it gets alone with the same sampling
 * and options; cancelled requests end with TS_FINISH_CANCELLED. */
static void test_batch(ts_model *m, ts_tokenizer *t) {
    const int seq_len = ts_model_config(m)->seq_len;
    const int32_t eos = TS_TOKEN_EOS, stops[2] = {TS_TOKEN_BOS, 40};
    enum { N = 5 };
    ts_sampling sp[N] = {
        {.temperature = 0.9f, .top_p = 0.9f, .seed = 3, .presence_penalty = 0.5f, .frequency_penalty = 0.2f},
        {.temperature = 1.0f, .top_p = 0.0f, .seed = 4, .min_p = 0.1f},
        {.seed = 5, .repetition_penalty = 1.2f},
        {.temperature = 1.0f, .top_p = 0.9f, .seed = 6},
        {.temperature = 1.0f, .top_p = 0.9f, .seed = 7},
    };
    ts_generate_options opts[N] = {
        {.logprobs = 1, .top_logprobs = 3},
        {.stop_tokens = stops, .n_stop_tokens = 2},
        {.stop_tokens = &eos, .n_stop_tokens = 1, .context_shift = 1, .n_keep = 3},
        {0},
        {0},
    };
    int steps[N] = {200, seq_len, 2 * seq_len + 7, 100, 100};
    run want[N];
    for (int i = 0; i < N; i++) {
        CHECK(generate(m, t, &sp[i], prompt, N_PROMPT, steps[i], &opts[i], &want[i]) == TS_OK);
    }
    CHECK(want[2].stats.n_shifts > 0);
    ts_error err = {0};
    ts_batch_generation *b = NULL;
    CHECK(ts_batch_generation_new(m, t, 2, 2, &b, &err) == TS_OK);
    if (!b) return;
    for (int i = 0; i < N; i++) {
        int id = -1;
        CHECK(ts_batch_generation_add(b, prompt, N_PROMPT, steps[i], &sp[i], &opts[i], &id, &err) == TS_OK);
        CHECK(id == i);
    }
    CHECK(ts_batch_generation_cancel(b, N, &err) == TS_ERR_ARG);
    CHECK(ts_batch_generation_cancel(b, 4, &err) == TS_OK); /* still queued */
    static run got[N];
    memset(got, 0, sizeof got);
    ts_batch_event events[2];
    size_t n = 0;
    int active = 1, rounds = 0;
    while (active > 0 && rounds++ < 10000) {
        CHECK(ts_batch_generation_step(b, events, &n, &active, &err) == TS_OK);
        for (size_t k = 0; k < n; k++) {
            record(&got[events[k].id], &events[k].event);
            /* request 3 is cancelled after its 5th token */
            if (events[k].id == 3 && got[3].n == 5 && !events[k].event.done) {
                CHECK(ts_batch_generation_cancel(b, 3, &err) == TS_OK);
            }
        }
    }
    CHECK(active == 0);
    for (int i = 0; i < 3; i++) {
        if (!same_run(&got[i], &want[i])) fprintf(stderr, "  batch request %d differs\n", i);
        CHECK(same_run(&got[i], &want[i]));
    }
    CHECK(got[3].n == 5 && got[3].finish == TS_FINISH_CANCELLED);
    CHECK(memcmp(got[3].tokens, want[3].tokens, 5 * sizeof(int32_t)) == 0);
    CHECK(got[4].n == 0 && got[4].finish == TS_FINISH_CANCELLED);
    CHECK(ts_batch_generation_cancel(b, 0, &err) == TS_OK); /* already ended: no effect */
    ts_batch_generation_free(b);
}

/* Prompts longer than a step's prefill chunk: evaluated over several
 * steps while another request decodes, with the same tokens as alone. */
static void test_batch_long_prompts(ts_model *m, ts_tokenizer *t) {
    enum { LONG = 200 };
    int32_t long_prompt[LONG];
    long_prompt[0] = TS_TOKEN_BOS;
    for (int i = 1; i < LONG; i++) long_prompt[i] = 3 + (i * 37) % 90;
    ts_sampling sp = {.temperature = 0.8f, .top_p = 0.9f, .seed = 21};
    run want_long, want_short;
    CHECK(generate(m, t, &sp, long_prompt, LONG, LONG + 40, NULL, &want_long) == TS_OK);
    CHECK(generate(m, t, &sp, prompt, N_PROMPT, 60, NULL, &want_short) == TS_OK);
    ts_error err = {0};
    ts_batch_generation *b = NULL;
    CHECK(ts_batch_generation_new(m, t, 2, 1, &b, &err) == TS_OK);
    if (!b) return;
    int id = -1;
    CHECK(ts_batch_generation_add(b, prompt, N_PROMPT, 60, &sp, NULL, &id, &err) == TS_OK);
    CHECK(ts_batch_generation_add(b, long_prompt, LONG, LONG + 40, &sp, NULL, &id, &err) == TS_OK);
    static run got[2];
    memset(got, 0, sizeof got);
    ts_batch_event events[2];
    size_t n = 0;
    int active = 1, rounds = 0, long_started = 0, short_events_before = 0;
    while (active > 0 && rounds++ < 10000) {
        CHECK(ts_batch_generation_step(b, events, &n, &active, &err) == TS_OK);
        for (size_t k = 0; k < n; k++) {
            record(&got[events[k].id], &events[k].event);
            if (events[k].id == 1) long_started = 1;
            if (events[k].id == 0 && !long_started) short_events_before++;
        }
    }
    /* the long prompt went in over ceil(200 / 64) = 4 steps, the short
     * request printing at each of them */
    CHECK(short_events_before == 4);
    CHECK(same_run(&got[0], &want_short));
    CHECK(same_run(&got[1], &want_long));
    ts_batch_generation_free(b);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : getenv("TS_TEST_MODEL_DIR");
    if (!dir || !*dir) {
        printf("note: no model directory given, skipping\n");
        return 0;
    }
    char mpath[1024], qpath[1024], tpath[1024];
    snprintf(mpath, sizeof mpath, "%s/model5000.bin", dir);
    snprintf(qpath, sizeof qpath, "%s/model5000_q80.bin", dir);
    snprintf(tpath, sizeof tpath, "%s/tok105.bin", dir);
    ts_error err = {0};
    ts_tokenizer *t = NULL;
    if (ts_tokenizer_load(tpath, &t, &err) != TS_OK) {
        fprintf(stderr, "%s\n", err.message);
        return 1;
    }
    const char *paths[] = {mpath, qpath};
    for (int i = 0; i < 2; i++) {
        ts_model *m = NULL;
        if (ts_model_load(paths[i], &m, &err) != TS_OK) {
            fprintf(stderr, "%s\n", err.message);
            failures++;
            continue;
        }
        test_stop_tokens(m, t);
        test_logprobs(m, t);
        test_context_shift(m, t);
        test_batch(m, t);
        test_batch_long_prompts(m, t);
        ts_model_free(m);
    }
    ts_tokenizer_free(t);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
