/*
 * test_core.c — exercises the C API without Python.
 *
 *   test_core [MODEL_DIR]
 *
 * Synthetic models and tokenizers are written into a temporary directory and
 * always tested (format equivalence v0 == v1, every validation error, merges
 * against a naive reference, decode rules, sampler, cancel). With MODEL_DIR
 * (or $TS_TEST_MODEL_DIR) holding model5000.bin, model5000_q80.bin and
 * tok105.bin, the real models are checked against llama2.c's greedy output.
 * Meant to run clean under ASan/UBSan and valgrind.
 */
#include "tinystories.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

/* ------------------------------------------------------- file writing */

/* A growable byte buffer to assemble files in memory. */
typedef struct buf {
    unsigned char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, data, n);
    b->n += n;
}

static void put_i32(buf *b, int32_t v) { put(b, &v, 4); }

/* --------------------------------------------------- synthetic models */

typedef struct syn {
    int dim, hidden, layers, heads, kv_heads, vocab, seq_len, shared, gs;
} syn;

enum { EMB, RMS_ATT, WQ, WK, WV, WO, RMS_FFN, W1, W2, W3, RMS_FINAL, WCLS };

/* Deterministic values for tensor `kind` of `layer`, the same whatever the
 * file layout, so v0 and v1 files of one model hold identical weights. */
static float *gen(int kind, int layer, size_t n) {
    float *w = malloc(n * sizeof *w);
    uint64_t s = 0x9E3779B97F4A7C15ULL * (uint64_t)(kind * 131 + layer + 1);
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        float u = (float)((s >> 40) & 0xFFFFFF) / 16777216.0f - 0.5f;
        w[i] = (kind == RMS_ATT || kind == RMS_FFN || kind == RMS_FINAL) ? 1.0f + 0.2f * u : u;
    }
    return w;
}

static size_t numel(const syn *c, int kind) {
    size_t dim = (size_t)c->dim, kv = (size_t)c->dim * c->kv_heads / c->heads;
    switch (kind) {
    case EMB:
    case WCLS: return (size_t)c->vocab * dim;
    case RMS_ATT:
    case RMS_FFN:
    case RMS_FINAL: return dim;
    case WQ:
    case WO: return dim * dim;
    case WK:
    case WV: return dim * kv;
    default: return dim * (size_t)c->hidden;
    }
}

static void put_f32(buf *b, const syn *c, int kind, int layer) {
    size_t n = numel(c, kind);
    float *w = gen(kind, layer, n);
    put(b, w, n * sizeof(float));
    free(w);
}

static void put_all_layers(buf *b, const syn *c, int kind) {
    for (int l = 0; l < c->layers; l++) put_f32(b, c, kind, l);
}

/* Q8_0 like export.py: groups of gs over the flattened tensor. */
static void put_q8(buf *b, const syn *c, int kind, int layer) {
    size_t n = numel(c, kind), gs = (size_t)c->gs;
    float *w = gen(kind, layer, n);
    int8_t *q = malloc(n);
    float *s = malloc(n / gs * sizeof(float));
    for (size_t g = 0; g < n / gs; g++) {
        float mx = 0;
        for (size_t i = 0; i < gs; i++) mx = fmaxf(mx, fabsf(w[g * gs + i]));
        s[g] = mx / 127.0f;
        for (size_t i = 0; i < gs; i++) q[g * gs + i] = (int8_t)roundf(w[g * gs + i] / s[g]);
    }
    put(b, q, n);
    put(b, s, n / gs * sizeof(float));
    free(w);
    free(q);
    free(s);
}

static void put_header_v12(buf *b, const syn *c, int version) {
    unsigned char h[256] = {0};
    int32_t v[9] = {0x616b3432, version, c->dim, c->hidden, c->layers, c->heads, c->kv_heads,
                    c->vocab, c->seq_len};
    memcpy(h, v, sizeof v);
    h[36] = (unsigned char)c->shared;
    if (version == 2) memcpy(h + 37, &c->gs, 4);
    put(b, h, sizeof h);
}

static buf make_model(const syn *c, int version) {
    buf b = {0};
    if (version == 0) {
        int32_t hdr[7] = {c->dim, c->hidden, c->layers, c->heads, c->kv_heads,
                          c->shared ? c->vocab : -c->vocab, c->seq_len};
        put(&b, hdr, sizeof hdr);
        put_f32(&b, c, EMB, 0);
        const int order[] = {RMS_ATT, WQ, WK, WV, WO, RMS_FFN, W1, W2, W3};
        for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) put_all_layers(&b, c, order[k]);
        put_f32(&b, c, RMS_FINAL, 0);
        size_t rope = (size_t)c->seq_len * (c->dim / c->heads); /* two halves */
        float *z = calloc(rope, sizeof(float));
        put(&b, z, rope * sizeof(float));
        free(z);
        if (!c->shared) put_f32(&b, c, WCLS, 0);
    } else if (version == 1) {
        put_header_v12(&b, c, 1);
        put_all_layers(&b, c, RMS_ATT);
        put_all_layers(&b, c, RMS_FFN);
        put_f32(&b, c, RMS_FINAL, 0);
        put_f32(&b, c, EMB, 0);
        const int order[] = {WQ, WK, WV, WO, W1, W2, W3};
        for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) put_all_layers(&b, c, order[k]);
        if (!c->shared) put_f32(&b, c, WCLS, 0);
    } else {
        put_header_v12(&b, c, 2);
        put_all_layers(&b, c, RMS_ATT);
        put_all_layers(&b, c, RMS_FFN);
        put_f32(&b, c, RMS_FINAL, 0);
        put_q8(&b, c, EMB, 0);
        const int order[] = {WQ, WK, WV, WO, W1, W2, W3};
        for (size_t k = 0; k < sizeof order / sizeof order[0]; k++) {
            for (int l = 0; l < c->layers; l++) put_q8(&b, c, order[k], l);
        }
        if (!c->shared) put_q8(&b, c, WCLS, 0);
    }
    return b;
}

static ts_status load_bytes(const char *name, const void *data, size_t n, ts_model **m, ts_error *err) {
    const char *path = tmp_path(name);
    write_bytes(path, data, n);
    return ts_model_load(path, m, err);
}

/* Loads, then runs tokens and returns all logits (caller frees). */
static float *run_logits(const char *path, const int32_t *toks, size_t n) {
    ts_error err = {0};
    ts_model *m = NULL;
    ts_session *s = NULL;
    if (ts_model_load(path, &m, &err) != TS_OK) {
        fprintf(stderr, "load %s: %s\n", path, err.message);
        failures++;
        return NULL;
    }
    int V = ts_model_config(m)->vocab_size;
    float *out = malloc(n * (size_t)V * sizeof(float));
    CHECK(ts_session_new(m, 1, &s, &err) == TS_OK);
    CHECK(ts_session_eval(s, toks, n, 0, out, &err) == TS_OK);
    ts_session_free(s);
    ts_model_free(m);
    return out;
}

static int contains(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

/* A forked child finds the parent's spare batch (spares.c), whose threads
 * are not in it: it must start its own, not wait for them. ThreadSanitizer
 * and qemu-user (TS_TEST_NO_FORK) cannot start threads in a forked child. */
static void check_forked_child(ts_model *m, const int32_t *toks, const float *want, int vocab) {
#if defined(__SANITIZE_THREAD__)
    (void)m, (void)toks, (void)want, (void)vocab;
#else
    if (getenv("TS_TEST_NO_FORK")) return;
    ts_error err = {0};
    ts_session *s = NULL;
    CHECK(ts_session_new(m, 2, &s, &err) == TS_OK); /* its batch becomes a spare */
    CHECK(ts_session_eval(s, toks, 1, 0, NULL, &err) == TS_OK);
    ts_session_free(s);
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
        alarm(30); /* a hang fails the check below */
        ts_session *cs = NULL;
        int ok = ts_session_new(m, 2, &cs, &err) == TS_OK &&
                 ts_session_eval(cs, toks, 3, 0, NULL, &err) == TS_OK &&
                 memcmp(ts_session_logits(cs), want, (size_t)vocab * sizeof(float)) == 0;
        ts_session_free(cs);
        _exit(ok ? 0 : 1);
    }
    int status = 0;
    CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) &&
          WEXITSTATUS(status) == 0);
#endif
}

static void test_formats(void) {
    const syn cfgs[] = {
        {16, 24, 2, 4, 2, 300, 16, 1, 8},
        {16, 40, 3, 2, 1, 37, 8, 0, 16}, /* unshared; gs 16 does not divide hidden 40 */
    };
    const int32_t toks[] = {1, 5, 7, 2, 30, 0, 36, 11};
    size_t nt = sizeof toks / sizeof toks[0];
    for (size_t ci = 0; ci < 2; ci++) {
        const syn *c = &cfgs[ci];
        buf b0 = make_model(c, 0), b1 = make_model(c, 1), b2 = make_model(c, 2);
        write_bytes(tmp_path("v0.bin"), b0.p, b0.n);
        write_bytes(tmp_path("v1.bin"), b1.p, b1.n);
        write_bytes(tmp_path("v2.bin"), b2.p, b2.n);

        /* v0 and v1 hold the same weights: the logits must be identical */
        float *l0 = run_logits(tmp_path("v0.bin"), toks, nt);
        float *l1 = run_logits(tmp_path("v1.bin"), toks, nt);
        float *l2 = run_logits(tmp_path("v2.bin"), toks, nt);
        CHECK(l0 && l1 && l2);
        if (l0 && l1) CHECK(memcmp(l0, l1, nt * (size_t)c->vocab * sizeof(float)) == 0);
        if (l0 && l2) {
            /* Q8_0 is close to fp32, not equal */
            double maxdiff = 0;
            int finite = 1;
            for (size_t i = 0; i < nt * (size_t)c->vocab; i++) {
                finite &= isfinite(l2[i]);
                /* not fmax: gcc 12 for aarch64 crashes vectorizing that reduction at -O3 */
                double diff = fabs((double)l0[i] - l2[i]);
                if (diff > maxdiff) maxdiff = diff;
            }
            CHECK(finite);
            CHECK(maxdiff < 1.0 || ci == 1); /* ci 1 drops the w2 tail, like runq */
        }

        /* config */
        ts_error err = {0};
        ts_model *m = NULL;
        CHECK(ts_model_load(tmp_path("v2.bin"), &m, &err) == TS_OK);
        if (m) {
            const ts_config *k = ts_model_config(m);
            CHECK(k->dim == c->dim && k->hidden_dim == c->hidden && k->n_layers == c->layers);
            CHECK(k->n_heads == c->heads && k->n_kv_heads == c->kv_heads);
            CHECK(k->vocab_size == c->vocab && k->seq_len == c->seq_len);
            CHECK(k->shared_classifier == c->shared && k->version == 2 && k->group_size == c->gs);

            /* per-row logits of a batch == one token at a time */
            ts_session *s = NULL;
            CHECK(ts_session_new(m, 0, &s, &err) == TS_OK);
            /* a position past the evaluated ones would attend to unwritten ones */
            CHECK(ts_session_eval(s, toks, 1, 1, NULL, &err) == TS_ERR_ARG && contains(err.message, "gap"));
            for (size_t i = 0; i < nt; i++) {
                CHECK(ts_session_eval(s, &toks[i], 1, (int)i, NULL, &err) == TS_OK);
                CHECK(memcmp(ts_session_logits(s), l2 + i * c->vocab, c->vocab * sizeof(float)) == 0);
            }
            /* argument errors */
            int32_t bad = c->vocab;
            CHECK(ts_session_eval(s, &bad, 1, 0, NULL, &err) == TS_ERR_ARG && contains(err.message, "vocabulary"));
            bad = -1;
            CHECK(ts_session_eval(s, &bad, 1, 0, NULL, &err) == TS_ERR_ARG);
            CHECK(ts_session_eval(s, toks, 1, -1, NULL, &err) == TS_ERR_ARG);
            CHECK(ts_session_eval(s, toks, 1, c->seq_len, NULL, &err) == TS_ERR_ARG);
            CHECK(ts_session_eval(s, toks, 2, c->seq_len - 1, NULL, &err) == TS_ERR_ARG);
            for (int pos = (int)nt; pos < c->seq_len - 1; pos++) {
                CHECK(ts_session_eval(s, toks, 1, pos, NULL, &err) == TS_OK);
            }
            CHECK(ts_session_eval(s, toks, 1, c->seq_len - 1, NULL, &err) == TS_OK);
            /* going back is fine: the positions after it are overwritten */
            CHECK(ts_session_eval(s, toks, 1, 0, NULL, &err) == TS_OK);
            CHECK(memcmp(ts_session_logits(s), l2, c->vocab * sizeof(float)) == 0);
            ts_session_free(s);
            /* the next session may get that cache back, full of the last one's
             * positions: its logits are still its own */
            CHECK(ts_session_new(m, 0, &s, &err) == TS_OK);
            for (size_t i = 0; i < 3; i++) {
                CHECK(ts_session_eval(s, &toks[i], 1, (int)i, NULL, &err) == TS_OK);
                CHECK(memcmp(ts_session_logits(s), l2 + i * c->vocab, c->vocab * sizeof(float)) == 0);
            }
            ts_session_free(s);
            check_forked_child(m, toks, l2 + 2 * c->vocab, c->vocab);
            ts_model_free(m);
        }
        free(l0);
        free(l1);
        free(l2);

        /* truncated and padded files, every version */
        buf *bs[3] = {&b0, &b1, &b2};
        for (int v = 0; v < 3; v++) {
            buf *b = bs[v];
            ts_model *bad = NULL;
            char expect[64];
            snprintf(expect, sizeof expect, "header implies %zu", b->n);
            CHECK(load_bytes("trunc.bin", b->p, b->n - 1, &bad, &err) == TS_ERR_FORMAT);
            CHECK(bad == NULL && contains(err.message, expect) && contains(err.message, "trunc.bin"));
            put_i32(b, 0);
            CHECK(load_bytes("pad.bin", b->p, b->n, &bad, &err) == TS_ERR_FORMAT);
            CHECK(contains(err.message, expect) && contains(err.message, "pad.bin"));
            b->n -= 4;
            /* truncation everywhere must fail cleanly, never read past the end */
            for (size_t cut = 0; cut < b->n; cut += 1 + cut / 4) {
                CHECK(load_bytes("cut.bin", b->p, cut, &bad, &err) != TS_OK && bad == NULL);
            }
        }
        free(b0.p);
        free(b1.p);
        free(b2.p);
    }
}

static void expect_format_error(buf *b, const char *needle) {
    ts_model *m = NULL;
    ts_error err = {0};
    ts_status st = load_bytes("bad.bin", b->p, b->n, &m, &err);
    CHECK(st == TS_ERR_FORMAT && m == NULL);
    if (!contains(err.message, needle)) {
        fprintf(stderr, "expected '%s' in: %s\n", needle, err.message);
        failures++;
    }
    ts_model_free(m);
}

static void set_i32(buf *b, size_t off, int32_t v) { memcpy(b->p + off, &v, 4); }

static void test_bad_headers(void) {
    const syn c = {16, 24, 2, 4, 2, 300, 16, 1, 8};
    buf b2 = make_model(&c, 2), b0 = make_model(&c, 0);
    buf t = {0};
    put(&t, b2.p, b2.n);

    set_i32(&t, 0, 0x12345678); /* bad magic: read as v0, which doesn't fit */
    expect_format_error(&t, "v0");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 4, 3);
    expect_format_error(&t, "unsupported version 3");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 8, 0);
    expect_format_error(&t, "dim is 0");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 20, 3); /* n_heads 3 does not divide dim 16 */
    expect_format_error(&t, "not a multiple of n_heads");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 24, 3); /* n_kv_heads 3 */
    expect_format_error(&t, "n_kv_heads");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 24, 8); /* more kv heads than heads */
    expect_format_error(&t, "n_kv_heads");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 20, 16); /* head size 1: odd */
    set_i32(&t, 24, 16);
    expect_format_error(&t, "odd");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 37, 0);
    expect_format_error(&t, "group_size is 0");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 37, 5);
    expect_format_error(&t, "does not divide dim");
    memcpy(t.p, b2.p, 256);
    t.p[36] = 7;
    expect_format_error(&t, "shared_classifier");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 37, 4);
    set_i32(&t, 8, 0x7ffffffc); /* huge dims: sizes overflow, never wrap */
    set_i32(&t, 12, 0x7fffffff);
    set_i32(&t, 16, 0x7fffffff);
    set_i32(&t, 20, 2);
    set_i32(&t, 24, 1);
    set_i32(&t, 28, 0x7fffffff);
    set_i32(&t, 32, 0x7fffffff);
    expect_format_error(&t, "overflow");
    memcpy(t.p, b2.p, 256);
    set_i32(&t, 32, 17); /* seq_len does not change a v2 size... */
    {
        ts_model *m = NULL;
        ts_error err;
        CHECK(load_bytes("seq.bin", t.p, t.n, &m, &err) == TS_OK);
        ts_model_free(m);
    }
    set_i32(&b0, 24, 17); /* ...but it does for v0 (the RoPE tables) */
    expect_format_error(&b0, "header implies");
    set_i32(&b0, 24, 16);
    set_i32(&b0, 20, INT32_MIN); /* abs() would overflow */
    expect_format_error(&b0, "vocab_size");

    /* not found / directory / empty / tiny */
    ts_model *m = NULL;
    ts_error err = {0};
    CHECK(ts_model_load(tmp_path("does-not-exist.bin"), &m, &err) == TS_ERR_NOT_FOUND);
    CHECK(contains(err.message, "does-not-exist.bin") && err.sys_errno == ENOENT);
    CHECK(ts_model_load(tmpdir, &m, &err) == TS_ERR_IO && contains(err.message, "directory"));
    CHECK(err.sys_errno == EISDIR);
    CHECK(load_bytes("empty.bin", "", 0, &m, &err) == TS_ERR_FORMAT && contains(err.message, "empty"));
    CHECK(err.sys_errno == 0); /* not an I/O failure */
    CHECK(load_bytes("tiny.bin", "ak42", 3, &m, &err) == TS_ERR_FORMAT);
    CHECK(ts_model_load(NULL, &m, &err) == TS_ERR_ARG);
    CHECK(m == NULL);
    CHECK(strcmp(ts_status_name(TS_ERR_FORMAT), "format error") == 0);

    /* random header bytes never crash */
    uint64_t s = 12345;
    for (int it = 0; it < 2000; it++) {
        memcpy(t.p, b2.p, t.n);
        for (int k = 0; k < 3; k++) {
            s = s * 6364136223846793005ULL + 1442695040888963407ULL;
            t.p[(s >> 33) % 48] = (unsigned char)(s >> 20);
        }
        if (load_bytes("fuzz.bin", t.p, t.n, &m, &err) == TS_OK) {
            ts_session *ss = NULL;
            /* seq_len is free in a v2 header; keep the KV cache small */
            if (ts_model_config(m)->seq_len <= 4096 && ts_session_new(m, 0, &ss, &err) == TS_OK) {
                int32_t tok = 1;
                ts_session_eval(ss, &tok, 1, 0, NULL, &err);
                ts_session_free(ss);
            }
            ts_model_free(m);
        }
    }
    free(t.p);
    free(b0.p);
    free(b2.p);
}

/* ------------------------------------------------------------ tokenizer */

typedef struct piece {
    const char *s;
    float score;
} piece;

static buf make_tokenizer(const piece *extra, int n_extra, int byte_tokens) {
    buf b = {0};
    put_i32(&b, 16);
    const char *specials[3] = {"<unk>", "\n<s>\n", "\n</s>\n"};
    for (int i = 0; i < 3; i++) {
        float sc = 0;
        put(&b, &sc, 4);
        put_i32(&b, (int32_t)strlen(specials[i]));
        put(&b, specials[i], strlen(specials[i]));
    }
    if (byte_tokens) {
        for (int i = 0; i < 256; i++) {
            char p[8];
            snprintf(p, sizeof p, "<0x%02X>", i);
            float sc = 0;
            put(&b, &sc, 4);
            put_i32(&b, 6);
            put(&b, p, 6);
        }
    }
    for (int i = 0; i < n_extra; i++) {
        put(&b, &extra[i].score, 4);
        put_i32(&b, (int32_t)strlen(extra[i].s));
        put(&b, extra[i].s, strlen(extra[i].s));
    }
    return b;
}

/* The merge loop the slow way: rescan for the best pair after every merge. */
static size_t naive_merge(const ts_tokenizer *t, int32_t *toks, size_t n) {
    for (;;) {
        float best = -1e10f;
        size_t best_i = (size_t)-1;
        int32_t best_id = -1;
        for (size_t i = 0; i + 1 < n; i++) {
            size_t la, lb;
            const char *a = ts_tokenizer_token(t, toks[i], &la);
            const char *b = ts_tokenizer_token(t, toks[i + 1], &lb);
            for (int id = 0; id < ts_tokenizer_vocab_size(t); id++) {
                size_t lp;
                const char *p = ts_tokenizer_token(t, id, &lp);
                if (lp == la + lb && memcmp(p, a, la) == 0 && memcmp(p + la, b, lb) == 0) {
                    /* scores aren't public; test_tokenizer gives id its
                     * score as (id % 7) - 3 */
                    float sc = (float)(id % 7) - 3.0f;
                    if (sc > best) {
                        best = sc;
                        best_i = i;
                        best_id = id;
                    }
                    break;
                }
            }
        }
        if (best_id < 0) return n;
        toks[best_i] = best_id;
        memmove(&toks[best_i + 1], &toks[best_i + 2], (n - best_i - 2) * sizeof *toks);
        n--;
    }
}

static void test_tokenizer(void) {
    ts_error err = {0};
    ts_tokenizer *t = NULL;

    /* merges against the naive loop: a small alphabet with many merge
     * pieces and many equal scores, so ties and chains are exercised */
    {
        const char *alpha[] = {" ", "a", "b", "c", "ab", "ba", "bc", "abc", "aa", "aab", " a",
                               " ab", "cab", "bb", "bba", "abab", "ca", "ccc", "cc", " c"};
        int na = (int)(sizeof alpha / sizeof alpha[0]);
        piece ps[32];
        for (int i = 0; i < na; i++) {
            ps[i].s = alpha[i];
            ps[i].score = (float)((3 + i) % 7) - 3.0f; /* id = 3 + i, score (id % 7) - 3 */
        }
        buf b = make_tokenizer(ps, na, 0);
        write_bytes(tmp_path("tok.bin"), b.p, b.n);
        free(b.p);
        CHECK(ts_tokenizer_load(tmp_path("tok.bin"), &t, &err) == TS_OK);
        CHECK(ts_tokenizer_vocab_size(t) == 3 + na);
        uint64_t s = 99;
        for (int it = 0; it < 300; it++) {
            char text[64];
            size_t len = (size_t)(it % 40);
            for (size_t i = 0; i < len; i++) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                text[i] = "abc  "[(s >> 33) % 5];
            }
            int32_t got[128], want[128];
            size_t ng = 0;
            CHECK(ts_tokenizer_encode(t, text, len, 1, 1, got, &ng, &err) == TS_OK);
            CHECK(ng <= ts_tokenizer_max_tokens(len));
            /* reference: BOS, prefix, one token per char, naive merges, EOS */
            size_t nw = 0;
            want[nw++] = 1;
            if (len) want[nw++] = 3; /* " " */
            for (size_t i = 0; i < len; i++) want[nw++] = text[i] == ' ' ? 3 : 4 + (text[i] - 'a');
            nw = naive_merge(t, want, nw);
            want[nw++] = 2;
            CHECK(ng == nw && memcmp(got, want, nw * sizeof *got) == 0);
        }
        /* unknown characters become <unk> once each (no byte tokens) */
        int32_t got[32];
        size_t ng = 0;
        CHECK(ts_tokenizer_encode(t, "\xe2\x82\xac" "x", 4, 0, 0, got, &ng, &err) == TS_OK);
        CHECK(ng == 3 && got[0] == 3 && got[1] == 0 && got[2] == 0);
        /* empty text: just BOS */
        CHECK(ts_tokenizer_encode(t, "", 0, 1, 0, got, &ng, &err) == TS_OK && ng == 1 && got[0] == 1);
        /* decode: no piece for out-of-range ids */
        size_t len = 99;
        CHECK(ts_tokenizer_decode_piece(t, 1, 1000, &len) == NULL && len == 0);
        CHECK(ts_tokenizer_decode_piece(t, 1, -1, &len) == NULL);
        const char *p = ts_tokenizer_decode_piece(t, 1, 3 + 10, &len); /* " a" after BOS */
        CHECK(p && len == 1 && p[0] == 'a');
        p = ts_tokenizer_decode_piece(t, 5, 3 + 10, &len);
        CHECK(p && len == 2 && memcmp(p, " a", 2) == 0);
        ts_tokenizer_free(t);
        t = NULL;
    }

    /* byte fallback and <0xXX> decoding */
    {
        piece ps[] = {{" ", 0}, {"h", -1}, {"i", -2}, {"hi", 5}, {" hi", 6}};
        buf b = make_tokenizer(ps, 5, 1);
        write_bytes(tmp_path("tokb.bin"), b.p, b.n);
        free(b.p);
        CHECK(ts_tokenizer_load(tmp_path("tokb.bin"), &t, &err) == TS_OK);
        int32_t got[32];
        size_t ng = 0;
        CHECK(ts_tokenizer_encode(t, "hi\xc3\xa9\x80", 5, 1, 0, got, &ng, &err) == TS_OK);
        /* BOS, " hi", then é as two byte tokens and the stray 0x80 byte...
         * which run.c groups with é (up to 3 continuation bytes) */
        CHECK(ng == 5 && got[0] == 1 && got[1] == 259 + 4 && got[2] == 0xc3 + 3 && got[3] == 0xa9 + 3 &&
              got[4] == 0x80 + 3);
        size_t len;
        const char *p = ts_tokenizer_decode_piece(t, 7, 0x41 + 3, &len);
        CHECK(p && len == 1 && p[0] == 'A');
        p = ts_tokenizer_decode_piece(t, 7, 0x07 + 3, &len); /* BEL: not printed */
        CHECK(p && len == 0);
        p = ts_tokenizer_decode_piece(t, 7, 0x0a + 3, &len); /* newline: printed */
        CHECK(p && len == 1 && p[0] == '\n');
        p = ts_tokenizer_decode_piece(t, 7, 0xe9 + 3, &len); /* a lone high byte: not printed */
        CHECK(p && len == 0);
        p = ts_tokenizer_decode_piece(t, 7, 0, &len);
        CHECK(p && len == 5 && memcmp(p, "<unk>", 5) == 0);
        /* a long input of invalid UTF-8 and merges is fast and safe */
        size_t big = 1 << 20;
        char *text = malloc(big);
        for (size_t i = 0; i < big; i++) text[i] = "hi \x80\xff"[i % 5];
        int32_t *toks = malloc(ts_tokenizer_max_tokens(big) * sizeof *toks);
        CHECK(ts_tokenizer_encode(t, text, big, 1, 1, toks, &ng, &err) == TS_OK);
        CHECK(ng <= ts_tokenizer_max_tokens(big) && toks[ng - 1] == 2);
        free(text);
        free(toks);
        ts_tokenizer_free(t);
        t = NULL;
    }

    /* malformed tokenizer files */
    {
        struct {
            const char *what;
            unsigned char bytes[32];
            size_t n;
        } cases[] = {
            {"header", {1, 0}, 2},
            {"max_token_length", {0, 0, 0, 0}, 4},
            {"no vocabulary", {4, 0, 0, 0}, 4},
            {"partial", {4, 0, 0, 0, 0, 0, 0, 0, 1, 0}, 10},
            {"length -1", {4, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, 12},
            {"length 5", {4, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 'a', 'b', 'c', 'd', 'e'}, 17},
            {"past the end", {4, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 'a', 'b'}, 14},
        };
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            write_bytes(tmp_path("badtok.bin"), cases[i].bytes, cases[i].n);
            ts_status st = ts_tokenizer_load(tmp_path("badtok.bin"), &t, &err);
            CHECK(st == TS_ERR_FORMAT && t == NULL && contains(err.message, "badtok.bin"));
            if (!contains(err.message, cases[i].what)) {
                fprintf(stderr, "expected '%s' in: %s\n", cases[i].what, err.message);
                failures++;
            }
        }
        CHECK(ts_tokenizer_load(tmp_path("nope.bin"), &t, &err) == TS_ERR_NOT_FOUND);
        CHECK(ts_tokenizer_load(tmpdir, &t, &err) == TS_ERR_IO);
        write_bytes(tmp_path("badtok.bin"), "", 0);
        CHECK(ts_tokenizer_load(tmp_path("badtok.bin"), &t, &err) == TS_ERR_FORMAT);
        /* random garbage never crashes */
        uint64_t s = 7;
        unsigned char g[200];
        for (int it = 0; it < 2000; it++) {
            size_t n = (size_t)(it % 200);
            for (size_t i = 0; i < n; i++) {
                s = s * 6364136223846793005ULL + 1442695040888963407ULL;
                g[i] = (unsigned char)(s >> 56);
                if (i % 4 != 0) g[i] &= 0x07; /* keep some lengths small */
            }
            write_bytes(tmp_path("garbage.bin"), g, n);
            if (ts_tokenizer_load(tmp_path("garbage.bin"), &t, &err) == TS_OK) {
                int32_t toks[16];
                size_t ng;
                CHECK(ts_tokenizer_encode(t, "abc d", 5, 1, 1, toks, &ng, &err) == TS_OK);
                for (size_t i = 0; i < ng; i++) CHECK(toks[i] >= 0 && toks[i] < ts_tokenizer_vocab_size(t));
                ts_tokenizer_free(t);
                t = NULL;
            }
        }
    }
}

/* -------------------------------------------------------------- sampler */

static void test_sampler(void) {
    ts_error err = {0};
    ts_sampler *s = NULL;
    ts_sampling p = {.temperature = 1.0f, .top_p = 0.9f, .top_k = 0, .seed = 0};
    /* seed 0 runs as TS_SEED_ZERO_STATE (xorshift's fixed point would draw 0 forever) */
    {
        ts_sampling q = p;
        q.seed = TS_SEED_ZERO_STATE;
        ts_sampler *zero = NULL, *same = NULL;
        CHECK(ts_sampler_new(10, &p, &zero, &err) == TS_OK);
        CHECK(ts_sampler_new(10, &q, &same, &err) == TS_OK);
        int varied = 0, first = -1;
        for (int i = 0; zero && same && i < 50; i++) {
            float a[10], b[10];
            for (int j = 0; j < 10; j++) a[j] = b[j] = (float)(j % 3);
            int x = ts_sampler_sample(zero, a);
            CHECK(x == ts_sampler_sample(same, b));
            if (first < 0) first = x;
            varied |= x != first;
        }
        CHECK(varied);
        ts_sampler_free(zero);
        ts_sampler_free(same);
    }
    p.seed = 1;
    p.min_p = 1.5f;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG && contains(err.message, "min_p"));
    p.min_p = NAN;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG);
    p.min_p = 0;
    p.repetition_penalty = -1;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG && contains(err.message, "repetition"));
    p.repetition_penalty = INFINITY;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG);
    p.repetition_penalty = 0;
    p.presence_penalty = NAN;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG && contains(err.message, "presence"));
    p.presence_penalty = 0;
    p.frequency_penalty = -INFINITY;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG);
    p.frequency_penalty = 0;
    p.temperature = -1;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG);
    p.temperature = NAN;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG);
    p.temperature = INFINITY;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG);
    p.temperature = 1;
    p.top_p = NAN;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG);
    p.top_p = 0.9f;
    p.top_k = -1;
    CHECK(ts_sampler_new(10, &p, &s, &err) == TS_ERR_ARG);
    CHECK(ts_sampler_new(0, &p, &s, &err) == TS_ERR_ARG);

    /* greedy: first maximum */
    p.top_k = 0;
    p.temperature = 0;
    CHECK(ts_sampler_new(5, &p, &s, &err) == TS_OK);
    float l[5] = {1, 3, 2, 3, 0};
    CHECK(ts_sampler_sample(s, l) == 1);
    ts_sampler_free(s);

    /* top_k = 1 is greedy; top_k = vocab and top_k = 0 are identical */
    float base[8] = {0.1f, 2.0f, -1.0f, 1.5f, 1.9f, 0.0f, 0.3f, 1.0f};
    for (int topk = 0; topk <= 8; topk++) {
        ts_sampling a = {.temperature = 0.8f, .top_p = 0.95f, .top_k = topk, .seed = 42}, o = {.temperature = 0.8f, .top_p = 0.95f, .top_k = 0, .seed = 42};
        ts_sampler *sa = NULL, *so = NULL;
        CHECK(ts_sampler_new(8, &a, &sa, &err) == TS_OK);
        CHECK(ts_sampler_new(8, &o, &so, &err) == TS_OK);
        for (int i = 0; i < 200; i++) {
            float la[8], lo[8];
            memcpy(la, base, sizeof la);
            memcpy(lo, base, sizeof lo);
            int32_t x = ts_sampler_sample(sa, la), y = ts_sampler_sample(so, lo);
            CHECK(x >= 0 && x < 8);
            if (topk == 1) CHECK(x == 1);
            if (topk == 0 || topk == 8) CHECK(x == y);
            if (topk == 2) CHECK(x == 1 || x == 4);
        }
        ts_sampler_free(sa);
        ts_sampler_free(so);
    }
}

/* ----------------------------------------------------------- generation */

typedef struct collect {
    char text[8192];
    size_t n;
    int calls, prompt_calls, stop_after;
} collect;

static int on_token(void *user, int32_t token, const char *piece, size_t len, int is_prompt) {
    collect *c = user;
    (void)token;
    if (c->n + len < sizeof c->text) {
        memcpy(c->text + c->n, piece, len);
        c->n += len;
        c->text[c->n] = '\0';
    }
    c->calls++;
    c->prompt_calls += is_prompt;
    return c->stop_after > 0 && c->calls >= c->stop_after;
}

/* on_token for sampled tokens only: what a batch reports */
static int on_sampled(void *user, int32_t token, const char *piece, size_t len, int is_prompt) {
    return is_prompt ? 0 : on_token(user, token, piece, len, is_prompt);
}

static void test_real(const char *dir) {
    char mpath[1024], qpath[1024], tpath[1024];
    snprintf(mpath, sizeof mpath, "%s/model5000.bin", dir);
    snprintf(qpath, sizeof qpath, "%s/model5000_q80.bin", dir);
    snprintf(tpath, sizeof tpath, "%s/tok105.bin", dir);
    /* llama2.c run/runq, -t 0 -n 256 -i "Once upon a time" (golden) */
    const char *want_f32 =
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the "
        "sunshine. One day, she went to the park with her mommy and daddy. She saw a big box on the "
        "ground. She wanted to play with it, but she was too heavy. She was so happy t";
    const char *want_q8 =
        "Once upon a time, there was a little girl named Lily. Lily was very happy and she wanted to "
        "play with him and have to go on addicate. The dog was very happy and played with the cards "
        "and they were happy.<unk>The mouse was very happy and they all lived happily";
    ts_error err = {0};
    ts_tokenizer *t = NULL;
    if (ts_tokenizer_load(tpath, &t, &err) != TS_OK) {
        fprintf(stderr, "%s\n", err.message);
        failures++;
        return;
    }
    CHECK(ts_tokenizer_vocab_size(t) == 105);
    const char *text = "Once upon a time";
    int32_t toks[32];
    size_t nt = 0;
    CHECK(ts_tokenizer_encode(t, text, strlen(text), 1, 0, toks, &nt, &err) == TS_OK);
    CHECK(nt == 2 + strlen(text) && toks[0] == 1 && toks[1] == 3);

    const char *paths[2] = {mpath, qpath};
    const char *wants[2] = {want_f32, want_q8};
    for (int k = 0; k < 2; k++) {
        ts_model *m = NULL;
        ts_session *s = NULL;
        ts_sampler *sp = NULL;
        if (ts_model_load(paths[k], &m, &err) != TS_OK) {
            fprintf(stderr, "%s\n", err.message);
            failures++;
            continue;
        }
        CHECK(ts_model_config(m)->version == (k ? 2 : 0));
        ts_sampling p = {.temperature = 0.0f, .top_p = 0.9f, .top_k = 0, .seed = 1};
        CHECK(ts_session_new(m, 0, &s, &err) == TS_OK);
        CHECK(ts_sampler_new(105, &p, &sp, &err) == TS_OK);
        collect c = {0};
        ts_generate_stats st;
        CHECK(ts_generate(s, t, sp, toks, nt, 256, NULL, on_token, &c, &st, &err) == TS_OK);
        CHECK(strcmp(c.text, wants[k]) == 0);
        if (strcmp(c.text, wants[k]) != 0) fprintf(stderr, "got (%s):\n%s\n", paths[k], c.text);
        CHECK(st.n_positions == 256 && st.n_generated == 256 - (int)nt + 1);
        CHECK(c.prompt_calls == (int)nt - 1);

        /* the batched prompt gives the same logits as the loop */
        float *rows = malloc(nt * 105 * sizeof(float));
        CHECK(ts_session_eval(s, toks, nt, 0, rows, &err) == TS_OK);
        CHECK(memcmp(rows + (nt - 1) * 105, ts_session_logits(s), 105 * sizeof(float)) == 0);
        free(rows);

        /* cancel after 5 pieces */
        collect c2 = {0};
        c2.stop_after = 5;
        CHECK(ts_generate(s, t, sp, toks, nt, 256, NULL, on_token, &c2, &st, &err) == TS_ERR_CANCELLED);
        /* the first piece is the dummy-prefix space, dropped after BOS */
        CHECK(c2.calls == 5 && st.n_positions == 5 && strcmp(c2.text, "Once") == 0);
        CHECK(ts_generate(s, t, sp, toks, 0, 0, NULL, on_token, &c2, &st, &err) == TS_ERR_ARG);
        int32_t badp[2] = {1, 105};
        CHECK(ts_generate(s, t, sp, badp, 2, 256, NULL, on_token, &c2, &st, &err) == TS_ERR_ARG);
        CHECK(ts_generate(s, t, sp, toks, nt, -1, NULL, on_token, &c2, &st, &err) == TS_ERR_ARG);
        /* steps = 0 evaluates nothing (the CLI maps run.c's -n 0 to seq_len itself) */
        collect c3 = {0};
        CHECK(ts_generate(s, t, sp, toks, nt, 0, NULL, on_token, &c3, &st, &err) == TS_OK);
        CHECK(c3.calls == 0 && st.n_positions == 0);
        ts_sampler_free(sp);
        ts_session_free(s);
        ts_model_free(m);
    }
    ts_tokenizer_free(t);
}

/* Load options, kernel sets, quantize-on-load and batched generation on the
 * real models: every kernel set, and batched == one at a time. */
static void test_fast_paths(const char *dir) {
    char mpath[1024], tpath[1024];
    snprintf(mpath, sizeof mpath, "%s/model5000.bin", dir);
    snprintf(tpath, sizeof tpath, "%s/tok105.bin", dir);
    ts_error err = {0};
    ts_model *m = NULL;
    ts_tokenizer *t = NULL;
    if (ts_tokenizer_load(tpath, &t, &err) != TS_OK) {
        failures++;
        return;
    }
    ts_load_options o = ts_load_options_default();
    o.kernels = "no-such-set";
    CHECK(ts_model_load_with(mpath, &o, &m, &err) == TS_ERR_ARG && contains(err.message, "unknown kernel set"));
    o.kernels = NULL;
    o.quantize = 7;
    CHECK(ts_model_load_with(mpath, &o, &m, &err) == TS_ERR_ARG);
    o.quantize = TS_QUANTIZE_Q8_0;
    o.group_size = 48; /* does not divide dim 128 */
    CHECK(ts_model_load_with(mpath, &o, &m, &err) == TS_ERR_ARG && contains(err.message, "group_size"));
    CHECK(contains(ts_kernels_available(), "scalar"));

    char sets[64];
    snprintf(sets, sizeof sets, "%s", ts_kernels_available());
    for (char *name = strtok(sets, " "); name; name = strtok(NULL, " ")) {
        for (int quantize = 0; quantize < 2; quantize++) {
            o = ts_load_options_default();
            o.kernels = name;
            o.quantize = quantize;
            CHECK(ts_model_load_with(mpath, &o, &m, &err) == TS_OK);
            if (!m) continue;
            CHECK(strcmp(ts_model_kernels(m), name) == 0);
            CHECK(ts_model_config(m)->group_size == (quantize ? 64 : 0));
            /* three requests through two slots; each as ts_generate alone */
            const int32_t prompts[3][3] = {{1, 3, 4}, {1, 10, 20}, {1, 3, 4}};
            ts_batch_generation *b = NULL;
            CHECK(ts_batch_generation_new(m, t, 2, 2, &b, &err) == TS_OK);
            collect want[3];
            memset(want, 0, sizeof want);
            for (int i = 0; i < 3; i++) {
                ts_sampling sp = {.temperature = 0.9f, .top_p = 0.9f, .top_k = 0, .seed = (uint64_t)(7 + i % 2)};
                int id = -1;
                CHECK(ts_batch_generation_add(b, prompts[i], 3, 100, &sp, NULL, &id, &err) == TS_OK && id == i);
                ts_session *s = NULL;
                ts_sampler *smp = NULL;
                CHECK(ts_session_new(m, 1, &s, &err) == TS_OK);
                CHECK(ts_sampler_new(105, &sp, &smp, &err) == TS_OK);
                CHECK(ts_generate(s, t, smp, prompts[i], 3, 100, NULL, on_sampled, &want[i], NULL, &err) == TS_OK);
                ts_sampler_free(smp);
                ts_session_free(s);
            }
            collect got[3];
            memset(got, 0, sizeof got);
            ts_batch_event events[2];
            size_t n = 0;
            int active = 1, steps = 0;
            while (active > 0 && steps++ < 1000) {
                CHECK(ts_batch_generation_step(b, events, &n, &active, &err) == TS_OK);
                CHECK(n <= 2);
                for (size_t k = 0; k < n; k++) {
                    const ts_token_event *e = &events[k].event;
                    CHECK(!e->is_prompt);
                    if (!e->done) {
                        on_token(&got[events[k].id], e->token, e->piece, e->len, e->is_prompt);
                    }
                }
            }
            CHECK(active == 0);
            for (int i = 0; i < 3; i++) CHECK(strcmp(got[i].text, want[i].text) == 0);
            CHECK(strcmp(got[0].text, got[2].text) == 0 && got[0].text[0]);
            ts_batch_generation_free(b);
            ts_model_free(m);
            m = NULL;
        }
    }
    ts_tokenizer_free(t);
}

int main(int argc, char **argv) {
    snprintf(tmpdir, sizeof tmpdir, "%s/ts_test_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_formats();
    test_bad_headers();
    test_tokenizer();
    test_sampler();
    const char *dir = argc > 1 ? argv[1] : getenv("TS_TEST_MODEL_DIR");
    if (dir && *dir) {
        test_real(dir);
        test_fast_paths(dir);
    } else {
        printf("note: no model directory given, skipping the real-model checks\n");
    }
    /* clean up the temp dir */
    const char *names[] = {"v0.bin", "v1.bin", "v2.bin", "trunc.bin", "pad.bin", "cut.bin",
                           "bad.bin", "seq.bin", "empty.bin", "tiny.bin", "fuzz.bin", "tok.bin",
                           "tokb.bin", "badtok.bin", "garbage.bin"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) unlink(tmp_path(names[i]));
    rmdir(tmpdir);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
