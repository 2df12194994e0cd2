import Foundation
import FuzzChecks
import XCTest

/// Replays every saved fuzz input (seed corpora and crash reproducers in Tests/FuzzCorpus/<harness>/) through
/// the same property checks the fuzz harnesses run (scripts/fuzz), as ordinary tests.
final class FuzzReplayTests: XCTestCase {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("FuzzCorpus")

    func replay(_ harness: String) throws {
        let check = try XCTUnwrap(FuzzChecks.all.first { $0.name == harness }?.check)
        let folder = Self.corpus.appendingPathComponent(harness)
        let files = try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
            .filter { !$0.lastPathComponent.hasPrefix(".") }.sorted { $0.path < $1.path }
        XCTAssertFalse(files.isEmpty, "no corpus in \(folder.path)")
        for file in files {
            let data = try Data(contentsOf: file)
            XCTAssertNoThrow(try check(data), "\(harness)/\(file.lastPathComponent)")
        }
    }

    func testPNG() throws { try replay("png") }
    func testAudio() throws { try replay("audio") }
    func testSafeTensors() throws { try replay("safetensors") }
    func testTextTable() throws { try replay("text-table") }
    func testWordPiece() throws { try replay("wordpiece") }

    /// Every corpus folder has a harness and every harness a corpus folder.
    func testCorpusFoldersMatchHarnesses() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).filter { !$0.hasPrefix(".") }
        XCTAssertEqual(Set(folders), Set(FuzzChecks.all.map(\.name)))
    }

    /// The checks can fail: a property that does not hold is reported, not swallowed.
    func testChecksReportViolations() {
        XCTAssertThrowsError(try FuzzChecks.requireForTesting())
    }
}
