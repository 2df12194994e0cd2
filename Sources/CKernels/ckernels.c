// Vectorised inner loops, written once with Clang vector types and instantiated per instruction set.
//
// Each kernel body is a macro expanded three times: for AVX-512 (16-float vectors), AVX2+FMA (8) and baseline
// SSE2 (4), each in a function carrying that `target` attribute, so the compiler emits the matching
// instructions. A small resolver picks one variant per kernel the first time it is called, with
// __builtin_cpu_supports (which also checks that the OS saves the wider registers). This is function
// multiversioning done by hand rather than with target_clones, because the register tiling differs per
// instruction set (32 zmm registers hold a 6x32 GEMM tile; 16 ymm registers only a 6x16 one).
#include "ckernels.h"

#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64), aligned(4)));
typedef float v8 __attribute__((vector_size(32), aligned(4)));
typedef float v4 __attribute__((vector_size(16), aligned(4)));

#define LOAD(V, p) (*(const V *)(p))
#define STORE(V, p, v) (*(V *)(p) = (v))
// A vector of zeros plus a constant folds to a constant vector; for run-time scalars the kernels multiply scalar
// by vector directly, which compiles to a broadcast (`(V){0} + s` would keep an add, since 0 + -0.0 is +0.0).
#define SPLAT(V, s) ((V){0} + (s))

#define T_AVX512 __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,bmi,bmi2")))
#define T_AVX2 __attribute__((target("avx2,fma,f16c,bmi,bmi2")))
#define T_SSE2

static inline float act1(float v, int act) {
    if (act == CK_ACT_RELU) return v > 0 ? v : 0;
    if (act == CK_ACT_RELU6) return v < 0 ? 0 : (v > 6 ? 6 : v);
    return v;
}

#define ACTV(V, v, act)                                                                                       \
    ((act) == CK_ACT_NONE ? (v)                                                                               \
     : (act) == CK_ACT_RELU ? __builtin_elementwise_max((v), SPLAT(V, 0.0f))                                  \
                            : __builtin_elementwise_min(__builtin_elementwise_max((v), SPLAT(V, 0.0f)), SPLAT(V, 6.0f)))

// ---------------------------------------------------------------------------------------------------------------
// Pointwise GEMM: row tiles of R rows x (NV vectors of L floats) columns held in registers across the whole k loop.
// Three tile shapes per instruction set: a wide one (NV = WIDE) while at least WIDE vectors of columns remain (with
// 32 registers, 6 x 4 zmm: each broadcast of x feeds 4 FMAs), the normal one (NV = 2) for what is left above one
// vector, and a narrow one (2R rows x 1 vector) for a last block of at most L columns, so that outputs like 16, 40
// or 112 channels do not compute a padding vector of zeros.

#define DEFINE_POINTWISE_TILE(NAME, TARGET, V, L, R, NV)                                                        \
    TARGET static inline __attribute__((always_inline)) void NAME(                                           \
        const float *x, size_t ldx, size_t rows, size_t cin, const float *w, size_t cout_pad, const float *bias, \
        const float *residual, size_t ldr, float *y, size_t ldy, size_t o0, size_t ncols, int act) {           \
        /* rows <= R, ncols <= NV * L: one register tile starting at column o0. Every index into acc is a */   \
        /* constant (a short tile computes its last row again instead of looping to `rows`), so acc stays in */  \
        /* registers: a loop bound known only at run time put it on the stack, zeroed by memset every tile. */  \
        V acc[R][NV];                                                                                          \
        for (size_t r = 0; r < R; r++)                                                                         \
            for (size_t v = 0; v < NV; v++) acc[r][v] = SPLAT(V, 0.0f);                                        \
        const float *wp = w + o0;                                                                              \
        const float *xr[R];                                                                                    \
        for (size_t r = 0; r < R; r++) xr[r] = x + (r < rows ? r : rows - 1) * ldx;                            \
        for (size_t k = 0; k < cin; k++) {                                                                     \
            V b[NV];                                                                                           \
            for (size_t v = 0; v < NV; v++) b[v] = LOAD(V, wp + k * cout_pad + v * L);                         \
            for (size_t r = 0; r < R; r++) {                                                                   \
                float a = xr[r][k];                                                                            \
                for (size_t v = 0; v < NV; v++) acc[r][v] += a * b[v];                                         \
            }                                                                                                  \
        }                                                                                                      \
        _Pragma("clang loop unroll(full)")                                                                     \
        for (size_t r = 0; r < R; r++) {                                                                       \
            if (r < rows) {                                                                                    \
                float *yr = y + r * ldy + o0;                                                                  \
                const float *rr = residual ? residual + r * ldr + o0 : 0;                                      \
                _Pragma("clang loop unroll(full)")                                                             \
                for (size_t v = 0; v < NV; v++) {                                                              \
                    size_t c0 = v * L;                                                                         \
                    V s = acc[r][v];                                                                           \
                    if (c0 + L <= ncols) {                                                                     \
                        if (bias) s += LOAD(V, bias + o0 + c0);                                                \
                        if (rr) s += LOAD(V, rr + c0);                                                         \
                        s = ACTV(V, s, act);                                                                   \
                        STORE(V, yr + c0, s);                                                                  \
                    } else if (c0 < ncols) {                                                                   \
                        float t[L];                                                                            \
                        memcpy(t, &s, sizeof t);                                                               \
                        for (size_t j = c0; j < ncols; j++) {                                                  \
                            float u = t[j - c0] + (bias ? bias[o0 + j] : 0) + (rr ? rr[j] : 0);                \
                            yr[j] = act1(u, act);                                                              \
                        }                                                                                      \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

// One column block [o0, o0 + WIDTH) of pointwise_<isa> (uses its arguments), row tiles of R rows.
#define POINTWISE_COLUMN_BLOCK(TILE, REST, R, WIDTH)                                                           \
    do {                                                                                                       \
        size_t ncols = cout - o0 < (WIDTH) ? cout - o0 : (WIDTH);                                              \
        size_t r0 = 0;                                                                                         \
        for (; r0 + (R) <= rows; r0 += (R))                                                                    \
            TILE(x + r0 * ldx, ldx, R, cin, w, cout_pad, bias, residual ? residual + r0 * ldr : 0, ldr,        \
                 y + r0 * ldy, ldy, o0, ncols, act);                                                           \
        /* The last rows in tiles of 2 (a tile computes its last row again when one is missing). */            \
        for (; r0 < rows; r0 += 2)                                                                             \
            REST(x + r0 * ldx, ldx, rows - r0 < 2 ? 1 : 2, cin, w, cout_pad, bias,                             \
                 residual ? residual + r0 * ldr : 0, ldr, y + r0 * ldy, ldy, o0, ncols, act);                  \
        o0 += (WIDTH);                                                                                         \
    } while (0)

#define DEFINE_POINTWISE(SUFFIX, TARGET, V, L, R, NV, WIDE)                                                    \
    DEFINE_POINTWISE_TILE(pointwise_tile_##SUFFIX, TARGET, V, L, R, NV)                                        \
    DEFINE_POINTWISE_TILE(pointwise_wide_##SUFFIX, TARGET, V, L, R, WIDE)                                      \
    DEFINE_POINTWISE_TILE(pointwise_narrow_##SUFFIX, TARGET, V, L, 2 * (R), 1)                                 \
    DEFINE_POINTWISE_TILE(pointwise_tile_rest_##SUFFIX, TARGET, V, L, 2, NV)                                   \
    DEFINE_POINTWISE_TILE(pointwise_wide_rest_##SUFFIX, TARGET, V, L, 2, WIDE)                                 \
    DEFINE_POINTWISE_TILE(pointwise_narrow_rest_##SUFFIX, TARGET, V, L, 2, 1)                                  \
    TARGET static void pointwise_##SUFFIX(const float *x, size_t ldx, size_t rows, size_t cin, const float *w, \
                                          size_t cout_pad, const float *bias, const float *residual,           \
                                          size_t ldr, float *y, size_t ldy, size_t cout, int act) {            \
        /* Column blocks outside (a block of packed weights stays in L1), row tiles inside. Every block reads */ \
        /* whole vectors below o0 + its width <= cout_pad (cout_pad is a multiple of 2 L >= 32 columns). */     \
        size_t o0 = 0;                                                                                         \
        while (o0 < cout) {                                                                                    \
            if ((WIDE) > (NV) && cout - o0 >= (WIDE) * (L))                                                    \
                POINTWISE_COLUMN_BLOCK(pointwise_wide_##SUFFIX, pointwise_wide_rest_##SUFFIX, R, (WIDE) * (L)); \
            else if (cout - o0 > (L))                                                                          \
                POINTWISE_COLUMN_BLOCK(pointwise_tile_##SUFFIX, pointwise_tile_rest_##SUFFIX, R, (NV) * (L));  \
            else                                                                                               \
                POINTWISE_COLUMN_BLOCK(pointwise_narrow_##SUFFIX, pointwise_narrow_rest_##SUFFIX, 2 * (R), L); \
        }                                                                                                      \
    }

DEFINE_POINTWISE(avx512, T_AVX512, v16, 16, 6, 2, 4)
DEFINE_POINTWISE(avx2, T_AVX2, v8, 8, 6, 2, 2)
DEFINE_POINTWISE(sse2, T_SSE2, v4, 4, 4, 2, 2)

// ---------------------------------------------------------------------------------------------------------------
// Depthwise convolution. Interior pixels (whole window inside the image) go through a register-blocked routine
// with the kernel width and stride fixed at compile time: PB neighbouring output pixels share each weight load
// and their overlapping input loads, so a tap costs about 1.5 loads instead of 2. Border pixels and other
// kernel shapes take the generic loop, four channel vectors at a time.

#define DW_PB 8
// Bytes of input window a chunk of channels may span (half the 48 KiB L1 of a recent core; 16-32 KiB measured alike).
#define DW_WINDOW_BYTES 24576

#define DEFINE_DW_INTERIOR(SUFFIX, TARGET, V, L, KW, S)                                                        \
    TARGET static inline __attribute__((always_inline)) void dw_interior_##SUFFIX##_##KW##_##S(               \
        const float *x, size_t w, size_t c, const float *wt, V b, size_t kh, size_t ky0, size_t ky1, long iy0,  \
        long ix0, size_t j, float *out, int act) {                                                             \
        /* DW_PB outputs at ix0, ix0 + S, ...; out points at the first one's channel j. */                    \
        V acc[DW_PB];                                                                                          \
        for (int p = 0; p < DW_PB; p++) acc[p] = b;                                                            \
        for (size_t ky = ky0; ky < ky1; ky++) {                                                                \
            const float *xr = x + ((size_t)(iy0 + (long)ky) * w + (size_t)ix0) * c + j;                        \
            const float *wr = wt + ky * KW * c + j;                                                            \
            V xs[(DW_PB - 1) * S + KW];                                                                        \
            for (int q = 0; q < (DW_PB - 1) * S + KW; q++) xs[q] = LOAD(V, xr + (size_t)q * c);                \
            for (int kx = 0; kx < KW; kx++) {                                                                  \
                V wv = LOAD(V, wr + (size_t)kx * c);                                                           \
                for (int p = 0; p < DW_PB; p++) acc[p] += xs[p * S + kx] * wv;                                 \
            }                                                                                                  \
        }                                                                                                      \
        for (int p = 0; p < DW_PB; p++) STORE(V, out + (size_t)p * c, ACTV(V, acc[p], act));                   \
    }

#define DEFINE_DEPTHWISE(SUFFIX, TARGET, V, L)                                                                 \
    DEFINE_DW_INTERIOR(SUFFIX, TARGET, V, L, 3, 1)                                                             \
    DEFINE_DW_INTERIOR(SUFFIX, TARGET, V, L, 3, 2)                                                             \
    DEFINE_DW_INTERIOR(SUFFIX, TARGET, V, L, 5, 1)                                                             \
    DEFINE_DW_INTERIOR(SUFFIX, TARGET, V, L, 5, 2)                                                             \
    TARGET static void depthwise_##SUFFIX(const float *x, size_t h, size_t w, size_t c, const float *wt,       \
                                          const float *bias, size_t kh, size_t kw, size_t stride,              \
                                          size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t oy0,   \
                                          size_t oy1, float *y, int act) {                                     \
        (void)oh;                                                                                              \
        /* Output columns whose whole window lies inside the image: ox_lo <= ox < ox_hi. */                    \
        size_t ox_lo = (pad_left + stride - 1) / stride;                                                       \
        size_t ox_hi = (w + pad_left >= kw) ? (w + pad_left - kw) / stride + 1 : 0;                            \
        if (ox_hi > ow) ox_hi = ow;                                                                            \
        if (ox_lo > ox_hi) ox_lo = ox_hi;                                                                      \
        int fast = (kw == 3 || kw == 5) && (stride == 1 || stride == 2);                                       \
        size_t cvec = c - c % L; /* channels in whole vectors; the rest go through the scalar loop */          \
        size_t chunk = DW_WINDOW_BYTES / (kh * ((DW_PB - 1) * stride + kw) * sizeof(float));                   \
        chunk = chunk < L ? L : chunk - chunk % L;                                                             \
        for (size_t oy = oy0; oy < oy1; oy++) {                                                                \
            long iy0 = (long)(oy * stride) - (long)pad_top;                                                    \
            size_t ky0 = iy0 < 0 ? (size_t)(-iy0) : 0;                                                         \
            size_t ky1 = (long)h - iy0 < (long)kh ? (size_t)((long)h - iy0) : kh;                              \
            float *yrow = y + oy * ow * c;                                                                     \
            /* Channel vectors in chunks whose input window (kh rows x a pixel block's columns) fits in L1; */ \
            /* within a chunk, pixels outside and its vectors inside, so the window is loaded from L2 once. */  \
            for (size_t j0 = 0; j0 < cvec; j0 += chunk) {                                                     \
                size_t j1 = j0 + chunk < cvec ? j0 + chunk : cvec;                                             \
                size_t ox = 0;                                                                                 \
                while (ox < ow) {                                                                              \
                    long ix0 = (long)(ox * stride) - (long)pad_left;                                           \
                    if (fast && ox >= ox_lo && ox + DW_PB <= ox_hi) {                                          \
                        for (size_t j = j0; j < j1; j += L) {                                                  \
                            V b = bias ? LOAD(V, bias + j) : SPLAT(V, 0.0f);                                   \
                            float *o = yrow + ox * c + j;                                                      \
                            if (kw == 3 && stride == 1)                                                        \
                                dw_interior_##SUFFIX##_3_1(x, w, c, wt, b, kh, ky0, ky1, iy0, ix0, j, o, act); \
                            else if (kw == 3)                                                                  \
                                dw_interior_##SUFFIX##_3_2(x, w, c, wt, b, kh, ky0, ky1, iy0, ix0, j, o, act); \
                            else if (stride == 1)                                                              \
                                dw_interior_##SUFFIX##_5_1(x, w, c, wt, b, kh, ky0, ky1, iy0, ix0, j, o, act); \
                            else                                                                               \
                                dw_interior_##SUFFIX##_5_2(x, w, c, wt, b, kh, ky0, ky1, iy0, ix0, j, o, act); \
                        }                                                                                      \
                        ox += DW_PB;                                                                           \
                        continue;                                                                              \
                    }                                                                                          \
                    size_t kx0 = ix0 < 0 ? (size_t)(-ix0) : 0;                                                 \
                    size_t kx1 = (long)w - ix0 < (long)kw ? (size_t)((long)w - ix0) : kw;                      \
                    /* Four channel vectors at a time: four independent chains of FMAs instead of one whose */  \
                    /* latency bounded the border pixels (all of a 7 x 7 layer's); each sums in the same order. */ \
                    size_t j = j0;                                                                             \
                    for (; j + 4 * L <= j1; j += 4 * L) {                                                      \
                        V acc[4];                                                                              \
                        for (int v = 0; v < 4; v++) acc[v] = bias ? LOAD(V, bias + j + v * L) : SPLAT(V, 0.0f); \
                        for (size_t ky = ky0; ky < ky1; ky++) {                                                \
                            const float *xr = x + ((size_t)(iy0 + (long)ky) * w) * c + j;                      \
                            for (size_t kx = kx0; kx < kx1; kx++) {                                            \
                                const float *xp = xr + (size_t)(ix0 + (long)kx) * c;                           \
                                const float *wp = wt + (ky * kw + kx) * c + j;                                 \
                                for (int v = 0; v < 4; v++) acc[v] += LOAD(V, xp + v * L) * LOAD(V, wp + v * L); \
                            }                                                                                  \
                        }                                                                                      \
                        for (int v = 0; v < 4; v++) STORE(V, yrow + ox * c + j + v * L, ACTV(V, acc[v], act));   \
                    }                                                                                          \
                    for (; j < j1; j += L) {                                                                   \
                        V acc = bias ? LOAD(V, bias + j) : SPLAT(V, 0.0f);                                     \
                        for (size_t ky = ky0; ky < ky1; ky++) {                                                \
                            const float *xr = x + ((size_t)(iy0 + (long)ky) * w) * c + j;                      \
                            for (size_t kx = kx0; kx < kx1; kx++)                                              \
                                acc += LOAD(V, xr + (size_t)(ix0 + (long)kx) * c) *                           \
                                       LOAD(V, wt + (ky * kw + kx) * c + j);                                   \
                        }                                                                                      \
                        STORE(V, yrow + ox * c + j, ACTV(V, acc, act));                                        \
                    }                                                                                          \
                    ox++;                                                                                      \
                }                                                                                              \
            }                                                                                                  \
            size_t j = cvec;                                                                                   \
            for (; j < c; j++) {                                                                               \
                for (size_t ox = 0; ox < ow; ox++) {                                                           \
                    long ix0 = (long)(ox * stride) - (long)pad_left;                                           \
                    size_t kx0 = ix0 < 0 ? (size_t)(-ix0) : 0;                                                 \
                    size_t kx1 = (long)w - ix0 < (long)kw ? (size_t)((long)w - ix0) : kw;                      \
                    float acc = bias ? bias[j] : 0;                                                            \
                    for (size_t ky = ky0; ky < ky1; ky++)                                                      \
                        for (size_t kx = kx0; kx < kx1; kx++)                                                  \
                            acc += x[((size_t)(iy0 + (long)ky) * w + (size_t)(ix0 + (long)kx)) * c + j] *      \
                                   wt[(ky * kw + kx) * c + j];                                                 \
                    yrow[ox * c + j] = act1(acc, act);                                                         \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

DEFINE_DEPTHWISE(avx512, T_AVX512, v16, 16)
DEFINE_DEPTHWISE(avx2, T_AVX2, v8, 8)
DEFINE_DEPTHWISE(sse2, T_SSE2, v4, 4)

// ---------------------------------------------------------------------------------------------------------------
// Direct convolution for few input channels: output channels in registers, input taps broadcast. Where all of a
// row's taps fall inside the image horizontally, P pixels at a time (each weight vector loaded once feeds P FMAs,
// and P x NV independent accumulators hide the FMA latency); elsewhere one pixel at a time. Every output sums its
// taps in the same order (ky, kx, input channel) from 0, then adds the bias, on either path.

#define DEFINE_CONV_DIRECT(SUFFIX, TARGET, V, L, P)                                                            \
    TARGET static inline __attribute__((always_inline)) void conv_direct_store_##SUFFIX(                       \
        V s, float *out, size_t c0, size_t cout, const float *bias, int act) {                                 \
        if (c0 + L <= cout) {                                                                                  \
            if (bias) s += LOAD(V, bias + c0);                                                                 \
            STORE(V, out + c0, ACTV(V, s, act));                                                               \
        } else {                                                                                               \
            float t[L];                                                                                        \
            memcpy(t, &s, sizeof t);                                                                           \
            for (size_t j = c0; j < cout; j++) out[j] = act1(t[j - c0] + (bias ? bias[j] : 0), act);           \
        }                                                                                                      \
    }                                                                                                          \
    /* Pixels [ox, ox + np) of output row oy (np = 1, or P with every tap inside the image horizontally). */   \
    TARGET static inline __attribute__((always_inline)) void conv_direct_pixels_##SUFFIX(                      \
        const float *x, size_t w, size_t cin, const float *wt, size_t cout_pad, const float *bias, size_t cout, \
        size_t kw, size_t stride, long iy0, size_t ky0, size_t ky1, long ix0, size_t kx0, size_t kx1,           \
        size_t np, float *out, int act) {                                                                      \
        enum { NV = CK_PACK_COLUMNS / L };                                                                     \
        for (size_t o0 = 0; o0 < cout; o0 += CK_PACK_COLUMNS) {                                                \
            V acc[P][NV];                                                                                      \
            for (size_t p = 0; p < np; p++)                                                                    \
                for (size_t v = 0; v < NV; v++) acc[p][v] = SPLAT(V, 0.0f);                                    \
            for (size_t ky = ky0; ky < ky1; ky++) {                                                            \
                for (size_t kx = kx0; kx < kx1; kx++) {                                                        \
                    const float *xp = x + ((size_t)(iy0 + (long)ky) * w + (size_t)(ix0 + (long)kx)) * cin;     \
                    const float *wp = wt + ((ky * kw + kx) * cin) * cout_pad + o0;                             \
                    for (size_t ci = 0; ci < cin; ci++) {                                                      \
                        V wv[NV];                                                                              \
                        for (size_t v = 0; v < NV; v++) wv[v] = LOAD(V, wp + ci * cout_pad + v * L);           \
                        for (size_t p = 0; p < np; p++) {                                                      \
                            float a = xp[p * stride * cin + ci];                                               \
                            for (size_t v = 0; v < NV; v++) acc[p][v] += a * wv[v];                            \
                        }                                                                                      \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
            for (size_t p = 0; p < np; p++)                                                                    \
                for (size_t v = 0; v < NV && o0 + v * L < cout; v++)                                           \
                    conv_direct_store_##SUFFIX(acc[p][v], out + p * cout, o0 + v * L, cout, bias, act);        \
        }                                                                                                      \
    }                                                                                                          \
    TARGET static void conv_direct_##SUFFIX(const float *x, size_t h, size_t w, size_t cin, const float *wt,   \
                                            size_t cout_pad, const float *bias, size_t cout, size_t kh,        \
                                            size_t kw, size_t stride, size_t pad_top, size_t pad_left,         \
                                            size_t oh, size_t ow, size_t oy0, size_t oy1, float *y, int act) { \
        (void)oh;                                                                                              \
        /* Output columns [oxa, oxb) have every tap inside the image horizontally. */                          \
        size_t oxa = (pad_left + stride - 1) / stride;                                                         \
        size_t oxb = w + pad_left >= kw ? (w + pad_left - kw) / stride + 1 : 0;                                \
        if (oxb > ow) oxb = ow;                                                                                \
        for (size_t oy = oy0; oy < oy1; oy++) {                                                                \
            long iy0 = (long)(oy * stride) - (long)pad_top;                                                    \
            size_t ky0 = iy0 < 0 ? (size_t)(-iy0) : 0;                                                         \
            size_t ky1 = (long)h - iy0 < (long)kh ? (size_t)((long)h - iy0) : kh;                              \
            for (size_t ox = 0; ox < ow;) {                                                                    \
                long ix0 = (long)(ox * stride) - (long)pad_left;                                               \
                float *out = y + (oy * ow + ox) * cout;                                                        \
                if (P > 1 && ox >= oxa && ox + P <= oxb) {                                                     \
                    conv_direct_pixels_##SUFFIX(x, w, cin, wt, cout_pad, bias, cout, kw, stride, iy0, ky0, ky1, \
                                                ix0, 0, kw, P, out, act);                                      \
                    ox += P;                                                                                   \
                } else {                                                                                       \
                    size_t kx0 = ix0 < 0 ? (size_t)(-ix0) : 0;                                                 \
                    size_t kx1 = (long)w - ix0 < (long)kw ? (size_t)((long)w - ix0) : kw;                      \
                    conv_direct_pixels_##SUFFIX(x, w, cin, wt, cout_pad, bias, cout, kw, stride, iy0, ky0, ky1, \
                                                ix0, kx0, kx1, 1, out, act);                                   \
                    ox += 1;                                                                                   \
                }                                                                                              \
            }                                                                                                  \
        }                                                                                                      \
    }

DEFINE_CONV_DIRECT(avx512, T_AVX512, v16, 16, 8)
DEFINE_CONV_DIRECT(avx2, T_AVX2, v8, 8, 2)
DEFINE_CONV_DIRECT(sse2, T_SSE2, v4, 4, 1)

// ---------------------------------------------------------------------------------------------------------------
// Exact GELU, y = u * Phi(u) with u = x (+ bias): erf(u / sqrt 2) by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7)
// and exp(-u^2 / 2) by Cephes' polynomial after reduction by powers of two (the engine's scalar GELUKernel, whose
// backward pass uses the same formulas). A last partial vector goes through a zero-padded copy.

typedef int vi16 __attribute__((vector_size(64), aligned(4)));
typedef int vi8 __attribute__((vector_size(32), aligned(4)));
typedef int vi4 __attribute__((vector_size(16), aligned(4)));

#define DEFINE_GELU(SUFFIX, TARGET, V, VI, L)                                                                  \
    TARGET static inline __attribute__((always_inline)) V gelu_v_##SUFFIX(V u) {                               \
        V z = (V)((VI)u & 0x7FFFFFFF) * 0.70710678118654752f;                                                  \
        V t = 1.0f / (1.0f + z * 0.3275911f);                                                                  \
        V poly = t * 1.061405429f - 1.453152027f;                                                              \
        poly = poly * t + 1.421413741f;                                                                        \
        poly = poly * t - 0.284496736f;                                                                        \
        poly = poly * t + 0.254829592f;                                                                        \
        poly = poly * t;                                                                                       \
        V q = __builtin_elementwise_max(-(z * z), SPLAT(V, -80.0f));                                           \
        V shifted = q * 1.44269504088896341f + 12582912.0f; /* n = round(q / ln 2) in the low mantissa bits */  \
        V n = shifted - 12582912.0f;                                                                           \
        V r = (q - n * 0.693359375f) + n * 2.12194440e-4f;                                                     \
        V p = r * 1.9875691500e-4f + 1.3981999507e-3f;                                                         \
        p = p * r + 8.3334519073e-3f;                                                                          \
        p = p * r + 4.1665795894e-2f;                                                                          \
        p = p * r + 1.6666665459e-1f;                                                                          \
        p = p * r + 5.0000001201e-1f;                                                                          \
        V e = (p * r * r + r + 1.0f) * (V)((((VI)shifted - 0x4B400000) + 127) << 23);                          \
        V erf = (V)((VI)(1.0f - poly * e) | ((VI)u & (int)0x80000000)); /* sign of u */                        \
        return u * (erf * 0.5f + 0.5f);                                                                        \
    }                                                                                                          \
    TARGET static void gelu_##SUFFIX(const float *x, const float *bias, float *y, size_t n) {                  \
        size_t j = 0;                                                                                          \
        for (; j + L <= n; j += L) {                                                                           \
            V u = LOAD(V, x + j);                                                                              \
            if (bias) u += LOAD(V, bias + j);                                                                  \
            STORE(V, y + j, gelu_v_##SUFFIX(u));                                                               \
        }                                                                                                      \
        if (j < n) {                                                                                           \
            float t[L] = {0};                                                                                  \
            for (size_t i = j; i < n; i++) t[i - j] = x[i] + (bias ? bias[i] : 0);                             \
            V v = gelu_v_##SUFFIX(LOAD(V, t));                                                                 \
            memcpy(t, &v, sizeof t);                                                                           \
            for (size_t i = j; i < n; i++) y[i] = t[i - j];                                                    \
        }                                                                                                      \
    }

DEFINE_GELU(avx512, T_AVX512, v16, vi16, 16)
DEFINE_GELU(avx2, T_AVX2, v8, vi8, 8)
DEFINE_GELU(sse2, T_SSE2, v4, vi4, 4)

// ---------------------------------------------------------------------------------------------------------------
// Convolution with up to 32 input channels (small CNNs' layers) for training: im2col would write kh * kw * cin floats
// per pixel for a GEMM that packs them again. One image at a time, zero-padded into a scratch buffer first so that the
// loops need no bounds; weights packed [kh][kw][cin][cout_pad], cout_pad a multiple of 16.

// Zero-padded copy of x [h, w, c] into p [hp, wp, c] (row iy of x at row iy + top, column ix at ix + left).
static void pad_image(const float *x, size_t h, size_t w, size_t c, size_t top, size_t left, size_t hp, size_t wp,
                      float *p) {
    memset(p, 0, hp * wp * c * sizeof(float));
    for (size_t iy = 0; iy < h && iy + top < hp; iy++) {
        size_t n = w + left <= wp ? w : wp - left;
        memcpy(p + ((iy + top) * wp + left) * c, x + iy * w * c, n * c * sizeof(float));
    }
}

#define FEW_TILE 8

// Vector v (of NV) of the outputs starting at o0, from a row of cout values: whole, or its first cout - c0 values and
// zeros (a last, partial vector).
#define FEW_LOAD(V, L, row, o0, v, cout)                                                                       \
    ({                                                                                                         \
        size_t c0_ = (o0) + (v) * L;                                                                           \
        V r_ = SPLAT(V, 0.0f);                                                                                 \
        if (c0_ + L <= (cout)) r_ = LOAD(V, (row) + c0_);                                                      \
        else if (c0_ < (cout)) { float t_[L] = {0}; memcpy(t_, (row) + c0_, ((cout) - c0_) * sizeof(float)); r_ = LOAD(V, t_); } \
        r_;                                                                                                    \
    })

// Tiles of FEW_TILE pixels of one output row x NV (1 or 2) vectors of outputs: each input value broadcast once feeds
// NV FMAs. Weight gradient: G taps (input channel included) x NV vectors of accumulators held over the image.
#define DEFINE_CONV_FEW(SUFFIX, TARGET, V, L, G)                                                               \
    TARGET static inline __attribute__((always_inline)) void conv_few_tile_##SUFFIX(                           \
        const float *const *xr, size_t wp, size_t cin, const float *wt, size_t cout_pad, const float *bias,    \
        size_t cout, size_t kh, size_t kw, size_t o0, size_t NV, size_t n, float *y) {                         \
        V acc[FEW_TILE][2], b[2];                                                                              \
        for (size_t v = 0; v < 2; v++) b[v] = (bias && v < NV) ? FEW_LOAD(V, L, bias, o0, v, cout) : SPLAT(V, 0.0f); \
        for (size_t r = 0; r < FEW_TILE; r++)                                                                  \
            for (size_t v = 0; v < 2; v++) acc[r][v] = b[v];                                                   \
        for (size_t ky = 0; ky < kh; ky++)                                                                     \
            for (size_t kx = 0; kx < kw; kx++)                                                                 \
                for (size_t ci = 0; ci < cin; ci++) {                                                          \
                    const float *wrow = wt + ((ky * kw + kx) * cin + ci) * cout_pad + o0;                      \
                    V w0 = LOAD(V, wrow), w1 = NV > 1 ? LOAD(V, wrow + L) : SPLAT(V, 0.0f);                    \
                    size_t off = (ky * wp + kx) * cin + ci;                                                    \
                    for (size_t r = 0; r < FEW_TILE; r++) {                                                    \
                        float a = xr[r][off];                                                                  \
                        acc[r][0] += a * w0;                                                                   \
                        if (NV > 1) acc[r][1] += a * w1;                                                       \
                    }                                                                                          \
                }                                                                                              \
        for (size_t r = 0; r < n; r++)                                                                         \
            for (size_t v = 0; v < NV; v++) {                                                                  \
                size_t c0 = o0 + v * L;                                                                        \
                float *out = y + r * cout + c0;                                                                \
                if (c0 + L <= cout) STORE(V, out, acc[r][v]);                                                  \
                else if (c0 < cout) memcpy(out, &acc[r][v], (cout - c0) * sizeof(float));                      \
            }                                                                                                  \
    }                                                                                                          \
    /* y = bias + sum of taps. */                                                                              \
    TARGET static void conv_few_##SUFFIX(const float *xp, size_t wp, size_t cin, const float *wt,             \
                                         size_t cout_pad, const float *bias, size_t cout, size_t kh, size_t kw, \
                                         size_t stride, size_t oh, size_t ow, float *y) {                      \
        for (size_t oy = 0; oy < oh; oy++)                                                                     \
            for (size_t ox0 = 0; ox0 < ow; ox0 += FEW_TILE) {                                                  \
                size_t n = ow - ox0 < FEW_TILE ? ow - ox0 : FEW_TILE;                                          \
                const float *xr[FEW_TILE];                                                                     \
                for (size_t r = 0; r < FEW_TILE; r++)                                                          \
                    xr[r] = xp + ((oy * stride) * wp + (ox0 + (r < n ? r : n - 1)) * stride) * cin;             \
                float *out = y + (oy * ow + ox0) * cout;                                                       \
                for (size_t o0 = 0; o0 < cout;) {                                                              \
                    if (o0 + L < cout) {                                                                       \
                        conv_few_tile_##SUFFIX(xr, wp, cin, wt, cout_pad, bias, cout, kh, kw, o0, 2, n, out);  \
                        o0 += 2 * L;                                                                           \
                    } else {                                                                                   \
                        conv_few_tile_##SUFFIX(xr, wp, cin, wt, cout_pad, bias, cout, kh, kw, o0, 1, n, out);  \
                        o0 += L;                                                                               \
                    }                                                                                          \
                }                                                                                              \
            }                                                                                                  \
    }                                                                                                          \
    /* dw[t][o] += sum over pixels of tap t's input x g[pixel][o], for taps [t0, t0 + count), NV vectors. */     \
    TARGET static inline __attribute__((always_inline)) void conv_few_grad_taps_##SUFFIX(                      \
        const float *xp, size_t wp, size_t cin, const float *g, size_t cout, size_t o0, size_t NV,             \
        const size_t *offsets, size_t t0, size_t count, size_t stride, size_t oh, size_t ow, float *dw,        \
        size_t cout_pad) {                                                                                     \
        V acc[G][2];                                                                                           \
        size_t o[G];                                                                                           \
        for (size_t i = 0; i < G; i++) {                                                                       \
            for (size_t v = 0; v < 2; v++)                                                                     \
                acc[i][v] = i < count && v < NV ? LOAD(V, dw + (t0 + i) * cout_pad + o0 + v * L) : SPLAT(V, 0.0f); \
            o[i] = offsets[t0 + (i < count ? i : 0)];                                                          \
        }                                                                                                      \
        int whole = o0 + NV * L <= cout;                                                                       \
        for (size_t oy = 0; oy < oh; oy++)                                                                     \
            for (size_t ox = 0; ox < ow; ox++) {                                                               \
                const float *gp = g + (oy * ow + ox) * cout;                                                   \
                V gv[2];                                                                                       \
                for (size_t v = 0; v < 2; v++)                                                                 \
                    gv[v] = v < NV ? (whole ? LOAD(V, gp + o0 + v * L) : FEW_LOAD(V, L, gp, o0, v, cout)) : SPLAT(V, 0.0f); \
                const float *xq = xp + ((oy * stride) * wp + ox * stride) * cin;                               \
                for (size_t i = 0; i < G; i++)                                                                 \
                    if (i < count) {                                                                           \
                        float a = xq[o[i]];                                                                    \
                        acc[i][0] += a * gv[0];                                                                \
                        if (NV > 1) acc[i][1] += a * gv[1];                                                    \
                    }                                                                                          \
            }                                                                                                  \
        for (size_t i = 0; i < count; i++)                                                                     \
            for (size_t v = 0; v < NV; v++) STORE(V, dw + (t0 + i) * cout_pad + o0 + v * L, acc[i][v]);        \
    }                                                                                                          \
    TARGET static void conv_few_grad_##SUFFIX(const float *xp, size_t wp, size_t cin, const float *g,         \
                                              size_t cout, size_t kh, size_t kw, size_t stride, size_t oh,     \
                                              size_t ow, float *dw, size_t cout_pad) {                         \
        size_t taps = kh * kw * cin, offsets[taps];                                                            \
        for (size_t ky = 0; ky < kh; ky++)                                                                     \
            for (size_t kx = 0; kx < kw; kx++)                                                                 \
                for (size_t ci = 0; ci < cin; ci++) offsets[(ky * kw + kx) * cin + ci] = (ky * wp + kx) * cin + ci; \
        for (size_t o0 = 0; o0 < cout;) {                                                                      \
            size_t nv = o0 + L < cout ? 2 : 1;                                                                 \
            for (size_t t0 = 0; t0 < taps; t0 += G) {                                                          \
                size_t count = taps - t0 < G ? taps - t0 : G;                                                  \
                if (nv == 2 && count == G)                                                                     \
                    conv_few_grad_taps_##SUFFIX(xp, wp, cin, g, cout, o0, 2, offsets, t0, G, stride, oh, ow, dw, cout_pad); \
                else if (nv == 2)                                                                              \
                    conv_few_grad_taps_##SUFFIX(xp, wp, cin, g, cout, o0, 2, offsets, t0, count, stride, oh, ow, dw, cout_pad); \
                else if (count == G)                                                                           \
                    conv_few_grad_taps_##SUFFIX(xp, wp, cin, g, cout, o0, 1, offsets, t0, G, stride, oh, ow, dw, cout_pad); \
                else                                                                                           \
                    conv_few_grad_taps_##SUFFIX(xp, wp, cin, g, cout, o0, 1, offsets, t0, count, stride, oh, ow, dw, cout_pad); \
            }                                                                                                  \
            o0 += nv * L;                                                                                      \
        }                                                                                                      \
    }

DEFINE_CONV_FEW(avx512, T_AVX512, v16, 16, 8)
DEFINE_CONV_FEW(avx2, T_AVX2, v8, 8, 4)
DEFINE_CONV_FEW(sse2, T_SSE2, v4, 4, 4)

// ---------------------------------------------------------------------------------------------------------------
// Training-time elementwise and per-channel loops (ReLU-like clamps, BatchNorm on batch statistics). They compute
// exactly what the engine's Swift loops did, in the same order and without fused multiply-adds (so results are
// bit-identical to them, except that a clamp's blocked gradient is +0 where `g * 0` gave -0 for a negative g), in
// the widest vectors the CPU has. Per-channel sums accumulate in doubles, eight (AVX-512),
// four (AVX2) or two (SSE2) channels per vector; channels beyond the last whole vector go through scalar code.

#pragma clang fp contract(off)

typedef double d8 __attribute__((vector_size(64), aligned(8)));
typedef double d4 __attribute__((vector_size(32), aligned(8)));
typedef double d2 __attribute__((vector_size(16), aligned(8)));
typedef float h8 __attribute__((vector_size(32), aligned(4)));
typedef float h4 __attribute__((vector_size(16), aligned(4)));
typedef float h2 __attribute__((vector_size(8), aligned(4)));
typedef int hi8 __attribute__((vector_size(32), aligned(4)));
typedef int hi4 __attribute__((vector_size(16), aligned(4)));
typedef int hi2 __attribute__((vector_size(8), aligned(4)));

// The gradient mask of a clamp fused after an affine map: pre = x * scale + shift, computed as the forward pass
// did (no fused multiply-add), so the mask is the one the unfused clamp's backward pass saw.
#define FUSED_MASK(V, VI, pre, f)                                                                              \
    ({                                                                                                         \
        VI in_ = (VI)((pre) > SPLAT(V, (f)->lo));                                                              \
        if ((f)->upper) in_ &= (VI)((pre) < SPLAT(V, (f)->hi));                                                \
        in_;                                                                                                   \
    })
static inline int fused_passes(float pre, const ck_fused_clamp *f) { return pre > f->lo && (!f->upper || pre < f->hi); }

// As Swift's min(max(x, lo), hi): lo when lo >= x, then hi when hi < y (a NaN passes through).
static inline float clamp1(float x, float lo, float hi) {
    float y = lo >= x ? lo : x;
    return hi < y ? hi : y;
}

#define SELECT(V, VI, mask, a, b) ((V)(((VI)(mask) & (VI)(a)) | (~(VI)(mask) & (VI)(b))))

#define DEFINE_TRAINING_LOOPS(SUFFIX, TARGET, V, VI, L, H, D, DL)                                              \
    TARGET static void clamp_##SUFFIX(const float *x, float *y, size_t n, float lo, float hi) {               \
        V vlo = SPLAT(V, lo), vhi = SPLAT(V, hi);                                                              \
        size_t i = 0;                                                                                          \
        for (; i + L <= n; i += L) {                                                                           \
            V v = LOAD(V, x + i);                                                                              \
            v = SELECT(V, VI, vlo >= v, vlo, v);                                                               \
            STORE(V, y + i, SELECT(V, VI, vhi < v, vhi, v));                                                   \
        }                                                                                                      \
        for (; i < n; i++) y[i] = clamp1(x[i], lo, hi);                                                        \
    }                                                                                                          \
    TARGET static void clamp_backward_##SUFFIX(const float *x, const float *g, float *dx, size_t n, float lo,   \
                                               float hi, int upper) {                                          \
        V vlo = SPLAT(V, lo), vhi = SPLAT(V, hi), zero = SPLAT(V, 0.0f);                                       \
        size_t i = 0;                                                                                          \
        for (; i + L <= n; i += L) {                                                                           \
            V v = LOAD(V, x + i);                                                                              \
            VI inside = v > vlo;                                                                               \
            if (upper) inside &= v < vhi;                                                                      \
            STORE(V, dx + i, SELECT(V, VI, inside, LOAD(V, g + i), zero));                                     \
        }                                                                                                      \
        for (; i < n; i++) dx[i] = (x[i] > lo && (!upper || x[i] < hi)) ? g[i] : 0;                            \
    }                                                                                                          \
    /* y = clamp(x * scale[j] + shift[j], lo, hi) (infinite bounds: the identity, NaN and infinities included). */ \
    TARGET static void channel_affine_##SUFFIX(const float *x, size_t rows, size_t c, const float *scale,      \
                                               const float *shift, float lo, float hi, float *y) {             \
        size_t whole = c - c % L;                                                                              \
        V vlo = SPLAT(V, lo), vhi = SPLAT(V, hi);                                                              \
        for (size_t r = 0; r < rows; r++) {                                                                    \
            const float *xr = x + r * c;                                                                       \
            float *yr = y + r * c;                                                                             \
            for (size_t j = 0; j < whole; j += L) {                                                            \
                V v = LOAD(V, xr + j) * LOAD(V, scale + j) + LOAD(V, shift + j);                               \
                v = SELECT(V, VI, vlo >= v, vlo, v);                                                           \
                STORE(V, yr + j, SELECT(V, VI, vhi < v, vhi, v));                                              \
            }                                                                                                  \
            for (size_t j = whole; j < c; j++) yr[j] = clamp1(xr[j] * scale[j] + shift[j], lo, hi);            \
        }                                                                                                      \
    }                                                                                                          \
    /* dx = scale[j] * (g - a[j] - (x - mean[j]) * rstd[j] * b[j]). */                                         \
    TARGET static void batchnorm_backward_##SUFFIX(const float *x, const float *g, size_t rows, size_t c,     \
                                                   const float *scale, const float *a, const float *b,         \
                                                   const float *mean, const float *rstd,                       \
                                                   const ck_fused_clamp *f, float *dx) {                       \
        size_t whole = c - c % L;                                                                              \
        for (size_t r = 0; r < rows; r++) {                                                                    \
            const float *xr = x + r * c, *gr = g + r * c;                                                      \
            float *dr = dx + r * c;                                                                            \
            for (size_t j = 0; j < whole; j += L) {                                                            \
                V xv = LOAD(V, xr + j), gv = LOAD(V, gr + j);                                                  \
                if (f) {                                                                                       \
                    V pre = xv * LOAD(V, f->scale + j) + LOAD(V, f->shift + j);                                \
                    gv = SELECT(V, VI, FUSED_MASK(V, VI, pre, f), gv, SPLAT(V, 0.0f));                         \
                }                                                                                              \
                V t = (xv - LOAD(V, mean + j)) * LOAD(V, rstd + j) * LOAD(V, b + j);                           \
                STORE(V, dr + j, LOAD(V, scale + j) * (gv - LOAD(V, a + j) - t));                              \
            }                                                                                                  \
            for (size_t j = whole; j < c; j++) {                                                               \
                float gj = gr[j];                                                                              \
                if (f && !fused_passes(xr[j] * f->scale[j] + f->shift[j], f)) gj = 0;                          \
                dr[j] = scale[j] * (gj - a[j] - (xr[j] - mean[j]) * rstd[j] * b[j]);                           \
            }                                                                                                  \
        }                                                                                                      \
    }

DEFINE_TRAINING_LOOPS(avx512, T_AVX512, v16, vi16, 16, h8, d8, 8)
DEFINE_TRAINING_LOOPS(avx2, T_AVX2, v8, vi8, 8, h4, d4, 4)
DEFINE_TRAINING_LOOPS(sse2, T_SSE2, v4, vi4, 4, h2, d2, 2)

// Per-channel sums in doubles over rows in order. The accumulators of a block of NV vectors (DL channels each) stay
// in registers for the whole row loop (in memory, each row's add waited for the previous row's store); blocks
// of up to 4 vectors cover the whole vectors of a row, a scalar pass the channels after them.

// acc[j] += x[r][j], or (x[r][j] - mean[j])^2 when mean is not NULL.
#define DEFINE_CHANNEL_SUMS_BLOCK(SUFFIX, TARGET, H, D, DL, NV)                                                \
    TARGET static inline __attribute__((always_inline)) void channel_sums_##SUFFIX##_##NV(                      \
        const float *x, size_t rows, size_t c, const double *mean, double *acc) {                              \
        D a[NV], m[NV];                                                                                        \
        for (size_t v = 0; v < NV; v++) {                                                                      \
            a[v] = LOAD(D, acc + v * DL);                                                                      \
            m[v] = mean ? LOAD(D, mean + v * DL) : (D){0};                                                     \
        }                                                                                                      \
        if (mean) {                                                                                            \
            for (size_t r = 0; r < rows; r++)                                                                  \
                for (size_t v = 0; v < NV; v++) {                                                              \
                    D d = __builtin_convertvector(LOAD(H, x + r * c + v * DL), D) - m[v];                      \
                    a[v] += d * d;                                                                             \
                }                                                                                              \
        } else {                                                                                               \
            for (size_t r = 0; r < rows; r++)                                                                  \
                for (size_t v = 0; v < NV; v++) a[v] += __builtin_convertvector(LOAD(H, x + r * c + v * DL), D); \
        }                                                                                                      \
        for (size_t v = 0; v < NV; v++) STORE(D, acc + v * DL, a[v]);                                          \
    }

// acc[j] += g, acc[c + j] += (double)(g * (x - mean[j]) * rstd[j]) (the products in float).
#define DEFINE_GRAD_SUMS_BLOCK(SUFFIX, TARGET, H, HI, D, DL, NV)                                               \
    TARGET static inline __attribute__((always_inline)) void grad_sums_##SUFFIX##_##NV(                         \
        const float *x, const float *g, size_t rows, size_t c, const float *mean, const float *rstd,           \
        const ck_fused_clamp *f, size_t j0, double *acc, double *accx) {                                       \
        D a[NV], b[NV];                                                                                        \
        H m[NV], s[NV], fs[NV], ft[NV];                                                                        \
        for (size_t v = 0; v < NV; v++) {                                                                      \
            a[v] = LOAD(D, acc + v * DL);                                                                      \
            b[v] = LOAD(D, accx + v * DL);                                                                     \
            m[v] = LOAD(H, mean + v * DL);                                                                     \
            s[v] = LOAD(H, rstd + v * DL);                                                                     \
            fs[v] = f ? LOAD(H, f->scale + j0 + v * DL) : SPLAT(H, 0.0f);                                      \
            ft[v] = f ? LOAD(H, f->shift + j0 + v * DL) : SPLAT(H, 0.0f);                                      \
        }                                                                                                      \
        for (size_t r = 0; r < rows; r++)                                                                      \
            for (size_t v = 0; v < NV; v++) {                                                                  \
                H xv = LOAD(H, x + r * c + v * DL), gv = LOAD(H, g + r * c + v * DL);                          \
                if (f) gv = SELECT(H, HI, FUSED_MASK(H, HI, xv * fs[v] + ft[v], f), gv, SPLAT(H, 0.0f));        \
                H t = gv * (xv - m[v]) * s[v];                                                                 \
                a[v] += __builtin_convertvector(gv, D);                                                        \
                b[v] += __builtin_convertvector(t, D);                                                         \
            }                                                                                                  \
        for (size_t v = 0; v < NV; v++) {                                                                      \
            STORE(D, acc + v * DL, a[v]);                                                                      \
            STORE(D, accx + v * DL, b[v]);                                                                     \
        }                                                                                                      \
    }

#define DEFINE_CHANNEL_SUMS(SUFFIX, TARGET, H, HI, D, DL)                                                      \
    DEFINE_CHANNEL_SUMS_BLOCK(SUFFIX, TARGET, H, D, DL, 1)                                                     \
    DEFINE_CHANNEL_SUMS_BLOCK(SUFFIX, TARGET, H, D, DL, 2)                                                     \
    DEFINE_CHANNEL_SUMS_BLOCK(SUFFIX, TARGET, H, D, DL, 3)                                                     \
    DEFINE_CHANNEL_SUMS_BLOCK(SUFFIX, TARGET, H, D, DL, 4)                                                     \
    DEFINE_GRAD_SUMS_BLOCK(SUFFIX, TARGET, H, HI, D, DL, 1)                                                        \
    DEFINE_GRAD_SUMS_BLOCK(SUFFIX, TARGET, H, HI, D, DL, 2)                                                        \
    DEFINE_GRAD_SUMS_BLOCK(SUFFIX, TARGET, H, HI, D, DL, 3)                                                        \
    DEFINE_GRAD_SUMS_BLOCK(SUFFIX, TARGET, H, HI, D, DL, 4)                                                        \
    TARGET static void channel_sums_##SUFFIX(const float *x, size_t rows, size_t c, const double *mean,        \
                                             double *acc) {                                                    \
        size_t j = 0;                                                                                          \
        for (; j + 4 * DL <= c; j += 4 * DL)                                                                   \
            channel_sums_##SUFFIX##_4(x + j, rows, c, mean ? mean + j : NULL, acc + j);                        \
        switch ((c - j) / DL) {                                                                                \
        case 3: channel_sums_##SUFFIX##_3(x + j, rows, c, mean ? mean + j : NULL, acc + j); break;             \
        case 2: channel_sums_##SUFFIX##_2(x + j, rows, c, mean ? mean + j : NULL, acc + j); break;             \
        case 1: channel_sums_##SUFFIX##_1(x + j, rows, c, mean ? mean + j : NULL, acc + j); break;             \
        default: break;                                                                                        \
        }                                                                                                      \
        for (j = c - c % DL; j < c; j++) {                                                                     \
            double t = acc[j];                                                                                 \
            for (size_t r = 0; r < rows; r++) {                                                                \
                double v = (double)x[r * c + j];                                                               \
                if (mean) { v -= mean[j]; v = v * v; }                                                         \
                t += v;                                                                                        \
            }                                                                                                  \
            acc[j] = t;                                                                                        \
        }                                                                                                      \
    }                                                                                                          \
    TARGET static void batchnorm_grad_sums_##SUFFIX(const float *x, const float *g, size_t rows, size_t c,    \
                                                    const float *mean, const float *rstd,                      \
                                                    const ck_fused_clamp *f, double *acc) {                    \
        size_t j = 0;                                                                                          \
        for (; j + 4 * DL <= c; j += 4 * DL)                                                                   \
            grad_sums_##SUFFIX##_4(x + j, g + j, rows, c, mean + j, rstd + j, f, j, acc + j, acc + c + j);     \
        switch ((c - j) / DL) {                                                                                \
        case 3: grad_sums_##SUFFIX##_3(x + j, g + j, rows, c, mean + j, rstd + j, f, j, acc + j, acc + c + j); break; \
        case 2: grad_sums_##SUFFIX##_2(x + j, g + j, rows, c, mean + j, rstd + j, f, j, acc + j, acc + c + j); break; \
        case 1: grad_sums_##SUFFIX##_1(x + j, g + j, rows, c, mean + j, rstd + j, f, j, acc + j, acc + c + j); break; \
        default: break;                                                                                        \
        }                                                                                                      \
        for (j = c - c % DL; j < c; j++) {                                                                     \
            double t = acc[j], u = acc[c + j];                                                                 \
            for (size_t r = 0; r < rows; r++) {                                                                \
                float gr = g[r * c + j];                                                                       \
                if (f && !fused_passes(x[r * c + j] * f->scale[j] + f->shift[j], f)) gr = 0;                  \
                t += (double)gr;                                                                               \
                u += (double)(gr * (x[r * c + j] - mean[j]) * rstd[j]);                                        \
            }                                                                                                  \
            acc[j] = t;                                                                                        \
            acc[c + j] = u;                                                                                    \
        }                                                                                                      \
    }

DEFINE_CHANNEL_SUMS(avx512, T_AVX512, h8, hi8, d8, 8)
DEFINE_CHANNEL_SUMS(avx2, T_AVX2, h4, hi4, d4, 4)
DEFINE_CHANNEL_SUMS(sse2, T_SSE2, h2, hi2, d2, 2)

// ---------------------------------------------------------------------------------------------------------------
// Dispatch

enum { ISA_UNKNOWN = 0, ISA_SSE2, ISA_AVX2, ISA_AVX512 };
static int isa_level = ISA_UNKNOWN;

static int isa(void) {
    int level = __atomic_load_n(&isa_level, __ATOMIC_RELAXED);
    if (level != ISA_UNKNOWN) return level;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
        && __builtin_cpu_supports("bmi2"))
        level = ISA_AVX512;
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
        level = ISA_AVX2;
    else
        level = ISA_SSE2;
    // TL_KERNEL_ISA lowers the level (tests run every variant on one machine); it never raises it.
    const char *requested = getenv("TL_KERNEL_ISA");
    if (requested) {
        int cap = !strcmp(requested, "sse2") ? ISA_SSE2 : !strcmp(requested, "avx2") ? ISA_AVX2
                : !strcmp(requested, "avx512") ? ISA_AVX512 : ISA_UNKNOWN;
        if (cap != ISA_UNKNOWN && cap < level) level = cap;
    }
    __atomic_store_n(&isa_level, level, __ATOMIC_RELAXED);
    return level;
}

const char *ck_isa(void) {
    switch (isa()) {
    case ISA_AVX512: return "avx512";
    case ISA_AVX2: return "avx2";
    default: return "sse2";
    }
}

#define DISPATCH(NAME, ...)                                                                                    \
    switch (isa()) {                                                                                           \
    case ISA_AVX512: NAME##_avx512(__VA_ARGS__); break;                                                        \
    case ISA_AVX2: NAME##_avx2(__VA_ARGS__); break;                                                            \
    default: NAME##_sse2(__VA_ARGS__); break;                                                                  \
    }

void ck_pointwise(const float *x, size_t ldx, size_t rows, size_t cin, const float *w, size_t cout_pad,
                  const float *bias, const float *residual, size_t ldr, float *y, size_t ldy, size_t cout, int act) {
    DISPATCH(pointwise, x, ldx, rows, cin, w, cout_pad, bias, residual, ldr, y, ldy, cout, act)
}

void ck_depthwise(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t kh,
                  size_t kw, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t oy0,
                  size_t oy1, float *y, int act) {
    DISPATCH(depthwise, x, h, w, c, wt, bias, kh, kw, stride, pad_top, pad_left, oh, ow, oy0, oy1, y, act)
}

void ck_conv_direct(const float *x, size_t h, size_t w, size_t cin, const float *wt, size_t cout_pad,
                    const float *bias, size_t cout, size_t kh, size_t kw, size_t stride, size_t pad_top,
                    size_t pad_left, size_t oh, size_t ow, size_t oy0, size_t oy1, float *y, int act) {
    DISPATCH(conv_direct, x, h, w, cin, wt, cout_pad, bias, cout, kh, kw, stride, pad_top, pad_left, oh, ow, oy0,
             oy1, y, act)
}

void ck_gelu(const float *x, const float *bias, float *y, size_t n) { DISPATCH(gelu, x, bias, y, n) }

void ck_clamp(const float *x, float *y, size_t n, float lo, float hi) { DISPATCH(clamp, x, y, n, lo, hi) }

void ck_clamp_backward(const float *x, const float *g, float *dx, size_t n, float lo, float hi, int upper) {
    DISPATCH(clamp_backward, x, g, dx, n, lo, hi, upper)
}

void ck_channel_sums(const float *x, size_t rows, size_t c, const double *mean, double *acc) {
    DISPATCH(channel_sums, x, rows, c, mean, acc)
}

void ck_channel_affine(const float *x, size_t rows, size_t c, const float *scale, const float *shift, float lo,
                       float hi, float *y) {
    DISPATCH(channel_affine, x, rows, c, scale, shift, lo, hi, y)
}

void ck_batchnorm_grad_sums(const float *x, const float *g, size_t rows, size_t c, const float *mean,
                            const float *rstd, const ck_fused_clamp *fused, double *acc) {
    DISPATCH(batchnorm_grad_sums, x, g, rows, c, mean, rstd, fused, acc)
}

void ck_batchnorm_backward(const float *x, const float *g, size_t rows, size_t c, const float *scale,
                           const float *a, const float *b, const float *mean, const float *rstd,
                           const ck_fused_clamp *fused, float *dx) {
    DISPATCH(batchnorm_backward, x, g, rows, c, scale, a, b, mean, rstd, fused, dx)
}

void ck_conv_few(const float *x, size_t h, size_t w, size_t cin, const float *wt, size_t cout_pad, const float *bias,
                 size_t cout, size_t kh, size_t kw, size_t stride, size_t pad_top, size_t pad_left, size_t oh,
                 size_t ow, float *scratch, float *y) {
    size_t hp = (oh - 1) * stride + kh, wp = (ow - 1) * stride + kw;
    pad_image(x, h, w, cin, pad_top, pad_left, hp, wp, scratch);
    DISPATCH(conv_few, scratch, wp, cin, wt, cout_pad, bias, cout, kh, kw, stride, oh, ow, y)
}

void ck_conv_few_weight_grad(const float *x, size_t h, size_t w, size_t cin, const float *g, size_t cout, size_t kh,
                             size_t kw, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                             float *scratch, float *dw, size_t cout_pad) {
    size_t hp = (oh - 1) * stride + kh, wp = (ow - 1) * stride + kw;
    pad_image(x, h, w, cin, pad_top, pad_left, hp, wp, scratch);
    DISPATCH(conv_few_grad, scratch, wp, cin, g, cout, kh, kw, stride, oh, ow, dw, cout_pad)
}
