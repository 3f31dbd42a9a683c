/*
 * model.c — loading and validating llama2.c checkpoints (v0, v1, v2).
 *
 * The file is memory-mapped read-only. Every size is computed in 64 bits
 * with overflow checks, and the file size must equal exactly what the
 * header implies, so no weight pointer can ever reach past the mapping.
 * The kernel sets that read panels (pack.c) get every matrix copied into
 * them and the file's pages released; the others use the mapping in place.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TS_MAGIC 0x616b3432u /* "ak42" read as a little-endian uint32 */
#define TS_V0_HEADER 28      /* 7 int32 */
#define TS_V12_HEADER 256

/* ------------------------------------------------------------ helpers */

/* Headers are read with memcpy: the v2 group size sits at an unaligned
 * offset. (Like llama2.c, files are little-endian and so is the host.) */
static int32_t rd_i32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* A byte count built from products of header fields; `overflow` sticks. */
typedef struct sizer {
    uint64_t total;
    int overflow;
} sizer;

/* total += a * b * c * d */
static void sz_add(sizer *sz, uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_mul_overflow(r, c, &r) ||
        __builtin_mul_overflow(r, d, &r) || __builtin_add_overflow(sz->total, r, &sz->total)) {
        sz->overflow = 1;
    }
}

/* Opens and maps `path` read-only. (The tokenizer, small and parsed into
 * owned tables anyway, just reads its file.) */
static ts_status map_file(const char *path, void **map, size_t *size, struct stat *stat_out,
                          ts_error *err) {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
     * rejected as not a regular file); regular files ignore the flag. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return ts__with_errno(err,
                              ts__fail(err, e == ENOENT ? TS_ERR_NOT_FOUND : TS_ERR_IO,
                                       "%s: cannot open: %s (errno %d)", path, ts__errno_text(e), e),
                              e);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ts__with_errno(
            err, ts__fail(err, TS_ERR_IO, "%s: cannot stat: %s (errno %d)", path, ts__errno_text(e), e),
            e);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return ts__with_errno(
            err, ts__fail(err, TS_ERR_IO, "%s: is a directory, not a model file", path), EISDIR);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return ts__fail(err, TS_ERR_IO, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return ts__fail(err, TS_ERR_FORMAT, "%s: file is empty", path);
    }
    if ((uint64_t)st.st_size > SIZE_MAX) {
        close(fd);
        return ts__fail(err, TS_ERR_IO, "%s: file too large to map", path);
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping stays valid without the descriptor */
    if (p == MAP_FAILED) {
        return ts__fail(err, e == ENOMEM ? TS_ERR_NOMEM : TS_ERR_IO, "%s: cannot mmap: %s (errno %d)",
                        path, ts__errno_text(e), e);
    }
    *map = p;
    *size = (size_t)st.st_size;
    *stat_out = st;
    return TS_OK;
}

/* ---------------------------------------------------------- validation */

/* Checks the dimensions every format shares. `what` prefixes the message
 * (e.g. "as a v0 file: ") so a file without magic gets a useful hint. */
static ts_status check_config(const ts_config *c, const char *path, const char *what,
                              ts_error *err) {
    const struct { const char *name; int v; } dims[] = {
        {"dim", c->dim},           {"hidden_dim", c->hidden_dim}, {"n_layers", c->n_layers},
        {"n_heads", c->n_heads},   {"n_kv_heads", c->n_kv_heads}, {"vocab_size", c->vocab_size},
        {"seq_len", c->seq_len},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        if (dims[i].v <= 0) {
            return ts__fail(err, TS_ERR_FORMAT, "%s: %s%s is %d, must be positive", path, what,
                            dims[i].name, dims[i].v);
        }
    }
    if (c->dim % c->n_heads != 0) {
        return ts__fail(err, TS_ERR_FORMAT, "%s: %sdim %d is not a multiple of n_heads %d", path,
                        what, c->dim, c->n_heads);
    }
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0) {
        return ts__fail(err, TS_ERR_FORMAT, "%s: %sn_heads %d is not a multiple of n_kv_heads %d",
                        path, what, c->n_heads, c->n_kv_heads);
    }
    if ((c->dim / c->n_heads) % 2 != 0) {
        return ts__fail(err, TS_ERR_FORMAT, "%s: %shead size %d is odd (RoPE rotates pairs)", path,
                        what, c->dim / c->n_heads);
    }
    if (c->version == TS_FORMAT_V2) {
        int gs = c->group_size;
        if (gs <= 0) {
            return ts__fail(err, TS_ERR_FORMAT, "%s: group_size is %d, must be positive", path, gs);
        }
        /* export.py only guarantees gs | dim, which makes every tensor's
         * size a whole number of groups. hidden_dim need not be a multiple
         * (tok105: 352 with gs 64); runq's matmul then ignores the tail. */
        if (c->dim % gs != 0) {
            return ts__fail(err, TS_ERR_FORMAT, "%s: group_size %d does not divide dim %d", path, gs,
                            c->dim);
        }
    }
    return TS_OK;
}

/* ------------------------------------------------------------- layouts */

/* Hands out consecutive pieces of the mapping; sizes were checked up front
 * against the file size, so this never runs past the end. */
typedef struct cursor {
    const unsigned char *p;
} cursor;

static const float *take_f32(cursor *c, size_t n) {
    const float *r = (const float *)(const void *)c->p;
    c->p += n * sizeof(float);
    return r;
}

/* A Q8_0 tensor: n int8 values, then n/gs fp32 scales. The scales may sit
 * at any byte offset, so they are copied into the aligned `*scales` arena. */
static ts_weight take_q8(cursor *c, size_t n, int gs, float **scales) {
    ts_weight w = {0};
    w.q = (const int8_t *)c->p;
    c->p += n;
    size_t ns = n / (size_t)gs;
    memcpy(*scales, c->p, ns * sizeof(float));
    w.s = *scales;
    *scales += ns;
    c->p += ns * sizeof(float);
    return w;
}

static ts_weight f32w(const float *p) {
    ts_weight w = {0};
    w.f32 = p;
    return w;
}

/* Where each kind of fp32 layer weight starts, all layers stacked. */
typedef struct f32_stack {
    const float *rms_att, *rms_ffn, *wq, *wk, *wv, *wo, *w1, *w2, *w3;
} f32_stack;

/* Points every layer at its slice of the stacked fp32 weights. */
static void point_layers_f32(ts_model *m, const f32_stack *w) {
    size_t dim = (size_t)m->config.dim, hid = (size_t)m->config.hidden_dim;
    size_t kv = (size_t)m->kv_dim;
    for (size_t l = 0; l < (size_t)m->config.n_layers; l++) {
        ts_layer *ly = &m->layers[l];
        ly->rms_att = w->rms_att + l * dim;
        ly->rms_ffn = w->rms_ffn + l * dim;
        ly->wq = f32w(w->wq + l * dim * dim);
        ly->wk = f32w(w->wk + l * dim * kv);
        ly->wv = f32w(w->wv + l * dim * kv);
        ly->wo = f32w(w->wo + l * dim * dim);
        ly->w1 = f32w(w->w1 + l * hid * dim);
        ly->w2 = f32w(w->w2 + l * dim * hid);
        ly->w3 = f32w(w->w3 + l * hid * dim);
    }
}

/* v0 (run.c's legacy export): embedding, then each kind for all layers,
 * rms_final, two unused RoPE tables, and wcls when unshared. */
static void layout_v0(ts_model *m, cursor *c) {
    const ts_config *p = &m->config;
    size_t dim = (size_t)p->dim, hid = (size_t)p->hidden_dim, kv = (size_t)m->kv_dim;
    size_t L = (size_t)p->n_layers, hs = (size_t)m->head_size;
    const float *emb = take_f32(c, (size_t)p->vocab_size * dim);
    const float *rms_att = take_f32(c, L * dim);
    const float *wq = take_f32(c, L * dim * dim);
    const float *wk = take_f32(c, L * dim * kv);
    const float *wv = take_f32(c, L * dim * kv);
    const float *wo = take_f32(c, L * dim * dim);
    const float *rms_ffn = take_f32(c, L * dim);
    const float *w1 = take_f32(c, L * hid * dim);
    const float *w2 = take_f32(c, L * dim * hid);
    const float *w3 = take_f32(c, L * hid * dim);
    m->rms_final = take_f32(c, dim);
    take_f32(c, (size_t)p->seq_len * hs / 2); /* freq_cis_real, unused */
    take_f32(c, (size_t)p->seq_len * hs / 2); /* freq_cis_imag, unused */
    m->token_embedding = emb;
    m->wcls = f32w(p->shared_classifier ? emb : take_f32(c, (size_t)p->vocab_size * dim));
    point_layers_f32(m, &(const f32_stack){rms_att, rms_ffn, wq, wk, wv, wo, w1, w2, w3});
}

/* v1 (export.py version1_export): norms first, then the matrices. */
static void layout_v1(ts_model *m, cursor *c) {
    const ts_config *p = &m->config;
    size_t dim = (size_t)p->dim, hid = (size_t)p->hidden_dim, kv = (size_t)m->kv_dim;
    size_t L = (size_t)p->n_layers;
    const float *rms_att = take_f32(c, L * dim);
    const float *rms_ffn = take_f32(c, L * dim);
    m->rms_final = take_f32(c, dim);
    const float *emb = take_f32(c, (size_t)p->vocab_size * dim);
    const float *wq = take_f32(c, L * dim * dim);
    const float *wk = take_f32(c, L * dim * kv);
    const float *wv = take_f32(c, L * dim * kv);
    const float *wo = take_f32(c, L * dim * dim);
    const float *w1 = take_f32(c, L * hid * dim);
    const float *w2 = take_f32(c, L * dim * hid);
    const float *w3 = take_f32(c, L * hid * dim);
    m->token_embedding = emb;
    m->wcls = f32w(p->shared_classifier ? emb : take_f32(c, (size_t)p->vocab_size * dim));
    point_layers_f32(m, &(const f32_stack){rms_att, rms_ffn, wq, wk, wv, wo, w1, w2, w3});
}

/* v2 (export.py version2_export, read by runq.c): fp32 norms, then Q8_0
 * tensors, one per layer, grouped by kind. */
static void layout_v2(ts_model *m, cursor *c, float *scales) {
    const ts_config *p = &m->config;
    size_t dim = (size_t)p->dim, hid = (size_t)p->hidden_dim, kv = (size_t)m->kv_dim;
    size_t L = (size_t)p->n_layers, nemb = (size_t)p->vocab_size * dim;
    int gs = p->group_size;
    const float *rms_att = take_f32(c, L * dim);
    const float *rms_ffn = take_f32(c, L * dim);
    m->rms_final = take_f32(c, dim);
    for (size_t l = 0; l < L; l++) {
        m->layers[l].rms_att = rms_att + l * dim;
        m->layers[l].rms_ffn = rms_ffn + l * dim;
    }
    ts_weight emb = take_q8(c, nemb, gs, &scales);
    for (size_t l = 0; l < L; l++) m->layers[l].wq = take_q8(c, dim * dim, gs, &scales);
    for (size_t l = 0; l < L; l++) m->layers[l].wk = take_q8(c, dim * kv, gs, &scales);
    for (size_t l = 0; l < L; l++) m->layers[l].wv = take_q8(c, dim * kv, gs, &scales);
    for (size_t l = 0; l < L; l++) m->layers[l].wo = take_q8(c, dim * dim, gs, &scales);
    for (size_t l = 0; l < L; l++) m->layers[l].w1 = take_q8(c, hid * dim, gs, &scales);
    for (size_t l = 0; l < L; l++) m->layers[l].w2 = take_q8(c, dim * hid, gs, &scales);
    for (size_t l = 0; l < L; l++) m->layers[l].w3 = take_q8(c, hid * dim, gs, &scales);
    /* runq looks tokens up in a dequantized copy (we dequantize the row a
     * token needs) but classifies with the quantized table when shared. */
    m->wcls = p->shared_classifier ? emb : take_q8(c, nemb, gs, &scales);
    m->embedding_q8 = emb.q;
    m->embedding_scales = emb.s;
}

/* ------------------------------------------------------- Q8_0 weights */

/* Every weight matrix the forward pass multiplies with, with its shape. */
typedef struct weight_ref {
    ts_weight *w;
    size_t d, n;
} weight_ref;

/* Fills refs (room for 7 * n_layers + 1); returns the count. */
static size_t list_weights(ts_model *m, weight_ref *refs) {
    const ts_config *p = &m->config;
    size_t dim = (size_t)p->dim, hid = (size_t)p->hidden_dim, kv = (size_t)m->kv_dim, k = 0;
    for (int l = 0; l < p->n_layers; l++) {
        ts_layer *ly = &m->layers[l];
        refs[k++] = (weight_ref){&ly->wq, dim, dim};
        refs[k++] = (weight_ref){&ly->wk, kv, dim};
        refs[k++] = (weight_ref){&ly->wv, kv, dim};
        refs[k++] = (weight_ref){&ly->wo, dim, dim};
        refs[k++] = (weight_ref){&ly->w1, hid, dim};
        refs[k++] = (weight_ref){&ly->w2, dim, hid};
        refs[k++] = (weight_ref){&ly->w3, hid, dim};
    }
    refs[k++] = (weight_ref){&m->wcls, (size_t)p->vocab_size, dim};
    return k;
}

/* export.py's quantize_q80 on fp32 `x` (n values, groups of gs over the
 * flattened tensor): scale = max|x| / 127, q = round-half-even(x / scale). */
static void quantize_tensor(int8_t *q, float *s, const float *x, size_t n, int gs) {
    for (size_t g = 0; g < n / (size_t)gs; g++) {
        const float *xg = x + g * (size_t)gs;
        float wmax = 0.0f;
        for (int i = 0; i < gs; i++) {
            float v = fabsf(xg[i]);
            if (v > wmax) wmax = v;
        }
        float scale = wmax / 127.0f;
        s[g] = scale;
        for (int i = 0; i < gs; i++) {
            float r = scale == 0.0f ? 0.0f : nearbyintf(xg[i] / scale);
            if (!(r >= -127.0f && r <= 127.0f)) r = r > 0.0f ? 127.0f : (r < 0.0f ? -127.0f : 0.0f);
            q[g * (size_t)gs + (size_t)i] = (int8_t)r;
        }
    }
}

/* Replaces every fp32 matrix by its Q8_0 form, as if the model had been
 * exported as a v2 file with group size gs and loaded like runq loads it. */
static ts_status quantize_model(ts_model *m, int gs, const char *path, ts_error *err) {
    const ts_config *p = &m->config;
    weight_ref *refs = malloc((7 * (size_t)p->n_layers + 1) * sizeof *refs);
    if (!refs) return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    size_t count = list_weights(m, refs), total = 0;
    size_t nemb = (size_t)p->vocab_size * (size_t)p->dim;
    if (p->shared_classifier) count--; /* wcls is the embedding, quantized below */
    for (size_t i = 0; i < count; i++) total += refs[i].d * refs[i].n;
    total += nemb;
    m->owned_q8 = malloc(total);
    m->owned_scales = malloc(total / (size_t)gs * sizeof(float));
    if (!m->owned_q8 || !m->owned_scales) {
        free(refs);
        return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory quantizing to Q8_0", path);
    }
    int8_t *q = m->owned_q8;
    float *s = m->owned_scales;
    for (size_t i = 0; i < count; i++) {
        size_t n = refs[i].d * refs[i].n;
        quantize_tensor(q, s, refs[i].w->f32, n, gs);
        *refs[i].w = (ts_weight){.q = q, .s = s};
        q += n;
        s += n / (size_t)gs;
    }
    free(refs);
    /* runq looks tokens up in the dequantized embedding and, when shared,
     * classifies with the quantized one */
    quantize_tensor(q, s, m->token_embedding, nemb, gs);
    if (p->shared_classifier) m->wcls = (ts_weight){.q = q, .s = s};
    m->embedding_q8 = q;
    m->embedding_scales = s;
    m->token_embedding = NULL;
    m->config.group_size = gs;
    m->quantized = 1;
    return TS_OK;
}

/* row_sums of every Q8_0 matrix (see ts_kernels.matmul_q8). */
static ts_status add_row_sums(ts_model *m, const char *path, ts_error *err) {
    const ts_config *p = &m->config;
    size_t gs = (size_t)p->group_size;
    weight_ref *refs = malloc((7 * (size_t)p->n_layers + 1) * sizeof *refs);
    if (!refs) return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    size_t count = list_weights(m, refs), total = 0;
    for (size_t i = 0; i < count; i++) total += refs[i].d * (refs[i].n / gs);
    m->owned_row_sums = malloc(total * sizeof(int32_t));
    if (!m->owned_row_sums) {
        free(refs);
        return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    int32_t *out = m->owned_row_sums;
    for (size_t i = 0; i < count; i++) {
        const int8_t *wq = refs[i].w->q;
        size_t d = refs[i].d, n = refs[i].n, ng = n / gs;
        refs[i].w->row_sums = out;
        for (size_t r = 0; r < d; r++) {
            for (size_t g = 0; g < ng; g++) {
                int32_t sum = 0;
                for (size_t k = 0; k < gs; k++) sum += wq[r * n + g * gs + k];
                out[g * d + r] = sum; /* group-major: one group's rows side by side */
            }
        }
        out += d * ng;
    }
    free(refs);
    return TS_OK;
}

/* --------------------------------------------------------------- panels */

/* Bytes of matrix `r` packed, each part rounded up to a cache line. */
static size_t panel_bytes(const ts_model *m, const weight_ref *r) {
    size_t panels = ts__panel_count((int)r->d);
    if (!m->quantized) return panels * r->n * TS_PANEL * sizeof(float);
    size_t gs = (size_t)m->config.group_size, ng = r->n / gs;
    return panels * ng * gs * TS_PANEL + (panels * ng * TS_PANEL * sizeof(float) + 63) / 64 * 64;
}

/* Whether the model's kernel set reads panels for this model's weights. */
static int wants_panels(const ts_model *m) {
    if (!m->quantized) return m->kernels->matmul_f32_panels != NULL;
    return m->kernels->matmul_q8_panels != NULL && m->config.group_size % 4 == 0;
}

/* Lets the file's pages under [p, p + bytes) go, when they are the
 * mapping's (whole pages inside the range): they are read again from the
 * page cache if ever needed. Packing releases each matrix once copied, so
 * the process never holds a large file twice. */
static void release_mapped(const ts_model *m, const void *p, size_t bytes) {
    uintptr_t lo = (uintptr_t)p, hi = lo + bytes, map = (uintptr_t)m->map;
    if (lo < map || hi > map + m->map_size) return;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    lo = (lo + page - 1) / page * page;
    hi = hi / page * page;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Packs every matrix into one owned block (huge pages where the system has
 * them: the matmuls stream it), keeps what the embedding lookup of a Q8_0
 * model needs, and lets the file's pages go: the matmuls no longer read
 * them, so the process holds the weights once. */
static ts_status pack_model(ts_model *m, const char *path, ts_error *err) {
    const ts_config *p = &m->config;
    size_t nemb = (size_t)p->vocab_size * (size_t)p->dim, gs = (size_t)p->group_size;
    weight_ref *refs = malloc((7 * (size_t)p->n_layers + 1) * sizeof *refs);
    if (!refs) return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    size_t count = list_weights(m, refs), total = 0;
    for (size_t i = 0; i < count; i++) total += panel_bytes(m, &refs[i]);
    const size_t huge = (size_t)2 << 20;
    void *block = NULL;
    if (posix_memalign(&block, total >= huge ? huge : 64, total ? total : 64) != 0) block = NULL;
    if (m->quantized && block) {
        /* what the lookup reads, before the arenas it lies in go */
        m->owned_embedding_scales = malloc(nemb / gs * sizeof(float));
        if (m->owned_embedding_scales) {
            memcpy(m->owned_embedding_scales, m->embedding_scales, nemb / gs * sizeof(float));
        }
        if (m->owned_q8) {
            m->owned_embedding_q8 = malloc(nemb);
            if (m->owned_embedding_q8) memcpy(m->owned_embedding_q8, m->embedding_q8, nemb);
        }
    }
    if (!block || (m->quantized && (!m->owned_embedding_scales ||
                                    (m->owned_q8 && !m->owned_embedding_q8)))) {
        free(block);
        free(refs);
        return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory packing the weights (%zu bytes)",
                        path, total);
    }
#if defined(MADV_HUGEPAGE)
    if (total >= huge) madvise(block, total, MADV_HUGEPAGE);
#endif
    m->owned_panels = block;
    m->owned_panels_size = total;
    unsigned char *at = block;
    for (size_t i = 0; i < count; i++) {
        ts_weight *w = refs[i].w;
        int d = (int)refs[i].d, n = (int)refs[i].n;
        if (!m->quantized) {
            ts__pack_f32((float *)(void *)at, w->f32, d, n);
            release_mapped(m, w->f32, refs[i].d * refs[i].n * sizeof(float));
            *w = (ts_weight){.f32_panels = (const float *)(const void *)at};
        } else {
            size_t values = ts__panel_count(d) * (size_t)(n / (int)gs) * gs * TS_PANEL;
            float *scales = (float *)(void *)(at + values);
            ts__pack_q8(at, scales, w->q, w->s, d, n, (int)gs);
            release_mapped(m, w->q, refs[i].d * refs[i].n);
            *w = (ts_weight){.q8_panels = at, .q8_panel_scales = scales};
        }
        at += panel_bytes(m, &refs[i]);
    }
    free(refs);
    if (m->quantized) {
        m->embedding_scales = m->owned_embedding_scales;
        if (m->owned_embedding_q8) m->embedding_q8 = m->owned_embedding_q8;
        free(m->owned_scales);
        m->owned_scales = NULL;
        free(m->owned_q8);
        m->owned_q8 = NULL;
    }
    /* The norms (and a Q8_0 file's embedding rows) are read from the
     * mapping again as needed; everything else now comes from the panels. */
    madvise(m->map, m->map_size, MADV_DONTNEED);
    return TS_OK;
}

/* ---------------------------------------------------------- shared loads
 * A model is read-only once loaded, so loading a file that is already
 * loaded with the same options (the same file: device, inode, size and
 * modification time) hands out the same model again, counted: every
 * Generator of one file shares one copy of the weights. */

static pthread_mutex_t loaded_lock = PTHREAD_MUTEX_INITIALIZER;
static ts_model *loaded; /* every model with refs > 0 */

static int same_key(const struct ts_model_key *a, const struct ts_model_key *b) {
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->quantize == b->quantize &&
           a->group_size == b->group_size && a->n_threads == b->n_threads &&
           a->kernels == b->kernels;
}

static struct ts_model_key key_of(const struct stat *st, const ts_load_options *opt,
                                  const ts_kernels *kernels) {
    struct ts_model_key k = {0};
    k.dev = (uint64_t)st->st_dev;
    k.ino = (uint64_t)st->st_ino;
    k.size = (uint64_t)st->st_size;
    k.mtime_ns = (uint64_t)st->st_mtim.tv_sec * 1000000000u + (uint64_t)st->st_mtim.tv_nsec;
    k.quantize = opt->quantize;
    k.group_size = opt->group_size;
    k.n_threads = opt->n_threads;
    k.kernels = kernels;
    return k;
}

/* The loaded model with this key, with one more reference, or NULL. */
static ts_model *share_loaded(const struct ts_model_key *key) {
    pthread_mutex_lock(&loaded_lock);
    ts_model *m = loaded;
    while (m && !same_key(&m->key, key)) m = m->next_loaded;
    if (m) m->refs++;
    pthread_mutex_unlock(&loaded_lock);
    return m;
}

/* ----------------------------------------------------------------- load */

ts_load_options ts_load_options_default(void) {
    ts_load_options o = {NULL, TS_QUANTIZE_NONE, 0, 0};
    return o;
}

ts_status ts_model_load(const char *path, ts_model **out, ts_error *err) {
    return ts_model_load_with(path, NULL, out, err);
}

/* Header fields, by byte offset. v0 (run.c's legacy export): seven int32,
 * no magic. v1/v2 (export.py): the magic, the version, the same seven
 * int32, the shared-classifier byte and (v2) the int32 group size, padded
 * to TS_V12_HEADER bytes. */
enum {
    V0_DIM = 0, /* then hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len */
    V12_MAGIC = 0,
    V12_VERSION = 4,
    V12_DIM = 8, /* then the same six as v0 */
    V12_SHARED = 36,
    V2_GROUP_SIZE = 37,
};

/* The seven dimensions starting at `at`. */
static void read_dims(ts_config *c, const unsigned char *at) {
    c->dim = rd_i32(at);
    c->hidden_dim = rd_i32(at + 4);
    c->n_layers = rd_i32(at + 8);
    c->n_heads = rd_i32(at + 12);
    c->n_kv_heads = rd_i32(at + 16);
    c->vocab_size = rd_i32(at + 20);
    c->seq_len = rd_i32(at + 24);
}

/* Step 1: the header. Fills m->config, *header (its size) and *what (a
 * hint for messages about v0 files, which have no magic to go by). */
static ts_status read_header(ts_model *m, const char *path, size_t *header, const char **what,
                             ts_error *err) {
    const unsigned char *b = m->map;
    size_t size = m->map_size;
    ts_config *c = &m->config;
    *what = "";
    if (size >= 8 && (uint32_t)rd_i32(b + V12_MAGIC) == TS_MAGIC) {
        int32_t version = rd_i32(b + V12_VERSION);
        if (version != 1 && version != 2) {
            return ts__fail(err, TS_ERR_FORMAT, "%s: unsupported version %d (expected 1 or 2)",
                            path, version);
        }
        *header = TS_V12_HEADER;
        if (size < *header) {
            return ts__fail(err, TS_ERR_FORMAT,
                            "%s: file is %zu bytes, smaller than the %zu-byte header", path, size,
                            *header);
        }
        c->version = version;
        read_dims(c, b + V12_DIM);
        if (b[V12_SHARED] > 1) {
            return ts__fail(err, TS_ERR_FORMAT, "%s: shared_classifier flag is %u, expected 0 or 1",
                            path, b[V12_SHARED]);
        }
        c->shared_classifier = b[V12_SHARED];
        c->group_size = version == 2 ? rd_i32(b + V2_GROUP_SIZE) : 0;
    } else {
        *header = TS_V0_HEADER;
        *what = "as a v0 (legacy, no 'ak42' magic) file: ";
        if (size < *header) {
            return ts__fail(err, TS_ERR_FORMAT,
                            "%s: %sfile is %zu bytes, smaller than the %zu-byte header", path, *what,
                            size, *header);
        }
        c->version = TS_FORMAT_V0;
        read_dims(c, b + V0_DIM);
        /* A negative vocab_size flags an unshared classifier. */
        int32_t vocab = c->vocab_size;
        c->shared_classifier = vocab > 0;
        c->vocab_size = vocab == INT32_MIN ? 0 : (vocab < 0 ? -vocab : vocab);
        c->group_size = 0;
    }
    ts_status st = check_config(c, path, *what, err);
    if (st != TS_OK) return st;
    m->head_size = c->dim / c->n_heads;
    m->kv_dim = (int)((int64_t)c->dim * c->n_kv_heads / c->n_heads);
    m->quantized = c->version == TS_FORMAT_V2;
    return TS_OK;
}

/* Step 2: the file is exactly as large as the header implies (so no
 * weight pointer can reach past the mapping). *n_scales: a v2 file's
 * number of group scales. */
static ts_status check_file_size(const ts_model *m, const char *path, const char *what,
                                 size_t header, uint64_t *n_scales, ts_error *err) {
    const ts_config *c = &m->config;
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim, kv = (uint64_t)m->kv_dim;
    uint64_t L = (uint64_t)c->n_layers, V = (uint64_t)c->vocab_size;
    uint64_t n_cls = c->shared_classifier ? 0 : 1;
    sizer sz = {header, 0};
    *n_scales = 0;
    if (c->version != TS_FORMAT_V2) {
        const uint64_t f = sizeof(float);
        sz_add(&sz, V, dim, f, 1 + n_cls);     /* embedding (+ wcls) */
        sz_add(&sz, L, dim, f, 2);             /* rms_att, rms_ffn */
        sz_add(&sz, L, dim, dim, f * 2);       /* wq, wo */
        sz_add(&sz, L, dim, kv, f * 2);        /* wk, wv */
        sz_add(&sz, L, dim, hid, f * 3);       /* w1, w2, w3 */
        sz_add(&sz, dim, f, 1, 1);             /* rms_final */
        if (c->version == TS_FORMAT_V0) {      /* two RoPE tables */
            sz_add(&sz, (uint64_t)c->seq_len, (uint64_t)m->head_size, f, 1);
        }
    } else {
        /* int8 values plus one fp32 scale per group; every numel is a
         * multiple of the group size because dim is. */
        uint64_t gs = (uint64_t)c->group_size;
        sizer nq = {0, 0}; /* quantized values */
        sz_add(&nq, V, dim, 1 + n_cls, 1);
        sz_add(&nq, L, dim, dim, 2);
        sz_add(&nq, L, dim, kv, 2);
        sz_add(&nq, L, dim, hid, 3);
        *n_scales = nq.total / gs;
        sz_add(&sz, L, dim, sizeof(float), 2);
        sz_add(&sz, dim, sizeof(float), 1, 1);
        sz_add(&sz, nq.total, 1, 1, 1);
        sz_add(&sz, *n_scales, sizeof(float), 1, 1);
        sz.overflow |= nq.overflow;
    }
    if (sz.overflow) {
        return ts__fail(err, TS_ERR_FORMAT, "%s: %sheader dimensions overflow 64-bit sizes", path,
                        what);
    }
    if (sz.total != (uint64_t)m->map_size) {
        return ts__fail(err, TS_ERR_FORMAT, "%s: %sfile is %zu bytes, header implies %llu%s", path,
                        what, m->map_size, (unsigned long long)sz.total,
                        sz.total > m->map_size ? " (truncated?)" : " (trailing data?)");
    }
    return TS_OK;
}

/* Step 3: seq_len does not change a v1/v2 file's size, so a corrupt value
 * could ask ts_session_new for any amount of memory: bound the per-session
 * state (see TS_SESSION_BYTES_MIN in tinystories.h). */
static ts_status check_session_memory(const ts_model *m, const char *path, const char *what,
                                      ts_error *err) {
    const ts_config *c = &m->config;
    uint64_t size = (uint64_t)m->map_size;
    sizer ses = {0, 0};
    uint64_t kv_seq = ts__kv_seq(c->seq_len); /* the caches' positions: whole key blocks */
    sz_add(&ses, 2 * (uint64_t)c->n_layers, kv_seq, (uint64_t)m->kv_dim, sizeof(float)); /* K, V */
    sz_add(&ses, (uint64_t)c->n_heads, kv_seq, sizeof(float), 1); /* scores */
    uint64_t limit = size > TS_SESSION_BYTES_MIN / TS_SESSION_FILE_FACTOR
                         ? size * TS_SESSION_FILE_FACTOR
                         : TS_SESSION_BYTES_MIN;
    if (ses.overflow || ses.total > limit) {
        return ts__fail(err, TS_ERR_FORMAT,
                        "%s: %sseq_len %d needs %llu%s bytes of KV cache per session, more than the "
                        "limit of %llu (the larger of 1 GiB and %d x the file size)",
                        path, what, c->seq_len, (unsigned long long)ses.total,
                        ses.overflow ? "+" : "", (unsigned long long)limit, TS_SESSION_FILE_FACTOR);
    }
    return TS_OK;
}

/* Step 4: every weight pointer, into the mapping (v2 scales copied). */
static ts_status lay_out(ts_model *m, size_t header, uint64_t n_scales) {
    m->layers = calloc((size_t)m->config.n_layers, sizeof *m->layers);
    if (!m->layers) return TS_ERR_NOMEM;
    cursor cur = {(const unsigned char *)m->map + header};
    if (m->config.version == TS_FORMAT_V0) {
        layout_v0(m, &cur);
    } else if (m->config.version == TS_FORMAT_V1) {
        layout_v1(m, &cur);
    } else {
        /* the sizes fit the mapping, so the count fits size_t */
        m->owned_scales = malloc((size_t)n_scales * sizeof(float));
        if (!m->owned_scales) return TS_ERR_NOMEM;
        layout_v2(m, &cur, m->owned_scales);
    }
    return TS_OK;
}

/* Step 5 (an fp32 file with quantize = Q8_0): the weights as export.py's v2
 * file would hold them. */
static ts_status quantize_on_load(ts_model *m, int group_size, const char *path, ts_error *err) {
    int gs = group_size ? group_size : ts_default_group_size(m->config.dim);
    if (m->config.dim % gs != 0) {
        return ts__fail(err, TS_ERR_ARG, "%s: group_size %d does not divide dim %d", path, gs,
                        m->config.dim);
    }
    return quantize_model(m, gs, path, err);
}

int ts_default_group_size(int dim) {
    /* export.py's rule: the largest power of two up to 64 that divides dim */
    int gs = 64;
    while (gs > 1 && dim % gs != 0) gs /= 2;
    return gs;
}

ts_status ts_model_load_with(const char *path, const ts_load_options *options, ts_model **out,
                             ts_error *err) {
    if (!out) return ts__fail(err, TS_ERR_ARG, "ts_model_load: out is NULL");
    *out = NULL;
    if (!path) return ts__fail(err, TS_ERR_ARG, "ts_model_load: path is NULL");
    ts_load_options opt = options ? *options : ts_load_options_default();
    if (opt.quantize != TS_QUANTIZE_NONE && opt.quantize != TS_QUANTIZE_Q8_0) {
        return ts__fail(err, TS_ERR_ARG, "unknown quantize option %d", opt.quantize);
    }
    if (opt.group_size < 0) {
        return ts__fail(err, TS_ERR_ARG, "group_size %d must be >= 0", opt.group_size);
    }
    const ts_kernels *kernels = NULL;
    ts_status st = ts__kernels_select(opt.kernels, &kernels, err);
    if (st != TS_OK) return st;

    void *map = NULL;
    size_t size = 0;
    struct stat file_stat = {0};
    st = map_file(path, &map, &size, &file_stat, err);
    if (st != TS_OK) return st;
    struct ts_model_key key = key_of(&file_stat, &opt, kernels);
    ts_model *shared = share_loaded(&key);
    if (shared) {
        munmap(map, size);
        *out = shared;
        return TS_OK;
    }
    ts_model *m = calloc(1, sizeof *m);
    if (!m) {
        munmap(map, size);
        return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    m->map = map;
    m->map_size = size;
    m->kernels = kernels;

    size_t header = 0;
    uint64_t n_scales = 0;
    const char *what = "";
    st = read_header(m, path, &header, &what, err);
    if (st == TS_OK) st = check_file_size(m, path, what, header, &n_scales, err);
    if (st == TS_OK) st = check_session_memory(m, path, what, err);
    if (st == TS_OK && lay_out(m, header, n_scales) != TS_OK) {
        st = ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    if (st == TS_OK && !m->quantized && opt.quantize == TS_QUANTIZE_Q8_0) {
        st = quantize_on_load(m, opt.group_size, path, err);
    }
    /* step 6: the weights as the kernels read them */
    if (st == TS_OK) {
        if (wants_panels(m)) {
            st = pack_model(m, path, err);
        } else if (m->quantized) {
            st = add_row_sums(m, path, err);
        }
    }
    if (st != TS_OK) {
        ts_model_free(m);
        return st;
    }
    m->n_threads_default = opt.n_threads > 0 ? opt.n_threads : ts__default_threads();
    m->key = key;
    m->refs = 1;
    m->spares = ts__spares_new(); /* NULL: nothing kept, freed at once */
    pthread_mutex_lock(&loaded_lock);
    m->next_loaded = loaded;
    loaded = m;
    pthread_mutex_unlock(&loaded_lock);
    *out = m;
    return TS_OK;
}

void ts_model_free(ts_model *m) {
    if (!m) return;
    if (m->refs > 0) { /* loaded (a failed load frees an unlisted model) */
        pthread_mutex_lock(&loaded_lock);
        int left = --m->refs;
        if (left == 0) {
            ts_model **at = &loaded;
            while (*at != m) at = &(*at)->next_loaded;
            *at = m->next_loaded;
        }
        pthread_mutex_unlock(&loaded_lock);
        if (left > 0) return;
    }
    if (m->map) munmap(m->map, m->map_size);
    ts__spares_free(m->spares);
    free(m->layers);
    free(m->owned_scales);
    free(m->owned_q8);
    free(m->owned_row_sums);
    free(m->owned_embedding_q8);
    free(m->owned_embedding_scales);
    free(m->owned_panels);
    free(m);
}

const ts_config *ts_model_config(const ts_model *m) { return m ? &m->config : NULL; }

const char *ts_model_kernels(const ts_model *m) { return m ? m->kernels->name : NULL; }
