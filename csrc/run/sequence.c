/*
 * sequence.c — run.c's generation loop for one sequence, as state a driver
 * advances (generate.c). run.c's loop, per position: evaluate the current
 * token, then take the next one from the prompt or sample it, stop at BOS,
 * print its piece. Added here: other stop tokens, a context shift past
 * seq_len, and log-probabilities of the sampled tokens.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

ts_status ts__sequence_init(ts_sequence *q, const ts_config *p, const ts_tokenizer *tokenizer,
                            const int32_t *prompt, size_t n_prompt, int steps,
                            const ts_generate_options *options, ts_error *err) {
    static const ts_generate_options defaults = {0};
    static const int32_t run_c_stop[] = {TS_TOKEN_BOS};
    const ts_generate_options *o = options ? options : &defaults;
    memset(q, 0, sizeof *q);
    if (!prompt || n_prompt < 1) {
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
    if (steps < 0) return ts__fail(err, TS_ERR_ARG, "steps must be >= 0, got %d", steps);
    const int32_t *stop = o->stop_tokens ? o->stop_tokens : run_c_stop;
    size_t n_stop = o->stop_tokens ? o->n_stop_tokens : 1;
    for (size_t i = 0; i < n_stop; i++) {
        if (stop[i] < 0 || stop[i] >= p->vocab_size) {
            return ts__fail(err, TS_ERR_ARG, "stop token %d is outside the vocabulary [0, %d)",
                            stop[i], p->vocab_size);
        }
    }
    if (o->logprobs && (o->top_logprobs < 0 || o->top_logprobs > TS_MAX_TOP_LOGPROBS)) {
        return ts__fail(err, TS_ERR_ARG, "top_logprobs %d must be in [0, %d]", o->top_logprobs,
                        TS_MAX_TOP_LOGPROBS);
    }
    q->keep = o->n_keep > 1 ? o->n_keep : 1;
    if (o->context_shift) {
        if (q->keep > p->seq_len / 2) {
            return ts__fail(err, TS_ERR_ARG,
                            "n_keep %d must be at most half the context (%d) for a context shift",
                            o->n_keep, p->seq_len);
        }
        if (n_prompt > (size_t)p->seq_len) {
            return ts__fail(err, TS_ERR_ARG, "the prompt is %zu tokens but the model's context is %d",
                            n_prompt, p->seq_len);
        }
    }
    q->vocab_size = p->vocab_size;
    q->seq_len = p->seq_len;
    q->context_shift = o->context_shift != 0;
    /* without a shift run.c's loop ends at the context; 0: nothing to evaluate */
    q->steps = !q->context_shift && steps > p->seq_len ? p->seq_len : steps;
    q->start = q->keep;
    q->logprobs = o->logprobs != 0;
    q->top_logprobs = o->top_logprobs < p->vocab_size ? o->top_logprobs : p->vocab_size;
    size_t first_steps = (size_t)(q->steps < p->seq_len ? q->steps : p->seq_len);
    q->cap = (n_prompt > first_steps ? n_prompt : first_steps) + 1;
    q->tokens = malloc(q->cap * sizeof *q->tokens);
    q->stop_tokens = malloc((n_stop ? n_stop : 1) * sizeof *q->stop_tokens);
    int ok = q->tokens && q->stop_tokens;
    if (ok && q->logprobs) {
        q->raw_logits = malloc((size_t)p->vocab_size * sizeof *q->raw_logits);
        q->top_tokens = malloc(TS_MAX_TOP_LOGPROBS * sizeof *q->top_tokens);
        q->top_values = malloc(TS_MAX_TOP_LOGPROBS * sizeof *q->top_values);
        ok = q->raw_logits && q->top_tokens && q->top_values;
    }
    if (!ok) {
        ts__sequence_release(q);
        return ts__fail(err, TS_ERR_NOMEM, "out of memory for a %zu-token prompt", n_prompt);
    }
    memcpy(q->tokens, prompt, n_prompt * sizeof *q->tokens);
    memcpy(q->stop_tokens, stop, n_stop * sizeof *q->stop_tokens);
    q->n_stop_tokens = n_stop;
    q->n_prompt = n_prompt;
    return TS_OK;
}

void ts__sequence_release(ts_sequence *q) {
    free(q->tokens);
    free(q->stop_tokens);
    free(q->raw_logits);
    free(q->top_tokens);
    free(q->top_values);
    q->tokens = q->stop_tokens = q->top_tokens = NULL;
    q->raw_logits = q->top_values = NULL;
}

void ts__sequence_attach(const ts_sequence *q, ts_sampler *sampler) {
    ts_sampler_clear(sampler);
    for (size_t i = 0; i < q->n_prompt; i++) ts_sampler_accept(sampler, q->tokens[i], 1);
}

/* Where tokens[i] sits in the KV cache. */
static int window_position(const ts_sequence *q, int i) {
    return i < q->keep ? i : q->keep + (i - q->start);
}

/* The last token whose logits the next step needs: the prompt's last
 * (evaluated before any step inside the prompt), else the current one. */
static int needed_token(const ts_sequence *q) {
    if ((size_t)q->pos >= q->n_prompt) return q->pos;
    return (q->n_prompt < (size_t)q->steps ? (int)q->n_prompt : q->steps) - 1;
}

int ts__sequence_ready(const ts_sequence *q) {
    return q->done || q->pos >= q->steps || window_position(q, needed_token(q)) < q->cached;
}

int ts__sequence_pending(ts_sequence *q, const int32_t **tokens) {
    if (ts__sequence_ready(q)) return 0; /* done, or the logits are there */
    int last = needed_token(q);
    if (window_position(q, last) >= q->seq_len) {
        /* The cache is full (only past the prompt, which fits): keep the
         * first `keep` tokens and the most recent half of the rest, and
         * evaluate that tail at its new positions. Re-evaluating, rather
         * than re-rotating the cached keys, gives exactly the logits a
         * fresh sequence of those tokens has. */
        int recent = (q->seq_len - q->keep) / 2;
        q->start = q->pos - (recent > 1 ? recent : 1) + 1;
        q->cached = q->keep;
        q->n_shifts++;
    }
    *tokens = q->tokens + (q->start + (q->cached - q->keep));
    return window_position(q, last) + 1 - q->cached;
}

static int is_stop_token(const ts_sequence *q, int32_t token) {
    for (size_t i = 0; i < q->n_stop_tokens; i++) {
        if (q->stop_tokens[i] == token) return 1;
    }
    return 0;
}

/* The log-softmax of q->raw_logits at `token`, and the top_logprobs most
 * likely tokens', into the event. */
static void token_logprobs(ts_sequence *q, int32_t token, ts_token_event *event) {
    const float *x = q->raw_logits;
    const int n = q->vocab_size, k = q->top_logprobs;
    float max = x[0];
    for (int i = 1; i < n; i++) max = x[i] > max ? x[i] : max;
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += expf(x[i] - max);
    const double log_z = (double)max + log(sum);
    /* the k largest by insertion into a sorted list; ties keep the lower id first */
    int count = 0;
    for (int i = 0; i < n && k > 0; i++) {
        if (count == k && !(x[i] > q->top_values[k - 1])) continue;
        int j = count < k ? count++ : k - 1;
        for (; j > 0 && q->top_values[j - 1] < x[i]; j--) {
            q->top_values[j] = q->top_values[j - 1];
            q->top_tokens[j] = q->top_tokens[j - 1];
        }
        q->top_values[j] = x[i];
        q->top_tokens[j] = i;
    }
    for (int j = 0; j < count; j++) q->top_values[j] = (float)((double)q->top_values[j] - log_z);
    event->logprob = (float)((double)x[token] - log_z);
    event->n_top = count;
    event->top_tokens = q->top_tokens;
    event->top_logprobs = q->top_values;
}

void ts__sequence_finish(ts_sequence *q, int finish_reason) {
    if (q->done) return;
    q->done = 1;
    q->finish_reason = finish_reason;
}

int ts__sequence_step(ts_sequence *q, ts_sampler *sampler, float *logits,
                      const ts_tokenizer *tokenizer, ts_token_event *event) {
    memset(event, 0, sizeof *event);
    if (!q->done && q->pos >= q->steps) ts__sequence_finish(q, TS_FINISH_LENGTH);
    if (q->done) {
        event->done = 1;
        event->finish_reason = q->finish_reason;
        return 0;
    }
    int32_t next;
    int sampled = (size_t)q->pos + 1 >= q->n_prompt;
    if (!sampled) {
        next = q->tokens[q->pos + 1]; /* still inside the prompt: force it */
    } else {
        if (q->logprobs) memcpy(q->raw_logits, logits, (size_t)q->vocab_size * sizeof *logits);
        next = ts_sampler_sample(sampler, logits);
        ts_sampler_accept(sampler, next, 0);
        q->n_generated++;
    }
    q->pos++;
    /* run.c: a sampled BOS delimits sequences, the story ended (prompt
     * tokens never stop it: run.c's encoder puts BOS only first) */
    if (sampled && is_stop_token(q, next)) {
        ts__sequence_finish(q, TS_FINISH_STOP);
        event->done = 1;
        event->finish_reason = q->finish_reason;
        return 0;
    }
    if ((size_t)q->pos >= q->cap) {
        size_t cap = 2 * q->cap;
        int32_t *grown = realloc(q->tokens, cap * sizeof *grown);
        if (!grown) { /* out of memory for the history: end here rather than lose the text */
            ts__sequence_finish(q, TS_FINISH_LENGTH);
            event->done = 1;
            event->finish_reason = q->finish_reason;
            return 0;
        }
        q->tokens = grown;
        q->cap = cap;
    }
    q->tokens[q->pos] = next;
    event->token = next;
    event->piece = ts_tokenizer_decode_piece(tokenizer, q->tokens[q->pos - 1], next, &event->len);
    if (!event->piece) event->piece = "";
    event->is_prompt = (size_t)q->pos < q->n_prompt;
    if (sampled && q->logprobs) token_logprobs(q, next, event);
    return 1;
}
