/*
 * generate.c — run.c's generate() loop with a per-token callback instead
 * of printing.
 */
#include "internal.h"

#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

ts_status ts_generate(ts_session *session, const ts_tokenizer *tokenizer, ts_sampler *sampler,
                      const int32_t *prompt, size_t n_prompt, int steps,
                      ts_token_callback on_token, void *user, ts_generate_stats *stats,
                      ts_error *err) {
    if (stats) {
        stats->n_positions = 0;
        stats->n_generated = 0;
        stats->elapsed_s = 0.0;
    }
    if (!session || !tokenizer || !sampler || !prompt) {
        return ts__fail(err, TS_ERR_ARG, "ts_generate: NULL session, tokenizer, sampler or prompt");
    }
    const ts_config *p = &session->model->config;
    if (n_prompt < 1) {
        return ts__fail(err, TS_ERR_ARG, "ts_generate: the prompt needs at least 1 token (BOS)");
    }
    for (size_t i = 0; i < n_prompt; i++) {
        if (prompt[i] < 0 || prompt[i] >= p->vocab_size) {
            return ts__fail(err, TS_ERR_ARG,
                            "ts_generate: prompt token %d at index %zu is outside the vocabulary [0, %d)",
                            prompt[i], i, p->vocab_size);
        }
    }
    if (ts_tokenizer_vocab_size(tokenizer) < p->vocab_size) {
        /* sampled ids would have no piece to decode */
        return ts__fail(err, TS_ERR_ARG,
                        "ts_generate: the tokenizer has %d entries, the model's vocabulary is %d",
                        ts_tokenizer_vocab_size(tokenizer), p->vocab_size);
    }
    if (steps <= 0 || steps > p->seq_len) steps = p->seq_len;

    ts_status st = TS_OK;
    double start = 0.0;
    int started = 0;
    int n_generated = 0;
    int32_t token = prompt[0];
    int pos = 0;
    while (pos < steps) {
        ts__forward(session, token, pos);
        int32_t next;
        if ((size_t)pos + 1 < n_prompt) {
            next = prompt[pos + 1]; /* still inside the prompt: force it */
        } else {
            next = ts_sampler_sample(sampler, session->logits);
            n_generated++;
        }
        pos++;
        if (next == TS_TOKEN_BOS) break; /* BOS delimits sequences */

        size_t len = 0;
        const char *piece = ts_tokenizer_decode_piece(tokenizer, token, next, &len);
        if (on_token && on_token(user, next, piece ? piece : "", len, (size_t)pos < n_prompt)) {
            st = ts__fail(err, TS_ERR_CANCELLED, "ts_generate: cancelled by the callback at position %d",
                          pos);
            break;
        }
        token = next;
        /* like run.c, time from the end of the first position: it is slower */
        if (!started) {
            start = now_s();
            started = 1;
        }
    }
    if (stats) {
        stats->n_positions = pos;
        stats->n_generated = n_generated;
        stats->elapsed_s = started ? now_s() - start : 0.0;
    }
    return st;
}
