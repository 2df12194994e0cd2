#!/usr/bin/python3
"""Makes the JPEG test corpus for VisionTLTests (run once; outputs are committed).

    /usr/bin/python3 Tests/VisionTLTests/Golden/make_jpeg_corpus.py

Valid files are written by PIL 9.4 (Debian python3-pil, on Debian's libjpeg62-turbo 2.1.5) in every form PIL
can write: baseline with 4:2:0, 4:2:2 and 4:4:4 chroma, greyscale, progressive, optimised Huffman tables,
low quality, odd sizes down to 1x1, EXIF and ICC payloads. PIL then DECODES each one and its convert("RGB")
pixels are the expected values (exact: both sides use libjpeg's accurate integer IDCT and fancy upsampling).

Broken files (jpeg/broken_*.jpg) each list a substring the decoder's error must contain.
"""
import io, json, os, struct
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "jpeg")
os.makedirs(OUT, exist_ok=True)
rng = np.random.default_rng(7)


def picture(w, h, mode="RGB"):
    """Smooth gradients plus a little noise and a hard edge: exercises chroma upsampling and the IDCT."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / max(w, 1) * 6.0) * np.cos(y / max(h, 1) * 3.0)
    g = 255 * x / max(w - 1, 1)
    b = np.where((x // 5 + y // 7) % 2 == 0, 40.0, 220.0)
    rgb = np.stack([r, g, b], axis=-1) + rng.normal(0, 8, (h, w, 3))
    image = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8), "RGB")
    return image.convert(mode) if mode != "RGB" else image


ICC = bytes(range(256)) * 4  # an opaque APP2 payload: decoders must skip it
valid_specs = [
    ("rgb_420_q90.jpg", picture(40, 30), dict(quality=90, subsampling=2)),
    ("rgb_422_q90.jpg", picture(37, 29), dict(quality=90, subsampling=1)),
    ("rgb_444_q95.jpg", picture(33, 21), dict(quality=95, subsampling=0)),
    ("rgb_420_q20.jpg", picture(48, 48), dict(quality=20)),
    ("grey_q85.jpg", picture(31, 17, "L"), dict(quality=85)),
    ("progressive_420.jpg", picture(45, 35), dict(quality=80, progressive=True)),
    ("progressive_grey.jpg", picture(23, 41, "L"), dict(quality=80, progressive=True)),
    ("optimised_444.jpg", picture(26, 26), dict(quality=75, optimize=True, subsampling=0)),
    ("tiny_1x1.jpg", picture(1, 1), dict(quality=90)),
    ("odd_3x17.jpg", picture(3, 17), dict(quality=90)),
    ("exif_icc.jpg", picture(20, 12), dict(quality=90, exif=b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x00",
                                           icc_profile=ICC)),
]

valid = []
for name, image, options in valid_specs:
    path = os.path.join(OUT, name)
    image.save(path, "JPEG", **options)
    decoded = Image.open(path)
    rgb = np.asarray(decoded.convert("RGB"), dtype=np.uint8)
    valid.append(dict(file=name, width=decoded.width, height=decoded.height, pil_mode=decoded.mode,
                      progressive=bool(decoded.info.get("progressive", 0)), expected=rgb.reshape(-1).tolist()))

# ---------------------------------------------------------------- broken files
good = open(os.path.join(OUT, "rgb_420_q90.jpg"), "rb").read()
sos = good.index(b"\xff\xda")
sof = good.index(b"\xff\xc0")


def broken(name, data, error):
    open(os.path.join(OUT, name), "wb").write(data)
    return dict(file=name, error=error)


cmyk = io.BytesIO()
Image.new("CMYK", (8, 8), (10, 20, 30, 40)).save(cmyk, "JPEG")
huge = bytearray(good)
huge[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)   # height, width
zero = bytearray(good)
zero[sof + 7:sof + 9] = struct.pack(">H", 0)                # width 0
scan = bytearray(good)
middle = (sos + len(good)) // 2
scan[middle:middle + 2] = b"\xff\xd3"                      # a restart marker where none belongs
brokens = [
    broken("broken_truncated_half.jpg", good[: len(good) // 2], "truncated JPEG data"),
    broken("broken_truncated_header.jpg", good[: sof + 4], "truncated JPEG data"),
    broken("broken_no_eoi.jpg", good[:-2], "truncated JPEG data"),
    broken("broken_not_jpeg.jpg", b"GIF89a" + good[6:], "not a JPEG file"),
    broken("broken_soi_garbage.jpg", b"\xff\xd8" + bytes(range(7, 200)), "truncated JPEG data"),  # no marker follows
    broken("broken_no_image.jpg", b"\xff\xd8\xff\xd9", "corrupt JPEG data"),
    broken("broken_cmyk.jpg", cmyk.getvalue(), "CMYK JPEG is not supported"),
    broken("broken_huge.jpg", bytes(huge), "over the 50-megapixel limit"),
    broken("broken_zero_width.jpg", bytes(zero), "corrupt JPEG data"),
    broken("broken_scan_marker.jpg", bytes(scan), "corrupt JPEG data"),
]

with open(os.path.join(HERE, "jpeg_corpus.json"), "w") as f:
    json.dump(dict(valid=valid, broken=brokens), f, separators=(",", ":"))
print(f"{len(valid)} valid, {len(brokens)} broken files in {OUT}")
