import Foundation
import TransferEngine
import TransferReport
import VisionTL

/// W2 (EfficientNet-Lite0 forward), W3 (its fine-tuning step) and W8 (PNG decoding), as scripts/bench/peer_worker.py
/// runs them on PyTorch and Pillow.
func visionWorkloads() -> [Workload] {
    [
        Workload(id: "W2", group: "W2", description: "EfficientNet-Lite0 forward, 32x224x224", unit: "images/s",
                 gigaflopPerUnit: {
                     var rng = RNG(seed: 0)
                     return 2 * Double(EfficientNetLite0(rng: &rng).featureMultiplyAdds(height: 224, width: 224)) / 1e9
                 }) {
            let net = try EfficientNetLite0.pretrained(from: try ModelStore.file(VisionDomain.modelPath))
            let x = randomImages(32)
            return {
                let f = Autograd.noGrad { net.features(x).value }
                precondition(f.shape == [32, 1280])
                return 32
            }
        },
        Workload(id: "W3", group: "W3", description: "EfficientNet-Lite0 fine-tune step, batch 32", unit: "images/s") {
            // Trainable: _blocks.14, _blocks.15 and _conv_head convolutions plus a new 10-class linear head; every
            // BatchNorm frozen (running statistics, affine parameters fixed), cross-entropy, AdamW.
            let net = try EfficientNetLite0.pretrained(from: try ModelStore.file(VisionDomain.modelPath))
            net.freeze()
            net.train(false)
            let trainable = ["_blocks.14._expand_conv", "_blocks.14._depthwise_conv", "_blocks.14._project_conv",
                             "_blocks.15._expand_conv", "_blocks.15._depthwise_conv", "_blocks.15._project_conv", "_conv_head"]
            net.unfreeze(trainable)
            var rng = RNG(seed: 3)
            let head = Linear(inputs: net.featureCount, outputs: 10, rng: &rng)
            let x = randomImages(32)
            let labels = (0..<32).map { _ in rng.int(below: 10) }
            let optimizer = AdamW(groups: [ParameterGroup(module: net, prefixes: trainable, namePrefix: "backbone."),
                                           ParameterGroup(module: head, namePrefix: "head.")],
                                  learningRate: 1e-3, weightDecay: 0.01)
            return {
                optimizer.zeroGrad()
                let loss = Variable.crossEntropy(logits: head(net.features(x)), labels: labels)
                loss.backward()
                optimizer.step(lr: 1e-3)
                return 32
            }
        },
        pngWorkload(side: 28, count: 1000, channels: 1),
        pngWorkload(side: 224, count: 200, channels: 3),
    ]
}

/// A batch of normalised random non-zero 8-bit images, NHWC.
private func randomImages(_ n: Int) -> Tensor {
    var rng = RNG(seed: 2)
    var x = Tensor(uninitializedShape: [n, 224, 224, 3])
    x.withUnsafeMutableBufferPointer { p in
        for i in p.indices { p[i] = (Float(1 + rng.int(below: 255)) - 127) / 128 }
    }
    return x
}

/// W8: decoding PNG files from disk to RGB Floats, one thread (as Pillow's `open().convert("RGB")` in the peer).
/// The files are written at setup into a temp folder: a smooth random field plus noise (like a digit or a photo,
/// not like pure noise), with the engine's PNG writer (adaptive filters, fixed-Huffman deflate; Pillow writes
/// dynamic-Huffman zlib, so the peer's files are a little smaller).
private func pngWorkload(side: Int, count: Int, channels: Int) -> Workload {
    Workload(id: "W8-\(side)", group: "W8", description: "PNG decode, \(count) files \(side)x\(side) \(channels == 1 ? "grey" : "RGB")",
             unit: "images/s") {
        // $TL_BENCH_PNG_DIR/<side>/*.png: decode given files instead (e.g. the peer's Pillow-written ones).
        if let given = ProcessInfo.processInfo.environment["TL_BENCH_PNG_DIR"] {
            let folder = URL(fileURLWithPath: given).appendingPathComponent(String(side))
            let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".png") }.sorted()
                .map { folder.appendingPathComponent($0) }
            return {
                for url in files { let image = try PNGDecoder.read(url); precondition(image.channels == 3) }
                return Double(files.count)
            }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tl-bench-png-\(getpid())-\(side)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        var rng = RNG(seed: 11)
        var files: [URL] = []
        for i in 0..<count {
            var pixels = [UInt8](repeating: 0, count: side * side * channels)
            let cy = Float(side) * rng.uniform(0.3, 0.7), cx = Float(side) * rng.uniform(0.3, 0.7)
            let r = Float(side) * rng.uniform(0.15, 0.35)
            let phase = (0..<channels).map { _ in rng.uniform(0, 6.3) }
            for y in 0..<side {
                for x in 0..<side {
                    let dy: Float = Float(y) - cy, dx: Float = Float(x) - cx
                    let d: Float = (dy * dy + dx * dx) / (2 * r * r)
                    let u: Float = Float(x) / Float(side), w: Float = Float(y) / Float(side)
                    for c in 0..<channels {
                        let wave: Float = Foundation.sin(u * 12 + phase[c]) * Foundation.cos(w * 9)
                        let smooth: Float = channels == 1 ? 255 * Foundation.exp(-d) : 128 + 90 * wave
                        let noise: Float = 8 * Float(rng.uniform() + rng.uniform() - 1)
                        let v: Float = smooth + noise
                        pixels[(y * side + x) * channels + c] = UInt8(max(1, min(255, v)))
                    }
                }
            }
            let url = dir.appendingPathComponent(String(format: "img%04d.png", i))
            try PNGWriter.write(width: side, height: side, channels: channels, pixels: pixels, to: url)
            files.append(url)
        }
        return {
            for url in files {
                let image = try PNGDecoder.read(url)
                precondition(image.channels == 3)
            }
            return Double(count)
        }
    }
}
