/*
 * session.c — per-sequence state and the transformer forward pass.
 *
 * ts__forward is run.c's forward() (and runq.c's for Q8_0 models, which
 * differs only in quantizing each matmul's input first). The arithmetic
 * must stay in run.c's order: the golden outputs are byte-exact.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* out = W x for one weight of either representation. For Q8_0 weights the
 * input must already be quantized into s->xq/s->xs (runq quantizes once and
 * reuses it for wq/wk/wv and for w1/w3). */
static void matvec(const ts_session *s, float *out, const float *x, const ts_weight *w, int n,
                   int d) {
    if (w->f32) {
        ts_k_matmul_f32(out, x, w->f32, n, d);
    } else {
        ts_k_matmul_q8(out, s->xq, s->xs, w->q, w->s, n, d, s->model->config.group_size);
    }
}

/* runq quantizes the activations feeding every matmul; fp32 models don't. */
static void quantize_input(ts_session *s, const float *x, int n) {
    if (s->model->quantized) ts_k_quantize_q8(s->xq, s->xs, x, n, s->model->config.group_size);
}

void ts__forward(ts_session *s, int32_t token, int pos) {
    const ts_model *m = s->model;
    const ts_config *p = &m->config;
    int dim = p->dim, hidden_dim = p->hidden_dim, head_size = m->head_size, kv_dim = m->kv_dim;
    int kv_mul = p->n_heads / p->n_kv_heads; /* query heads per kv head */
    float *x = s->x;

    /* the token's embedding starts the residual stream */
    memcpy(x, m->token_embedding + (size_t)token * dim, (size_t)dim * sizeof *x);

    for (int l = 0; l < p->n_layers; l++) {
        const ts_layer *w = &m->layers[l];
        size_t loff = (size_t)l * p->seq_len * kv_dim; /* this layer's KV cache */
        float *k = s->key_cache + loff + (size_t)pos * kv_dim;
        float *v = s->value_cache + loff + (size_t)pos * kv_dim;

        /* attention rmsnorm, then q, and k, v straight into the cache */
        ts_k_rmsnorm(s->xb, x, w->rms_att, dim);
        quantize_input(s, s->xb, dim);
        matvec(s, s->q, s->xb, &w->wq, dim, dim);
        matvec(s, k, s->xb, &w->wk, dim, kv_dim);
        matvec(s, v, s->xb, &w->wv, dim, kv_dim);

        /* RoPE: rotate each (even, odd) pair of q, and of k while i < kv_dim */
        for (int i = 0; i < dim; i += 2) {
            int head_dim = i % head_size;
            float freq = 1.0f / powf(10000.0f, head_dim / (float)head_size);
            float val = pos * freq;
            float fcr = cosf(val);
            float fci = sinf(val);
            float q0 = s->q[i], q1 = s->q[i + 1];
            s->q[i] = q0 * fcr - q1 * fci;
            s->q[i + 1] = q0 * fci + q1 * fcr;
            if (i < kv_dim) {
                float k0 = k[i], k1 = k[i + 1];
                k[i] = k0 * fcr - k1 * fci;
                k[i + 1] = k0 * fci + k1 * fcr;
            }
        }

        /* multi-head attention over positions 0..pos */
        for (int h = 0; h < p->n_heads; h++) {
            const float *q = s->q + (size_t)h * head_size;
            float *att = s->att + (size_t)h * p->seq_len;
            size_t kv_off = loff + (size_t)(h / kv_mul) * head_size;
            for (int t = 0; t <= pos; t++) {
                const float *kt = s->key_cache + kv_off + (size_t)t * kv_dim;
                float score = 0.0f;
                for (int i = 0; i < head_size; i++) {
                    score += q[i] * kt[i];
                }
                score /= sqrtf(head_size);
                att[t] = score;
            }
            ts_k_softmax(att, pos + 1);

            /* weighted sum of the values, accumulated position by position */
            float *xb = s->xb + (size_t)h * head_size;
            memset(xb, 0, (size_t)head_size * sizeof *xb);
            for (int t = 0; t <= pos; t++) {
                const float *vt = s->value_cache + kv_off + (size_t)t * kv_dim;
                float a = att[t];
                for (int i = 0; i < head_size; i++) {
                    xb[i] += a * vt[i];
                }
            }
        }

        /* output projection and residual */
        quantize_input(s, s->xb, dim);
        matvec(s, s->xb2, s->xb, &w->wo, dim, dim);
        for (int i = 0; i < dim; i++) {
            x[i] += s->xb2[i];
        }

        /* ffn rmsnorm, then w2(silu(w1 x) * w3 x) */
        ts_k_rmsnorm(s->xb, x, w->rms_ffn, dim);
        quantize_input(s, s->xb, dim);
        matvec(s, s->hb, s->xb, &w->w1, dim, hidden_dim);
        matvec(s, s->hb2, s->xb, &w->w3, dim, hidden_dim);
        for (int i = 0; i < hidden_dim; i++) {
            float val = s->hb[i];
            val *= (1.0f / (1.0f + expf(-val)));
            val *= s->hb2[i];
            s->hb[i] = val;
        }
        quantize_input(s, s->hb, hidden_dim);
        matvec(s, s->xb, s->hb, &w->w2, hidden_dim, dim);
        for (int i = 0; i < dim; i++) {
            x[i] += s->xb[i];
        }
    }

    /* final rmsnorm and the classifier */
    ts_k_rmsnorm(x, x, m->rms_final, dim);
    quantize_input(s, x, dim);
    matvec(s, s->logits, x, &m->wcls, dim, p->vocab_size);
}

/* ------------------------------------------------------------- lifetime */

/* a*b*c zeroed floats, or NULL when the size overflows or calloc fails.
 * Zeroed so that evaluating at a position whose predecessors were never
 * filled reads defined (if meaningless) cache entries. */
static float *alloc_f32(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t n;
    if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) || n > SIZE_MAX / sizeof(float)) {
        return NULL;
    }
    return calloc(n ? (size_t)n : 1, sizeof(float));
}

ts_status ts_session_new(const ts_model *model, int n_threads, ts_session **out, ts_error *err) {
    (void)n_threads; /* the scalar path is single-threaded for now */
    if (!out) return ts__fail(err, TS_ERR_ARG, "ts_session_new: out is NULL");
    *out = NULL;
    if (!model) return ts__fail(err, TS_ERR_ARG, "ts_session_new: model is NULL");
    const ts_config *p = &model->config;
    ts_session *s = calloc(1, sizeof *s);
    if (!s) return ts__fail(err, TS_ERR_NOMEM, "ts_session_new: out of memory");
    s->model = model;
    uint64_t dim = (uint64_t)p->dim, hid = (uint64_t)p->hidden_dim;
    uint64_t qmax = dim > hid ? dim : hid;
    s->x = alloc_f32(dim, 1, 1);
    s->xb = alloc_f32(dim, 1, 1);
    s->xb2 = alloc_f32(dim, 1, 1);
    s->hb = alloc_f32(hid, 1, 1);
    s->hb2 = alloc_f32(hid, 1, 1);
    s->q = alloc_f32(dim, 1, 1);
    s->att = alloc_f32((uint64_t)p->n_heads, (uint64_t)p->seq_len, 1);
    s->logits = alloc_f32((uint64_t)p->vocab_size, 1, 1);
    s->key_cache = alloc_f32((uint64_t)p->n_layers, (uint64_t)p->seq_len, (uint64_t)model->kv_dim);
    s->value_cache = alloc_f32((uint64_t)p->n_layers, (uint64_t)p->seq_len, (uint64_t)model->kv_dim);
    int ok = s->x && s->xb && s->xb2 && s->hb && s->hb2 && s->q && s->att && s->logits &&
             s->key_cache && s->value_cache;
    if (model->quantized) {
        s->xq = calloc((size_t)qmax, 1);
        s->xs = alloc_f32(qmax / (uint64_t)p->group_size, 1, 1);
        ok = ok && s->xq && s->xs;
    }
    if (!ok) {
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
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->hb);
    free(s->hb2);
    free(s->q);
    free(s->att);
    free(s->logits);
    free(s->key_cache);
    free(s->value_cache);
    free(s->xq);
    free(s->xs);
    free(s);
}

/* ------------------------------------------------------------------ eval */

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
    /* Validate everything first so a bad id leaves the cache untouched. */
    for (size_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= p->vocab_size) {
            return ts__fail(err, TS_ERR_ARG,
                            "ts_session_eval: token %d at index %zu is outside the vocabulary [0, %d)",
                            tokens[i], i, p->vocab_size);
        }
    }
    size_t V = (size_t)p->vocab_size;
    for (size_t i = 0; i < n; i++) {
        ts__forward(s, tokens[i], pos + (int)i);
        if (logits) memcpy(logits + i * V, s->logits, V * sizeof(float));
    }
    return TS_OK;
}

float *ts_session_logits(ts_session *s) { return s ? s->logits : NULL; }
