#!/usr/bin/env python3
"""Writes the small audio corpus for AudioFileTests into Golden/audio/ (about 40 KB in all).

Needs only the standard library, sox and opusenc (Debian: sox libsox-fmt-all opus-tools). Run from anywhere:
    python3 Tests/SpeechTLTests/Golden/make_audio_corpus.py

Exact files (PCM 8/16/24/32, float, FLAC, 16 kHz stereo) hold integer sequences from a 32-bit LCG that
AudioFileTests regenerates: x <- (1664525 x + 1013904223) mod 2^32 from x = seed, and a B-bit sample is
(x >> (32 - B)) - 2^(B-1), after a head of extreme values. Lossy or resampled files (u-law, A-law, Ogg/Vorbis,
44.1 kHz stereo, MP3 by LAME through sox, Opus by opusenc) hold tones whose level and frequency the tests check.
"""
import math, os, struct, subprocess, wave

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "audio")
FRAMES = 400  # 25 ms at 16 kHz


def lcg(seed, n, bits):
    x, out = seed, []
    for _ in range(n):
        x = (1664525 * x + 1013904223) % 2**32
        out.append((x >> (32 - bits)) - 2**(bits - 1))
    return out


def head(bits):
    top = 2**(bits - 1)
    return [0, 1, -1, top - 1, -top, top // 2, -(top // 2), 3]


def signal(bits, seed=1, n=FRAMES):
    h = head(bits)
    return h + lcg(seed, n - len(h), bits)


def write_pcm(name, frames_by_channel, bits, rate=16000):
    """frames_by_channel: list of channels, each a list of ints."""
    width = bits // 8
    channels = len(frames_by_channel)
    data = bytearray()
    for i in range(len(frames_by_channel[0])):
        for ch in frames_by_channel:
            v = ch[i]
            if bits == 8:
                data += struct.pack("<B", v + 128)  # 8-bit WAV is unsigned
            else:
                data += (v & (2**bits - 1)).to_bytes(width, "little")
    with wave.open(os.path.join(HERE, name), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(data))


def write_raw_s16(path, samples):
    with open(path, "wb") as f:
        f.write(struct.pack("<%dh" % len(samples), *samples))


def sox(*args):
    subprocess.run(["sox", "-R", "-D", *args], check=True)  # -R repeatable, -D no dither


def tone(freq, amp, rate, seconds):
    n = int(round(rate * seconds))
    return [int(round(amp * math.sin(2 * math.pi * freq * i / rate))) for i in range(n)]


def main():
    os.makedirs(HERE, exist_ok=True)
    for f in os.listdir(HERE):
        os.remove(os.path.join(HERE, f))
    s16 = signal(16)
    write_pcm("pcm8.wav", [signal(8)], 8)
    write_pcm("pcm16.wav", [s16], 16)
    write_pcm("pcm24.wav", [signal(24)], 24)
    write_pcm("pcm32.wav", [signal(32)], 32)
    write_pcm("stereo16.wav", [signal(16, seed=1), signal(16, seed=2)], 16)
    write_pcm("three_channels.wav", [signal(16, seed=1), signal(16, seed=2), signal(16, seed=3)], 16)

    raw = os.path.join(HERE, "tmp.s16")
    write_raw_s16(raw, s16)
    fmt = ["-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-r", "16000", raw]
    sox(*fmt, "-e", "floating-point", "-b", "32", os.path.join(HERE, "float32.wav"))  # v/32768 is exact in float
    sox(*fmt, os.path.join(HERE, "pcm16.flac"))
    sox(*fmt, "-e", "a-law", os.path.join(HERE, "alaw.wav"))
    # Telephone: 8 kHz u-law of the same values (no rate change: sox only re-encodes).
    sox("-t", "raw", "-e", "signed-integer", "-b", "16", "-c", "1", "-r", "8000", raw,
        "-e", "u-law", os.path.join(HERE, "ulaw8k.wav"))

    write_raw_s16(raw, tone(440, 8000, 16000, 0.5))
    sox(*fmt, "-C", "0", os.path.join(HERE, "tone440.ogg"))
    sox(*fmt, "-C", "64", os.path.join(HERE, "tone440.mp3"))  # MPEG-2 layer III (16 kHz), 64 kbit/s
    subprocess.run(["opusenc", "--quiet", "--raw", "--raw-rate", "16000", "--raw-chan", "1", "--raw-bits", "16",
                    "--bitrate", "32", raw, os.path.join(HERE, "tone440.opus")], check=True)

    # 44.1 kHz stereo, 0.1 s: left 1 kHz at 8000, right the same at 4000 -> mono 1 kHz at 6000.
    left, right = tone(1000, 8000, 44100, 0.1), tone(1000, 4000, 44100, 0.1)
    write_pcm("stereo44k.wav", [left, right], 16, rate=44100)
    os.remove(raw)

    # Broken files.
    open(os.path.join(HERE, "empty.wav"), "wb").close()
    pcm16 = open(os.path.join(HERE, "pcm16.wav"), "rb").read()
    open(os.path.join(HERE, "truncated_header.wav"), "wb").write(pcm16[:20])
    open(os.path.join(HERE, "truncated_data.wav"), "wb").write(pcm16[:44 + 2 * 150])  # header promises 400 frames
    x, garbage = 7, bytearray()
    for _ in range(1024):
        x = (1664525 * x + 1013904223) % 2**32
        garbage.append(x >> 24)
    open(os.path.join(HERE, "garbage.wav"), "wb").write(bytes(garbage))
    open(os.path.join(HERE, "not_audio.flac"), "wb").write(b"This is a text file, not FLAC.\n" * 4)
    with wave.open(os.path.join(HERE, "zero_frames.wav"), "wb") as w:
        w.setnchannels(1); w.setsampwidth(2); w.setframerate(16000); w.writeframes(b"")
    flac = open(os.path.join(HERE, "pcm16.flac"), "rb").read()
    open(os.path.join(HERE, "truncated.flac"), "wb").write(flac[:len(flac) // 2])
    ogg = bytearray(open(os.path.join(HERE, "tone440.ogg"), "rb").read())
    for i in range(len(ogg) // 3, len(ogg) // 3 + 200):
        ogg[i] ^= 0x5A
    open(os.path.join(HERE, "corrupt.ogg"), "wb").write(bytes(ogg))

    total = sum(os.path.getsize(os.path.join(HERE, f)) for f in os.listdir(HERE))
    print("wrote %d files, %d bytes, in %s" % (len(os.listdir(HERE)), total, HERE))


if __name__ == "__main__":
    main()
