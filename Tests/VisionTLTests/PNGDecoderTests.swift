import Foundation
import TransferEngine
import XCTest
@testable import VisionTL

/// The decoder against PIL on every colour type, depth and interlacing, and on a corpus of damaged files.
final class PNGDecoderTests: XCTestCase {
    func testValidCorpusMatchesPIL() throws {
        let corpus = try GoldenCorpus.load()
        XCTAssertGreaterThanOrEqual(corpus.valid.count, 20)
        var worstVersusPIL: Float = 0
        for v in corpus.valid {
            let image = try PNGDecoder.read(GoldenCorpus.corpusFile(v.file))
            XCTAssertEqual([image.width, image.height, image.channels], [v.width, v.height, 3], v.file)
            guard image.pixels.count == v.expected.count else { continue }
            if v.sixteen_bit {
                // v / 257 exactly (up to the JSON's 4 decimals); PIL keeps only the high byte, less than 1 away.
                XCTAssertLessThan(differences(image.pixels, v.expected).max, 1e-3, v.file)
                if v.pil_mode != "I" {
                    let d = differences(image.pixels, v.pil).max
                    worstVersusPIL = max(worstVersusPIL, d)
                    XCTAssertLessThan(d, 1, v.file)
                }
            } else {
                XCTAssertEqual(image.pixels, v.pil, v.file)
                XCTAssertEqual(v.pil, v.expected, v.file)
            }
        }
        print("PNG corpus: \(corpus.valid.count) files; 8-bit equal to PIL; 16-bit max |v/257 - PIL| = \(worstVersusPIL)")
    }

    func testCompositeOverBlackUsesAlphaAndTRNS() throws {
        let corpus = try GoldenCorpus.load()
        var checked = 0
        for v in corpus.valid {
            guard let alpha = v.alpha else { continue }
            let image = try PNGDecoder.read(GoldenCorpus.corpusFile(v.file), alpha: .compositeOverBlack)
            var expected = v.pil
            for i in 0..<(v.width * v.height) { for c in 0..<3 { expected[3 * i + c] *= alpha[i] / 255 } }
            XCTAssertLessThan(differences(image.pixels, expected).max, 1e-3, v.file)
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 6)
    }

    func testBrokenFilesFailWithOneLineNamingTheFile() throws {
        let corpus = try GoldenCorpus.load()
        XCTAssertGreaterThanOrEqual(corpus.broken.count, 20)
        assertBrokenFilesFail(corpus.broken, in: GoldenCorpus.corpusFile) { try PNGDecoder.read($0) }
    }

    func testErrorsNameTheGivenNameAndLimitIsAParameter() throws {
        XCTAssertThrowsError(try PNGDecoder.decode(Data(), name: "memory.png")) { error in
            XCTAssertEqual(error as? EngineError, .invalidFile("memory.png", "empty file (0 bytes), not a PNG file"))
        }
        let data = try Data(contentsOf: GoldenCorpus.corpusFile("rgb8.png"))
        XCTAssertThrowsError(try PNGDecoder.decode(data, name: "small.png", maxPixels: 34)) { error in
            XCTAssertEqual(error as? EngineError, .invalidFile("small.png", "image is 7x5, over the limit of 34 pixels"))
        }
        XCTAssertEqual(try PNGDecoder.decode(data, name: "small.png", maxPixels: 35).width, 7)
    }

    func testMissingFileAndDirectory() {
        let missing = GoldenCorpus.corpusFile("does-not-exist.png")
        XCTAssertThrowsError(try PNGDecoder.read(missing)) { error in
            XCTAssertEqual(error as? EngineError, .invalidFile(missing.path, "no such file"))
        }
        XCTAssertThrowsError(try PNGDecoder.read(GoldenCorpus.directory)) { error in
            XCTAssertEqual(error as? EngineError, .invalidFile(GoldenCorpus.directory.path, "is a directory, not a PNG file"))
        }
    }

    /// libpng state and the error jump buffer are per call, so parallel decodes (as batch loading does) agree.
    func testConcurrentDecodesAgree() throws {
        let corpus = try GoldenCorpus.load()
        let urls = (corpus.valid.map(\.file) + corpus.broken.map(\.file)).map(GoldenCorpus.corpusFile)
        let serial = urls.map { try? PNGDecoder.read($0) }
        let lock = NSLock()
        var mismatches = 0
        DispatchQueue.concurrentPerform(iterations: urls.count * 4) { i in
            let same = (try? PNGDecoder.read(urls[i % urls.count])) == serial[i % urls.count]
            if !same { lock.lock(); mismatches += 1; lock.unlock() }
        }
        XCTAssertEqual(mismatches, 0)
    }

    /// Every truncation of a valid file fails cleanly (no crash, no partial image), whatever the cut.
    func testEveryTruncationIsAnError() throws {
        for name in ["adam7_rgb8.png", "palette4_trns.png", "rgb16.png"] {
            let data = try Data(contentsOf: GoldenCorpus.corpusFile(name))
            for cut in 0..<data.count {
                XCTAssertThrowsError(try PNGDecoder.decode(data.prefix(cut), name: name), "\(name) cut at \(cut)")
            }
            XCTAssertNoThrow(try PNGDecoder.decode(data, name: name))
        }
    }
}
