import Foundation
import XCTest

/// A saved run applies its own settings (issue 21): made with non-default settings that change what the network
/// sees, it gives the same `evaluate` accuracy and `predict` probabilities whether or not the flags are repeated;
/// a flag that contradicts the run is refused naming both values. Release binaries on fixture slices.
final class RunContractTests: XCTestCase {
    func testVisionImageSize() throws {
        let app = ReleaseApp("vision-tl", model: "efficientnet-lite0/model.safetensors", fixtures: "vision", arguments: ["--threads", "2"])
        try check(app, train: app.folderSlice("fashion/train", classes: 3, perClass: 20),
                  test: app.folderSlice("fashion/test", classes: 3, perClass: 10),
                  file: app.firstFile("fashion/test/" + app.classFolders("fashion/test")[0]),
                  settings: ["--image-size", "96"], conflicting: ["--image-size", "128"], named: ["image_size 128", "image_size 96"])
    }

    func testSpeechPoolingAndClipLength() throws {
        let app = ReleaseApp("speech-tl", model: "speech-embedding/embedding.safetensors", fixtures: "speech", arguments: ["--threads", "2"])
        try check(app, train: app.folderSlice("source/train", classes: 3, perClass: 20),
                  test: app.folderSlice("source/test", classes: 3, perClass: 10),
                  file: app.firstFile("source/test/" + app.classFolders("source/test")[0]),
                  settings: ["--pooling", "mean-max", "--clip-seconds", "2"], conflicting: ["--pooling", "mean"],
                  named: ["pooling mean", "pooling mean-max"])
    }

    func testTextMaxLength() throws {
        let app = ReleaseApp("text-tl", model: "all-MiniLM-L6-v2/model.safetensors", fixtures: "text", arguments: ["--threads", "2"])
        let file = app.work.appendingPathComponent("review.txt")
        try "A generous, inspiring film that unfolds with grace and humor and gradually becomes a testament to faith."
            .write(to: file, atomically: true, encoding: .utf8)
        try check(app, train: app.tableSlice("movies/train.tsv", perLabel: 40), test: app.tableSlice("movies/test.tsv", perLabel: 20),
                  file: file.path, settings: ["--max-length", "16"], conflicting: ["--max-length", "32"],
                  named: ["max_length 32", "max_length 16"])
    }

    func check(_ app: ReleaseApp, train: String, test: String, file: String, settings: [String], conflicting: [String],
               named: [String], line: UInt = #line) throws {
        let run = app.work.appendingPathComponent("contract-run").path
        let made = try app.results(try app.run(["extract", "--train", train, "--test", test, "--no-baseline", "--out", run, "--json"] + settings),
                                   line: line)
        let reported = made.first?["accuracy"] as? Double
        for extra in [[], settings] {
            let evaluated = try app.results(try app.run(["evaluate", "--model", run, "--data", test, "--json"] + extra), line: line)
            XCTAssertEqual(evaluated.first?["accuracy"] as? Double, reported, "evaluate \(extra)", line: line)
        }
        let plain = try app.run(["predict", "--model", run, file, "--json"])
        let repeated = try app.run(["predict", "--model", run, file, "--json"] + settings)
        XCTAssertEqual(plain.status, 0, plain.stderr, line: line)
        XCTAssertEqual(plain.stdout, repeated.stdout, "predict with and without repeating \(settings)", line: line)
        let refused = try app.run(["evaluate", "--model", run, "--data", test] + conflicting)
        XCTAssertNotEqual(refused.status, 0, line: line)
        for n in named { XCTAssertTrue(refused.stderr.contains(n), "\(refused.stderr) names \(n)", line: line) }
        XCTAssertEqual(refused.stderr.split(separator: "\n").count, 1, "one line: \(refused.stderr)", line: line)
        XCTAssertEqual(try app.run(["predict", "--model", run, file] + conflicting).status == 0, false, line: line)
    }
}
