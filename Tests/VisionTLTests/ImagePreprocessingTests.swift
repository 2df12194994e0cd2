import Foundation
import TransferEngine
import XCTest
@testable import VisionTL

/// Resizing and the evaluation transform against Pillow goldens (Golden/make_png_corpus.py), and batching.
final class ImagePreprocessingTests: XCTestCase {
    /// Pillow rounds to 8 bits after its horizontal pass and again at the end; we stay in Float. So the Float
    /// result is within 1.0 of Pillow's, with a mean distance near 0.25-0.3 (that of rounding itself) and no bias;
    /// with Pillow's two roundings emulated (`pillowRounding`) it equals Pillow's almost everywhere (rare
    /// off-by-ones from Pillow's 22-bit fixed-point weights).
    static let maxTolerance: Float = 1.0 + 1e-3
    static let meanTolerance: Float = 0.35
    static let biasTolerance: Float = 0.05
    static let emulatedMeanTolerance: Float = 0.02

    func testMatchesPillowGoldens() throws {
        let corpus = try GoldenCorpus.load()
        var sources: [String: Image] = [:]
        var worst: (max: Float, mean: Float) = (0, 0)
        var worstRounded: Float = 0, worstBias: Float = 0
        for r in corpus.resize {
            if sources[r.source] == nil { sources[r.source] = try PNGDecoder.read(GoldenCorpus.resizeFile(r.source)) }
            let source = sources[r.source]!
            let ours: Image
            switch r.kind {
            case "resize": ours = ImagePreprocessing.resized(source, width: r.width!, height: r.height!)
            case "eval": ours = ImagePreprocessing.evaluationImage(source, size: r.size!)
            case "cropresize":
                ours = ImagePreprocessing.resized(source, crop: PixelBox(x: r.x!, y: r.y!, width: r.cropWidth!, height: r.cropHeight!),
                                                  width: r.width!, height: r.height!)
            default: XCTFail("unknown kind \(r.kind)"); continue
            }
            let golden = try PNGDecoder.read(GoldenCorpus.resizeFile(r.file))
            XCTAssertEqual([ours.width, ours.height], [golden.width, golden.height], r.file)
            guard ours.pixels.count == golden.pixels.count else { continue }
            let d = differences(ours.pixels, golden.pixels)
            let full = PixelBox(x: 0, y: 0, width: source.width, height: source.height)
            let emulated: Image
            switch r.kind {
            case "resize":
                emulated = ImagePreprocessing.resample(source, crop: full, width: r.width!, height: r.height!, outputX: 0..<r.width!,
                                                       outputY: 0..<r.height!, pillowRounding: true)
            case "eval":
                let (w, h) = ImagePreprocessing.shorterSideSize(width: source.width, height: source.height, size: r.size!)
                let x0 = ImagePreprocessing.centreOffset(w, r.size!), y0 = ImagePreprocessing.centreOffset(h, r.size!)
                emulated = ImagePreprocessing.resample(source, crop: full, width: w, height: h, outputX: x0..<(x0 + r.size!),
                                                       outputY: y0..<(y0 + r.size!), pillowRounding: true)
            default:
                emulated = ImagePreprocessing.resample(source, crop: PixelBox(x: r.x!, y: r.y!, width: r.cropWidth!, height: r.cropHeight!),
                                                       width: r.width!, height: r.height!, outputX: 0..<r.width!,
                                                       outputY: 0..<r.height!, pillowRounding: true)
            }
            let rounded = differences(emulated.pixels, golden.pixels)
            let bias = zip(ours.pixels, golden.pixels).reduce(0) { $0 + ($1.0 - $1.1) } / Float(ours.pixels.count)
            print(String(format: "%@: max %.3f mean %.3f bias %+.4f; Pillow-rounded: max %.0f mean %.4f", r.file, d.max, d.mean,
                         bias, rounded.max, rounded.mean))
            XCTAssertLessThanOrEqual(d.max, Self.maxTolerance, r.file)
            XCTAssertLessThan(d.mean, Self.meanTolerance, r.file)
            XCTAssertLessThan(rounded.mean, Self.emulatedMeanTolerance, r.file)
            XCTAssertLessThanOrEqual(rounded.max, 1, r.file)
            XCTAssertLessThan(abs(bias), Self.biasTolerance, r.file)
            worst = (max(worst.max, d.max), max(worst.mean, d.mean))
            worstRounded = max(worstRounded, rounded.mean)
            worstBias = max(worstBias, abs(bias))
        }
        print(String(format: "resize vs Pillow, worst of %d cases: max %.3f, mean %.3f, |bias| %.4f; Pillow-rounded mean %.4f",
                     corpus.resize.count, worst.max, worst.mean, worstBias, worstRounded))
    }

    func testTorchvisionResizeAndCentreCropArithmetic() {
        XCTAssertTrue(ImagePreprocessing.shorterSideSize(width: 37, height: 23, size: 16) == (25, 16))
        XCTAssertTrue(ImagePreprocessing.shorterSideSize(width: 22, height: 37, size: 15) == (15, 25))
        XCTAssertTrue(ImagePreprocessing.shorterSideSize(width: 28, height: 28, size: 224) == (224, 224))
        XCTAssertEqual(ImagePreprocessing.centreOffset(25, 16), 4)  // round(4.5) = 4, halves to even
        XCTAssertEqual(ImagePreprocessing.centreOffset(27, 16), 6)  // round(5.5) = 6
        let image = Image(width: 5, height: 3, channels: 1, pixels: (0..<15).map(Float.init))
        // x offset round(1.5) = 2, y offset 1.
        XCTAssertEqual(ImagePreprocessing.centreCropped(image, width: 2, height: 1).pixels, [7, 8])
    }

    func testConstantImageStaysConstantAndIdentitySizeIsExact() {
        let grey = Image(width: 9, height: 4, filledWith: [200])
        for (w, h) in [(3, 2), (30, 17), (1, 1)] {
            let r = ImagePreprocessing.resized(grey, width: w, height: h)
            XCTAssertLessThan(r.pixels.map { abs($0 - 200) }.max()!, 1e-4)
        }
        var rng = RNG(seed: 1)
        let noise = Image(width: 6, height: 5, pixels: (0..<90).map { _ in Float(rng.int(below: 256)) })
        XCTAssertEqual(ImagePreprocessing.resized(noise, width: 6, height: 5).pixels, noise.pixels)
    }

    func testEvaluationBatchIsNormalisedNHWCWithGreyRepeated() {
        let white = Image(width: 40, height: 30, filledWith: [255, 127, 0])
        let grey = Image(grey: [UInt8](repeating: 63, count: 64), width: 8, height: 8)
        let batch = ImagePreprocessing.evaluationBatch([white, grey], size: 12)
        XCTAssertEqual(batch.shape, [2, 12, 12, 3])
        let v = batch.scalars, slot = 12 * 12 * 3
        for i in stride(from: 0, to: slot, by: 3) {
            XCTAssertEqual(v[i], 1, accuracy: 1e-5)            // (255 - 127) / 128
            XCTAssertEqual(v[i + 1], 0, accuracy: 1e-5)
            XCTAssertEqual(v[i + 2], -127 / 128, accuracy: 1e-5)
            for c in 0..<3 { XCTAssertEqual(v[slot + i + c], -0.5, accuracy: 1e-5) }  // (63 - 127) / 128
        }
    }

    func testUpscalesSmallImagesTo224() {
        var rng = RNG(seed: 3)
        let digit = Image(grey: (0..<784).map { _ in UInt8(rng.int(below: 256)) }, width: 28, height: 28)
        let batch = ImagePreprocessing.evaluationBatch([digit], size: 224)
        XCTAssertEqual(batch.shape, [1, 224, 224, 3])
        let v = batch.scalars
        let direct = ImagePreprocessing.resized(digit, width: 224, height: 224).pixels
        for i in 0..<(224 * 224) {
            for c in 0..<3 { XCTAssertEqual(v[3 * i + c], (direct[i] - 127) / 128, accuracy: 1e-6) }
        }
        XCTAssertTrue(v.allSatisfy { $0 >= -127 / 128 - 1e-5 && $0 <= 1 + 1e-5 })
    }
}
