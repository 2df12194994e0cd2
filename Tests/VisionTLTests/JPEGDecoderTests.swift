import Foundation
import TransferEngine
import XCTest
@testable import VisionTL

/// Golden/jpeg_corpus.json and Golden/jpeg/, made once by Golden/make_jpeg_corpus.py (PIL 9.4 on libjpeg-turbo).
private struct JPEGCorpus: Decodable {
    struct Valid: Decodable {
        let file: String
        let width: Int
        let height: Int
        let pil_mode: String
        let progressive: Bool
        /// PIL's convert("RGB").
        let expected: [Float]
    }
    let valid: [Valid]
    let broken: [GoldenCorpus.Broken]

    static func file(_ name: String) -> URL { GoldenCorpus.directory.appendingPathComponent("jpeg/" + name) }
    static func load() throws -> JPEGCorpus {
        try JSONDecoder().decode(JPEGCorpus.self, from: Data(contentsOf: GoldenCorpus.directory.appendingPathComponent("jpeg_corpus.json")))
    }
}

/// The JPEG decoder against PIL (every chroma subsampling, greyscale, progressive, odd sizes, EXIF/ICC), on a
/// corpus of damaged files, and the PNG/JPEG dispatch by content.
final class JPEGDecoderTests: XCTestCase {
    func testValidCorpusEqualsPIL() throws {
        let corpus = try JPEGCorpus.load()
        XCTAssertGreaterThanOrEqual(corpus.valid.count, 10)
        XCTAssertTrue(corpus.valid.contains { $0.progressive } && corpus.valid.contains { $0.pil_mode == "L" })
        for v in corpus.valid {
            let image = try ImageFile.read(JPEGCorpus.file(v.file))
            XCTAssertEqual([image.width, image.height, image.channels], [v.width, v.height, 3], v.file)
            XCTAssertEqual(image.pixels, v.expected, v.file)
            XCTAssertEqual(ImageFile.size(JPEGCorpus.file(v.file)).map { [$0.width, $0.height] }, [v.width, v.height], v.file)
        }
    }

    func testBrokenFilesFailWithOneLineNamingTheFile() throws {
        let corpus = try JPEGCorpus.load()
        XCTAssertGreaterThanOrEqual(corpus.broken.count, 10)
        assertBrokenFilesFail(corpus.broken, in: JPEGCorpus.file) { try JPEGDecoder.decode(Data(contentsOf: $0), name: $0.path) }
    }

    /// Every proper prefix of a baseline and of a progressive file is an error, never a grey-padded image.
    func testEveryTruncationIsAnError() throws {
        for name in ["rgb_420_q90.jpg", "progressive_420.jpg"] {
            let data = try Data(contentsOf: JPEGCorpus.file(name))
            for length in 0..<data.count {
                XCTAssertThrowsError(try JPEGDecoder.decode(data.prefix(length), name: name), "\(name) cut at \(length)")
            }
        }
    }

    /// Files are told apart by their bytes: a JPEG named .png decodes, a text file named .jpg is one clear error.
    func testFormatComesFromTheBytesNotTheName() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("jpeg-dispatch-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let jpeg = try Data(contentsOf: JPEGCorpus.file("rgb_420_q90.jpg"))
        try jpeg.write(to: dir.appendingPathComponent("photo.png"))
        let misnamed = try ImageFile.read(dir.appendingPathComponent("photo.png"))
        XCTAssertEqual(misnamed.pixels, try ImageFile.read(JPEGCorpus.file("rgb_420_q90.jpg")).pixels)
        for (name, bytes, problem) in [("notes.jpg", Data("hello".utf8), "not a PNG or JPEG file"), ("empty.jpeg", Data(), "empty file")] {
            try bytes.write(to: dir.appendingPathComponent(name))
            XCTAssertThrowsError(try ImageFile.read(dir.appendingPathComponent(name))) { error in
                XCTAssertEqual(error as? EngineError, .invalidFile(dir.appendingPathComponent(name).path, problem))
            }
        }
        XCTAssertTrue(ImageFile.isImage(URL(fileURLWithPath: "a/B.JPG")) && ImageFile.isImage(URL(fileURLWithPath: "x.jpeg")))
        XCTAssertFalse(ImageFile.isImage(URL(fileURLWithPath: "x.gif")))
    }
}
