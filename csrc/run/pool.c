/*
 * pool.c — a persistent thread pool that runs the forward pass as a team.
 *
 * A job (ts__pool_team) runs one function on every thread at once, each on
 * its own part of the work, meeting the others at barriers. Starting a job
 * must cost well under a microsecond (a decode token is a few dozen
 * microseconds): workers spin on a generation counter for a while after
 * each job and only then sleep on a condition variable. A barrier is one
 * store to the thread's own arrival counter (its own cache line) and a wait
 * for the others' counters to catch up, so two threads pass one in about
 * one cache-line transfer each way.
 *
 * Nobody can take over a member's part, so a member the OS deschedules
 * holds the others up; long waits are reported (see TS_TEAM_STALL_NS) and
 * the caller (session.c) then runs without the pool for a while.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_getcpu, pthread_setaffinity_np */
#endif
#include "internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
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
#define TS_POOL_MAX_THREADS 64
/* A team member waiting at a barrier longer than this, and longer than
 * TS_TEAM_STALL_RATIO times its own work since the last barrier, starts
 * yielding its CPU; the job stalled when that happened and some member
 * spent more than 1 / TS_TEAM_STALL_SHARE of the job waiting. Members of a
 * team drift apart by some fraction of a step (an interrupt, cache misses,
 * memory traffic: on a model that streams its weights from DRAM a step is
 * a millisecond and the drift hundreds of microseconds), now and then; a
 * member that is not running at all (more runnable threads than cores)
 * keeps the others waiting for time slices, a good part of every job. */
#define TS_TEAM_STALL_NS 100000
#define TS_TEAM_STALL_RATIO 3
#define TS_TEAM_STALL_SHARE 3

/* A job runs as a team of the pool's threads, whose barriers stall (see
 * TS_TEAM_STALL_NS) whenever a member is not running. TS_TEAM_MAX_STALLS
 * jobs in a row that stalled mean more runnable threads than cores: then
 * every pool of the process runs its jobs on the calling thread alone for a
 * while (which also lets the idle workers sleep) before a team is tried
 * again. How long depends on the team's record since the last pause. Jobs
 * without a stall for TS_TEAM_CALM_NS or more (several of the kernel's time
 * slices), and TS_TEAM_CALM_RATIO times as long as the stalled ones, mean
 * bursts of other work that came and went, such as a server's event loop
 * writing its chunks: the pause is TS_TEAM_OFF_BURST_NS. Otherwise the cores
 * are shared all along (another busy process time-slices with a member,
 * which stalls about as long as it runs): the pause doubles, from
 * TS_TEAM_OFF_MIN_NS up to TS_TEAM_OFF_MAX_NS. (A pause that only grew
 * ratcheted up to 2 s under a server's periodic bursts.) When a pause ends,
 * the machine's runnable threads are counted before a team is tried again
 * (team_off). The process-wide clock makes short calls (each with a new
 * session and pool) learn from the ones before. The first team job of a
 * pool, and the first after running alone, may wait for sleeping workers
 * to wake: its stall is not counted. A job's results do not depend on who
 * runs it (forward.c). */
#define TS_TEAM_MAX_STALLS 2
#define TS_TEAM_CALM_NS 10000000ull      /* 10 ms */
#define TS_TEAM_CALM_RATIO 4
#define TS_TEAM_OFF_BURST_NS 2000000ull  /* 2 ms */
#define TS_TEAM_OFF_MIN_NS 20000000ull   /* 20 ms */
#define TS_TEAM_OFF_MAX_NS 2000000000ull /* 2 s */

static _Atomic uint64_t team_off_until_ns; /* no team before this; 0: no pause to check */
static _Atomic uint64_t team_off_ns; /* the last pause's length */

typedef struct arrival_count {
    alignas(64) _Atomic uint64_t count; /* barriers this thread has reached */
    uint64_t left_ns;                   /* when it left the last one (or began the job) */
    uint64_t waited_ns;                 /* this job's waits, those long enough to be timed */
} arrival_count;

struct ts_pool {
    int n_threads;
    pthread_t *threads;
    alignas(64) atomic_uint generation; /* bumped once per job */
    atomic_int sleepers;                /* workers blocked (or about to block) on `wake` */
    atomic_int stop;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    /* the current job, written before its generation is published */
    ts_team_fn fn;
    void *ctx;
    int caller_cpu;              /* the CPU the caller started it on, or -1 */
    alignas(64) atomic_int done; /* workers finished with it */
    atomic_int stalled;          /* a member waited long at a barrier */
    /* ts__pool_run's record (the caller's thread only) */
    int team_stalls;  /* consecutive team jobs that stalled */
    int team_waking;  /* the next team job may find the workers asleep */
    uint64_t calm_ns;    /* time in team jobs without a stall, since the last pause */
    uint64_t stalled_ns; /* time in team jobs that stalled, since the last pause */
    arrival_count arrivals[TS_POOL_MAX_THREADS];
};

typedef struct worker_arg {
    ts_pool *pool;
    int index;
} worker_arg;

uint64_t ts__now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* A worker sharing a CPU with the caller makes a job run at one CPU's speed
 * (and stalls a team job) until the kernel's load balancing moves one of
 * them, which takes milliseconds (we saw a new or just-woken worker put on
 * the caller's CPU for the first ten or so tokens of a decode). So a worker
 * that finds itself on the caller's CPU at the start of a job moves off it
 * at once: it narrows its affinity to the other allowed CPUs, which
 * migrates it, and restores the mask, which leaves it where it is. No
 * thread stays pinned. */
static void leave_cpu(int caller_cpu) {
#if defined(__linux__)
    if (caller_cpu < 0 || sched_getcpu() != caller_cpu) return;
    cpu_set_t allowed, others;
    if (pthread_getaffinity_np(pthread_self(), sizeof allowed, &allowed) != 0) return;
    others = allowed;
    CPU_CLR(caller_cpu, &others);
    if (CPU_COUNT(&others) == 0) return;
    if (pthread_setaffinity_np(pthread_self(), sizeof others, &others) == 0) {
        pthread_setaffinity_np(pthread_self(), sizeof allowed, &allowed);
    }
#else
    (void)caller_cpu;
#endif
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
            uint64_t deadline = ts__now_ns() + TS_POOL_SPIN_NS;
            for (int round = 1; (g = atomic_load(&pool->generation)) == seen; round++) {
                if (atomic_load(&pool->stop)) return NULL;
                cpu_relax();
                if ((round & 255) == 0) {
                    if (ts__now_ns() > deadline) break;
                    /* A CPU shared with the caller (more threads than
                     * cores) goes back to it instead of spinning out a
                     * whole time slice; alone on its CPU this returns at
                     * once. */
                    sched_yield();
                }
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
        leave_cpu(pool->caller_cpu);
        pool->arrivals[arg.index].left_ns = ts__now_ns();
        pool->arrivals[arg.index].waited_ns = 0;
        pool->fn(pool->ctx, arg.index, pool->n_threads);
        atomic_fetch_add(&pool->done, 1);
    }
}

int ts__online_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : (int)n;
}

int ts__default_threads(void) {
    int n = ts__online_cpus();
    return n > 8 ? 8 : n; /* the models this library targets stop scaling early */
}

ts_pool *ts__pool_new(int n_threads) {
    if (n_threads < 2) return NULL;
    if (n_threads > TS_POOL_MAX_THREADS) n_threads = TS_POOL_MAX_THREADS;
    ts_pool *pool = aligned_alloc(64, (sizeof *pool + 63) / 64 * 64);
    if (!pool) return NULL;
    *pool = (ts_pool){0};
    pool->threads = calloc((size_t)n_threads, sizeof *pool->threads);
    if (!pool->threads) {
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->lock, NULL);
    pthread_cond_init(&pool->wake, NULL);
    pool->n_threads = 1;
    pool->team_waking = 1;
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

int ts__pool_team(ts_pool *pool, ts_team_fn fn, void *ctx) {
    if (!pool) {
        fn(ctx, 0, 1);
        return 0;
    }
    int n = pool->n_threads;
    /* Every worker finished the previous job before it returned, so no one
     * reads these fields while they change. */
    pool->fn = fn;
    pool->ctx = ctx;
#if defined(__linux__)
    pool->caller_cpu = sched_getcpu();
#else
    pool->caller_cpu = -1;
#endif
    atomic_store(&pool->done, 0);
    atomic_store(&pool->stalled, 0);
    /* publish: `sleepers` is read after the bump (see worker_main) */
    atomic_store(&pool->generation, atomic_load(&pool->generation) + 1);
    if (atomic_load(&pool->sleepers) > 0) {
        pthread_mutex_lock(&pool->lock);
        pthread_cond_broadcast(&pool->wake);
        pthread_mutex_unlock(&pool->lock);
    }
    uint64_t start = ts__now_ns();
    pool->arrivals[0].left_ns = start;
    pool->arrivals[0].waited_ns = 0;
    fn(ctx, 0, n);
    for (int round = 1; atomic_load(&pool->done) < n - 1; round++) {
        cpu_relax();
        if ((round & 255) == 0) sched_yield();
    }
    if (!atomic_load(&pool->stalled)) return 0;
    /* a long wait: a stall when it, or the waits together, took a good part
     * of the job (the workers' counts are theirs until `done`, read after) */
    uint64_t job = ts__now_ns() - start, waited = 0;
    for (int k = 0; k < n; k++) {
        if (pool->arrivals[k].waited_ns > waited) waited = pool->arrivals[k].waited_ns;
    }
    return waited * TS_TEAM_STALL_SHARE > job;
}

void ts__pool_barrier(ts_pool *pool, int thread) {
    if (!pool) return;
    arrival_count *me = &pool->arrivals[thread];
    uint64_t mine = atomic_load_explicit(&me->count, memory_order_relaxed) + 1;
    atomic_store_explicit(&me->count, mine, memory_order_release);
    uint64_t since = 0, patience = 0; /* when this wait began, and how long is a stall */
    for (int k = 0; k < pool->n_threads; k++) {
        if (k == thread) continue;
        for (int round = 1;
             atomic_load_explicit(&pool->arrivals[k].count, memory_order_acquire) < mine; round++) {
            cpu_relax();
            if ((round & 255) != 0) continue;
            uint64_t now = ts__now_ns();
            if (!since) {
                /* the first check comes 256 rounds in: close enough to the
                 * arrival to measure the step by */
                since = now;
                uint64_t work = now - me->left_ns;
                patience = work * TS_TEAM_STALL_RATIO;
                if (patience < TS_TEAM_STALL_NS) patience = TS_TEAM_STALL_NS;
            } else if (now - since > patience) {
                atomic_store_explicit(&pool->stalled, 1, memory_order_relaxed);
                sched_yield();
            }
        }
    }
    me->left_ns = ts__now_ns();
    if (since) me->waited_ns += me->left_ns - since;
}

/* The first number of /proc/loadavg's fourth field ("runnable/total"). */
int ts__runnable_threads(void) {
#if defined(__linux__)
    int fd = open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    char text[128];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n <= 0) return -1;
    text[n] = '\0';
    const char *field = text;
    for (int k = 0; k < 3 && field; k++) { /* past the three load averages */
        field = strchr(field, ' ');
        if (field) field++;
    }
    if (!field) return -1;
    char *end;
    long running = strtol(field, &end, 10);
    return end != field && *end == '/' && running > 0 && running < 1000000 ? (int)running : -1;
#else
    return -1;
#endif
}

/* Whether the team is off: while a pause runs, and when one ends with more
 * threads runnable than a team would find CPUs for (this pool's caller
 * alone now, so the others plus the team's members). Then the pause
 * doubles again at once, instead of after the two team jobs that would
 * stall to show it: beside a `yes`, such a stories42M decode step took
 * 9-13 ms against 7.3 alone, and the calm jobs between stalls kept the
 * pauses short (256 steps ran at 105 tok/s, 136 on one thread). Past
 * TS_TEAM_OFF_MAX_NS the team is tried anyway, so a count that misleads
 * (a container shown the whole host's threads) holds it off no longer
 * than the stalls themselves would. A pause is checked once: the team
 * jobs after it read one clock only. */
static int team_off(const ts_pool *pool) {
    uint64_t until = atomic_load_explicit(&team_off_until_ns, memory_order_relaxed);
    if (until == 0) return 0;
    uint64_t now = ts__now_ns();
    if (now < until) return 1;
    uint64_t off = atomic_load_explicit(&team_off_ns, memory_order_relaxed);
    int others = ts__runnable_threads() - 1;
    if (others >= 0 && others + pool->n_threads > ts__online_cpus() && off < TS_TEAM_OFF_MAX_NS) {
        off = off < TS_TEAM_OFF_MIN_NS / 2 ? TS_TEAM_OFF_MIN_NS : 2 * off;
        if (off > TS_TEAM_OFF_MAX_NS) off = TS_TEAM_OFF_MAX_NS;
        atomic_store_explicit(&team_off_ns, off, memory_order_relaxed);
        atomic_compare_exchange_strong(&team_off_until_ns, &until, now + off);
        return 1;
    }
    atomic_compare_exchange_strong(&team_off_until_ns, &until, 0); /* checked */
    return 0;
}

void ts__pool_run(ts_pool *pool, ts_team_fn fn, void *ctx) {
    if (!pool || team_off(pool)) {
        if (pool) {
            pool->team_waking = 1;
            pool->calm_ns = pool->stalled_ns = 0; /* the pause may have been another pool's */
        }
        fn(ctx, 0, 1);
        return;
    }
    uint64_t began = ts__now_ns();
    int stalled = ts__pool_team(pool, fn, ctx);
    int waking = pool->team_waking;
    pool->team_waking = 0;
    uint64_t took = ts__now_ns() - began;
    if (!stalled) {
        pool->team_stalls = 0;
        pool->calm_ns += took;
    } else if (!waking) {
        pool->stalled_ns += took;
        ++pool->team_stalls;
    }
    if (pool->team_stalls >= TS_TEAM_MAX_STALLS) {
        uint64_t off = TS_TEAM_OFF_BURST_NS;
        if (pool->calm_ns < TS_TEAM_CALM_NS || pool->calm_ns < TS_TEAM_CALM_RATIO * pool->stalled_ns) {
            off = 2 * atomic_load_explicit(&team_off_ns, memory_order_relaxed);
            if (off < TS_TEAM_OFF_MIN_NS) off = TS_TEAM_OFF_MIN_NS;
            if (off > TS_TEAM_OFF_MAX_NS) off = TS_TEAM_OFF_MAX_NS;
        }
        atomic_store_explicit(&team_off_ns, off, memory_order_relaxed);
        atomic_store_explicit(&team_off_until_ns, ts__now_ns() + off, memory_order_relaxed);
        pool->team_stalls = 0;
        pool->calm_ns = pool->stalled_ns = 0;
    }
}

void ts__pool_resume(void) {
    atomic_store_explicit(&team_off_until_ns, 0, memory_order_relaxed);
    atomic_store_explicit(&team_off_ns, 0, memory_order_relaxed);
}
