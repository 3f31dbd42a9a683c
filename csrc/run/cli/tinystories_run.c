/*
 * tinystories_run.c — a drop-in for llama2.c's `run` / `runq`.
 *
 *   tinystories-run checkpoint [-t temp] [-p topp] [-s seed] [-n steps]
 *                   [-i prompt] [-z tokenizer] [-m generate|chat] [-y system]
 *                   [-k kernels]
 *
 * Same flags, defaults and output as run.c: the pieces (prompt included) on
 * stdout, then a newline, then "achieved tok/s" on stderr. One binary reads
 * v0/v1 (fp32) and v2 (Q8_0) files. OMP_NUM_THREADS sets the thread count,
 * as for llama2.c's OpenMP build.
 *
 * -k is ours: the kernel set. "-k exact" (the scalar set) rounds every float
 * operation as run.c does, so fp32 files print llama2.c's bytes for every
 * seed; the default SIMD sets do for Q8_0 files, and for fp32 files in all
 * but rare samples (their sums are ordered differently).
 */
#include "tinystories.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(void) {
    fprintf(stderr, "Usage:   tinystories-run <checkpoint> [options]\n");
    fprintf(stderr, "Example: tinystories-run model.bin -n 256 -i \"Once upon a time\"\n");
    fprintf(stderr, "Options:\n");
    fprintf(stderr, "  -t <float>  temperature in [0,inf], default 1.0\n");
    fprintf(stderr, "  -p <float>  p value in top-p (nucleus) sampling in [0,1] default 0.9\n");
    fprintf(stderr, "  -s <int>    random seed, default time(NULL)\n");
    fprintf(stderr, "  -n <int>    number of steps to run for, default 256. 0 = max_seq_len\n");
    fprintf(stderr, "  -i <string> input prompt\n");
    fprintf(stderr, "  -z <string> optional path to custom tokenizer\n");
    fprintf(stderr, "  -m <string> mode: generate|chat, default: generate\n");
    fprintf(stderr, "  -y <string> (optional) system prompt in chat mode\n");
    fprintf(stderr, "  -k <string> kernels: exact (llama2.c's rounding), %s; default: the first\n",
            ts_kernels_available());
    exit(EXIT_FAILURE);
}

static int print_piece(void *user, int32_t token, const char *piece, size_t len, int is_prompt) {
    (void)user;
    (void)token;
    (void)is_prompt;
    if (len > 0) fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int main(int argc, char *argv[]) {
    const char *checkpoint_path = NULL;
    const char *tokenizer_path = "tokenizer.bin";
    float temperature = 1.0f;
    float topp = 0.9f;
    int steps = 256;
    const char *prompt = NULL;
    unsigned long long rng_seed = 0; /* 0: seed from the clock */
    const char *mode = "generate";
    const char *kernels = NULL; /* NULL: the fastest (or TINYSTORIES_KERNELS) */

    /* run.c's argument rules: checkpoint, then "-x value" pairs */
    if (argc >= 2) {
        checkpoint_path = argv[1];
    } else {
        usage();
    }
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc) usage();
        if (argv[i][0] != '-') usage();
        if (strlen(argv[i]) != 2) usage();
        switch (argv[i][1]) {
        case 't': temperature = atof(argv[i + 1]); break;
        case 'p': topp = atof(argv[i + 1]); break;
        case 's': rng_seed = atoi(argv[i + 1]); break; /* negative wraps, as in run.c */
        case 'n': steps = atoi(argv[i + 1]); break;
        case 'i': prompt = argv[i + 1]; break;
        case 'z': tokenizer_path = argv[i + 1]; break;
        case 'm': mode = argv[i + 1]; break;
        case 'y': break; /* system prompt: chat mode only */
        case 'k': kernels = strcmp(argv[i + 1], "exact") == 0 ? "scalar" : argv[i + 1]; break;
        default: usage();
        }
    }
    if (rng_seed <= 0) rng_seed = (unsigned int)time(NULL);
    if (temperature < 0.0) temperature = 0.0;
    if (topp < 0.0 || 1.0 < topp) topp = 0.9;
    if (steps < 0) steps = 0;
    if (strcmp(mode, "chat") == 0) {
        fprintf(stderr, "tinystories-run: chat mode is not supported (TinyStories models are not chat models)\n");
        return EXIT_FAILURE;
    }
    if (strcmp(mode, "generate") != 0) {
        fprintf(stderr, "unknown mode: %s\n", mode);
        usage();
    }
    if (prompt == NULL) prompt = "";

    ts_error err = {0};
    ts_model *model = NULL;
    ts_tokenizer *tokenizer = NULL;
    ts_session *session = NULL;
    ts_sampler *sampler = NULL;
    int32_t *tokens = NULL;
    int rc = EXIT_FAILURE;

    ts_load_options load = ts_load_options_default();
    load.kernels = kernels;
    if (ts_model_load_with(checkpoint_path, &load, &model, &err) != TS_OK) goto fail;
    const ts_config *cfg = ts_model_config(model);
    if (steps == 0 || steps > cfg->seq_len) steps = cfg->seq_len;
    if (ts_tokenizer_load(tokenizer_path, &tokenizer, &err) != TS_OK) goto fail;
    if (ts_tokenizer_vocab_size(tokenizer) != cfg->vocab_size) {
        /* run.c would read the first vocab_size entries of any larger file */
        snprintf(err.message, sizeof err.message,
                 "%s: tokenizer has %d tokens but %s has vocab_size %d; use the tokenizer the "
                 "model was trained with",
                 tokenizer_path, ts_tokenizer_vocab_size(tokenizer), checkpoint_path,
                 cfg->vocab_size);
        goto fail;
    }
    ts_sampling sp = {.temperature = temperature, .top_p = topp, .top_k = 0, .seed = rng_seed};
    if (ts_sampler_new(cfg->vocab_size, &sp, &sampler, &err) != TS_OK) goto fail;
    /* OMP_NUM_THREADS, as llama2.c's OpenMP build reads it; unset or <= 0:
     * the library's default */
    const char *omp = getenv("OMP_NUM_THREADS");
    int n_threads = omp ? atoi(omp) : 0;
    if (ts_session_new(model, n_threads, &session, &err) != TS_OK) goto fail;

    size_t text_len = strlen(prompt), n_tokens = 0;
    tokens = malloc(ts_tokenizer_max_tokens(text_len) * sizeof *tokens);
    if (!tokens) {
        snprintf(err.message, sizeof err.message, "out of memory");
        goto fail;
    }
    if (ts_tokenizer_encode(tokenizer, prompt, text_len, 1, 0, tokens, &n_tokens, &err) != TS_OK) {
        goto fail;
    }
    if (n_tokens > (size_t)cfg->seq_len) {
        /* run.c would print the prompt cut at the context and sample nothing */
        snprintf(err.message, sizeof err.message,
                 "the prompt is %zu tokens but the model's context is %d", n_tokens, cfg->seq_len);
        goto fail;
    }
    ts_generate_stats stats;
    if (ts_generate(session, tokenizer, sampler, tokens, n_tokens, steps, NULL, print_piece, NULL, &stats,
                    &err) != TS_OK) {
        goto fail;
    }
    printf("\n");
    if (stats.n_positions > 1) {
        /* pos - 1: the clock starts after the first position, as in run.c */
        double elapsed = stats.elapsed_s > 1e-9 ? stats.elapsed_s : 1e-9;
        fprintf(stderr, "achieved tok/s: %f\n", (stats.n_positions - 1) / elapsed);
    }
    rc = EXIT_SUCCESS;
    goto done;

fail:
    fflush(stdout);
    fprintf(stderr, "tinystories-run: %s\n", err.message);
done:
    free(tokens);
    ts_session_free(session);
    ts_sampler_free(sampler);
    ts_tokenizer_free(tokenizer);
    ts_model_free(model);
    return rc;
}
