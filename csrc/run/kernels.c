/*
 * kernels.c — choosing a kernel set at run time.
 *
 * Each x86 SIMD set is compiled with its own instruction-set flags (see
 * CMakeLists.txt) and only called after the CPU has said it runs them, so
 * one build works on every x86-64 machine and is fast on the newer ones.
 * On arm64 the neon set needs nothing beyond the AArch64 baseline.
 */
#include "internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Whether this CPU (and OS) runs the set. */
static int supported(const ts_kernels *k) {
    if (k == &ts_kernels_scalar) return 1;
#if defined(__x86_64__) || defined(_M_X64)
    __builtin_cpu_init();
    if (k == &ts_kernels_avx2) {
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    if (k == &ts_kernels_avx512) {
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
               __builtin_cpu_supports("fma");
    }
#endif
#if defined(__aarch64__)
    /* Advanced SIMD is mandatory in AArch64: every arm64 CPU runs it */
    if (k == &ts_kernels_neon) return 1;
#endif
    return 0;
}

/* Every set compiled in, fastest first. */
static const ts_kernels *const all_sets[] = {
#if defined(__x86_64__) || defined(_M_X64)
    &ts_kernels_avx512,
    &ts_kernels_avx2,
#endif
#if defined(__aarch64__)
    &ts_kernels_neon,
#endif
    &ts_kernels_scalar,
};
#define N_SETS (sizeof all_sets / sizeof all_sets[0])

ts_status ts__kernels_select(const char *name, const ts_kernels **out, ts_error *err) {
    if (!name || !*name) name = getenv("TINYSTORIES_KERNELS");
    if (!name || !*name || strcmp(name, "auto") == 0) {
        for (size_t i = 0; i < N_SETS; i++) {
            if (supported(all_sets[i])) {
                *out = all_sets[i];
                return TS_OK;
            }
        }
    }
    for (size_t i = 0; i < N_SETS; i++) {
        if (strcmp(all_sets[i]->name, name) != 0) continue;
        if (!supported(all_sets[i])) {
            return ts__fail(err, TS_ERR_ARG, "kernel set \"%s\" is not supported by this CPU",
                            name);
        }
        *out = all_sets[i];
        return TS_OK;
    }
    return ts__fail(err, TS_ERR_ARG, "unknown kernel set \"%s\" (available: %s)", name,
                    ts_kernels_available());
}

static char available_names[64];
static pthread_once_t available_once = PTHREAD_ONCE_INIT;

static void list_available(void) {
    for (size_t i = 0; i < N_SETS; i++) {
        if (!supported(all_sets[i])) continue;
        if (available_names[0]) strcat(available_names, " ");
        strcat(available_names, all_sets[i]->name);
    }
}

const char *ts_kernels_available(void) {
    pthread_once(&available_once, list_available);
    return available_names;
}
