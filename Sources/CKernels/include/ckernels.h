#ifndef CKERNELS_H
#define CKERNELS_H
// Hot loops that need wider vectors than Swift's baseline x86-64 target gives (SSE2). Each entry point picks, once,
// the variant the running CPU supports: AVX-512 (with the OS saving zmm state), AVX2+FMA, or baseline SSE2.
// Never an instruction the CPU lacks: the choice goes through __builtin_cpu_supports.
//
// Layouts are channels-last (NHWC) as in the engine. Every function works on one image (or one row range of one
// image) and is single-threaded: callers parallelise over images or rows.
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Which variant the dispatch picked: "avx512", "avx2" or "sse2": the best this CPU runs, lowered to
/// $TL_KERNEL_ISA when that names a lower one (read once, at the first kernel call).
const char *ck_isa(void);

/// Columns of a packed pointwise weight are padded to a multiple of this.
#define CK_PACK_COLUMNS 32

/// Activation applied by the fused kernels after the bias (and residual).
enum { CK_ACT_NONE = 0, CK_ACT_RELU = 1, CK_ACT_RELU6 = 2 };

/// Pointwise (1x1) convolution as a GEMM with its epilogue fused:
///   y[r * ldy + o] = act(bias[o] + sum_k x[r * ldx + k] * w[k * cout_pad + o] (+ residual[r * ldr + o]))
/// for r < rows, o < cout. `w` is packed [cin][cout_pad] (cout_pad = cout rounded up to CK_PACK_COLUMNS, padding
/// columns zero); `bias` and `residual` may be NULL. The residual is added before the activation.
void ck_pointwise(const float *x, size_t ldx, size_t rows, size_t cin, const float *w, size_t cout_pad,
                  const float *bias, const float *residual, size_t ldr, float *y, size_t ldy, size_t cout, int act);

/// Depthwise convolution of one NHWC image [h, w, c] with weights [kh][kw][c] (taps of one kernel position
/// contiguous over channels), stride `stride` in both directions, padding `pad_top`/`pad_left` (the
/// bottom/right padding follows from oh/ow), output rows [oy0, oy1) of y [oh, ow, c]:
///   y = act(bias + sum over in-bounds taps of x * w). `bias` may be NULL.
void ck_depthwise(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t kh,
                  size_t kw, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t oy0,
                  size_t oy1, float *y, int act);

/// Direct convolution with few input channels (e.g. an RGB stem) of one NHWC image [h, w, cin], weights packed
/// [kh][kw][cin][cout_pad] (cout_pad = cout rounded up to CK_PACK_COLUMNS, padding zero), output rows [oy0, oy1)
/// of y [oh, ow, cout]: y = act(bias + sum of in-bounds taps). `bias` may be NULL.
void ck_conv_direct(const float *x, size_t h, size_t w, size_t cin, const float *wt, size_t cout_pad,
                    const float *bias, size_t cout, size_t kh, size_t kw, size_t stride, size_t pad_top,
                    size_t pad_left, size_t oh, size_t ow, size_t oy0, size_t oy1, float *y, int act);

/// Exact GELU of n consecutive values: y[i] = u * Phi(u), u = x[i] + bias[i] (bias may be NULL; callers pass the
/// bias row aligned with x). Phi through erf (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7). y may equal x.
void ck_gelu(const float *x, const float *bias, float *y, size_t n);

/// Convolution of one NHWC image x [h, w, cin] with up to some 32 input channels (small CNNs in training; no im2col):
/// y [oh, ow, cout] = bias + sum over taps, weights packed [kh][kw][cin][cout_pad] (cout_pad a multiple of 16,
/// padding zero), stride `stride` both ways, padding pad_top/pad_left (bottom/right follow from oh/ow), no dilation.
/// `scratch` holds ((oh - 1) * stride + kh) x ((ow - 1) * stride + kw) x cin floats (the zero-padded image).
/// `bias` may be NULL. Fused multiply-adds where the CPU has them.
void ck_conv_few(const float *x, size_t h, size_t w, size_t cin, const float *wt, size_t cout_pad, const float *bias,
                 size_t cout, size_t kh, size_t kw, size_t stride, size_t pad_top, size_t pad_left, size_t oh,
                 size_t ow, float *scratch, float *y);

/// Its weight gradient for one image: dw [kh][kw][cin][cout_pad] += sum over output pixels of the tap's input times
/// g [oh, ow, cout] (pixels in order). Same sizes and scratch as ck_conv_few.
void ck_conv_few_weight_grad(const float *x, size_t h, size_t w, size_t cin, const float *g, size_t cout, size_t kh,
                             size_t kw, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow,
                             float *scratch, float *dw, size_t cout_pad);

/// Clamp of n values as Swift's min(max(x, lo), hi) (a NaN passes through; hi = +infinity for ReLU). y may equal x.
void ck_clamp(const float *x, float *y, size_t n, float lo, float hi);

/// Its gradient: dx = g where lo < x (and x < hi when `upper` is non-zero), else 0.
void ck_clamp_backward(const float *x, const float *g, float *dx, size_t n, float lo, float hi, int upper);

/// Per-channel sums of a [rows, c] matrix added to acc[c] in doubles, rows in order: x, or (x - mean[j])^2 when
/// `mean` (doubles) is not NULL.
void ck_channel_sums(const float *x, size_t rows, size_t c, const double *mean, double *acc);

/// y[r][j] = clamp(x[r][j] * scale[j] + shift[j], lo, hi) as ck_clamp (no fused multiply-add; infinite bounds give
/// the affine map itself). y may equal x.
void ck_channel_affine(const float *x, size_t rows, size_t c, const float *scale, const float *shift, float lo,
                       float hi, float *y);

/// A clamp fused after BatchNorm's affine map pre = x * scale[j] + shift[j] (as ck_channel_affine computes it): the
/// gradient kernels below zero g where the clamp's gradient is zero, i.e. unless lo < pre (and pre < hi when
/// `upper` is non-zero), as ck_clamp_backward does on pre. NULL: no clamp.
typedef struct {
    const float *scale, *shift;
    float lo, hi;
    int upper;
} ck_fused_clamp;

/// BatchNorm's gradient sums: acc[j] += g, acc[c + j] += g * (x - mean[j]) * rstd[j] (products in float, sums in
/// doubles, rows in order), g masked by `fused` when not NULL.
void ck_batchnorm_grad_sums(const float *x, const float *g, size_t rows, size_t c, const float *mean,
                            const float *rstd, const ck_fused_clamp *fused, double *acc);

/// BatchNorm's input gradient on batch statistics: dx = scale[j] * (g - a[j] - (x - mean[j]) * rstd[j] * b[j]), g
/// masked by `fused` when not NULL.
void ck_batchnorm_backward(const float *x, const float *g, size_t rows, size_t c, const float *scale,
                           const float *a, const float *b, const float *mean, const float *rstd,
                           const ck_fused_clamp *fused, float *dx);

/// A task of a parallel region: `index` in 0..<count, `ctx` the caller's.
typedef void (*ck_task_fn)(void *ctx, long index);

/// Runs fn(ctx, i) for every i in 0..<count, on the calling thread and up to threads - 1 of the pool's persistent
/// workers (pool.c), and returns when all are done. Inline, in index order, when count or threads is 1, when called
/// from inside a task, or while another thread's region runs.
void ck_pool_run(long count, int threads, ck_task_fn fn, void *ctx);

/// Spinning workers go to sleep now: the caller is about to hand the cores to another pool (OpenBLAS's threads).
/// No effect when called from inside a task.
void ck_pool_park(void);

#ifdef __cplusplus
}
#endif

#endif
