/*
 * fuzz_encode.c — encoding arbitrary bytes (invalid UTF-8, NULs, anything).
 *
 * Input byte 0 picks the tokenizer (synthetic with byte tokens, synthetic
 * without, or $TS_FUZZ_TOKENIZER) and the BOS/EOS flags; the rest is the
 * text. Invariants:
 *   - ids inside the vocabulary, at most ts_tokenizer_max_tokens of them;
 *   - the same ids as a direct port of run.c's quadratic encode() (its
 *     UTF-8 split, byte fallback and best-score-leftmost merge loop), which
 *     the engine's heap-based merge must reproduce (texts up to 256 bytes);
 *   - with byte tokens, the pieces concatenate back to " " + text.
 */
#include "fuzz_common.h"

/* ---------------------------------------------------- reference (run.c) */

typedef struct ref_vocab {
    const unsigned char *file;
    int n;
    const unsigned char **piece;
    int32_t *len;
    float *score;
    int32_t *sorted; /* ids ordered by (bytes, id): lookups find the lowest id */
} ref_vocab;

static const ref_vocab *cmp_vocab;

static int cmp_bytes(const unsigned char *a, size_t la, const unsigned char *b, size_t lb) {
    size_t m = la < lb ? la : lb;
    int c = memcmp(a, b, m);
    if (c) return c;
    return la < lb ? -1 : la > lb;
}

static int cmp_ids(const void *x, const void *y) {
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    const ref_vocab *v = cmp_vocab;
    int c = cmp_bytes(v->piece[a], (size_t)v->len[a], v->piece[b], (size_t)v->len[b]);
    return c ? c : (a > b) - (a < b);
}

static ref_vocab *ref_parse(const fuzz_buf *f) {
    ref_vocab *v = calloc(1, sizeof *v);
    size_t off = 4;
    while (off < f->n) { /* the file loaded, so it is well formed */
        int32_t len;
        memcpy(&len, f->p + off + 4, 4);
        off += 8 + (size_t)len;
        v->n++;
    }
    v->piece = malloc((size_t)v->n * sizeof *v->piece);
    v->len = malloc((size_t)v->n * sizeof *v->len);
    v->score = malloc((size_t)v->n * sizeof *v->score);
    v->sorted = malloc((size_t)v->n * sizeof *v->sorted);
    off = 4;
    for (int i = 0; i < v->n; i++) {
        memcpy(&v->score[i], f->p + off, 4);
        memcpy(&v->len[i], f->p + off + 4, 4);
        v->piece[i] = f->p + off + 8;
        off += 8 + (size_t)v->len[i];
        v->sorted[i] = i;
    }
    cmp_vocab = v;
    qsort(v->sorted, (size_t)v->n, sizeof *v->sorted, cmp_ids);
    return v;
}

/* The lowest id whose piece is exactly s[0..n), or -1. */
static int32_t ref_lookup(const ref_vocab *v, const unsigned char *s, size_t n) {
    int lo = 0, hi = v->n; /* first index with piece >= s */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int32_t id = v->sorted[mid];
        if (cmp_bytes(v->piece[id], (size_t)v->len[id], s, n) < 0) lo = mid + 1;
        else hi = mid;
    }
    if (lo < v->n) {
        int32_t id = v->sorted[lo];
        if (cmp_bytes(v->piece[id], (size_t)v->len[id], s, n) == 0) return id;
    }
    return -1;
}

static int ref_has_byte_tokens(const ref_vocab *v) {
    if (v->n < 259) return 0;
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        if (v->len[b + 3] != 6 || memcmp(v->piece[b + 3], s, 6) != 0) return 0;
    }
    return 1;
}

/* run.c's encode(), with length-aware pieces and <unk> instead of its
 * out-of-range ids when a vocabulary has no byte tokens. */
static size_t ref_encode(const ref_vocab *v, const unsigned char *text, size_t len, int bos,
                         int eos, int32_t *ids) {
    size_t n = 0;
    if (bos) ids[n++] = TS_TOKEN_BOS;
    int32_t space = ref_lookup(v, (const unsigned char *)" ", 1);
    if (len > 0 && space >= 0) ids[n++] = space;
    int bytes = ref_has_byte_tokens(v);
    unsigned char buf[8];
    size_t blen = 0;
    for (size_t i = 0; i < len; i++) {
        if ((text[i] & 0xC0) != 0x80) blen = 0;
        buf[blen++] = text[i];
        if (i + 1 < len && (text[i + 1] & 0xC0) == 0x80 && blen < 4) continue;
        int32_t id = ref_lookup(v, buf, blen);
        if (id >= 0) {
            ids[n++] = id;
        } else if (bytes) {
            for (size_t k = 0; k < blen; k++) ids[n++] = (int32_t)buf[k] + 3;
        } else {
            ids[n++] = TS_TOKEN_UNK;
        }
        blen = 0;
    }
    unsigned char cat[64];
    for (;;) {
        float best_score = -1e10f;
        int32_t best_id = -1;
        size_t best_idx = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            size_t la = (size_t)v->len[ids[i]], lb = (size_t)v->len[ids[i + 1]];
            if (la + lb > sizeof cat) continue; /* longer than any piece here */
            memcpy(cat, v->piece[ids[i]], la);
            memcpy(cat + la, v->piece[ids[i + 1]], lb);
            int32_t id = ref_lookup(v, cat, la + lb);
            if (id != -1 && v->score[id] > best_score) {
                best_score = v->score[id];
                best_id = id;
                best_idx = i;
            }
        }
        if (best_id == -1) break;
        ids[best_idx] = best_id;
        memmove(ids + best_idx + 1, ids + best_idx + 2, (n - best_idx - 2) * sizeof *ids);
        n--;
    }
    if (eos) ids[n++] = TS_TOKEN_EOS;
    return n;
}

/* ------------------------------------------------------------- target */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    fuzz_tokenizers *ft = fuzz_get_tokenizers();
    static ref_vocab *refs[3];
    int which = (data[0] >> 2) % ft->n;
    int bos = data[0] & 1, eos = (data[0] >> 1) & 1;
    const ts_tokenizer *t = ft->t[which];
    if (!refs[which]) refs[which] = ref_parse(&ft->file[which]);
    const ref_vocab *ref = refs[which];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;

    size_t cap = ts_tokenizer_max_tokens(len);
    int32_t *ids = malloc(cap * sizeof *ids);
    FUZZ_ASSERT(ids);
    size_t n = 0;
    ts_error err;
    FUZZ_ASSERT(ts_tokenizer_encode(t, text, len, bos, eos, ids, &n, &err) == TS_OK);
    FUZZ_ASSERT(n <= cap);
    int vocab = ts_tokenizer_vocab_size(t);
    FUZZ_ASSERT(vocab == ref->n);
    for (size_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < vocab);

    if (len <= 256) {
        int32_t want[260];
        size_t wn = ref_encode(ref, (const unsigned char *)text, len, bos, eos, want);
        if (wn != n || memcmp(want, ids, n * sizeof *ids) != 0) {
            fprintf(stderr, "encode differs from run.c's: got %zu ids, expected %zu\n", n, wn);
            for (size_t i = 0; i < n || i < wn; i++) {
                fprintf(stderr, "  %zu: %d %d\n", i, i < n ? ids[i] : -1, i < wn ? want[i] : -1);
            }
            abort();
        }
    }

    if (ref_has_byte_tokens(ref) && ref_lookup(ref, (const unsigned char *)" ", 1) >= 0) {
        /* lossless: the pieces spell " " + text (byte tokens as their byte) */
        fuzz_buf back = {0};
        for (size_t i = 0; i < n; i++) {
            if (ids[i] == TS_TOKEN_BOS || ids[i] == TS_TOKEN_EOS) continue;
            if (ids[i] >= 3 && ids[i] < 259) {
                unsigned char b = (unsigned char)(ids[i] - 3);
                fuzz_put(&back, &b, 1);
            } else {
                fuzz_put(&back, ref->piece[ids[i]], (size_t)ref->len[ids[i]]);
            }
        }
        size_t want_len = len ? len + 1 : 0;
        FUZZ_ASSERT(back.n == want_len);
        if (len) FUZZ_ASSERT(back.p[0] == ' ' && memcmp(back.p + 1, text, len) == 0);
        free(back.p);
    }
    free(ids);
    return 0;
}
