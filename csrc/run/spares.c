/*
 * spares.c — what finished sequences leave to their model for the next:
 * KV caches, and forward batches (activations and a thread team).
 *
 * Both are mapped untouched and fault their pages in as they are used, and
 * a batch starts its threads: a new session paid that on every generation
 * (a 256-token prefill in a new session on stories15M, two threads, ran 9%
 * slower than with the spares; 128-token decodes on its Q8_0 file 3%).
 * So a freed session's cache and batch go back to the model, pages and
 * threads and all. A spare cache is not zeroed: the kernels never read a
 * position before it is written (see "KV cache" in internal.h). Spare
 * caches are bounded by the bytes their positions hold (TS_KV_SPARE_BYTES),
 * batches by count (TS_BATCH_SPARES); they go when the model does. A
 * forked child drops its parent's spare batches (their threads are not in
 * it).
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

/* The most memory a model keeps in spare caches (their touched pages). */
#define TS_KV_SPARE_BYTES (256ull << 20)
/* The most spare batches a model keeps. */
#define TS_BATCH_SPARES 2

typedef struct spare_kv {
    ts_kv kv;
    uint64_t bytes; /* what its positions hold */
} spare_kv;

typedef struct spare_batch {
    ts_batch *batch;
    pid_t pid; /* whose threads it has */
} spare_batch;

struct ts_spares {
    pthread_mutex_t lock;
    spare_kv *kv;
    int n_kv, cap_kv;
    uint64_t kv_bytes; /* of all the spare caches */
    spare_batch batches[TS_BATCH_SPARES];
    int n_batches;
};

ts_spares *ts__spares_new(void) {
    ts_spares *s = calloc(1, sizeof *s);
    if (s) pthread_mutex_init(&s->lock, NULL);
    return s;
}

static void kv_release(ts_kv kv) {
    ts__free_floats(kv.keys);
    ts__free_floats(kv.values);
}

void ts__spares_free(ts_spares *s) {
    if (!s) return;
    for (int i = 0; i < s->n_kv; i++) kv_release(s->kv[i].kv);
    free(s->kv);
    for (int i = 0; i < s->n_batches; i++) {
        if (s->batches[i].pid == getpid()) ts__batch_free(s->batches[i].batch);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* ------------------------------------------------------------ KV caches */

ts_kv ts__kv_take(const ts_model *m) {
    ts_spares *s = m->spares;
    ts_kv kv = {NULL, NULL, 0};
    if (s) {
        pthread_mutex_lock(&s->lock);
        if (s->n_kv > 0) {
            spare_kv *last = &s->kv[--s->n_kv];
            kv = last->kv;
            s->kv_bytes -= last->bytes;
        }
        pthread_mutex_unlock(&s->lock);
        if (kv.keys) return kv;
    }
    /* whole key blocks per kv head */
    uint64_t kv_seq = ts__kv_seq(m->config.seq_len);
    kv.keys = ts__calloc_floats((uint64_t)m->config.n_layers, kv_seq, (uint64_t)m->kv_dim);
    kv.values = ts__calloc_floats((uint64_t)m->config.n_layers, kv_seq, (uint64_t)m->kv_dim);
    if (!kv.keys || !kv.values) {
        kv_release(kv);
        kv.keys = kv.values = NULL;
    }
    return kv;
}

/* The bytes `positions` positions hold in a cache: each (layer, kv head)
 * span's pages up to them, keys in whole blocks, for keys and values. */
static uint64_t held_bytes(const ts_model *m, int positions) {
    uint64_t blocks = ((uint64_t)positions + TS_KEY_BLOCK - 1) / TS_KEY_BLOCK;
    uint64_t span = blocks * TS_KEY_BLOCK * (uint64_t)m->head_size * sizeof(float);
    span = (span + 4095) / 4096 * 4096;
    return 2 * span * (uint64_t)m->config.n_layers * (uint64_t)m->config.n_kv_heads;
}

void ts__kv_give(const ts_model *m, ts_kv kv) {
    if (!kv.keys) return;
    ts_spares *s = m->spares;
    uint64_t bytes = held_bytes(m, kv.positions);
    int kept = 0;
    /* an unused cache holds nothing worth keeping */
    if (s && kv.positions > 0) {
        pthread_mutex_lock(&s->lock);
        if (s->kv_bytes + bytes <= TS_KV_SPARE_BYTES) {
            if (s->n_kv == s->cap_kv) {
                int cap = s->cap_kv ? 2 * s->cap_kv : 8;
                spare_kv *grown = realloc(s->kv, (size_t)cap * sizeof *grown);
                if (grown) s->kv = grown, s->cap_kv = cap;
            }
            if (s->n_kv < s->cap_kv) {
                s->kv[s->n_kv++] = (spare_kv){kv, bytes};
                s->kv_bytes += bytes;
                kept = 1;
            }
        }
        pthread_mutex_unlock(&s->lock);
    }
    if (!kept) kv_release(kv);
}

/* -------------------------------------------------------------- batches */

ts_batch *ts__batch_take(const ts_model *m, int capacity, int n_threads) {
    ts_spares *s = m->spares;
    ts_batch *b = NULL;
    if (s) {
        pid_t pid = getpid();
        pthread_mutex_lock(&s->lock);
        for (int i = s->n_batches - 1; i >= 0 && !b; i--) {
            spare_batch *sb = &s->batches[i];
            int ours = sb->pid == pid, fits = ts__batch_capacity(sb->batch) == capacity &&
                                              ts__batch_threads_asked(sb->batch) == n_threads;
            if (ours && !fits) continue;
            if (ours) b = sb->batch; /* else a forked parent's: dropped, its threads are gone */
            s->batches[i] = s->batches[--s->n_batches];
        }
        pthread_mutex_unlock(&s->lock);
    }
    return b ? b : ts__batch_new(m, capacity, n_threads);
}

void ts__batch_give(const ts_model *m, ts_batch *b) {
    if (!b) return;
    ts_spares *s = m->spares;
    int kept = 0;
    if (s) {
        pthread_mutex_lock(&s->lock);
        if (s->n_batches < TS_BATCH_SPARES) {
            s->batches[s->n_batches++] = (spare_batch){b, getpid()};
            kept = 1;
        }
        pthread_mutex_unlock(&s->lock);
    }
    if (!kept) ts__batch_free(b);
}
