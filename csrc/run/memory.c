/*
 * memory.c — the float arrays of activations and KV caches.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

float *ts__calloc_floats(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t n;
    if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) ||
        n > (SIZE_MAX - 64) / sizeof(float)) {
        return NULL;
    }
    /* calloc's block starts 16 bytes into a line; the 64 spare bytes hold
     * the start of the aligned floats and, just before it, the block. */
    char *block = calloc((size_t)(n ? n : 1) * sizeof(float) + 64, 1);
    if (!block) return NULL;
    char *floats = block + 64 - (uintptr_t)block % 64;
    memcpy(floats - sizeof block, &block, sizeof block);
    return (float *)floats;
}

void ts__free_floats(float *p) {
    if (!p) return;
    char *block;
    memcpy(&block, (char *)p - sizeof block, sizeof block);
    free(block);
}
