/*
 * generate.c — run.c's generate() loop as a library: a stepwise generation
 * (one printed token per ts_generation_next) and ts_generate, which drives
 * it with a per-token callback instead of printing.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ts_generation {
    ts_session *session;
    const ts_tokenizer *tokenizer;
    ts_sampler *sampler;
    int32_t *prompt;
    size_t n_prompt;
    int steps;       /* positions to evaluate at most, prompt included */
    int32_t token;   /* the token evaluated at the next position */
    int pos;         /* run.c's `pos` */
    int n_generated;
    int done;
    int started;     /* the clock runs from the end of the first position */
    double start_s;
    double end_s;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

ts_status ts_generation_start(ts_session *session, const ts_tokenizer *tokenizer,
                              ts_sampler *sampler, const int32_t *prompt, size_t n_prompt,
                              int steps, ts_generation **out, ts_error *err) {
    if (out) *out = NULL;
    if (!session || !tokenizer || !sampler || !prompt || !out) {
        return ts__fail(err, TS_ERR_ARG, "ts_generation_start: NULL argument");
    }
    const ts_config *p = &session->model->config;
    if (n_prompt < 1) {
        return ts__fail(err, TS_ERR_ARG, "the prompt needs at least 1 token (BOS)");
    }
    for (size_t i = 0; i < n_prompt; i++) {
        if (prompt[i] < 0 || prompt[i] >= p->vocab_size) {
            return ts__fail(err, TS_ERR_ARG,
                            "prompt token %d at index %zu is outside the vocabulary [0, %d)",
                            prompt[i], i, p->vocab_size);
        }
    }
    if (ts_tokenizer_vocab_size(tokenizer) < p->vocab_size) {
        /* sampled ids would have no piece to decode */
        return ts__fail(err, TS_ERR_ARG, "the tokenizer has %d entries, the model's vocabulary is %d",
                        ts_tokenizer_vocab_size(tokenizer), p->vocab_size);
    }
    ts_generation *g = calloc(1, sizeof *g);
    int32_t *copy = malloc(n_prompt * sizeof *copy);
    if (!g || !copy) {
        free(g);
        free(copy);
        return ts__fail(err, TS_ERR_NOMEM, "out of memory for a %zu-token prompt", n_prompt);
    }
    memcpy(copy, prompt, n_prompt * sizeof *copy);
    g->session = session;
    g->tokenizer = tokenizer;
    g->sampler = sampler;
    g->prompt = copy;
    g->n_prompt = n_prompt;
    g->steps = (steps <= 0 || steps > p->seq_len) ? p->seq_len : steps;
    g->token = prompt[0];
    *out = g;
    return TS_OK;
}

ts_status ts_generation_next(ts_generation *g, ts_token_event *event, ts_error *err) {
    if (!g || !event) return ts__fail(err, TS_ERR_ARG, "ts_generation_next: NULL argument");
    memset(event, 0, sizeof *event);
    while (!g->done && g->pos < g->steps) {
        ts__forward(g->session, g->token, g->pos);
        int32_t next;
        if ((size_t)g->pos + 1 < g->n_prompt) {
            next = g->prompt[g->pos + 1]; /* still inside the prompt: force it */
        } else {
            next = ts_sampler_sample(g->sampler, g->session->logits);
            g->n_generated++;
        }
        g->pos++;
        if (!g->started) {
            g->started = 1;
            g->start_s = now_s();
        }
        if (next == TS_TOKEN_BOS) break; /* BOS delimits sequences: the story ended */

        event->token = next;
        event->piece = ts_tokenizer_decode_piece(g->tokenizer, g->token, next, &event->len);
        if (!event->piece) event->piece = "";
        event->is_prompt = (size_t)g->pos < g->n_prompt;
        g->token = next;
        g->end_s = now_s();
        return TS_OK;
    }
    if (!g->done) {
        g->done = 1;
        g->end_s = now_s();
    }
    event->done = 1;
    return TS_OK;
}

ts_generate_stats ts_generation_stats(const ts_generation *g) {
    ts_generate_stats stats = {0, 0, 0.0};
    if (g) {
        stats.n_positions = g->pos;
        stats.n_generated = g->n_generated;
        stats.elapsed_s = g->started ? g->end_s - g->start_s : 0.0;
    }
    return stats;
}

void ts_generation_free(ts_generation *g) {
    if (!g) return;
    free(g->prompt);
    free(g);
}

ts_status ts_generate(ts_session *session, const ts_tokenizer *tokenizer, ts_sampler *sampler,
                      const int32_t *prompt, size_t n_prompt, int steps,
                      ts_token_callback on_token, void *user, ts_generate_stats *stats,
                      ts_error *err) {
    if (stats) *stats = ts_generation_stats(NULL);
    ts_generation *g = NULL;
    ts_status st = ts_generation_start(session, tokenizer, sampler, prompt, n_prompt, steps, &g, err);
    while (st == TS_OK) {
        ts_token_event event;
        st = ts_generation_next(g, &event, err);
        if (st != TS_OK || event.done) break;
        if (on_token && on_token(user, event.token, event.piece, event.len, event.is_prompt)) {
            st = ts__fail(err, TS_ERR_CANCELLED, "generation cancelled by the callback at position %d",
                          g->pos);
        }
    }
    if (stats) *stats = ts_generation_stats(g);
    ts_generation_free(g);
    return st;
}
