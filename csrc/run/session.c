/*
 * session.c — the transformer forward pass, for a batch of tokens, and the
 * per-sequence session built on it.
 *
 * ts__forward is run.c's forward() (and runq.c's for Q8_0 models, which
 * differs only in quantizing each matmul's input first), applied to several
 * tokens at once: every matmul multiplies the weights with all the tokens'
 * activations in one call, so the weights are read once per batch. The
 * tokens may belong to one sequence (prefill) or to many (batched
 * generation). With the scalar kernels the arithmetic is run.c's, in
 * run.c's order: the golden outputs are byte-exact.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Tokens per forward call in a session's prefill. */
#define TS_PREFILL_BLOCK 64
/* Below this many multiply-adds a matmul runs on the calling thread alone:
 * waking the pool would cost more than it saves. */
#define TS_PARALLEL_MIN_MACS (1 << 17)
/* Single-token decode of a model whose matmul weights do not fit one core's
 * L2 (2 MiB on the machines we measure; 1.5 MiB leaves room for the KV cache
 * and activations) is bound by reading the weights from L3. Split across two
 * cores, each core's fixed half of the rows (ts__pool_for gives a thread the
 * same share every call) stays in its own L2, so such matmuls go to the pool
 * from this much smaller size up. */
#define TS_SPLIT_MIN_WEIGHT_BYTES (3u << 19)
#define TS_SPLIT_MIN_MACS (1 << 13)
/* With more runnable threads than cores the split loses: the worker is
 * often not running when a token's tiny matmul is handed out (the caller
 * then does all of it, after paying for the hand-out), or is descheduled in
 * the middle of its rows and stalls the caller for a time slice. After
 * TS_SPLIT_MAX_MISSES matmuls in a row in which no worker helped, this many
 * run on the caller alone (about a dozen tokens of a small model), which
 * also lets the idle worker go to sleep, before the pool is tried again. A
 * sleeping worker misses the first job or two while it wakes, so one miss is
 * not enough. The outputs are the same either way. */
#define TS_SPLIT_BACKOFF 256
#define TS_SPLIT_MAX_MISSES 4

/* The element-wise steps of the forward pass. */
typedef struct elementwise {
    void (*rmsnorm)(float *o, const float *x, const float *w, int n);
    void (*swiglu)(float *h, const float *g, int n);
    void (*attention)(float *out, float *att, const float *q, const float *keys,
                      const float *values, int n_pos, int head_size, int stride);
} elementwise;

struct ts_batch {
    const ts_model *model;
    const ts_kernels *k;
    elementwise ew;
    int capacity;
    ts_pool *pool;
    int64_t min_parallel_macs; /* a matmul this large or larger uses the pool */
    int split_backoff;         /* small matmuls left to run unsplit (TS_SPLIT_BACKOFF) */
    int split_misses;          /* consecutive split matmuls no worker helped with */
    float *x;        /* (capacity, dim) the residual streams */
    float *xb;       /* (capacity, dim) */
    float *xb2;      /* (capacity, dim) */
    float *q;        /* (capacity, dim) */
    float *kb;       /* (capacity, kv_dim) new keys, before they enter the caches */
    float *vb;       /* (capacity, kv_dim) new values */
    float *hb;       /* (capacity, hidden_dim) */
    float *hb2;      /* (capacity, hidden_dim) */
    float *att;      /* (threads, seq_len) attention scores */
    float *logits;   /* (capacity, vocab) for the rows that want them */
    float *rope;     /* (capacity, head_size) cos, sin of each row's angles */
    float *freq;     /* (head_size / 2) RoPE frequencies */
    int8_t *xq;      /* (capacity, max(dim, hidden_dim)) Q8_0 activations */
    float *xs;       /* their scales */
};

/* ------------------------------------------------------------- matmuls */

/* Up to three matmuls sharing one input (wq/wk/wv, w1/w3), run as one
 * parallel job over their concatenated output rows. */
typedef struct matmul_job {
    const ts_batch *b;
    int nt;            /* tokens */
    int n;             /* input width */
    const float *x;    /* (nt, n) fp32 input, or */
    const int8_t *xq;  /* its Q8_0 form, with */
    const float *xs;
    int count;
    struct {
        const ts_weight *w;
        float *out;    /* (nt, d) */
        int d;
    } m[3];
} matmul_job;

enum { ROWS_PER_ITEM = 16 };

static int job_rows(const matmul_job *job, int i) { return job->m[i].d; }

static void matmul_items(void *ctx, int begin, int end, int thread) {
    (void)thread;
    const matmul_job *job = ctx;
    const ts_kernels *k = job->b->k;
    int gs = job->b->model->config.group_size;
    int first = begin * ROWS_PER_ITEM, last = end * ROWS_PER_ITEM; /* global rows */
    int base = 0;
    for (int i = 0; i < job->count; i++) {
        int d = job_rows(job, i);
        int i0 = first - base, i1 = last - base;
        if (i0 < 0) i0 = 0;
        if (i1 > d) i1 = d;
        if (i0 < i1) {
            const ts_weight *w = job->m[i].w;
            if (w->f32) {
                k->matmul_f32(job->m[i].out, job->x, job->nt, w->f32, job->n, d, i0, i1);
            } else {
                k->matmul_q8(job->m[i].out, job->xq, job->xs, job->nt, w->q, w->s, w->row_sums,
                             job->n, d, gs, i0, i1);
            }
        }
        base += d;
    }
}

static void run_matmuls(ts_batch *b, matmul_job *job) {
    int rows = 0;
    for (int i = 0; i < job->count; i++) rows += job_rows(job, i);
    int items = (rows + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM;
    double macs = (double)job->nt * job->n * rows;
    if (macs >= TS_PARALLEL_MIN_MACS) {
        ts__pool_for(b->pool, items, matmul_items, job);
    } else if (macs < (double)b->min_parallel_macs || b->split_backoff > 0) {
        if (b->split_backoff > 0) b->split_backoff--;
        ts__pool_for(NULL, items, matmul_items, job);
    } else if (!ts__pool_for(b->pool, items, matmul_items, job)) {
        b->split_misses = 0;
    } else if (++b->split_misses >= TS_SPLIT_MAX_MISSES) {
        b->split_misses = 0;
        b->split_backoff = TS_SPLIT_BACKOFF;
    }
}

/* out_i = W_i x for one, two or three weights of the model's kind. For Q8_0
 * weights each token's input is quantized first (runq quantizes once and
 * reuses it for wq/wk/wv and for w1/w3). */
static void matmuls(ts_batch *b, const float *x, int nt, int n, int count, const ts_weight *w0,
                    float *out0, const ts_weight *w1, float *out1, const ts_weight *w2,
                    float *out2, int d0, int d1, int d2) {
    matmul_job job = {.b = b, .nt = nt, .n = n, .x = x, .count = count};
    job.m[0].w = w0, job.m[0].out = out0, job.m[0].d = d0;
    job.m[1].w = w1, job.m[1].out = out1, job.m[1].d = d1;
    job.m[2].w = w2, job.m[2].out = out2, job.m[2].d = d2;
    if (b->model->quantized) {
        int gs = b->model->config.group_size;
        for (int t = 0; t < nt; t++) {
            b->k->quantize_q8(b->xq + (size_t)t * n, b->xs + (size_t)t * (n / gs),
                              x + (size_t)t * n, n, gs);
        }
        job.xq = b->xq;
        job.xs = b->xs;
    }
    run_matmuls(b, &job);
}

static void matmul(ts_batch *b, float *out, const float *x, int nt, const ts_weight *w, int n,
                   int d) {
    matmuls(b, x, nt, n, 1, w, out, NULL, NULL, NULL, NULL, d, 0, 0);
}

/* ----------------------------------------------------------- attention */

typedef struct attention_job {
    ts_batch *b;
    const ts_row *rows;
    size_t layer_offset; /* this layer's part of every KV cache */
} attention_job;

/* Items are (row, head) pairs. */
static void attention_items(void *ctx, int begin, int end, int thread) {
    const attention_job *job = ctx;
    ts_batch *b = job->b;
    const ts_model *m = b->model;
    int n_heads = m->config.n_heads, head_size = m->head_size;
    int kv_mul = n_heads / m->config.n_kv_heads; /* query heads per kv head */
    float *att = b->att + (size_t)thread * m->config.seq_len;
    for (int item = begin; item < end; item++) {
        int t = item / n_heads, h = item % n_heads;
        const ts_row *r = &job->rows[t];
        /* this kv head's keys (values alike): seq_len rows of head_size */
        size_t kv_off = job->layer_offset + (size_t)(h / kv_mul) * m->config.seq_len * head_size;
        b->ew.attention(b->xb + (size_t)t * m->config.dim + (size_t)h * head_size, att,
                        b->q + (size_t)t * m->config.dim + (size_t)h * head_size,
                        r->key_cache + kv_off, r->value_cache + kv_off, r->pos + 1, head_size,
                        head_size);
    }
}

/* ------------------------------------------------------------- forward */

/* RoPE: rotate each (even, odd) pair of v by its position's angle. `rope`
 * holds cos, sin of the angle for each pair index within a head. */
static void rotate(float *v, int n, int head_size, const float *rope) {
    for (int i = 0; i < n; i += 2) {
        int pair = i % head_size;
        float fcr = rope[pair], fci = rope[pair + 1];
        float v0 = v[i], v1 = v[i + 1];
        v[i] = v0 * fcr - v1 * fci;
        v[i + 1] = v0 * fci + v1 * fcr;
    }
}

void ts__forward(ts_batch *b, const ts_row *rows, int n) {
    const ts_model *m = b->model;
    const ts_config *p = &m->config;
    int dim = p->dim, hidden_dim = p->hidden_dim, head_size = m->head_size, kv_dim = m->kv_dim;

    for (int t = 0; t < n; t++) {
        /* the token's embedding starts the residual stream */
        memcpy(b->x + (size_t)t * dim, m->token_embedding + (size_t)rows[t].token * dim,
               (size_t)dim * sizeof(float));
        /* the RoPE angles depend only on the position: once per row, not per layer */
        float *rope = b->rope + (size_t)t * head_size;
        for (int i = 0; i < head_size; i += 2) {
            float val = rows[t].pos * b->freq[i / 2];
            rope[i] = cosf(val);
            rope[i + 1] = sinf(val);
        }
    }

    for (int l = 0; l < p->n_layers; l++) {
        const ts_layer *w = &m->layers[l];
        size_t loff = (size_t)l * p->seq_len * kv_dim; /* this layer's KV cache */

        /* attention rmsnorm, then q, k, v */
        for (int t = 0; t < n; t++) {
            b->ew.rmsnorm(b->xb + (size_t)t * dim, b->x + (size_t)t * dim, w->rms_att, dim);
        }
        matmuls(b, b->xb, n, dim, 3, &w->wq, b->q, &w->wk, b->kb, &w->wv, b->vb, dim, kv_dim,
                kv_dim);

        /* RoPE on q and k, then k and v into each row's cache */
        for (int t = 0; t < n; t++) {
            const float *rope = b->rope + (size_t)t * head_size;
            float *kt = b->kb + (size_t)t * kv_dim, *vt = b->vb + (size_t)t * kv_dim;
            rotate(b->q + (size_t)t * dim, dim, head_size, rope);
            rotate(kt, kv_dim, head_size, rope);
            for (int kvh = 0; kvh < p->n_kv_heads; kvh++) {
                size_t at = loff + ((size_t)kvh * p->seq_len + (size_t)rows[t].pos) * head_size;
                size_t from = (size_t)kvh * head_size;
                memcpy(rows[t].key_cache + at, kt + from, (size_t)head_size * sizeof(float));
                memcpy(rows[t].value_cache + at, vt + from, (size_t)head_size * sizeof(float));
            }
        }

        /* multi-head attention over positions 0..pos of each row's sequence */
        attention_job aj = {b, rows, loff};
        double work = 0;
        for (int t = 0; t < n; t++) work += (double)(rows[t].pos + 1) * dim * 2;
        ts__pool_for(work >= TS_PARALLEL_MIN_MACS ? b->pool : NULL, n * p->n_heads,
                     attention_items, &aj);

        /* output projection and residual */
        matmul(b, b->xb2, b->xb, n, &w->wo, dim, dim);
        for (size_t i = 0; i < (size_t)n * dim; i++) {
            b->x[i] += b->xb2[i];
        }

        /* ffn rmsnorm, then w2(silu(w1 x) * w3 x) and residual */
        for (int t = 0; t < n; t++) {
            b->ew.rmsnorm(b->xb + (size_t)t * dim, b->x + (size_t)t * dim, w->rms_ffn, dim);
        }
        matmuls(b, b->xb, n, dim, 2, &w->w1, b->hb, &w->w3, b->hb2, NULL, NULL, hidden_dim,
                hidden_dim, 0);
        b->ew.swiglu(b->hb, b->hb2, n * hidden_dim);
        matmul(b, b->xb, b->hb, n, &w->w2, hidden_dim, dim);
        for (size_t i = 0; i < (size_t)n * dim; i++) {
            b->x[i] += b->xb[i];
        }
    }

    /* final rmsnorm and the classifier, for the rows that want logits */
    int nl = 0;
    for (int t = 0; t < n; t++) {
        if (!rows[t].logits) continue;
        b->ew.rmsnorm(b->xb + (size_t)nl * dim, b->x + (size_t)t * dim, m->rms_final, dim);
        nl++;
    }
    if (nl == 0) return;
    matmul(b, b->logits, b->xb, nl, &m->wcls, dim, p->vocab_size);
    size_t V = (size_t)p->vocab_size;
    for (int t = 0, i = 0; t < n; t++) {
        if (rows[t].logits) memcpy(rows[t].logits, b->logits + V * (size_t)i++, V * sizeof(float));
    }
}

/* ------------------------------------------------------------- batches */

/* a*b*c zeroed floats, or NULL when the size overflows or calloc fails.
 * Zeroed so that evaluating at a position whose predecessors were never
 * filled reads defined (if meaningless) cache entries. */
static float *alloc_f32(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t n;
    if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) ||
        n > SIZE_MAX / sizeof(float)) {
        return NULL;
    }
    return calloc(n ? (size_t)n : 1, sizeof(float));
}

/* Bytes of matmul weights one token reads (the classifier included). */
static double weight_bytes(const ts_model *m) {
    const ts_config *p = &m->config;
    double dim = p->dim, hid = p->hidden_dim, kv = m->kv_dim;
    double params = p->n_layers * (2 * dim * dim + 2 * kv * dim + 3 * hid * dim) +
                    (double)p->vocab_size * dim;
    double per_param = m->quantized ? 1.0 + 4.0 / p->group_size : 4.0;
    return params * per_param;
}

ts_batch *ts__batch_new(const ts_model *model, int capacity, int n_threads) {
    const ts_config *p = &model->config;
    ts_batch *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->model = model;
    b->k = model->kernels;
    /* Q8_0 models quantize every matmul input, and the quantizer turns a
     * 1-ulp difference into a different int8 value and, sooner or later, a
     * different token. So for them the element-wise steps round exactly
     * like the reference, which keeps runq's outputs byte-exact under every
     * kernel set (the Q8 matmuls are exact anyway); fp32 models take the
     * faster kernels. */
    const ts_kernels *exact = &ts_kernels_scalar;
    b->ew.rmsnorm = model->quantized ? exact->rmsnorm : b->k->rmsnorm;
    b->ew.swiglu = model->quantized ? exact->swiglu : b->k->swiglu;
    b->ew.attention = model->quantized ? b->k->attention_exact : b->k->attention;
    b->capacity = capacity;
    if (n_threads <= 0) n_threads = model->n_threads_default;
    b->pool = ts__pool_new(n_threads); /* NULL: single-threaded */
    /* Small (decode-sized) matmuls split only when the weights outgrow one
     * core's L2 (see TS_SPLIT_MIN_WEIGHT_BYTES): below that one core reads
     * them from its L2 already and the hand-outs cost more than the second
     * core saves (model5000_q80, 1 MiB: 15% slower decode split on an idle
     * machine). Splitting only changes which thread computes a row, never
     * how: the outputs are the same either way. */
    b->min_parallel_macs = TS_PARALLEL_MIN_MACS;
    if (b->pool && weight_bytes(model) >= TS_SPLIT_MIN_WEIGHT_BYTES) {
        b->min_parallel_macs = TS_SPLIT_MIN_MACS;
    }
    uint64_t cap = (uint64_t)capacity, dim = (uint64_t)p->dim, hid = (uint64_t)p->hidden_dim;
    uint64_t kv = (uint64_t)model->kv_dim, hs = (uint64_t)model->head_size;
    uint64_t qmax = dim > hid ? dim : hid;
    b->x = alloc_f32(cap, dim, 1);
    b->xb = alloc_f32(cap, dim, 1);
    b->xb2 = alloc_f32(cap, dim, 1);
    b->q = alloc_f32(cap, dim, 1);
    b->kb = alloc_f32(cap, kv, 1);
    b->vb = alloc_f32(cap, kv, 1);
    b->hb = alloc_f32(cap, hid, 1);
    b->hb2 = alloc_f32(cap, hid, 1);
    b->att = alloc_f32((uint64_t)ts__pool_threads(b->pool), (uint64_t)p->seq_len, 1);
    b->logits = alloc_f32(cap, (uint64_t)p->vocab_size, 1);
    b->rope = alloc_f32(cap, hs, 1);
    b->freq = alloc_f32(hs / 2, 1, 1);
    int ok = b->x && b->xb && b->xb2 && b->q && b->kb && b->vb && b->hb && b->hb2 && b->att &&
             b->logits && b->rope && b->freq;
    if (model->quantized) {
        b->xq = calloc((size_t)(cap * qmax), 1);
        b->xs = alloc_f32(cap, qmax / (uint64_t)p->group_size + 1, 1);
        ok = ok && b->xq && b->xs;
    }
    if (!ok) {
        ts__batch_free(b);
        return NULL;
    }
    for (int i = 0; i < model->head_size; i += 2) {
        b->freq[i / 2] = 1.0f / powf(10000.0f, i / (float)model->head_size);
    }
    return b;
}

void ts__batch_free(ts_batch *b) {
    if (!b) return;
    ts__pool_free(b->pool);
    free(b->x);
    free(b->xb);
    free(b->xb2);
    free(b->q);
    free(b->kb);
    free(b->vb);
    free(b->hb);
    free(b->hb2);
    free(b->att);
    free(b->logits);
    free(b->rope);
    free(b->freq);
    free(b->xq);
    free(b->xs);
    free(b);
}

int ts__batch_capacity(const ts_batch *b) { return b->capacity; }

/* ------------------------------------------------------------- sessions */

ts_status ts_session_new(const ts_model *model, int n_threads, ts_session **out, ts_error *err) {
    if (!out) return ts__fail(err, TS_ERR_ARG, "ts_session_new: out is NULL");
    *out = NULL;
    if (!model) return ts__fail(err, TS_ERR_ARG, "ts_session_new: model is NULL");
    const ts_config *p = &model->config;
    ts_session *s = calloc(1, sizeof *s);
    if (!s) return ts__fail(err, TS_ERR_NOMEM, "ts_session_new: out of memory");
    s->model = model;
    s->batch = ts__batch_new(model, TS_PREFILL_BLOCK, n_threads);
    s->logits = alloc_f32((uint64_t)p->vocab_size, 1, 1);
    s->key_cache = alloc_f32((uint64_t)p->n_layers, (uint64_t)p->seq_len, (uint64_t)model->kv_dim);
    s->value_cache = alloc_f32((uint64_t)p->n_layers, (uint64_t)p->seq_len, (uint64_t)model->kv_dim);
    if (!s->batch || !s->logits || !s->key_cache || !s->value_cache) {
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
    ts__batch_free(s->batch);
    free(s->logits);
    free(s->key_cache);
    free(s->value_cache);
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
            rows[t].key_cache = s->key_cache;
            rows[t].value_cache = s->value_cache;
            rows[t].logits = logits ? logits + i * V : (i + 1 == n ? s->logits : NULL);
        }
        ts__forward(s->batch, rows, nb);
    }
    if (logits && n > 0) memcpy(s->logits, logits + (n - 1) * V, V * sizeof(float));
    return TS_OK;
}

float *ts_session_logits(ts_session *s) { return s ? s->logits : NULL; }
