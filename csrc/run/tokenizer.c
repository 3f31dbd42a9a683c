/*
 * tokenizer.c — llama2.c's tokenizer.bin: loading, encoding, decoding.
 *
 * Encoding follows run.c's encode() but without its limits: pieces are
 * looked up by (bytes, length) in a hash table, and the greedy merge loop
 * (best score first, leftmost on ties) runs on a linked list with a heap,
 * O(n log n) instead of O(n^2) per merge, producing the same merges.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- hashing */

/* FNV-1a, resumable so a‖b hashes without building the concatenation. */
static uint64_t fnv1a(uint64_t h, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}
#define FNV_OFFSET 0xcbf29ce484222325ULL

static int piece_equals2(const ts_tokenizer *t, int32_t id, const char *a, size_t la, const char *b,
                         size_t lb) {
    const char *p = t->pieces + t->offsets[id];
    return t->lengths[id] == la + lb && memcmp(p, a, la) == 0 && memcmp(p + la, b, lb) == 0;
}

int32_t ts__tokenizer_lookup2(const ts_tokenizer *t, const char *a, size_t la, const char *b,
                              size_t lb) {
    size_t i = (size_t)fnv1a(fnv1a(FNV_OFFSET, a, la), b, lb) & t->table_mask;
    for (;;) {
        int32_t id = t->table[i];
        if (id < 0) return -1;
        if (piece_equals2(t, id, a, la, b, lb)) return id;
        i = (i + 1) & t->table_mask;
    }
}

/* --------------------------------------------------------------- loading */

static ts_status read_all(const char *path, unsigned char **data, size_t *size, ts_error *err) {
    /* O_NONBLOCK: opening a FIFO must not wait for a writer (it is then
     * rejected as not a regular file); regular files ignore the flag. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        if (fd >= 0) close(fd);
        return ts__with_errno(err,
                              ts__fail(err, e == ENOENT ? TS_ERR_NOT_FOUND : TS_ERR_IO,
                                       "%s: cannot open: %s (errno %d)", path, ts__errno_text(e), e),
                              e);
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int e = errno;
        fclose(f);
        return ts__with_errno(
            err, ts__fail(err, TS_ERR_IO, "%s: cannot stat: %s (errno %d)", path, ts__errno_text(e), e),
            e);
    }
    if (!S_ISREG(st.st_mode)) {
        int dir = S_ISDIR(st.st_mode);
        fclose(f);
        return ts__with_errno(err,
                              ts__fail(err, TS_ERR_IO, "%s: %s", path,
                                       dir ? "is a directory, not a tokenizer file"
                                           : "not a regular file"),
                              dir ? EISDIR : 0);
    }
    if (st.st_size == 0) {
        fclose(f);
        return ts__fail(err, TS_ERR_FORMAT, "%s: file is empty", path);
    }
    if ((uint64_t)st.st_size > UINT32_MAX) {
        fclose(f); /* offsets are 32-bit; real tokenizers are far smaller */
        return ts__fail(err, TS_ERR_FORMAT, "%s: file is too large for a tokenizer", path);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n);
    if (!buf) {
        fclose(f);
        return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    if (got != n) {
        free(buf);
        return ts__fail(err, TS_ERR_IO, "%s: short read (%zu of %zu bytes)", path, got, n);
    }
    *data = buf;
    *size = n;
    return TS_OK;
}

static int32_t rd_i32(const unsigned char *p) {
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* The byte a piece spelled exactly "<0xXX>" stands for, or -1. */
static int byte_piece_value(const char *p, size_t len) {
    if (len != 6 || memcmp(p, "<0x", 3) != 0 || p[5] != '>') return -1;
    int hi = hexval(p[3]), lo = hexval(p[4]);
    return (hi < 0 || lo < 0) ? -1 : hi * 16 + lo;
}

ts_status ts_tokenizer_load(const char *path, ts_tokenizer **out, ts_error *err) {
    if (!out) return ts__fail(err, TS_ERR_ARG, "ts_tokenizer_load: out is NULL");
    *out = NULL;
    if (!path) return ts__fail(err, TS_ERR_ARG, "ts_tokenizer_load: path is NULL");
    unsigned char *data = NULL;
    size_t size = 0;
    ts_status st = read_all(path, &data, &size, err);
    if (st != TS_OK) return st;

    ts_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        free(data);
        return ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
    }
    if (size < 4) {
        st = ts__fail(err, TS_ERR_FORMAT, "%s: file is %zu bytes, too short for the header", path, size);
        goto fail;
    }
    t->max_token_length = rd_i32(data);
    if (t->max_token_length <= 0) {
        st = ts__fail(err, TS_ERR_FORMAT, "%s: max_token_length is %d, must be positive", path,
                      t->max_token_length);
        goto fail;
    }

    /* Pass 1: walk the entries to count them and check every length. */
    size_t count = 0, off = 4;
    while (off < size) {
        if (size - off < 8) {
            st = ts__fail(err, TS_ERR_FORMAT, "%s: partial entry at byte %zu (entry %zu)", path, off,
                          count);
            goto fail;
        }
        int32_t len = rd_i32(data + off + 4);
        if (len < 0 || len > t->max_token_length) {
            st = ts__fail(err, TS_ERR_FORMAT,
                          "%s: entry %zu has length %d, outside [0, max_token_length %d]", path, count,
                          len, t->max_token_length);
            goto fail;
        }
        if ((size_t)len > size - off - 8) {
            st = ts__fail(err, TS_ERR_FORMAT, "%s: entry %zu (length %d) runs past the end of the file",
                          path, count, len);
            goto fail;
        }
        off += 8 + (size_t)len;
        count++;
    }
    if (count == 0) {
        st = ts__fail(err, TS_ERR_FORMAT, "%s: no vocabulary entries", path);
        goto fail;
    }
    if (count < 3) {
        /* encode emits <unk> (0), BOS (1) and EOS (2) by id: they must exist */
        st = ts__fail(err, TS_ERR_FORMAT,
                      "%s: %zu vocabulary entries; a llama2.c vocabulary needs at least 3 "
                      "(<unk>, BOS, EOS)",
                      path, count);
        goto fail;
    }
    if (count > (size_t)INT32_MAX / 4) {
        st = ts__fail(err, TS_ERR_FORMAT, "%s: too many entries (%zu)", path, count);
        goto fail;
    }
    t->vocab_size = (int)count;

    /* Pass 2: copy pieces (NUL-terminated for convenience) and scores. */
    size_t tsize = 16;
    while (tsize < count * 2) tsize *= 2; /* load factor <= 1/2 */
    t->scores = malloc(count * sizeof *t->scores);
    t->offsets = malloc(count * sizeof *t->offsets);
    t->lengths = malloc(count * sizeof *t->lengths);
    t->pieces = malloc(size); /* pieces + NULs never exceed the file size */
    t->table = malloc(tsize * sizeof *t->table);
    if (!t->scores || !t->offsets || !t->lengths || !t->pieces || !t->table) {
        st = ts__fail(err, TS_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    t->table_mask = tsize - 1;
    memset(t->table, 0xff, tsize * sizeof *t->table); /* all -1 */
    size_t poff = 0;
    off = 4;
    for (size_t i = 0; i < count; i++) {
        memcpy(&t->scores[i], data + off, sizeof(float));
        uint32_t len = (uint32_t)rd_i32(data + off + 4);
        memcpy(t->pieces + poff, data + off + 8, len);
        t->pieces[poff + len] = '\0';
        t->offsets[i] = (uint32_t)poff;
        t->lengths[i] = len;
        poff += len + 1;
        off += 8 + len;
        /* Insert unless an equal piece is already there: the lowest id wins
         * for duplicate pieces. */
        const char *p = t->pieces + t->offsets[i];
        size_t h = (size_t)fnv1a(FNV_OFFSET, p, len) & t->table_mask;
        while (t->table[h] >= 0 && !piece_equals2(t, t->table[h], p, len, "", 0)) {
            h = (h + 1) & t->table_mask;
        }
        if (t->table[h] < 0) t->table[h] = (int32_t)i;
    }
    free(data);
    data = NULL;

    t->space_id = ts__tokenizer_lookup2(t, " ", 1, "", 0);
    t->has_byte_tokens = count >= TS_TOKEN_FIRST_BYTE + TS_TOKEN_BYTES;
    for (int b = 0; b < 256 && t->has_byte_tokens; b++) {
        if (byte_piece_value(t->pieces + t->offsets[b + TS_TOKEN_FIRST_BYTE],
                             t->lengths[b + TS_TOKEN_FIRST_BYTE]) != b) {
            t->has_byte_tokens = 0;
        }
    }
    for (int b = 0; b < 256; b++) {
        t->byte_pieces[2 * b] = (char)b;
        t->byte_pieces[2 * b + 1] = '\0';
    }
    *out = t;
    return TS_OK;

fail:
    free(data);
    ts_tokenizer_free(t);
    return st;
}

void ts_tokenizer_free(ts_tokenizer *t) {
    if (!t) return;
    free(t->scores);
    free(t->offsets);
    free(t->lengths);
    free(t->pieces);
    free(t->table);
    free(t);
}

int ts_tokenizer_vocab_size(const ts_tokenizer *t) { return t ? t->vocab_size : 0; }

const char *ts_tokenizer_token(const ts_tokenizer *t, int32_t token, size_t *len) {
    if (!t || token < 0 || token >= t->vocab_size) {
        if (len) *len = 0;
        return NULL;
    }
    if (len) *len = t->lengths[token];
    return t->pieces + t->offsets[token];
}

/* --------------------------------------------------------------- decoding */

const char *ts_tokenizer_decode_piece(const ts_tokenizer *t, int32_t prev, int32_t token,
                                      size_t *len) {
    size_t n;
    const char *p = ts_tokenizer_token(t, token, &n);
    if (!p) {
        if (len) *len = 0;
        return NULL;
    }
    /* run.c prints pieces with %s, so nothing after a NUL byte shows. */
    n = strnlen(p, n);
    /* sentencepiece drops the leading space of the first piece after BOS */
    if (prev == TS_TOKEN_BOS && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    int b = byte_piece_value(p, n);
    if (b >= 0) {
        p = t->byte_pieces + 2 * b;
        n = b == 0 ? 0 : 1;
    }
    /* run.c's safe_printf: a lone byte that is neither printable nor
     * whitespace (C locale) is not printed. */
    if (n == 1) {
        unsigned char c = (unsigned char)p[0];
        int printable = c >= 0x20 && c <= 0x7e;
        int space = c == ' ' || (c >= '\t' && c <= '\r');
        if (!printable && !space) n = 0;
    }
    if (len) *len = n;
    return p;
}

/* --------------------------------------------------------------- encoding */

size_t ts_tokenizer_max_tokens(size_t text_len) {
    /* one token per byte at most, plus BOS, the dummy prefix and EOS */
    return text_len > SIZE_MAX - 3 ? SIZE_MAX : text_len + 3;
}

/* A candidate merge of the adjacent nodes (left, right) into `id`. It is
 * stale once either node changed since: `stamp` records their versions. */
typedef struct merge {
    float score;
    uint32_t left, right;
    uint32_t vleft, vright;
    int32_t id;
} merge;

/* Heap order: higher score first, then the leftmost pair (run.c's strict >
 * while scanning left to right). Nodes keep their text order, so node index
 * order is position order. */
static int merge_before(const merge *a, const merge *b) {
    if (a->score != b->score) return a->score > b->score;
    return a->left < b->left;
}

static void heap_push(merge *h, size_t *n, merge m) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_before(&m, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = m;
}

static merge heap_pop(merge *h, size_t *n) {
    merge top = h[0];
    merge last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && merge_before(&h[c + 1], &h[c])) c++;
        if (!merge_before(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0) h[i] = last;
    return top;
}

typedef struct merge_state {
    const ts_tokenizer *t;
    int32_t *tok;      /* token at each node */
    uint32_t *next;    /* next live node, or UINT32_MAX */
    uint32_t *prev;    /* previous live node, or UINT32_MAX */
    uint32_t *version; /* bumped whenever a node changes or dies */
    merge *heap;
    size_t heap_n;
} merge_state;

#define NONE UINT32_MAX

/* Pushes the pair (a, next[a]) if it concatenates to a vocabulary piece
 * that run.c could pick: its test is `score > best` starting from -1e10. */
static void consider(merge_state *ms, uint32_t a) {
    uint32_t b = ms->next[a];
    if (a == NONE || b == NONE) return;
    const ts_tokenizer *t = ms->t;
    int32_t ta = ms->tok[a], tb = ms->tok[b];
    int32_t id = ts__tokenizer_lookup2(t, t->pieces + t->offsets[ta], t->lengths[ta],
                                       t->pieces + t->offsets[tb], t->lengths[tb]);
    if (id < 0 || !(t->scores[id] > -1e10f)) return;
    merge m = {t->scores[id], a, b, ms->version[a], ms->version[b], id};
    heap_push(ms->heap, &ms->heap_n, m);
}

ts_status ts_tokenizer_encode(const ts_tokenizer *t, const char *text, size_t text_len, int bos,
                              int eos, int32_t *tokens, size_t *n_tokens, ts_error *err) {
    if (!t || !tokens || !n_tokens || (!text && text_len > 0)) {
        return ts__fail(err, TS_ERR_ARG, "ts_tokenizer_encode: NULL argument");
    }
    size_t n = 0;
    if (bos) tokens[n++] = TS_TOKEN_BOS;
    if (text_len > 0 && t->space_id >= 0) tokens[n++] = t->space_id; /* dummy prefix */

    /* One token per UTF-8 character as run.c splits them: a byte plus up
     * to 3 following continuation bytes (stray continuations start their
     * own character, so invalid UTF-8 is handled, not rejected). */
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < text_len;) {
        size_t len = 1;
        while (len < 4 && i + len < text_len && (s[i + len] & 0xC0) == 0x80) len++;
        int32_t id = ts__tokenizer_lookup2(t, text + i, len, "", 0);
        if (id >= 0) {
            tokens[n++] = id;
        } else if (t->has_byte_tokens) {
            for (size_t k = 0; k < len; k++) tokens[n++] = (int32_t)s[i + k] + TS_TOKEN_FIRST_BYTE;
        } else {
            tokens[n++] = TS_TOKEN_UNK; /* run.c would emit ids past the vocab */
        }
        i += len;
    }

    /* Greedy merges over everything so far (run.c includes BOS too, though
     * no real vocabulary has a piece starting with BOS's). */
    size_t m = n;
    if (m >= 2) {
        if (m > UINT32_MAX - 1) return ts__fail(err, TS_ERR_ARG, "ts_tokenizer_encode: text too long");
        merge_state ms = {t, tokens, NULL, NULL, NULL, NULL, 0};
        ms.next = malloc(m * sizeof *ms.next);
        ms.prev = malloc(m * sizeof *ms.prev);
        ms.version = calloc(m, sizeof *ms.version);
        /* each merge pushes at most 2 pairs and removes a node */
        ms.heap = malloc(3 * m * sizeof *ms.heap);
        if (!ms.next || !ms.prev || !ms.version || !ms.heap) {
            free(ms.next);
            free(ms.prev);
            free(ms.version);
            free(ms.heap);
            return ts__fail(err, TS_ERR_NOMEM, "ts_tokenizer_encode: out of memory (%zu tokens)", m);
        }
        for (size_t i = 0; i < m; i++) {
            ms.next[i] = i + 1 < m ? (uint32_t)(i + 1) : NONE;
            ms.prev[i] = i > 0 ? (uint32_t)(i - 1) : NONE;
        }
        for (size_t i = 0; i + 1 < m; i++) consider(&ms, (uint32_t)i);
        while (ms.heap_n > 0) {
            merge best = heap_pop(ms.heap, &ms.heap_n);
            if (ms.version[best.left] != best.vleft || ms.version[best.right] != best.vright ||
                ms.next[best.left] != best.right) {
                continue; /* stale: a neighbour merged since it was pushed */
            }
            /* the left node becomes the merged token; the right one dies */
            uint32_t a = best.left, b = best.right;
            ms.tok[a] = best.id;
            ms.version[a]++;
            ms.version[b]++;
            ms.next[a] = ms.next[b];
            if (ms.next[b] != NONE) ms.prev[ms.next[b]] = a;
            if (ms.prev[a] != NONE) consider(&ms, ms.prev[a]);
            consider(&ms, a);
        }
        /* compact the surviving nodes, in order */
        size_t w = 0;
        for (uint32_t i = 0; i != NONE; i = ms.next[i]) tokens[w++] = ms.tok[i];
        n = w;
        free(ms.next);
        free(ms.prev);
        free(ms.version);
        free(ms.heap);
    }
    if (eos) tokens[n++] = TS_TOKEN_EOS;
    *n_tokens = n;
    return TS_OK;
}
