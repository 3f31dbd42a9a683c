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

/* Records the errno behind a failure ts__fail just described:
 * `return ts__with_errno(err, ts__fail(err, ...), e);`. */
static inline ts_status ts__with_errno(ts_error *err, ts_status code, int e) {
    if (err) err->sys_errno = e;
    return code;
}

/* Reentrant text for an errno value ("no such file or directory"). */
const char *ts__errno_text(int e);

/* a*b*c zeroed floats starting on a cache line (team threads writing
 * neighbouring rows or heads then share no line, and a key block's row is
 * one line), or NULL when the size overflows or memory runs out. calloc
 * underneath, so a large block's pages stay untouched, and out of the RSS,
 * until used. Free with ts__free_floats. */
float *ts__calloc_floats(uint64_t a, uint64_t b, uint64_t c);
void ts__free_floats(float *p);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t ts__now_ns(void);

/* -------------------------------------------------------------- KV cache
 * A sequence's KV cache holds, per layer and kv head (in that order), one
 * span of ts__kv_seq(seq_len) * head_size floats for the keys and one for
 * the values: layer l, kv head h starts at (l * n_kv_heads + h) * kv_seq *
 * head_size in either cache. Values are position-major (element i of
 * position t at t * head_size + i). Keys go in blocks of TS_KEY_BLOCK
 * positions, transposed within a block (ts__key_index), so the scores of a
 * block's positions are lane-parallel sums over i, q[i] * (row i of the
 * block), with no horizontal reductions or transposes. kv_seq rounds
 * seq_len up to whole blocks so the last block is whole in memory; its
 * lanes past the positions in use hold junk (zeros or an earlier
 * sequence's keys), which the kernels leave out. */
enum { TS_KEY_BLOCK = 16 };

/* Positions per kv head in a cache: seq_len rounded up to whole blocks. */
static inline size_t ts__kv_seq(int seq_len) {
    return ((size_t)seq_len + TS_KEY_BLOCK - 1) / TS_KEY_BLOCK * TS_KEY_BLOCK;
}

/* Where element i of position t's key lies in its kv head's span. */
static inline size_t ts__key_index(int t, int i, int head_size) {
    return (size_t)(t / TS_KEY_BLOCK) * TS_KEY_BLOCK * (size_t)head_size +
           (size_t)i * TS_KEY_BLOCK + (size_t)(t % TS_KEY_BLOCK);
}

/* A sequence's KV cache (spares.c): keys and values as above, and the
 * most positions it has held, which are the pages it has touched. */
typedef struct ts_kv {
    float *keys;   /* (n_layers, n_kv_heads, kv_seq / TS_KEY_BLOCK, head_size, TS_KEY_BLOCK) */
    float *values; /* (n_layers, n_kv_heads, kv_seq, head_size) */
    int positions;
} ts_kv;

/* What finished sequences leave to their model for the next (spares.c). */
typedef struct ts_spares ts_spares;
ts_spares *ts__spares_new(void);
void ts__spares_free(ts_spares *s);

/* A cache for a new sequence: a spare one of m's, with an earlier
 * sequence's junk in it (never read: a position is written before it is
 * attended to), else a new mapping; keys NULL when out of memory. */
ts_kv ts__kv_take(const ts_model *m);
/* Hands a sequence's cache back to m: kept as a spare while m's spare
 * caches hold at most TS_KV_SPARE_BYTES (spares.c), else freed. */
void ts__kv_give(const ts_model *m, ts_kv kv);

/* --------------------------------------------------------------- kernels
 * The numeric primitives of the forward pass, as a table of functions. One
 * table per instruction set: kernels_scalar.c is the reference, rounding
 * exactly like llama2.c built with gcc -O3 (sequential float sums, no FMA);
 * kernels_avx2.c, kernels_avx512.c (x86-64) and kernels_neon.c (arm64) are
 * faster and agree with it to about 1e-6 relative (the Q8 integer dot products are exact in every set).
 *
 * Batch invariance: every kernel computes each output with the same
 * sequence of operations whatever the number of tokens, the row range and
 * the other rows in the call. A token's logits therefore do not depend on
 * whether it was evaluated alone, in a prefill block or in a batch of
 * sequences (only on the kernel set). */
/* The first panels of the matrix a panel matmul's caller multiplies next:
 * `lines` cache lines from `at` ({NULL, 0}: none). Within a call, each
 * group of panels streams the next group in under its token tiles; this
 * lets the last group do the same for the next call, so that a batch's
 * next matrix does not start on memory. */
typedef struct ts_panels_next {
    const void *at;
    int lines;
} ts_panels_next;

typedef struct ts_kernels {
    const char *name; /* "scalar", "avx2", "avx512", "neon" */

    /* out[t*d + i] = sum_j w[i*n + j] * x[t*n + j] for tokens t < nt and
     * rows i0 <= i < i1. */
    void (*matmul_f32)(float *out, const float *x, int nt, const float *w, int n, int d, int i0,
                       int i1);
    /* The same with int8 weights and inputs in groups of gs, one fp32 scale
     * per group: per group an exact int32 dot product, then
     * out += ((float)dot * w_scale) * x_scale, groups in order. Token t's
     * input is xq + t*n with scales xs + t*(n/gs). Weight groups run over the
     * flattened matrix and the last n % gs inputs are ignored (runq's loop).
     * `row_sums[g*d + i]` is the sum of row i's int8 weights under input
     * group g (kernels that shift the input to unsigned need it). */
    void (*matmul_q8)(float *out, const int8_t *xq, const float *xs, int nt, const int8_t *wq,
                      const float *ws, const int32_t *row_sums, int n, int d, int gs, int i0,
                      int i1);
    /* The same two products with the weights packed in panels of TS_PANEL
     * rows (pack.c): wp is ts__pack_f32's, or ts__pack_q8's values and
     * scales sp; xsum[t * (n / gs) + g] is the sum of token t's group g of
     * xq (the panels hold w + 128). Rows i0..i1-1 of the output are
     * written, and nothing else. NULL in sets that only read row-major
     * weights. The Q8 one is bit-identical to matmul_q8; the fp32 one
     * agrees with scalar to about 1e-6 relative and is batch-invariant.
     * `next`: what the caller multiplies next, which the last panels'
     * token tiles stream into the cache (several tokens only). */
    void (*matmul_f32_panels)(float *out, const float *x, int nt, const float *wp, int n, int d,
                              int i0, int i1, ts_panels_next next);
    void (*matmul_q8_panels)(float *out, const int8_t *xq, const float *xs, const int32_t *xsum,
                             int nt, const uint8_t *wp, const float *sp, int n, int d, int gs,
                             int i0, int i1, ts_panels_next next);
    /* Symmetric Q8_0 quantization of x's n / gs whole groups (a tail of
     * n % gs values is left alone, as runq does). Exact in every set. */
    void (*quantize_q8)(int8_t *q, float *s, const float *x, int n, int gs);
    /* o = w * x / rms(x); o may alias x. */
    void (*rmsnorm)(float *o, const float *x, const float *w, int n);
    /* h[i] = silu(h[i]) * g[i] (the SwiGLU gate). */
    void (*swiglu)(float *h, const float *g, int n);
    /* The same, and ts_k_softmax, rounding exactly like the scalar set
     * (NULL where a set has none: the scalar ones serve). */
    void (*swiglu_exact)(float *h, const float *g, int n);
    void (*softmax_exact)(float *x, int n);
    /* The index of the first largest of x[0..n), n >= 1, as run.c's loop
     * finds it (`x[i] > x[best]`): NaNs never win, unless x[0] is one, and
     * then nothing beats it. Exact in every set; a greedy step's whole
     * sampling cost (30 us on 32,000 logits, scalar). */
    int32_t (*argmax)(const float *x, int n);
    /* Adds x[0..n) to *s exactly as the loop `*s += x[i]` would, and
     * returns 1, when that sum cannot depend on the order of x: *s in
     * [2^-100, 2^100), every x finite and >= 0 (-0 too), every partial sum
     * in *s's binade, and no x on a rounding tie. Otherwise returns 0 and
     * leaves *s alone. Why it works: within one binade the floats are the
     * multiples of one ulp, so fl(s + x) = s + round(x / ulp) * ulp, and
     * those are integer sums. Exact, with the same answers, in every set;
     * NULL: the scalar one. */
    int (*sum_unordered)(const float *x, int n, float *s);
    /* Copies each x[i] >= floor, and i, to values and indices (room for n
     * each), in index order; returns how many, with their least in *lo and
     * greatest in *hi (inf and -inf for none). NaNs are never copied.
     * Top-p's candidates. Exact in every set; NULL: the scalar one. */
    int (*select_at_least)(const float *x, int n, float floor, float *values, int32_t *indices,
                           float *lo, float *hi);
    /* Top-p's first look at a peaked vocabulary: *max = the largest of x,
     * v[i] within TS_EXP_APPROX_REL of expf(x[i] - *max) (relative) where
     * x[i] - *max >= -87, else 0, and *sum = the sum of those expf in
     * order, bit for bit as ts_k_softmax has it. Returns 0 (and nothing
     * meaningful) where x holds a NaN, its largest is infinite, or more
     * than `most` of x lie within `reach` of it. NULL where a set has none:
     * the sampler then takes the exact softmax. */
    int (*exp_sum_approx)(const float *x, int n, float reach, int most, float *v, float *max,
                          float *sum);
    /* out[j] = expf(x[index[j]] - max) / sum for j < m, bit for bit as
     * ts_k_softmax rounds it (a candidate's exact probability). NULL: the
     * scalar one. */
    void (*probs_exact)(const float *x, const int32_t *index, int m, float max, float sum,
                        float *out);
    /* One attention head for one query: att[t] = softmax_t(q . k_t / sqrt(hs))
     * over t < n_pos, then out = sum_t att[t] v_t. `keys` and `values` are
     * one kv head's part of a KV cache (see "KV cache" below): element i of
     * key t at keys[ts__key_index(t, i, hs)], of value t at
     * values[t*hs + i]. Key lanes of the last block past n_pos hold junk
     * that must not reach the result. att is scratch for n_pos rounded up
     * to a whole TS_KEY_BLOCK floats. */
    void (*attention)(float *out, float *att, const float *q, const float *keys,
                      const float *values, int n_pos, int head_size);
    /* The same, rounding exactly like the scalar set (Q8_0 models use it:
     * see ts__batch_new). */
    void (*attention_exact)(float *out, float *att, const float *q, const float *keys,
                            const float *values, int n_pos, int head_size);
} ts_kernels;

extern const ts_kernels ts_kernels_scalar;

/* The reference softmax (in place, max subtracted); the sampler always uses
 * it, so sampling matches run.c whatever the kernel set. */
void ts_k_softmax(float *x, int n);
/* The scalar set's sum_unordered: the reference. */
int ts_k_sum_unordered(const float *x, int n, float *s);
/* The SIMD sets' sum_unordered start here: 0 unless s0 lies in
 * [2^-100, 2^100); else s0's binade's ulp and 1 / ulp, and s0 / ulp (in
 * [2^23, 2^24)), all from s0's bits. */
int ts_k_binade(float s0, float *ulp, float *inv_ulp, int64_t *start);
/* The bound exp_sum_approx keeps (its kernels reach 2^-23). */
#define TS_EXP_APPROX_REL 0x1p-22f
/* The scalar set's probs_exact: the reference. */
void ts_k_probs_exact(const float *x, const int32_t *index, int m, float max, float sum,
                      float *out);
/* The scalar set's select_at_least. */
int ts_k_select_at_least(const float *x, int n, float floor, float *values, int32_t *indices,
                         float *lo, float *hi);
/* *s += x[i] for i < n in order, bit for bit, through sum_unordered on
 * blocks wherever it can (a sequential float sum costs an add's latency per
 * element; the integer sums run at the vector units' throughput). */
void ts_k_sum_in_order(int (*sum_unordered)(const float *, int, float *), const float *x, int n,
                       float *s);
#if defined(__x86_64__) || defined(_M_X64)
extern const ts_kernels ts_kernels_avx2;
extern const ts_kernels ts_kernels_avx512;
/* kernels_avx2.c's row-major fp32 product and element-wise kernels, which
 * the avx512 set shares. */
void ts__avx2_matmul_f32(float *out, const float *x, int nt, const float *w, int n, int d, int i0,
                         int i1);
void ts__avx2_rmsnorm(float *o, const float *x, const float *w, int n);
void ts__avx2_swiglu(float *h, const float *g, int n);
void ts__avx2_attention(float *out, float *att, const float *q, const float *keys,
                        const float *values, int n_pos, int head_size);
void ts__attention_exact(float *out, float *att, const float *q, const float *keys,
                         const float *values, int n_pos, int head_size);
#endif
#if defined(__aarch64__)
extern const ts_kernels ts_kernels_neon;
#endif

/* The kernel set called `name` ("scalar", "avx2", "avx512", "neon"), or
 * for NULL or "" the environment's TINYSTORIES_KERNELS, else the fastest
 * set this CPU runs. Fails for an unknown name or a set the CPU lacks. */
ts_status ts__kernels_select(const char *name, const ts_kernels **out, ts_error *err);

/* ---------------------------------------------------------------- panels
 * Weight matrices packed for the panel matmuls: see pack.c for the
 * layouts. Every panel starts on a cache line. */
enum { TS_PANEL = 16 };

size_t ts__panel_count(int d);
/* fp32: ts__panel_count(d) * n * TS_PANEL floats into dst. */
void ts__pack_f32(float *dst, const float *w, int d, int n);
/* Q8_0 (gs a multiple of 4): ts__panel_count(d) * (n / gs) * gs * TS_PANEL
 * bytes into dq, ts__panel_count(d) * (n / gs) * TS_PANEL scales into ds. */
void ts__pack_q8(uint8_t *dq, float *ds, const int8_t *q, const float *s, int d, int n, int gs);

/* --------------------------------------------------------------- weights */

/* One weight matrix W (d rows, n columns). Exactly one representation is
 * set: row-major `f32` for fp32 weights; row-major `q`+`s` for Q8_0 (int8
 * values and one fp32 scale per group of `group_size` values over the
 * flattened matrix, with `row_sums`: see ts_kernels.matmul_q8); or, when the
 * model's kernel set reads panels, `f32_panels` or `q8_panels` +
 * `q8_panel_scales` (pack.c). */
typedef struct ts_weight {
    const float *f32;
    const int8_t *q;
    const float *s;
    const int32_t *row_sums;
    const float *f32_panels;
    const uint8_t *q8_panels;
    const float *q8_panel_scales;
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
    const float *token_embedding;  /* (vocab, dim) fp32 models' lookup table, or NULL */
    const int8_t *embedding_q8;    /* Q8_0: (vocab, dim) values, row-major, and */
    const float *embedding_scales; /* their scales: each row dequantized when looked up */
    const float *rms_final;        /* (dim) */
    ts_layer *layers;              /* n_layers entries */
    ts_weight wcls;                /* (vocab, dim) */
    float *owned_scales;           /* Q8_0: all scales (v2: copied to be aligned) */
    int8_t *owned_q8;              /* quantized on load: all int8 values */
    int32_t *owned_row_sums;       /* Q8_0: every weight's row_sums */
    int8_t *owned_embedding_q8;    /* Q8_0 packed after quantizing on load: the table's values */
    float *owned_embedding_scales; /* Q8_0 packed: the table's scales */
    void *owned_panels;            /* every matrix packed (pack.c), when the kernels read panels */
    size_t owned_panels_size;
    const ts_kernels *kernels;     /* chosen at load */
    int n_threads_default;         /* n_threads <= 0 resolves to this */
    /* Loads of one file with the same options share one model (model.c):
     * the identity of what was loaded, and how many handles are out. */
    struct ts_model_key {
        uint64_t dev, ino, size, mtime_ns;
        int quantize, group_size, n_threads;
        const ts_kernels *kernels;
    } key;
    int refs;
    ts_model *next_loaded;
    ts_spares *spares;       /* finished sequences' caches and batches, for the next ones */
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
    int has_byte_tokens; /* entries TS_TOKEN_FIRST_BYTE.. are <0x00>..<0xFF> */
    char byte_pieces[512]; /* byte b as a NUL-terminated 1-byte string */
};

/* Id of the piece a‖b (either may be empty), or -1. */
int32_t ts__tokenizer_lookup2(const ts_tokenizer *t, const char *a, size_t la, const char *b,
                              size_t lb);

/* ----------------------------------------------------------- thread pool */

/* A persistent pool: n_threads - 1 workers plus the calling thread, which
 * run the forward pass as a team (pool.c). Workers spin briefly between
 * jobs, then sleep. */
typedef struct ts_pool ts_pool;

ts_pool *ts__pool_new(int n_threads); /* NULL when threads cannot start */
void ts__pool_free(ts_pool *pool);
/* Runs fn(ctx, thread, n_threads) on every thread of the pool at once (the
 * caller is thread 0; a NULL pool runs fn(ctx, 0, 1)), returning when all
 * have returned. The members share out the work themselves and wait for
 * each other with ts__pool_barrier, which every member must call equally
 * often. Nobody can take over a member's part, so a descheduled member
 * stalls the others: returns 1 when some member waited long at a barrier
 * (a sign of more runnable threads than cores), else 0. */
typedef void (*ts_team_fn)(void *ctx, int thread, int n_threads);
int ts__pool_team(ts_pool *pool, ts_team_fn fn, void *ctx);
/* ts__pool_team, or fn(ctx, 0, 1) on the caller alone while teams are
 * paused: after TS_TEAM_MAX_STALLS team jobs in a row stalled, every pool
 * of the process runs alone for a while (see pool.c). The way to run a
 * forward pass; a NULL pool runs alone. */
void ts__pool_run(ts_pool *pool, ts_team_fn fn, void *ctx);
/* Ends a pause of the teams at once: for tests, whose teams of more threads
 * than cores stall and would make the next ones run alone. */
void ts__pool_resume(void);
/* Waits until every member of the current team job has reached this
 * barrier; memory written before it is visible to all after it. A no-op
 * for a NULL pool. */
void ts__pool_barrier(ts_pool *pool, int thread);
int ts__pool_threads(const ts_pool *pool);
/* The thread count that n_threads <= 0 means on this machine. */
int ts__default_threads(void);
/* The CPUs online. */
int ts__online_cpus(void);
/* Threads runnable on the machine now, the caller's included (Linux's
 * /proc/loadavg); -1 where unknown. pool.c counts them before it tries a
 * team again after a pause. */
int ts__runnable_threads(void);

/* ---------------------------------------------------------------- forward */

/* One token to evaluate: its id, its position and its sequence's KV cache
 * (n_layers * kv_seq * kv_dim floats each, laid out as "KV cache" above
 * says). `logits` receives
 * vocab_size floats, or is NULL when the caller does not need them. */
typedef struct ts_row {
    int32_t token;
    int pos;
    float *key_cache;
    float *value_cache;
    float *logits;
} ts_row;

/* Activations for up to `capacity` tokens evaluated together, a thread
 * pool, and scratch. Used by a session for prefill and by batched
 * generation for many sequences. One thread at a time. */
typedef struct ts_batch ts_batch;

/* The threads a session or batched generation asking for n_threads gets:
 * n_threads <= 0 means the model's default, and more than the CPUs online
 * count as that many (a team member without a CPU holds the rest up). */
int ts__team_threads(const ts_model *model, int n_threads);
/* n_threads as given (<= 0: the model's default), so that tests can form
 * teams larger than the machine. */
ts_batch *ts__batch_new(const ts_model *model, int capacity, int n_threads);
void ts__batch_free(ts_batch *batch);
/* The same through m's spares (spares.c): a spare batch of this capacity
 * and n_threads when there is one, threads started and pages in; given
 * back (NULL: nothing), kept for the next or freed. */
ts_batch *ts__batch_take(const ts_model *m, int capacity, int n_threads);
void ts__batch_give(const ts_model *m, ts_batch *b);
/* What ts__batch_new was given. */
int ts__batch_capacity(const ts_batch *batch);
int ts__batch_threads_asked(const ts_batch *batch);
/* Runs rows[0..n) (n <= capacity; ids and positions already validated)
 * through the model, writing each row's K/V into its cache before any
 * attention, so rows of one sequence at consecutive positions may share a
 * call (prefill). */
void ts__forward(ts_batch *batch, const ts_row *rows, int n);

/* ---------------------------------------------------------------- session */

struct ts_session {
    const ts_model *model;
    ts_batch *batch;    /* capacity: a prefill block */
    float *logits;      /* (vocab) after the last token evaluated */
    ts_kv kv;           /* see "KV cache" */
    int positions;      /* 0..positions-1 are this session's in the cache */
};

/* --------------------------------------------------------------- sequence */

/* run.c's generation loop for one sequence (sequence.c), advanced by a
 * driver (generate.c: on a session, or in a batch). Each round the driver
 * evaluates what ts__sequence_pending returns at KV-cache positions
 * cached.., then calls ts__sequence_step on the last one's logits.
 *
 * The KV cache holds a window of the sequence: tokens[0..keep) then
 * tokens[start..pos]. Without a context shift start == keep, so window
 * position i holds tokens[i]; a shift moves `start` on and evaluates the
 * window's tail afresh. */
typedef struct ts_sequence {
    int32_t *tokens;       /* (cap) the prompt, then each printed token; tokens[pos] is
                            * the one evaluated next */
    size_t cap;
    size_t n_prompt;
    int vocab_size;
    int seq_len;
    int steps;             /* positions to evaluate at most, prompt included */
    int pos;               /* run.c's `pos` */
    int cached;            /* window positions in the KV cache */
    int keep;              /* the window: tokens[0..keep) + tokens[start..pos] */
    int start;
    int context_shift;
    int n_shifts;
    int32_t *stop_tokens;  /* (n_stop_tokens) */
    size_t n_stop_tokens;
    int logprobs;          /* ts_generate_options' */
    int top_logprobs;
    float *raw_logits;     /* (vocab_size) the logits before sampling, with logprobs */
    int32_t *top_tokens;   /* (TS_MAX_TOP_LOGPROBS), with logprobs */
    float *top_values;     /* (TS_MAX_TOP_LOGPROBS), with logprobs */
    int n_generated;
    int done;
    int finish_reason;     /* TS_FINISH_*, once done */
} ts_sequence;

/* Checks and copies the prompt and options (NULL: defaults). */
ts_status ts__sequence_init(ts_sequence *q, const ts_config *config, const ts_tokenizer *tokenizer,
                            const int32_t *prompt, size_t n_prompt, int steps,
                            const ts_generate_options *options, ts_error *err);
/* Frees the buffers (idempotent); the fields stay readable. */
void ts__sequence_release(ts_sequence *q);
/* For test_sampler: top-p's candidates for `logits` (the temperature
 * applied) from the exact softmax and from the first look (its gate left
 * open), compared: 1 when the counts, tokens and probabilities are the
 * same, -1 when not, 0 where the kernel set has no first look or top-p is
 * off. The counts into *n_exact and *n_look; `prob` is vocab_size floats
 * of scratch; logits is not changed. */
int ts__sampler_first_look_check(ts_sampler *s, const float *logits, float *prob, int *n_exact,
                                 int *n_look);

/* Clears the sampler's record and records the prompt (penalties). */
void ts__sequence_attach(const ts_sequence *q, ts_sampler *sampler);
/* The tokens to evaluate before the next step, at window positions
 * q->cached..: their count (0: none; the logits at pos are there or the
 * sequence is done) and, in *tokens, where they start. May shift the
 * context. The driver adds what it evaluated to q->cached: all of them, or
 * a first part (a prompt in chunks), the rest then pending next time. */
int ts__sequence_pending(ts_sequence *q, const int32_t **tokens);
/* Whether ts__sequence_step may run: done, or the logits it needs are in. */
int ts__sequence_ready(const ts_sequence *q);
/* One turn of run.c's loop on the logits after position pos (modified).
 * Returns 1 with the printed token in `event`, or 0 with a done event. */
int ts__sequence_step(ts_sequence *q, ts_sampler *sampler, float *logits,
                      const ts_tokenizer *tokenizer, ts_token_event *event);
/* Ends the sequence now (cancellation); no-op once done. */
void ts__sequence_finish(ts_sequence *q, int finish_reason);

#endif /* TINYSTORIES_INTERNAL_H */
