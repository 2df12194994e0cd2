#!/usr/bin/env python3
"""Golden values for SpeechEmbeddingTests: onnxruntime running openWakeWord's original embedding_model.onnx
(and melspectrogram.onnx for the whole-clip cases).

Needs numpy + onnxruntime (PyPI), sox (Debian), the fetched models (scripts/fetch-models) and the fixtures.
Run from the package root:
    python3 Tests/SpeechTLTests/Golden/make_embedding_golden.py [Models/speech-embedding]

Writes Golden/embedding.json with
- "windows": 6 random windows [6, 76, 32] (uniform in [0, 10], the range of openWakeWord's x/10 + 2 log-mel)
  run as ONE batch, and their embeddings [6, 96];
- "clips": two fixture clips (a clean source clip and a noisy telephone-channel target clip) as int16 samples;
  each clip's log-mel from melspectrogram.onnx (run one clip at a time, then x/10 + 2, as openWakeWord does),
  cut into the app's windows (76 frames starting at frames 0, 8, 16), and the embeddings of those windows.
Arrays are base64 of little-endian float32 (int16 for samples).
"""
import base64, hashlib, json, os, subprocess, sys
import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
models = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Models", "speech-embedding")
opts = ort.SessionOptions()
opts.intra_op_num_threads = 1
emb = ort.InferenceSession(os.path.join(models, "embedding_model.onnx"), opts, providers=["CPUExecutionProvider"])
mel = ort.InferenceSession(os.path.join(models, "melspectrogram.onnx"), opts, providers=["CPUExecutionProvider"])


def b64(a, dtype):
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).astype(np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def embed(windows):
    out = emb.run(None, {"input_1": windows[..., None].astype(np.float32)})[0]  # [N, 1, 1, 96]
    return out.reshape(len(windows), 96)


def read_int16(path):
    raw = subprocess.run(["sox", path, "-t", "raw", "-e", "signed", "-b", "16", "-c", "1", "-r", "16000", "-"],
                         check=True, capture_output=True).stdout
    return np.frombuffer(raw, dtype="<i2")


rng = np.random.default_rng(20240606)
windows = rng.uniform(0, 10, (6, 76, 32)).astype(np.float32)
golden = {"modelSha256": hashlib.sha256(open(os.path.join(models, "embedding_model.onnx"), "rb").read()).hexdigest(),
          "onnxruntime": ort.__version__,
          "windows": {"shape": [6, 76, 32], "input": b64(windows, "<f4"), "output": b64(embed(windows), "<f4")},
          "clips": []}
for rel in ["Fixtures/speech/source/test/left/0001.flac", "Fixtures/speech/target/test/left/0001.flac"]:
    x = read_int16(os.path.join(ROOT, rel))
    assert len(x) == 16000, (rel, len(x))
    m = mel.run(None, {"input": x[None].astype(np.float32)})[0][0, 0] / 10 + 2  # [97, 32]
    starts = list(range(0, m.shape[0] - 76 + 1, 8))
    w = np.stack([m[s:s + 76] for s in starts])
    golden["clips"].append({"path": rel, "samples": b64(x, "<i2"), "windowStarts": starts,
                            "windows": b64(w, "<f4"), "output": b64(embed(w), "<f4")})
    print(rel, "windows", starts, "embedding range", float(embed(w).min()), float(embed(w).max()))
with open(os.path.join(HERE, "embedding.json"), "w") as f:
    json.dump(golden, f, indent=1)
print("wrote", os.path.join(HERE, "embedding.json"))
