// Shared by kernel-shapes.c and kernel-ab.c (included from the same folder; their build commands need nothing
// more): EfficientNet-Lite0's pointwise and depthwise layer shapes at 224 x 224, a clock, and filled buffers.
#ifndef KERNEL_SHAPES_H
#define KERNEL_SHAPES_H

#include <stdlib.h>
#include <time.h>

// pointwise: input side, inputs, outputs, repeats in the network
static const int pw[][4] = {{112, 32, 16, 1},  {112, 16, 96, 1},  {56, 96, 24, 1},   {56, 24, 144, 2},
                            {56, 144, 24, 1},  {28, 144, 40, 1},  {28, 40, 240, 2},  {28, 240, 40, 1},
                            {14, 240, 80, 1},  {14, 80, 480, 3},  {14, 480, 80, 2},  {14, 480, 112, 1},
                            {14, 112, 672, 3}, {14, 672, 112, 2}, {7, 672, 192, 1},  {7, 192, 1152, 4},
                            {7, 1152, 192, 3}, {7, 1152, 320, 1}, {7, 320, 1280, 1}};
// depthwise: input side, channels, kernel, stride, repeats
static const int dw[][5] = {{112, 32, 3, 1, 1}, {112, 96, 3, 2, 1}, {56, 144, 3, 1, 1}, {56, 144, 5, 2, 1},
                            {28, 240, 5, 1, 1}, {28, 240, 3, 2, 1}, {14, 480, 3, 1, 2}, {14, 480, 5, 1, 1},
                            {14, 672, 5, 1, 2}, {14, 672, 5, 2, 1}, {7, 1152, 5, 1, 3}, {7, 1152, 3, 1, 1}};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

// n floats, 64-byte aligned, holding (i % period) * scale.
static float *filled(size_t n, int period, float scale) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    for (size_t i = 0; i < n; i++) p[i] = (float)(i % period) * scale;
    return p;
}

#endif
