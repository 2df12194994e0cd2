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

/// Folders read alike in every app, and failed runs that do not strand their user (issue 21).
final class RunDirectoryTests: XCTestCase {
    func testNestedClassFoldersAreCountedAndUsed() throws {
        let app = ReleaseApp("vision-tl", model: "efficientnet-lite0/model.safetensors", fixtures: "vision", arguments: ["--threads", "2"])
        let root = app.work.appendingPathComponent("nested")
        let fm = FileManager.default
        // sneaker: 5 images at the top and 15 in batch2/; bag: all 20 in a subfolder; a hidden file is skipped.
        for (name, split) in [("sneaker", 5), ("bag", 0)] {
            let files = app.classFolders("fashion/train/" + name).prefix(20)
            for (i, f) in files.enumerated() {
                let folder = i < split ? root.appendingPathComponent(name) : root.appendingPathComponent(name + "/batch2")
                try fm.createDirectory(at: folder, withIntermediateDirectories: true)
                try fm.createSymbolicLink(atPath: folder.appendingPathComponent(f).path, withDestinationPath: app.fixture("fashion/train/\(name)/\(f)"))
            }
        }
        try Data("not an image".utf8).write(to: root.appendingPathComponent("bag/.hidden.png"))
        let run = app.work.appendingPathComponent("nested-run").path
        let out = try app.run(["extract", "--train", root.path, "--no-baseline", "--out", run])
        XCTAssertEqual(out.status, 0, out.stderr)
        XCTAssertTrue(out.stderr.contains("40 samples, 2 classes (bag 20, sneaker 20)"), out.stderr)
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/run.json"))) as? [String: Any]
        let train = (record?["data"] as? [String: Any])?["train"] as? [String: Any]
        XCTAssertEqual(train?["classes"] as? [String: Int], ["bag": 20, "sneaker": 20])
        // A symbolic link back into the tree is refused with one line, not walked for ever.
        try fm.createSymbolicLink(atPath: root.appendingPathComponent("bag/batch2/loop").path, withDestinationPath: root.appendingPathComponent("bag").path)
        let cycle = try app.run(["extract", "--train", root.path, "--no-baseline"])
        XCTAssertNotEqual(cycle.status, 0)
        XCTAssertTrue(cycle.stderr.contains("folder cycle"), cycle.stderr)
    }

    func testOverwriteAndARunThatCannotContinue() throws {
        let app = ReleaseApp("speech-tl", model: "speech-embedding/embedding.safetensors", fixtures: "speech", arguments: ["--threads", "2"])
        let train = try app.folderSlice("source/train", classes: 3, perClass: 20)
        let run = app.work.appendingPathComponent("overwrite-run").path
        // Five epochs: what is tested is the run folder, not what training reaches.
        let args = ["finetune", "--train", train, "--no-baseline", "--epochs", "5", "--out", run]
        XCTAssertEqual(try app.run(args).status, 0)
        let again = try app.run(args)
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("--overwrite"), again.stderr)
        XCTAssertEqual(try app.run(args + ["--overwrite"]).status, 0)
        // A run killed mid-way, whose data then went away: --resume says why it cannot continue and keeps the
        // checkpoints; the same command is refused (it would lose them) until --overwrite; with the data back,
        // --resume finishes the run.
        let killed = app.work.appendingPathComponent("killed-run").path
        let moved = try app.folderSlice("source/test", classes: 3, perClass: 20)
        let killedArgs = ["finetune", "--train", moved, "--no-baseline", "--epochs", "5", "--out", killed]
        let died = try CLITests.run(at: app.binary, killedArgs + app.arguments, environment: [
            "TL_MODELS_DIR": app.modelsDirectory, "TL_CACHE_DIR": app.cache.path,
            "TL_TEST_KILL_AFTER_CHECKPOINTS": "2"])
        XCTAssertNotEqual(died.status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: killed + ".partial"))
        try FileManager.default.removeItem(atPath: moved)
        let resumed = try app.run(["finetune", "--resume", killed])
        XCTAssertNotEqual(resumed.status, 0)
        XCTAssertTrue(resumed.stderr.contains("cannot continue now and is kept"), resumed.stderr)
        XCTAssertEqual(resumed.stderr.split(separator: "\n").count, 1, resumed.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: killed + ".partial"), "the checkpoints are kept for a later --resume")
        _ = try app.folderSlice("source/test", classes: 3, perClass: 20)
        let refused = try app.run(killedArgs)
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("an unfinished run is there; continue it with --resume"), refused.stderr)
        let finished = try app.run(["finetune", "--resume", killed])
        XCTAssertEqual(finished.status, 0, finished.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: killed + "/models/finetune.safetensors"))
    }
}
