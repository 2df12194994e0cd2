#include "jpeg_shim.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <jerror.h>

// Everything the error path must release lives in this struct, owned by the caller of `decode_guarded` (not by
// the function that calls setjmp), so its fields are well defined after a longjmp.
typedef struct {
    struct jpeg_error_mgr manager;  // first member: libjpeg's callbacks receive a pointer to it
    jmp_buf jump;
    char *err;
    size_t errlen;
    unsigned char *pixels;
} tl_context;

static void set_error(tl_context *ctx, const char *message) {
    if (ctx->err && ctx->errlen > 0) snprintf(ctx->err, ctx->errlen, "%s", message);
}

static void fail_with_libjpeg_message(j_common_ptr cinfo) {
    tl_context *ctx = (tl_context *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    char buf[JMSG_LENGTH_MAX + 32];
    if (cinfo->err->msg_code == JWRN_JPEG_EOF || cinfo->err->msg_code == JERR_INPUT_EOF) {
        snprintf(buf, sizeof buf, "truncated JPEG data");
    } else if (cinfo->err->msg_code == JERR_NO_SOI) {
        snprintf(buf, sizeof buf, "not a JPEG file");
    } else {
        snprintf(buf, sizeof buf, "corrupt JPEG data (%s)", text);
    }
    set_error(ctx, buf);
    longjmp(ctx->jump, 1);
}

static void on_error_exit(j_common_ptr cinfo) { fail_with_libjpeg_message(cinfo); }

// level -1: a warning. Those that mean lost or invented image data are errors; the rest are dropped silently.
// level >= 0: trace messages, never shown.
static void on_emit_message(j_common_ptr cinfo, int level) {
    if (level != -1) return;
    switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:         // premature end of file: libjpeg would pad with grey
    case JWRN_HIT_MARKER:       // premature end of an entropy-coded segment
    case JWRN_HUFF_BAD_CODE:    // corrupt Huffman data
    case JWRN_MUST_RESYNC:      // data lost before a restart marker
    case JWRN_NOT_SEQUENTIAL:   // a scan out of order
    case JWRN_BOGUS_PROGRESSION:
        fail_with_libjpeg_message(cinfo);
    default:
        return;
    }
}

static int decode_guarded(tl_context *ctx, struct jpeg_decompress_struct *cinfo, const unsigned char *data,
                          size_t size, uint64_t max_pixels, tl_jpeg_image *out) {
    if (setjmp(ctx->jump)) return 1;
    jpeg_create_decompress(cinfo);
    jpeg_mem_src(cinfo, data, (unsigned long)size);
    if (jpeg_read_header(cinfo, TRUE) != JPEG_HEADER_OK) {
        set_error(ctx, "no image in this JPEG file");
        return 1;
    }
    uint64_t pixels = (uint64_t)cinfo->image_width * (uint64_t)cinfo->image_height;
    if (cinfo->image_width == 0 || cinfo->image_height == 0) {
        set_error(ctx, "corrupt JPEG data (zero width or height)");
        return 1;
    }
    if (pixels > max_pixels) {
        char buf[128];
        snprintf(buf, sizeof buf, "image is %ux%u, over the %llu-megapixel limit", cinfo->image_width,
                 cinfo->image_height, (unsigned long long)(max_pixels / 1000000));
        set_error(ctx, buf);
        return 1;
    }
    if (cinfo->jpeg_color_space == JCS_CMYK || cinfo->jpeg_color_space == JCS_YCCK) {
        set_error(ctx, "CMYK JPEG is not supported (convert it to RGB)");
        return 1;
    }
    if (cinfo->num_components != 1 && cinfo->num_components != 3) {
        char buf[96];
        snprintf(buf, sizeof buf, "unsupported JPEG with %d colour components", cinfo->num_components);
        set_error(ctx, buf);
        return 1;
    }
    cinfo->out_color_space = JCS_RGB;
    cinfo->dct_method = JDCT_ISLOW;
    cinfo->do_fancy_upsampling = TRUE;
    jpeg_start_decompress(cinfo);
    if (cinfo->output_components != 3) {
        set_error(ctx, "corrupt JPEG data (unexpected output components)");
        return 1;
    }
    size_t stride = (size_t)cinfo->output_width * 3;
    ctx->pixels = malloc(stride * cinfo->output_height);
    if (!ctx->pixels) {
        set_error(ctx, "out of memory decoding JPEG");
        return 1;
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        JSAMPROW row = ctx->pixels + (size_t)cinfo->output_scanline * stride;
        if (jpeg_read_scanlines(cinfo, &row, 1) != 1) {
            set_error(ctx, "truncated JPEG data");
            return 1;
        }
    }
    jpeg_finish_decompress(cinfo);
    out->width = cinfo->output_width;
    out->height = cinfo->output_height;
    out->source_components = (uint32_t)cinfo->num_components;
    out->progressive = cinfo->progressive_mode ? 1 : 0;
    out->pixels = ctx->pixels;
    ctx->pixels = NULL;
    return 0;
}

int tl_jpeg_decode(const unsigned char *data, size_t size, uint64_t max_pixels, tl_jpeg_image *out,
                   char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen > 0) err[0] = 0;
    if (!data || size < 4 || data[0] != 0xFF || data[1] != 0xD8) {
        if (err && errlen > 0) snprintf(err, errlen, "%s", size < 4 ? "truncated JPEG data" : "not a JPEG file");
        return 1;
    }
    tl_context ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.err = err;
    ctx.errlen = errlen;
    struct jpeg_decompress_struct cinfo;
    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&ctx.manager);
    ctx.manager.error_exit = on_error_exit;
    ctx.manager.emit_message = on_emit_message;
    int status = decode_guarded(&ctx, &cinfo, data, size, max_pixels, out);
    jpeg_destroy_decompress(&cinfo);
    if (status != 0) {
        free(ctx.pixels);
        memset(out, 0, sizeof *out);
        if (err && errlen > 0 && err[0] == 0) snprintf(err, errlen, "corrupt JPEG data");
    }
    return status;
}

void tl_jpeg_free(tl_jpeg_image *image) {
    if (!image) return;
    free(image->pixels);
    image->pixels = NULL;
}
