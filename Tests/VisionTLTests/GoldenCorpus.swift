import Foundation
import TransferEngine
import XCTest
@testable import VisionTL

/// Golden/png_corpus.json and the files next to it, made once by Golden/make_png_corpus.py (PIL 9.4).
struct GoldenCorpus: Decodable {
    struct Valid: Decodable {
        let file: String
        let width: Int
        let height: Int
        let pil_mode: String
        let sixteen_bit: Bool
        /// RGB by the decoder's rule (PIL's values; v / 257 for 16-bit samples).
        let expected: [Float]
        /// PIL's convert("RGB").
        let pil: [Float]
        /// PIL's convert("RGBA") alpha, for files with alpha or tRNS (8-bit only).
        let alpha: [Float]?
    }
    struct Broken: Decodable {
        let file: String
        let error: String
    }
    struct Resize: Decodable {
        let file: String
        let kind: String  // "resize", "eval" or "cropresize"
        let source: String
        let width: Int?
        let height: Int?
        let size: Int?
        let x: Int?
        let y: Int?
        let cropWidth: Int?
        let cropHeight: Int?
    }
    let valid: [Valid]
    let broken: [Broken]
    let resize: [Resize]

    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden")
    static func corpusFile(_ name: String) -> URL { directory.appendingPathComponent("corpus/" + name) }
    static func resizeFile(_ name: String) -> URL { directory.appendingPathComponent("resize/" + name) }

    static func load() throws -> GoldenCorpus {
        try JSONDecoder().decode(GoldenCorpus.self, from: Data(contentsOf: directory.appendingPathComponent("png_corpus.json")))
    }
}

/// Largest and mean absolute difference between two equally long arrays.
func differences(_ a: [Float], _ b: [Float]) -> (max: Float, mean: Float) {
    precondition(a.count == b.count, "differences: \(a.count) vs \(b.count) values")
    var worst: Float = 0, total: Double = 0
    for i in a.indices {
        let d = abs(a[i] - b[i])
        worst = max(worst, d)
        total += Double(d)
    }
    return (worst, Float(total / Double(max(1, a.count))))
}

/// Every broken file fails with one line naming it and containing its expected problem.
func assertBrokenFilesFail(_ broken: [GoldenCorpus.Broken], in folder: (String) -> URL, decode: (URL) throws -> Image,
                           file: StaticString = #filePath, line: UInt = #line) {
    for b in broken {
        let url = folder(b.file)
        do {
            let image = try decode(url)
            XCTFail("\(b.file) decoded as \(image.width)x\(image.height) instead of failing", file: file, line: line)
        } catch let error as EngineError {
            guard case let .invalidFile(path, problem) = error else { XCTFail("\(b.file): \(error)", file: file, line: line); continue }
            XCTAssertEqual(path, url.path, file: file, line: line)
            XCTAssertTrue(problem.contains(b.error), "\(b.file): '\(problem)' lacks '\(b.error)'", file: file, line: line)
            XCTAssertFalse(error.description.contains("\n"), "\(b.file): message spans lines", file: file, line: line)
            XCTAssertTrue(error.description.hasPrefix(url.path + ": "), file: file, line: line)
        } catch {
            XCTFail("\(b.file): \(error) is not an EngineError", file: file, line: line)
        }
    }
}
