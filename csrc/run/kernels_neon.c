/*
 * kernels_neon.c — the kernel set for 64-bit Arm (AArch64 Advanced SIMD,
 * four floats wide): Apple silicon, Graviton, Ampere, Raspberry Pi 4/5.
 *
 * Advanced SIMD is part of the AArch64 baseline, so this file needs no
 * extra compiler flags and kernels.c offers it on every arm64 CPU. It
 * follows kernels_avx2.c:
 *
 * fp32 matmul: rows in blocks of four, fused multiply-adds, one reduction
 * tree per row, so a row's result does not depend on the rows, tokens or
 * row range around it (batch invariance). The fp32 models' attention reads
 * the key cache a block of 16 positions at a time, lanes = positions.
 * Q8: the integer dot products widen int8 x int8 to int16 (vmull_s8) and
 * pairwise-add into int32 (vpadalq_s16), which is exact for every int8
 * value (-128 included); the float accumulation over groups is runq's, in
 * runq's order. (The ARMv8.2 dot-product instructions would be faster but
 * are optional hardware; leaving them out keeps one exact path.)
 * Quantization and the exact attention (Q8_0 models) round exactly like
 * the scalar set, so Q8_0 outputs are byte-identical to llama2.c's runq.
 * That relies on the library's -ffp-contract=off: gcc implements
 * vmulq_f32 / vaddq_f32 as plain vector arithmetic, which it would
 * otherwise be free to fuse into one multiply-add.
 */
#include "internal.h"

#include <arm_neon.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

/* [sum(a), sum(b), sum(c), sum(d)], each by the same tree (pairs, then
 * the pair sums) whatever the others hold. */
static inline float32x4_t hsum4_f32(float32x4_t a, float32x4_t b, float32x4_t c, float32x4_t d) {
    return vpaddq_f32(vpaddq_f32(a, b), vpaddq_f32(c, d));
}

/* x[0..n) (n < 4) followed by zeros: the tails of the vector loops are one
 * more zero-padded step, so every output sums the same way for a given n. */
static inline float32x4_t load_tail(const float *x, int n) {
    float buf[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    memcpy(buf, x, (size_t)n * sizeof(float));
    return vld1q_f32(buf);
}

/* e^x to about 2 ulp, as kernels_avx2.c's exp_ps: x = k ln2 + r with
 * |r| <= ln2/2, a degree-6 polynomial for e^r, then 2^k built in the
 * exponent. Returns 0 below -80 (and for NaN), as that one does, so both
 * SIMD sets treat tiny attention weights alike. */
static inline float32x4_t exp_f32(float32x4_t x) {
    uint32x4_t keep = vcgeq_f32(x, vdupq_n_f32(-80.0f));
    x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-80.0f)), vdupq_n_f32(88.0f));
    float32x4_t k = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
    /* vfmsq_f32(a, b, c) = a - b*c, vfmaq_f32(a, b, c) = a + b*c, fused */
    float32x4_t r = vfmsq_f32(x, k, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, k, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(k), vdupq_n_s32(127)), 23);
    float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(y), keep));
}

/* -------------------------------------------------------------- matmul */

/* Four dot products of length n with one x: two accumulators per row
 * (eight floats per step) so consecutive fused adds do not wait on each
 * other. */
static inline float32x4_t dot4(const float *w0, const float *w1, const float *w2, const float *w3,
                               const float *x, int n) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
    float32x4_t b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        float32x4_t xa = vld1q_f32(x + j), xb = vld1q_f32(x + j + 4);
        a0 = vfmaq_f32(a0, vld1q_f32(w0 + j), xa);
        b0 = vfmaq_f32(b0, vld1q_f32(w0 + j + 4), xb);
        a1 = vfmaq_f32(a1, vld1q_f32(w1 + j), xa);
        b1 = vfmaq_f32(b1, vld1q_f32(w1 + j + 4), xb);
        a2 = vfmaq_f32(a2, vld1q_f32(w2 + j), xa);
        b2 = vfmaq_f32(b2, vld1q_f32(w2 + j + 4), xb);
        a3 = vfmaq_f32(a3, vld1q_f32(w3 + j), xa);
        b3 = vfmaq_f32(b3, vld1q_f32(w3 + j + 4), xb);
    }
    if (j + 4 <= n) {
        float32x4_t xa = vld1q_f32(x + j);
        a0 = vfmaq_f32(a0, vld1q_f32(w0 + j), xa);
        a1 = vfmaq_f32(a1, vld1q_f32(w1 + j), xa);
        a2 = vfmaq_f32(a2, vld1q_f32(w2 + j), xa);
        a3 = vfmaq_f32(a3, vld1q_f32(w3 + j), xa);
        j += 4;
    }
    if (j < n) {
        float32x4_t xa = load_tail(x + j, n - j);
        a0 = vfmaq_f32(a0, load_tail(w0 + j, n - j), xa);
        a1 = vfmaq_f32(a1, load_tail(w1 + j, n - j), xa);
        a2 = vfmaq_f32(a2, load_tail(w2 + j, n - j), xa);
        a3 = vfmaq_f32(a3, load_tail(w3 + j, n - j), xa);
    }
    return hsum4_f32(vaddq_f32(a0, b0), vaddq_f32(a1, b1), vaddq_f32(a2, b2),
                     vaddq_f32(a3, b3));
}

static void matmul_f32(float *out, const float *x, int nt, const float *w, int n, int d, int i0,
                       int i1) {
    for (int i = i0; i < i1; i += 4) {
        int rows = i1 - i < 4 ? i1 - i : 4;
        /* a short last block repeats its first row; those results are dropped */
        const float *w0 = w + (size_t)i * n;
        const float *w1 = rows > 1 ? w0 + n : w0;
        const float *w2 = rows > 2 ? w0 + 2 * (size_t)n : w0;
        const float *w3 = rows > 3 ? w0 + 3 * (size_t)n : w0;
        /* tokens inside the row block: the block's weights stay in L1 */
        for (int t = 0; t < nt; t++) {
            float r[4];
            vst1q_f32(r, dot4(w0, w1, w2, w3, x + (size_t)t * n, n));
            memcpy(out + (size_t)t * d + i, r, (size_t)rows * sizeof(float));
        }
    }
}

/* acc += the pairwise sums of x * w over 16 int8 pairs: products widen to
 * int16 (|p| <= 16384) and pairs of them to int32 before any add: exact. */
static inline int32x4_t dot16_s8(int32x4_t acc, int8x16_t x, int8x16_t w) {
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(x), vget_low_s8(w)));
    return vpadalq_s16(acc, vmull_high_s8(x, w));
}

static void matmul_q8(float *out, const int8_t *x_q, const float *x_s, int nt, const int8_t *wq,
                      const float *ws, const int32_t *row_sums, int n, int d, int gs, int i0,
                      int i1) {
    (void)row_sums;
    int ng = n / gs; /* whole input groups; a tail of n % gs inputs is ignored */
    int gs16 = gs & ~15;
    for (int i = i0; i < i1; i += 4) {
        int rows = i1 - i < 4 ? i1 - i : 4;
        const int8_t *w[4];
        const float *scale[4]; /* group g of row r starts at flat index r*n + g*gs, so its
                                * scale is scale[r][g] (a group may straddle two rows) */
        for (int r = 0; r < 4; r++) {
            size_t in = (size_t)(i + (r < rows ? r : 0)) * n;
            w[r] = wq + in;
            scale[r] = ws + in / gs;
        }
        for (int t = 0; t < nt; t++) {
            const int8_t *xq = x_q + (size_t)t * n;
            const float *xs = x_s + (size_t)t * ng;
            float val[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int g = 0; g < ng; g++) {
                size_t j = (size_t)g * gs;
                int32x4_t a0 = vdupq_n_s32(0), a1 = a0, a2 = a0, a3 = a0;
                for (int k = 0; k < gs16; k += 16) {
                    int8x16_t xv = vld1q_s8(xq + j + k);
                    a0 = dot16_s8(a0, xv, vld1q_s8(w[0] + j + k));
                    a1 = dot16_s8(a1, xv, vld1q_s8(w[1] + j + k));
                    a2 = dot16_s8(a2, xv, vld1q_s8(w[2] + j + k));
                    a3 = dot16_s8(a3, xv, vld1q_s8(w[3] + j + k));
                }
                int32_t dot[4] = {vaddvq_s32(a0), vaddvq_s32(a1), vaddvq_s32(a2), vaddvq_s32(a3)};
                for (int r = 0; r < rows; r++) {
                    for (int k = gs16; k < gs; k++) dot[r] += (int32_t)xq[j + k] * w[r][j + k];
                    /* runq's order: ((float)ival * w_scale) * x_scale */
                    val[r] += ((float)dot[r]) * scale[r][g] * xs[g];
                }
            }
            memcpy(out + (size_t)t * d + i, val, (size_t)rows * sizeof(float));
        }
    }
}

/* Symmetric Q8_0, rounding exactly like the scalar set: the same float
 * division, then round half away from zero (vrndaq_f32 is C's round()). */
static void quantize_q8(int8_t *q, float *s, const float *x, int n, int gs) {
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * gs;
        int8_t *qg = q + (size_t)g * gs;
        float32x4_t vmax = vdupq_n_f32(0.0f);
        int k = 0;
        for (; k + 4 <= gs; k += 4) {
            /* maxNum ignores a NaN operand, as the scalar `v > wmax` does */
            vmax = vmaxnmq_f32(vmax, vabsq_f32(vld1q_f32(xg + k)));
        }
        float wmax = vmaxvq_f32(vmax); /* a maximum is exact in any order */
        for (; k < gs; k++) {
            float v = fabsf(xg[k]);
            if (v > wmax) wmax = v;
        }
        float scale = wmax / 127.0f;
        s[g] = scale;
        if (scale == 0.0f) {
            memset(qg, 0, (size_t)gs);
            continue;
        }
        const float32x4_t vs = vdupq_n_f32(scale);
        const float32x4_t lo = vdupq_n_f32(-127.0f), hi = vdupq_n_f32(127.0f);
        for (k = 0; k + 8 <= gs; k += 8) {
            int32x4_t iv[2];
            for (int h = 0; h < 2; h++) {
                float32x4_t v = vdivq_f32(vld1q_f32(xg + k + 4 * h), vs);
                float32x4_t r = vminq_f32(vmaxq_f32(vrndaq_f32(v), lo), hi);
                /* NaN (from a non-finite input) quantizes to 0, as in the scalar set */
                r = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(r), vceqq_f32(v, v)));
                iv[h] = vcvtq_s32_f32(r); /* integral values in [-127, 127]: exact */
            }
            int16x8_t w16 = vcombine_s16(vmovn_s32(iv[0]), vmovn_s32(iv[1]));
            vst1_s8(qg + k, vmovn_s16(w16));
        }
        for (; k < gs; k++) {
            double r = round(xg[k] / scale);
            if (!(r >= -127.0 && r <= 127.0)) r = r > 0.0 ? 127.0 : (r < 0.0 ? -127.0 : 0.0);
            qg[k] = (int8_t)r;
        }
    }
}

/* ------------------------------------------- element-wise (fp32 models)
 * Q8_0 models take the scalar rmsnorm and swiglu instead (ts__batch_new). */

static void rmsnorm(float *o, const float *x, const float *w, int n) {
    float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0;
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        float32x4_t u = vld1q_f32(x + j), v = vld1q_f32(x + j + 4);
        a0 = vfmaq_f32(a0, u, u);
        a1 = vfmaq_f32(a1, v, v);
    }
    float ss = vaddvq_f32(vaddq_f32(a0, a1));
    for (; j < n; j++) ss += x[j] * x[j];
    ss /= n;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    for (j = 0; j + 4 <= n; j += 4) {
        float32x4_t v = vmulq_n_f32(vld1q_f32(x + j), ss);
        vst1q_f32(o + j, vmulq_f32(vld1q_f32(w + j), v));
    }
    for (; j < n; j++) o[j] = w[j] * (ss * x[j]);
}

static void swiglu(float *h, const float *g, int n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(h + i);
        float32x4_t sig = vdivq_f32(one, vaddq_f32(one, exp_f32(vnegq_f32(v))));
        vst1q_f32(h + i, vmulq_f32(vmulq_f32(v, sig), vld1q_f32(g + i)));
    }
    for (; i < n; i++) {
        float val = h[i];
        val *= (1.0f / (1.0f + expf(-val)));
        h[i] = val * g[i];
    }
}

/* The largest of x[0..n) (n >= 1); a maximum is exact in any order. */
static float max_of(const float *x, int n) {
    float max_val = x[0];
    int i = 0;
    if (n >= 4) {
        float32x4_t vmax = vld1q_f32(x);
        for (i = 4; i + 4 <= n; i += 4) vmax = vmaxq_f32(vmax, vld1q_f32(x + i));
        max_val = vmaxvq_f32(vmax);
    }
    for (; i < n; i++) {
        if (x[i] > max_val) max_val = x[i];
    }
    return max_val;
}

static void softmax(float *x, int n) {
    const float max_val = max_of(x, n);
    const float32x4_t mx = vdupq_n_f32(max_val);
    float32x4_t vsum = vdupq_n_f32(0.0f);
    int i;
    for (i = 0; i + 4 <= n; i += 4) {
        float32x4_t e = exp_f32(vsubq_f32(vld1q_f32(x + i), mx));
        vsum = vaddq_f32(vsum, e);
        vst1q_f32(x + i, e);
    }
    float sum = vaddvq_f32(vsum);
    for (; i < n; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    const float inv = 1.0f / sum;
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vmulq_n_f32(vld1q_f32(x + i), inv));
    for (; i < n; i++) x[i] *= inv;
}

/* One head's attention. Scores go a key block (TS_KEY_BLOCK = 16
 * positions, four registers, one chain of fused multiply-adds each) at a
 * time, lane-parallel over the head; the softmax reads only the first
 * n_pos, so the last block's junk lanes are left out. */
static void attention(float *out, float *att, const float *q, const float *keys,
                      const float *values, int n_pos, int head_size) {
    const float32x4_t scale = vdupq_n_f32(sqrtf(head_size));
    const int stride = head_size; /* of the values */
    for (int t = 0; t < n_pos; t += TS_KEY_BLOCK) {
        const float *kb = keys + (size_t)t * head_size; /* t is a block's first position */
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
        for (int i = 0; i < head_size; i++) {
            const float *k = kb + (size_t)i * TS_KEY_BLOCK;
            a0 = vfmaq_n_f32(a0, vld1q_f32(k), q[i]);
            a1 = vfmaq_n_f32(a1, vld1q_f32(k + 4), q[i]);
            a2 = vfmaq_n_f32(a2, vld1q_f32(k + 8), q[i]);
            a3 = vfmaq_n_f32(a3, vld1q_f32(k + 12), q[i]);
        }
        vst1q_f32(att + t, vdivq_f32(a0, scale));
        vst1q_f32(att + t + 4, vdivq_f32(a1, scale));
        vst1q_f32(att + t + 8, vdivq_f32(a2, scale));
        vst1q_f32(att + t + 12, vdivq_f32(a3, scale));
    }
    softmax(att, n_pos);

    /* weighted sum of the values, 4 dimensions at a time, over four
     * interleaved partial sums (one dependent add per position would
     * leave the FMA pipes idle) */
    for (int i = 0; i < head_size; i += 4) {
        int ni = head_size - i < 4 ? head_size - i : 4;
        float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
        const float *v = values + i;
        int p = 0;
        if (ni == 4) {
            for (; p + 4 <= n_pos; p += 4, v += 4 * (size_t)stride) {
                a0 = vfmaq_n_f32(a0, vld1q_f32(v), att[p]);
                a1 = vfmaq_n_f32(a1, vld1q_f32(v + stride), att[p + 1]);
                a2 = vfmaq_n_f32(a2, vld1q_f32(v + 2 * (size_t)stride), att[p + 2]);
                a3 = vfmaq_n_f32(a3, vld1q_f32(v + 3 * (size_t)stride), att[p + 3]);
            }
            for (; p < n_pos; p++, v += stride) a0 = vfmaq_n_f32(a0, vld1q_f32(v), att[p]);
            vst1q_f32(out + i, vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
        } else {
            /* head_size not a multiple of 4: the last dimensions one by one */
            for (; p < n_pos; p++, v += stride) a0 = vfmaq_n_f32(a0, load_tail(v, ni), att[p]);
            float r[4];
            vst1q_f32(r, a0);
            memcpy(out + i, r, (size_t)ni * sizeof(float));
        }
    }
}

/* ------------------------------------------- exact attention (Q8_0 models) */

/* libm's expf bit for bit, 4 at a time, as in kernels_avx512.c (which says
 * why a value 1/256 ulp or more from a rounding midpoint rounds to libm's
 * float): each lane in double precision, e^x = 2^(k/4) e^r with
 * k = round(4 x / ln2), |r| <= ln2/8, 2^(k/4) from a 4-entry table and the
 * exponent bits, e^r the Taylor series to r^6 (relative error below 2^-37). */
static inline float64x2_t exp_f64(float64x2_t x) {
    /* 2^(j/4), j = 0..3, each the double nearest */
    static const double table[4] = {1.0, 0x1.306fe0a31b715p+0, 0x1.6a09e667f3bcdp+0,
                                    0x1.ae89f995ad3adp+0};
    /* k + 1.5 * 2^52: k in the low bits, two's complement (the shift trick) */
    const float64x2_t shift = vdupq_n_f64(0x1.8p52);
    float64x2_t kd = vfmaq_f64(shift, x, vdupq_n_f64(0x1.71547652b82fep+2)); /* 4/ln2 */
    const uint64x2_t kbits = vreinterpretq_u64_f64(kd);
    kd = vsubq_f64(kd, shift);
    /* r = x - k ln2/4, ln2/4 in two parts: k times the first (32 bits) is exact */
    float64x2_t r = vfmsq_f64(x, kd, vdupq_n_f64(0x1.62e42feep-3));
    r = vfmsq_f64(r, kd, vdupq_n_f64(0x1.a39ef35793c76p-35));
    float64x2_t p = vdupq_n_f64(1.0 / 720);
    p = vfmaq_f64(vdupq_n_f64(1.0 / 120), p, r);
    p = vfmaq_f64(vdupq_n_f64(1.0 / 24), p, r);
    p = vfmaq_f64(vdupq_n_f64(1.0 / 6), p, r);
    p = vfmaq_f64(vdupq_n_f64(0.5), p, r);
    p = vfmaq_f64(vdupq_n_f64(1.0), p, r);
    p = vfmaq_f64(vdupq_n_f64(1.0), p, r);
    const float64x2_t t = vcombine_f64(vld1_f64(table + (vgetq_lane_u64(kbits, 0) & 3)),
                                       vld1_f64(table + (vgetq_lane_u64(kbits, 1) & 3)));
    /* floor(k/4) into the exponent field: the bits above it fall off */
    const uint64x2_t scale = vshlq_n_u64(vshrq_n_u64(kbits, 2), 52);
    return vreinterpretq_f64_u64(vaddq_u64(vreinterpretq_u64_f64(vmulq_f64(p, t)), scale));
}

/* Which of y's 2 lanes lie within 1/256 ulp of a float rounding midpoint:
 * the double's 29 bits below a float's last place within 2^21 of 1
 * followed by zeros, read in y's own binade. */
static inline uint32x2_t near_midpoint(float64x2_t y) {
    const uint64x2_t below = vandq_u64(vreinterpretq_u64_f64(y), vdupq_n_u64((1 << 29) - 1));
    const int64x2_t off = vsubq_s64(vreinterpretq_s64_u64(below), vdupq_n_s64((1 << 28) - (1 << 21)));
    const uint64x2_t in = vandq_u64(vcgtq_s64(off, vdupq_n_s64(0)),
                                    vcltq_s64(off, vdupq_n_s64(1 << 22)));
    return vmovn_u64(in);
}

/* expf of 4 lanes: those in (-104, -87) or past 88 (results near or past
 * the float range), NaN, and those near a midpoint go to expf itself; at or
 * below -104 both give +0. */
static inline float32x4_t expf_exact(float32x4_t x) {
    const uint32x4_t in_range = vandq_u32(vcgeq_f32(x, vdupq_n_f32(-87.0f)),
                                          vcleq_f32(x, vdupq_n_f32(88.0f)));
    const uint32x4_t zero = vcleq_f32(x, vdupq_n_f32(-104.0f));
    const float32x4_t safe = vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(x), in_range));
    const float64x2_t lo = exp_f64(vcvt_f64_f32(vget_low_f32(safe)));
    const float64x2_t hi = exp_f64(vcvt_high_f64_f32(safe));
    const float32x4_t y = vcvt_high_f32_f64(vcvt_f32_f64(lo), hi);
    const uint32x4_t near = vcombine_u32(near_midpoint(lo), near_midpoint(hi));
    const uint32x4_t slow = vorrq_u32(vbicq_u32(vmvnq_u32(in_range), zero), vandq_u32(near, in_range));
    float32x4_t out = vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), zero));
    if (vmaxvq_u32(slow)) {
        float xs[4], ys[4];
        uint32_t which[4];
        vst1q_f32(xs, x);
        vst1q_f32(ys, out);
        vst1q_u32(which, slow);
        for (int i = 0; i < 4; i++) {
            if (which[i]) ys[i] = expf(xs[i]);
        }
        out = vld1q_f32(ys);
    }
    return out;
}

/* The scalar set's softmax bit for bit: expf_exact, the sum in order; the
 * max and the division are exact in any order. */
static void softmax_exact(float *x, int n) {
    const float max_val = max_of(x, n);
    const float32x4_t vm = vdupq_n_f32(max_val);
    float sum = 0.0f;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        vst1q_f32(x + i, expf_exact(vsubq_f32(vld1q_f32(x + i), vm)));
        for (int j = 0; j < 4; j++) sum += x[i + j];
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    const float32x4_t vsum = vdupq_n_f32(sum);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(x + i, vdivq_f32(vld1q_f32(x + i), vsum));
    for (; i < n; i++) x[i] /= sum;
}

/* The scalar swiglu bit for bit: h * (1 / (1 + e^-h)) * g, each step
 * rounded as there (the library's -ffp-contract=off keeps them apart). */
static void swiglu_exact(float *h, const float *g, int n) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        float32x4_t v = vld1q_f32(h + i);
        const float32x4_t e = expf_exact(vnegq_f32(v)); /* the sign bit flipped, NaNs too */
        v = vmulq_f32(v, vdivq_f32(one, vaddq_f32(one, e)));
        vst1q_f32(h + i, vmulq_f32(v, vld1q_f32(g + i)));
    }
    ts_kernels_scalar.swiglu(h + i, g + i, n - i); /* the tail */
}

/* The scalar set's attention, operation for operation (no FMA, the same
 * summation orders, libm's expf), vectorized where that costs nothing in
 * rounding: a key block's 16 positions' scores at once (lanes = positions,
 * each summed over the head in order) and the weighted sum across the head's
 * dimensions (each dimension summed over positions in order). */
static void attention_exact(float *out, float *att, const float *q, const float *keys,
                            const float *values, int n_pos, int head_size) {
    const float32x4_t scale = vdupq_n_f32(sqrtf(head_size));
    const int stride = head_size; /* of the values */
    for (int t = 0; t < n_pos; t += TS_KEY_BLOCK) {
        const float *kb = keys + (size_t)t * head_size; /* t is a block's first position */
        float32x4_t s0 = vdupq_n_f32(0.0f), s1 = s0, s2 = s0, s3 = s0;
        for (int i = 0; i < head_size; i++) {
            const float *k = kb + (size_t)i * TS_KEY_BLOCK;
            /* separate multiply and add: the scalar set does not fuse */
            s0 = vaddq_f32(s0, vmulq_n_f32(vld1q_f32(k), q[i]));
            s1 = vaddq_f32(s1, vmulq_n_f32(vld1q_f32(k + 4), q[i]));
            s2 = vaddq_f32(s2, vmulq_n_f32(vld1q_f32(k + 8), q[i]));
            s3 = vaddq_f32(s3, vmulq_n_f32(vld1q_f32(k + 12), q[i]));
        }
        /* the junk lanes past n_pos are stored but not read */
        vst1q_f32(att + t, vdivq_f32(s0, scale));
        vst1q_f32(att + t + 4, vdivq_f32(s1, scale));
        vst1q_f32(att + t + 8, vdivq_f32(s2, scale));
        vst1q_f32(att + t + 12, vdivq_f32(s3, scale));
    }
    softmax_exact(att, n_pos);

    /* 16 dimensions per pass in four registers, so four chains of
     * dependent adds overlap, then 8 and 4; the last head_size % 4
     * dimensions as scalars */
    int i = 0;
    for (; i + 16 <= head_size; i += 16) { /* four chains */
        float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
        const float *v = values + i;
        for (int p = 0; p < n_pos; p++, v += stride) {
            acc0 = vaddq_f32(acc0, vmulq_n_f32(vld1q_f32(v), att[p]));
            acc1 = vaddq_f32(acc1, vmulq_n_f32(vld1q_f32(v + 4), att[p]));
            acc2 = vaddq_f32(acc2, vmulq_n_f32(vld1q_f32(v + 8), att[p]));
            acc3 = vaddq_f32(acc3, vmulq_n_f32(vld1q_f32(v + 12), att[p]));
        }
        vst1q_f32(out + i, acc0);
        vst1q_f32(out + i + 4, acc1);
        vst1q_f32(out + i + 8, acc2);
        vst1q_f32(out + i + 12, acc3);
    }
    for (; i + 8 <= head_size; i += 8) {
        float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = acc0;
        const float *v = values + i;
        for (int p = 0; p < n_pos; p++, v += stride) {
            acc0 = vaddq_f32(acc0, vmulq_n_f32(vld1q_f32(v), att[p]));
            acc1 = vaddq_f32(acc1, vmulq_n_f32(vld1q_f32(v + 4), att[p]));
        }
        vst1q_f32(out + i, acc0);
        vst1q_f32(out + i + 4, acc1);
    }
    for (; i + 4 <= head_size; i += 4) {
        float32x4_t acc = vdupq_n_f32(0.0f);
        const float *v = values + i;
        for (int p = 0; p < n_pos; p++, v += stride) {
            acc = vaddq_f32(acc, vmulq_n_f32(vld1q_f32(v), att[p]));
        }
        vst1q_f32(out + i, acc);
    }
    for (; i < head_size; i++) {
        float acc = 0.0f;
        const float *v = values + i;
        for (int p = 0; p < n_pos; p++, v += stride) acc += att[p] * *v;
        out[i] = acc;
    }
}

/* ts_k_sum_unordered's test and sum, 4 floats at a time (as in
 * kernels_avx512.c): q = x / ulp must lie in [-0, 2^23) (an unsigned
 * compare of its bits also rejects negatives and NaNs), its fraction must
 * not be one half, and the rounded q are summed as integers. A lane sums
 * at most 32 values (< 2^28) before the lanes are added into a 64-bit
 * total, so nothing wraps. */
static int sum_unordered(const float *x, int n, float *s) {
    float ulp, inv_ulp;
    int64_t start;
    if (!ts_k_binade(*s, &ulp, &inv_ulp, &start)) return 0;
    const float32x4_t inv = vdupq_n_f32(inv_ulp), half = vdupq_n_f32(0.5f);
    const uint32x4_t limit = vdupq_n_u32(0x4b000000u); /* the bits of 2^23 */
    int64_t steps = 0;
    for (int i = 0; i < n; i += 128) {
        int32x4_t acc = vdupq_n_s32(0);
        uint32x4_t bad = vdupq_n_u32(0);
        const int end = n - i < 128 ? n : i + 128;
        for (int j = i; j < end; j += 4) {
            const float32x4_t v = end - j >= 4 ? vld1q_f32(x + j) : load_tail(x + j, end - j);
            const float32x4_t q = vmulq_f32(v, inv);
            const uint32x4_t past = vcgeq_u32(vreinterpretq_u32_f32(q), limit);
            bad = vorrq_u32(bad, vbicq_u32(past, vceqq_f32(q, vdupq_n_f32(0.0f)))); /* -0 is fine */
            bad = vorrq_u32(bad, vceqq_f32(vsubq_f32(q, vrndmq_f32(q)), half));
            acc = vaddq_s32(acc, vcvtnq_s32_f32(q)); /* to nearest: no ties left */
        }
        if (vmaxvq_u32(bad)) return 0;
        steps += vaddvq_s32(acc);
        if (start + steps >= (int64_t)1 << 24) return 0; /* a partial sum left the binade */
    }
    *s = (float)(start + steps) * ulp;
    return 1;
}

/* For each 4-bit mask, the bytes of the lanes it sets, in order, then
 * zeros: the table lookup that packs a vector's selected lanes to the
 * front. */
static const uint8_t packed_lanes[16][16] = {
    {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {0, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0, 0},
    {8, 9, 10, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {0, 1, 2, 3, 8, 9, 10, 11, 0, 0, 0, 0, 0, 0, 0, 0},
    {4, 5, 6, 7, 8, 9, 10, 11, 0, 0, 0, 0, 0, 0, 0, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0, 0, 0, 0},
    {12, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {0, 1, 2, 3, 12, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0},
    {4, 5, 6, 7, 12, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15, 0, 0, 0, 0},
    {8, 9, 10, 11, 12, 13, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0},
    {0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 0, 0, 0, 0},
    {4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 0, 0, 0, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
};

/* ts_k_select_at_least, 4 floats at a time: a vector's selected lanes are
 * packed to the front (packed_lanes) and stored 4 wide (the lanes past them
 * are overwritten by the next store, and fit: the count never passes i). */
static int select_at_least(const float *x, int n, float floor, float *values, int32_t *indices,
                           float *lo, float *hi) {
    const float32x4_t f = vdupq_n_f32(floor), inf = vdupq_n_f32(INFINITY);
    const float32x4_t ninf = vdupq_n_f32(-INFINITY);
    const uint32x4_t lane_bit = {1, 2, 4, 8};
    const int32x4_t lane = {0, 1, 2, 3};
    float32x4_t least = inf, greatest = ninf;
    int count = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t v = vld1q_f32(x + i);
        const uint32x4_t keep = vcgeq_f32(v, f);
        const uint32_t m = vaddvq_u32(vandq_u32(keep, lane_bit));
        const uint8x16_t pick = vld1q_u8(packed_lanes[m]);
        vst1q_f32(values + count, vreinterpretq_f32_u8(vqtbl1q_u8(vreinterpretq_u8_f32(v), pick)));
        const int32x4_t at = vaddq_s32(lane, vdupq_n_s32(i));
        vst1q_s32(indices + count, vreinterpretq_s32_u8(vqtbl1q_u8(vreinterpretq_u8_s32(at), pick)));
        least = vminq_f32(vbslq_f32(keep, v, inf), least);
        greatest = vmaxq_f32(vbslq_f32(keep, v, ninf), greatest);
        count += __builtin_popcount(m);
    }
    const float l = vminvq_f32(least), g = vmaxvq_f32(greatest);
    /* the last n - i < 4: the scalar filter, its indices from x + i */
    float tail_lo, tail_hi;
    const int k = ts_k_select_at_least(x + i, n - i, floor, values + count, indices + count,
                                       &tail_lo, &tail_hi);
    for (int j = count; j < count + k; j++) indices[j] += i;
    *lo = tail_lo < l ? tail_lo : l, *hi = tail_hi > g ? tail_hi : g;
    return count + k;
}

/* The largest value first (vmaxnmq keeps the number when one operand is
 * NaN, so a NaN in x never wins), then its first index. */
static int32_t argmax(const float *x, int n) {
    if (isnan(x[0])) return 0; /* nothing is greater than it */
    float32x4_t m = vdupq_n_f32(x[0]);
    int i = 0;
    for (; i + 4 <= n; i += 4) m = vmaxnmq_f32(m, vld1q_f32(x + i));
    float best = vmaxnmvq_f32(m);
    for (; i < n; i++) best = x[i] > best ? x[i] : best;
    /* the first element equal to it (-0 equals +0: the first zero wins, as in the loop) */
    const float32x4_t b = vdupq_n_f32(best);
    for (i = 0; i + 4 <= n; i += 4) {
        if (vmaxvq_u32(vceqq_f32(vld1q_f32(x + i), b))) break;
    }
    for (; i < n; i++) {
        if (x[i] == best) return i;
    }
    return 0; /* not reached: best is one of x */
}

const ts_kernels ts_kernels_neon = {
    .name = "neon",
    .matmul_f32 = matmul_f32,
    .matmul_q8 = matmul_q8,
    .quantize_q8 = quantize_q8,
    .rmsnorm = rmsnorm,
    .swiglu = swiglu,
    .attention = attention,
    .attention_exact = attention_exact,
    .softmax_exact = softmax_exact,
    .swiglu_exact = swiglu_exact,
    .argmax = argmax,
    .sum_unordered = sum_unordered,
    .select_at_least = select_at_least,
};
