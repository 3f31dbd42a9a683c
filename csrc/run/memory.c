/*
 * memory.c — the float arrays of activations and KV caches.
 *
 * Large arrays (KV caches, a batch's logits) are mapped straight from the
 * kernel, not taken from malloc: their pages stay untouched, and out of
 * the RSS, until used, and go back to the system when freed. From malloc
 * they would not: once a large block is freed, glibc raises its mmap
 * threshold and serves the next one from the heap, where calloc must zero
 * (and so touch) every page; each new session then grew the process by
 * its whole KV cache and logits.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Arrays of at least this many bytes are mapped, except under
 * AddressSanitizer, which checks bounds on malloc's blocks only. */
#if defined(__SANITIZE_ADDRESS__)
#define TS_MAP_BYTES SIZE_MAX
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TS_MAP_BYTES SIZE_MAX
#endif
#endif
#ifndef TS_MAP_BYTES
#define TS_MAP_BYTES (256u << 10)
#endif

/* The 64 bytes before the floats: where the block starts and how it was
 * made (its size when mapped, 0 from calloc). */
typedef struct block_header {
    char *block;
    size_t mapped;
} block_header;

float *ts__calloc_floats(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t n;
    if (__builtin_mul_overflow(a, b, &n) || __builtin_mul_overflow(n, c, &n) ||
        n > (SIZE_MAX - 64) / sizeof(float)) {
        return NULL;
    }
    size_t bytes = (size_t)(n ? n : 1) * sizeof(float) + 64;
    char *block, *floats;
    block_header h = {NULL, 0};
    if (bytes >= TS_MAP_BYTES) {
        /* page-aligned and zeroed by the kernel on first touch */
        block = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (block == MAP_FAILED) return NULL;
        floats = block + 64;
        h.mapped = bytes;
    } else {
        /* calloc's block starts 16 bytes into a line; the 64 spare bytes
         * hold the start of the aligned floats and, just before it, the
         * header */
        block = calloc(bytes, 1);
        if (!block) return NULL;
        floats = block + 64 - (uintptr_t)block % 64;
    }
    h.block = block;
    memcpy(floats - sizeof h, &h, sizeof h);
    return (float *)floats;
}

void ts__free_floats(float *p) {
    if (!p) return;
    block_header h;
    memcpy(&h, (char *)p - sizeof h, sizeof h);
    if (h.mapped) {
        munmap(h.block, h.mapped);
    } else {
        free(h.block);
    }
}
