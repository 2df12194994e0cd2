import XCTest
import TransferEngine
@testable import TextTL

/// Readers for CSV, TSV, JSON Lines and folders of .txt files, and their error messages.
final class TextTableTests: XCTestCase {
    var directory: URL!

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("TextTableTests-\(ProcessInfo.processInfo.processIdentifier)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    @discardableResult
    func write(_ name: String, _ bytes: [UInt8]) throws -> URL {
        let url = directory.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try Data(bytes).write(to: url)
        return url
    }

    @discardableResult
    func write(_ name: String, _ text: String) throws -> URL { try write(name, Array(text.utf8)) }

    /// Asserts that `body` throws `invalidFile` at `file:line` with a message containing `contains`.
    func expectInvalidFile(_ url: URL, line: Int?, contains: String, _ body: () throws -> Void,
                           file: StaticString = #filePath, testLine: UInt = #line) {
        XCTAssertThrowsError(try body(), file: file, line: testLine) { error in
            guard case let EngineError.invalidFile(location, problem)? = error as? EngineError else {
                return XCTFail("expected invalidFile, got \(error)", file: file, line: testLine)
            }
            XCTAssertEqual(location, line.map { "\(url.path):\($0)" } ?? url.path, file: file, line: testLine)
            XCTAssertTrue(problem.contains(contains), "'\(problem)' lacks '\(contains)'", file: file, line: testLine)
        }
    }

    func testCSVQuotingNewlinesCRLFAndBOM() throws {
        let csv = "\u{FEFF}id,text,label\r\n"
            + "1,\"Great, really \"\"great\"\" film\",pos\r\n"
            + "2,\"two\r\nlines\",neg\r\n"
            + "\r\n"
            + "3,plain 5\" screen,pos\n"
            + "4,\"\",neg"
        let url = try write("reviews.csv", csv)
        expectInvalidFile(url, line: 7, contains: "empty text") { _ = try TextTable.read(url) }
        try write("reviews.csv", String(csv.dropLast("4,\"\",neg".count)) + "4,last,neg")
        let rows = try TextTable.read(url)
        XCTAssertEqual(rows.map(\.text), ["Great, really \"great\" film", "two\r\nlines", "plain 5\" screen", "last"])
        XCTAssertEqual(rows.map(\.label), ["pos", "neg", "pos", "neg"])
        XCTAssertEqual(rows.map(\.source), [2, 3, 6, 7].map { "\(url.path):\($0)" }, "the line each record starts on")
        XCTAssertEqual(try TextTable.read(url, labelColumn: nil).map(\.label), [nil, nil, nil, nil])
        XCTAssertEqual(try TextTable.read(url, labelColumn: 2, textColumn: 1).map(\.label), ["pos", "neg", "pos", "neg"])
    }

    func testTSVHasNoQuoting() throws {
        let url = try write("a.tsv", "label\ttext\r\npositive\t\"Great\" product, 5\" screen\r\nnegative\t\"  unbalanced\r\n")
        let rows = try TextTable.read(url)
        XCTAssertEqual(rows.map(\.text), ["\"Great\" product, 5\" screen", "\"  unbalanced"])
        XCTAssertEqual(rows.map(\.label), ["positive", "negative"])
        XCTAssertEqual(rows.last?.source, "\(url.path):3")
        // Quoted TSV (pandas) is read as CSV with a tab delimiter.
        let quoted = try write("q.tsv", "label\ttext\npos\t\"tab\there\"\n")
        XCTAssertEqual(try TextTable.read(quoted, format: .csv(delimiter: 9)).map(\.text), ["tab\there"])
    }

    func testHeaderlessTableByIndex() throws {
        let url = try write("raw.tsv", "1\t2.5\tnice\n2\t-3\tawful\n")
        let rows = try TextTable.read(url, labelColumn: 1, textColumn: 2, hasHeader: false)
        XCTAssertEqual(rows.map(\.text), ["nice", "awful"])
        XCTAssertEqual(rows.map(\.label), ["2.5", "-3"])
        XCTAssertThrowsError(try TextTable.read(url, hasHeader: false))
    }

    func testUnlabelledTableWithOnlyText() throws {
        let url = try write("u.tsv", "text\nfirst\nsecond\n")
        XCTAssertEqual(try TextTable.read(url, labelColumn: nil).map(\.text), ["first", "second"])
        expectInvalidFile(url, line: 1, contains: "no column 'label' (columns: text)") { _ = try TextTable.read(url) }
    }

    func testJSONLines() throws {
        let url = try write("d.jsonl", "{\"text\": \"good \\u00e9\", \"label\": \"pos\"}\r\n\n{\"label\": 1, \"text\": \"bad\", \"x\": null}\n")
        let rows = try TextTable.read(url)
        XCTAssertEqual(rows.map(\.text), ["good é", "bad"])
        XCTAssertEqual(rows.map(\.label), ["pos", "1"])
        XCTAssertEqual(rows.map(\.source), ["\(url.path):1", "\(url.path):3"])
        let broken = try write("b.jsonl", "{\"text\": \"ok\"}\n{\"text\": \"missing brace\"\n")
        expectInvalidFile(broken, line: 2, contains: "not valid JSON") { _ = try TextTable.read(broken, labelColumn: nil) }
        expectInvalidFile(broken, line: 1, contains: "no key 'label' (keys: text)") { _ = try TextTable.read(broken) }
        let null = try write("n.jsonl", "{\"text\": \"ok\", \"label\": null}\n")
        expectInvalidFile(null, line: 1, contains: "'label' is null: every record needs a label") { _ = try TextTable.read(null) }
        // UTF-16 without a byte-order mark is valid UTF-8 (NUL after every ASCII byte): refused, naming UTF-16.
        let utf16 = try write("u16.csv", Array("label,text\npos,fine\n".data(using: .utf16LittleEndian)!))
        expectInvalidFile(utf16, line: 1, contains: "holds a NUL byte (offset 1): UTF-16 or a binary file? save the file as UTF-8") { _ = try TextTable.read(utf16) }
        // true and false are the labels "true" and "false" (not "1" and "0", which numbers still give).
        let flags = try write("t.jsonl", "{\"text\": \"a\", \"label\": true}\n{\"text\": \"b\", \"label\": false}\n{\"text\": \"c\", \"label\": 0}\n")
        XCTAssertEqual(try TextTable.read(flags).map(\.label), ["true", "false", "0"])
    }

    func testFolderPerLabel() throws {
        try write("f/pos/b.txt", "Loved it.\n")
        try write("f/pos/a.txt", "\u{FEFF}Great\r\nfilm")
        try write("f/neg/c.txt", "Boring.")
        try write("f/neg/notes.md", "ignored")
        try write("f/README.txt", "top-level files have no label")
        let folder = directory.appendingPathComponent("f")
        let rows = try TextTable.read(folder)
        XCTAssertEqual(rows.map(\.label), ["neg", "pos", "pos"])
        XCTAssertEqual(rows.map(\.text), ["Boring.", "Great\r\nfilm", "Loved it.\n"])
        XCTAssertEqual(rows[1].source, folder.appendingPathComponent("pos/a.txt").path)
        XCTAssertEqual(try TextTable.read(folder, labelColumn: nil).count, 4, "unlabelled: every .txt below")
        let flat = directory.appendingPathComponent("f/pos")
        expectInvalidFile(flat, line: nil, contains: "one sub-folder per label") { _ = try TextTable.read(flat) }
        let empty = try write("f/neg/empty.txt", " \n")
        expectInvalidFile(empty, line: 1, contains: "empty text") { _ = try TextTable.read(folder) }
    }

    func testInvalidUTF8ReportsLine() throws {
        var bytes = Array("label,text\npos,fine\nneg,caf".utf8)
        bytes += [0xE9]   // Latin-1 é
        bytes += Array(" au lait\n".utf8)
        let url = try write("latin1.csv", bytes)
        expectInvalidFile(url, line: 3, contains: "invalid UTF-8 (byte 0xE9") { _ = try TextTable.read(url) }
        let bad = try write("f2/pos/x.txt", [0x61, 0x0A, 0x62, 0xED, 0xA0, 0x80])   // an encoded surrogate
        expectInvalidFile(bad, line: 2, contains: "invalid UTF-8") { _ = try TextTable.read(self.directory.appendingPathComponent("f2")) }
        XCTAssertNil(TextTable.firstInvalidUTF8(Array("ok é € 😀".utf8)))
        XCTAssertEqual(TextTable.firstInvalidUTF8([0x61, 0xC0, 0x80]), 1, "overlong")
        XCTAssertEqual(TextTable.firstInvalidUTF8([0xF4, 0x90, 0x80, 0x80]), 0, "past U+10FFFF")
        XCTAssertEqual(TextTable.firstInvalidUTF8([0x61, 0xE2, 0x82]), 1, "truncated")
    }

    func testMissingColumnListsColumns() throws {
        let url = try write("m.csv", "sentiment,review\npos,good\n")
        expectInvalidFile(url, line: 1, contains: "no column 'text' (columns: sentiment, review)") { _ = try TextTable.read(url) }
        XCTAssertEqual(try TextTable.read(url, labelColumn: "Sentiment", textColumn: "review").map(\.label), ["pos"],
                       "names fall back to a case-insensitive match")
        expectInvalidFile(url, line: 1, contains: "no column #5") { _ = try TextTable.read(url, labelColumn: 0, textColumn: 5) }
    }

    func testEmptyTextEmptyLabelAndFieldCount() throws {
        let empty = try write("e.tsv", "label\ttext\npos\tok\nneg\t   \n")
        expectInvalidFile(empty, line: 3, contains: "empty text in column 'text'") { _ = try TextTable.read(empty) }
        let noLabel = try write("l.tsv", "label\ttext\n\tok\n")
        expectInvalidFile(noLabel, line: 2, contains: "empty label") { _ = try TextTable.read(noLabel) }
        let fields = try write("n.tsv", "label\ttext\npos\tok\nneg\tsplit\tby a tab\n")
        expectInvalidFile(fields, line: 3, contains: "3 fields, expected 2") { _ = try TextTable.read(fields) }
    }

    func testUnterminatedQuoteReportsWhereItOpened() throws {
        let url = try write("q.csv", "label,text\npos,fine\nneg,\"never closed\nmore text\n")
        expectInvalidFile(url, line: 3, contains: "unterminated quote") { _ = try TextTable.read(url) }
        let after = try write("t.csv", "label,text\npos,\"quoted\" then text\n")
        expectInvalidFile(after, line: 2, contains: "after the closing quote") { _ = try TextTable.read(after) }
    }

    func testUnknownExtensionAndMissingPath() throws {
        let url = try write("data.xlsx", "x")
        expectInvalidFile(url, line: nil, contains: "unknown table format") { _ = try TextTable.read(url) }
        let missing = directory.appendingPathComponent("nope.csv")
        expectInvalidFile(missing, line: nil, contains: "no such file") { _ = try TextTable.read(missing) }
    }
}
