// A/B of two builds of the pointwise and depthwise kernels on EfficientNet-Lite0's layer shapes, for hosts whose
// speed moves within minutes: the two builds alternate 30 times per shape (one thread, data in cache) and each keeps
// its best time, so a slow minute hits both alike; it also says whether the two builds' outputs are bit-identical.
// Build A from one version of ckernels.c and B from another:
//
//   mk() { clang -O3 -I Sources/CKernels/include -c "$1" -o "/tmp/$2.o" &&
//          objcopy --redefine-sym ck_pointwise=$2_pointwise --redefine-sym ck_depthwise=$2_depthwise \
//                  --keep-global-symbol=$2_pointwise --keep-global-symbol=$2_depthwise "/tmp/$2.o"; }
//   git show HEAD~1:Sources/CKernels/ckernels.c > /tmp/old.c && mk /tmp/old.c A && mk Sources/CKernels/ckernels.c B &&
//   clang -O3 -I Sources/CKernels/include scripts/bench/kernel-ab.c /tmp/A.o /tmp/B.o -o /tmp/kernel-ab &&
//   /tmp/kernel-ab [rounds]
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckernels.h"
#include "kernel-shapes.h"

typedef void (*pointwise_fn)(const float *, size_t, size_t, size_t, const float *, size_t, const float *,
                             const float *, size_t, float *, size_t, size_t, int);
void A_pointwise(const float *x, size_t ldx, size_t rows, size_t cin, const float *w, size_t cout_pad,
                 const float *bias, const float *residual, size_t ldr, float *y, size_t ldy, size_t cout, int act);
void B_pointwise(const float *x, size_t ldx, size_t rows, size_t cin, const float *w, size_t cout_pad,
                 const float *bias, const float *residual, size_t ldr, float *y, size_t ldy, size_t cout, int act);
typedef void (*depthwise_fn)(const float *, size_t, size_t, size_t, const float *, const float *, size_t, size_t,
                             size_t, size_t, size_t, size_t, size_t, size_t, size_t, float *, int);
void A_depthwise(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t kh,
                 size_t kw, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t oy0,
                 size_t oy1, float *y, int act);
void B_depthwise(const float *x, size_t h, size_t w, size_t c, const float *wt, const float *bias, size_t kh,
                 size_t kw, size_t stride, size_t pad_top, size_t pad_left, size_t oh, size_t ow, size_t oy0,
                 size_t oy1, float *y, int act);

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 30;
    size_t big = 112 * 112 * 1280;
    float *x = filled(big, 7, 0.1f), *y[2] = {filled(big, 1, 0), filled(big, 1, 0)};
    float *w = filled(1280 * 1280, 5, 0.01f), *b = filled(1280, 3, 0.1f);
    pointwise_fn pf[2] = {A_pointwise, B_pointwise};
    depthwise_fn df[2] = {A_depthwise, B_depthwise};
    double total[2] = {0, 0}, flops = 0;
    int same = 1;
    for (size_t s = 0; s < sizeof pw / sizeof pw[0]; s++) {
        int h = pw[s][0], cin = pw[s][1], cout = pw[s][2];
        int pad = (cout + CK_PACK_COLUMNS - 1) / CK_PACK_COLUMNS * CK_PACK_COLUMNS;
        size_t rows = (size_t)h * h;
        double fl = 2.0 * rows * cin * cout, best[2] = {1e9, 1e9};
        int reps = (int)(3e7 / fl) + 1;
        for (int t = 0; t < rounds; t++)
            for (int v = 0; v < 2; v++) {
                double t0 = now();
                for (int r = 0; r < reps; r++)
                    pf[v](x, cin, rows, cin, w, pad, b, NULL, 0, y[v], cout, cout, CK_ACT_RELU6);
                double dt = (now() - t0) / reps;
                if (dt < best[v]) best[v] = dt;
            }
        same &= memcmp(y[0], y[1], rows * cout * sizeof(float)) == 0;
        for (int v = 0; v < 2; v++) total[v] += best[v] * pw[s][3];
        flops += fl * pw[s][3];
        printf("pointwise %3dx%-3d %4d -> %-4d  A %7.1f us  B %7.1f us  B/A %.3f\n", h, h, cin, cout, best[0] * 1e6,
               best[1] * 1e6, best[1] / best[0]);
    }
    printf("pointwise per image: A %.0f us (%.1f GFLOPS), B %.0f us (%.1f GFLOPS), B/A %.3f\n\n", total[0] * 1e6,
           flops / total[0] / 1e9, total[1] * 1e6, flops / total[1] / 1e9, total[1] / total[0]);
    total[0] = total[1] = flops = 0;
    for (size_t s = 0; s < sizeof dw / sizeof dw[0]; s++) {
        int h = dw[s][0], c = dw[s][1], k = dw[s][2], stride = dw[s][3];
        int oh = (h + stride - 1) / stride, span = (oh - 1) * stride + k - h, before = span > 0 ? span / 2 : 0;
        double fl = 2.0 * oh * oh * c * k * k, best[2] = {1e9, 1e9};
        int reps = (int)(3e7 / fl) + 1;
        for (int t = 0; t < rounds; t++)
            for (int v = 0; v < 2; v++) {
                double t0 = now();
                for (int r = 0; r < reps; r++)
                    df[v](x, h, h, c, w, b, k, k, stride, before, before, oh, oh, 0, oh, y[v], CK_ACT_RELU6);
                double dt = (now() - t0) / reps;
                if (dt < best[v]) best[v] = dt;
            }
        same &= memcmp(y[0], y[1], (size_t)oh * oh * c * sizeof(float)) == 0;
        for (int v = 0; v < 2; v++) total[v] += best[v] * dw[s][4];
        flops += fl * dw[s][4];
        printf("depthwise %3dx%-3d %4d k%d s%d  A %7.1f us  B %7.1f us  B/A %.3f\n", h, h, c, k, stride,
               best[0] * 1e6, best[1] * 1e6, best[1] / best[0]);
    }
    printf("depthwise per image: A %.0f us (%.1f GFLOPS), B %.0f us (%.1f GFLOPS), B/A %.3f\n", total[0] * 1e6,
           flops / total[0] / 1e9, total[1] * 1e6, flops / total[1] / 1e9, total[1] / total[0]);
    printf("outputs bit-identical: %s\n", same ? "yes" : "NO");
    return 0;
}
