/*
 * fuzz_decode.c — decoding arbitrary id lists.
 *
 * Input byte 0 picks the tokenizer (synthetic with byte tokens, synthetic
 * without, or $TS_FUZZ_TOKENIZER); the rest is a list of int32 ids, any
 * value. Decoding runs as the engine and the Python binding do: each piece
 * follows the previous id. Invariants: NULL (and length 0) exactly for ids
 * outside the vocabulary; otherwise at most the entry's bytes, and a piece
 * that is a byte token <0xXX> decodes to at most one byte.
 */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    fuzz_tokenizers *ft = fuzz_get_tokenizers();
    const ts_tokenizer *t = ft->t[data[0] % ft->n];
    int vocab = ts_tokenizer_vocab_size(t);
    data++;
    size--;
    int32_t prev = TS_TOKEN_BOS;
    for (size_t i = 0; i + 4 <= size; i += 4) {
        int32_t id;
        memcpy(&id, data + i, 4);
        /* small values are the interesting ones: fold most ids into range */
        if ((data[i + 3] & 0xC0) == 0x40) id = (int32_t)((uint32_t)id % (uint32_t)(vocab + 2));
        size_t len = 99, raw = 0;
        const char *p = ts_tokenizer_decode_piece(t, prev, id, &len);
        int inside = id >= 0 && id < vocab;
        FUZZ_ASSERT((p != NULL) == inside);
        if (!inside) {
            FUZZ_ASSERT(len == 0);
            continue; /* the binding raises here; keep going to test more */
        }
        const char *entry = ts_tokenizer_token(t, id, &raw);
        FUZZ_ASSERT(entry != NULL && len <= raw);
        if (raw == 6 && memcmp(entry, "<0x", 3) == 0 && entry[5] == '>') FUZZ_ASSERT(len <= 1);
        for (size_t k = 0; k < len; k++) fuzz_sink ^= (unsigned char)p[k];
        prev = id;
    }
    return 0;
}
