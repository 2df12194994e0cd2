#!/bin/sh
# Times the log-mel front-end (release build) against onnxruntime on openWakeWord's melspectrogram.onnx:
# 1 s clips at 16 kHz, batch 256, 2 threads, one warm-up then the median of 9 runs. Also times the resampler.
#
#   Tests/SpeechTLTests/Golden/bench_mel_frontend.sh [python-with-onnxruntime]
#
# SpeechTL is not a package product, so the script copies Package.swift and Sources/ to a temporary folder,
# adds a small executable target there and builds it in release; the repository itself is not touched.
set -eu
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
PY=${1:-python3}
WORK=${BENCH_DIR:-/tmp/tl-mel-bench}
mkdir -p "$WORK/apps/mel-bench"
rm -rf "$WORK/Sources"
cp -R "$ROOT/Sources" "$WORK/Sources"
cp "$ROOT/Package.swift" "$WORK/Package.swift"
[ -f "$ROOT/Package.resolved" ] && cp "$ROOT/Package.resolved" "$WORK/"
cat >> "$WORK/Package.swift" <<'SWIFT'
// Only Sources/ was copied: drop the apps and tests, add the benchmark.
package.targets.removeAll { $0.type == .test || $0.type == .executable }
package.products.removeAll { $0 is Product.Executable }
package.targets.append(.executableTarget(name: "mel-bench", dependencies: ["SpeechTL"], path: "apps/mel-bench", swiftSettings: fast))
SWIFT
cat > "$WORK/apps/mel-bench/main.swift" <<'SWIFT'
import Foundation
import SpeechTL
import TransferEngine

Runtime.prepare()
Runtime.setThreads(2)
var best = 0.0
func median(_ f: () -> Void) -> Double {
    f()
    var t: [Double] = []
    for _ in 0..<9 {
        let s = DispatchTime.now().uptimeNanoseconds
        f()
        t.append(Double(DispatchTime.now().uptimeNanoseconds - s) / 1e9)
    }
    best = t.min()!
    return t.sorted()[t.count / 2]
}
var rng = RNG(seed: 0)
let batch = 256
let x = Tensor(shape: [batch, 16000], scalars: (0..<(batch * 16000)).map { _ in Float(rng.int(below: 65535) - 32767) })
let mel = MelSpectrogram()
var y = mel(x)
let seconds = median { y = mel(x) }
print(String(format: "swift MelSpectrogram: batch %d x 1 s, %@: median %.1f ms (best %.1f) -> %.0f clips/s (output %@)",
             batch, Runtime.summary, seconds * 1e3, best * 1e3, Double(batch) / seconds, "\(y.shape)"))
let audio = (0..<(44100 * 60)).map { _ in rng.uniform(-1, 1) }
var out: [Float] = []
let rs = median { out = Resampler.resample(audio, from: 44100, to: 16000) }
print(String(format: "swift Resampler 44.1 -> 16 kHz: 60 s of audio in %.1f ms (%.0fx real time, %d samples)", rs * 1e3, 60 / rs, out.count))
SWIFT
cd "$WORK"
swift build -c release --product mel-bench 2>&1 | tail -1
"$WORK/.build/release/mel-bench"

"$PY" - "$ROOT/Models/speech-embedding/melspectrogram.onnx" <<'PYTHON'
import sys, time
try:
    import numpy as np, onnxruntime as ort
except ImportError as e:
    sys.exit("onnxruntime comparison skipped: %s" % e)
so = ort.SessionOptions(); so.intra_op_num_threads = 2; so.inter_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
x = (np.random.default_rng(0).uniform(-1, 1, (256, 16000)) * 32767).astype(np.int16).astype(np.float32)
s.run(None, {"input": x})
t = []
for _ in range(9):
    a = time.perf_counter(); s.run(None, {"input": x}); t.append(time.perf_counter() - a)
m = sorted(t)[len(t) // 2]
print("onnxruntime %s melspectrogram.onnx: batch 256 x 1 s, 2 threads: median %.1f ms (best %.1f) -> %.0f clips/s" % (ort.__version__, m * 1e3, min(t) * 1e3, 256 / m))
PYTHON
