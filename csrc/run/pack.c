/*
 * pack.c — weight matrices in panels of TS_PANEL rows, for kernel sets
 * whose matmuls read them that way (kernels_avx512.c).
 *
 * A row-major matrix makes a matmul either reduce a vector per output
 * (llama2.c's loop) or read many rows side by side, each a separate short
 * stream that the hardware prefetchers pick up late. In a panel, element j
 * of the panel's TS_PANEL rows lie next to each other, so one vector load
 * serves one input element for every row of the panel, no output needs a
 * horizontal sum, and the whole matrix is read front to back as one
 * stream, whatever the number of tokens that share the read.
 *
 * fp32: panel p, column j, row r at ((p * n + j) * TS_PANEL + r).
 * Q8_0: the values of input group g (columns g*gs .. g*gs+gs-1) come in
 * quads of 4 columns; panel p, group g, quad c holds, for each row r, the 4
 * bytes of row r, columns g*gs + 4c .. +3, at
 * (((p * ng + g) * (gs / 4) + c) * TS_PANEL + r) * 4, stored as w + 128 so
 * that they are the unsigned operand of a u8 x s8 dot product (the
 * kernels take 128 * sum(x) off again, exactly). Scales: one fp32 per
 * (panel, group, row), the scale runq applies to that row's group, at
 * (p * ng + g) * TS_PANEL + r. Rows past d pad the last panel with zeros.
 */
#include "internal.h"

#include <string.h>

size_t ts__panel_count(int d) { return ((size_t)d + TS_PANEL - 1) / TS_PANEL; }

void ts__pack_f32(float *dst, const float *w, int d, int n) {
    size_t panels = ts__panel_count(d);
    for (size_t p = 0; p < panels; p++) {
        float *panel = dst + p * (size_t)n * TS_PANEL;
        for (int r = 0; r < TS_PANEL; r++) {
            size_t row = p * TS_PANEL + (size_t)r;
            const float *src = row < (size_t)d ? w + row * (size_t)n : NULL;
            for (int j = 0; j < n; j++) panel[(size_t)j * TS_PANEL + r] = src ? src[j] : 0.0f;
        }
    }
}

void ts__pack_q8(uint8_t *dq, float *ds, const int8_t *q, const float *s, int d, int n, int gs) {
    size_t panels = ts__panel_count(d), ng = (size_t)(n / gs), quads = (size_t)gs / 4;
    for (size_t p = 0; p < panels; p++) {
        for (int r = 0; r < TS_PANEL; r++) {
            size_t row = p * TS_PANEL + (size_t)r;
            int real = row < (size_t)d;
            const int8_t *src = real ? q + row * (size_t)n : NULL;
            for (size_t g = 0; g < ng; g++) {
                size_t pg = p * ng + g;
                /* runq's scale for this row's group: by the flat index of its first value */
                ds[pg * TS_PANEL + (size_t)r] = real ? s[(row * (size_t)n + g * (size_t)gs) / (size_t)gs] : 0.0f;
                for (size_t c = 0; c < quads; c++) {
                    uint8_t *out = dq + ((pg * quads + c) * TS_PANEL + (size_t)r) * 4;
                    for (int b = 0; b < 4; b++) {
                        int8_t v = src ? src[g * (size_t)gs + c * 4 + (size_t)b] : 0;
                        out[b] = (uint8_t)(v + 128);
                    }
                }
            }
        }
    }
}
