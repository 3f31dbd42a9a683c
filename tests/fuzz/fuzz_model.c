/*
 * fuzz_model.c — the model loader (v0/v1/v2 headers and sizes), and the
 * forward pass and sampler on whatever loads.
 *
 * Input byte 0 picks the mode:
 *   even  the rest is the model file, as is (mutated seeds: headers, sizes,
 *         NaN/inf weights);
 *   odd   the rest is a compact header (format, shared flag, seven int16
 *         dims, int16 group size) and a weight pattern; the file is built
 *         with exactly the size the header implies by this harness's own
 *         arithmetic, so odd-but-consistent configurations get past the size
 *         check and run. The loader must then agree on the size.
 * Invariants: a failed load sets a message and no model; a loaded model's
 * config matches its header; evaluation accepts exactly the ids in the
 * vocabulary and the positions in the context; nothing crashes.
 */
#include "fuzz_common.h"

#include <math.h>

#define MAX_BUILT_FILE (64u * 1024u)    /* structured mode: file size cap (speed) */
#define MAX_SESSION (64ull << 20)       /* KV cache bytes we bother to allocate */

static int16_t rd_i16(const uint8_t *p) { return (int16_t)(p[0] | (p[1] << 8)); }

typedef struct header {
    int version, shared;
    int32_t dim, hid, layers, heads, kv_heads, vocab, seq, gs;
} header;

/* The file size `h` implies, or 0 when the config is invalid or too big. */
static uint64_t implied_size(const header *h) {
    if (h->dim <= 0 || h->hid <= 0 || h->layers <= 0 || h->heads <= 0 || h->kv_heads <= 0 ||
        h->vocab <= 0 || h->seq <= 0)
        return 0;
    if (h->dim % h->heads || h->heads % h->kv_heads || (h->dim / h->heads) % 2) return 0;
    uint64_t dim = (uint64_t)h->dim, hid = (uint64_t)h->hid, L = (uint64_t)h->layers;
    uint64_t V = (uint64_t)h->vocab, hs = dim / (uint64_t)h->heads;
    uint64_t kv = hs * (uint64_t)h->kv_heads, cls = h->shared ? 1 : 2;
    /* all values are < 2^15, so these products fit in 64 bits */
    uint64_t mats = L * (2 * dim * dim + 2 * dim * kv + 3 * dim * hid);
    if (h->version == 2) {
        if (h->gs <= 0 || h->dim % h->gs) return 0;
        uint64_t nq = V * dim * cls + mats;
        return 256 + 4 * (2 * L * dim + dim) + nq + 4 * (nq / (uint64_t)h->gs);
    }
    uint64_t floats = V * dim * cls + 2 * L * dim + mats + dim;
    if (h->version == 0) return 28 + 4 * (floats + (uint64_t)h->seq * hs);
    return 256 + 4 * floats;
}

static fuzz_buf build_file(const uint8_t *data, size_t size, uint64_t *expected) {
    fuzz_buf b = {0};
    *expected = 0;
    if (size < 19) {
        fuzz_put(&b, data, size);
        return b;
    }
    header h;
    h.version = data[0] % 3;
    h.shared = data[1] & 1;
    h.dim = rd_i16(data + 2);
    h.hid = rd_i16(data + 4);
    h.layers = rd_i16(data + 6);
    h.heads = rd_i16(data + 8);
    h.kv_heads = rd_i16(data + 10);
    h.vocab = rd_i16(data + 12);
    h.seq = rd_i16(data + 14);
    h.gs = rd_i16(data + 16);
    const uint8_t *pattern = data + 18;
    size_t n_pattern = size - 18;
    if (h.version == 0) {
        int32_t v0[7] = {h.dim, h.hid, h.layers, h.heads, h.kv_heads,
                         h.shared ? h.vocab : -h.vocab, h.seq};
        fuzz_put(&b, v0, sizeof v0);
    } else {
        unsigned char hdr[256] = {0};
        uint32_t magic = 0x616b3432u;
        int32_t fields[9] = {(int32_t)magic, h.version, h.dim, h.hid, h.layers,
                             h.heads, h.kv_heads, h.vocab, h.seq};
        memcpy(hdr, fields, sizeof fields);
        hdr[36] = (unsigned char)h.shared;
        if (h.version == 2) memcpy(hdr + 37, &h.gs, 4);
        fuzz_put(&b, hdr, sizeof hdr);
    }
    uint64_t want = implied_size(&h);
    if (want == 0 || want > MAX_BUILT_FILE) {
        fuzz_put(&b, pattern, n_pattern); /* inconsistent: must be rejected */
        return b;
    }
    *expected = want;
    while (b.n < want) {
        if (n_pattern == 0) {
            unsigned char zero[256] = {0};
            size_t k = want - b.n < sizeof zero ? want - b.n : sizeof zero;
            fuzz_put(&b, zero, k);
        } else {
            size_t k = want - b.n < n_pattern ? want - b.n : n_pattern;
            fuzz_put(&b, pattern, k);
        }
    }
    return b;
}

static void exercise(ts_model *m, const uint8_t *data, size_t size, size_t file_size) {
    const ts_config *c = ts_model_config(m);
    FUZZ_ASSERT(c->dim > 0 && c->hidden_dim > 0 && c->n_layers > 0 && c->n_heads > 0);
    FUZZ_ASSERT(c->n_kv_heads > 0 && c->vocab_size > 0 && c->seq_len > 0);
    FUZZ_ASSERT(c->dim % c->n_heads == 0 && c->n_heads % c->n_kv_heads == 0);
    uint64_t kv_dim = (uint64_t)c->dim / c->n_heads * c->n_kv_heads;
    uint64_t kv_seq = ((uint64_t)c->seq_len + 15) / 16 * 16; /* whole key blocks of 16 */
    uint64_t kv_bytes = 8 * (uint64_t)c->n_layers * kv_seq * kv_dim;
    uint64_t limit = (uint64_t)TS_SESSION_FILE_FACTOR * file_size;
    if (limit < TS_SESSION_BYTES_MIN) limit = TS_SESSION_BYTES_MIN;
    FUZZ_ASSERT(kv_bytes + 4 * (uint64_t)c->n_heads * kv_seq <= limit); /* the policy */
    if (kv_bytes > MAX_SESSION) return;

    ts_session *s = NULL;
    ts_error err;
    if (ts_session_new(m, 1, &s, &err) != TS_OK) {
        FUZZ_ASSERT(err.code == TS_ERR_NOMEM);
        return;
    }
    int32_t tokens[4];
    size_t n = c->seq_len < 4 ? (size_t)c->seq_len : 4;
    for (size_t i = 0; i < n; i++) {
        tokens[i] = (int32_t)((i < size ? data[i] : i) % (unsigned)c->vocab_size);
    }
    float *logits = malloc(n * (size_t)c->vocab_size * sizeof *logits);
    FUZZ_ASSERT(logits);
    FUZZ_ASSERT(ts_session_eval(s, tokens, n, 0, logits, &err) == TS_OK);

    /* the sampler on whatever came out (NaN and inf included) */
    ts_sampling sp = {.temperature = size > 0 ? data[0] / 64.0f : 1.0f, .top_p = size > 1 ? data[1] / 255.0f : 0.9f, .top_k = size > 2 ? data[2] % 5 : 0, .seed = 42};
    ts_sampler *smp = NULL;
    FUZZ_ASSERT(ts_sampler_new(c->vocab_size, &sp, &smp, &err) == TS_OK);
    for (size_t i = 0; i < n; i++) {
        int32_t t = ts_sampler_sample(smp, logits + i * (size_t)c->vocab_size);
        FUZZ_ASSERT(t >= 0 && t < c->vocab_size);
    }
    ts_sampler_free(smp);
    free(logits);

    /* the eval contract: bad ids and positions are refused */
    int32_t bad = c->vocab_size;
    FUZZ_ASSERT(ts_session_eval(s, &bad, 1, 0, NULL, &err) == TS_ERR_ARG);
    bad = -1;
    FUZZ_ASSERT(ts_session_eval(s, &bad, 1, 0, NULL, &err) == TS_ERR_ARG);
    FUZZ_ASSERT(ts_session_eval(s, tokens, 1, c->seq_len, NULL, &err) == TS_ERR_ARG);
    FUZZ_ASSERT(ts_session_eval(s, tokens, 1, -1, NULL, &err) == TS_ERR_ARG);
    ts_session_free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int structured = data[0] & 1;
    data++;
    size--;
    fuzz_buf file = {0};
    uint64_t expected = 0;
    if (structured) {
        file = build_file(data, size, &expected);
    } else {
        fuzz_put(&file, data, size);
    }

    fuzz_file f;
    fuzz_file_open(&f, file.p, file.n);
    ts_model *m = (ts_model *)1;
    ts_error err;
    memset(&err, 0, sizeof err);
    ts_status st = ts_model_load(f.path, &m, &err);
    if (st == TS_OK) {
        FUZZ_ASSERT(m != NULL);
        exercise(m, data, size, file.n);
        ts_model_free(m);
    } else {
        FUZZ_ASSERT(m == NULL);
        FUZZ_ASSERT(err.code == st && err.message[0] != '\0');
        FUZZ_ASSERT(memchr(err.message, '\0', sizeof err.message) != NULL);
        FUZZ_ASSERT(strstr(err.message, f.path) != NULL); /* names the file */
        /* the harness built the exact size: the loader must agree */
        if (expected) FUZZ_ASSERT(strstr(err.message, "header implies") == NULL);
    }
    fuzz_file_close(&f);
    free(file.p);
    return 0;
}
