/*
 * pool.c — a persistent thread pool for the forward pass.
 *
 * A forward pass hands the pool a few dozen short jobs (each matmul, the
 * attention), so starting a job must cost well under a microsecond: workers
 * spin on a generation counter for a while after each job and only then
 * sleep on a condition variable. The caller takes the first range itself
 * and spins until the workers have finished theirs.
 */
#include "internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif

/* How long an idle worker keeps spinning before it sleeps. */
#define TS_POOL_SPIN_NS 200000

struct ts_pool {
    int n_threads;
    pthread_t *threads;
    atomic_uint generation; /* bumped once per job */
    atomic_int pending;     /* workers still running the current job */
    atomic_int sleepers;    /* workers blocked (or about to block) on `wake` */
    atomic_int stop;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    /* the current job; written before `generation` is bumped */
    ts_pool_fn fn;
    void *ctx;
    int n_items;
};

typedef struct worker_arg {
    ts_pool *pool;
    int index;
} worker_arg;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void run_range(ts_pool *pool, int index) {
    int n = pool->n_threads;
    int begin = (int)((int64_t)pool->n_items * index / n);
    int end = (int)((int64_t)pool->n_items * (index + 1) / n);
    if (begin < end) pool->fn(pool->ctx, begin, end, index);
}

static void *worker_main(void *p) {
    worker_arg arg = *(worker_arg *)p;
    free(p);
    ts_pool *pool = arg.pool;
    unsigned seen = 0;
    for (;;) {
        unsigned g = atomic_load(&pool->generation);
        if (g == seen) {
            /* spin a while, reading the clock only every 256 rounds */
            uint64_t deadline = now_ns() + TS_POOL_SPIN_NS;
            for (int round = 1; (g = atomic_load(&pool->generation)) == seen; round++) {
                if (atomic_load(&pool->stop)) return NULL;
                cpu_relax();
                if ((round & 255) == 0 && now_ns() > deadline) break;
            }
        }
        if (g == seen) {
            /* `sleepers` is raised before re-reading `generation`; the
             * caller bumps `generation` before reading `sleepers`, so one
             * of the two always sees the other. */
            pthread_mutex_lock(&pool->lock);
            atomic_fetch_add(&pool->sleepers, 1);
            while ((g = atomic_load(&pool->generation)) == seen && !atomic_load(&pool->stop)) {
                pthread_cond_wait(&pool->wake, &pool->lock);
            }
            atomic_fetch_sub(&pool->sleepers, 1);
            pthread_mutex_unlock(&pool->lock);
        }
        if (atomic_load(&pool->stop)) return NULL;
        seen = g;
        run_range(pool, arg.index);
        atomic_fetch_sub(&pool->pending, 1);
    }
}

int ts__default_threads(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 8) n = 8; /* the models this library targets stop scaling early */
    return (int)n;
}

ts_pool *ts__pool_new(int n_threads) {
    if (n_threads < 2) return NULL;
    ts_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    if (!pool->threads) {
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->n_threads = 1;
    for (int i = 1; i < n_threads; i++) {
        worker_arg *arg = malloc(sizeof *arg);
        if (!arg) break;
        arg->pool = pool;
        arg->index = i;
        if (pthread_create(&pool->threads[i], NULL, worker_main, arg) != 0) {
            free(arg);
            break;
        }
        pool->n_threads++;
    }
    if (pool->n_threads < 2) {
        ts__pool_free(pool);
        return NULL;
    }
    return pool;
}

void ts__pool_free(ts_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->lock);
    atomic_store(&pool->stop, 1);
    pthread_cond_broadcast(&pool->wake);
    pthread_mutex_unlock(&pool->lock);
    for (int i = 1; i < pool->n_threads; i++) pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->wake);
    pthread_mutex_destroy(&pool->lock);
    free(pool->threads);
    free(pool);
}

int ts__pool_threads(const ts_pool *pool) { return pool ? pool->n_threads : 1; }

void ts__pool_for(ts_pool *pool, int n_items, ts_pool_fn fn, void *ctx) {
    if (n_items <= 0) return;
    if (!pool || n_items == 1) {
        fn(ctx, 0, n_items, 0);
        return;
    }
    pool->fn = fn;
    pool->ctx = ctx;
    pool->n_items = n_items;
    atomic_store(&pool->pending, pool->n_threads - 1);
    atomic_fetch_add(&pool->generation, 1);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->lock);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
    }
    run_range(pool, 0);
    /* A worker that the OS has descheduled (a busy machine) may take a
     * while: after a short spin, give it the core. */
    for (int round = 1; atomic_load(&pool->pending) > 0; round++) {
        cpu_relax();
        if ((round & 1023) == 0) sched_yield();
    }
}
