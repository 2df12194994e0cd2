import Foundation
import FuzzChecks
import SpeechTL
import TransferEngine
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
    func testJPEG() throws { try replay("jpeg") }
    func testAudio() throws { try replay("audio") }
    func testSafeTensors() throws { try replay("safetensors") }
    func testTextTable() throws { try replay("text-table") }
    func testWordPiece() throws { try replay("wordpiece") }

    /// Every corpus folder has a harness and every harness a corpus folder.
    func testCorpusFoldersMatchHarnesses() throws {
        let folders = try FileManager.default.contentsOfDirectory(atPath: Self.corpus.path).filter { !$0.hasPrefix(".") }
        XCTAssertEqual(Set(folders), Set(FuzzChecks.all.map(\.name)))
    }

    /// The in-memory reader (sf_open_virtual) gives exactly what the file reader gives.
    func testAudioFromBytesMatchesFile() throws {
        let root = Self.corpus.deletingLastPathComponent().deletingLastPathComponent()
        for file in ["Fixtures/speech/target/test/right/0004.flac", "Tests/FuzzCorpus/audio/wav-pcm24-22k.wav",
                     "Tests/FuzzCorpus/audio/ogg-vorbis.ogg"] {
            let url = root.appendingPathComponent(file)
            XCTAssertEqual(try AudioFile.read(data: Data(contentsOf: url), name: url.path), try AudioFile.read(url), file)
        }
    }

    /// What fuzz-audio found is refused with a clear error now.
    func testFuzzFoundAudioFilesAreErrors() throws {
        for (file, words) in [("crash-float-power-overflow.wav", "times full scale"), ("timeout-rate-720897.wav", "cannot be converted")] {
            let data = try Data(contentsOf: Self.corpus.appendingPathComponent("audio/" + file))
            XCTAssertThrowsError(try AudioFile.read(data: data, name: file)) { error in
                XCTAssertTrue("\(error)".hasPrefix(file + ": ") && "\(error)".contains(words), "\(error)")
            }
        }
    }

    /// The checks can fail: a property that does not hold is reported, not swallowed.
    func testChecksReportViolations() {
        XCTAssertThrowsError(try FuzzChecks.requireForTesting())
    }
}
