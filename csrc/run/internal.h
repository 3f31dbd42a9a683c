/*
 * internal.h — private structures and helpers shared by the library's
 * translation units. Nothing here is part of the public API.
 */
#ifndef TINYSTORIES_INTERNAL_H
#define TINYSTORIES_INTERNAL_H

#include "tinystories.h"

#include <stdint.h>
#include <stddef.h>

/* ---------------------------------------------------------------- errors */

/* Fills `err` (when not NULL) with `code` and a printf-style message and
 * returns `code`, so failures read `return ts__fail(err, ...);`. */
ts_status ts__fail(ts_error *err, ts_status code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Reentrant text for an errno value ("no such file or directory"). */
const char *ts__errno_text(int e);

/* --------------------------------------------------------------- weights */

/* One weight matrix W (d rows, n columns), row-major. Exactly one of the two
 * representations is set: `f32` for v0/v1 files, `q`+`s` for Q8_0 (v2):
 * int8 values and one fp32 scale per group of `group_size` values. */
typedef struct ts_weight {
    const float *f32;
    const int8_t *q;
    const float *s;
} ts_weight;

typedef struct ts_layer {
    const float *rms_att; /* (dim) */
    const float *rms_ffn; /* (dim) */
    ts_weight wq;         /* (dim, dim)        */
    ts_weight wk;         /* (kv_dim, dim)     */
    ts_weight wv;         /* (kv_dim, dim)     */
    ts_weight wo;         /* (dim, dim)        */
    ts_weight w1;         /* (hidden_dim, dim) */
    ts_weight w2;         /* (dim, hidden_dim) */
    ts_weight w3;         /* (hidden_dim, dim) */
} ts_layer;

struct ts_model {
    ts_config config;
    int head_size;
    int kv_dim;
    int quantized;                 /* 1 for v2 (Q8_0) */
    void *map;                     /* the read-only mapping of the file */
    size_t map_size;
    const float *token_embedding;  /* (vocab, dim) fp32, for the lookup */
    const float *rms_final;        /* (dim) */
    ts_layer *layers;              /* n_layers entries */
    ts_weight wcls;                /* (vocab, dim) */
    float *owned_embedding;        /* v2: dequantized token embedding */
    float *owned_scales;           /* v2: all scales, copied to be aligned */
};

/* ------------------------------------------------------------ tokenizer */

struct ts_tokenizer {
    int vocab_size;
    int max_token_length;
    float *scores;       /* vocab_size */
    uint32_t *offsets;   /* vocab_size: start of each piece in `pieces` */
    uint32_t *lengths;   /* vocab_size */
    char *pieces;        /* all pieces, each followed by a NUL */
    int32_t *table;      /* open-addressing hash: piece -> id, -1 = empty */
    size_t table_mask;   /* table size - 1 (a power of two) */
    int32_t space_id;    /* id of " " or -1 (no dummy prefix) */
    int has_byte_tokens; /* entries 3..258 are <0x00>..<0xFF> */
    char byte_pieces[512]; /* byte b as a NUL-terminated 1-byte string */
};

/* Id of the piece a‖b (either may be empty), or -1. */
int32_t ts__tokenizer_lookup2(const ts_tokenizer *t, const char *a, size_t la, const char *b,
                              size_t lb);

/* ---------------------------------------------------------------- session */

struct ts_session {
    const ts_model *model;
    float *x;      /* (dim) the residual stream */
    float *xb;     /* (dim) */
    float *xb2;    /* (dim) */
    float *hb;     /* (hidden_dim) */
    float *hb2;    /* (hidden_dim) */
    float *q;      /* (dim) */
    float *att;    /* (n_heads, seq_len) */
    float *logits; /* (vocab) */
    float *key_cache;   /* (n_layers, seq_len, kv_dim) */
    float *value_cache; /* (n_layers, seq_len, kv_dim) */
    int8_t *xq;    /* Q8_0 activations, (max(dim, hidden_dim)) */
    float *xs;     /* their scales */
};

/* Runs one token at `pos` (both already validated); logits land in
 * session->logits. */
void ts__forward(ts_session *s, int32_t token, int pos);

/* --------------------------------------------------------------- kernels
 * The numeric primitives of the forward pass and sampler. kernels_scalar.c
 * holds the reference versions, which round exactly like llama2.c built
 * with gcc -O3 (sequential float sums, no FMA). Faster variants must be
 * checked against them. */

/* out[i] = sum_j w[i*n + j] * x[j] for i < d. */
void ts_k_matmul_f32(float *out, const float *x, const float *w, int n, int d);
/* The same with int8 weights and int8 input, both in groups of gs with one
 * fp32 scale per group: per group an exact int32 dot product, then
 * out += (float)dot * w_scale * x_scale. Weight groups run over the
 * flattened matrix (gs need not divide n; see the definition). */
void ts_k_matmul_q8(float *out, const int8_t *xq, const float *xs, const int8_t *wq,
                    const float *ws, int n, int d, int gs);
/* Symmetric Q8_0 quantization of x's n / gs whole groups (a tail of
 * n % gs values is left alone, as runq does). */
void ts_k_quantize_q8(int8_t *q, float *s, const float *x, int n, int gs);
/* o = w * x / rms(x); o may alias x. */
void ts_k_rmsnorm(float *o, const float *x, const float *w, int n);
/* In-place softmax with max subtraction. */
void ts_k_softmax(float *x, int n);

#endif /* TINYSTORIES_INTERNAL_H */
