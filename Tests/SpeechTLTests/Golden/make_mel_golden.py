#!/usr/bin/env python3
"""Golden values for MelSpectrogramTests: onnxruntime running openWakeWord's original melspectrogram.onnx.

Needs numpy + onnxruntime (PyPI) and the fetched model (scripts/fetch-models), plus espeak-ng and sox for the
spoken word. Run from the package root:
    python3 Tests/SpeechTLTests/Golden/make_mel_golden.py [Models/speech-embedding/melspectrogram.onnx]

Writes Golden/mel.json. Inputs are int16 sample values (what openWakeWord feeds the graph, as float32),
stored as base64 of little-endian int16; outputs are the graph's raw output (dB, before openWakeWord's
x/10 + 2) as base64 of little-endian float32, shape [batch, frames, 32]; "exact" is the same computation in
float64 (closed-form weights), rounded to float32: onnxruntime's own float32 rounding differs from it by up
to ~1.5e-3 dB in bands ~80 dB below a loud peak, which bounds how closely any float32 implementation can
match onnxruntime. Single clips are run one at a time
(as openWakeWord does on CPU); the "batch" case runs two clips in ONE call, where the graph's ReduceMax
spans the whole batch.
"""
import base64, hashlib, json, os, subprocess, sys, tempfile, wave
import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.abspath(__file__))
model = sys.argv[1] if len(sys.argv) > 1 else "Models/speech-embedding/melspectrogram.onnx"
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
rng = np.random.default_rng(1234)
SR = 16000


def exact(batch, batched):
    """The same computation in float64 from the closed-form weights (librosa's Slaney mel, periodic Hann)."""
    n, k = np.arange(512), np.arange(257)[:, None]
    win = np.zeros(512)
    win[56:456] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    ang = 2 * np.pi * ((k * n) % 512) / 512
    real, imag = win * np.cos(ang), -win * np.sin(ang)
    x = batch.astype(np.float64)
    frames = (x.shape[1] - 512) // 160 + 1
    fr = np.stack([x[:, t * 160:t * 160 + 512] for t in range(frames)], 1)
    power = (fr @ real.T) ** 2 + (fr @ imag.T) ** 2
    db = 10 * np.log10(np.maximum(power @ slaney_mel(), 1e-10))
    peak = db.max() if batched else db.max(axis=(1, 2), keepdims=True)
    return np.maximum(db, peak - 80)


def slaney_mel(sr=16000, n_fft=512, n_mels=32, fmin=60.0, fmax=3800.0):
    """librosa.filters.mel defaults (Slaney scale and area normalisation), transposed to [257, 32]."""
    def hz2mel(f):
        return np.where(f >= 1000, 15 + np.log(np.maximum(f, 1e-9) / 1000) / (np.log(6.4) / 27), f * 3 / 200)
    def mel2hz(m):
        return np.where(m >= 15, 1000 * np.exp(np.log(6.4) / 27 * (m - 15)), m * 200 / 3)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    edges = mel2hz(np.linspace(hz2mel(np.float64(fmin)), hz2mel(np.float64(fmax)), n_mels + 2))
    w = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        rising = (freqs - edges[i]) / (edges[i + 1] - edges[i])
        falling = (edges[i + 2] - freqs) / (edges[i + 2] - edges[i + 1])
        w[i] = np.maximum(0, np.minimum(rising, falling)) * 2 / (edges[i + 2] - edges[i])
    return w.T


def run(batch):
    out = session.run(None, {"input": batch.astype(np.float32)})[0]  # [B, 1, T, 32]
    return out[:, 0]


def sweep(seconds=1.0, f0=50.0, f1=7000.0, amp=16000):
    t = np.arange(int(SR * seconds)) / SR
    k = np.log(f1 / f0) / seconds
    x = amp * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1) / k)
    fade = np.minimum(1, np.minimum(t, seconds - t) / 0.01)
    return np.round(x * fade).astype(np.int16)


def spoken(word="yes"):
    with tempfile.TemporaryDirectory() as d:
        raw, out = os.path.join(d, "w.wav"), os.path.join(d, "w16.wav")
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", raw, word], check=True)
        subprocess.run(["sox", "-R", "-D", raw, "-r", "16000", "-c", "1", "-b", "16", out,
                        "silence", "1", "0.01", "0.5%", "reverse", "silence", "1", "0.01", "0.5%", "reverse"], check=True)
        with wave.open(out) as w:
            x = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    clip = np.zeros(SR, dtype=np.int16)  # centred in 1 s, digital silence around it
    x = x[:SR]
    start = (SR - len(x)) // 2
    clip[start:start + len(x)] = x
    return clip


def b64(a, dtype):
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


cases = []


def add(name, clips, batched=False):
    clips = [np.asarray(c, dtype=np.int16) for c in clips]
    x = np.stack(clips)
    if batched:
        y = run(x)
    else:
        y = np.concatenate([run(c[None]) for c in clips])
    cases.append({"name": name, "batched": batched, "inputShape": list(x.shape), "input": b64(x, "<i2"),
                  "outputShape": list(y.shape), "output": b64(y, "<f4"),
                  "exact": b64(exact(x, batched), "<f4")})


add("sweep 50 Hz - 7 kHz, 1 s", [sweep()])
add("espeak-ng 'yes' centred in 1 s of digital silence", [spoken()])
noise = np.zeros(6000, dtype=np.int16)
noise[2000:] = np.clip(rng.normal(0, 3000, 4000), -32768, 32767).astype(np.int16)
add("white noise after 2000 zeros, 6000 samples", [noise])
quiet = np.round(100 * np.sin(2 * np.pi * 300 * np.arange(4000) / SR)).astype(np.int16)
loud = np.clip(rng.normal(0, 8000, 4000), -32768, 32767).astype(np.int16)
add("quiet tone and loud noise, one clip at a time", [quiet, loud])
add("quiet tone and loud noise in one batched call (peak over the batch)", [quiet, loud], batched=True)
add("512 samples: the shortest clip (1 frame)", [rng.integers(-20000, 20000, 512)])
add("672 samples (2 frames; 671 would give 1)", [rng.integers(-20000, 20000, 672)])

sha = hashlib.sha256(open(model, "rb").read()).hexdigest()
doc = {"model": "openwakeword==0.4.0 melspectrogram.onnx", "modelSha256": sha,
       "onnxruntime": ort.__version__, "cases": cases}
path = os.path.join(ROOT, "mel.json")
with open(path, "w") as f:
    json.dump(doc, f, indent=1)
print("wrote %s (%d bytes, %d cases)" % (path, os.path.getsize(path), len(cases)))
