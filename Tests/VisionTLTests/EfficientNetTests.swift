import Foundation
import TransferEngine
import XCTest
@testable import VisionTL

/// EfficientNet-Lite0 against the float64 PyTorch reference in Golden/efficientnet_golden.json (made by
/// Golden/make_efficientnet_golden.py from the original .pth), on real photos committed under Golden/photos.
final class EfficientNetTests: XCTestCase {
    struct Golden: Decodable {
        struct Photo: Decodable {
            let file: String
            let width: Int, height: Int
            let accepted_top1: [Int]
            let top5: [Int]
            let features: [Float]
            let logits: [Float]
        }
        struct BatchStatistics: Decodable { let files: [String]; let features: [[Float]] }
        let classes: [String: String]
        let photos: [Photo]
        let batch_statistics: BatchStatistics
    }

    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The fetched weights: $TL_MODELS_DIR or <package>/Models. Skips (with how to fetch) when absent.
    static func weights() throws -> URL {
        let dir = ProcessInfo.processInfo.environment["TL_MODELS_DIR"].map { URL(fileURLWithPath: $0) }
            ?? packageRoot.appendingPathComponent("Models")
        let url = dir.appendingPathComponent(VisionDomain.modelPath)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw XCTSkip("EfficientNet-Lite0 weights not found at \(url.path); fetch them with scripts/fetch-models")
        }
        return url
    }

    static func loadGolden() throws -> Golden {
        try JSONDecoder().decode(Golden.self, from: Data(contentsOf: golden.appendingPathComponent("efficientnet_golden.json")))
    }

    /// The stored pixels of a photo, normalised, as [1, H, W, 3] (no resizing: the goldens used exactly these).
    static func input(_ file: String) throws -> Tensor {
        let image = try PNGDecoder.read(golden.appendingPathComponent("photos/" + file))
        var t = Tensor(uninitializedShape: [1, image.height, image.width, 3])
        t.withUnsafeMutableBufferPointer { ImagePreprocessing.writeNormalised(image, to: $0.baseAddress!) }
        return t
    }

    /// max |a - b| / max |b|.
    static func relativeDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count)
        let scale = b.map { abs($0) }.max() ?? 1
        return zip(a, b).map { abs($0 - $1) }.max()! / scale
    }

    func testPooledFeaturesAndLogitsMatchPyTorch() throws {
        let net = try EfficientNetLite0.pretrained(from: try Self.weights())
        let golden = try Self.loadGolden()
        XCTAssertEqual(golden.photos.count, 3)
        var worst: (Float, String) = (0, "")
        for fused in [true, false] {
            net.fusedInference = fused
            for photo in golden.photos {
                let x = try Self.input(photo.file)
                XCTAssertEqual(x.shape, [1, photo.height, photo.width, 3])
                let features = Autograd.noGrad { net.features(x).value }
                let logits = net.logits(x)
                XCTAssertEqual(features.shape, [1, 1280])
                XCTAssertEqual(logits.shape, [1, 1000])
                let df = Self.relativeDifference(features.scalars, photo.features)
                let dl = Self.relativeDifference(logits.scalars, photo.logits)
                let path = fused ? "fused" : "tape"
                XCTAssertLessThanOrEqual(df, 1e-4, "\(photo.file) features (\(path))")
                XCTAssertLessThanOrEqual(dl, 1e-4, "\(photo.file) logits (\(path))")
                for (d, what) in [(df, "features"), (dl, "logits")] where d > worst.0 {
                    worst = (d, "\(photo.file) \(what) \(path)")
                }
                let top1 = logits.argmaxRows()[0]
                XCTAssertTrue(photo.accepted_top1.contains(top1),
                              "\(photo.file): top-1 \(top1) (\(golden.classes[String(top1)] ?? "?")), expected one of \(photo.accepted_top1)")
                XCTAssertEqual(top1, photo.top5[0], "\(photo.file): same top-1 as PyTorch")
            }
        }
        print("EfficientNet-Lite0 golden: worst relative difference \(worst.0) (\(worst.1)), tolerance 1e-4")
    }

    func testBatchStatisticsMatchPyTorch() throws {
        // Training-mode BatchNorm (batch statistics), the forward pass AdaBN's re-estimation runs: on the C kernels
        // (no gradient needed) and on the tape; both must match PyTorch and update the running statistics alike.
        let golden = try Self.loadGolden().batch_statistics
        let x = Tensor.concatenateRows(try golden.files.map(Self.input))
        var statistics: [[String: Tensor]] = []
        for fused in [true, false] {
            let net = try EfficientNetLite0.pretrained(from: try Self.weights())
            net.fusedInference = fused
            net.train(true)
            let features = Autograd.noGrad { net.features(x).value }
            let d = Self.relativeDifference(features.scalars, golden.features.flatMap { $0 })
            print("EfficientNet-Lite0 batch-statistics golden (\(fused ? "C kernels" : "tape")): relative difference \(d)")
            XCTAssertLessThanOrEqual(d, 1e-4)
            statistics.append(net.namedBuffers().reduce(into: [:]) { $0[$1.name] = $1.variable.value })
        }
        for (name, a) in statistics[0] {
            XCTAssertLessThanOrEqual(Self.relativeDifference(a.scalars, statistics[1][name]!.scalars), 1e-4, name)
        }
    }

    /// tl-bench's efficiency counts FLOPs from the declaration. The expected total was summed independently, by a
    /// few lines of Python over the architecture table (stem 3x3/2 to 32; per stage expansion, kernel, stride,
    /// outputs, repeats; head 1x1 to 1280) at 224 x 224, not through this code.
    func testFeatureMultiplyAddsFromTheDeclaration() {
        var rng = RNG(seed: 1)
        let net = EfficientNetLite0(rng: &rng)
        XCTAssertEqual(net.featureMultiplyAdds(height: 224, width: 224), 383_907_552)
        // Stem alone on an odd size: SAME, stride 2 -> 4 x 3 outputs, 32 channels, 3 x 3 x 3 products each.
        let stem = net.blockLayers[0].multiplyAdds(height: 7, width: 5)
        XCTAssertEqual([stem.count, stem.height, stem.width], [4 * 3 * 32 * 27, 4, 3])
    }

    func testBlocksNamesAndParameterCount() throws {
        var rng = RNG(seed: 1)
        let net = EfficientNetLite0(rng: &rng)
        // DATA.md counts 4,694,073 values in the .pth's 296 tensors: parameters, BatchNorm running statistics and
        // 49 num_batches_tracked counters (not kept by the converted file).
        XCTAssertEqual(net.parameterCount, 4_652_008)
        XCTAssertEqual(net.parameterCount + net.namedBuffers().reduce(0) { $0 + $1.variable.value.count } + 49, 4_694_073)
        XCTAssertEqual(net.stateDict().count + 49, 296)
        XCTAssertEqual(net.blocks.count, 18)
        XCTAssertEqual(net.blockNames.count, 18)
        XCTAssertEqual(net.blocks.first!, ["_conv_stem", "_bn0"])
        XCTAssertEqual(net.blocks.last!, ["_conv_head", "_bn1"])
        // Every parameter except _fc belongs to exactly one block.
        for (name, _) in net.namedParameters() where !name.hasPrefix("_fc.") {
            let owners = net.blocks.indices.filter { i in net.blocks[i].contains { Module.matches(name, $0) } }
            XCTAssertEqual(owners.count, 1, name)
        }
        let names = Set(net.stateDict().keys)
        for key in ["_conv_stem.weight", "_bn0.running_var", "_blocks.0._depthwise_conv.weight", "_blocks.0._project_conv.weight",
                    "_blocks.1._expand_conv.weight", "_blocks.15._bn2.bias", "_conv_head.weight", "_bn1.running_mean",
                    "_fc.weight", "_fc.bias"] {
            XCTAssertTrue(names.contains(key), key)
        }
        XCTAssertFalse(names.contains("_blocks.0._expand_conv.weight"), "block 0 has expansion 1: no expand conv")
        XCTAssertEqual(net.batchNormLayers().count, 2 + 15 * 3 + 2)
    }

    /// Non-trivial BatchNorm statistics and affine parameters, so folding them into the weights is exercised (and
    /// activations of a randomly initialised network do not vanish).
    static func randomiseStatistics(_ net: Module, _ rng: inout RNG) {
        for (_, bn) in net.batchNormLayers() {
            bn.runningMean.value = rng.uniformTensor([bn.channels], -0.2, 0.2)
            bn.runningVariance.value = rng.uniformTensor([bn.channels], 0.05, 0.3)
            bn.weight.value = rng.uniformTensor([bn.channels], 0.5, 1.5)
            bn.bias.value = rng.uniformTensor([bn.channels], -0.2, 0.2)
        }
    }

    /// A randomly initialised network with random BatchNorm statistics, frozen, in eval mode.
    static func frozenRandomNetwork(_ rng: inout RNG) -> EfficientNetLite0 {
        let net = EfficientNetLite0(rng: &rng)
        randomiseStatistics(net, &rng)
        net.freeze()
        net.train(false)
        return net
    }

    func testFusedPathEqualsTapeOnOddSizesAndSplitRanges() throws {
        var rng = RNG(seed: 7)
        let net = Self.frozenRandomNetwork(&rng)
        let x = rng.uniformTensor([3, 45, 37, 3], -1, 1)
        net.fusedInference = false
        let tape = Autograd.noGrad { net.features(x).value }
        net.fusedInference = true
        let fused = Autograd.noGrad { net.features(x).value }
        XCTAssertLessThanOrEqual(Self.relativeDifference(fused.scalars, tape.scalars), 1e-4)
        // Split at every block boundary: bottom part fused, top on the tape (what fine-tuning does).
        for split in [1, 5, 16, 17] {
            let bottom = Autograd.noGrad { net.forward(x, through: split) }
            net.fusedInference = false
            let top = Autograd.noGrad { net.forward(bottom, from: split).value }
            net.fusedInference = true
            XCTAssertLessThanOrEqual(Self.relativeDifference(top.scalars, tape.scalars), 1e-4, "split at \(split)")
        }
        // Trainable top blocks record on the tape; the frozen bottom still runs fused: same values.
        net.setTrainableTop(2)
        let recorded = net.features(x)
        XCTAssertTrue(recorded.requiresGrad)
        XCTAssertLessThanOrEqual(Self.relativeDifference(recorded.value.scalars, tape.scalars), 1e-4)
    }

    /// Blocks 0..<k then k..<18 on the fused path give exactly `features`, to the bit: the workflows keep the frozen
    /// part's activations from the pass that computes the features (`keepsFrozenActivations`), and the feature
    /// cache must hold the same values whichever command filled it.
    func testFeaturesSplitAtAnyBlockAreBitIdentical() throws {
        var rng = RNG(seed: 11)
        let net = Self.frozenRandomNetwork(&rng)
        let x = rng.uniformTensor([2, 40, 33, 3], -1, 1)
        let whole = Autograd.noGrad { net.features(x).value }
        for k in [1, 9, 16, 17, 18] {
            let split = Autograd.noGrad { net.forward(net.forward(x, through: k), from: k).value }
            XCTAssertEqual(split.scalars, whole.scalars, "split at block \(k)")
        }
    }

    /// The fused path runs its small blocks on groups of images (`InferencePlan.groupSize`): a batch's features are
    /// each image's alone, to the bit, whatever the batch, its split over threads and the groups' sizes.
    func testBatchFeaturesEqualEachImageAlone() throws {
        var rng = RNG(seed: 13)
        let net = Self.frozenRandomNetwork(&rng)
        let (n, h, w) = (7, 64, 48)
        let x = rng.uniformTensor([n, h, w, 3], -1, 1)
        let batch = Autograd.noGrad { net.features(x).value }
        let width = batch.shape[1]
        for i in 0..<n {
            let image = Tensor(shape: [1, h, w, 3], scalars: Array(x.scalars[(i * h * w * 3)..<((i + 1) * h * w * 3)]))
            let alone = Autograd.noGrad { net.features(image).value }
            XCTAssertEqual(alone.scalars, Array(batch.scalars[(i * width)..<((i + 1) * width)]), "image \(i)")
        }
    }

    /// The C kernels on shapes EfficientNet never uses (channels not a multiple of the vector width, 1-pixel
    /// images, stride 2 on odd sizes) against the tape's reference convolution, via a one-block network.
    func testKernelsOnAwkwardShapes() throws {
        var rng = RNG(seed: 11)
        for (c, k, s, h, w) in [(13, 3, 1, 5, 7), (20, 5, 2, 9, 1), (40, 5, 1, 1, 1), (24, 3, 2, 17, 10), (8, 5, 2, 16, 16)] {
            let block = MBConvBlock(.init(inputs: c, outputs: c + 3, kernel: k, stride: s, expansion: 3),
                                    batchNormEps: 1e-3, momentum: 0.01, rng: &rng)
            for (_, bn) in block.batchNormLayers() {
                bn.runningMean.value = rng.uniformTensor([bn.channels], -0.3, 0.3)
                bn.runningVariance.value = rng.uniformTensor([bn.channels], 0.5, 2)
            }
            block.freeze()
            block.train(false)
            let x = rng.uniformTensor([2, h, w, c], -1, 1)
            let tape = Autograd.noGrad { block(Variable(x)).value }
            let convs = block.layers.steps.map { FoldedConvolution($0.conv, $0.batchNorm, activation: $0.activation) }
            var fused = [Float]()
            for i in 0..<2 {
                var cur = Array(x.scalars[(i * h * w * c)..<((i + 1) * h * w * c)])
                var (ch, cw) = (h, w)
                for conv in convs {
                    var out = [Float](repeating: .nan, count: conv.geometry(ch).out * conv.geometry(cw).out * conv.outputs)
                    let size = cur.withUnsafeBufferPointer { src in
                        out.withUnsafeMutableBufferPointer { conv.apply(src.baseAddress!, h: ch, w: cw, residual: nil, into: $0.baseAddress!) }
                    }
                    (ch, cw) = size
                    cur = out
                }
                fused += cur
            }
            XCTAssertEqual(tape.count, fused.count)
            XCTAssertLessThanOrEqual(Self.relativeDifference(fused, tape.scalars), 1e-5, "c \(c) k \(k) s \(s) \(h)x\(w)")
        }
    }
}
