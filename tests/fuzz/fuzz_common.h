/*
 * fuzz_common.h — helpers shared by the fuzz targets (header-only: each
 * target is one translation unit, built either with libFuzzer or with
 * replay_main.c).
 *
 * The loaders take paths, so inputs are written to an in-memory file
 * (memfd) and loaded through /proc/self/fd/N: no disk traffic, and the
 * loader sees a regular file exactly as it would on disk.
 */
#ifndef TS_FUZZ_COMMON_H
#define TS_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include "tinystories.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Bytes are XORed in here so that reading them cannot be optimized away. */
static volatile unsigned char fuzz_sink;

/* Aborts (a finding for libFuzzer) with a message when an invariant fails. */
#define FUZZ_ASSERT(cond)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* An in-memory file holding `data`; its path is valid until fuzz_file_close. */
typedef struct fuzz_file {
    int fd;
    char path[64];
} fuzz_file;

static inline int fuzz_file_open(fuzz_file *f, const void *data, size_t size) {
    f->fd = memfd_create("ts_fuzz", MFD_CLOEXEC);
    if (f->fd < 0) {
        perror("memfd_create");
        abort();
    }
    const unsigned char *p = data;
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(f->fd, p + done, size - done);
        if (w <= 0) {
            perror("write");
            abort();
        }
        done += (size_t)w;
    }
    snprintf(f->path, sizeof f->path, "/proc/self/fd/%d", f->fd);
    return 0;
}

static inline void fuzz_file_close(fuzz_file *f) {
    if (f->fd >= 0) close(f->fd);
    f->fd = -1;
}

/* A growable byte buffer. */
typedef struct fuzz_buf {
    unsigned char *p;
    size_t n, cap;
} fuzz_buf;

static inline void fuzz_put(fuzz_buf *b, const void *data, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) abort();
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, data, n);
    b->n += n;
}

static inline void fuzz_put_i32(fuzz_buf *b, int32_t v) { fuzz_put(b, &v, 4); }
static inline void fuzz_put_f32(fuzz_buf *b, float v) { fuzz_put(b, &v, 4); }

static inline void fuzz_put_piece(fuzz_buf *b, const char *s, size_t len, float score) {
    fuzz_put_f32(b, score);
    fuzz_put_i32(b, (int32_t)len);
    fuzz_put(b, s, len);
}

/* A synthetic llama2.c tokenizer.bin: <unk>, BOS, EOS, optionally the 256
 * byte tokens, single characters (ASCII and a few multi-byte UTF-8), then
 * merges of earlier pieces with many equal scores (to exercise the
 * leftmost-first tie rule), one duplicate piece, one empty piece and one
 * piece with an embedded NUL. */
static inline ts_tokenizer *fuzz_synthetic_tokenizer(int byte_tokens, fuzz_buf *file) {
    fuzz_buf b = {0};
    fuzz_put_i32(&b, 16);
    char pieces[1024][17];
    size_t lens[1024];
    int n = 0;
#define ADD(str, len, score)                                   \
    do {                                                       \
        memcpy(pieces[n], (str), (len));                       \
        lens[n] = (len);                                       \
        fuzz_put_piece(&b, pieces[n], lens[n], (score));       \
        n++;                                                   \
    } while (0)
    ADD("<unk>", 5, 0.0f);
    ADD("\n<s>\n", 5, 0.0f);
    ADD("\n</s>\n", 6, 0.0f);
    if (byte_tokens) {
        for (int i = 0; i < 256; i++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", i);
            ADD(s, 6, 0.0f);
        }
    }
    int first_char = n;
    const char *chars = " etaoinshrdlucmwfgypbvkTSLO.,!?'\"\n";
    for (const char *c = chars; *c; c++) ADD(c, 1, -1.0f);
    const char *utf8[] = {"\xc3\xa9", "\xe2\x80\x9c", "\xe4\xb8\xad", "\xf0\x9f\x98\x80"};
    for (size_t i = 0; i < sizeof utf8 / sizeof utf8[0]; i++) ADD(utf8[i], strlen(utf8[i]), -1.0f);
    int n_chars = n - first_char;
    uint64_t s = 0x9E3779B97F4A7C15ULL;
    for (int k = 0; k < 400 && n < 1000; k++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        int a = first_char + (int)((s >> 33) % (uint64_t)(n - first_char));
        /* the right half mostly a single character, as BPE merges grow */
        int c = first_char + (int)((s >> 13) % (uint64_t)((s & 1) ? n_chars : n - first_char));
        if (lens[a] + lens[c] > 16) continue;
        char cat[17];
        memcpy(cat, pieces[a], lens[a]);
        memcpy(cat + lens[a], pieces[c], lens[c]);
        ADD(cat, lens[a] + lens[c], (float)(-(k % 23)));
    }
    ADD(" t", 2, 5.0f);         /* a duplicate of a likely merge, higher score */
    ADD("", 0, 1.0f);           /* an empty piece */
    ADD("a\0b", 3, 2.0f);       /* an embedded NUL */
#undef ADD
    fuzz_file f;
    fuzz_file_open(&f, b.p, b.n);
    ts_tokenizer *t = NULL;
    ts_error err;
    if (ts_tokenizer_load(f.path, &t, &err) != TS_OK) {
        fprintf(stderr, "synthetic tokenizer: %s\n", err.message);
        abort();
    }
    fuzz_file_close(&f);
    *file = b;
    return t;
}

/* The whole of a file, or abort. */
static inline fuzz_buf fuzz_read_file(const char *path) {
    fuzz_buf b = {0};
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        abort();
    }
    unsigned char chunk[4096];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) fuzz_put(&b, chunk, got);
    fclose(f);
    return b;
}

/* The tokenizers the encode/decode targets use: synthetic with and without
 * byte tokens, plus $TS_FUZZ_TOKENIZER (e.g. tok105.bin) when set. */
typedef struct fuzz_tokenizers {
    ts_tokenizer *t[3];
    fuzz_buf file[3]; /* the tokenizer.bin each was loaded from */
    int n;
} fuzz_tokenizers;

static inline fuzz_tokenizers *fuzz_get_tokenizers(void) {
    static fuzz_tokenizers ft;
    static int ready = 0;
    if (!ready) {
        ready = 1;
        ft.t[ft.n] = fuzz_synthetic_tokenizer(1, &ft.file[ft.n]);
        ft.n++;
        ft.t[ft.n] = fuzz_synthetic_tokenizer(0, &ft.file[ft.n]);
        ft.n++;
        const char *path = getenv("TS_FUZZ_TOKENIZER");
        if (path && *path) {
            ts_error err;
            ts_tokenizer *t = NULL;
            if (ts_tokenizer_load(path, &t, &err) != TS_OK) {
                fprintf(stderr, "TS_FUZZ_TOKENIZER: %s\n", err.message);
                abort();
            }
            ft.file[ft.n] = fuzz_read_file(path);
            ft.t[ft.n++] = t;
        }
    }
    return &ft;
}

#endif /* TS_FUZZ_COMMON_H */
