/*
 * kernels_avx512.c — the kernel set for AVX-512 (F, BW, VL, VNNI) CPUs:
 * Ice Lake and later Xeons, AMD Zen 4 and later.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mfma (see
 * CMakeLists.txt) and only called after kernels.c has checked the CPU.
 *
 * fp32 matmul: each output row is a dot product over 16-float chunks with
 * fused multiply-adds, finished by a fixed reduction tree; rows go in
 * blocks of four so each weight row, once loaded, serves every token.
 * Q8 matmul: the integer dot products use VNNI (u8 x s8): the input is
 * shifted to unsigned by +128 and 128 * (the weights' group sum) taken off
 * again, which is exact; the float accumulation over groups is runq's,
 * in runq's order. Quantization is exact too. The element-wise kernels
 * (rmsnorm, swiglu, attention) are the avx2 set's.
 */
#include "internal.h"

#include <immintrin.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

/* [sum(a), sum(b), sum(c), sum(d)], each by the same tree whatever the
 * others hold. */
static inline __m128 hsum4_ps(__m512 a, __m512 b, __m512 c, __m512 d) {
#define FOLD(v) _mm256_add_ps(_mm512_castps512_ps256(v), \
                              _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)))
    __m256 ab = _mm256_hadd_ps(FOLD(a), FOLD(b));
    __m256 cd = _mm256_hadd_ps(FOLD(c), FOLD(d));
#undef FOLD
    __m256 abcd = _mm256_hadd_ps(ab, cd);
    return _mm_add_ps(_mm256_castps256_ps128(abcd), _mm256_extractf128_ps(abcd, 1));
}

static inline __m128i hsum4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) {
#define FOLD(v) _mm256_add_epi32(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1))
    __m256i ab = _mm256_hadd_epi32(FOLD(a), FOLD(b));
    __m256i cd = _mm256_hadd_epi32(FOLD(c), FOLD(d));
#undef FOLD
    __m256i abcd = _mm256_hadd_epi32(ab, cd);
    return _mm_add_epi32(_mm256_castsi256_si128(abcd), _mm256_extracti128_si256(abcd, 1));
}

static inline __mmask16 tail_mask16(int n) { return (__mmask16)((1u << n) - 1u); }

/* -------------------------------------------------------------- matmul */

/* The four dot products of rows w0..w3 with x over n floats. */
static inline __m128 dot4(const float *w0, const float *w1, const float *w2, const float *w3,
                          const float *x, int n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 xv = _mm512_loadu_ps(x + j);
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + j), xv, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + j), xv, a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + j), xv, a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + j), xv, a3);
    }
    if (j < n) {
        __mmask16 m = tail_mask16(n - j);
        __m512 xv = _mm512_maskz_loadu_ps(m, x + j);
        a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w0 + j), xv, a0);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w1 + j), xv, a1);
        a2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w2 + j), xv, a2);
        a3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w3 + j), xv, a3);
    }
    return hsum4_ps(a0, a1, a2, a3);
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
        for (int t = 0; t < nt; t++) {
            float r[4];
            _mm_storeu_ps(r, dot4(w0, w1, w2, w3, x + (size_t)t * n, n));
            memcpy(out + (size_t)t * d + i, r, (size_t)rows * sizeof(float));
        }
    }
}

/* The four int32 dot products of weight rows w0..w3 with the unsigned
 * (+128) input xu over gs values, still including 128 * sum(w). */
static inline __m128i dot4_u8s8(const int8_t *w0, const int8_t *w1, const int8_t *w2,
                                const int8_t *w3, const int8_t *x, int gs) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
    for (int k = 0; k < gs; k += 64) {
        __mmask64 m = gs - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (gs - k)) - 1);
        /* masked-off lanes: x+128 = 128 against w = 0, adding nothing */
        __m512i xu = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, x + k), bias);
        a0 = _mm512_dpbusd_epi32(a0, xu, _mm512_maskz_loadu_epi8(m, w0 + k));
        a1 = _mm512_dpbusd_epi32(a1, xu, _mm512_maskz_loadu_epi8(m, w1 + k));
        a2 = _mm512_dpbusd_epi32(a2, xu, _mm512_maskz_loadu_epi8(m, w2 + k));
        a3 = _mm512_dpbusd_epi32(a3, xu, _mm512_maskz_loadu_epi8(m, w3 + k));
    }
    return hsum4_epi32(a0, a1, a2, a3);
}

static void matmul_q8(float *out, const int8_t *x_q, const float *x_s, int nt, const int8_t *wq,
                      const float *ws, const int32_t *row_sums, int n, int d, int gs, int i0,
                      int i1) {
    int ng = n / gs; /* whole input groups; a tail of n % gs inputs is ignored */
    for (int i = i0; i < i1; i += 4) {
        int rows = i1 - i < 4 ? i1 - i : 4;
        size_t in[4];
        for (int r = 0; r < 4; r++) in[r] = (size_t)(i + (r < rows ? r : 0)) * n;
        for (int t = 0; t < nt; t++) {
            const int8_t *xq = x_q + (size_t)t * n;
            const float *xs = x_s + (size_t)t * ng;
            float val[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            for (int g = 0; g < ng; g++) {
                size_t j = (size_t)g * gs;
                int32_t dot[4];
                _mm_storeu_si128((__m128i *)dot, dot4_u8s8(wq + in[0] + j, wq + in[1] + j,
                                                          wq + in[2] + j, wq + in[3] + j,
                                                          xq + j, gs));
                for (int r = 0; r < rows; r++) {
                    int32_t ival = dot[r] - 128 * row_sums[(size_t)(i + r) * ng + g];
                    /* runq's order: ((float)ival * w_scale) * x_scale */
                    val[r] += ((float)ival) * ws[(in[r] + j) / gs] * xs[g];
                }
            }
            memcpy(out + (size_t)t * d + i, val, (size_t)rows * sizeof(float));
        }
    }
}

/* ------------------------------------------------------------ the rest */

static void quantize_q8(int8_t *q, float *s, const float *x, int n, int gs) {
    for (int g = 0; g < n / gs; g++) {
        const float *xg = x + (size_t)g * gs;
        int8_t *qg = q + (size_t)g * gs;
        __m512 vmax = _mm512_setzero_ps();
        for (int k = 0; k < gs; k += 16) {
            __mmask16 m = gs - k >= 16 ? 0xFFFF : tail_mask16(gs - k);
            /* abs first: maxps returns its second operand for a NaN, so NaNs are skipped */
            vmax = _mm512_max_ps(_mm512_abs_ps(_mm512_maskz_loadu_ps(m, xg + k)), vmax);
        }
        float scale = _mm512_reduce_max_ps(vmax) / 127.0f;
        s[g] = scale;
        if (scale == 0.0f) {
            memset(qg, 0, (size_t)gs);
            continue;
        }
        const __m512 vs = _mm512_set1_ps(scale), half = _mm512_set1_ps(0.5f);
        const __m512 one = _mm512_set1_ps(1.0f), lim = _mm512_set1_ps(127.0f);
        for (int k = 0; k < gs; k += 16) {
            __mmask16 m = gs - k >= 16 ? 0xFFFF : tail_mask16(gs - k);
            __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, xg + k), vs);
            /* round half away from zero, exactly: trunc, then the exact fraction */
            __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            __m512 f = _mm512_sub_ps(v, t);
            t = _mm512_mask_add_ps(t, _mm512_cmp_ps_mask(f, half, _CMP_GE_OQ), t, one);
            t = _mm512_mask_sub_ps(t, _mm512_cmp_ps_mask(f, _mm512_sub_ps(_mm512_setzero_ps(), half),
                                                         _CMP_LE_OQ),
                                   t, one);
            t = _mm512_min_ps(_mm512_max_ps(t, _mm512_sub_ps(_mm512_setzero_ps(), lim)), lim);
            /* NaN (from a NaN input) quantizes to 0, as in the scalar set */
            t = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), t);
            _mm_mask_storeu_epi8(qg + k, m, _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t)));
        }
    }
}

const ts_kernels ts_kernels_avx512 = {
    .name = "avx512",
    .matmul_f32 = matmul_f32,
    .matmul_q8 = matmul_q8,
    .quantize_q8 = quantize_q8,
    /* shared with the avx2 set (see kernels_avx2.c) */
    .rmsnorm = ts__avx2_rmsnorm,
    .swiglu = ts__avx2_swiglu,
    .attention = ts__avx2_attention,
    .attention_exact = ts__attention_exact,
};
