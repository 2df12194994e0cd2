import Foundation
import XCTest

/// text-tl end to end on the fixtures, through its release binary (see `ReleaseApp`).
///
/// What transfer must show on the movie/Amazon sentiment fixtures, with margins a broken pipeline cannot meet:
/// frozen MiniLM features beat the bag-of-n-grams trained from scratch by 5 points at 100 labels per class;
/// fine-tuning the top two layers keeps that lead; adaptation to Amazon beats source-only, and the
/// target-trained oracle sits above both. Plus folders of .txt files and JSON Lines, the run directory,
/// evaluate, predict, and one clear line naming file and line for broken input.
final class TextAppTests: XCTestCase, ReleaseAppTests {
    static let app = ReleaseApp("text-tl", model: "all-MiniLM-L6-v2/model.safetensors", fixtures: "text", arguments: ["--threads", "2"])

    func text(_ arguments: [String]) throws -> CLITests.Output { try Self.app.run(arguments) }

    var moviesTrain: String { Self.app.fixtures.appendingPathComponent("movies/train.tsv").path }
    var moviesTest: String { Self.app.fixtures.appendingPathComponent("movies/test.tsv").path }

    /// Two classes, about balanced: chance is 0.5. The bag of n-grams reaches ~0.61 with 100 labels per class;
    /// frozen MiniLM features ~0.71, fine-tuning the top two layers about the same.
    func testTransferBeatsScratchAt100LabelsPerClass() throws {
        let extract = try results(try text(["extract", "--train", moviesTrain, "--test", moviesTest, "--labels-per-class", "100", "--json"]))
        let scratch = accuracy(extract, "scratch", labels: 100), frozen = accuracy(extract, "extract", labels: 100)
        let tuned = try results(try text(["finetune", "--train", moviesTrain, "--test", moviesTest, "--labels-per-class", "100",
                                          "--no-baseline", "--json"]))
        let finetune = accuracy(tuned, "finetune", labels: 100)
        print("text, 100 labels per class: scratch \(scratch), extract \(frozen), finetune \(finetune)")
        XCTAssertGreaterThan(scratch, 0.55, "the from-scratch baseline learns something")
        XCTAssertGreaterThan(frozen, 0.66)
        XCTAssertGreaterThan(frozen, scratch + 0.05)
        XCTAssertGreaterThan(finetune, scratch + 0.05)
    }

    /// movies -> Amazon on frozen features: source-only 0.742, AdaBN 0.749, pseudo-labelling (the best method
    /// here) 0.762, oracle 0.785 (externally 0.70 / 0.78). The demo runs every method; DANN and CORAL do not help
    /// on this shift (0.729, 0.681), so the test runs the two that do.
    func testAdaptationBeatsSourceOnlyOnAmazon() throws {
        let rows = try results(try text(["adapt", "--source", moviesTrain,
                                         "--target", Self.app.fixtures.appendingPathComponent("amazon/unlabelled.tsv").path,
                                         "--target-test", Self.app.fixtures.appendingPathComponent("amazon/test.tsv").path,
                                         "--method", "source-only,adabn,pseudo", "--level", "features", "--json"]))
        let base = accuracy(rows, "source-only", level: "features")
        let best = max(accuracy(rows, "adabn", level: "features"), accuracy(rows, "pseudo", level: "features"))
        let oracle = accuracy(rows, "oracle")
        print("text, movies -> amazon: source-only \(base), best of adabn/pseudo \(best), oracle \(oracle)")
        XCTAssertGreaterThan(base, 0.66, "movie sentiment transfers to Amazon (majority class: 0.586)")
        XCTAssertGreaterThan(best, base + 0.01)
        XCTAssertGreaterThan(oracle, base + 0.02)
    }

    /// Without target labels, as a user adapts: the movie snippets' classes do not form neighbourhoods in MiniLM's
    /// frozen features (nearest-neighbour agreement 0.36; the digit and speech sources 0.79-0.97), so `adapt` on
    /// those features keeps source-only as its default model and says why, though the ensemble would pick a method
    /// (on the development shifts every feature-level method lost to source-only on some sentiment run). The
    /// default `--level auto` goes on to fine-tune end to end here (about 14 minutes with every method on this
    /// shift, measured in scripts/adaptation-shifts; the toy app's tests cover that path).
    func testAdaptOnFrozenFeaturesKeepsSourceOnlyOnTheSentimentShiftAndSaysWhy() throws {
        let out = try text(["adapt", "--source", moviesTrain,
                            "--target", Self.app.fixtures.appendingPathComponent("amazon/unlabelled.tsv").path,
                            "--method", "source-only,adabn,pseudo", "--level", "features", "--json"])
        _ = try results(out)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
        let model = try XCTUnwrap(object["default_model"] as? [String: Any])
        XCTAssertEqual(model["id"] as? String, "source-only-features")
        let reason = model["reason"] as? String ?? ""
        XCTAssertTrue(reason.contains("do not form neighbourhoods") && reason.contains("agreement 0.3"), reason)
    }

    /// A folder per label of .txt files and JSON Lines, a run directory, evaluate and predict on a .txt file.
    func testFoldersJSONLinesRunDirectoryEvaluateAndPredict() throws {
        let data = Self.app.work.appendingPathComponent("small")
        let fm = FileManager.default
        try? fm.removeItem(at: data)
        let positive = ["a wonderful, moving film", "great acting and a clever story", "I loved every minute of it",
                        "superb, funny and warm", "a delight from start to finish", "beautifully shot and deeply felt"]
        let negative = ["a dull, lifeless mess", "boring and far too long", "I hated every minute of it",
                        "clumsy, cheap and tiresome", "a waste of a good cast", "flat jokes and a silly plot"]
        for (label, texts) in [("pos", positive), ("neg", negative)] {
            let dir = data.appendingPathComponent("train/\(label)")
            try fm.createDirectory(at: dir, withIntermediateDirectories: true)
            for (i, t) in texts.enumerated() { try t.write(to: dir.appendingPathComponent("\(i).txt"), atomically: true, encoding: .utf8) }
        }
        let jsonl = data.appendingPathComponent("test.jsonl")
        try ["{\"text\": \"what a lovely, touching movie\", \"label\": \"pos\"}", "{\"text\": \"tedious and painful to sit through\", \"label\": \"neg\"}",
             "{\"label\": \"pos\", \"text\": \"brilliant and funny\"}", "{\"text\": \"awful, just awful\", \"label\": \"neg\"}"]
            .joined(separator: "\n").write(to: jsonl, atomically: true, encoding: .utf8)
        let run = Self.app.work.appendingPathComponent("run-small").path
        try? fm.removeItem(atPath: run)
        let r = try text(["extract", "--train", data.appendingPathComponent("train").path, "--test", jsonl.path, "--no-baseline",
                          "--out", run, "--json"])
        let rows = try results(r)
        XCTAssertGreaterThanOrEqual(accuracy(rows, "extract"), 0.75, "obvious sentiment from 12 examples")
        for file in ["run.json", "metrics.json", "models/extract.safetensors"] {
            XCTAssertTrue(fm.fileExists(atPath: run + "/" + file), file)
        }
        let e = try results(try text(["evaluate", "--model", run, "--data", jsonl.path, "--json"]))
        XCTAssertEqual(e.first?["accuracy"] as? Double ?? -1, accuracy(rows, "extract"), accuracy: 1e-9)
        let note = data.appendingPathComponent("note.txt")
        try "An absolute joy: I laughed and cried.\n".write(to: note, atomically: true, encoding: .utf8)
        let p = try text(["predict", "--model", run, "--top", "2", note.path])
        XCTAssertEqual(p.status, 0, p.stderr)
        let line = p.stdout.split(separator: "\n")
        XCTAssertEqual(line.count, 1, p.stdout)
        XCTAssertTrue(line.first?.contains("note.txt") == true && line.first?.contains("pos ") == true, p.stdout)
        let predicted = line.first?.split(separator: "\t").dropFirst().first.map(String.init) ?? ""
        XCTAssertTrue(predicted.hasPrefix("pos"), "top label for a joyful note: \(p.stdout)")
    }

    func testBadInputIsOneLineNamingFileAndLine() throws {
        let bad = Self.app.work.appendingPathComponent("bad")
        try FileManager.default.createDirectory(at: bad, withIntermediateDirectories: true)
        let emptyText = bad.appendingPathComponent("empty.tsv")
        try "label\ttext\npos\tfine\nneg\t   \n".write(to: emptyText, atomically: true, encoding: .utf8)
        let noColumn = bad.appendingPathComponent("columns.csv")
        try "label,review\npos,fine\nneg,bad\n".write(to: noColumn, atomically: true, encoding: .utf8)
        let latin1 = bad.appendingPathComponent("latin1.tsv")
        try Data(Array("label\ttext\npos\tfine\nneg\tna".utf8) + [0xEF] + Array("ve\n".utf8)).write(to: latin1)  // Latin-1 ï
        let out = bad.appendingPathComponent("run").path
        let cases: [(String, String)] = [
            (emptyText.path, "empty.tsv:3: empty text"),
            (noColumn.path, "columns.csv:1: no column 'text' (columns: label, review)"),
            (latin1.path, "latin1.tsv:3: invalid UTF-8"),
        ]
        let sameColumn = try text(["check-data", moviesTest, "--label-column", "text"])
        XCTAssertNotEqual(sameColumn.status, 0)
        XCTAssertTrue(sameColumn.stderr.contains("--label-column and --text-column are the same column ('text')"), sameColumn.stderr)
        for (file, message) in cases {
            let r = try text(["extract", "--train", file, "--test", moviesTest, "--out", out])
            XCTAssertNotEqual(r.status, 0, file)
            let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(message), "expected '\(message)' in: \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out), "no run directory after a failure")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".partial"))
        }
    }
}
