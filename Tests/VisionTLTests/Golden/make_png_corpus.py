#!/usr/bin/python3
"""Makes the PNG test corpus and the resize goldens for VisionTLTests (run once; outputs are committed).

    /usr/bin/python3 Tests/VisionTLTests/Golden/make_png_corpus.py

Valid files are written by the small PNG encoder below (PIL cannot write sub-byte grey, 16-bit RGB or
interlaced PNGs); PIL 9.4 (Debian python3-pil) then DECODES each one and its convert('RGB') pixels are the
expected values. Rule for 16-bit samples: the decoder keeps all 16 bits and maps v -> v / 257 (so 65535 -> 255.0);
PIL instead keeps the high byte of 16-bit RGB(A)/LA (v >> 8) and clips 16-bit grey ("I" mode) at 255, so for
16-bit files the JSON holds both the v / 257 values ("expected") and PIL's ("pil"). Alpha and tRNS are dropped,
as in PIL's convert('RGB'); gamma (gAMA) is ignored, as in PIL.

Broken files (corpus/broken_*.png) each list a substring the error message must contain.

Resize goldens are PIL's Image.resize(..., Image.BILINEAR) (Pillow's antialiased resampler) on 8-bit RGB, saved
as PNG; the evaluation pipeline follows torchvision's Resize(S) + CenterCrop(S) arithmetic (shorter side -> S,
longer side int(S * long / short), crop offsets int(round((in - S) / 2))) with PIL doing the resampling.
"""
import json, math, os, struct, zlib
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
RESIZE = os.path.join(HERE, "resize")


# ---------------------------------------------------------------- a minimal PNG encoder

def chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def pack_row(samples, depth):
    """samples: 1-D list of ints (all channels interleaved) -> bytes at the given bit depth."""
    if depth == 16:
        return b"".join(struct.pack(">H", int(s)) for s in samples)
    if depth == 8:
        return bytes(int(s) for s in samples)
    out, acc, nbits = bytearray(), 0, 0
    for s in samples:
        acc = (acc << depth) | int(s)
        nbits += depth
        if nbits == 8:
            out.append(acc); acc = 0; nbits = 0
    if nbits:
        out.append(acc << (8 - nbits))
    return bytes(out)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def filter_rows(rows, bpp, start_filter):
    """Applies filters 0..4 in turn (so the decoder's unfiltering is exercised)."""
    out, prev = bytearray(), bytes(len(rows[0])) if rows else b""
    for i, row in enumerate(rows):
        f = (start_filter + i) % 5
        enc = bytearray()
        for x in range(len(row)):
            a = row[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            pred = [0, a, b, (a + b) // 2, paeth(a, b, c)][f]
            enc.append((row[x] - pred) & 0xFF)
        out.append(f); out += enc
        prev = row
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def encode_png(pixels, depth, color, palette=None, trns=None, interlace=False, extra=(), idat_pieces=1):
    """pixels: array [h, w, channels] of ints (palette indices for colour type 3)."""
    h, w, ch = pixels.shape
    bpp = max(1, ch * depth // 8)
    raw = b""
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    for n, (x0, y0, dx, dy) in enumerate(passes):
        sub = pixels[y0::dy, x0::dx]
        if sub.shape[0] == 0 or sub.shape[1] == 0:
            continue
        rows = [pack_row(sub[y].reshape(-1), depth) for y in range(sub.shape[0])]
        raw += filter_rows(rows, bpp, n)
    data = zlib.compress(raw, 9)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, int(interlace)))
    for kind, body in extra:
        png += chunk(kind, body)
    if palette is not None:
        png += chunk(b"PLTE", bytes(np.asarray(palette, dtype=np.uint8).reshape(-1)))
    if trns is not None:
        png += chunk(b"tRNS", trns)
    step = max(1, math.ceil(len(data) / idat_pieces))
    for i in range(0, len(data), step):
        png += chunk(b"IDAT", data[i:i + step])
    return png + chunk(b"IEND", b"")


# ---------------------------------------------------------------- valid corpus

rng = np.random.default_rng(20240611)


def samples(h, w, ch, depth):
    top = (1 << depth) - 1
    v = rng.integers(0, top + 1, size=(h, w, ch))
    v[0, 0, :] = 0          # make sure both ends of the range appear
    v[-1, -1, :] = top
    return v


def valid_cases():
    W, H = 7, 5
    cases = []
    for d in (1, 2, 4, 8, 16):
        cases.append((f"grey{d}", dict(pixels=samples(H, W, 1, d), depth=d, color=0)))
    cases.append(("grey8_trns", dict(pixels=samples(H, W, 1, 8), depth=8, color=0, trns=struct.pack(">H", 0))))
    cases.append(("greyalpha8", dict(pixels=samples(H, W, 2, 8), depth=8, color=4)))
    cases.append(("greyalpha16", dict(pixels=samples(H, W, 2, 16), depth=16, color=4)))
    cases.append(("rgb8", dict(pixels=samples(H, W, 3, 8), depth=8, color=2)))
    cases.append(("rgb8_trns", dict(pixels=samples(H, W, 3, 8), depth=8, color=2, trns=struct.pack(">HHH", 0, 0, 0))))
    cases.append(("rgb16", dict(pixels=samples(H, W, 3, 16), depth=16, color=2)))
    cases.append(("rgba8", dict(pixels=samples(H, W, 4, 8), depth=8, color=6)))
    cases.append(("rgba16", dict(pixels=samples(H, W, 4, 16), depth=16, color=6)))
    for d in (1, 2, 4, 8):
        n = min(1 << d, 12)
        pal = rng.integers(0, 256, size=(n, 3))
        idx = rng.integers(0, n, size=(H, W, 1))
        trns = bytes(rng.integers(0, 256, size=max(1, n // 2)).tolist())
        cases.append((f"palette{d}_trns", dict(pixels=idx, depth=d, color=3, palette=pal, trns=trns)))
    # Adam7 on sizes where several passes are partial or empty.
    cases.append(("adam7_rgb8", dict(pixels=samples(11, 13, 3, 8), depth=8, color=2, interlace=True)))
    cases.append(("adam7_grey1", dict(pixels=samples(9, 10, 1, 1), depth=1, color=0, interlace=True)))
    cases.append(("adam7_rgba16", dict(pixels=samples(6, 5, 4, 16), depth=16, color=6, interlace=True)))
    pal = rng.integers(0, 256, size=(16, 3))
    cases.append(("adam7_palette4", dict(pixels=rng.integers(0, 16, size=(3, 9, 1)), depth=4, color=3, palette=pal,
                                         interlace=True)))
    cases.append(("adam7_1x1", dict(pixels=samples(1, 1, 3, 8), depth=8, color=2, interlace=True)))
    # Ancillary chunks that must not change the pixels: gamma, text, an unknown safe-to-copy chunk; split IDAT.
    extra = [(b"gAMA", struct.pack(">I", 100000)), (b"tEXt", b"Comment\x00corpus"), (b"vpAg", b"\x00" * 9)]
    cases.append(("rgb8_gamma_text_multi_idat", dict(pixels=samples(H, W, 3, 8), depth=8, color=2, extra=extra,
                                                     idat_pieces=4)))
    return cases


def expected_rule(name, spec):
    """v / 257 for 16-bit, else PIL's value (the 8-bit, 1/2/4-bit and palette cases are checked equal to PIL)."""
    px, depth, color = spec["pixels"], spec["depth"], spec["color"]
    if color == 3:
        return np.asarray(spec["palette"])[px[:, :, 0]].astype(float)
    top = (1 << depth) - 1
    rgb = px[:, :, :3] if color in (2, 6) else np.repeat(px[:, :, :1], 3, axis=2)
    return rgb.astype(float) * (255.0 / top)


def write_valid():
    index = []
    for name, spec in valid_cases():
        data = encode_png(**spec)
        path = os.path.join(CORPUS, name + ".png")
        with open(path, "wb") as f:
            f.write(data)
        im = Image.open(path)
        pil = np.asarray(im.convert("RGB"), dtype=float)
        ours = expected_rule(name, spec)
        if spec["depth"] != 16:
            assert np.array_equal(pil, ours), (name, pil, ours)
        h, w = ours.shape[:2]
        entry = {"file": name + ".png", "width": w, "height": h, "pil_mode": im.mode,
                 "sixteen_bit": spec["depth"] == 16,
                 "expected": [round(v, 4) for v in ours.reshape(-1).tolist()],
                 "pil": [int(v) for v in pil.reshape(-1).tolist()]}
        if spec["depth"] != 16 and (spec["color"] in (4, 6) or "trns" in spec):
            # PIL's alpha (tRNS included), for the composite-over-black option.
            entry["alpha"] = [int(v) for v in np.asarray(im.convert("RGBA"))[:, :, 3].reshape(-1)]
        index.append(entry)
    # One file written by PIL's own encoder, for good measure.
    im = Image.fromarray(rng.integers(0, 256, size=(4, 6, 3), dtype=np.uint8), "RGB")
    path = os.path.join(CORPUS, "pil_rgb8.png")
    im.save(path, optimize=True)
    v = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    index.append({"file": "pil_rgb8.png", "width": 6, "height": 4, "pil_mode": "RGB", "sixteen_bit": False,
                  "expected": v.reshape(-1).tolist(), "pil": [int(x) for x in v.reshape(-1)]})
    return index


# ---------------------------------------------------------------- broken corpus

def write_broken():
    base = encode_png(samples(5, 7, 3, 8), 8, 2, extra=[(b"tEXt", b"Comment\x00base")], idat_pieces=2)
    offsets, pos = {}, 8
    while pos < len(base):
        n = struct.unpack(">I", base[pos:pos + 4])[0]
        kind = base[pos + 4:pos + 8].decode()
        offsets.setdefault(kind, []).append((pos, n))
        pos += 12 + n

    def flip(data, at):
        b = bytearray(data); b[at] ^= 0x5A; return bytes(b)

    idat0, idat0_len = offsets["IDAT"][0]
    text, text_len = offsets["tEXt"][0]
    iend = offsets["IEND"][0][0]
    # A data byte of the first IDAT changed, with the CRC recomputed: only zlib can notice.
    bad_zlib = bytearray(base)
    body_start = idat0 + 8
    bad_zlib[body_start + 2] ^= 0xFF  # first byte of the deflate stream after the 2-byte zlib header
    bad_zlib[body_start + idat0_len:body_start + idat0_len + 4] = struct.pack(
        ">I", zlib.crc32(bytes(bad_zlib[idat0 + 4:body_start + idat0_len])) & 0xFFFFFFFF)

    def huge(w, h):
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))

    def ihdr_only(w, h, depth, color):
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))

    # Two rows of image data under a header that declares five.
    short_rows = ihdr_only(7, 5, 8, 2) + encode_png(samples(2, 7, 3, 8), 8, 2)[33:]
    cases = [
        ("broken_empty.png", b"", "empty file"),
        ("broken_text.png", b"this is not an image\n", "not a PNG file"),
        ("broken_jpeg.png", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20, "looks like JPEG"),
        ("broken_textmode_signature.png", base.replace(b"\r\n", b"\n", 1), "damaged signature"),
        ("broken_trunc_signature.png", base[:5], "truncated"),
        ("broken_trunc_ihdr.png", base[:20], "truncated"),
        ("broken_trunc_after_ihdr.png", base[:33], "truncated"),
        ("broken_trunc_mid_idat.png", base[:idat0 + 8 + idat0_len // 2], "truncated PNG data (in chunk IDAT)"),
        ("broken_trunc_before_iend.png", base[:iend], "truncated PNG data (no IEND chunk)"),
        ("broken_trunc_iend_crc.png", base[:-2], "truncated"),
        ("broken_crc_ihdr.png", flip(base, 8 + 8 + 13 + 1), "CRC error in chunk IHDR"),
        ("broken_crc_idat.png", flip(base, idat0 + 8 + idat0_len + 2), "CRC error in chunk IDAT"),
        # A damaged data byte: the CRC walk reports it before zlib could stumble over it.
        ("broken_crc_idat_data.png", flip(base, idat0 + 8 + 3), "CRC error in chunk IDAT"),
        ("broken_crc_text.png", flip(base, text + 8 + text_len), "CRC error in chunk tEXt"),
        ("broken_zlib.png", bytes(bad_zlib), "corrupt PNG data"),
        ("broken_huge.png", huge(100000, 100000), "image is 100000x100000, over the 50-megapixel limit"),
        ("broken_huge_wide.png", huge(60000000, 1), "over the 50-megapixel limit"),
        ("broken_zero_width.png", huge(0, 5), "Image width is zero"),
        ("broken_bad_depth.png", ihdr_only(7, 5, 3, 2) + chunk(b"IEND", b""), "bit depth"),
        ("broken_no_idat.png", ihdr_only(7, 5, 8, 2) + chunk(b"IEND", b""), "corrupt PNG data"),
        ("broken_palette_without_plte.png", encode_png(np.zeros((5, 7, 1), dtype=int), 8, 3), "corrupt PNG data"),
        ("broken_short_image_data.png", short_rows, "corrupt PNG data"),
    ]
    index = []
    for name, data, expect in cases:
        with open(os.path.join(CORPUS, name), "wb") as f:
            f.write(data)
        index.append({"file": name, "error": expect})
    return index


# ---------------------------------------------------------------- resize goldens

def test_pattern(h, w, seed):
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([127 + 100 * np.sin(x / 3.0 + c) * np.cos(y / 4.0 - c) for c in range(3)], axis=2)
    img[h // 3:h // 2, :, 0] = 250                  # sharp edges, where antialiasing shows
    img[:, w // 4, 1] = 5
    img += r.normal(0, 12, size=img.shape)
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")


def tv_resize_shorter(im, s):
    w, h = im.size
    if w <= h:
        return im.resize((s, int(s * h / w)), Image.BILINEAR)
    return im.resize((int(s * w / h), s), Image.BILINEAR)


def tv_center_crop(im, s):
    w, h = im.size
    top, left = int(round((h - s) / 2.0)), int(round((w - s) / 2.0))
    return im.crop((left, top, left + s, top + s))


def write_resize():
    src = test_pattern(23, 37, 1)
    src.save(os.path.join(RESIZE, "src_37x23.png"))
    tall = test_pattern(37, 22, 2)
    tall.save(os.path.join(RESIZE, "src_22x37.png"))
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[6:22, 12:16] = 255
    digit[6:9, 9:16] = 200
    digit = Image.fromarray(digit, "L").convert("RGB")
    digit.save(os.path.join(RESIZE, "src_digit28.png"))
    tiny = Image.fromarray(np.random.default_rng(3).integers(0, 256, size=(8, 8), dtype=np.uint8), "L").convert("RGB")
    tiny.save(os.path.join(RESIZE, "src_tiny8.png"))
    cases = []

    def add(name, kind, source, out_image, **params):
        out_image.save(os.path.join(RESIZE, name))
        cases.append(dict(file=name, kind=kind, source=source, **params))

    for (w, h) in [(16, 10), (5, 3), (80, 50), (37, 11), (100, 23), (19, 40), (1, 1)]:
        add(f"resize_37x23_to_{w}x{h}.png", "resize", "src_37x23.png", src.resize((w, h), Image.BILINEAR),
            width=w, height=h)
    add("resize_tiny8_to_61x61.png", "resize", "src_tiny8.png", tiny.resize((61, 61), Image.BILINEAR),
        width=61, height=61)
    for source, im, s in [("src_37x23.png", src, 16), ("src_22x37.png", tall, 15), ("src_22x37.png", tall, 64),
                          ("src_digit28.png", digit, 224), ("src_tiny8.png", tiny, 96)]:
        add(f"eval_{source[4:-4]}_{s}.png", "eval", source, tv_center_crop(tv_resize_shorter(im, s), s), size=s)
    box = (5, 3, 30, 20)
    add("cropresize_37x23.png", "cropresize", "src_37x23.png", src.crop(box).resize((12, 9), Image.BILINEAR),
        x=box[0], y=box[1], cropWidth=box[2] - box[0], cropHeight=box[3] - box[1], width=12, height=9)
    return cases


if __name__ == "__main__":
    os.makedirs(CORPUS, exist_ok=True)
    os.makedirs(RESIZE, exist_ok=True)
    golden = {"valid": write_valid(), "broken": write_broken(), "resize": write_resize()}
    with open(os.path.join(HERE, "png_corpus.json"), "w") as f:
        json.dump(golden, f, separators=(",", ":"))
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(d, n)) for d in (CORPUS, RESIZE) for n in os.listdir(d))
    print(f"{len(golden['valid'])} valid, {len(golden['broken'])} broken, {len(golden['resize'])} resize cases; "
          f"{total} bytes of PNG")
