#!/usr/bin/env python3
"""Reference WordPiece ids from Hugging Face `tokenizers` (PyPI) for TextTLTests/TokenizerGoldenTests.

    python3 -m venv /tmp/tokvenv && /tmp/tokvenv/bin/pip install tokenizers==0.23.3
    /tmp/tokvenv/bin/python Tests/TextTLTests/Golden/make_tokenizer_golden.py   # from the repository root

Reads Models/all-MiniLM-L6-v2/tokenizer.json (scripts/fetch-models) and every Fixtures/text/**/*.tsv; writes
tokenizer.json next to this script. No truncation, no padding; ids include [CLS] and [SEP].
- "adversarial": texts and full ids.
- "fixtures": per TSV file the text column, read as TextTable reads TSV (split on LF, drop a CR, split on
  tab, no quoting); ids as base64 of little-endian uint16 (the vocabulary has < 65536 entries); the file's
  FNV-1a 64 so a changed fixture is reported as such.
- "codepoints": every code point of planes 0-3 and 14 except surrogates, in blocks of 256: the text
  "a<c>a a<c>a ..." (one item per code point, space separated) and the FNV-1a 64 of its ids as little-endian
  uint32. The letters around each character tell removal, whitespace, splitting and merging apart.
"""
import base64
import glob
import hashlib
import json
import os
import struct
import sys

import tokenizers
from tokenizers import Tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MODEL = os.path.join(ROOT, "Models", "all-MiniLM-L6-v2", "tokenizer.json")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer.json")


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


ADVERSARIAL = [
    "This is an example sentence",
    "", " ", "   \t\n  ", "\u3000\u00a0\u2003", "\r\n",
    # accents, case
    "Café déjà vu, naïve résumé", "Ångström Øresund Łódź Ærø", "ÀÉÎÕÜ ñ ç ß ẞ", "İstanbul ıi I", "ΣΑΣ σας ς",
    "Tiếng Việt có dấu", "cafe\u0301 vs caf\u00e9", "ά έ ή ΐ ΰ", "Straße STRASSE", "ǅ ǈ ǋ ǲ", "HeLLo WoRLD ALLCAPS",
    # combining marks
    "e\u0301 a\u0308 o\u0302\u0323 n\u0303", "Z̤͔ͧ̑̓ä͖̭̈̇lͮ̒ͫǧ̗͚̚o̙̔ͮ̇͐̇", "\u0301\u0302 leading marks", "a\u20dd enclosed\u20e3",
    # emoji
    "I love it 😍👍🏽🎉", "👨‍👩‍👧‍👦 family", "flags 🇺🇸🇫🇷", "❤️ heart ♥", "keycap 1️⃣ #️⃣", "🥲🫠 new emoji",
    "smile:) :-( ;P <3 xD", "☺☹✓✗★",
    # CJK and east Asian
    "我爱北京天安门", "日本語のテキストです。カタカナ、ひらがな", "한국어 텍스트 가나다", "混合mixed文字text",
    "𠀀𪜀𫝀 extension B", "\U0002B820\U0002B8FF gap \U0002B920", "豈更 compatibility", "ＡＢＣ１２３！？", "ｶﾀｶﾅ halfwidth",
    "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ", "〇〆々 〈〉【】「」", "㈱ ㎏ ㍿",
    # control characters
    "tab\there\nnew\r\nline", "null\u0000char", "bell\u0007 esc\u001b[0m", "\u0085 next line", "\u000b\u000c vt ff",
    "del\u007fete", "c1 \u0080\u009f controls", "replacement \ufffd char",
    # zero-width and format characters
    "zero\u200bwidth", "zwnj\u200cx zwj\u200dy", "bom\ufeffin", "soft\u00adhyphen", "word\u2060joiner",
    "rtl\u200f\u202emark\u202c", "lrm\u200e", "arabic\u0600number\u061c", "\U000E0041\U000E007F tags",
    "variation\ufe0f selector\ufe00",
    # whitespace variants
    "nbsp\u00a0x", "ideographic\u3000space", "en\u2002em\u2003thin\u2009hair\u200a", "line\u2028sep\u2029para",
    "\u1680ogham", "narrow\u202fnbsp", "\u180emongolian vowel separator", "\u001c\u001d\u001e\u001f info seps",
    # long words
    "a" * 100, "a" * 101, "b" * 200 + " ok", "supercalifragilisticexpialidocious" * 4, "é" * 100, "é" * 101,
    "👍" * 101, "x" * 99 + "\u0301" * 5, "İ" * 101, "ab" * 60 + " " + "c" * 30,
    "pneumonoultramicroscopicsilicovolcanoconiosis antidisestablishmentarianism",
    # scripts
    "Hello мир שלום عالم नमस्ते ไทย", "مرحبا بالعالم", "مَرْحَبًا", "שָׁלוֹם עוֹלָם", "हिन्दी भाषा", "ภาษาไทยง่ายนิดเดียว",
    "Ελληνικά", "Привет, мир!", "ᲡᲐᲥᲐᲠᲗᲕᲔᲚᲝ საქართველო", "ᏣᎳᎩ ꮳꮃꭹ", "Հայերեն", "தமிழ்", "বাংলা", "አማርኛ",
    "བོད་ཡིག", "ꦗꦮ Javanese ꦽ", "𐐀𐐨 Deseret", "ᠮᠣᠩᠭᠣᠯ", "ᚠᚢᚦ runes", "𝐁𝐨𝐥𝐝 𝕯𝖔𝖚𝖇𝖑𝖊",
    # punctuation
    "!!!???...", "---", "((()))", "wait...what?!", "$100+50%=€150", "a.b,c;d:e", "«quoted» „German“ ‘single’",
    "¿Qué? ¡Sí!", "em—dash en–dash", "…ellipsis", "@user #hashtag http://example.com/path?q=1&r=2",
    "email@test.com", "C++ / C# / F#", "~`^|\\<>=_", "''Conan'' and \"quotes\"", "don't won't y'all", "&amp; &lt;br&gt;",
    "≠ ≤ ≥ ∑ ∫ √", "Ω ohm Ω K kelvin Å", "§¶†‡•", "·;΄῭`",
    # special tokens written in the text
    "[CLS]", "[CLS] inside [SEP] text [MASK]", "[cls] lower", "[UNK][PAD]", "[[CLS]]", "[CLS", "x[MASK]y",
    "[unused0]", "##ing", "##", "[ CLS ]", "[CLS]\u0301x", "[MASK][MASK]", "é[SEP]ü", "ㄱㄴ compatibility jamo",
    # numbers
    "1,000,000", "3.14159", "12:30pm", "2nd 3rd 21st", "$1,234.56", "10^6", "½ ¼ ²³", "٣٤٥ Arabic digits", "१२३",
    "①②③", "Ⅻ roman",
    # odd code points
    "\ue000 private use \U000F0000", "\u0378 unassigned", "\ufffe\uffff noncharacters \U0010FFFF",
    "soooooo goooood", "lol " * 200,
]


def read_tsv_texts(path):
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    rows = []
    for raw in data.split(b"\n"):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if raw:
            rows.append(raw.decode("utf-8").split("\t"))
    col = rows[0].index("text")
    return [r[col] for r in rows[1:]]


def main():
    if not os.path.exists(MODEL):
        sys.exit(f"{MODEL} is missing: run scripts/fetch-models first")
    tok = Tokenizer.from_file(MODEL)
    tok.no_truncation()
    tok.no_padding()

    def ids(texts):
        return [e.ids for e in tok.encode_batch(texts)]

    sanity = ids(["This is an example sentence"])[0]
    assert sanity == [101, 2023, 2003, 2019, 2742, 6251, 102], sanity

    adversarial = [{"text": t, "ids": i} for t, i in zip(ADVERSARIAL, ids(ADVERSARIAL))]

    fixtures = []
    for path in sorted(glob.glob(os.path.join(ROOT, "Fixtures", "text", "**", "*.tsv"), recursive=True)):
        texts = read_tsv_texts(path)
        encoded = [base64.b64encode(struct.pack("<%dH" % len(i), *i)).decode("ascii") for i in ids(texts)]
        with open(path, "rb") as f:
            digest = fnv1a64(f.read())
        fixtures.append({"path": os.path.relpath(path, ROOT), "fnv1a64": digest, "count": len(texts), "ids": encoded})
    if not fixtures:
        sys.exit("no Fixtures/text/**/*.tsv: run scripts/make-fixtures first")

    blocks = []
    points = [c for c in list(range(0x40000)) + list(range(0xE0000, 0xE0200)) if not 0xD800 <= c < 0xE000]
    for start in range(0, len(points), 256):
        chunk = points[start:start + 256]
        blocks.append((chunk[0], chunk[-1], " ".join("a" + chr(c) + "a" for c in chunk)))
    codepoints = []
    for (first, last, _), i in zip(blocks, ids([b[2] for b in blocks])):
        codepoints.append({"first": first, "last": last, "count": len(i),
                           "fnv1a64": fnv1a64(struct.pack("<%dI" % len(i), *i))})

    with open(MODEL, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()
    golden = {
        "generator": f"tokenizers {tokenizers.__version__}, Tests/TextTLTests/Golden/make_tokenizer_golden.py",
        "tokenizer_json_sha256": model_sha,
        "adversarial": adversarial,
        "fixtures": fixtures,
        "codepoints": codepoints,
    }
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump(golden, f, ensure_ascii=True, separators=(",", ":"))
        f.write("\n")
    n_fix = sum(x["count"] for x in fixtures)
    print(f"wrote {OUT}: {len(adversarial)} adversarial, {n_fix} fixture texts in {len(fixtures)} files, "
          f"{len(points)} code points in {len(codepoints)} blocks, {os.path.getsize(OUT)} bytes")


if __name__ == "__main__":
    main()
