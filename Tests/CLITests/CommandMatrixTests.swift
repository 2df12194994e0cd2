import Foundation
import XCTest

/// Every subcommand of every app as users call it: first with only its required options, then with each
/// optional input (`--test`, `--target-test`, `--out`, `--labels-per-class`, `--level`) left out in turn, on small
/// slices of the fixtures (release binaries, see `ReleaseApp`). Each run must exit 0 and leave a run that the next
/// command of a user's flow (`evaluate`, `predict`, `info`) accepts. A test set only reports: a run made without it
/// holds the same model as one made with it, and `adapt` picks the same default model with or without
/// `--target-test`.
final class CommandMatrixTests: XCTestCase {
    /// Where the slices of one app's fixtures are.
    struct Slices {
        var train: String, test: String, source: String, target: String, targetTest: String
        /// One input file for `predict`.
        var file: String
        /// A label budget that still leaves a validation split (at least 50 training samples).
        var labelsPerClass = 18
    }

    func testVision() throws {
        let app = ReleaseApp("vision-tl", model: "efficientnet-lite0/model.safetensors", fixtures: "vision", arguments: ["--threads", "2"])
        let s = try Slices(train: app.folderSlice("fashion/train", classes: 3, perClass: 20),
                           test: app.folderSlice("fashion/test", classes: 3, perClass: 10),
                           source: app.folderSlice("mnist/train", classes: 3, perClass: 20),
                           target: app.flatSlice("optdigits/unlabelled", count: 40),
                           targetTest: app.folderSlice("optdigits/test", classes: 3, perClass: 10),
                           file: app.firstFile("fashion/test/\(app.classFolders("fashion/test")[0])"))
        try matrix(app, s)
        // The issue's case on the whole task: 10 labels per class, with and without --test.
        try sameModelWithAndWithoutTest(app, command: "extract", train: app.fixture("fashion/train"), test: app.fixture("fashion/test"),
                                        extra: ["--labels-per-class", "10"])
    }

    func testSpeech() throws {
        let app = ReleaseApp("speech-tl", model: "speech-embedding/embedding.safetensors", fixtures: "speech", arguments: ["--threads", "2"])
        let s = try Slices(train: app.folderSlice("source/train", classes: 3, perClass: 20),
                           test: app.folderSlice("source/test", classes: 3, perClass: 10),
                           source: app.folderSlice("source/train", classes: 3, perClass: 20),
                           target: app.flatSlice("target/unlabelled", count: 40),
                           targetTest: app.folderSlice("target/test", classes: 3, perClass: 10),
                           file: app.firstFile("source/test/\(app.classFolders("source/test")[0])"))
        try matrix(app, s)
        try sameModelWithAndWithoutTest(app, command: "extract", train: app.fixture("source/train"), test: app.fixture("source/test"),
                                        extra: ["--labels-per-class", "5"])
    }

    func testText() throws {
        let app = ReleaseApp("text-tl", model: "all-MiniLM-L6-v2/model.safetensors", fixtures: "text", arguments: ["--threads", "2"])
        let file = app.work.appendingPathComponent("review.txt")
        try "A generous, inspiring film.".write(to: file, atomically: true, encoding: .utf8)
        let s = try Slices(train: app.tableSlice("movies/train.tsv", perLabel: 40), test: app.tableSlice("movies/test.tsv", perLabel: 20),
                           source: app.tableSlice("movies/train.tsv", perLabel: 40),
                           target: app.tableSlice("amazon/unlabelled.tsv", perLabel: 50),
                           targetTest: app.tableSlice("amazon/test.tsv", perLabel: 20), file: file.path, labelsPerClass: 30)
        try matrix(app, s)
        // 10 labels per class, 2 classes: 20 samples, too few to hold out a validation split (Create ML's rule):
        // nothing is measured without --test, and the model is still the same.
        try sameModelWithAndWithoutTest(app, command: "extract", train: app.fixture("movies/train.tsv"), test: app.fixture("movies/test.tsv"),
                                        extra: ["--labels-per-class", "10"], evalSet: "none")
    }

    // MARK: The matrix

    func matrix(_ app: ReleaseApp, _ s: Slices, file: StaticString = #filePath, line: UInt = #line) throws {
        func ok(_ args: [String]) throws -> CLITests.Output {
            let out = try app.run(args)
            XCTAssertEqual(out.status, 0, "\(app.name) \(args.joined(separator: " ")): \(out.stderr.suffix(2000))", file: file, line: line)
            return out
        }
        func run(_ name: String) -> String { app.work.appendingPathComponent("matrix-\(name)").path }
        // Required options only.
        _ = try ok(["extract", "--train", s.train])
        _ = try ok(["features", "--data", s.train, "--out", run("features")])
        _ = try ok(["extract", "--train", run("features")])
        _ = try ok(["finetune", "--train", s.train])
        let adaptOnly = try ok(["adapt", "--source", s.source, "--target", s.target])
        XCTAssertTrue(adaptOnly.stdout.contains("default model:"), adaptOnly.stdout, file: file, line: line)
        _ = try ok(["info"])
        // Each optional input left out in turn; every saved run goes on to evaluate, predict and info.
        try sameModelWithAndWithoutTest(app, command: "extract", train: s.train, test: s.test, extra: [], out: run("extract"),
                                        baseline: true)
        try sameModelWithAndWithoutTest(app, command: "finetune", train: s.train, test: s.test,
                                        extra: ["--labels-per-class", String(s.labelsPerClass)] + Self.shortBudget, out: run("finetune"))
        _ = try ok(["extract", "--train", s.train, "--test", s.test, "--labels-per-class", "15", "--no-baseline"])   // no --out
        for r in [run("extract"), run("finetune")] { try followUp(app, run: r, data: s.test, file: s.file) }
        // adapt: without --target-test and --level (features), then end to end with it: the same default model
        // and the same per-method accuracies either way.
        try sameAdaptationWithAndWithoutTargetTest(app, s, level: nil, methods: nil, out: run("adapt"))
        try sameAdaptationWithAndWithoutTargetTest(app, s, level: "end-to-end", methods: "source-only,adabn,mcc",
                                                   extra: Self.shortBudget, out: run("adapt-e2e"))
    }

    /// Five epochs, for the runs above that check what a test set may and may not change rather than what
    /// training reaches (early stopping can still end a run sooner). On these slices the default budget is at
    /// least 150 steps of 2-3 batches, 50-75 epochs: with it, these runs took 10 of this file's 16 minutes on a
    /// 2-core AVX2 host (with 10 epochs, end-to-end adaptation on the text slices still took 2 minutes).
    /// `finetune` and `adapt` with only their required options keep the default budget above; end-to-end
    /// adaptation with it runs in the toy app's tests (every method) and in the demos.
    static let shortBudget = ["--epochs", "5"]

    /// `evaluate`, `predict` and `info` accept a saved run.
    func followUp(_ app: ReleaseApp, run: String, data: String, file input: String,
                  file: StaticString = #filePath, line: UInt = #line) throws {
        for args in [["evaluate", "--model", run, "--data", data], ["predict", "--model", run, input], ["info", "--model", run]] {
            let out = try app.run(args)
            XCTAssertEqual(out.status, 0, "\(app.name) \(args.joined(separator: " ")): \(out.stderr.suffix(2000))", file: file, line: line)
            XCTAssertFalse(out.stdout.isEmpty, file: file, line: line)
        }
        let info = try app.run(["info", "--model", run])
        XCTAssertTrue(info.stdout.contains("default model"), info.stdout, file: file, line: line)
        try errorAnalysis(app, run: run, data: data, input: input, file: file, line: line)
        try exported(app, run: run, data: data, input: input, file: file, line: line)
        let checked = try app.run(["check-data", data, "--json"])
        XCTAssertEqual(checked.status, 0, "check-data of a usable set: \(checked.stdout) \(checked.stderr)", file: file, line: line)
        let report = try JSONSerialization.jsonObject(with: Data(checked.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(report?["usable"] as? Bool, true, file: file, line: line)
        XCTAssertNotNil((report?["sets"] as? [[String: Any]])?.first?["sizes"], "sizes of \(app.name) samples", file: file, line: line)
    }

    /// `evaluate --out` writes a prediction per input that agrees with the accuracy it reports, and the confused
    /// pairs; `predict --csv --threshold` writes what it prints, "unsure" exactly below the threshold.
    func errorAnalysis(_ app: ReleaseApp, run: String, data: String, input: String, file: StaticString, line: UInt) throws {
        let dir = app.work.appendingPathComponent("analysis-\(URL(fileURLWithPath: run).lastPathComponent)")
        let evaluated = try app.results(try app.run(["evaluate", "--model", run, "--data", data, "--out", dir.path, "--json"]), file: file, line: line)
        let predictions = try Self.csv(dir.appendingPathComponent("predictions.csv"))
        XCTAssertEqual(Array(predictions[0].prefix(5)), ["input", "true", "predicted", "probability", "loss"], file: file, line: line)
        let rows = predictions.dropFirst()
        let correct = rows.filter { $0[1] == $0[2] }.count
        XCTAssertEqual(Double(correct) / Double(rows.count), evaluated.first?["accuracy"] as? Double ?? -1, accuracy: 1e-9, file: file, line: line)
        XCTAssertTrue(rows.allSatisfy { Double($0[4])! >= 0 && !$0[4].hasPrefix("-") && $0[2] == $0[5] }, "loss >= 0 (not -0.000000), top1 = predicted", file: file, line: line)
        let confusions = try Self.csv(dir.appendingPathComponent("confusions.csv")).dropFirst()
        XCTAssertEqual(confusions.map { Int($0[2])! }.reduce(0, +), rows.count - correct, file: file, line: line)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir.appendingPathComponent("metrics.json").path), file: file, line: line)

        let csv = app.work.appendingPathComponent("predict-\(URL(fileURLWithPath: run).lastPathComponent).csv")
        let threshold = 0.9
        let out = try app.run(["predict", "--model", run, input, "--csv", csv.path, "--threshold", String(threshold), "--json"])
        XCTAssertEqual(out.status, 0, out.stderr, file: file, line: line)
        let printed = (try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])?["predictions"] as? [[String: Any]] ?? []
        let written = try Self.csv(csv).dropFirst()
        XCTAssertEqual(written.count, printed.count, file: file, line: line)
        XCTAssertFalse(written.isEmpty, file: file, line: line)
        for (row, json) in zip(written, printed) {
            XCTAssertEqual(row[1], json["label"] as? String, file: file, line: line)
            XCTAssertEqual(row[1], Double(row[2])! < threshold ? "unsure" : row[3], "unsure exactly below the threshold", file: file, line: line)
        }
    }

    /// `export` makes a folder that predicts and evaluates exactly as the run does, with no models folder at all.
    func exported(_ app: ReleaseApp, run: String, data: String, input: String, file: StaticString, line: UInt) throws {
        let dir = app.work.appendingPathComponent("exported-\(URL(fileURLWithPath: run).lastPathComponent)").path
        try? FileManager.default.removeItem(atPath: dir)
        let export = try app.run(["export", "--model", run, "--out", dir])
        XCTAssertEqual(export.status, 0, export.stderr, file: file, line: line)
        let card = (try? String(contentsOfFile: dir + "/README.md", encoding: .utf8)) ?? ""
        XCTAssertTrue(card.contains("## Data the run read") && card.contains("predict  --model"), card, file: file, line: line)
        let noModels = app.work.appendingPathComponent("no-models").path   // does not exist
        for args in [["predict", input, "--json"], ["evaluate", "--data", data, "--json"]] {
            let fromRun = try app.run([args[0], "--model", run] + args.dropFirst())
            let fromExport = try CLITests.run(at: app.binary, [args[0], "--model", dir] + args.dropFirst() + app.arguments,
                                              environment: ["TL_MODELS_DIR": noModels, "TL_CACHE_DIR": noModels + "-cache"])
            XCTAssertEqual(fromExport.status, 0, fromExport.stderr, file: file, line: line)
            XCTAssertEqual(fromExport.stdout, fromRun.stdout, "\(app.name) \(args[0]) of the export without models", file: file, line: line)
        }
    }

    /// Rows of an RFC 4180 CSV file (quoted fields may hold commas, quotes and line breaks).
    static func csv(_ url: URL) throws -> [[String]] {
        let text = try String(contentsOf: url, encoding: .utf8)
        var rows: [[String]] = [], row: [String] = [], field = "", quoted = false
        var chars = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar? = nil
        while let c = pending ?? chars.next() {
            pending = nil
            if quoted {
                if c == "\"" {
                    if let n = chars.next() { if n == "\"" { field.unicodeScalars.append("\"") } else { quoted = false; pending = n } } else { quoted = false }
                } else { field.unicodeScalars.append(c) }
            } else if c == "\"" { quoted = true
            } else if c == "," { row.append(field); field = ""
            } else if c == "\n" { row.append(field); rows.append(row); row = []; field = ""
            } else { field.unicodeScalars.append(c) }
        }
        if !field.isEmpty || !row.isEmpty { row.append(field); rows.append(row) }
        return rows
    }

    /// A run made without `--test` reports on its validation split and saves the model that the same run with
    /// `--test` saves: `evaluate` of it on the test set gives exactly the accuracy the `--test` run reported.
    /// The from-scratch baseline runs only with `baseline`, and then only in the run without `--test` (it is the
    /// slow part and not what is tested otherwise; with `--test` it runs in each app's accuracy tests).
    func sameModelWithAndWithoutTest(_ app: ReleaseApp, command: String, train: String, test: String, extra: [String],
                                     out: String? = nil, baseline: Bool = false, evalSet: String = "validation",
                                     file: StaticString = #filePath, line: UInt = #line) throws {
        let without = out ?? app.work.appendingPathComponent("\(command)-no-test-\(UUID().uuidString)").path
        let extra = extra + (baseline ? [] : ["--no-baseline"])
        let plain = try app.results(try app.run([command, "--train", train, "--out", without, "--json"] + extra), file: file, line: line)
        let main = plain.first { ($0["strategy"] as? String) == command }
        XCTAssertEqual(main?["eval_set"] as? String, evalSet, "\(plain)", file: file, line: line)
        if baseline {
            XCTAssertEqual(plain.first { ($0["strategy"] as? String) == "scratch" }?["eval_set"] as? String, "validation", file: file, line: line)
        }
        let withTest = try app.results(try app.run([command, "--train", train, "--test", test, "--json"] + extra
                                                     + (baseline ? ["--no-baseline"] : [])),
                                       file: file, line: line)
        let reported = withTest.first { ($0["strategy"] as? String) == command }?["accuracy"] as? Double
        XCTAssertNotNil(reported, "\(withTest)", file: file, line: line)
        let evaluated = try app.results(try app.run(["evaluate", "--model", without, "--data", test, "--json"]), file: file, line: line)
        XCTAssertEqual(evaluated.first?["accuracy"] as? Double, reported, "\(app.name) \(command): evaluate of the run without --test",
                       file: file, line: line)
        XCTAssertTrue((evaluated.first?["strategy"] as? String ?? "").hasPrefix(command), "the default model is the technique asked for: \(evaluated)",
                      file: file, line: line)
    }

    /// `adapt` with and without `--target-test`: the same default model, and each method's model scores the same.
    func sameAdaptationWithAndWithoutTargetTest(_ app: ReleaseApp, _ s: Slices, level: String?, methods: String?, extra: [String] = [],
                                                out: String, file: StaticString = #filePath, line: UInt = #line) throws {
        var args = ["adapt", "--source", s.source, "--target", s.target] + extra
        if let level { args += ["--level", level] }
        if let methods { args += ["--method", methods] }
        func parsed(_ o: CLITests.Output) throws -> [String: Any] {
            XCTAssertEqual(o.status, 0, o.stderr.suffix(2000).description, file: file, line: line)
            return try JSONSerialization.jsonObject(with: Data(o.stdout.utf8)) as? [String: Any] ?? [:]
        }
        let plain = try parsed(try app.run(args + ["--out", out, "--json"]))
        let reported = try parsed(try app.run(args + ["--target-test", s.targetTest, "--json"]))
        let defaultWithout = (plain["default_model"] as? [String: Any])?["id"] as? String
        let defaultWith = (reported["default_model"] as? [String: Any])?["id"] as? String
        XCTAssertNotNil(defaultWithout, "\(plain)", file: file, line: line)
        XCTAssertEqual(defaultWithout, defaultWith, "the target test set must not choose the default model", file: file, line: line)
        for row in plain["results"] as? [[String: Any]] ?? [] {
            XCTAssertTrue(row["accuracy"] is NSNull, "no target labels, no accuracy: \(row)", file: file, line: line)
            XCTAssertNotNil(row["label_free"] ?? row["chosen"], "label-free scores in \(row)", file: file, line: line)
        }
        let rows = reported["results"] as? [[String: Any]] ?? []
        for row in rows where row["label_free"] != nil && row["strategy"] as? String != "auto" {
            let id = [row["strategy"] as? String, row["level"] as? String].compactMap { $0 }.joined(separator: "-")
            let evaluated = try app.results(try app.run(["evaluate", "--model", out, "--data", s.targetTest, "--strategy", id, "--json"]),
                                            file: file, line: line)
            XCTAssertEqual(evaluated.first?["accuracy"] as? Double, row["accuracy"] as? Double, "\(app.name) \(id)", file: file, line: line)
        }
        try followUp(app, run: out, data: s.targetTest, file: s.file, file: file, line: line)
        let evaluatedDefault = try app.results(try app.run(["evaluate", "--model", out, "--data", s.targetTest, "--json"]), file: file, line: line)
        let chosenRow = rows.first { $0["strategy"] as? String == "auto" }
        XCTAssertEqual(evaluatedDefault.first?["accuracy"] as? Double, (chosenRow ?? rows.first)?["accuracy"] as? Double,
                       "evaluate uses the default model, the one the auto row reports", file: file, line: line)
    }
}
