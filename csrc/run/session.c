/*
 * session.c — one sequence's state over a model: its KV cache, and the
 * evaluation of tokens at given positions through the batched forward pass
 * (forward.c), a prefill block at a time.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* Tokens per forward call in a session's prefill. */
#define TS_PREFILL_BLOCK 128

/* ------------------------------------------------------------- sessions */

ts_status ts_session_new(const ts_model *model, int n_threads, ts_session **out, ts_error *err) {
    if (!out) return ts__fail(err, TS_ERR_ARG, "ts_session_new: out is NULL");
    *out = NULL;
    if (!model) return ts__fail(err, TS_ERR_ARG, "ts_session_new: model is NULL");
    const ts_config *p = &model->config;
    ts_session *s = calloc(1, sizeof *s);
    if (!s) return ts__fail(err, TS_ERR_NOMEM, "ts_session_new: out of memory");
    s->model = model;
    s->batch = ts__batch_take(model, TS_PREFILL_BLOCK, ts__team_threads(model, n_threads));
    s->logits = ts__calloc_floats((uint64_t)p->vocab_size, 1, 1);
    s->kv = ts__kv_take(model);
    if (!s->batch || !s->logits || !s->kv.keys) {
        ts_session_free(s);
        return ts__fail(err, TS_ERR_NOMEM,
                        "ts_session_new: out of memory (KV cache %d layers x %d positions x %d)",
                        p->n_layers, p->seq_len, model->kv_dim);
    }
    *out = s;
    return TS_OK;
}

void ts_session_free(ts_session *s) {
    if (!s) return;
    ts__batch_give(s->model, s->batch);
    ts__free_floats(s->logits);
    ts__kv_give(s->model, s->kv);
    free(s);
}

ts_status ts_session_eval(ts_session *s, const int32_t *tokens, size_t n, int pos, float *logits,
                          ts_error *err) {
    if (!s) return ts__fail(err, TS_ERR_ARG, "ts_session_eval: session is NULL");
    const ts_config *p = &s->model->config;
    if (n > 0 && !tokens) return ts__fail(err, TS_ERR_ARG, "ts_session_eval: tokens is NULL");
    if (pos < 0 || (uint64_t)pos + n > (uint64_t)p->seq_len) {
        return ts__fail(err, TS_ERR_ARG,
                        "ts_session_eval: positions %d..%d+%zu are outside the context (seq_len %d)",
                        pos, pos, n, p->seq_len);
    }
    /* Attention reads every position before pos: they must be this
     * session's (a spare cache holds another sequence's junk). */
    if (pos > s->positions) {
        return ts__fail(err, TS_ERR_ARG,
                        "ts_session_eval: position %d would leave a gap: %d positions are "
                        "evaluated, so pos is at most %d",
                        pos, s->positions, s->positions);
    }
    /* Validate everything first so a bad id leaves the cache untouched. */
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= p->vocab_size) {
            return ts__fail(err, TS_ERR_ARG,
                            "ts_session_eval: token %d at index %zu is outside the vocabulary [0, %d)",
                            tokens[i], i, p->vocab_size);
        }
    }
    /* Blocks of tokens through the batched forward; logits for every token
     * when asked, else only for the last. */
    size_t V = (size_t)p->vocab_size;
    ts_row rows[TS_PREFILL_BLOCK];
    for (size_t start = 0; start < n; start += TS_PREFILL_BLOCK) {
        int nb = (int)(n - start < TS_PREFILL_BLOCK ? n - start : TS_PREFILL_BLOCK);
        for (int t = 0; t < nb; t++) {
            size_t i = start + (size_t)t;
            rows[t].token = tokens[i];
            rows[t].pos = pos + (int)i;
            rows[t].key_cache = s->kv.keys;
            rows[t].value_cache = s->kv.values;
            rows[t].logits = logits ? logits + i * V : (i + 1 == n ? s->logits : NULL);
        }
        ts__forward(s->batch, rows, nb);
    }
    if (pos + (int)n > s->positions) s->positions = pos + (int)n;
    if (s->positions > s->kv.positions) s->kv.positions = s->positions;
    if (logits && n > 0) memcpy(s->logits, logits + (n - 1) * V, V * sizeof(float));
    return TS_OK;
}

float *ts_session_logits(ts_session *s) { return s ? s->logits : NULL; }
