/*
 * fuzz_tokenizer.c — the tokenizer.bin loader, then decode and encode with
 * whatever loads.
 *
 * The input is the tokenizer file. Invariants: a failed load names the file
 * and leaves no tokenizer; a loaded one has at least one entry, every entry's
 * bytes are readable, decode_piece returns NULL exactly for ids outside the
 * vocabulary and never more bytes than the entry has, and encode (of fixed
 * texts, invalid UTF-8 included, and of the input itself) returns ids inside
 * the vocabulary, at most ts_tokenizer_max_tokens of them.
 */
#include "fuzz_common.h"

static void check_encode(const ts_tokenizer *t, const char *text, size_t len) {
    size_t cap = ts_tokenizer_max_tokens(len);
    int32_t *ids = malloc(cap * sizeof *ids);
    FUZZ_ASSERT(ids);
    for (int flags = 0; flags < 4; flags++) {
        size_t n = (size_t)-1;
        ts_error err;
        FUZZ_ASSERT(ts_tokenizer_encode(t, text, len, flags & 1, flags >> 1, ids, &n, &err) == TS_OK);
        FUZZ_ASSERT(n <= cap);
        int vocab = ts_tokenizer_vocab_size(t);
        for (size_t i = 0; i < n; i++) FUZZ_ASSERT(ids[i] >= 0 && ids[i] < vocab);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_file f;
    fuzz_file_open(&f, data, size);
    ts_tokenizer *t = (ts_tokenizer *)1;
    ts_error err;
    memset(&err, 0, sizeof err);
    ts_status st = ts_tokenizer_load(f.path, &t, &err);
    if (st != TS_OK) {
        FUZZ_ASSERT(t == NULL);
        FUZZ_ASSERT(err.code == st && strstr(err.message, f.path) != NULL);
        fuzz_file_close(&f);
        return 0;
    }
    fuzz_file_close(&f);
    int vocab = ts_tokenizer_vocab_size(t);
    FUZZ_ASSERT(vocab >= 3 && (size_t)vocab <= size / 8);

    /* every entry, and decode after BOS, after itself and after garbage */
    int limit = vocab < 4096 ? vocab : 4096;
    for (int32_t id = 0; id < limit; id++) {
        size_t len = 0;
        const char *p = ts_tokenizer_token(t, id, &len);
        FUZZ_ASSERT(p != NULL);
        for (size_t k = 0; k < len; k++) fuzz_sink ^= (unsigned char)p[k];
        const int32_t prevs[] = {-7, 0, TS_TOKEN_BOS, id};
        for (size_t j = 0; j < 4; j++) {
            size_t dl = 99;
            const char *d = ts_tokenizer_decode_piece(t, prevs[j], id, &dl);
            FUZZ_ASSERT(d != NULL && dl <= len);
            for (size_t k = 0; k < dl; k++) fuzz_sink ^= (unsigned char)d[k];
        }
    }
    const int32_t outside[] = {-1, INT32_MIN, vocab, INT32_MAX};
    for (size_t j = 0; j < 4; j++) {
        size_t dl = 99;
        FUZZ_ASSERT(ts_tokenizer_decode_piece(t, TS_TOKEN_BOS, outside[j], &dl) == NULL && dl == 0);
        FUZZ_ASSERT(ts_tokenizer_token(t, outside[j], &dl) == NULL && dl == 0);
    }

    static const char *texts[] = {
        "", " ", "Once upon a time", "a\0b", "\xff\xfe", "\xc3", "\x80\x80\x80\x80\x80",
        "\xf0\x9f\x98\x80 caf\xc3\xa9", "\n<s>\n", "<0x41>",
    };
    static const size_t lens[] = {0, 1, 16, 3, 2, 1, 5, 10, 5, 6};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) check_encode(t, texts[i], lens[i]);
    check_encode(t, (const char *)data, size < 512 ? size : 512);
    ts_tokenizer_free(t);
    return 0;
}
