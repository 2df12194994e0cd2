#!/usr/bin/env python3
"""Writes the seed corpora under Tests/FuzzCorpus/<harness>/ (small valid and broken inputs).

Run from the repository root: python3 Fuzz/make-seeds.py. Needs numpy-free Python 3 and libsndfile (through
ctypes) for the audio seeds. Existing files with the same names are overwritten; crash reproducers (crash-*)
are left alone.
"""
import ctypes, ctypes.util, json, os, struct, zlib, math, random

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "FuzzCorpus")
random.seed(15)


def put(harness, name, data):
    folder = os.path.join(ROOT, harness)
    os.makedirs(folder, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- PNG

def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def pack_row(samples, depth):
    if depth >= 8:
        fmt = "B" if depth == 8 else ">H"
        return b"".join(struct.pack(fmt, s) for s in samples)
    out, acc, bits = bytearray(), 0, 0
    for s in samples:
        acc = (acc << depth) | s
        bits += depth
        if bits == 8:
            out.append(acc); acc, bits = 0, 0
    if bits:
        out.append(acc << (8 - bits))
    return bytes(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png(width, height, color, depth, pixel, interlace=0, extra=b"", filt=0):
    """pixel(x, y) -> tuple of samples for the colour type."""
    raw = bytearray()
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            xs, ys = range(x0, width, dx), range(y0, height, dy)
            if not xs or not ys:
                continue
            for y in ys:
                raw.append(0)
                raw += pack_row([s for x in xs for s in pixel(x, y)], depth)
    else:
        for y in range(height):
            row = pack_row([s for x in range(width) for s in pixel(x, y)], depth)
            if filt == 1:  # Sub filter on byte level
                bpp = max(1, (depth * len(pixel(0, 0))) // 8)
                row = bytes((row[i] - (row[i - bpp] if i >= bpp else 0)) & 255 for i in range(len(row)))
            raw.append(filt)
            raw += row
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b"")


def seeds_png():
    m = lambda d: (1 << d) - 1
    put("png", "grey1.png", png(9, 3, 0, 1, lambda x, y: ((x + y) & 1,)))
    put("png", "grey2.png", png(5, 4, 0, 2, lambda x, y: ((x * y) % 4,)))
    put("png", "grey4.png", png(7, 2, 0, 4, lambda x, y: ((x * 3 + y) % 16,)))
    put("png", "grey8.png", png(6, 6, 0, 8, lambda x, y: (x * 40 + y,)))
    put("png", "grey16.png", png(3, 3, 0, 16, lambda x, y: (x * 20000 + y,)))
    put("png", "greyalpha8.png", png(4, 4, 4, 8, lambda x, y: (x * 60, y * 80)))
    put("png", "rgb8.png", png(5, 3, 2, 8, lambda x, y: (x * 50, y * 100, 7), filt=1))
    put("png", "rgb16.png", png(2, 2, 2, 16, lambda x, y: (x * 65535, y * 30000, 12345)))
    put("png", "rgba8.png", png(3, 5, 6, 8, lambda x, y: (x * 80, y * 50, 9, (x + y) * 30)))
    put("png", "rgba16.png", png(2, 3, 6, 16, lambda x, y: (x * 65535, y, 500, 40000)))
    palette = chunk(b"PLTE", bytes([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255]))
    put("png", "palette2.png", png(6, 2, 3, 2, lambda x, y: ((x + y) % 4,), extra=palette))
    put("png", "palette8-trns.png", png(4, 4, 3, 8, lambda x, y: ((x + y) % 4,), extra=palette + chunk(b"tRNS", bytes([0, 128]))))
    put("png", "grey8-trns.png", png(3, 3, 0, 8, lambda x, y: (x * 100,), extra=chunk(b"tRNS", b"\x00\x00")))
    put("png", "rgb8-adam7.png", png(11, 9, 2, 8, lambda x, y: (x * 20, y * 25, x ^ y), interlace=1))
    put("png", "grey1-adam7.png", png(5, 5, 0, 1, lambda x, y: ((x * y) & 1,), interlace=1))
    put("png", "rgb8-gama.png", png(2, 2, 2, 8, lambda x, y: (1, 2, 3), extra=chunk(b"gAMA", struct.pack(">I", 45455))))
    good = png(4, 4, 2, 8, lambda x, y: (x * 60, y * 60, 0))
    put("png", "broken-truncated.png", good[:-20])
    bad = bytearray(good); bad[40] ^= 0xFF
    put("png", "broken-crc.png", bytes(bad))
    put("png", "broken-no-iend.png", good[:-12])
    put("png", "broken-signature.png", b"\x89PNX" + good[4:])
    put("png", "broken-huge.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)) + chunk(b"IEND", b""))
    put("png", "broken-zlib.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0)) + chunk(b"IDAT", b"\x78\x9c\xff\xff") + chunk(b"IEND", b""))
    put("png", "broken-short-data.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\x00" * 9)) + chunk(b"IEND", b""))
    put("png", "empty.png", b"")


# ---------------------------------------------------------------- audio (libsndfile through ctypes)

class SF_INFO(ctypes.Structure):
    _fields_ = [("frames", ctypes.c_int64), ("samplerate", ctypes.c_int), ("channels", ctypes.c_int),
                ("format", ctypes.c_int), ("sections", ctypes.c_int), ("seekable", ctypes.c_int)]


def seeds_audio():
    sf = ctypes.CDLL(ctypes.util.find_library("sndfile"))
    sf.sf_open.restype = ctypes.c_void_p
    sf.sf_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(SF_INFO)]
    sf.sf_writef_float.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64]
    sf.sf_close.argtypes = [ctypes.c_void_p]
    WAV, AIFF, AU, RAW, W64, FLAC, CAF, OGG, VOC, IRCAM = 0x010000, 0x020000, 0x030000, 0x040000, 0x0B0000, 0x170000, 0x180000, 0x200000, 0x080000, 0x0A0000
    PCM_S8, PCM_16, PCM_24, PCM_32, PCM_U8, FLOAT, DOUBLE, ULAW, ALAW, IMA, MSADPCM, GSM, VORBIS = 1, 2, 3, 4, 5, 6, 7, 0x10, 0x11, 0x12, 0x13, 0x20, 0x60
    WRITE = 0x20
    tmp = "/tmp/tl-fuzz-seed.audio"
    cases = [
        ("wav-pcm16-16k.wav", WAV | PCM_16, 16000, 1, 600),
        ("wav-pcm8-8k-stereo.wav", WAV | PCM_U8, 8000, 2, 300),
        ("wav-pcm24-22k.wav", WAV | PCM_24, 22050, 1, 200),
        ("wav-pcm32-44k.wav", WAV | PCM_32, 44100, 1, 200),
        ("wav-float-48k.wav", WAV | FLOAT, 48000, 1, 300),
        ("wav-double-11k.wav", WAV | DOUBLE, 11025, 1, 100),
        ("wav-ulaw-8k.wav", WAV | ULAW, 8000, 1, 400),
        ("wav-alaw-8k.wav", WAV | ALAW, 8000, 1, 400),
        ("wav-ima-adpcm.wav", WAV | IMA, 16000, 1, 505),
        ("wav-ms-adpcm.wav", WAV | MSADPCM, 16000, 1, 500),
        ("wav-gsm.wav", WAV | GSM, 8000, 1, 320),
        ("flac-16k.flac", FLAC | PCM_16, 16000, 1, 800),
        ("flac-24-stereo.flac", FLAC | PCM_24, 32000, 2, 300),
        ("aiff-16.aiff", AIFF | PCM_16, 16000, 1, 300),
        ("au-ulaw.au", AU | ULAW, 8000, 1, 300),
        ("caf-16.caf", CAF | PCM_16, 16000, 1, 300),
        ("w64-16.w64", W64 | PCM_16, 16000, 1, 200),
        ("voc-u8.voc", VOC | PCM_U8, 8000, 1, 200),
        ("ogg-vorbis.ogg", OGG | VORBIS, 16000, 1, 1600),
    ]
    for name, fmt, rate, channels, frames in cases:
        info = SF_INFO(0, rate, channels, fmt, 0, 0)
        h = sf.sf_open(tmp.encode(), WRITE, ctypes.byref(info))
        if not h:
            print("skipped", name)
            continue
        samples = (ctypes.c_float * (frames * channels))(*[0.5 * math.sin(2 * math.pi * 440 * (i // channels) / rate) + 0.05 * random.uniform(-1, 1) for i in range(frames * channels)])
        sf.sf_writef_float(h, samples, frames)
        sf.sf_close(h)
        data = open(tmp, "rb").read()
        os.remove(tmp)
        put("audio", name, data)
        if name.startswith("wav-pcm16") or name.startswith("flac-16k"):
            put("audio", "broken-truncated-" + name, data[: len(data) // 2])
            put("audio", "broken-header-" + name, data[:30])
    # Headers that lie: a huge rate, zero channels, a float file holding NaN.
    wav = lambda rate, ch, bits, fmt, body: (b"RIFF" + struct.pack("<I", 36 + len(body)) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, fmt, ch, rate, rate * ch * bits // 8, ch * bits // 8, bits) + b"data" + struct.pack("<I", len(body)) + body)
    put("audio", "broken-rate-999999999.wav", wav(999999999, 1, 16, 1, b"\x00\x01" * 100))
    put("audio", "broken-rate-1.wav", wav(1, 1, 16, 1, b"\x00\x01" * 100))
    put("audio", "wav-float-nan.wav", wav(16000, 1, 32, 3, struct.pack("<f", float("nan")) * 50))
    put("audio", "wav-float-huge.wav", wav(16000, 1, 32, 3, struct.pack("<f", 3e38) * 50))
    put("audio", "wav-no-frames.wav", wav(16000, 1, 16, 1, b""))
    put("audio", "raw-garbage.bin", bytes(random.randrange(256) for _ in range(300)))
    put("audio", "empty.wav", b"")


# ---------------------------------------------------------------- safetensors

def safetensors(entries, data, metadata=None, pad=True):
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    header.update(entries)
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def seeds_safetensors():
    f32 = struct.pack("<4f", 1.0, -2.5, 3e-38, float("inf"))
    put("safetensors", "f32.safetensors", safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, f32, {"format": "pt"}))
    allt = b""
    entries = {}
    for name, dtype, size, shape in [("a", "F16", 2, [3]), ("b", "BF16", 2, [2]), ("c", "F64", 8, [1]), ("d", "I64", 8, [2]), ("e", "U64", 8, [1]),
                                     ("f", "I32", 4, [1, 2]), ("g", "U32", 4, [1]), ("h", "I16", 2, [2]), ("i", "U16", 2, [1]), ("j", "I8", 1, [3]),
                                     ("k", "U8", 1, [2]), ("l", "BOOL", 1, [2]), ("m", "F8_E4M3", 1, [1]), ("n", "F8_E5M2", 1, [1]), ("o", "F32", 4, [0, 3])]:
        n = 1
        for d in shape:
            n *= d
        begin = len(allt)
        allt += bytes(random.randrange(256) for _ in range(n * size))
        entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [begin, len(allt)]}
    put("safetensors", "all-dtypes.safetensors", safetensors(entries, allt))
    put("safetensors", "scalar-unpadded.safetensors", safetensors({"s": {"dtype": "F32", "shape": [], "data_offsets": [0, 4]}}, struct.pack("<f", 7), pad=False))
    put("safetensors", "empty-header.safetensors", safetensors({}, b""))
    put("safetensors", "escapes.safetensors", struct.pack("<Q", 74) + b'{"a\\u00e9\\ud83d\\ude00\\n":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}      \x05'[:74 + 1])
    put("safetensors", "broken-overlap.safetensors", safetensors({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}, "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]}}, b"abc"))
    put("safetensors", "broken-hole.safetensors", safetensors({"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}, b"ab"))
    put("safetensors", "broken-size.safetensors", safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"abcd"))
    put("safetensors", "broken-past-end.safetensors", safetensors({"a": {"dtype": "U8", "shape": [9], "data_offsets": [0, 9]}}, b"ab"))
    put("safetensors", "broken-huge-shape.safetensors", safetensors({"a": {"dtype": "F64", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}}, b""))
    put("safetensors", "broken-dup-key.safetensors", struct.pack("<Q", 16) + b'{"a":{},"a":{} }')
    put("safetensors", "broken-nesting.safetensors", struct.pack("<Q", 100) + b"[" * 100)
    put("safetensors", "broken-length.safetensors", struct.pack("<Q", 2 ** 63) + b"{}")
    put("safetensors", "broken-utf8.safetensors", struct.pack("<Q", 8) + b'{"\xff":1}')
    put("safetensors", "broken-metadata.safetensors", safetensors({}, b"", {"x": 1}))
    put("safetensors", "short.safetensors", b"\x02\x00\x00")


# ---------------------------------------------------------------- text tables

def seeds_text_table():
    put("text-table", "plain.tsv", "label\ttext\npositive\tA fine film.\nnegative\tDull, and \"too\" long.\n")
    put("text-table", "crlf-bom.tsv", "\ufefftext\tlabel\r\nCafé au lait\tyes\r\n\r\n中文文本\tno\r\n")
    put("text-table", "quoted.csv", 'text,label\n"Hello, ""world""",a\n"multi\nline",b\nplain text, c \n')
    put("text-table", "semicolon.csv", "id;text;label\n1;eins;x\n2;zwei;y\n")
    put("text-table", "records.jsonl", '{"text": "good", "label": "pos"}\n{"text": "bad", "label": 0}\n\n{"text": "\\u00e9t\\u00e9", "label": true, "extra": [1, {"a": null}]}\n')
    put("text-table", "broken-wrong-width.tsv", "label\ttext\na\tb\tc\n")
    put("text-table", "broken-unterminated.csv", 'text,label\n"never closes,a\n')
    put("text-table", "broken-after-quote.csv", 'text,label\n"x"y,a\n')
    put("text-table", "broken-utf8.tsv", b"label\ttext\na\t\xc3\x28\n")
    put("text-table", "broken-no-column.tsv", "words\tclass\nx\ty\n")
    put("text-table", "broken-empty-text.csv", "text,label\n  ,a\n")
    put("text-table", "broken-json.jsonl", '{"text": "x", "label": "y"}\n{"text": \n[1,2]\n')
    put("text-table", "broken-label-type.jsonl", '{"text": "x", "label": [1]}\n{"text": 5, "label": "a"}\n')
    put("text-table", "empty.tsv", "")


# ---------------------------------------------------------------- WordPiece

def seeds_wordpiece():
    put("wordpiece", "plain.txt", "Hello, world! The unplayable tokenizer")
    put("wordpiece", "specials.txt", "[CLS] hello [SEP] world [MASK][PAD][UNK] [cls]")
    put("wordpiece", "accents.txt", "Café naïve STRASSE Straße ΣΊΣΥΦΟΣ résumé e\u0301")
    put("wordpiece", "cjk.txt", "中国日本の tokyo東京 한국어 ｆｕｌｌｗｉｄｔｈ")
    put("wordpiece", "controls.txt", "tab\there\x00nul\x7fdel\u200bzero\u00a0nbsp\r\nline\ufeff")
    put("wordpiece", "long-word.txt", "a" * 150 + " " + "un" * 60 + "able")
    put("wordpiece", "punctuation.txt", "$100.00!!! ... (a)-[b]{c} @user #tag ¿qué? «quote» — dash")
    put("wordpiece", "emoji.txt", "😀👍🏽 👨‍👩‍👧 \U0010FFFF")
    put("wordpiece", "vocab-like.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\ncat\n##at\nc\n")
    put("wordpiece", "vocab-no-unk.txt", "[PAD]\n[CLS]\n[SEP]\nword\n")
    put("wordpiece", "invalid-utf8.txt", b"ab\xff\xfe cd \xc3 e\xed\xa0\x80")
    put("wordpiece", "empty.txt", "")


if __name__ == "__main__":
    seeds_png()
    seeds_audio()
    seeds_safetensors()
    seeds_text_table()
    seeds_wordpiece()
