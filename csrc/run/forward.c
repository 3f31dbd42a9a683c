/*
 * forward.c — the transformer forward pass, for a batch of tokens.
 *
 * ts__forward is run.c's forward() (and runq.c's for Q8_0 models, which
 * differs only in quantizing each matmul's input first), applied to several
 * tokens at once: every matmul multiplies the weights with all the tokens'
 * activations in one call, so the weights are read once per batch. The
 * tokens may belong to one sequence (prefill, session.c) or to many
 * (batched generation, generate.c). The pool's threads run each pass
 * together (forward_team). With the scalar kernels the arithmetic is
 * run.c's, in run.c's order: the golden outputs are byte-exact.
 */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The element-wise steps of the forward pass. */
typedef struct elementwise {
    void (*rmsnorm)(float *o, const float *x, const float *w, int n);
    void (*swiglu)(float *h, const float *g, int n);
    void (*attention)(float *out, float *att, const float *q, const float *keys,
                      const float *values, int n_pos, int head_size);
} elementwise;

struct ts_batch {
    const ts_model *model;
    const ts_kernels *k;
    elementwise ew;
    int capacity;
    int threads_asked; /* n_threads as given to ts__batch_new (spares match on it) */
    ts_pool *pool;
    float *x;        /* (capacity, dim) the residual streams */
    float *xb;       /* (capacity, dim) */
    float *xb2;      /* (capacity, dim) */
    float *q;        /* (capacity, dim) */
    float *kb;       /* (capacity, kv_dim) new keys, before they enter the caches */
    float *vb;       /* (capacity, kv_dim) new values */
    float *hb;       /* (capacity, hidden_dim) */
    float *hb2;      /* (capacity, hidden_dim) */
    float *att;      /* (threads, kv_seq) attention scores */
    float *logits;   /* (capacity, vocab) for rows whose logits do not lie one after another */
    float *rope;     /* (capacity, head_size) cos, sin of each row's angles */
    float *freq;     /* (head_size / 2) RoPE frequencies */
    int qmax;        /* max(dim, hidden_dim) */
    int qgroups;     /* scales per Q8_0 activation row (0 for fp32 models) */
    /* per team thread (threads, ...): its rmsnorm output and Q8_0 input */
    float *thread_xb;
    int8_t *thread_xq;
    float *thread_xs;
    int32_t *thread_xsum;
};

/* ------------------------------------------------------------ pieces */

/* Matmul rows are shared out in blocks of this many. */
enum { ROWS_PER_ITEM = 16 };

/* A matmul input: fp32 rows, and for Q8_0 models their quantized form
 * (values, scales and each group's sum of values). */
typedef struct matmul_input {
    const float *x;
    const int8_t *xq;
    const float *xs;
    const int32_t *xsum;
} matmul_input;

/* The first panels of W's rows [i0, i1) (n columns), for the matmul before
 * to stream in (see ts_panels_next); none where W is not in panels. */
static ts_panels_next panels_head(const ts_batch *b, const ts_weight *w, int n, int i0, int i1) {
    ts_panels_next none = {NULL, 0};
    if (!w || i1 <= i0) return none;
    size_t panel = (size_t)(i0 / TS_PANEL); /* the first one's index */
    if (w->f32_panels) {
        int panels = (i1 + TS_PANEL - 1) / TS_PANEL - i0 / TS_PANEL;
        return (ts_panels_next){w->f32_panels + panel * (size_t)n * TS_PANEL,
                                (panels < 4 ? panels : 4) * n};
    }
    if (w->q8_panels) { /* whole groups of gs per row, one panel */
        size_t gs = (size_t)b->model->config.group_size, bytes = (size_t)n / gs * gs * TS_PANEL;
        return (ts_panels_next){w->q8_panels + panel * bytes, (int)(bytes / 64)};
    }
    return none;
}

/* out[t, i0:i1] = (W x_t)[i0:i1] for every token; `next`: the matmul after. */
static void matmul_rows(const ts_batch *b, float *out, matmul_input in, int nt,
                        const ts_weight *w, int n, int d, int i0, int i1, ts_panels_next next) {
    int gs = b->model->config.group_size;
    if (w->f32_panels) {
        b->k->matmul_f32_panels(out, in.x, nt, w->f32_panels, n, d, i0, i1, next);
    } else if (w->q8_panels) {
        b->k->matmul_q8_panels(out, in.xq, in.xs, in.xsum, nt, w->q8_panels, w->q8_panel_scales, n,
                               d, gs, i0, i1, next);
    } else if (w->f32) {
        b->k->matmul_f32(out, in.x, nt, w->f32, n, d, i0, i1);
    } else {
        b->k->matmul_q8(out, in.xq, in.xs, nt, w->q, w->s, w->row_sums, n, d, gs, i0, i1);
    }
}

/* This thread's scratch for quantized matmul inputs. */
typedef struct q8_scratch {
    int8_t *xq;
    float *xs;
    int32_t *xsum;
} q8_scratch;

/* The input x (rows of n) of the next matmuls, quantized into the scratch
 * for Q8_0 models, once for all the matmuls that share it, as runq does:
 * rows [t0, t1) here, the others' by whoever shares the scratch. */
static matmul_input prepare_input(const ts_batch *b, const float *x, q8_scratch q, int t0, int t1,
                                  int n) {
    if (!b->model->quantized) return (matmul_input){x, NULL, NULL, NULL};
    int gs = b->model->config.group_size, ng = n / gs;
    for (int t = t0; t < t1; t++) {
        int8_t *xq = q.xq + (size_t)t * n;
        b->k->quantize_q8(xq, q.xs + (size_t)t * ng, x + (size_t)t * n, n, gs);
        if (!b->model->owned_panels) continue; /* only the panel kernels read the sums */
        for (int g = 0; g < ng; g++) {
            int32_t sum = 0;
            for (int i = 0; i < gs; i++) sum += xq[g * gs + i];
            q.xsum[(size_t)t * ng + g] = sum;
        }
    }
    return (matmul_input){x, q.xq, q.xs, q.xsum};
}

/* RoPE: rotate each (even, odd) pair of v[i0:i1] by its position's angle.
 * `rope` holds cos, sin of the angle for each pair index within a head. */
static void rotate(float *v, int i0, int i1, int head_size, const float *rope) {
    /* head by head, so the pair index needs no division per element */
    for (int i = i0; i < i1;) {
        int j = i % head_size, end = i - j + head_size < i1 ? i - j + head_size : i1;
        for (; i < end; i += 2, j += 2) {
            float fcr = rope[j], fci = rope[j + 1];
            float v0 = v[i], v1 = v[i + 1];
            v[i] = v0 * fcr - v1 * fci;
            v[i + 1] = v0 * fci + v1 * fcr;
        }
    }
}

/* Entries [i0, i1) of position pos's key into a key cache (layer_offset:
 * the layer's part), one float at a time: they are TS_KEY_BLOCK apart. */
static void store_key(const ts_model *m, float *cache, size_t layer_offset, int pos,
                      const float *src, int i0, int i1) {
    int head_size = m->head_size;
    size_t head = ts__kv_seq(m->config.seq_len) * head_size; /* one kv head's span */
    for (int i = i0; i < i1;) {
        int kvh = i / head_size, j = i % head_size;
        int len = head_size - j < i1 - i ? head_size - j : i1 - i;
        float *dst = cache + layer_offset + (size_t)kvh * head + ts__key_index(pos, j, head_size);
        for (int k = 0; k < len; k++) dst[(size_t)k * TS_KEY_BLOCK] = src[i + k];
        i += len;
    }
}

/* The same for a value: contiguous runs, one per kv head. */
static void store_value(const ts_model *m, float *cache, size_t layer_offset, int pos,
                        const float *src, int i0, int i1) {
    int head_size = m->head_size;
    size_t kv_seq = ts__kv_seq(m->config.seq_len);
    for (int i = i0; i < i1;) {
        int kvh = i / head_size, j = i % head_size;
        int len = head_size - j < i1 - i ? head_size - j : i1 - i;
        size_t at = layer_offset + ((size_t)kvh * kv_seq + (size_t)pos) * head_size + j;
        memcpy(cache + at, src + i, (size_t)len * sizeof(float));
        i += len;
    }
}

/* Position pos's key and value, rows [i0, i1) of kv_dim, into a row's caches. */
static void store_key_value(const ts_model *m, const ts_row *row, size_t layer_offset,
                            const float *key, const float *value, int i0, int i1) {
    store_key(m, row->key_cache, layer_offset, row->pos, key, i0, i1);
    store_value(m, row->value_cache, layer_offset, row->pos, value, i0, i1);
}

/* Starts fetching what a row's attention will read: its keys and values
 * of kv heads [h0, h1) at positions 0..pos, into this core's L2. In a
 * batch step every row has a cache of its own, cold since the last step
 * (the weights and the other rows' caches went through since), in runs of
 * a few KiB too short for the hardware prefetchers to ramp up on: fetched
 * a row ahead, one row's misses overlap the row before. Always inlined:
 * a call to a function that only prefetches counts as dead code to GCC. */
static inline __attribute__((always_inline)) void prefetch_attention(const ts_model *m,
                                                                     const ts_row *row,
                                                                     size_t layer_offset, int h0,
                                                                     int h1) {
    int hs = m->head_size;
    size_t kv_seq = ts__kv_seq(m->config.seq_len), head = kv_seq * hs;
    size_t key_bytes = ((size_t)row->pos / TS_KEY_BLOCK + 1) * TS_KEY_BLOCK * hs * sizeof(float);
    size_t value_bytes = ((size_t)row->pos + 1) * hs * sizeof(float);
    for (int h = h0; h < h1; h++) {
        const char *k = (const char *)(row->key_cache + layer_offset + (size_t)h * head);
        const char *v = (const char *)(row->value_cache + layer_offset + (size_t)h * head);
        for (size_t at = 0; at < key_bytes; at += 64) __builtin_prefetch(k + at, 0, 2);
        for (size_t at = 0; at < value_bytes; at += 64) __builtin_prefetch(v + at, 0, 2);
    }
}

/* Query head h of row t attends over its sequence's positions 0..pos. */
static void attend(ts_batch *b, const ts_row *rows, int t, int h, size_t layer_offset,
                   float *att) {
    const ts_model *m = b->model;
    int hs = m->head_size, kv_mul = m->config.n_heads / m->config.n_kv_heads;
    size_t kv_off = layer_offset + (size_t)(h / kv_mul) * ts__kv_seq(m->config.seq_len) * hs;
    size_t at = (size_t)t * m->config.dim + (size_t)h * hs;
    b->ew.attention(b->xb2 + at, att, b->q + at, rows[t].key_cache + kv_off,
                    rows[t].value_cache + kv_off, rows[t].pos + 1, hs);
}

/* x[:, i0:i1] += (W y)[:, i0:i1], through xb, for W = wo or w2. */
static void add_matmul_rows(ts_batch *b, const ts_weight *w, matmul_input y, int nt, int n,
                            int i0, int i1, ts_panels_next next) {
    int dim = b->model->config.dim;
    matmul_rows(b, b->xb, y, nt, w, n, dim, i0, i1, next);
    for (int t = 0; t < nt; t++) {
        float *x = b->x + (size_t)t * dim, *o = b->xb + (size_t)t * dim;
        for (int i = i0; i < i1; i++) x[i] += o[i];
    }
}

/* hb[:, i0:i1] = silu(w1 x) * (w3 x) on those rows of hidden_dim. */
static void ffn_up_rows(ts_batch *b, matmul_input x, int nt, const ts_layer *w, int i0, int i1,
                        ts_panels_next next) {
    int dim = b->model->config.dim, hid = b->model->config.hidden_dim;
    matmul_rows(b, b->hb, x, nt, &w->w1, dim, hid, i0, i1, panels_head(b, &w->w3, dim, i0, i1));
    matmul_rows(b, b->hb2, x, nt, &w->w3, dim, hid, i0, i1, next);
    for (int t = 0; t < nt; t++) {
        size_t at = (size_t)t * hid + (size_t)i0;
        b->ew.swiglu(b->hb + at, b->hb2 + at, i1 - i0);
    }
}

static int row_items(int rows) { return (rows + ROWS_PER_ITEM - 1) / ROWS_PER_ITEM; }

/* ---------------------------------------------------------------- team
 * The pool's threads run a whole forward pass together, each on a fixed
 * part of every step, meeting at a barrier where a step needs the others'
 * results: thread r takes the r-th share of the kv heads (their rows of wq,
 * wk, wv for every token, RoPE and the cache writes) and, for every row,
 * the attention of their query heads, which needs nothing from the others,
 * so no barrier comes before it (where the kv heads do not divide evenly
 * among the threads, the (row, head) pairs are dealt out instead, after a
 * barrier); then the r-th share of the rows of wo, w1/w3, w2 and the
 * classifier. The rmsnorms and quantizations of one row are cheap, so every
 * thread computes them for itself instead of waiting for one to; several
 * rows are split among the threads, with a barrier. A thread reads the
 * same weights and cache heads every pass, which stay in its core's cache;
 * a decode token (one row: four barriers per layer) costs a few
 * microseconds of synchronisation. Which thread computes an output never changes how: the
 * logits are the same for every team size. */

typedef struct forward_job {
    ts_batch *b;
    const ts_row *rows;
    int n;  /* rows */
    int nl; /* of which want logits */
} forward_job;

/* Thread r's share [i0, i1) of `rows` rows, in whole ROWS_PER_ITEM blocks. */
static void share_rows(int rows, int r, int n_threads, int *i0, int *i1) {
    int blocks = row_items(rows);
    *i0 = blocks * r / n_threads * ROWS_PER_ITEM;
    *i1 = blocks * (r + 1) / n_threads * ROWS_PER_ITEM;
    if (*i1 > rows) *i1 = rows;
}

/* x's rows [t0, t1) through rmsnorm with weight w into xb. */
static void rmsnorm_rows(const ts_batch *b, float *xb, const float *w, int t0, int t1) {
    int dim = b->model->config.dim;
    for (int t = t0; t < t1; t++) {
        b->ew.rmsnorm(xb + (size_t)t * dim, b->x + (size_t)t * dim, w, dim);
    }
}

static void forward_team(void *ctx, int r, int n_threads) {
    const forward_job *job = ctx;
    ts_batch *b = job->b;
    const ts_row *rows = job->rows;
    const ts_model *m = b->model;
    const ts_config *p = &m->config;
    int n = job->n, dim = p->dim, hid = p->hidden_dim, hs = m->head_size, kv_dim = m->kv_dim;
    int kv_mul = p->n_heads / p->n_kv_heads;
    ts_pool *team = n_threads > 1 ? b->pool : NULL;
    /* A thread's own scratch: its rmsnorm outputs and quantized inputs. One
     * row: every thread prepares each matmul input for itself, cheaper than
     * a barrier. Several rows (prefill, batches): the threads split the
     * rows, into thread 0's scratch, and meet at a barrier before the
     * matmuls read it (stories15M Q8_0 prefill spent an eighth of its
     * two-thread time preparing every row twice). */
    int shared = team && n > 1;
    int s0 = shared ? n * r / n_threads : 0, s1 = shared ? n * (r + 1) / n_threads : n;
    float *own_xb = b->thread_xb + (size_t)r * b->capacity * dim;
    q8_scratch own_xq = {0};
    if (m->quantized) {
        own_xq.xq = b->thread_xq + (size_t)r * b->capacity * b->qmax;
        own_xq.xs = b->thread_xs + (size_t)r * b->capacity * b->qgroups;
        own_xq.xsum = b->thread_xsum + (size_t)r * b->capacity * b->qgroups;
    }
    float *xb = shared ? b->thread_xb : own_xb;
    q8_scratch xq = shared ? (q8_scratch){b->thread_xq, b->thread_xs, b->thread_xsum} : own_xq;
    size_t kv_seq = ts__kv_seq(p->seq_len);
    float *att = b->att + (size_t)r * kv_seq;
    /* its kv heads, as rows of wk/wv (k0..k1) and of wq (q0..q1) */
    int kv0 = p->n_kv_heads * r / n_threads, kv1 = p->n_kv_heads * (r + 1) / n_threads;
    int k0 = kv0 * hs, k1 = kv1 * hs, q0 = k0 * kv_mul, q1 = k1 * kv_mul;
    int o0, o1, h0, h1, c0, c1; /* its rows of wo and w2, of w1 and w3, of the classifier */
    share_rows(dim, r, n_threads, &o0, &o1);
    share_rows(hid, r, n_threads, &h0, &h1);
    share_rows(p->vocab_size, r, n_threads, &c0, &c1);
    /* Its kv heads' query heads attend for every row, when the kv heads
     * divide evenly (one row: always; a thread without kv heads has none).
     * Otherwise the (row, head) pairs are dealt out in turn, so every thread
     * gets early (short) and late (long) rows alike. */
    int own_heads = n == 1 || p->n_kv_heads % n_threads == 0;

    for (int l = 0; l < p->n_layers; l++) {
        const ts_layer *w = &m->layers[l];
        size_t loff = (size_t)l * kv_seq * kv_dim;

        /* attention rmsnorm; its q, k, v rows, RoPE, its kv heads' caches */
        rmsnorm_rows(b, xb, w->rms_att, s0, s1);
        matmul_input in = prepare_input(b, xb, xq, s0, s1, dim);
        if (shared) ts__pool_barrier(team, r);
        if (q0 < q1) {
            /* each matmul streams in the next one's first panels; after wv,
             * the attention's reads would evict them */
            matmul_rows(b, b->q, in, n, &w->wq, dim, dim, q0, q1,
                        panels_head(b, &w->wk, dim, k0, k1));
            matmul_rows(b, b->kb, in, n, &w->wk, dim, kv_dim, k0, k1,
                        panels_head(b, &w->wv, dim, k0, k1));
            matmul_rows(b, b->vb, in, n, &w->wv, dim, kv_dim, k0, k1, (ts_panels_next){0});
            for (int t = 0; t < n; t++) {
                const float *rope = b->rope + (size_t)t * hs;
                float *kt = b->kb + (size_t)t * kv_dim, *vt = b->vb + (size_t)t * kv_dim;
                rotate(b->q + (size_t)t * dim, q0, q1, hs, rope);
                rotate(kt, k0, k1, hs, rope);
                if (!own_heads) store_key_value(m, &rows[t], loff, kt, vt, k0, k1);
            }
        }

        /* multi-head attention over positions 0..pos of each row's sequence */
        if (own_heads) {
            /* each row's key and value go into the caches just before its
             * attention (a later row of the same sequence reads them): a
             * batch's key lines are cold, and their misses then overlap the
             * attention's reads (32 stories110M fp32 streams: +1-5%) */
            for (int t = 0; t < n; t++) {
                /* the next row's caches, where it has its own (prefill's
                 * rows share theirs, which the row before brought in) */
                if (q0 < q1 && t + 1 < n && rows[t + 1].key_cache != rows[t].key_cache) {
                    prefetch_attention(m, &rows[t + 1], loff, kv0, kv1);
                }
                if (q0 < q1) {
                    store_key_value(m, &rows[t], loff, b->kb + (size_t)t * kv_dim,
                                    b->vb + (size_t)t * kv_dim, k0, k1);
                }
                for (int h = kv0 * kv_mul; h < kv1 * kv_mul; h++) attend(b, rows, t, h, loff, att);
            }
        } else {
            /* every row's new keys and values in place before any attention */
            ts__pool_barrier(team, r);
            for (int item = r; item < n * p->n_heads; item += n_threads) {
                attend(b, rows, item / p->n_heads, item % p->n_heads, loff, att);
            }
        }
        ts__pool_barrier(team, r);

        /* output projection and residual */
        in = prepare_input(b, b->xb2, xq, s0, s1, dim);
        if (shared && m->quantized) ts__pool_barrier(team, r);
        add_matmul_rows(b, &w->wo, in, n, dim, o0, o1, panels_head(b, &w->w1, dim, h0, h1));
        ts__pool_barrier(team, r);

        /* ffn rmsnorm, then w2(silu(w1 x) * w3 x) and residual */
        rmsnorm_rows(b, xb, w->rms_ffn, s0, s1);
        in = prepare_input(b, xb, xq, s0, s1, dim);
        if (shared) ts__pool_barrier(team, r);
        ffn_up_rows(b, in, n, w, h0, h1, panels_head(b, &w->w2, hid, o0, o1));
        ts__pool_barrier(team, r);

        in = prepare_input(b, b->hb, xq, s0, s1, hid);
        if (shared && m->quantized) ts__pool_barrier(team, r);
        /* what comes after w2: the next layer's wq, or the classifier */
        ts_panels_next after = l + 1 < p->n_layers
                                   ? panels_head(b, &m->layers[l + 1].wq, dim, q0, q1)
                                   : panels_head(b, job->nl > 0 ? &m->wcls : NULL, dim, c0, c1);
        add_matmul_rows(b, &w->w2, in, n, hid, o0, o1, after);
        ts__pool_barrier(team, r);
    }

    /* final rmsnorm and the classifier, for the rows that want logits */
    if (job->nl == 0) return;
    for (int t = 0, i = 0; t < n; t++) {
        if (!rows[t].logits) continue;
        b->ew.rmsnorm(own_xb + (size_t)i++ * dim, b->x + (size_t)t * dim, m->rms_final, dim);
    }
    matmul_input in = prepare_input(b, own_xb, own_xq, 0, job->nl, dim);
    /* Straight into the rows' logits where they lie one after another (one
     * row, or every position of a prompt), else into the batch's, from
     * which each thread copies out the columns it computed: its own, so no
     * barrier, and no copy of every row on one thread afterwards. */
    size_t V = (size_t)p->vocab_size;
    float *first = NULL;
    int contiguous = 1;
    for (int t = 0, i = 0; t < n; t++) {
        if (!rows[t].logits) continue;
        if (!first) first = rows[t].logits;
        contiguous &= rows[t].logits == first + V * (size_t)i++;
    }
    matmul_rows(b, contiguous ? first : b->logits, in, job->nl, &m->wcls, dim, p->vocab_size, c0,
                c1, (ts_panels_next){0});
    if (contiguous || c1 <= c0) return;
    for (int t = 0, i = 0; t < n; t++) {
        if (!rows[t].logits) continue;
        memcpy(rows[t].logits + c0, b->logits + V * (size_t)i++ + c0,
               (size_t)(c1 - c0) * sizeof(float));
    }
}

/* ------------------------------------------------------------- forward */

/* x (dim) = the token's embedding. A Q8_0 model dequantizes the one row,
 * as runq's dequantized table holds it: value * its group's scale. */
static void embed(const ts_model *m, int32_t token, float *x) {
    size_t dim = (size_t)m->config.dim, at = (size_t)token * dim;
    if (m->token_embedding) {
        memcpy(x, m->token_embedding + at, dim * sizeof(float));
        return;
    }
    size_t gs = (size_t)m->config.group_size;
    for (size_t i = 0; i < dim; i++) {
        x[i] = m->embedding_q8[at + i] * m->embedding_scales[(at + i) / gs];
    }
}

void ts__forward(ts_batch *b, const ts_row *rows, int n) {
    const ts_model *m = b->model;
    const ts_config *p = &m->config;
    int dim = p->dim, head_size = m->head_size;

    forward_job job = {b, rows, n, 0};
    for (int t = 0; t < n; t++) {
        /* the token's embedding starts the residual stream */
        embed(m, rows[t].token, b->x + (size_t)t * dim);
        /* the RoPE angles depend only on the position: once per row, not per layer */
        float *rope = b->rope + (size_t)t * head_size;
        for (int i = 0; i < head_size; i += 2) {
            float val = rows[t].pos * b->freq[i / 2];
            rope[i] = cosf(val);
            rope[i + 1] = sinf(val);
        }
        if (rows[t].logits) job.nl++;
    }
    ts__pool_run(b->pool, forward_team, &job);
}

/* ------------------------------------------------------------- batches */
int ts__team_threads(const ts_model *model, int n_threads) {
    if (n_threads <= 0) n_threads = model->n_threads_default;
    /* A team waits for its slowest member at every barrier: no more threads
     * than CPUs. */
    int cpus = ts__online_cpus();
    return n_threads > cpus ? cpus : n_threads;
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
    const ts_kernels *k = b->k;
    b->ew.swiglu = model->quantized ? (k->swiglu_exact ? k->swiglu_exact : exact->swiglu) : k->swiglu;
    b->ew.attention = model->quantized ? b->k->attention_exact : b->k->attention;
    b->capacity = capacity;
    b->threads_asked = n_threads;
    if (n_threads <= 0) n_threads = model->n_threads_default;
    b->pool = ts__pool_new(n_threads); /* NULL: single-threaded */
    int threads = ts__pool_threads(b->pool);
    uint64_t cap = (uint64_t)capacity, dim = (uint64_t)p->dim, hid = (uint64_t)p->hidden_dim;
    uint64_t kv = (uint64_t)model->kv_dim, hs = (uint64_t)model->head_size;
    uint64_t qmax = dim > hid ? dim : hid;
    b->qmax = (int)qmax;
    b->x = ts__calloc_floats(cap, dim, 1);
    b->xb = ts__calloc_floats(cap, dim, 1);
    b->xb2 = ts__calloc_floats(cap, dim, 1);
    b->q = ts__calloc_floats(cap, dim, 1);
    b->kb = ts__calloc_floats(cap, kv, 1);
    b->vb = ts__calloc_floats(cap, kv, 1);
    b->hb = ts__calloc_floats(cap, hid, 1);
    b->hb2 = ts__calloc_floats(cap, hid, 1);
    b->att = ts__calloc_floats((uint64_t)threads, (uint64_t)ts__kv_seq(p->seq_len), 1);
    b->thread_xb = ts__calloc_floats((uint64_t)threads, cap, dim);
    b->logits = ts__calloc_floats(cap, (uint64_t)p->vocab_size, 1);
    b->rope = ts__calloc_floats(cap, hs, 1);
    b->freq = ts__calloc_floats(hs / 2, 1, 1);
    int ok = b->x && b->xb && b->xb2 && b->q && b->kb && b->vb && b->hb && b->hb2 && b->att &&
             b->logits && b->rope && b->freq && b->thread_xb;
    if (model->quantized) {
        uint64_t groups = qmax / (uint64_t)p->group_size + 1;
        b->qgroups = (int)groups;
        b->thread_xq = calloc((size_t)threads * (size_t)(cap * qmax), 1);
        b->thread_xs = ts__calloc_floats((uint64_t)threads, cap, groups);
        b->thread_xsum = calloc((size_t)threads * (size_t)(cap * groups), sizeof(int32_t));
        ok = ok && b->thread_xq && b->thread_xs && b->thread_xsum;
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
    ts__free_floats(b->x);
    ts__free_floats(b->xb);
    ts__free_floats(b->xb2);
    ts__free_floats(b->q);
    ts__free_floats(b->kb);
    ts__free_floats(b->vb);
    ts__free_floats(b->hb);
    ts__free_floats(b->hb2);
    ts__free_floats(b->att);
    ts__free_floats(b->logits);
    ts__free_floats(b->rope);
    ts__free_floats(b->freq);
    ts__free_floats(b->thread_xb);
    free(b->thread_xq);
    ts__free_floats(b->thread_xs);
    free(b->thread_xsum);
    free(b);
}

int ts__batch_capacity(const ts_batch *b) { return b->capacity; }

int ts__batch_threads_asked(const ts_batch *b) { return b->threads_asked; }
