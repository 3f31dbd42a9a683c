/*
 * check.h — the few helpers the C test programs share: a non-fatal CHECK
 * that counts, paths inside the test's temporary directory, and writing a
 * file in one call.
 */
#ifndef TINYSTORIES_TEST_CHECK_H
#define TINYSTORIES_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        checks++;                                                                     \
        if (!(cond)) {                                                                \
            failures++;                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
        }                                                                             \
    } while (0)

/* The test's temporary directory, made by main with mkdtemp. */
static char tmpdir[256];

/* tmpdir/name; the result stays valid for the next three calls. */
static inline const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int which = 0;
    which = (which + 1) % 4;
    snprintf(buf[which], sizeof buf[which], "%s/%s", tmpdir, name);
    return buf[which];
}

/* Writes n bytes to path; exits on failure (the test cannot go on). */
static inline void write_bytes(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n)) {
        perror(path);
        exit(2);
    }
    fclose(f);
}

#endif
