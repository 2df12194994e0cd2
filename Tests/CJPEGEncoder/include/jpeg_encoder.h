#ifndef JPEG_ENCODER_H
#define JPEG_ENCODER_H
// Test support only: writes 8-bit RGB as a baseline JPEG (libjpeg-turbo), to build JPEG copies of fixtures.
#include <stddef.h>
#include <stdint.h>

/// Encodes width x height RGB bytes at `quality` (1-100) with 4:2:0 chroma. Returns a malloc'd buffer (free it
/// with free()) and its size in *size, or NULL on failure.
unsigned char *tl_test_jpeg_encode(const unsigned char *rgb, uint32_t width, uint32_t height, int quality, size_t *size);

#endif
