/*
 * tinystories.h — a reentrant C library for llama2.c-format language models.
 *
 * The forward pass, tokenizer and sampler of llama2.c's run.c/runq.c, rebuilt
 * as a library: no globals, no exit(), no printing. Every function that can
 * fail returns a ts_status and, when `err` is not NULL, writes a readable
 * message into it.
 *
 * Objects and ownership
 *   ts_model      immutable weights. Load once, share freely
 *                 between threads and sessions. ts_model_load / ts_model_free.
 *   ts_tokenizer  immutable vocabulary (llama2.c tokenizer.bin). Thread-safe.
 *                 ts_tokenizer_load / ts_tokenizer_free.
 *   ts_session    per-sequence state: KV cache, activations. One thread at a
 *                 time. ts_session_new / ts_session_free. A session must be
 *                 freed before the model it was created from.
 *   ts_sampler    per-sequence sampling state (RNG, the tokens the penalties
 *                 count, scratch). One thread at a
 *                 time. ts_sampler_new / ts_sampler_free.
 *   ts_batch_generation  many sequences generated together (one forward pass
 *                 per step for all of them). One thread at a time.
 *                 ts_batch_generation_new / ts_batch_generation_free.
 *
 * Speed
 *   The arithmetic runs on a kernel set chosen at load from what the CPU
 *   reports (AVX-512, AVX2 or the portable scalar reference; see
 *   ts_load_options), tokens given to ts_session_eval together are
 *   evaluated as matrix-matrix products, and a per-session thread pool takes
 *   the large jobs (prefill, batches, big matrices).
 *
 * Compatibility
 *   For the same model, tokenizer, prompt, temperature, top-p and seed,
 *   ts_generate produces the same tokens as llama2.c's `run` (fp32 files) and
 *   `runq` (Q8_0 files). With the "scalar" kernels every float operation is
 *   run.c's, in its order. The SIMD sets give Q8_0 models bit-identical
 *   logits too (exact integer dot products, the element-wise steps in the
 *   reference order); for fp32 models they fuse multiply-adds and sum in
 *   another order, within 1e-4 of the reference (the golden outputs still
 *   match). A token's logits never depend on what else is in its batch.
 */
#ifndef TINYSTORIES_H
#define TINYSTORIES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */

typedef enum ts_status {
    TS_OK = 0,
    TS_ERR_IO = 1,        /* cannot open / stat / map / read a file        */
    TS_ERR_NOT_FOUND = 2, /* the path does not exist                       */
    TS_ERR_FORMAT = 3,    /* malformed, truncated or inconsistent file     */
    TS_ERR_NOMEM = 4,     /* an allocation failed                          */
    TS_ERR_ARG = 5,       /* an invalid argument (out-of-range id, ...)    */
    TS_ERR_CANCELLED = 6  /* a callback asked generation to stop           */
} ts_status;

/* Filled by a failing call. `message` is NUL-terminated and names the file
 * (when there is one) and the reason, e.g.
 * "model.bin: file is 1000 bytes, header implies 3762204". */
typedef struct ts_error {
    ts_status code;
    char message[512];
    int sys_errno; /* the errno behind a TS_ERR_IO or TS_ERR_NOT_FOUND (EISDIR
                    * for a directory), else 0 */
} ts_error;

/* A static English name for a status code ("format error", ...). */
const char *ts_status_name(ts_status code);

/* ----------------------------------------------------------------- model */

/* File formats understood by ts_model_load. */
enum {
    TS_FORMAT_V0 = 0, /* llama2.c legacy: 7-int header, fp32, run.c's format */
    TS_FORMAT_V1 = 1, /* "ak42" header version 1, fp32                       */
    TS_FORMAT_V2 = 2  /* "ak42" header version 2, Q8_0 int8 with group size */
};

typedef struct ts_config {
    int dim;               /* transformer width                           */
    int hidden_dim;        /* FFN width                                   */
    int n_layers;
    int n_heads;           /* query heads                                 */
    int n_kv_heads;        /* key/value heads (GQA/MQA when < n_heads)    */
    int vocab_size;
    int seq_len;           /* maximum context                             */
    int shared_classifier; /* 1: output weights are the token embeddings  */
    int version;           /* TS_FORMAT_V0 / V1 / V2                      */
    int group_size;        /* Q8_0 group size for v2 files, else 0        */
} ts_config;

typedef struct ts_model ts_model;

/* Memory-maps and validates a model file (v0, v1 or v2). The file size must
 * equal exactly what the header implies, and the per-session state the
 * header implies (key and value caches plus attention scores,
 * 4 * kv_seq * (2 * n_layers * kv_dim + n_heads) bytes, where kv_seq is
 * seq_len rounded up to a multiple of 16: the key cache holds whole blocks
 * of 16 positions) must not exceed the
 * larger of TS_SESSION_BYTES_MIN and TS_SESSION_FILE_FACTOR x the file size:
 * a v1/v2 header's seq_len does not affect the file size, so a corrupt value
 * would otherwise ask ts_session_new for unbounded memory. The same as
 * ts_model_load_with and default options. */
#define TS_SESSION_BYTES_MIN (1ull << 30)
#define TS_SESSION_FILE_FACTOR 4
ts_status ts_model_load(const char *path, ts_model **out, ts_error *err);

/* How weights are stored once loaded. */
enum {
    TS_QUANTIZE_NONE = 0, /* as in the file                                     */
    TS_QUANTIZE_Q8_0 = 1  /* fp32 files are quantized to Q8_0 on load, as
                           * llama2.c's export.py writes v2 files; v2 files are
                           * used as they are                                   */
};

typedef struct ts_load_options {
    /* Kernel set: "scalar" (the reference, rounding exactly like llama2.c
     * -O3), "avx2", "avx512" (x86-64), "neon" (arm64), or NULL / "" /
     * "auto": the environment variable TINYSTORIES_KERNELS when set, else
     * the fastest set this CPU runs. ts_kernels_available lists the sets
     * this CPU runs. */
    const char *kernels;
    int quantize;     /* TS_QUANTIZE_NONE or TS_QUANTIZE_Q8_0 */
    int group_size;   /* Q8_0 group size for quantize; 0: 64, halved until it
                       * divides dim (export.py's choice) */
    int n_threads;    /* sessions' default thread count when they pass <= 0;
                       * <= 0 here: one per core, at most 8 */
} ts_load_options;

/* Defaults: auto kernels, no quantization, automatic threads. */
ts_load_options ts_load_options_default(void);

/* ts_model_load with options (NULL: defaults). Fails with TS_ERR_ARG for an
 * unknown kernel set or one this CPU lacks. Quantizing on load allocates
 * the int8 weights (a quarter of the fp32 size). Loading a file already
 * loaded with the same options (the same device, inode, size and
 * modification time) returns the same model, counted: ts_model_free
 * releases it with its last handle. */
ts_status ts_model_load_with(const char *path, const ts_load_options *options, ts_model **out,
                             ts_error *err);
void ts_model_free(ts_model *model);
const ts_config *ts_model_config(const ts_model *model);

/* The kernel set the model runs ("scalar", "avx2", "avx512", "neon"). */
const char *ts_model_kernels(const ts_model *model);

/* The Q8_0 group size quantizing on load uses unless told otherwise, and
 * that llama2.c's export.py writes: the largest power of two up to 64 that
 * divides dim. (When it does not divide hidden_dim, w2's last
 * hidden_dim % group_size inputs are left out of its products, as runq
 * does; a smaller group size dividing both avoids that.) */
int ts_default_group_size(int dim);

/* The kernel sets this CPU runs, fastest first, space-separated
 * (e.g. "avx512 avx2 scalar"). */
const char *ts_kernels_available(void);

/* ------------------------------------------------------------- tokenizer */

typedef struct ts_tokenizer ts_tokenizer;

enum { TS_TOKEN_UNK = 0, TS_TOKEN_BOS = 1, TS_TOKEN_EOS = 2 };
/* sentencepiece's byte fallback: <0x00>..<0xFF> follow the three specials,
 * byte b at TS_TOKEN_FIRST_BYTE + b, when the vocabulary has them. */
enum { TS_TOKEN_FIRST_BYTE = 3, TS_TOKEN_BYTES = 256 };

/* Loads a llama2.c tokenizer.bin. The file does not store its vocabulary
 * size: entries are read up to the end of the file, and every length is
 * checked against the file size. */
ts_status ts_tokenizer_load(const char *path, ts_tokenizer **out, ts_error *err);
void ts_tokenizer_free(ts_tokenizer *tokenizer);
int ts_tokenizer_vocab_size(const ts_tokenizer *tokenizer);

/* Raw bytes of vocabulary entry `token` (not NUL-terminated). */
const char *ts_tokenizer_token(const ts_tokenizer *tokenizer, int32_t token, size_t *len);

/* The most tokens ts_tokenizer_encode can write for `text_len` bytes. */
size_t ts_tokenizer_max_tokens(size_t text_len);

/* Encodes like run.c: optional BOS, the sentencepiece dummy-prefix space
 * (for non-empty text), one token per UTF-8 character (byte tokens <0xXX>
 * as fallback, or <unk> when the vocabulary has no byte tokens), then
 * merges of adjacent pairs by highest score (leftmost first on ties),
 * optional EOS. `tokens` must hold ts_tokenizer_max_tokens(text_len). */
ts_status ts_tokenizer_encode(const ts_tokenizer *tokenizer, const char *text, size_t text_len,
                              int bos, int eos, int32_t *tokens, size_t *n_tokens, ts_error *err);

/* The bytes run.c would print for `token` following `prev`: the leading
 * space is dropped after BOS, <0xXX> becomes that byte, and a single
 * non-printable, non-space byte becomes the empty piece. Never NULL for a
 * valid id; *len receives the length (possibly 0). Returns NULL (and
 * *len = 0) for an id outside the vocabulary. */
const char *ts_tokenizer_decode_piece(const ts_tokenizer *tokenizer, int32_t prev, int32_t token,
                                      size_t *len);

/* --------------------------------------------------------------- session */

typedef struct ts_session ts_session;

/* Allocates the KV cache and activations for one sequence. n_threads <= 0
 * means the model's default (see ts_load_options); more than the CPUs
 * online counts as that many (the threads run each forward pass together
 * and wait for each other, so a thread without a CPU holds the rest up). */
ts_status ts_session_new(const ts_model *model, int n_threads, ts_session **out, ts_error *err);
void ts_session_free(ts_session *session);

/* Runs tokens[0..n) at positions pos..pos+n-1 through the model, filling the
 * KV cache. The tokens go through the model in blocks (matrix-matrix: the
 * weights are read once per block), and each token's logits are the same
 * as if it were evaluated alone. If `logits` is not NULL it receives
 * n * vocab_size floats (row i = logits after tokens[i]). The logits after
 * the last token are always available from ts_session_logits. pos may go
 * back (the positions after it are then overwritten) but not past the
 * positions evaluated so far: attention reads every one before it. Errors:
 * ids outside the vocabulary, pos < 0, pos + n > seq_len, pos beyond the
 * evaluated positions. */
ts_status ts_session_eval(ts_session *session, const int32_t *tokens, size_t n, int pos,
                          float *logits, ts_error *err);

/* The logits (vocab_size floats) after the most recent ts_session_eval;
 * owned by the session, overwritten by the next call. */
float *ts_session_logits(ts_session *session);

/* --------------------------------------------------------------- sampler */

/* How the next token is chosen. A zero-initialised struct (with a seed)
 * samples exactly as run.c at temperature 0: every addition to run.c is off
 * at 0. The steps, in order, on the logits after the last position:
 *   1. repetition_penalty (Hugging Face): for each distinct token in the
 *      sequence (the prompt with its BOS, and the sampled tokens), a
 *      positive logit is divided by it, a negative one multiplied;
 *   2. presence_penalty, frequency_penalty (OpenAI): a token sampled c > 0
 *      times loses presence + c * frequency from its logit (the prompt does
 *      not count);
 *   3. temperature 0, or min_p >= 1: the most likely token (the first on
 *      ties), nothing drawn;
 *   4. the logits divided by the temperature (skipped at 1, as run.c);
 *   5. top_k: only the k largest stay (ties: the lower id);
 *   6. min_p: only tokens whose probability is at least min_p times the
 *      most likely one's stay (logit >= max logit + ln(min_p));
 *   7. softmax, then run.c's draw: top_p's nucleus when 0 < top_p < 1, else
 *      from every token. */
typedef struct ts_sampling {
    float temperature;        /* 0: greedy (argmax)                          */
    float top_p;              /* nucleus; <= 0 or >= 1: off (as run.c)        */
    int top_k;                /* keep the k most likely; 0: off               */
    uint64_t seed;            /* xorshift state (run.c's -s); 0 is the RNG's
                               * fixed point and stands for TS_SEED_ZERO_STATE */
    float min_p;              /* in [0, 1]; 0: off                            */
    float repetition_penalty; /* > 0; 0 or 1: off                             */
    float presence_penalty;   /* finite; 0: off                               */
    float frequency_penalty;  /* finite; 0: off                               */
} ts_sampling;

/* The RNG state seed 0 runs with (the golden ratio's 64 fractional bits):
 * seeds >= 1 are run.c's states themselves, so seed 0 and this seed give
 * the same tokens. */
#define TS_SEED_ZERO_STATE 0x9E3779B97F4A7C15ull

typedef struct ts_sampler ts_sampler;

ts_status ts_sampler_new(int vocab_size, const ts_sampling *params, ts_sampler **out,
                         ts_error *err);
void ts_sampler_free(ts_sampler *sampler);

/* Records a token of the sequence for the penalties: `is_prompt` 1 for the
 * prompt's tokens (repetition only), 0 for sampled ones. Ids outside the
 * vocabulary are ignored. The generation functions call it themselves. */
void ts_sampler_accept(ts_sampler *sampler, int32_t token, int is_prompt);

/* Forgets the recorded tokens (the RNG state stays): a new sequence. */
void ts_sampler_clear(ts_sampler *sampler);

/* Picks the next token from `logits` (vocab_size floats; modified in place,
 * as run.c does). Does not record it: see ts_sampler_accept. */
int32_t ts_sampler_sample(ts_sampler *sampler, float *logits);

/* ------------------------------------------------------------ generation */

/* Why a generation ended (ts_token_event.finish_reason). */
enum {
    TS_FINISH_STOP = 1,     /* a stop token (by default BOS) was sampled       */
    TS_FINISH_LENGTH = 2,   /* `steps` positions, or the end of the context    */
    TS_FINISH_CANCELLED = 3 /* ts_batch_generation_cancel                      */
};

/* The most log-probabilities a generation reports per token. */
enum { TS_MAX_TOP_LOGPROBS = 20 };

/* What a generation does besides sampling. Zero-initialised (or NULL where
 * a function takes a pointer): run.c's loop. */
typedef struct ts_generate_options {
    /* Sampling one of these ends the sequence (the token is not printed).
     * NULL: {BOS}, as run.c; non-NULL with n_stop_tokens 0: none. */
    const int32_t *stop_tokens;
    size_t n_stop_tokens;
    /* 1: when the context is full, keep the first n_keep tokens (at least
     * 1, the BOS), drop the oldest of the rest so that half the context is
     * free, and evaluate what remains afresh; generation goes on until
     * `steps` positions. 0: stop at the end of the context (run.c). */
    int context_shift;
    int n_keep;
    /* 1: each sampled token's event carries its log-probability (the
     * log-softmax of the model's logits, before penalties and temperature)
     * and the top_logprobs (0..TS_MAX_TOP_LOGPROBS) most likely tokens'. */
    int logprobs;
    int top_logprobs;
} ts_generate_options;

/* Called once per position whose token is printed, in order. `is_prompt`
 * is 1 while the token comes from the prompt. Return non-zero to stop;
 * ts_generate then returns TS_ERR_CANCELLED. */
typedef int (*ts_token_callback)(void *user, int32_t token, const char *piece, size_t len,
                                 int is_prompt);

typedef struct ts_generate_stats {
    int n_positions;   /* positions evaluated (run.c's final `pos`) */
    int n_generated;   /* tokens sampled (not taken from the prompt) */
    int n_shifts;      /* context shifts */
    int finish_reason; /* TS_FINISH_*, or 0 while running */
    double elapsed_s;  /* from the end of the first position to the end */
} ts_generate_stats;

/* The same loop, one printed token at a time (for streaming). */
typedef struct ts_generation ts_generation;

typedef struct ts_token_event {
    int done;          /* 1: generation ended (see finish_reason); the
                        * fields below are unset                            */
    int finish_reason; /* with done: TS_FINISH_*                            */
    int32_t token;     /* the token printed at this position                */
    const char *piece; /* its bytes (valid until the next call), len bytes  */
    size_t len;
    int is_prompt;     /* 1 while the token comes from the prompt           */
    /* With ts_generate_options.logprobs, for a sampled token (valid until
     * the next call): */
    float logprob;
    int n_top;                 /* top_logprobs, or fewer for a small vocabulary */
    const int32_t *top_tokens; /* the most likely first (ties: the lower id) */
    const float *top_logprobs;
} ts_token_event;

/* Prepares run.c's loop over `prompt` (copied) for at most `steps`
 * positions (prompt included; without context_shift clamped to seq_len).
 * `options` may be NULL. The session and sampler are borrowed and must
 * outlive it; the sampler's recorded tokens are cleared and the prompt's
 * recorded. */
ts_status ts_generation_start(ts_session *session, const ts_tokenizer *tokenizer,
                              ts_sampler *sampler, const int32_t *prompt, size_t n_prompt,
                              int steps, const ts_generate_options *options,
                              ts_generation **out, ts_error *err);
/* Evaluates positions until the next printed token, or the end. */
ts_status ts_generation_next(ts_generation *generation, ts_token_event *event, ts_error *err);
ts_generate_stats ts_generation_stats(const ts_generation *generation);
void ts_generation_free(ts_generation *generation);

/* run.c's generation loop. Starting from a fresh position 0, evaluates the
 * prompt and samples until a stop token is sampled or `steps` positions
 * (as in ts_generation_start; 0 evaluates nothing — run.c's "-n 0 means
 * the whole context" is the CLI's to apply) have been evaluated. The
 * session's KV cache is overwritten. `options` and `stats` may be NULL. */
ts_status ts_generate(ts_session *session, const ts_tokenizer *tokenizer, ts_sampler *sampler,
                      const int32_t *prompt, size_t n_prompt, int steps,
                      const ts_generate_options *options, ts_token_callback on_token, void *user,
                      ts_generate_stats *stats, ts_error *err);

/* ---------------------------------------------------- batched generation */

/* Many generations run together: every step evaluates one position of each
 * active sequence in one forward pass (the weights are read once per step
 * for all of them), and a finished sequence frees its slot for the next
 * queued request. Each request's tokens are exactly those ts_generate
 * produces for it alone with the same sampling parameters and options.
 * Requests may be added between steps (continuous batching). */
typedef struct ts_batch_generation ts_batch_generation;

/* `max_batch` sequences at most run at once (KV cache for each). */
ts_status ts_batch_generation_new(const ts_model *model, const ts_tokenizer *tokenizer,
                                  int max_batch, int n_threads, ts_batch_generation **out,
                                  ts_error *err);
void ts_batch_generation_free(ts_batch_generation *batch);

/* Queues a request (prompt and options copied; steps as in
 * ts_generation_start; options may be NULL). *id receives its index: 0, 1,
 * 2, ... in the order added. */
ts_status ts_batch_generation_add(ts_batch_generation *batch, const int32_t *prompt,
                                  size_t n_prompt, int steps, const ts_sampling *sampling,
                                  const ts_generate_options *options, int *id, ts_error *err);

/* Ends request `id` (running or queued) at the next step, whose event for
 * it is done with TS_FINISH_CANCELLED. A request already ended is left as
 * it is. TS_ERR_ARG for an id never added. */
ts_status ts_batch_generation_cancel(ts_batch_generation *batch, int id, ts_error *err);

typedef struct ts_batch_event {
    int id;               /* the request */
    ts_token_event event; /* as ts_generation_next's (is_prompt always 0), valid
                           * until the next step */
} ts_batch_event;

/* Advances every active sequence by one sampled token, starting queued
 * requests in free slots (the prompt's tokens are not reported: a
 * request's first event is its first sampled token). A long prompt is evaluated over several steps
 * (64 tokens a step), so that it holds the other sequences up little; its
 * request has no event until then. Writes at most one event per slot
 * (max_batch) into `events`, *n_events of them; a request's last event is
 * done. *active
 * receives how many requests are still running or queued afterwards: 0
 * when all are done. */
ts_status ts_batch_generation_step(ts_batch_generation *batch, ts_batch_event *events,
                                   size_t *n_events, int *active, ts_error *err);

/* ------------------------------------------------------ benchmark support */

enum { TS_STREAM_MAX_THREADS = 64 };

/* The machine's streaming read bandwidth in GB/s (1e9 bytes per second):
 * n_threads threads (1..TS_STREAM_MAX_THREADS) each summing its own buffer
 * of bytes / n_threads, all at once, the best of `repeats` passes; -1 when
 * memory or threads run out or an argument is out of range. A decode that
 * reads every weight once per token runs at most this / (weight bytes)
 * tokens per second; the bench reports each decode row's fraction. */
double ts_stream_read_gbps(size_t bytes, int n_threads, int repeats);

#ifdef __cplusplus
}
#endif

#endif /* TINYSTORIES_H */
