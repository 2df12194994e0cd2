import Foundation
import TransferEngine
import TransferReport
import XCTest
@testable import VisionTL

/// Data layouts, batches and errors of the vision domain, on small PNG folders written in a temp directory.
final class VisionDomainTests: XCTestCase {
    var root: URL!

    override func setUpWithError() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("vision-domain-tests-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: root)
    }

    /// Writes a grey PNG whose pixels are all `value`.
    @discardableResult
    func png(_ path: String, side: Int = 12, value: UInt8 = 100) throws -> URL {
        let url = root.appendingPathComponent(path)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try PNGWriter.write(width: side, height: side, channels: 1, pixels: [UInt8](repeating: value, count: side * side), to: url)
        return url
    }

    func testImageFolderClassesAreSortedFoldersAndFilesSortedWithin() throws {
        try png("train/zebra/b.png")
        try png("train/zebra/a.png")
        try png("train/ant/x.png")
        try png("train/ant/notes.txt")   // not a PNG: ignored
        try png("train/.hidden/y.png")   // hidden folders are not classes
        let set = try VisionDomain().labelled(at: root.appendingPathComponent("train"))
        XCTAssertEqual(set.classNames, ["ant", "zebra"])
        XCTAssertEqual(set.samples.map(\.lastPathComponent), ["x.png", "a.png", "b.png"])
        XCTAssertEqual(set.labels, [0, 1, 1])
    }

    func testCSVListsWithRelativePathsAndOptionalHeader() throws {
        try png("imgs/one.png")
        try png("imgs/two.png")
        let labelled = root.appendingPathComponent("list.csv")
        try "path,label\nimgs/one.png,cat\n\"imgs/two.png\",dog\n".write(to: labelled, atomically: true, encoding: .utf8)
        let set = try VisionDomain().labelled(at: labelled)
        XCTAssertEqual(set.classNames, ["cat", "dog"])
        XCTAssertEqual(set.samples.map(\.lastPathComponent), ["one.png", "two.png"])
        let plain = root.appendingPathComponent("plain.csv")
        try "imgs/two.png\r\nimgs/one.png\r\n".write(to: plain, atomically: true, encoding: .utf8)
        XCTAssertEqual(try VisionDomain().unlabelled(at: plain).map(\.lastPathComponent), ["two.png", "one.png"])
        // Unlabelled folder: every PNG below it, subfolders included (the one folder rule of every app, issue 21),
        // hidden files skipped.
        try png("flat/a.png")
        try png("flat/sub/b.png")
        try png("flat/.hidden/c.png")
        XCTAssertEqual(try VisionDomain().unlabelled(at: root.appendingPathComponent("flat")).map(\.lastPathComponent), ["a.png", "b.png"])
    }

    func testLayoutErrorsNameTheFileAndLine() throws {
        let d = VisionDomain()
        let missing = root.appendingPathComponent("list.csv")
        try "path,label\nnope.png,cat\n".write(to: missing, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try d.labelled(at: missing)) { error in
            XCTAssertEqual("\(error)", "\(missing.path):2: no such file 'nope.png'")
        }
        try png("a.png")
        let noLabel = root.appendingPathComponent("nolabel.csv")
        try "a.png\n".write(to: noLabel, atomically: true, encoding: .utf8)
        XCTAssertThrowsError(try d.labelled(at: noLabel)) { XCTAssertTrue("\($0)".hasSuffix("nolabel.csv:1: expected 'path,label', got 'a.png'"), "\($0)") }
        try png("flatonly/a.png")
        XCTAssertThrowsError(try d.labelled(at: root.appendingPathComponent("flatonly"))) {
            XCTAssertTrue("\($0)".contains("has images but no class folders"), "\($0)")
        }
        try FileManager.default.createDirectory(at: root.appendingPathComponent("empty"), withIntermediateDirectories: true)
        XCTAssertThrowsError(try d.unlabelled(at: root.appendingPathComponent("empty"))) {
            XCTAssertTrue("\($0)".contains("no .png or .jpg files"), "\($0)")
        }
    }

    func testBatchShapesNormalisationAndCorruptFileError() throws {
        let grey = try png("g.png", side: 28, value: 255)
        let d = VisionDomain(imageSize: 64, scratchSize: 28)
        var rng = RNG(seed: 1)
        let x = try d.batch([grey, grey], augment: false, scratch: false, rng: &rng)
        XCTAssertEqual(x.shape, [2, 64, 64, 3])
        XCTAssertEqual(x.scalars.min()!, (255 - 127) / 128, accuracy: 1e-5)  // flat image stays flat when upscaled
        XCTAssertEqual(x.scalars.max()!, (255 - 127) / 128, accuracy: 1e-5)
        XCTAssertEqual(try d.batch([grey], augment: true, scratch: true, rng: &rng).shape, [1, 28, 28, 3])
        // A damaged file: one error naming it, even among good ones.
        let bad = root.appendingPathComponent("bad.png")
        var bytes = try Data(contentsOf: grey)
        bytes = bytes.prefix(bytes.count - 20)
        try bytes.write(to: bad)
        XCTAssertThrowsError(try d.batch([grey, bad, grey], augment: false, scratch: false, rng: &rng)) { error in
            XCTAssertTrue("\(error)".hasPrefix(bad.path + ": "), "\(error)")
        }
    }

    func testAugmentationIsSeededAndFlipIsOptIn() throws {
        // An asymmetric image: left half dark, right half bright.
        let url = root.appendingPathComponent("half.png")
        var pixels = [UInt8](repeating: 0, count: 28 * 28)
        for y in 0..<28 { for x in 14..<28 { pixels[y * 28 + x] = 250 } }
        try PNGWriter.write(width: 28, height: 28, channels: 1, pixels: pixels, to: url)
        func batch(_ d: VisionDomain, seed: UInt64, scratch: Bool = false) throws -> Tensor {
            var rng = RNG(seed: seed)
            return try d.batch(Array(repeating: url, count: 16), augment: true, scratch: scratch, rng: &rng)
        }
        let d = VisionDomain(imageSize: 28)
        XCTAssertEqual(try batch(d, seed: 5), try batch(d, seed: 5))
        XCTAssertNotEqual(try batch(d, seed: 5), try batch(d, seed: 6))
        // The from-scratch CNN trains on plain images unless asked.
        var rng = RNG(seed: 1)
        let plain = try d.batch([url], augment: false, scratch: true, rng: &rng)
        XCTAssertEqual(try batch(d, seed: 5, scratch: true).rows(0..<1), plain)
        XCTAssertNotEqual(try batch(VisionDomain(imageSize: 28, scratchAugmentation: true), seed: 5, scratch: true), try batch(d, seed: 5, scratch: true))
        // Colour jitter only when asked for: same seed, same crops, different intensities.
        XCTAssertNotEqual(try batch(VisionDomain(imageSize: 28, jitter: 0.4), seed: 5), try batch(d, seed: 5))
        XCTAssertEqual(try batch(VisionDomain(imageSize: 28, jitter: 0.4), seed: 5), try batch(VisionDomain(imageSize: 28, jitter: 0.4), seed: 5))
        /// Images whose left column is brighter than the right one: only a flip makes them.
        func mirrored(_ t: Tensor) -> Int {
            let s = t.scalars, side = 28
            return (0..<16).filter { i in
                var left: Float = 0, right: Float = 0
                for y in 0..<side {
                    left += s[((i * side + y) * side + 2) * 3]
                    right += s[((i * side + y) * side + side - 3) * 3]
                }
                return left > right
            }.count
        }
        XCTAssertEqual(mirrored(try batch(d, seed: 5)), 0, "no flips without --flip")
        XCTAssertGreaterThan(mirrored(try batch(VisionDomain(imageSize: 28, flip: true), seed: 5)), 2)
    }

    func testCacheKeyChangesWithTheFile() throws {
        let url = try png("k.png", value: 10)
        let d = VisionDomain()
        let before = d.cacheKey(url)
        XCTAssertEqual(before, d.cacheKey(url))
        try png("k.png", side: 13, value: 10)  // another size on disk
        XCTAssertNotEqual(before, d.cacheKey(url))
        XCTAssertNotEqual(VisionDomain(imageSize: 224).preprocessingKey, VisionDomain(imageSize: 160).preprocessingKey)
    }

    func testScratchNetworkShapesAndBlocks() throws {
        var rng = RNG(seed: 2)
        for size in [28, 32, 8, 64] {
            let net = ScratchCNN(inputSize: size, rng: &rng)
            let f = Autograd.noGrad { net.features(rng.uniformTensor([2, size, size, 3], -1, 1)) }
            XCTAssertEqual(f.shape, [2, net.featureCount], "input \(size)")
        }
        let net = ScratchCNN(rng: &rng)
        XCTAssertEqual(net.blocks, [["conv1", "bn1"], ["conv2", "bn2"]])
        XCTAssertEqual(net.blockNames.count, 2)
    }
}
