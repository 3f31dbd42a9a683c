/*
 * kernels_avx2.c — the kernel set for AVX2 + FMA CPUs (Haswell and later,
 * AMD Zen): the same algorithms as kernels_avx512.c, eight floats wide.
 *
 * Compiled with -mavx2 -mfma (see CMakeLists.txt) and only called after
 * kernels.c has checked the CPU. The Q8 integer dot products use
 * maddubs (u8 x s8 -> s16 pairs) on |w| and x with w's sign, which cannot
 * saturate for values in [-127, 127]: exact. Quantization is exact too.
 */
#include "internal.h"

#include <immintrin.h>
#include <math.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

/* [sum(a), sum(b), sum(c), sum(d)], each by the same tree whatever the
 * others hold. */
static inline __m128 hsum4_ps(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 abcd = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

static inline __m128i hsum4_epi32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i abcd = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

/* lanes [0, n) set, n in [0, 8] */
static inline __m256i tail_mask8(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline float hsum_ps(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax_ps(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmin_ps(__m256 v) {
    __m128 s = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_min_ps(s, _mm_movehl_ps(s, s));
    s = _mm_min_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* e^x to about 2 ulp: x = k ln2 + r, |r| <= ln2/2, a degree-6 polynomial
 * for e^r, then 2^k built in the exponent. Returns 0 below -80 (e^-80 is
 * 2e-35): products with values near the float minimum would be denormal,
 * which costs a microcode assist each. */
static inline __m256 exp_ps(__m256 x) {
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-80.0f), _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-80.0f)), _mm256_set1_ps(88.0f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(e)), tiny);
}

/* -------------------------------------------------------------- matmul */

static inline __m128 dot4(const float *w0, const float *w1, const float *w2, const float *w3,
                          const float *x, int n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 xv = _mm256_loadu_ps(x + j);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + j), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + j), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + j), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + j), xv, a3);
    }
    if (j < n) {
        __m256i m = tail_mask8(n - j);
        __m256 xv = _mm256_maskload_ps(x + j, m);
        a0 = _mm256_fmadd_ps(_mm256_maskload_ps(w0 + j, m), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_maskload_ps(w1 + j, m), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_maskload_ps(w2 + j, m), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_maskload_ps(w3 + j, m), xv, a3);
    }
    return hsum4_ps(a0, a1, a2, a3);
}

void ts__avx2_matmul_f32(float *out, const float *x, int nt, const float *w, int n, int d, int i0,
                       int i1) {
    for (int i = i0; i < i1; i += 4) {
        int rows = i1 - i < 4 ? i1 - i : 4;
        /* a short last block repeats its first row; those results are dropped */
        const float *w0 = w + (size_t)i * n;
        const float *w1 = rows > 1 ? w0 + n : w0;
        const float *w2 = rows > 2 ? w0 + 2 * (size_t)n : w0;
        const float *w3 = rows > 3 ? w0 + 3 * (size_t)n : w0;
        for (int t = 0; t < nt; t++) {
            float r[4];
            _mm_storeu_ps(r, dot4(w0, w1, w2, w3, x + (size_t)t * n, n));
            memcpy(out + (size_t)t * d + i, r, (size_t)rows * sizeof(float));
        }
    }
}

/* sum(x * w) over 32 int8 pairs, as 8 int32 partial sums */
static inline __m256i dot32_s8(__m256i x, __m256i w) {
    __m256i p = _mm256_maddubs_epi16(_mm256_abs_epi8(w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}

static void matmul_q8(float *out, const int8_t *x_q, const float *x_s, int nt, const int8_t *wq,
                      const float *ws, const int32_t *row_sums, int n, int d, int gs, int i0,
                      int i1) {
    (void)row_sums;
    int ng = n / gs; /* whole input groups; a tail of n % gs inputs is ignored */
    int gs32 = gs & ~31;
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
                __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
                for (int k = 0; k < gs32; k += 32) {
                    __m256i xv = _mm256_loadu_si256((const __m256i *)(xq + j + k));
                    a0 = _mm256_add_epi32(a0, dot32_s8(xv, _mm256_loadu_si256((const __m256i *)(w[0] + j + k))));
                    a1 = _mm256_add_epi32(a1, dot32_s8(xv, _mm256_loadu_si256((const __m256i *)(w[1] + j + k))));
                    a2 = _mm256_add_epi32(a2, dot32_s8(xv, _mm256_loadu_si256((const __m256i *)(w[2] + j + k))));
                    a3 = _mm256_add_epi32(a3, dot32_s8(xv, _mm256_loadu_si256((const __m256i *)(w[3] + j + k))));
                }
                int32_t dot[4];
                _mm_storeu_si128((__m128i *)dot, hsum4_epi32(a0, a1, a2, a3));
                for (int r = 0; r < rows; r++) {
                    for (int k = gs32; k < gs; k++) dot[r] += (int32_t)xq[j + k] * w[r][j + k];
                    /* runq's order: ((float)ival * w_scale) * x_scale */
                    val[r] += ((float)dot[r]) * scale[r][g] * xs[g];
                }
            }
            memcpy(out + (size_t)t * d + i, val, (size_t)rows * sizeof(float));
        }
    }
}

/* ------------------------------------------------------------ the rest
 * rmsnorm, swiglu and attention are shared with the avx512 set, so both
 * sets give identical activations around the (exact) Q8 matmuls: a Q8
 * rounding sits on a knife edge, and one set of roundings to validate
 * against the golden outputs is better than two. */

static void quantize_q8(int8_t *q, float *s, const float *x, int n, int gs) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * gs;
        int8_t *qg = q + (size_t)g * gs;
        __m256 vmax = _mm256_setzero_ps();
        int k = 0;
        for (; k + 8 <= gs; k += 8) {
            /* maxps returns its second operand for a NaN, so NaNs are skipped */
            vmax = _mm256_max_ps(_mm256_andnot_ps(sign, _mm256_loadu_ps(xg + k)), vmax);
        }
        float wmax = hmax_ps(vmax);
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
        const __m256 vs = _mm256_set1_ps(scale), half = _mm256_set1_ps(0.5f);
        const __m256 one = _mm256_set1_ps(1.0f), lim = _mm256_set1_ps(127.0f);
        for (k = 0; k + 8 <= gs; k += 8) {
            __m256 v = _mm256_div_ps(_mm256_loadu_ps(xg + k), vs);
            /* round half away from zero, exactly: trunc, then the exact fraction */
            __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m256 f = _mm256_sub_ps(v, t);
            t = _mm256_add_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, half, _CMP_GE_OQ), one));
            t = _mm256_sub_ps(t, _mm256_and_ps(_mm256_cmp_ps(f, _mm256_xor_ps(half, sign), _CMP_LE_OQ), one));
            t = _mm256_min_ps(_mm256_max_ps(t, _mm256_xor_ps(lim, sign)), lim);
            /* NaN (from a NaN input) quantizes to 0, as in the scalar set */
            t = _mm256_and_ps(t, _mm256_cmp_ps(v, v, _CMP_ORD_Q));
            __m256i iv = _mm256_cvtps_epi32(t);
            __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(iv), _mm256_extracti128_si256(iv, 1));
            _mm_storel_epi64((__m128i *)(qg + k), _mm_packs_epi16(w16, w16));
        }
        for (; k < gs; k++) {
            double r = round(xg[k] / scale);
            if (!(r >= -127.0 && r <= 127.0)) r = r > 0.0 ? 127.0 : (r < 0.0 ? -127.0 : 0.0);
            qg[k] = (int8_t)r;
        }
    }
}

void ts__avx2_rmsnorm(float *o, const float *x, const float *w, int n) {
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v = _mm256_loadu_ps(x + j);
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    float ss = hsum_ps(acc);
    for (; j < n; j++) ss += x[j] * x[j];
    ss /= n;
    ss += 1e-5f;
    ss = 1.0f / sqrtf(ss);
    const __m256 vss = _mm256_set1_ps(ss);
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 v = _mm256_mul_ps(vss, _mm256_loadu_ps(x + j));
        _mm256_storeu_ps(o + j, _mm256_mul_ps(_mm256_loadu_ps(w + j), v));
    }
    for (; j < n; j++) o[j] = w[j] * (ss * x[j]);
}

void ts__avx2_swiglu(float *h, const float *g, int n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(h + i);
        __m256 sig = _mm256_div_ps(one, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(_mm256_mul_ps(v, sig), _mm256_loadu_ps(g + i)));
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
    if (n >= 8) {
        __m256 vmax = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) vmax = _mm256_max_ps(_mm256_loadu_ps(x + i), vmax);
        max_val = hmax_ps(vmax);
    }
    for (; i < n; i++) {
        if (x[i] > max_val) max_val = x[i];
    }
    return max_val;
}

/* One head's attention. Scores go a key block (TS_KEY_BLOCK = 16
 * positions, two registers) at a time: lane-parallel fused multiply-adds
 * over the head, with even and odd dimensions in separate accumulators so
 * consecutive adds do not wait on each other. Lanes past n_pos become -inf,
 * which the max ignores and exp_ps turns into 0. The weighted sum of the
 * values keeps four partial sums per 8 dimensions and applies 1/sum once
 * at the end. */
void ts__avx2_attention(float *out, float *att, const float *q, const float *keys,
                        const float *values, int n_pos, int head_size) {
    const __m256 scale = _mm256_set1_ps(sqrtf(head_size)), ninf = _mm256_set1_ps(-INFINITY);
    __m256 vmax = ninf;
    for (int t = 0; t < n_pos; t += TS_KEY_BLOCK) {
        const float *kb = keys + (size_t)t * head_size; /* t is a block's first position */
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, b0 = a0, b1 = a0;
        int i = 0;
        for (; i + 2 <= head_size; i += 2) {
            const float *k = kb + (size_t)i * TS_KEY_BLOCK;
            __m256 q0 = _mm256_set1_ps(q[i]), q1 = _mm256_set1_ps(q[i + 1]);
            a0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k), a0);
            b0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k + 8), b0);
            a1 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(k + 16), a1);
            b1 = _mm256_fmadd_ps(q1, _mm256_loadu_ps(k + 24), b1);
        }
        if (i < head_size) {
            const float *k = kb + (size_t)i * TS_KEY_BLOCK;
            __m256 q0 = _mm256_set1_ps(q[i]);
            a0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k), a0);
            b0 = _mm256_fmadd_ps(q0, _mm256_loadu_ps(k + 8), b0);
        }
        __m256 s0 = _mm256_div_ps(_mm256_add_ps(a0, a1), scale);
        __m256 s1 = _mm256_div_ps(_mm256_add_ps(b0, b1), scale);
        if (n_pos - t < TS_KEY_BLOCK) {
            s0 = _mm256_blendv_ps(ninf, s0, _mm256_castsi256_ps(tail_mask8(n_pos - t)));
            s1 = _mm256_blendv_ps(ninf, s1, _mm256_castsi256_ps(tail_mask8(n_pos - t - 8)));
        }
        _mm256_storeu_ps(att + t, s0);
        _mm256_storeu_ps(att + t + 8, s1);
        vmax = _mm256_max_ps(vmax, _mm256_max_ps(s0, s1));
    }

    /* softmax over whole blocks (the -inf lanes give 0), unnormalized */
    const __m256 mx = _mm256_set1_ps(hmax_ps(vmax));
    __m256 vsum = _mm256_setzero_ps();
    for (int t = 0; t < n_pos; t += 8) {
        __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(att + t), mx));
        vsum = _mm256_add_ps(vsum, e);
        _mm256_storeu_ps(att + t, e);
    }
    const __m256 inv = _mm256_set1_ps(1.0f / hsum_ps(vsum));

    /* weighted sum of the values, 8 dimensions at a time, over four
     * interleaved partial sums (one dependent add per position would
     * leave the FMA units idle) */
    for (int i = 0; i < head_size; i += 8) {
        __m256i m = tail_mask8(head_size - i < 8 ? head_size - i : 8);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *v = values + i;
        const size_t hs = (size_t)head_size;
        int p = 0;
        for (; p + 4 <= n_pos; p += 4, v += 4 * hs) {
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(att[p]), _mm256_maskload_ps(v, m), a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(att[p + 1]), _mm256_maskload_ps(v + hs, m), a1);
            a2 = _mm256_fmadd_ps(_mm256_set1_ps(att[p + 2]), _mm256_maskload_ps(v + 2 * hs, m), a2);
            a3 = _mm256_fmadd_ps(_mm256_set1_ps(att[p + 3]), _mm256_maskload_ps(v + 3 * hs, m), a3);
        }
        for (; p < n_pos; p++, v += hs) {
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(att[p]), _mm256_maskload_ps(v, m), a0);
        }
        __m256 total = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
        _mm256_maskstore_ps(out + i, m, _mm256_mul_ps(total, inv));
    }
}

/* ------------------------------------------------- exact exponentials
 * libm's expf bit for bit, 8 at a time, as in kernels_avx512.c (which says
 * why a value 1/256 ulp or more from a rounding midpoint rounds to libm's
 * float): each lane in double precision, e^x = 2^(k/4) e^r with
 * k = round(4 x / ln2), |r| <= ln2/8, 2^(k/4) from a 4-entry table and the
 * exponent bits, e^r the Taylor series to r^6 (relative error below 2^-37). */
static inline __m256d exp_pd(__m256d x) {
    /* k + 1.5 * 2^52: k in the low bits, two's complement (the shift trick) */
    const __m256d shift = _mm256_set1_pd(0x1.8p52);
    __m256d kd = _mm256_fmadd_pd(x, _mm256_set1_pd(0x1.71547652b82fep+2), shift); /* 4/ln2 */
    const __m256i kbits = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    /* r = x - k ln2/4, ln2/4 in two parts: k times the first (32 bits) is exact */
    __m256d r = _mm256_fnmadd_pd(kd, _mm256_set1_pd(0x1.62e42feep-3), x);
    r = _mm256_fnmadd_pd(kd, _mm256_set1_pd(0x1.a39ef35793c76p-35), r);
    __m256d p = _mm256_set1_pd(1.0 / 720);
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 120));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 24));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0 / 6));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(0.5));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(1.0));
    /* 2^(j/4), j = k mod 4, each the double nearest: a lane picks its
     * entry's two float halves, 2j and 2j + 1 */
    const __m256d table = _mm256_setr_pd(1.0, 0x1.306fe0a31b715p+0, 0x1.6a09e667f3bcdp+0,
                                         0x1.ae89f995ad3adp+0);
    const __m256i j2 = _mm256_slli_epi64(_mm256_and_si256(kbits, _mm256_set1_epi64x(3)), 1);
    const __m256i pick =
        _mm256_or_si256(j2, _mm256_slli_epi64(_mm256_add_epi64(j2, _mm256_set1_epi64x(1)), 32));
    const __m256d t = _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(table), pick));
    /* floor(k/4) into the exponent field: the bits above it fall off */
    const __m256i scale = _mm256_slli_epi64(_mm256_srli_epi64(kbits, 2), 52);
    return _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(_mm256_mul_pd(p, t)), scale));
}

/* 4 lanes: their floats, and in *near (a bit per lane) those within 1/256
 * ulp of a rounding midpoint: the double's 29 bits below a float's last
 * place within 2^21 of 1 followed by zeros, read in y's own binade. */
static inline __m128 exp_half(__m128 x4, int *near) {
    const __m256d y = exp_pd(_mm256_cvtps_pd(x4));
    const __m256i below = _mm256_and_si256(_mm256_castpd_si256(y), _mm256_set1_epi64x((1 << 29) - 1));
    /* below in (2^28 - 2^21, 2^28 + 2^21): off in (0, 2^22) */
    const __m256i off = _mm256_sub_epi64(below, _mm256_set1_epi64x((1 << 28) - (1 << 21)));
    const __m256i in = _mm256_and_si256(_mm256_cmpgt_epi64(off, _mm256_setzero_si256()),
                                        _mm256_cmpgt_epi64(_mm256_set1_epi64x(1 << 22), off));
    *near = _mm256_movemask_pd(_mm256_castsi256_pd(in));
    return _mm256_cvtpd_ps(y);
}

/* expf of 8 lanes: those in (-104, -87) or past 88 (results near or past
 * the float range), NaN, and those near a midpoint go to expf itself; at or
 * below -104 both give +0. */
static inline __m256 expf_exact(__m256 x) {
    const __m256 in_range = _mm256_and_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ),
                                          _mm256_cmp_ps(x, _mm256_set1_ps(88.0f), _CMP_LE_OQ));
    const __m256 zero = _mm256_cmp_ps(x, _mm256_set1_ps(-104.0f), _CMP_LE_OQ);
    const __m256 safe = _mm256_and_ps(x, in_range); /* the others: +0 */
    int near_lo, near_hi;
    const __m128 lo = exp_half(_mm256_castps256_ps128(safe), &near_lo);
    const __m128 hi = exp_half(_mm256_extractf128_ps(safe, 1), &near_hi);
    __m256 y = _mm256_andnot_ps(zero, _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1));
    const int range = _mm256_movemask_ps(in_range), zeros = _mm256_movemask_ps(zero);
    const int slow = ((~range & ~zeros) | ((near_lo | near_hi << 4) & range)) & 0xff;
    if (slow) {
        float xs[8], ys[8];
        _mm256_storeu_ps(xs, x);
        _mm256_storeu_ps(ys, y);
        for (int i = 0; i < 8; i++) {
            if (slow >> i & 1) ys[i] = expf(xs[i]);
        }
        y = _mm256_loadu_ps(ys);
    }
    return y;
}

/* The scalar set's softmax bit for bit: expf_exact, the sum in order; the
 * max and the division are exact in any order. */
static void softmax_exact(float *x, int n) {
    const float max_val = max_of(x, n);
    const __m256 vm = _mm256_set1_ps(max_val);
    int i = 0;
    float sum = 0.0f;
    for (; i + 8 <= n; i += 8) {
        _mm256_storeu_ps(x + i, expf_exact(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
        for (int j = 0; j < 8; j++) sum += x[i + j];
    }
    for (; i < n; i++) {
        x[i] = expf(x[i] - max_val);
        sum += x[i];
    }
    const __m256 vsum = _mm256_set1_ps(sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_div_ps(_mm256_loadu_ps(x + i), vsum));
    for (; i < n; i++) x[i] /= sum;
}

/* ------------------------------------------- a vocabulary's first look
 * kernels_avx512.c's exp_sum_approx and probs_exact (which say how), 8
 * lanes at a time: the same operations, so the same values (2^-23 of
 * expf over [-87, 0], checked against glibc over all of them; 0 below). */

/* e^d for d <= 0 (no NaN), to 2^-23 relative from -87 up; 0 below it */
static inline __m256 exp_approx(__m256 d) {
    const __m256 keep = _mm256_cmp_ps(d, _mm256_set1_ps(-87.0f), _CMP_GE_OQ); /* not -inf */
    d = _mm256_max_ps(d, _mm256_set1_ps(-87.0f));
    const __m256 k = _mm256_round_ps(_mm256_mul_ps(d, _mm256_set1_ps(0x1.715476p+0f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0x1.62e4p-1f), d);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0x1.7f7d1cp-20f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    /* 2^k, k in [-126, 0], in the exponent field; p 2^k stays normal */
    const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k),
                                                             _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(_mm256_mul_ps(p, _mm256_castsi256_ps(scale)), keep);
}

/* x[i0, i1)'s exponentials into v, and their ulps onto *units, when no lane
 * lies near a midpoint and the sum stays in its binade; whether they did */
static inline int add_block(const float *x, int i0, int i1, __m256 vm, float *v, float inv_ulp,
                            int64_t *units) {
    const __m256 rel = _mm256_set1_ps(TS_EXP_APPROX_REL), below = _mm256_set1_ps(0.5f - 0x1p-24f);
    const __m256 inv = _mm256_set1_ps(inv_ulp);
    const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    __m256i steps = _mm256_setzero_si256();
    __m256 unsure = _mm256_setzero_ps();
    for (int i = i0; i < i1; i += 8) {
        const __m256i in = tail_mask8(i1 - i < 8 ? i1 - i : 8);
        const __m256 d = _mm256_sub_ps(_mm256_maskload_ps(x + i, in), vm);
        const __m256 e = _mm256_and_ps(exp_approx(d), _mm256_castsi256_ps(in));
        _mm256_maskstore_ps(v + i, in, e);
        const __m256 q = _mm256_mul_ps(e, inv);
        const __m256i whole = _mm256_cvtps_epi32(q); /* to nearest */
        const __m256 off = _mm256_and_ps(_mm256_sub_ps(q, _mm256_cvtepi32_ps(whole)), magnitude);
        unsure = _mm256_or_ps(unsure, _mm256_cmp_ps(_mm256_fmadd_ps(q, rel, off), below, _CMP_NLT_UQ));
        steps = _mm256_add_epi32(steps, whole);
    }
    if (!_mm256_testz_ps(unsure, unsure)) return 0;
    __m128i t = _mm_add_epi32(_mm256_castsi256_si128(steps), _mm256_extracti128_si256(steps, 1));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
    t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
    const int64_t next = *units + _mm_cvtsi128_si32(t);
    if (next >= ((int64_t)1 << 24) - 1) return 0;
    *units = next;
    return 1;
}

static int exp_sum_approx(const float *x, int n, float reach, int most, float *v, float *max_out,
                          float *sum_out) {
    __m256 vmax = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) {
        const __m256 in = _mm256_castsi256_ps(tail_mask8(n - i < 8 ? n - i : 8));
        const __m256 xv = _mm256_maskload_ps(x + i, _mm256_castps_si256(in));
        nan = _mm256_or_ps(nan, _mm256_and_ps(_mm256_cmp_ps(xv, xv, _CMP_UNORD_Q), in));
        vmax = _mm256_blendv_ps(vmax, _mm256_max_ps(xv, vmax), in);
    }
    const float max_val = hmax_ps(vmax);
    if (!_mm256_testz_ps(nan, nan) || !isfinite(max_val)) return 0;
    /* the gate: a flat row stops after `most` logits within reach */
    const __m256 near = _mm256_set1_ps(max_val - reach);
    int within = 0;
    for (int i = 0; i < n; i += 8) {
        const __m256 in = _mm256_castsi256_ps(tail_mask8(n - i < 8 ? n - i : 8));
        const __m256 xv = _mm256_maskload_ps(x + i, _mm256_castps_si256(in));
        within += __builtin_popcount(
            (unsigned)_mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(xv, near, _CMP_GE_OQ), in)));
        if (within > most) return 0;
    }
    const __m256 vm = _mm256_set1_ps(max_val);
    float sum = 0.0f, ulp = 0.0f, inv_ulp = 0.0f;
    int64_t units = 0; /* sum = units * ulp, units in [2^23, 2^24), while `binade` */
    int binade = 0;
    for (int b = 0; b < n; b += 128) { /* a lane adds under 2^21 ulps a vector */
        const int b_end = n - b < 128 ? n : b + 128;
        if (binade && add_block(x, b, b_end, vm, v, inv_ulp, &units)) continue;
        for (int i = b; i < b_end; i += 8) {
            const int end = b_end - i < 8 ? b_end : i + 8;
            if (binade) {
                if (add_block(x, i, end, vm, v, inv_ulp, &units)) continue;
                sum = (float)units * ulp;
            }
            /* this vector exactly, in order */
            const __m256i in = tail_mask8(end - i);
            const __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_maskload_ps(x + i, in), vm),
                                           _mm256_castsi256_ps(in));
            _mm256_maskstore_ps(v + i, in, exp_approx(d));
            float exact[8];
            _mm256_storeu_ps(exact, expf_exact(d));
            for (int j = 0; j < end - i; j++) sum += exact[j];
            binade = ts_k_binade(sum, &ulp, &inv_ulp, &units);
        }
    }
    if (binade) sum = (float)units * ulp;
    *max_out = max_val, *sum_out = sum;
    return 1;
}

/* ts_k_probs_exact, 8 gathered at a time */
static void probs_exact(const float *x, const int32_t *index, int m, float max, float sum,
                        float *out) {
    const __m256 vm = _mm256_set1_ps(max), vs = _mm256_set1_ps(sum);
    for (int j = 0; j < m; j += 8) {
        const __m256i in = tail_mask8(m - j < 8 ? m - j : 8);
        const __m256i idx = _mm256_maskload_epi32(index + j, in);
        const __m256 xv = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), x, idx,
                                                   _mm256_castsi256_ps(in), 4);
        const __m256 d = _mm256_and_ps(_mm256_sub_ps(xv, vm), _mm256_castsi256_ps(in));
        _mm256_maskstore_ps(out + j, in, _mm256_div_ps(expf_exact(d), vs));
    }
}

/* The scalar swiglu bit for bit: h * (1 / (1 + e^-h)) * g, each step
 * rounded as there. */
static void swiglu_exact(float *h, const float *g, int n) {
    const __m256 one = _mm256_set1_ps(1.0f);
    /* -v as the scalar code negates: the sign bit flipped (NaNs too) */
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(h + i);
        const __m256 e = expf_exact(_mm256_xor_ps(v, sign));
        v = _mm256_mul_ps(v, _mm256_div_ps(one, _mm256_add_ps(one, e)));
        _mm256_storeu_ps(h + i, _mm256_mul_ps(v, _mm256_loadu_ps(g + i)));
    }
    ts_kernels_scalar.swiglu(h + i, g + i, n - i); /* the tail */
}

/* The scores of `nb` (1 to 4) consecutive key blocks side by side, lanes
 * 0-7 and 8-15 of each in two registers: eight chains of dependent adds
 * overlap, and each lane still sums its position over the head in order,
 * with a separate multiply and add, as the scalar set does. */
static inline __attribute__((always_inline)) void exact_scores(float *att, const float *q,
                                                               const float *kb, size_t block,
                                                               int head_size, __m256 scale,
                                                               int nb) {
    /* registers, not an array: ASan's fake stack frames do not keep a
     * vector array's alignment (see kernels_avx512.c's expf_exact) */
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
    for (int i = 0; i < head_size; i++) {
        const __m256 qi = _mm256_set1_ps(q[i]);
        const float *k = kb + (size_t)i * TS_KEY_BLOCK;
        s0 = _mm256_add_ps(s0, _mm256_mul_ps(qi, _mm256_loadu_ps(k)));
        s1 = _mm256_add_ps(s1, _mm256_mul_ps(qi, _mm256_loadu_ps(k + 8)));
        if (nb > 1) {
            s2 = _mm256_add_ps(s2, _mm256_mul_ps(qi, _mm256_loadu_ps(k + block)));
            s3 = _mm256_add_ps(s3, _mm256_mul_ps(qi, _mm256_loadu_ps(k + block + 8)));
        }
        if (nb > 2) {
            s4 = _mm256_add_ps(s4, _mm256_mul_ps(qi, _mm256_loadu_ps(k + 2 * block)));
            s5 = _mm256_add_ps(s5, _mm256_mul_ps(qi, _mm256_loadu_ps(k + 2 * block + 8)));
        }
        if (nb > 3) {
            s6 = _mm256_add_ps(s6, _mm256_mul_ps(qi, _mm256_loadu_ps(k + 3 * block)));
            s7 = _mm256_add_ps(s7, _mm256_mul_ps(qi, _mm256_loadu_ps(k + 3 * block + 8)));
        }
    }
    /* lanes past n_pos land in att's padding and are not read */
    _mm256_storeu_ps(att, _mm256_div_ps(s0, scale));
    _mm256_storeu_ps(att + 8, _mm256_div_ps(s1, scale));
    if (nb > 1) {
        _mm256_storeu_ps(att + 16, _mm256_div_ps(s2, scale));
        _mm256_storeu_ps(att + 24, _mm256_div_ps(s3, scale));
    }
    if (nb > 2) {
        _mm256_storeu_ps(att + 32, _mm256_div_ps(s4, scale));
        _mm256_storeu_ps(att + 40, _mm256_div_ps(s5, scale));
    }
    if (nb > 3) {
        _mm256_storeu_ps(att + 48, _mm256_div_ps(s6, scale));
        _mm256_storeu_ps(att + 56, _mm256_div_ps(s7, scale));
    }
}

/* The scalar set's attention, operation for operation (no FMA, the same
 * summation orders, libm's expf), vectorized where that costs nothing in
 * rounding: a key block's 16 positions' scores at once (lanes = positions,
 * each summed over the head in order), four blocks at a time, and the
 * weighted sum across the head's dimensions (each dimension summed over
 * positions in order), 32 at a time. */
void ts__attention_exact(float *out, float *att, const float *q, const float *keys,
                         const float *values, int n_pos, int head_size) {
    const __m256 scale = _mm256_set1_ps(sqrtf(head_size));
    const size_t block = (size_t)TS_KEY_BLOCK * head_size;
    const int n_blocks = (n_pos + TS_KEY_BLOCK - 1) / TS_KEY_BLOCK;
    int b = 0;
    for (; b + 4 <= n_blocks; b += 4) {
        exact_scores(att + b * TS_KEY_BLOCK, q, keys + b * block, block, head_size, scale, 4);
    }
    /* the last one to three blocks, with as many chains */
    const float *kb = keys + b * block;
    float *ab = att + b * TS_KEY_BLOCK;
    if (n_blocks - b == 3) exact_scores(ab, q, kb, block, head_size, scale, 3);
    if (n_blocks - b == 2) exact_scores(ab, q, kb, block, head_size, scale, 2);
    if (n_blocks - b == 1) exact_scores(ab, q, kb, block, head_size, scale, 1);
    softmax_exact(att, n_pos);

    /* 32 dimensions per pass in four registers, so four chains of
     * dependent adds overlap; a lane past the head loads and stores
     * nothing */
    const size_t ahead = 8 * (size_t)head_size;
    for (int c = 0; c < head_size; c += 32) {
        const __m256i m0 = tail_mask8(head_size - c), m1 = tail_mask8(head_size - c - 8),
                      m2 = tail_mask8(head_size - c - 16), m3 = tail_mask8(head_size - c - 24);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        const float *v = values + c;
        for (int p = 0; p < n_pos; p++, v += head_size) {
            /* the row 8 positions on (see kernels_avx512.c) */
            _mm_prefetch((const char *)(v + ahead), _MM_HINT_T0);
            _mm_prefetch((const char *)(v + ahead) + 64, _MM_HINT_T0);
            const __m256 w = _mm256_set1_ps(att[p]);
            a0 = _mm256_add_ps(a0, _mm256_mul_ps(w, _mm256_maskload_ps(v, m0)));
            a1 = _mm256_add_ps(a1, _mm256_mul_ps(w, _mm256_maskload_ps(v + 8, m1)));
            a2 = _mm256_add_ps(a2, _mm256_mul_ps(w, _mm256_maskload_ps(v + 16, m2)));
            a3 = _mm256_add_ps(a3, _mm256_mul_ps(w, _mm256_maskload_ps(v + 24, m3)));
        }
        _mm256_maskstore_ps(out + c, m0, a0);
        _mm256_maskstore_ps(out + c + 8, m1, a1);
        _mm256_maskstore_ps(out + c + 16, m2, a2);
        _mm256_maskstore_ps(out + c + 24, m3, a3);
    }
}

/* ts_k_sum_unordered's test and sum, 8 floats at a time (as in
 * kernels_avx512.c): q = x / ulp must lie in [-0, 2^23) (an unsigned
 * compare of its bits, done as a signed one with the sign bits flipped,
 * also rejects negatives and NaNs), its fraction must not be one half, and
 * the rounded q are summed as integers. A lane sums at most 16 values
 * (< 2^27) before the lanes are added into a 64-bit total, so nothing
 * wraps. */
static int sum_unordered(const float *x, int n, float *s) {
    float ulp, inv_ulp;
    int64_t start;
    if (!ts_k_binade(*s, &ulp, &inv_ulp, &start)) return 0;
    const __m256 inv = _mm256_set1_ps(inv_ulp), half = _mm256_set1_ps(0.5f);
    const __m256i flip = _mm256_set1_epi32(INT32_MIN);
    const __m256i below = _mm256_set1_epi32((int32_t)(0x4b000000u ^ 0x80000000u) - 1); /* 2^23's bits */
    int64_t steps = 0;
    for (int i = 0; i < n; i += 128) {
        __m256i acc = _mm256_setzero_si256();
        __m256 bad = _mm256_setzero_ps();
        const int end = n - i < 128 ? n : i + 128;
        for (int j = i; j < end; j += 8) {
            const __m256 v = end - j >= 8 ? _mm256_loadu_ps(x + j)
                                          : _mm256_maskload_ps(x + j, tail_mask8(end - j));
            const __m256 q = _mm256_mul_ps(v, inv);
            const __m256i past = _mm256_cmpgt_epi32(_mm256_xor_si256(_mm256_castps_si256(q), flip), below);
            bad = _mm256_or_ps(bad, _mm256_and_ps(_mm256_castsi256_ps(past),
                                                  _mm256_cmp_ps(q, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
            const __m256 part = _mm256_sub_ps(q, _mm256_floor_ps(q));
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(part, half, _CMP_EQ_OQ));
            acc = _mm256_add_epi32(acc, _mm256_cvtps_epi32(q)); /* to nearest: no ties left */
        }
        if (!_mm256_testz_ps(bad, bad)) return 0;
        __m128i t = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0x4e));
        t = _mm_add_epi32(t, _mm_shuffle_epi32(t, 0xb1));
        steps += _mm_cvtsi128_si32(t);
        if (start + steps >= (int64_t)1 << 24) return 0; /* a partial sum left the binade */
    }
    *s = (float)(start + steps) * ulp;
    return 1;
}

/* For each 8-bit mask, the lanes it sets in order, a nibble each, the
 * lowest first: the permutation that packs a vector's selected lanes to
 * the front. */
static const uint32_t packed_lanes[256] = {
    0x00000000, 0x00000000, 0x00000001, 0x00000010, 0x00000002, 0x00000020, 0x00000021, 0x00000210,
    0x00000003, 0x00000030, 0x00000031, 0x00000310, 0x00000032, 0x00000320, 0x00000321, 0x00003210,
    0x00000004, 0x00000040, 0x00000041, 0x00000410, 0x00000042, 0x00000420, 0x00000421, 0x00004210,
    0x00000043, 0x00000430, 0x00000431, 0x00004310, 0x00000432, 0x00004320, 0x00004321, 0x00043210,
    0x00000005, 0x00000050, 0x00000051, 0x00000510, 0x00000052, 0x00000520, 0x00000521, 0x00005210,
    0x00000053, 0x00000530, 0x00000531, 0x00005310, 0x00000532, 0x00005320, 0x00005321, 0x00053210,
    0x00000054, 0x00000540, 0x00000541, 0x00005410, 0x00000542, 0x00005420, 0x00005421, 0x00054210,
    0x00000543, 0x00005430, 0x00005431, 0x00054310, 0x00005432, 0x00054320, 0x00054321, 0x00543210,
    0x00000006, 0x00000060, 0x00000061, 0x00000610, 0x00000062, 0x00000620, 0x00000621, 0x00006210,
    0x00000063, 0x00000630, 0x00000631, 0x00006310, 0x00000632, 0x00006320, 0x00006321, 0x00063210,
    0x00000064, 0x00000640, 0x00000641, 0x00006410, 0x00000642, 0x00006420, 0x00006421, 0x00064210,
    0x00000643, 0x00006430, 0x00006431, 0x00064310, 0x00006432, 0x00064320, 0x00064321, 0x00643210,
    0x00000065, 0x00000650, 0x00000651, 0x00006510, 0x00000652, 0x00006520, 0x00006521, 0x00065210,
    0x00000653, 0x00006530, 0x00006531, 0x00065310, 0x00006532, 0x00065320, 0x00065321, 0x00653210,
    0x00000654, 0x00006540, 0x00006541, 0x00065410, 0x00006542, 0x00065420, 0x00065421, 0x00654210,
    0x00006543, 0x00065430, 0x00065431, 0x00654310, 0x00065432, 0x00654320, 0x00654321, 0x06543210,
    0x00000007, 0x00000070, 0x00000071, 0x00000710, 0x00000072, 0x00000720, 0x00000721, 0x00007210,
    0x00000073, 0x00000730, 0x00000731, 0x00007310, 0x00000732, 0x00007320, 0x00007321, 0x00073210,
    0x00000074, 0x00000740, 0x00000741, 0x00007410, 0x00000742, 0x00007420, 0x00007421, 0x00074210,
    0x00000743, 0x00007430, 0x00007431, 0x00074310, 0x00007432, 0x00074320, 0x00074321, 0x00743210,
    0x00000075, 0x00000750, 0x00000751, 0x00007510, 0x00000752, 0x00007520, 0x00007521, 0x00075210,
    0x00000753, 0x00007530, 0x00007531, 0x00075310, 0x00007532, 0x00075320, 0x00075321, 0x00753210,
    0x00000754, 0x00007540, 0x00007541, 0x00075410, 0x00007542, 0x00075420, 0x00075421, 0x00754210,
    0x00007543, 0x00075430, 0x00075431, 0x00754310, 0x00075432, 0x00754320, 0x00754321, 0x07543210,
    0x00000076, 0x00000760, 0x00000761, 0x00007610, 0x00000762, 0x00007620, 0x00007621, 0x00076210,
    0x00000763, 0x00007630, 0x00007631, 0x00076310, 0x00007632, 0x00076320, 0x00076321, 0x00763210,
    0x00000764, 0x00007640, 0x00007641, 0x00076410, 0x00007642, 0x00076420, 0x00076421, 0x00764210,
    0x00007643, 0x00076430, 0x00076431, 0x00764310, 0x00076432, 0x00764320, 0x00764321, 0x07643210,
    0x00000765, 0x00007650, 0x00007651, 0x00076510, 0x00007652, 0x00076520, 0x00076521, 0x00765210,
    0x00007653, 0x00076530, 0x00076531, 0x00765310, 0x00076532, 0x00765320, 0x00765321, 0x07653210,
    0x00007654, 0x00076540, 0x00076541, 0x00765410, 0x00076542, 0x00765420, 0x00765421, 0x07654210,
    0x00076543, 0x00765430, 0x00765431, 0x07654310, 0x00765432, 0x07654320, 0x07654321, 0x76543210,
};

/* ts_k_select_at_least, 8 floats at a time: a vector's selected lanes are
 * packed to the front (packed_lanes) and stored 8 wide (the lanes past them
 * are overwritten by the next store, and fit: the count never passes i). */
static int select_at_least(const float *x, int n, float floor, float *values, int32_t *indices,
                           float *lo, float *hi) {
    const __m256 f = _mm256_set1_ps(floor), inf = _mm256_set1_ps(INFINITY);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256i nibble = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    __m256 least = inf, greatest = ninf;
    int count = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        const __m256 keep = _mm256_cmp_ps(v, f, _CMP_GE_OQ);
        const int m = _mm256_movemask_ps(keep);
        const __m256i pick = _mm256_and_si256(
            _mm256_srlv_epi32(_mm256_set1_epi32((int)packed_lanes[m]), nibble), _mm256_set1_epi32(7));
        _mm256_storeu_ps(values + count, _mm256_permutevar8x32_ps(v, pick));
        _mm256_storeu_si256((__m256i *)(indices + count), _mm256_add_epi32(pick, _mm256_set1_epi32(i)));
        least = _mm256_min_ps(_mm256_blendv_ps(inf, v, keep), least);
        greatest = _mm256_max_ps(_mm256_blendv_ps(ninf, v, keep), greatest);
        count += __builtin_popcount((unsigned)m);
    }
    const float l = hmin_ps(least), g = hmax_ps(greatest);
    /* the last n - i < 8: the scalar filter, its indices from x + i */
    float tail_lo, tail_hi;
    const int k = ts_k_select_at_least(x + i, n - i, floor, values + count, indices + count,
                                       &tail_lo, &tail_hi);
    for (int j = count; j < count + k; j++) indices[j] += i;
    *lo = tail_lo < l ? tail_lo : l, *hi = tail_hi > g ? tail_hi : g;
    return count + k;
}

/* The largest value first (a NaN in x loses every max_ps: it returns its
 * second operand, the running maximum), then its first index. */
static int32_t argmax(const float *x, int n) {
    if (isnan(x[0])) return 0; /* nothing is greater than it */
    __m256 m = _mm256_set1_ps(x[0]);
    int i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(_mm256_loadu_ps(x + i), m);
    float lanes[8], best;
    _mm256_storeu_ps(lanes, m);
    best = lanes[0];
    for (int k = 1; k < 8; k++) best = lanes[k] > best ? lanes[k] : best;
    for (; i < n; i++) best = x[i] > best ? x[i] : best;
    /* the first element equal to it (-0 equals +0: the first zero wins, as in the loop) */
    const __m256 b = _mm256_set1_ps(best);
    for (i = 0; i + 8 <= n; i += 8) {
        int eq = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), b, _CMP_EQ_OQ));
        if (eq) return i + __builtin_ctz((unsigned)eq);
    }
    for (; i < n; i++) {
        if (x[i] == best) return i;
    }
    return 0; /* not reached: best is one of x */
}

const ts_kernels ts_kernels_avx2 = {
    .name = "avx2",
    .matmul_f32 = ts__avx2_matmul_f32,
    .matmul_q8 = matmul_q8,
    .quantize_q8 = quantize_q8,
    .rmsnorm = ts__avx2_rmsnorm,
    .swiglu = ts__avx2_swiglu,
    .attention = ts__avx2_attention,
    .attention_exact = ts__attention_exact,
    .softmax_exact = softmax_exact,
    .swiglu_exact = swiglu_exact,
    .argmax = argmax,
    .sum_unordered = sum_unordered,
    .select_at_least = select_at_least,
    .exp_sum_approx = exp_sum_approx,
    .probs_exact = probs_exact,
};
