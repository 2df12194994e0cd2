import Foundation
import XCTest
import TransferEngine
@testable import SpeechTL

/// speech_embedding against onnxruntime running openWakeWord's original embedding_model.onnx (Golden/embedding.json,
/// made by Golden/make_embedding_golden.py), the whole clip -> windows -> embedding path against the two ONNX
/// graphs, the strict loader, the blocks, the window pooling and the gradients of the module's own ops.
///
/// Stated bounds: embeddings (values up to about ±60) within 2e-4 absolute of onnxruntime on random windows and
/// on real clips' windows (measured 3.9e-5 and 2.7e-5). Through our own front-end the mel windows agree with
/// onnxruntime's to 1e-4 (openWakeWord scale, i.e. 1e-3 dB; measured 8.1e-6) and the embeddings to 5e-4
/// (measured 6.3e-5), per window and mean-pooled.
final class SpeechEmbeddingTests: XCTestCase {
    static let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    static let root = here.deletingLastPathComponent().deletingLastPathComponent()

    struct Golden: Decodable {
        struct Windows: Decodable { let shape: [Int]; let input: String; let output: String }
        struct Clip: Decodable { let path: String; let samples: String; let windowStarts: [Int]; let windows: String; let output: String }
        let modelSha256: String
        let windows: Windows
        let clips: [Clip]
    }

    static func floats(_ base64: String) -> [Float] {
        let data = Data(base64Encoded: base64)!
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 4)).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
        }
    }

    static func int16s(_ base64: String) -> [Float] {
        let data = Data(base64Encoded: base64)!
        return data.withUnsafeBytes { raw in
            (0..<(data.count / 2)).map { Float(Int16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: Int16.self))) }
        }
    }

    static func golden() throws -> Golden {
        try JSONDecoder().decode(Golden.self, from: Data(contentsOf: here.appendingPathComponent("Golden/embedding.json")))
    }

    /// The converted model from $TL_MODELS_DIR, ./Models or the repository's Models folder.
    static func modelURL() throws -> URL {
        let relative = "speech-embedding/embedding.safetensors"
        let candidates = [ModelStore.directory.appendingPathComponent(relative),
                          root.appendingPathComponent("Models").appendingPathComponent(relative)]
        guard let url = candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) }) else {
            throw XCTSkip("Models/\(relative) not found: fetch the pretrained models with scripts/fetch-models (or set TL_MODELS_DIR)")
        }
        return url
    }

    static func model(pooling: WindowPooling = .mean) throws -> SpeechEmbedding {
        var rng = RNG(seed: 0)
        let m = SpeechEmbedding(pooling: pooling, rng: &rng)
        try m.load(file: try SafeTensors.read(try modelURL()))
        m.freeze()
        m.train(false)
        return m
    }

    static func maxAbs(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
        return zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }

    func testRandomWindowsMatchOnnxruntime() throws {
        let g = try Self.golden()
        let model = try Self.model()
        let x = Tensor(shape: g.windows.shape, scalars: Self.floats(g.windows.input))
        let y = Autograd.noGrad { model.embed(windows: x).value }
        XCTAssertEqual(y.shape, [6, 96])
        let expected = Self.floats(g.windows.output)
        let diff = Self.maxAbs(y.scalars, expected)
        print("speech_embedding vs onnxruntime, 6 random windows in one batch: max abs difference \(diff) (outputs up to \(expected.map(abs).max()!))")
        XCTAssertLessThan(diff, 2e-4)
    }

    func testClipsMatchOnnxruntimeThroughTheWholePipeline() throws {
        let g = try Self.golden()
        let model = try Self.model()
        let frontEnd = ClipFrontEnd()
        XCTAssertEqual(frontEnd.frames, 97)
        XCTAssertEqual(frontEnd.windowStarts, [0, 8, 16])
        for clip in g.clips {
            XCTAssertEqual(clip.windowStarts, frontEnd.windowStarts)
            let ortWindows = Self.floats(clip.windows), expected = Self.floats(clip.output)
            // 1. The backbone on onnxruntime's own mel windows.
            let w = Tensor(shape: [3, 76, 32], scalars: ortWindows)
            let fromOrtMel = Autograd.noGrad { model.embed(windows: w).value }
            let backboneDiff = Self.maxAbs(fromOrtMel.scalars, expected)
            // 2. Everything ours: samples -> log-mel -> windows -> embeddings, pooled.
            let samples = Self.int16s(clip.samples)
            let ours = frontEnd.windows(frontEnd.logMel([frontEnd.fit(samples)]))
            XCTAssertEqual(ours.shape, [1, 3, 76, 32])
            let melDiff = Self.maxAbs(ours.scalars, ortWindows)
            let embedded = Autograd.noGrad { model.embed(windows: ours.reshaped([3, 76, 32])).value }
            let pipelineDiff = Self.maxAbs(embedded.scalars, expected)
            let pooled = Autograd.noGrad { model.features(ours).value }
            var mean = [Float](repeating: 0, count: 96)
            for i in 0..<3 { for j in 0..<96 { mean[j] += expected[i * 96 + j] / 3 } }
            let pooledDiff = Self.maxAbs(pooled.scalars, mean)
            print("\(clip.path): embedding of onnxruntime's windows max abs diff \(backboneDiff); our mel windows \(melDiff); "
                  + "our pipeline's embeddings \(pipelineDiff); mean-pooled feature \(pooledDiff)")
            XCTAssertLessThan(backboneDiff, 2e-4)
            XCTAssertLessThan(melDiff, 1e-4)
            XCTAssertLessThan(pipelineDiff, 5e-4)
            XCTAssertLessThan(pooledDiff, 5e-4)
        }
    }

    /// The inference path (EmbeddingInference) against the tape path (engine ops), whole and split at every block.
    func testInferencePathMatchesTheTapePath() throws {
        let model = try Self.model(pooling: .meanMax)
        var rng = RNG(seed: 11)
        let x = rng.uniformTensor([5, 3, 76, 32], -1, 11)
        var worst: Float = 0
        for k in 0...model.blocks.count {
            var outputs: [Tensor] = []
            for fast in [true, false] {
                model.fastInference = fast
                outputs.append(Autograd.noGrad { () -> Tensor in
                    let a = model.forward(x, through: k)
                    XCTAssertEqual(a.value.requiresGrad, false)
                    return model.forward(a, from: k).value
                })
            }
            worst = max(worst, outputs[0].maxAbsDifference(outputs[1]))
        }
        model.fastInference = true
        print("inference path vs tape path: max abs difference \(worst)")
        XCTAssertLessThan(worst, 2e-4)
        // The tape path is what runs when a block trains, and its BatchNorm uses batch statistics in training mode.
        model.setTrainableTop(1)
        XCTAssertTrue(model.runsFast(0..<6, Variable(x)))
        XCTAssertFalse(model.runsFast(6..<7, Variable(x)))
        model.setTrainableTop(7)
        model.train(true)
        XCTAssertFalse(Autograd.noGrad { model.runsFast(0..<1, Variable(x)) }, "bn0 in training mode needs the tape path")
        // AdaBN's re-estimation: bn0 on the tape, the rest on the inference path, same statistics and outputs.
        model.freeze()
        var features: [Tensor] = [], statistics: [Tensor] = []
        for fast in [true, false] {
            model.fastInference = fast
            model.bn0.resetRunningStatistics()
            model.bn0.momentum = nil
            features.append(Autograd.noGrad { model.features(x).value })
            statistics.append(model.bn0.runningVariance.value)
        }
        model.fastInference = true
        XCTAssertLessThan(features[0].maxAbsDifference(features[1]), 2e-4)
        XCTAssertEqual(statistics[0], statistics[1])
        model.train(false)
        XCTAssertTrue(Autograd.noGrad { model.runsFast(0..<7, Variable(x)) })
    }

    func testBlocksComposeToTheWholeForward() throws {
        let model = try Self.model(pooling: .meanMax)
        XCTAssertEqual(model.blocks.count, 7)
        XCTAssertEqual(model.blocks.first!, ["conv0", "bn0"])
        XCTAssertEqual(model.blocks.last!, ["conv19"])
        XCTAssertEqual(model.parameterCount, 328_152)  // bn0's running statistics are buffers, not counted
        var rng = RNG(seed: 3)
        let x = rng.uniformTensor([2, 3, 76, 32], 0, 10)
        let whole = Autograd.noGrad { model.features(x).value }
        XCTAssertEqual(whole.shape, [2, 192])
        for k in 0...model.blocks.count {
            let split = Autograd.noGrad { () -> Tensor in
                let a = model.forward(x, through: k)
                XCTAssertEqual(a.rowsPerSample, 3)
                // Through the per-sample split/join the fine-tuning cache uses.
                let joined = Activation.join(a.split().reversed(), sequences: false, rowsPerSample: 3)
                return model.forward(joined, from: k).value
            }
            // join reversed the two clips.
            XCTAssertEqual(split.rows(0..<1), whole.rows(1..<2), "split at block \(k)")
            XCTAssertEqual(split.rows(1..<2), whole.rows(0..<1), "split at block \(k)")
        }
        // mean-max: the first 96 features are the windows' mean, the last 96 their max.
        let perWindow = Autograd.noGrad { model.embed(windows: x.reshaped([6, 76, 32])).value }.scalars
        for j in 0..<96 {
            let w = (0..<3).map { perWindow[$0 * 96 + j] }
            XCTAssertEqual(whole[flat: j], w.reduce(0, +) / 3, accuracy: 1e-4)
            XCTAssertEqual(whole[flat: 96 + j], w.max()!)
        }
    }


    /// A safetensors file with F32 tensors and I64 vectors (the engine's writer holds Float32 only).
    static func writeSafeTensors(_ tensors: [String: Tensor], integers: [String: [Int64]], to url: URL) throws {
        var header: [String: Any] = [:], body = Data()
        for (name, t) in tensors.sorted(by: { $0.key < $1.key }) {
            let start = body.count
            t.withUnsafeBufferPointer { body.append(Data(buffer: $0)) }
            header[name] = ["dtype": "F32", "shape": t.shape, "data_offsets": [start, body.count]]
        }
        for (name, v) in integers.sorted(by: { $0.key < $1.key }) {
            let start = body.count
            v.withUnsafeBufferPointer { body.append(Data(buffer: $0)) }
            header[name] = ["dtype": "I64", "shape": [v.count], "data_offsets": [start, body.count]]
        }
        var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while json.count % 8 != 0 { json.append(0x20) }
        var length = UInt64(json.count).littleEndian
        var out = Data(bytes: &length, count: 8)
        out.append(json)
        out.append(body)
        try out.write(to: url)
    }

    func testLoaderIsStrictAndChecksTheGraphConstants() throws {
        let url = try Self.modelURL()
        let file = try SafeTensors.read(url)
        var tensors = try file.tensors()
        var rng = RNG(seed: 0)
        // Every initializer of the file is either a parameter or a checked constant.
        let mapped = Set(SpeechEmbedding.parameterMap().values)
        XCTAssertEqual(mapped.count, 42)
        XCTAssertEqual(Set(file.names), mapped.union(SpeechEmbedding.structuralConstants.keys))
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("speech-embedding-loader-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let integers = try ["pad_const__6", "new_shape__315", "new_shape__264"].reduce(into: [String: [Int64]]()) {
            $0[$1] = try file.int64(named: $1)
        }
        tensors = tensors.filter { integers[$0.key] == nil }
        func attempt(_ t: [String: Tensor], _ name: String) -> String {
            let f = dir.appendingPathComponent(name + ".safetensors")
            do {
                try Self.writeSafeTensors(t, integers: integers, to: f)
                try SpeechEmbedding(rng: &rng).load(file: try SafeTensors.read(f))
                return "loaded"
            } catch {
                return "\(error)"
            }
        }
        XCTAssertEqual(attempt(tensors, "complete"), "loaded")
        var missing = tensors
        missing["model/conv2d_7/Conv2D_bias_fused_bn"] = nil
        let missingError = attempt(missing, "missing")
        XCTAssertTrue(missingError.contains("missing tensor 'model/conv2d_7/Conv2D_bias_fused_bn' (for conv7.bias)"), missingError)
        var wrongShape = tensors
        wrongShape["model/conv2d_3/Conv2D_weights_fused_bn"] = Tensor(zeros: [48, 24, 3, 1])
        let shapeError = attempt(wrongShape, "shape")
        XCTAssertTrue(shapeError.contains("has shape [48, 24, 3, 1], conv3.weight needs [48, 24, 1, 3]"), shapeError)
        var extra = tensors
        extra["model/conv2d_20/Conv2D_weights_fused_bn"] = Tensor(zeros: [1])
        XCTAssertTrue(attempt(extra, "extra").contains("unexpected tensor 'model/conv2d_20"), attempt(extra, "extra"))
        var floor = tensors
        floor["const_fold_opt__286"] = Tensor(shape: [1, 1, 1, 1], scalars: [-0.5])
        XCTAssertTrue(attempt(floor, "floor").contains("constant 'const_fold_opt__286'"), attempt(floor, "floor"))
        // The real file loads, and its BatchNorm statistics land in bn0's buffers.
        let model = try Self.model()
        XCTAssertEqual(model.bn0.runningVariance.value, try file.tensor(named: "model/batch_normalization/FusedBatchNormV3/ReadVariableOp_1:0"))
        XCTAssertEqual(model.bn0.weight.value, try file.tensor(named: "model/batch_normalization/ReadVariableOp:0"))
        XCTAssertEqual(model.batchNormLayers().map(\.name), ["bn0"])
    }

    func testFineTuningTrainsOnlyTheTopBlocks() throws {
        let model = try Self.model()
        model.setTrainableTop(2)
        model.train(true)
        var rng = RNG(seed: 5)
        let x = rng.uniformTensor([4, 3, 76, 32], 0, 10)
        let f = model.features(x)
        (f * f).mean().backward()
        for (name, p) in model.namedParameters() {
            let top = name.hasPrefix("conv15.") || name.hasPrefix("conv16.") || name.hasPrefix("conv17.")
                || name.hasPrefix("conv18.") || name.hasPrefix("conv19.")
            XCTAssertEqual(p.grad != nil, top, name)
        }
        XCTAssertTrue(model.bn0.frozenStatistics)
    }

    /// Central differences in Double against the tape for the module's two ops.
    func testGradientsOfActivationAndWindowPooling() throws {
        var rng = RNG(seed: 9)
        // Values away from the kinks at 0 and -2 (where the derivative jumps).
        var x = rng.uniformTensor([6, 5], -4, 4)
        x.withUnsafeMutableBufferPointer { p in
            for i in 0..<p.count where abs(p[i]) < 0.05 || abs(p[i] + 2) < 0.05 { p[i] += 0.2 }
        }
        let weights = rng.uniformTensor([3, 10], -1, 1)
        for includeMax in [false, true] {
            // Without max the pooled width is 5: use the first 5 columns of the weights.
            let w = includeMax ? weights : Tensor(shape: [3, 5], scalars: (0..<3).flatMap { r in (0..<5).map { weights[flat: r * 10 + $0] } })
            func lossValue(_ t: Tensor) -> Double {
                let pooled = Variable(t).leakyReluFloor().poolWindows(2, includeMax: includeMax).value
                return zip(pooled.scalars, w.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
            }
            let v = Variable(x, requiresGrad: true)
            (v.leakyReluFloor().poolWindows(2, includeMax: includeMax) * Variable(w)).sum().backward()
            let analytic = v.grad!
            var worst = 0.0
            for i in 0..<x.count {
                var plus = x, minus = x
                let h: Float = 1e-2
                plus[flat: i] += h
                minus[flat: i] -= h
                let numeric = (lossValue(plus) - lossValue(minus)) / (2 * Double(h))
                worst = max(worst, abs(numeric - Double(analytic[flat: i])))
            }
            print("leakyReluFloor + poolWindows(includeMax: \(includeMax)) gradient: worst difference \(worst)")
            XCTAssertLessThan(worst, 1e-3)
        }
    }
}
