// libFuzzer harness for the C PNG shim alone (built by scripts/fuzz with clang -fsanitize=fuzzer,address,undefined).
// Properties: no sanitizer report; success gives a consistent image whose every pixel byte is readable;
// failure gives a non-empty one-line message, NULL pixels, and nothing leaked.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "png_shim.h"

#define CHECK(cond, ...) do { if (!(cond)) { fprintf(stderr, "fuzz-png-shim: property violated: " __VA_ARGS__); fputc('\n', stderr); abort(); } } while (0)

// Rewrites every chunk's CRC to match (a copy of the input), so mutations get past the CRC check into libpng.
// Returns 1 when something changed.
static int fix_crcs(uint8_t *d, size_t size) {
    int changed = 0;
    for (size_t pos = 8; pos + 12 <= size;) {
        uint32_t length = (uint32_t)d[pos] << 24 | (uint32_t)d[pos + 1] << 16 | (uint32_t)d[pos + 2] << 8 | d[pos + 3];
        if (length > size - pos - 12) break;
        uint32_t crc = (uint32_t)crc32(0, d + pos + 4, length + 4);
        uint8_t want[4] = {crc >> 24, crc >> 16, crc >> 8, crc};
        if (memcmp(d + pos + 8 + length, want, 4) != 0) { memcpy(d + pos + 8 + length, want, 4); changed = 1; }
        if (memcmp(d + pos + 4, "IEND", 4) == 0) break;
        pos += 12 + (size_t)length;
    }
    return changed;
}

static void decode(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    decode(data, size);
    uint8_t *fixed = malloc(size ? size : 1);
    memcpy(fixed, data, size);
    if (fix_crcs(fixed, size)) decode(fixed, size);
    free(fixed);
    return 0;
}

static void decode(const uint8_t *data, size_t size) {
    const uint64_t max_pixels = 1u << 20;
    for (int keep_alpha = 0; keep_alpha <= 1; keep_alpha++) {
        tl_png_image image;
        memset(&image, 0xA5, sizeof image);  // the shim must fill or clear every field it promises
        char err[320];
        memset(err, 'x', sizeof err);
        int status = tl_png_decode(data, size, max_pixels, keep_alpha, &image, err, sizeof err);
        if (status != 0) {
            CHECK(image.pixels == NULL, "failure left pixels set");
            CHECK(memchr(err, 0, sizeof err) != NULL, "error message not terminated");
            CHECK(err[0] != 0, "empty error message");
            CHECK(strchr(err, '\n') == NULL, "error message spans lines: %s", err);
            tl_png_free(&image);
            continue;
        }
        CHECK(image.pixels != NULL, "success without pixels");
        CHECK(image.width > 0 && image.height > 0 && (uint64_t)image.width * image.height <= max_pixels,
              "size %ux%u", image.width, image.height);
        CHECK(image.channels == 3 || (keep_alpha && image.channels == 4), "channels %u (keep_alpha %d)", image.channels, keep_alpha);
        CHECK(image.bit_depth == 8 || image.bit_depth == 16, "bit depth %u", image.bit_depth);
        CHECK(image.source_color_type <= 6 && image.source_color_type != 1 && image.source_color_type != 5,
              "source colour type %u", image.source_color_type);
        CHECK(image.interlaced <= 1, "interlaced %u", image.interlaced);
        size_t bytes = (size_t)image.width * image.height * image.channels * (image.bit_depth / 8);
        unsigned sum = 0;  // touches every byte: ASan reports a buffer shorter than promised
        for (size_t i = 0; i < bytes; i++) sum += image.pixels[i];
        if (sum == 0xFFFFFFFFu) fputc(' ', stderr);
        tl_png_free(&image);
        CHECK(image.pixels == NULL, "tl_png_free left pixels set");
        tl_png_free(&image);  // documented as safe twice
    }
}
