/*
 * bandwidth.c — the machine's streaming read bandwidth, for the bench: a
 * decode step reads every weight once, so a memory-bound decode can at
 * best run at (this bandwidth) / (weight bytes) tokens per second.
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static float sum_avx512(const float *x, size_t n) {
    __m512 a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 128 <= n; i += 128) {
        for (int k = 0; k < 8; k++) a[k] = _mm512_add_ps(a[k], _mm512_load_ps(x + i + 16 * k));
    }
    for (int k = 1; k < 8; k++) a[0] = _mm512_add_ps(a[0], a[k]);
    float s = _mm512_reduce_add_ps(a[0]);
    for (; i < n; i++) s += x[i];
    return s;
}
#endif

/* Eight independent chains, so the adds never wait on each other. */
static float sum_plain(const float *x, size_t n) {
    float a[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        for (int k = 0; k < 8; k++) a[k] += x[i + k];
    }
    float s = 0;
    for (int k = 0; k < 8; k++) s += a[k];
    for (; i < n; i++) s += x[i];
    return s;
}

typedef struct stream_job {
    pthread_barrier_t start, end;
    float *buffers[TS_STREAM_MAX_THREADS];
    size_t floats;
    int repeats;
    int wide;
    /* each reader's clock around each pass: the main thread, a third
     * thread on two cores, may be scheduled late */
    uint64_t began[TS_STREAM_MAX_THREADS], ended[TS_STREAM_MAX_THREADS];
    volatile float sink;
} stream_job;

typedef struct stream_arg {
    stream_job *job;
    int index;
} stream_arg;

static void *stream_reader(void *p) {
    stream_arg *a = p;
    stream_job *job = a->job;
    float total = 0;
    for (int r = 0; r < job->repeats; r++) {
        pthread_barrier_wait(&job->start);
        job->began[a->index] = ts__now_ns();
#if defined(__x86_64__)
        total += job->wide ? sum_avx512(job->buffers[a->index], job->floats)
                           : sum_plain(job->buffers[a->index], job->floats);
#else
        total += sum_plain(job->buffers[a->index], job->floats);
#endif
        job->ended[a->index] = ts__now_ns();
        pthread_barrier_wait(&job->end);
    }
    job->sink = total;
    return NULL;
}

double ts_stream_read_gbps(size_t bytes, int n_threads, int repeats) {
    if (n_threads < 1 || n_threads > TS_STREAM_MAX_THREADS || repeats < 1) return -1.0;
    stream_job job = {0};
    job.floats = bytes / sizeof(float) / (size_t)n_threads / 128 * 128;
    if (job.floats == 0) job.floats = 128;
    job.repeats = repeats;
#if defined(__x86_64__)
    __builtin_cpu_init();
    job.wide = __builtin_cpu_supports("avx512f");
#endif
    int ok = 1;
    for (int t = 0; t < n_threads; t++) {
        job.buffers[t] = ts__calloc_floats(job.floats, 1, 1);
        if (!job.buffers[t]) {
            ok = 0;
            continue;
        }
        for (size_t i = 0; i < job.floats; i++) job.buffers[t][i] = 1.0f; /* touch every page */
    }
    pthread_t threads[TS_STREAM_MAX_THREADS];
    stream_arg args[TS_STREAM_MAX_THREADS];
    int started = 0;
    double best = 0;
    if (ok && pthread_barrier_init(&job.start, NULL, (unsigned)n_threads + 1) == 0) {
        pthread_barrier_init(&job.end, NULL, (unsigned)n_threads + 1);
        for (; started < n_threads; started++) {
            args[started] = (stream_arg){&job, started};
            if (pthread_create(&threads[started], NULL, stream_reader, &args[started]) != 0) break;
        }
        if (started == n_threads) {
            for (int r = 0; r < repeats; r++) {
                pthread_barrier_wait(&job.start);
                pthread_barrier_wait(&job.end);
                uint64_t t0 = job.began[0], t1 = job.ended[0];
                for (int t = 1; t < n_threads; t++) {
                    t0 = job.began[t] < t0 ? job.began[t] : t0;
                    t1 = job.ended[t] > t1 ? job.ended[t] : t1;
                }
                double s = (double)(t1 - t0) * 1e-9;
                double rate = (double)job.floats * sizeof(float) * n_threads / s / 1e9;
                if (rate > best) best = rate;
            }
            for (int t = 0; t < started; t++) pthread_join(threads[t], NULL);
        } else {
            best = -1.0; /* threads that could not start: the others wait forever */
            for (int t = 0; t < started; t++) pthread_cancel(threads[t]), pthread_join(threads[t], NULL);
        }
        pthread_barrier_destroy(&job.start);
        pthread_barrier_destroy(&job.end);
    } else {
        best = -1.0;
    }
    for (int t = 0; t < n_threads; t++) ts__free_floats(job.buffers[t]);
    return best;
}
