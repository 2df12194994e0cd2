import Foundation
import TransferEngine
import XCTest
@testable import VisionTL

/// Seeded augmentation: reproducibility, crop statistics, and each transform on images whose answer is known.
final class AugmentationTests: XCTestCase {
    private func noiseImage(_ w: Int, _ h: Int, channels: Int = 3, seed: UInt64) -> Image {
        var rng = RNG(seed: seed)
        return Image(width: w, height: h, channels: channels, pixels: (0..<(w * h * channels)).map { _ in Float(rng.int(below: 256)) })
    }

    func testSameSeedSameBatchDifferentSeedDifferentBatch() {
        let images = [noiseImage(28, 28, channels: 1, seed: 1), noiseImage(40, 30, seed: 2), noiseImage(8, 8, seed: 3)]
        let options = AugmentationOptions.smallData(size: 32)
        var a = RNG(seed: 42), b = RNG(seed: 42), c = RNG(seed: 43)
        let x = Augmentation.trainingBatch(images, options: options, rng: &a)
        let y = Augmentation.trainingBatch(images, options: options, rng: &b)
        let z = Augmentation.trainingBatch(images, options: options, rng: &c)
        XCTAssertEqual(x.shape, [3, 32, 32, 3])
        XCTAssertEqual(x, y)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(x, z)
        let v = x.scalars
        for i in stride(from: 0, to: 32 * 32 * 3, by: 3) {  // the grey image fills all three channels alike
            XCTAssertEqual(v[i], v[i + 1])
            XCTAssertEqual(v[i], v[i + 2])
        }
        // The next batch from the same stream differs from the first.
        XCTAssertNotEqual(Augmentation.trainingBatch(images, options: options, rng: &a), x)
    }

    func testRandomResizedCropBoxStaysInsideAndCoversTheScaleRange() {
        var rng = RNG(seed: 7)
        for (scale, w, h) in [(0.08...1.0, 224, 160), (0.35...1.0, 28, 28), (0.35...1.0, 8, 8)] {
            var smallest = 1.0, largest = 0.0
            for _ in 0..<2000 {
                let box = Augmentation.randomResizedCropBox(width: w, height: h, scale: scale, ratio: 0.75...(4.0 / 3.0), rng: &rng)
                XCTAssertTrue(box.x >= 0 && box.y >= 0 && box.width >= 1 && box.height >= 1
                              && box.x + box.width <= w && box.y + box.height <= h, "\(box) in \(w)x\(h)")
                let fraction = Double(box.width * box.height) / Double(w * h)
                smallest = min(smallest, fraction)
                largest = max(largest, fraction)
            }
            // Whole-pixel rounding moves the area a little, more on tiny images.
            let slack = w < 16 ? 0.2 : 0.05
            XCTAssertGreaterThan(smallest, scale.lowerBound - slack)
            XCTAssertLessThan(smallest, scale.lowerBound + 0.1 + slack)
            XCTAssertGreaterThan(largest, 0.8)
        }
    }

    func testFullCropWithoutRandomTransformsIsTheEvaluationResize() {
        let image = noiseImage(20, 20, seed: 5)
        let options = AugmentationOptions(size: 12, scale: 1...1, ratio: 1...1, horizontalFlip: false)
        var rng = RNG(seed: 9)
        let expected = ImagePreprocessing.resized(image, width: 12, height: 12)
        for _ in 0..<5 { XCTAssertEqual(Augmentation.apply(image, options, rng: &rng), expected) }
    }

    func testFlipFlagControlsMirroring() {
        let image = noiseImage(16, 16, seed: 6)
        let plain = ImagePreprocessing.resized(image, width: 16, height: 16)
        let mirrored = Augmentation.flippedHorizontally(plain)
        XCTAssertEqual(mirrored[0, 3, 1], plain[15, 3, 1])
        XCTAssertEqual(Augmentation.flippedHorizontally(mirrored), plain)
        var rng = RNG(seed: 11)
        var flips = 0
        let flipping = AugmentationOptions(size: 16, scale: 1...1, ratio: 1...1, horizontalFlip: true)
        for _ in 0..<40 {
            let out = Augmentation.apply(image, flipping, rng: &rng)
            if out == mirrored { flips += 1 } else { XCTAssertEqual(out, plain) }
        }
        XCTAssertTrue(flips > 5 && flips < 35, "\(flips) flips out of 40")
        let digits = AugmentationOptions.digits(size: 16)
        XCTAssertFalse(digits.horizontalFlip)
    }

    func testRotation() {
        let image = noiseImage(10, 10, seed: 8)
        XCTAssertLessThan(differences(Augmentation.rotated(image, degrees: 0).pixels, image.pixels).max, 1e-4)
        // 90 degrees counter-clockwise: the output's top-left pixel comes from the input's top-right.
        let r = Augmentation.rotated(image, degrees: 90)
        var expected = image
        for y in 0..<10 { for x in 0..<10 { for c in 0..<3 { expected[x, y, c] = image[9 - y, x, c] } } }
        XCTAssertLessThan(differences(r.pixels, expected.pixels).max, 1e-3)
        // A 45-degree turn of a white square leaves black corners and a white centre.
        let white = Augmentation.rotated(Image(width: 20, height: 20, filledWith: [255, 255, 255]), degrees: 45)
        XCTAssertEqual(white[0, 0, 0], 0)
        XCTAssertEqual(white[10, 10, 2], 255, accuracy: 1e-3)
    }

    func testBrightnessAndContrast() {
        let image = Image(width: 2, height: 1, channels: 3, pixels: [100, 100, 100, 200, 200, 200])
        XCTAssertEqual(Augmentation.brightnessAdjusted(image, factor: 1), image)
        XCTAssertEqual(Augmentation.brightnessAdjusted(image, factor: 1.5).pixels, [150, 150, 150, 255, 255, 255])
        XCTAssertEqual(Augmentation.contrastAdjusted(image, factor: 0).pixels.map { ($0 * 100).rounded() / 100 },
                       [Float](repeating: 150, count: 6))
        XCTAssertEqual(Augmentation.contrastAdjusted(image, factor: 2).pixels.map { ($0 * 100).rounded() / 100 },
                       [50, 50, 50, 250, 250, 250])
    }
}
