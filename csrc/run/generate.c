/*
 * generate.c — run.c's generate() loop as a library: a stepwise generation
 * (one printed token per ts_generation_next), ts_generate, which drives it
 * with a per-token callback instead of printing, and batched generation,
 * which steps many sequences through one forward pass.
 *
 * Both drive run.c's loop through ts_sequence (sequence.c); the only
 * difference from run.c is that the prompt is evaluated as one block,
 * which gives the same logits (see ts_session_eval).
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --------------------------------------------------- single generation */

struct ts_generation {
    ts_session *session;
    const ts_tokenizer *tokenizer;
    ts_sampler *sampler;
    ts_sequence seq;
    int started;     /* the clock runs from the end of the first evaluation */
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
                              int steps, const ts_generate_options *options,
                              ts_generation **out, ts_error *err) {
    if (out) *out = NULL;
    if (!session || !tokenizer || !sampler || !prompt || !out) {
        return ts__fail(err, TS_ERR_ARG, "ts_generation_start: NULL argument");
    }
    ts_generation *g = calloc(1, sizeof *g);
    if (!g) return ts__fail(err, TS_ERR_NOMEM, "ts_generation_start: out of memory");
    ts_status st = ts__sequence_init(&g->seq, &session->model->config, tokenizer, prompt, n_prompt,
                                     steps, options, err);
    if (st != TS_OK) {
        free(g);
        return st;
    }
    ts__sequence_attach(&g->seq, sampler);
    g->session = session;
    g->tokenizer = tokenizer;
    g->sampler = sampler;
    *out = g;
    return TS_OK;
}

ts_status ts_generation_next(ts_generation *g, ts_token_event *event, ts_error *err) {
    if (!g || !event) return ts__fail(err, TS_ERR_ARG, "ts_generation_next: NULL argument");
    ts_sequence *q = &g->seq;
    const int32_t *tokens = NULL;
    int n = ts__sequence_pending(q, &tokens);
    if (n > 0) {
        ts_status st = ts_session_eval(g->session, tokens, (size_t)n, q->cached, NULL, err);
        if (st != TS_OK) return st;
        q->cached += n;
        if (!g->started) {
            g->started = 1;
            g->start_s = now_s();
        }
    }
    int was_done = q->done;
    ts__sequence_step(q, g->sampler, g->session->logits, g->tokenizer, event);
    if (!was_done) g->end_s = now_s();
    return TS_OK;
}

ts_generate_stats ts_generation_stats(const ts_generation *g) {
    ts_generate_stats stats = {0};
    if (g) {
        stats.n_positions = g->seq.pos;
        stats.n_generated = g->seq.n_generated;
        stats.n_shifts = g->seq.n_shifts;
        stats.finish_reason = g->seq.done ? g->seq.finish_reason : 0;
        stats.elapsed_s = g->started ? g->end_s - g->start_s : 0.0;
    }
    return stats;
}

void ts_generation_free(ts_generation *g) {
    if (!g) return;
    ts__sequence_release(&g->seq);
    free(g);
}

ts_status ts_generate(ts_session *session, const ts_tokenizer *tokenizer, ts_sampler *sampler,
                      const int32_t *prompt, size_t n_prompt, int steps,
                      const ts_generate_options *options, ts_token_callback on_token, void *user,
                      ts_generate_stats *stats, ts_error *err) {
    if (stats) *stats = ts_generation_stats(NULL);
    ts_generation *g = NULL;
    ts_status st = ts_generation_start(session, tokenizer, sampler, prompt, n_prompt, steps, options,
                                       &g, err);
    while (st == TS_OK) {
        ts_token_event event;
        st = ts_generation_next(g, &event, err);
        if (st != TS_OK || event.done) break;
        if (on_token && on_token(user, event.token, event.piece, event.len, event.is_prompt)) {
            st = ts__fail(err, TS_ERR_CANCELLED, "generation cancelled by the callback at position %d",
                          g->seq.pos);
        }
    }
    if (stats) *stats = ts_generation_stats(g);
    ts_generation_free(g);
    return st;
}

/* -------------------------------------------------- batched generation */

typedef struct request {
    ts_sequence seq;   /* initialised when added; runs once it has a slot */
    ts_sampling sampling;
} request;

typedef struct slot {
    int id;            /* the request running here, or -1 */
    ts_sampler *sampler;
    ts_kv kv;          /* as a session's */
    float *logits;     /* (vocab) after the slot's last evaluated position: its row of
                        * the batch generation's logits */
} slot;

struct ts_batch_generation {
    const ts_model *model;
    const ts_tokenizer *tokenizer;
    ts_batch *batch;
    ts_row *rows;      /* the batch's capacity */
    int max_batch;
    slot *slots;       /* max_batch */
    float *logits;     /* (max_batch, vocab) the slots' logits, one after another, so
                        * that a step of every slot writes them in place (forward.c) */
    request *requests; /* all added, in order */
    int n_requests;
    int cap_requests;
    int next_request;  /* the first not yet given a slot */
};

/* Smallest forward call used for many sequences' prompts at once. */
#define TS_BATCH_MIN_ROWS 64
/* The most prompt tokens of one sequence a step evaluates. */
#define TS_BATCH_PREFILL_CHUNK 64

ts_status ts_batch_generation_new(const ts_model *model, const ts_tokenizer *tokenizer,
                                  int max_batch, int n_threads, ts_batch_generation **out,
                                  ts_error *err) {
    if (out) *out = NULL;
    if (!model || !tokenizer || !out) {
        return ts__fail(err, TS_ERR_ARG, "ts_batch_generation_new: NULL argument");
    }
    if (max_batch < 1 || max_batch > 4096) {
        return ts__fail(err, TS_ERR_ARG, "max_batch %d must be in [1, 4096]", max_batch);
    }
    const ts_config *p = &model->config;
    ts_batch_generation *bg = calloc(1, sizeof *bg);
    if (!bg) return ts__fail(err, TS_ERR_NOMEM, "ts_batch_generation_new: out of memory");
    bg->model = model;
    bg->tokenizer = tokenizer;
    bg->max_batch = max_batch;
    const int capacity = max_batch > TS_BATCH_MIN_ROWS ? max_batch : TS_BATCH_MIN_ROWS;
    bg->batch = ts__batch_take(model, capacity, ts__team_threads(model, n_threads));
    bg->rows = calloc((size_t)capacity, sizeof *bg->rows);
    bg->slots = calloc((size_t)max_batch, sizeof *bg->slots);
    bg->logits = ts__calloc_floats((uint64_t)max_batch, (uint64_t)p->vocab_size, 1);
    int ok = bg->batch && bg->rows && bg->slots && bg->logits;
    for (int i = 0; ok && i < max_batch; i++) {
        slot *s = &bg->slots[i];
        s->id = -1;
        s->kv = ts__kv_take(model);
        s->logits = bg->logits + (size_t)i * (size_t)p->vocab_size;
        ok = s->kv.keys != NULL;
    }
    if (!ok) {
        ts_batch_generation_free(bg);
        return ts__fail(err, TS_ERR_NOMEM, "out of memory for %d sequences' KV caches", max_batch);
    }
    *out = bg;
    return TS_OK;
}

void ts_batch_generation_free(ts_batch_generation *bg) {
    if (!bg) return;
    ts__batch_give(bg->model, bg->batch);
    free(bg->rows);
    for (int i = 0; bg->slots && i < bg->max_batch; i++) {
        ts_sampler_free(bg->slots[i].sampler);
        ts__kv_give(bg->model, bg->slots[i].kv);
    }
    free(bg->slots);
    ts__free_floats(bg->logits);
    for (int i = 0; i < bg->n_requests; i++) ts__sequence_release(&bg->requests[i].seq);
    free(bg->requests);
    free(bg);
}

ts_status ts_batch_generation_add(ts_batch_generation *bg, const int32_t *prompt,
                                  size_t n_prompt, int steps, const ts_sampling *sampling,
                                  const ts_generate_options *options, int *id, ts_error *err) {
    if (!bg || !sampling) return ts__fail(err, TS_ERR_ARG, "ts_batch_generation_add: NULL argument");
    if (bg->n_requests == bg->cap_requests) {
        int cap = bg->cap_requests ? 2 * bg->cap_requests : 16;
        request *grown = realloc(bg->requests, (size_t)cap * sizeof *grown);
        if (!grown) return ts__fail(err, TS_ERR_NOMEM, "out of memory for requests");
        bg->requests = grown;
        bg->cap_requests = cap;
    }
    /* check the sampling parameters now rather than when the request starts */
    ts_sampler *check = NULL;
    ts_status st = ts_sampler_new(bg->model->config.vocab_size, sampling, &check, err);
    ts_sampler_free(check);
    if (st != TS_OK) return st;
    request *r = &bg->requests[bg->n_requests];
    st = ts__sequence_init(&r->seq, &bg->model->config, bg->tokenizer, prompt, n_prompt, steps,
                           options, err);
    if (st != TS_OK) return st;
    r->sampling = *sampling;
    if (id) *id = bg->n_requests;
    bg->n_requests++;
    return TS_OK;
}

ts_status ts_batch_generation_cancel(ts_batch_generation *bg, int id, ts_error *err) {
    if (!bg) return ts__fail(err, TS_ERR_ARG, "ts_batch_generation_cancel: NULL argument");
    if (id < 0 || id >= bg->n_requests) {
        return ts__fail(err, TS_ERR_ARG, "request %d was never added (%d so far)", id,
                        bg->n_requests);
    }
    ts__sequence_finish(&bg->requests[id].seq, TS_FINISH_CANCELLED);
    return TS_OK;
}

ts_status ts_batch_generation_step(ts_batch_generation *bg, ts_batch_event *events,
                                   size_t *n_events, int *active, ts_error *err) {
    if (!bg || !events || !n_events) {
        return ts__fail(err, TS_ERR_ARG, "ts_batch_generation_step: NULL argument");
    }
    *n_events = 0;
    const ts_config *p = &bg->model->config;

    /* queued requests take the free slots */
    for (int i = 0; i < bg->max_batch && bg->next_request < bg->n_requests; i++) {
        slot *s = &bg->slots[i];
        if (s->id >= 0) continue;
        request *r = &bg->requests[bg->next_request];
        ts_status st = ts_sampler_new(p->vocab_size, &r->sampling, &s->sampler, err);
        if (st != TS_OK) return st;
        ts__sequence_attach(&r->seq, s->sampler);
        s->id = bg->next_request++;
    }

    /* one forward pass (in blocks of the batch's capacity) over every
     * slot's pending positions, in order within each sequence; a long
     * prompt goes in chunks over several steps, so that the others keep
     * their pace meanwhile */
    int capacity = ts__batch_capacity(bg->batch), n_rows = 0;
    for (int i = 0; i < bg->max_batch; i++) {
        slot *s = &bg->slots[i];
        if (s->id < 0) continue;
        ts_sequence *q = &bg->requests[s->id].seq;
        const int32_t *tokens = NULL;
        int n = ts__sequence_pending(q, &tokens);
        if (n > TS_BATCH_PREFILL_CHUNK) n = TS_BATCH_PREFILL_CHUNK;
        for (int k = 0; k < n; k++) {
            ts_row *row = &bg->rows[n_rows++];
            row->token = tokens[k];
            row->pos = q->cached + k;
            row->key_cache = s->kv.keys;
            row->value_cache = s->kv.values;
            row->logits = k == n - 1 ? s->logits : NULL;
            if (n_rows == capacity) {
                ts__forward(bg->batch, bg->rows, n_rows);
                n_rows = 0;
            }
        }
        q->cached += n;
        if (q->cached > s->kv.positions) s->kv.positions = q->cached;
    }
    if (n_rows > 0) ts__forward(bg->batch, bg->rows, n_rows);

    /* one turn of run.c's loop per slot */
    int running = 0;
    for (int i = 0; i < bg->max_batch; i++) {
        slot *s = &bg->slots[i];
        if (s->id < 0) continue;
        ts_sequence *q = &bg->requests[s->id].seq;
        if (!ts__sequence_ready(q)) { /* its prompt's next chunk comes next step */
            running++;
            continue;
        }
        ts_batch_event *out = &events[(*n_events)++];
        out->id = s->id;
        /* the prompt's own tokens pass within the step: its logits are in */
        int printed;
        do {
            printed = ts__sequence_step(q, s->sampler, s->logits, bg->tokenizer, &out->event);
        } while (printed && out->event.is_prompt);
        if (printed) {
            running++;
        } else {
            ts__sequence_release(q);
            ts_sampler_free(s->sampler);
            s->sampler = NULL;
            s->id = -1;
        }
    }
    if (active) *active = running + (bg->n_requests - bg->next_request);
    return TS_OK;
}
