#ifndef PNG_SHIM_H
#define PNG_SHIM_H
// Decodes PNG through libpng with the setjmp owned here: libpng's errors longjmp, which must never cross Swift frames.
// This header deliberately does not include <png.h>, so Swift sees only plain C types.

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A decoded image: row-major HWC samples, every colour type and depth normalised to RGB or RGBA.
typedef struct tl_png_image {
    uint32_t width;
    uint32_t height;
    uint32_t channels;           ///< 3 (RGB) or 4 (RGBA; only when alpha was asked for and the file has any)
    uint32_t bit_depth;          ///< 8 or 16; 16-bit samples are uint16 in host byte order
    uint32_t source_color_type;  ///< PNG colour type as stored (0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA)
    uint32_t source_bit_depth;   ///< 1, 2, 4, 8 or 16 as stored
    uint32_t interlaced;         ///< 1 for Adam7
    unsigned char *pixels;       ///< width * height * channels * bit_depth / 8 bytes, malloc'd; free with tl_png_free
} tl_png_image;

/// Decodes a whole PNG held in memory.
///
/// - `max_pixels`: images with width * height above this are refused from the IHDR alone, before any
///   allocation (decompression bombs).
/// - `keep_alpha`: 0 drops alpha (an alpha channel and tRNS transparency are ignored, like PIL's convert('RGB'));
///   1 returns RGBA when the file has an alpha channel or tRNS.
/// - Gamma (gAMA, sRGB, iCCP, cHRM) and sBIT are ignored: samples come out as stored.
/// - CRC errors in any chunk (all checked before decoding), truncation anywhere up to and including IEND, and
///   zlib errors are errors; bytes after IEND are ignored; libpng warnings are swallowed (not printed).
///
/// Returns 0 and fills `out` on success (free it with `tl_png_free`); otherwise returns non-zero, leaves
/// `out->pixels` NULL, frees everything, and writes a one-line message (no file name) into `err`.
int tl_png_decode(const unsigned char *data, size_t size, uint64_t max_pixels, int keep_alpha,
                  tl_png_image *out, char *err, size_t errlen);

/// Frees the pixels of a decoded image (safe on a zeroed or already freed image).
void tl_png_free(tl_png_image *image);

#ifdef __cplusplus
}
#endif

#endif
