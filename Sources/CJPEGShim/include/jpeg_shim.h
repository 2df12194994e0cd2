#ifndef JPEG_SHIM_H
#define JPEG_SHIM_H
// Decodes JPEG through libjpeg(-turbo) with the setjmp owned here: libjpeg's error_exit must not return, and a
// longjmp must never cross Swift frames. This header does not include <jpeglib.h>: Swift sees plain C types.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A decoded image: row-major RGB, 8 bits per sample.
typedef struct tl_jpeg_image {
    uint32_t width;
    uint32_t height;
    uint32_t source_components;  ///< 1 (greyscale) or 3 (YCbCr or RGB) as stored
    uint32_t progressive;        ///< 1 for a progressive JPEG
    unsigned char *pixels;       ///< width * height * 3 bytes, malloc'd; free with tl_jpeg_free
} tl_jpeg_image;

/// Decodes a whole JPEG held in memory to RGB, with libjpeg's defaults (accurate integer IDCT, fancy
/// upsampling), which is what PIL's Image.open(f).convert("RGB") gives.
///
/// - `max_pixels`: images with width * height above this are refused from the frame header, before the
///   pixel buffer is allocated.
/// - CMYK/YCCK files are refused (one line saying so); EXIF orientation is not applied (as in PIL).
/// - Damaged files are errors, never partly decoded images: libjpeg's own errors, and the warnings that mean
///   image data was lost or invented (premature end of file, corrupt entropy-coded data) are errors too.
///   Harmless warnings (extraneous bytes before a marker, unknown APP markers) are ignored and not printed.
///
/// Returns 0 and fills `out` on success (free it with `tl_jpeg_free`); otherwise returns non-zero, leaves
/// `out->pixels` NULL, frees everything, and writes a one-line message (no file name) into `err`.
int tl_jpeg_decode(const unsigned char *data, size_t size, uint64_t max_pixels, tl_jpeg_image *out,
                   char *err, size_t errlen);

/// Frees the pixels of a decoded image (safe on a zeroed or already freed image).
void tl_jpeg_free(tl_jpeg_image *image);

#ifdef __cplusplus
}
#endif

#endif
