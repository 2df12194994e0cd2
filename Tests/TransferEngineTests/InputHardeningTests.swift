import Foundation
import XCTest
@testable import TransferEngine

/// The engine's side of issue 15: bounded reads of regular files only, cache keys from contents, checked and
/// cleaned cache files, saved-model metadata that cannot outgrow its weights, and text made safe to print.
final class InputHardeningTests: XCTestCase {
    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("input-hardening-\(getpid())-\(name.hashValue)")
        try? FileManager.default.removeItem(at: folder)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: folder) }

    func problem(_ body: () throws -> Void) -> String {
        do { try body(); return "no error" } catch { return "\(error)" }
    }

    func testOnlyRegularFilesWithinTheLimitAreRead() throws {
        let file = folder.appendingPathComponent("a.txt")
        try Data("hello".utf8).write(to: file)
        XCTAssertEqual(try InputFile.read(file, limit: 5, what: "a text"), Data("hello".utf8))
        XCTAssertEqual(problem { _ = try InputFile.read(file, limit: 4, what: "a text") },
                       "\(file.path): is 5 bytes, over the 4 bytes limit for a text")
        XCTAssertEqual(problem { _ = try InputFile.read(folder.appendingPathComponent("missing"), limit: 9, what: "a text") },
                       "\(folder.appendingPathComponent("missing").path): no such file")
        XCTAssertEqual(problem { _ = try InputFile.read(folder, limit: 9, what: "a text") },
                       "\(folder.path): is a directory, not a text")
        // A FIFO with no writer would block a plain open or read forever; /dev/zero never ends.
        let fifo = folder.appendingPathComponent("pipe.png")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        for url in [fifo, URL(fileURLWithPath: "/dev/zero")] {
            XCTAssertEqual(problem { _ = try InputFile.read(url, limit: 1 << 20, what: "a PNG file") },
                           "\(url.path): is not a regular file (a FIFO, device or socket)")
            XCTAssertEqual(problem { try InputFile.requireRegular(url, what: "an audio file") },
                           "\(url.path): is not a regular file (a FIFO, device or socket)")
        }
        // A symbolic link to a regular file is read through.
        let link = folder.appendingPathComponent("link.txt")
        try FileManager.default.createSymbolicLink(at: link, withDestinationURL: file)
        XCTAssertEqual(try InputFile.read(link, limit: 5, what: "a text"), Data("hello".utf8))
    }

    /// CSV lists of files (vision and speech): columns by header name in any order (a `label,path` header was read
    /// as a row), quoted fields, LF/CRLF/CR line ends counted as one line each, and one-line errors with the line.
    func testPathListsReadTheirColumnsByNameAndNameTheLineOfAProblem() throws {
        for name in ["a b.wav", "c,d.wav"] { try Data([1]).write(to: folder.appendingPathComponent(name)) }
        func list(_ text: String) throws -> URL {
            let url = folder.appendingPathComponent("list.csv")
            try Data(text.utf8).write(to: url)
            return url
        }
        let expected = [PathList.Row(url: folder.appendingPathComponent("a b.wav"), label: "yes"),
                        PathList.Row(url: folder.appendingPathComponent("c,d.wav"), label: "no, really")]
        for text in ["path,label\na b.wav,yes\n\"c,d.wav\",\"no, really\"\n",
                     "label,path\r\nyes, a b.wav \r\n\r\n\"no, really\",\"c,d.wav\"",
                     "a b.wav,yes\r\"c,d.wav\",\"no, really\",extra\r"] {
            XCTAssertEqual(try PathList.read(try list(text), labelled: true, kind: "audio file"), expected, text)
        }
        XCTAssertEqual(try PathList.read(try list("label,path,id\nyes,a b.wav,1\n"), labelled: false, kind: "file").map(\.url),
                       [folder.appendingPathComponent("a b.wav")])
        let set = try PathList.labelledSet(try list("path,label\na b.wav,yes\n\"c,d.wav\",no\n"), kind: "file")
        XCTAssertEqual(set.classNames, ["no", "yes"])
        XCTAssertEqual(set.labels, [1, 0])
        XCTAssertEqual(set.samples, [folder.appendingPathComponent("a b.wav"), folder.appendingPathComponent("c,d.wav")])
        let path = folder.appendingPathComponent("list.csv").path
        for (text, problem) in [("path,label\r\na b.wav,yes\r\nmissing.wav,no\r\n", "\(path):3: no such audio file 'missing.wav'"),
                                ("path,id\na b.wav,1\n", "\(path):1: a labelled list needs the columns path and label, got 'path,id'"),
                                ("path,label\na b.wav\n", "\(path):2: expected 'path,label', got 'a b.wav'"),
                                ("a b.wav,\n", "\(path):1: empty label"),
                                ("\"a b.wav,yes\n", "\(path):1: unterminated quote"),
                                ("path,label\n\n", "\(path): lists no audio files")] {
            XCTAssertEqual(self.problem { _ = try PathList.read(try list(text), labelled: true, kind: "audio file") }, problem, text)
        }
    }

    /// `cp -p`, `rsync -a` and tar keep size and modification time: the key must follow the bytes.
    func testContentKeyFollowsTheBytesNotTheNameOrTime() throws {
        let a = folder.appendingPathComponent("a.bin"), b = folder.appendingPathComponent("b.bin")
        try Data([1, 2, 3, 4]).write(to: a)
        try Data([1, 2, 3, 4]).write(to: b)
        XCTAssertEqual(InputFile.contentKey(a), InputFile.contentKey(b), "same bytes, same key wherever the file is")
        let time = try FileManager.default.attributesOfItem(atPath: a.path)[.modificationDate] as! Date
        try Data([1, 2, 3, 5]).write(to: a)
        try FileManager.default.setAttributes([.modificationDate: time], ofItemAtPath: a.path)
        XCTAssertNotEqual(InputFile.contentKey(a), InputFile.contentKey(b), "same size and time, other bytes")
        XCTAssertTrue(InputFile.contentKey(folder.appendingPathComponent("missing")).hasPrefix("unreadable|"))
    }

    func testCacheIgnoresAlteredFilesAndRemovesAbandonedTemporaryFiles() throws {
        let cache = FeatureCache(directory: folder)
        let features = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        cache.store("k", ["features": features])
        XCTAssertEqual(cache.load("k")?["features"], features)
        // Same header, one value changed in the data section: the checksum no longer matches.
        let url = folder.appendingPathComponent("k.safetensors")
        var bytes = try Data(contentsOf: url)
        bytes[bytes.count - 1] ^= 0x40
        try bytes.write(to: url)
        XCTAssertNil(cache.load("k"), "an altered cache file is recomputed, not used")
        // A file without a checksum (written before checksums, or by anything else) is not used either.
        try SafeTensors.write(["features": features], to: url)
        XCTAssertNil(cache.load("k"))

        let old = folder.appendingPathComponent(".k.safetensors.tmp-1-abc"), fresh = folder.appendingPathComponent(".j.safetensors.tmp-2-def")
        try Data([0]).write(to: old)
        try Data([0]).write(to: fresh)
        try FileManager.default.setAttributes([.modificationDate: Date(timeIntervalSinceNow: -7200)], ofItemAtPath: old.path)
        cache.store("k", ["features": features])
        XCTAssertFalse(FileManager.default.fileExists(atPath: old.path), "a killed write's file from two hours ago is removed")
        XCTAssertTrue(FileManager.default.fileExists(atPath: fresh.path), "a write that may still be going on is left alone")
    }

    /// The head is allocated from the metadata before its weights load: metadata larger than the weights is refused.
    func testSavedModelMetadataMustMatchItsHeadWeights() throws {
        var rng = RNG(seed: 1)
        let head = ClassifierHead(kind: .linear, inputs: 4, classes: 2, rng: &rng)
        let model = SavedModel(kind: .head, head: head, classNames: ["a", "b"])
        XCTAssertNoThrow(try SavedModel(tensors: model.tensors, metadata: model.metadata, source: "m"))
        var meta = model.metadata
        meta["head_kind"] = "mlp"
        meta["head_inputs"] = String(1 << 20)
        meta["head_hidden"] = String(1 << 20)
        XCTAssertEqual(problem { _ = try SavedModel(tensors: model.tensors, metadata: meta, source: "m") },
                       "m: the model's metadata (an mlp head, 1048576 features in, 2 classes) does not match its head weights (18 numbers, expected 1099516870658)")
    }

    func testPrintableEscapesControlAndBidiCharactersOnly() {
        XCTAssertEqual("plain ünïcödé 東京 \u{1F600}".printable, "plain ünïcödé 東京 \u{1F600}")
        XCTAssertEqual("red\u{1B}[31m\r\nx\t\u{7F}\u{9B}".printable, "red\\u{1B}[31m\\u{D}\\u{A}x\\u{9}\\u{7F}\\u{9B}")
        XCTAssertEqual("abc\u{202E}fed".printable, "abc\\u{202E}fed")
        XCTAssertEqual("\(EngineError.invalidFile("a\u{1B}]0;x\u{7}.png", "no such file"))", "a\\u{1B}]0;x\\u{7}.png: no such file")
    }
}
