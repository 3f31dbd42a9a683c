/*
 * model.c — loading and validating llama2.c checkpoints (v0, v1, v2).
 *
 * The file is memory-mapped read-only and fp32 weights are used in place.
 * Every size is computed in 64 bits with overflow checks, and the file size
 * must equal exactly what the header implies, so no weight pointer can ever
 * reach past the mapping.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
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
static ts_status map_file(const char *path, void **map, size_t *size, ts_error *err) {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
     * rejected as not a regular file); regular files ignore the flag. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return ts__fail(err, e == ENOENT ? TS_ERR_NOT_FOUND : TS_ERR_IO, "%s: cannot open: %s (errno %d)",
                        path, ts__errno_text(e), e);
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return ts__fail(err, TS_ERR_IO, "%s: cannot stat: %s (errno %d)", path, ts__errno_text(e), e);
    }
    if (S_ISDIR(st.st_mode)) {
        close(fd);
        return ts__fail(err, TS_ERR_IO, "%s: is a directory, not a model file", path);
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
    for (size_t l = 0; l < L; l++) {
        ts_layer *ly = &m->layers[l];
        ly->rms_att = rms_att + l * dim;
        ly->rms_ffn = rms_ffn + l * dim;
        ly->wq = f32w(wq + l * dim * dim);
        ly->wk = f32w(wk + l * dim * kv);
        ly->wv = f32w(wv + l * dim * kv);
        ly->wo = f32w(wo + l * dim * dim);
        ly->w1 = f32w(w1 + l * hid * dim);
        ly->w2 = f32w(w2 + l * dim * hid);
        ly->w3 = f32w(w3 + l * hid * dim);
    }
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
    for (size_t l = 0; l < L; l++) {
        ts_layer *ly = &m->layers[l];
        ly->rms_att = rms_att + l * dim;
        ly->rms_ffn = rms_ffn + l * dim;
        ly->wq = f32w(wq + l * dim * dim);
        ly->wk = f32w(wk + l * dim * kv);
        ly->wv = f32w(wv + l * dim * kv);
        ly->wo = f32w(wo + l * dim * dim);
        ly->w1 = f32w(w1 + l * hid * dim);
        ly->w2 = f32w(w2 + l * dim * hid);
        ly->w3 = f32w(w3 + l * hid * dim);
    }
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
    /* runq looks tokens up in a dequantized copy but classifies with the
     * quantized table when it is shared. */
    m->wcls = p->shared_classifier ? emb : take_q8(c, nemb, gs, &scales);
    for (size_t i = 0; i < nemb; i++) {
        m->owned_embedding[i] = emb.q[i] * emb.s[i / (size_t)gs];
    }
    m->token_embedding = m->owned_embedding;
}

/* ----------------------------------------------------------------- load */

ts_status ts_model_load(const char *path, ts_model **out, ts_error *err) {
    if (!out) return ts__fail(err, TS_ERR_ARG, "ts_model_load: out is NULL");
    *out = NULL;
    if (!path) return ts__fail(err, TS_ERR_ARG, "ts_model_load: path is NULL");

    void *map = NULL;
    size_t size = 0;
    ts_status st = map_file(path, &map, &size, err);
    if (st != TS_OK) return st;
    const unsigned char *b = map;

    ts_model *m = calloc(1, sizeof *m);
    if (!m) {
        munmap(map, size);
        return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    m->map = map;
    m->map_size = size;
    ts_config *c = &m->config;

    /* Which format: v1/v2 start with the magic; v0 has no magic at all. */
    size_t header;
    const char *what = "";
    if (size >= 8 && (uint32_t)rd_i32(b) == TS_MAGIC) {
        int32_t version = rd_i32(b + 4);
        if (version != 1 && version != 2) {
            st = ts__fail(err, TS_ERR_FORMAT, "%s: unsupported version %d (expected 1 or 2)", path,
                          version);
            goto fail;
        }
        header = TS_V12_HEADER;
        if (size < header) {
            st = ts__fail(err, TS_ERR_FORMAT, "%s: file is %zu bytes, smaller than the %zu-byte header",
                          path, size, header);
            goto fail;
        }
        c->version = version;
        c->dim = rd_i32(b + 8);
        c->hidden_dim = rd_i32(b + 12);
        c->n_layers = rd_i32(b + 16);
        c->n_heads = rd_i32(b + 20);
        c->n_kv_heads = rd_i32(b + 24);
        c->vocab_size = rd_i32(b + 28);
        c->seq_len = rd_i32(b + 32);
        if (b[36] > 1) {
            st = ts__fail(err, TS_ERR_FORMAT, "%s: shared_classifier flag is %u, expected 0 or 1", path,
                          b[36]);
            goto fail;
        }
        c->shared_classifier = b[36];
        c->group_size = version == 2 ? rd_i32(b + 37) : 0;
    } else {
        header = TS_V0_HEADER;
        what = "as a v0 (legacy, no 'ak42' magic) file: ";
        if (size < header) {
            st = ts__fail(err, TS_ERR_FORMAT, "%s: %sfile is %zu bytes, smaller than the %zu-byte header",
                          path, what, size, header);
            goto fail;
        }
        c->version = TS_FORMAT_V0;
        c->dim = rd_i32(b);
        c->hidden_dim = rd_i32(b + 4);
        c->n_layers = rd_i32(b + 8);
        c->n_heads = rd_i32(b + 12);
        c->n_kv_heads = rd_i32(b + 16);
        int32_t vocab = rd_i32(b + 20);
        c->seq_len = rd_i32(b + 24);
        /* A negative vocab_size flags an unshared classifier. */
        c->shared_classifier = vocab > 0;
        c->vocab_size = vocab == INT32_MIN ? 0 : (vocab < 0 ? -vocab : vocab);
        c->group_size = 0;
    }
    st = check_config(c, path, what, err);
    if (st != TS_OK) goto fail;
    m->head_size = c->dim / c->n_heads;
    m->kv_dim = (int)((int64_t)c->dim * c->n_kv_heads / c->n_heads);
    m->quantized = c->version == TS_FORMAT_V2;

    /* The exact size the header implies. */
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim, kv = (uint64_t)m->kv_dim;
    uint64_t L = (uint64_t)c->n_layers, V = (uint64_t)c->vocab_size;
    uint64_t n_cls = c->shared_classifier ? 0 : 1;
    sizer sz = {header, 0};
    uint64_t n_scales = 0;
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
        n_scales = nq.total / gs;
        sz_add(&sz, L, dim, sizeof(float), 2);
        sz_add(&sz, dim, sizeof(float), 1, 1);
        sz_add(&sz, nq.total, 1, 1, 1);
        sz_add(&sz, n_scales, sizeof(float), 1, 1);
        sz.overflow |= nq.overflow;
    }
    if (sz.overflow) {
        st = ts__fail(err, TS_ERR_FORMAT, "%s: %sheader dimensions overflow 64-bit sizes", path, what);
        goto fail;
    }
    if (sz.total != (uint64_t)size) {
        st = ts__fail(err, TS_ERR_FORMAT, "%s: %sfile is %zu bytes, header implies %llu%s", path, what,
                      size, (unsigned long long)sz.total,
                      sz.total > size ? " (truncated?)" : " (trailing data?)");
        goto fail;
    }

    /* seq_len does not change a v1/v2 file's size, so a corrupt value could
     * ask ts_session_new for any amount of memory: bound the per-session
     * state (see TS_SESSION_BYTES_MIN in tinystories.h). */
    sizer ses = {0, 0};
    sz_add(&ses, 2 * L, (uint64_t)c->seq_len, kv, sizeof(float)); /* key + value caches */
    sz_add(&ses, (uint64_t)c->n_heads, (uint64_t)c->seq_len, sizeof(float), 1); /* scores */
    uint64_t limit = (uint64_t)size > TS_SESSION_BYTES_MIN / TS_SESSION_FILE_FACTOR
                         ? (uint64_t)size * TS_SESSION_FILE_FACTOR
                         : TS_SESSION_BYTES_MIN;
    if (ses.overflow || ses.total > limit) {
        st = ts__fail(err, TS_ERR_FORMAT,
                      "%s: %sseq_len %d needs %llu%s bytes of KV cache per session, more than the "
                      "limit of %llu (the larger of 1 GiB and %d x the file size)",
                      path, what, c->seq_len, (unsigned long long)ses.total,
                      ses.overflow ? "+" : "", (unsigned long long)limit, TS_SESSION_FILE_FACTOR);
        goto fail;
    }

    /* The sizes fit the mapping, so every count below fits size_t. */
    m->layers = calloc((size_t)c->n_layers, sizeof *m->layers);
    if (!m->layers) goto nomem;
    cursor cur = {b + header};
    if (c->version == TS_FORMAT_V0) {
        layout_v0(m, &cur);
    } else if (c->version == TS_FORMAT_V1) {
        layout_v1(m, &cur);
    } else {
        m->owned_scales = malloc((size_t)n_scales * sizeof(float));
        m->owned_embedding = malloc((size_t)(V * dim) * sizeof(float));
        if (!m->owned_scales || !m->owned_embedding) goto nomem;
        layout_v2(m, &cur, m->owned_scales);
    }
    *out = m;
    return TS_OK;

nomem:
    st = ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
fail:
    ts_model_free(m);
    return st;
}

void ts_model_free(ts_model *m) {
    if (!m) return;
    if (m->map) munmap(m->map, m->map_size);
    free(m->layers);
    free(m->owned_scales);
    free(m->owned_embedding);
    free(m);
}

const ts_config *ts_model_config(const ts_model *m) { return m ? &m->config : NULL; }
