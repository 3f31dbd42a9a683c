/*
 * test_hardening.c — reliability checks of the C API (issue 7).
 *
 *   test_hardening [MODEL_DIR]
 *
 * Always: the session-memory bound for headers with a huge seq_len, FIFOs
 * and other non-regular paths refused without blocking, and a long loop of
 * load / generate / free over valid and invalid inputs (run under
 * LeakSanitizer or valgrind, any leak fails). With MODEL_DIR (model5000.bin,
 * model5000_q80.bin, tok105.bin): the same loop on the real models, and 8
 * threads generating at once on one shared model and tokenizer, each with
 * its own session, sampler and seed, giving exactly the sequential results.
 */
#define _GNU_SOURCE
#include "tinystories.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"


/* A v1 file (fp32, shared classifier) of the given dims with small weights. */
static void write_v1(const char *path, int dim, int hidden, int layers, int heads, int kv_heads,
                     int vocab, int seq_len) {
    unsigned char header[256] = {0};
    int32_t fields[9] = {0x616b3432, 1, dim, hidden, layers, heads, kv_heads, vocab, seq_len};
    memcpy(header, fields, sizeof fields);
    header[36] = 1;
    size_t kv = (size_t)dim / heads * kv_heads;
    size_t floats = (size_t)vocab * dim + 2 * (size_t)layers * dim + dim +
                    (size_t)layers * (2 * dim * dim + 2 * dim * kv + 3 * (size_t)dim * hidden);
    size_t n = sizeof header + floats * sizeof(float);
    unsigned char *data = malloc(n);
    memcpy(data, header, sizeof header);
    float *w = (float *)(data + sizeof header);
    uint32_t s = 1;
    for (size_t i = 0; i < floats; i++) {
        s = s * 1664525u + 1013904223u;
        w[i] = ((float)(s >> 8) / 16777216.0f - 0.5f) * 0.4f;
    }
    write_bytes(path, data, n);
    free(data);
}

static int contains(const char *haystack, const char *needle) { return strstr(haystack, needle) != NULL; }

/* ------------------------------------------------------- seq_len bound */

static void test_seq_len_bound(void) {
    ts_model *m = NULL;
    ts_error err = {0};
    /* 1 layer, kv_dim 8: 72 bytes per position; 2^31-1 positions is 144 GiB */
    write_v1(tmp_path("huge_seq.bin"), 16, 32, 1, 2, 1, 40, 0x7fffffff);
    CHECK(ts_model_load(tmp_path("huge_seq.bin"), &m, &err) == TS_ERR_FORMAT && m == NULL);
    CHECK(contains(err.message, "seq_len 2147483647") && contains(err.message, "KV cache"));
    CHECK(contains(err.message, "huge_seq.bin"));
    /* just past 1 GiB is refused, just below is fine (and allocated lazily);
     * the caches hold whole blocks of 16 positions, so one more position
     * than a whole number of blocks costs 16 */
    int under = (int)((1ull << 30) / 72 / 16 * 16), over = under + 1;
    write_v1(tmp_path("over_seq.bin"), 16, 32, 1, 2, 1, 40, over);
    CHECK(ts_model_load(tmp_path("over_seq.bin"), &m, &err) == TS_ERR_FORMAT && m == NULL);
    write_v1(tmp_path("under_seq.bin"), 16, 32, 1, 2, 1, 40, under);
    CHECK(ts_model_load(tmp_path("under_seq.bin"), &m, &err) == TS_OK);
    if (m) {
        ts_session *s = NULL;
        CHECK(ts_session_new(m, 1, &s, &err) == TS_OK);
        int32_t toks[3] = {1, 5, 7};
        CHECK(s && ts_session_eval(s, toks, 3, 0, NULL, &err) == TS_OK);
        ts_session_free(s);
        ts_model_free(m);
    }
    unlink(tmp_path("huge_seq.bin"));
    unlink(tmp_path("over_seq.bin"));
    unlink(tmp_path("under_seq.bin"));
}

/* ------------------------------------------------- non-regular paths */

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "test_hardening: a loader blocked on a FIFO\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    _exit(3);
}

static void test_special_files(void) {
    signal(SIGALRM, on_alarm);
    alarm(10); /* a blocking open() would hang here forever */
    const char *fifo = tmp_path("fifo");
    CHECK(mkfifo(fifo, 0600) == 0);
    ts_model *m = NULL;
    ts_tokenizer *t = NULL;
    ts_error err = {0};
    CHECK(ts_model_load(fifo, &m, &err) == TS_ERR_IO && m == NULL);
    CHECK(contains(err.message, "fifo") && contains(err.message, "not a regular file"));
    CHECK(ts_tokenizer_load(fifo, &t, &err) == TS_ERR_IO && t == NULL);
    CHECK(contains(err.message, "fifo") && contains(err.message, "not a regular file"));
    unlink(fifo);
    CHECK(ts_tokenizer_load("/dev/null", &t, &err) == TS_ERR_IO && t == NULL);
    CHECK(ts_tokenizer_load(tmpdir, &t, &err) == TS_ERR_IO && contains(err.message, "directory"));
    CHECK(err.sys_errno == EISDIR);
    CHECK(ts_model_load("/dev/zero", &m, &err) == TS_ERR_IO && m == NULL);
    alarm(0);
}

/* --------------------------------------------------------- leak loop */

static int count_tokens(void *user, int32_t token, const char *piece, size_t len, int is_prompt) {
    (void)token, (void)piece, (void)len, (void)is_prompt;
    return ++*(int *)user >= 1000; /* never reached: the steps end first */
}

/* One full life cycle; returns the number of tokens printed, or -1. */
static int life_cycle(const char *model_path, const char *tok_path, uint64_t seed, int steps,
                      int32_t *out, int cap) {
    ts_model *m = NULL;
    ts_tokenizer *t = NULL;
    ts_session *s = NULL;
    ts_sampler *sp = NULL;
    ts_generation *g = NULL;
    ts_error err = {0};
    int n = -1;
    if (ts_model_load(model_path, &m, &err) != TS_OK) goto done;
    if (ts_tokenizer_load(tok_path, &t, &err) != TS_OK) goto done;
    if (ts_session_new(m, 1, &s, &err) != TS_OK) goto done;
    ts_sampling params = {.temperature = 0.8f, .top_p = 0.9f, .top_k = 0, .seed = seed};
    if (ts_sampler_new(ts_model_config(m)->vocab_size, &params, &sp, &err) != TS_OK) goto done;
    int32_t prompt[64];
    size_t np = 0;
    if (ts_tokenizer_encode(t, "Once upon a time", 16, 1, 0, prompt, &np, &err) != TS_OK) goto done;
    /* half the time through the stepwise API, abandoned midway */
    if (seed % 2) {
        if (ts_generation_start(s, t, sp, prompt, np, steps, NULL, &g, &err) != TS_OK) goto done;
        ts_token_event ev;
        for (n = 0; n < cap && ts_generation_next(g, &ev, &err) == TS_OK && !ev.done; n++) {
            out[n] = ev.token;
        }
    } else {
        int count = 0;
        ts_generate_stats stats;
        if (ts_generate(s, t, sp, prompt, np, steps, NULL, count_tokens, &count, &stats, &err) != TS_OK) {
            goto done;
        }
        n = count;
    }
done:
    if (n < 0) fprintf(stderr, "life_cycle(%s): %s\n", model_path, err.message);
    ts_generation_free(g);
    ts_sampler_free(sp);
    ts_session_free(s);
    ts_tokenizer_free(t);
    ts_model_free(m);
    return n;
}

static void test_leak_loop(const char *dir) {
    /* invalid inputs: every early return frees what it took */
    static const unsigned char garbage[] = "ak42\x02\0\0\0 definitely not a model";
    write_bytes(tmp_path("garbage.bin"), garbage, sizeof garbage);
    write_v1(tmp_path("small.bin"), 16, 32, 1, 2, 1, 40, 8);
    static const unsigned char bad_tok[] = {4, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0, 0, 'a', 'b'};
    write_bytes(tmp_path("bad.tok"), bad_tok, sizeof bad_tok);
    for (int i = 0; i < 200; i++) {
        ts_model *m = NULL;
        ts_tokenizer *t = NULL;
        ts_error err;
        CHECK(ts_model_load(tmp_path("garbage.bin"), &m, &err) == TS_ERR_FORMAT);
        CHECK(ts_tokenizer_load(tmp_path("bad.tok"), &t, &err) == TS_ERR_FORMAT);
        CHECK(ts_model_load(tmp_path("missing.bin"), &m, &err) == TS_ERR_NOT_FOUND);
        CHECK(ts_model_load(tmp_path("small.bin"), &m, &err) == TS_OK);
        ts_sampling bad = {.temperature = -1.0f, .top_p = 0.9f, .top_k = 0, .seed = 1};
        ts_sampler *sp = NULL;
        CHECK(ts_sampler_new(40, &bad, &sp, &err) == TS_ERR_ARG && sp == NULL);
        ts_model_free(m);
    }
    unlink(tmp_path("garbage.bin"));
    unlink(tmp_path("small.bin"));
    unlink(tmp_path("bad.tok"));
    if (!dir) return;
    char model[1024], q80[1024], tok[1024];
    snprintf(model, sizeof model, "%s/model5000.bin", dir);
    snprintf(q80, sizeof q80, "%s/model5000_q80.bin", dir);
    snprintf(tok, sizeof tok, "%s/tok105.bin", dir);
    int32_t out[64];
    for (uint64_t i = 1; i <= 40; i++) {
        CHECK(life_cycle(i % 4 < 2 ? model : q80, tok, i, 24, out, 10) >= 0);
    }
}

/* --------------------------------------------------------- threads */

enum { N_THREADS = 8, STEPS = 96 };

typedef struct job {
    const ts_model *model;
    const ts_tokenizer *tokenizer;
    uint64_t seed;
    int32_t tokens[STEPS];
    int n;
    int ok;
} job;

static void run_job(job *j) {
    ts_session *s = NULL;
    ts_sampler *sp = NULL;
    ts_generation *g = NULL;
    ts_error err;
    j->ok = 0;
    j->n = 0;
    ts_sampling params = {.temperature = 1.0f, .top_p = 0.9f, .top_k = 0, .seed = j->seed};
    if (ts_session_new(j->model, 1, &s, &err) != TS_OK) goto done;
    if (ts_sampler_new(ts_model_config(j->model)->vocab_size, &params, &sp, &err) != TS_OK) goto done;
    int32_t bos = TS_TOKEN_BOS;
    if (ts_generation_start(s, j->tokenizer, sp, &bos, 1, STEPS, NULL, &g, &err) != TS_OK) goto done;
    ts_token_event ev;
    while (j->n < STEPS && ts_generation_next(g, &ev, &err) == TS_OK && !ev.done) {
        j->tokens[j->n++] = ev.token;
    }
    j->ok = 1;
done:
    ts_generation_free(g);
    ts_sampler_free(sp);
    ts_session_free(s);
}

static void *thread_main(void *arg) {
    run_job(arg);
    return NULL;
}

static void test_threads(const char *dir) {
    char path[1024], tok[1024];
    snprintf(tok, sizeof tok, "%s/tok105.bin", dir);
    ts_tokenizer *t = NULL;
    ts_error err;
    CHECK(ts_tokenizer_load(tok, &t, &err) == TS_OK);
    const char *names[] = {"model5000.bin", "model5000_q80.bin"};
    for (int k = 0; k < 2 && t; k++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        ts_model *m = NULL;
        CHECK(ts_model_load(path, &m, &err) == TS_OK);
        if (!m) continue;
        static job seq[N_THREADS], par[N_THREADS];
        for (int i = 0; i < N_THREADS; i++) {
            seq[i] = (job){m, t, 1000 + (uint64_t)i, {0}, 0, 0};
            par[i] = seq[i];
            run_job(&seq[i]);
            CHECK(seq[i].ok && seq[i].n > 0);
        }
        pthread_t th[N_THREADS];
        for (int i = 0; i < N_THREADS; i++) CHECK(pthread_create(&th[i], NULL, thread_main, &par[i]) == 0);
        for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
        int distinct = 0;
        for (int i = 0; i < N_THREADS; i++) {
            CHECK(par[i].ok && par[i].n == seq[i].n);
            CHECK(memcmp(par[i].tokens, seq[i].tokens, sizeof seq[i].tokens) == 0);
            distinct += i > 0 && memcmp(seq[i].tokens, seq[0].tokens, sizeof seq[0].tokens) != 0;
        }
        CHECK(distinct > 0); /* the seeds matter: the comparison is not vacuous */
        ts_model_free(m);
    }
    ts_tokenizer_free(t);
}

int main(int argc, char **argv) {
    snprintf(tmpdir, sizeof tmpdir, "%s/ts_hard_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    const char *dir = argc > 1 ? argv[1] : getenv("TS_TEST_MODEL_DIR");
    if (dir && !*dir) dir = NULL;
    test_seq_len_bound();
    test_special_files();
    test_leak_loop(dir);
    if (dir) {
        test_threads(dir);
    } else {
        printf("note: no model directory given, skipping the real-model checks\n");
    }
    rmdir(tmpdir);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
