// Times the C kernels alone on EfficientNet-Lite0's layer shapes at 224 x 224: every pointwise (1 x 1) and every
// depthwise convolution of one image, one thread, data in cache (the same buffers every repetition), best of 9.
// Prints microseconds per layer shape and the per-image totals (shapes weighted by how often the network has them).
// What the W2 workload adds on top (activations and weights coming from L3, two threads) is not in these figures.
//
//   clang -O3 -I Sources/CKernels/include -o /tmp/kernel-shapes scripts/bench/kernel-shapes.c \
//       Sources/CKernels/ckernels.c && /tmp/kernel-shapes
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ckernels.h"
#include "kernel-shapes.h"

int main(void) {
    float *x = filled(112 * 112 * 1280, 7, 0.1f), *y = filled(112 * 112 * 1280, 1, 0);
    float *w = filled(1280 * 1280, 5, 0.01f), *b = filled(1280, 1, 0.1f);
    printf("kernels: %s\n", ck_isa());
    double total = 0, flops = 0;
    for (size_t s = 0; s < sizeof pw / sizeof pw[0]; s++) {
        int h = pw[s][0], cin = pw[s][1], cout = pw[s][2];
        int pad = (cout + CK_PACK_COLUMNS - 1) / CK_PACK_COLUMNS * CK_PACK_COLUMNS;
        size_t rows = (size_t)h * h;
        double f = 2.0 * rows * cin * cout, best = 1e9;
        int reps = (int)(1e8 / f) + 1;
        for (int t = 0; t < 9; t++) {
            double t0 = now();
            for (int r = 0; r < reps; r++) ck_pointwise(x, cin, rows, cin, w, pad, b, NULL, 0, y, cout, cout, CK_ACT_RELU6);
            double dt = (now() - t0) / reps;
            if (dt < best) best = dt;
        }
        total += best * pw[s][3];
        flops += f * pw[s][3];
        printf("pointwise %3dx%-3d %4d -> %-4d x%d  %7.1f us  %6.1f GFLOPS\n", h, h, cin, cout, pw[s][3], best * 1e6,
               f / best / 1e9);
    }
    printf("pointwise per image: %.0f us (%.1f GFLOPS)\n\n", total * 1e6, flops / total / 1e9);
    total = flops = 0;
    for (size_t s = 0; s < sizeof dw / sizeof dw[0]; s++) {
        int h = dw[s][0], c = dw[s][1], k = dw[s][2], stride = dw[s][3];
        int oh = (h + stride - 1) / stride, span = (oh - 1) * stride + k - h, before = span > 0 ? span / 2 : 0;
        double f = 2.0 * oh * oh * c * k * k, best = 1e9;
        int reps = (int)(3e7 / f) + 1;
        for (int t = 0; t < 9; t++) {
            double t0 = now();
            for (int r = 0; r < reps; r++)
                ck_depthwise(x, h, h, c, w, b, k, k, stride, before, before, oh, oh, 0, oh, y, CK_ACT_RELU6);
            double dt = (now() - t0) / reps;
            if (dt < best) best = dt;
        }
        total += best * dw[s][4];
        flops += f * dw[s][4];
        printf("depthwise %3dx%-3d %4d k%d s%d x%d  %7.1f us  %6.1f GFLOPS\n", h, h, c, k, stride, dw[s][4], best * 1e6,
               f / best / 1e9);
    }
    printf("depthwise per image: %.0f us (%.1f GFLOPS)\n", total * 1e6, flops / total / 1e9);
    return 0;
}
