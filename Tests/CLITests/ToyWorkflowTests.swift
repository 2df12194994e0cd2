import Foundation
import ToyTL
import TransferEngine
import XCTest

/// The transfer workflows end to end through the toy app: what transfer must show, resume after a kill,
/// the JSON schema, and clean failures on bad input. They run the release binary, as the other apps' tests do
/// (a tenth of the debug build's time); `testTheDebugBuildRunsEveryWorkflowAndAgreesWithTheRelease` runs the
/// workflows once under the debug build's bounds checks and preconditions.
final class ToyWorkflowTests: XCTestCase {
    static let root: URL = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("toy-tl-tests-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        TestScratch.removeAtExit(dir)
        try! ToyData.generate(into: dir.appendingPathComponent("data"), models: dir.appendingPathComponent("models"))
        return dir
    }()

    var data: URL { Self.root.appendingPathComponent("data") }

    func toy(_ args: [String]) throws -> CLITests.Output {
        try ReleaseApp.run("toy-tl", args, environment: environment)
    }

    var environment: [String: String] {
        ["TL_MODELS_DIR": Self.root.appendingPathComponent("models").path, "TL_CACHE_DIR": Self.root.appendingPathComponent("cache").path]
    }

    /// Every workflow through the debug build (bounds checks and preconditions on; the release build is
    /// -Ounchecked), with a short training budget: each exits 0 and reports the accuracies the release build reports.
    func testTheDebugBuildRunsEveryWorkflowAndAgreesWithTheRelease() throws {
        let unlabelled = data.appendingPathComponent("target-unlabelled.csv").path
        let targetTest = data.appendingPathComponent("target-test.csv").path
        let commands = [
            ["extract", "--train", trainCSV, "--test", testCSV, "--labels-per-class", "5"],
            ["finetune", "--train", trainCSV, "--test", testCSV, "--unfreeze", "auto"],
            ["adapt", "--source", trainCSV, "--target", unlabelled, "--target-test", targetTest, "--method", "all", "--level", "both",
             "--target-labelled", data.appendingPathComponent("target-labelled.csv").path, "--target-labels-per-class", "3"],
        ]
        for command in commands {
            let args = command + ["--epochs", "2", "--json", "--threads", "1"]
            let debug = try CLITests.run("toy-tl", args, environment: environment)
            XCTAssertEqual(debug.status, 0, "debug \(command[0]): \(debug.stderr)")
            let release = try results(try toy(args))
            let scores = { (rows: [[String: Any]]) in rows.map { "\($0["strategy"]!) \($0["level"] ?? "") \($0["accuracy"]!)" } }
            XCTAssertEqual(scores(try results(debug)), scores(release), command[0])
            XCTAssertFalse(release.isEmpty, command[0])
        }
        let diagnose = try CLITests.run("toy-tl", ["diagnose", "--source", trainCSV, "--target", unlabelled, "--json", "--threads", "1"],
                                        environment: environment)
        XCTAssertEqual(diagnose.status, 0, diagnose.stderr)
        XCTAssertTrue(diagnose.stdout.contains("proxy_a_distance"), diagnose.stdout)
    }

    func results(_ out: CLITests.Output) throws -> [[String: Any]] {
        XCTAssertEqual(out.status, 0, out.stderr)
        let lines = out.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, "--json prints exactly one line: \(out.stdout)")
        let obj = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(obj["app"] as? String, "toy-tl")
        return obj["results"] as! [[String: Any]]
    }

    func accuracy(_ rows: [[String: Any]], _ strategy: String, level: String? = nil, labels: Int? = nil) -> Double {
        let row = rows.first { ($0["strategy"] as? String) == strategy
            && (level == nil || ($0["level"] as? String) == level)
            && ($0["labels_per_class"] as? Int) == labels }
        XCTAssertNotNil(row, "no \(strategy) row")
        return row?["accuracy"] as? Double ?? -1
    }

    func testExtractionBeatsScratchWithFewLabels() throws {
        let out = try toy(["extract", "--train", data.appendingPathComponent("source-train.csv").path,
                           "--test", data.appendingPathComponent("source-test.csv").path,
                           "--labels-per-class", "5", "--json", "--threads", "1"])
        let rows = try results(out)
        let scratch = accuracy(rows, "scratch", labels: 5), extract = accuracy(rows, "extract", labels: 5)
        print("toy, 5 labels per class: scratch \(scratch), extract \(extract)")
        XCTAssertGreaterThan(extract, scratch + 0.15)
        // JSON schema: exactly these keys in every result (eval_set is additive: test or validation).
        for r in rows {
            XCTAssertEqual(Set(r.keys), ["strategy", "level", "eval", "eval_set", "labels_per_class", "accuracy", "macro_f1", "train_seconds"])
        }
    }

    /// Feature shards in the toy app: 2 shards (run as 2, 1) train the model the data trains.
    func testFeatureShardsTrainAsTheDataDoes() throws {
        let dir = Self.root.appendingPathComponent("features-\(UUID().uuidString)").path
        let train = data.appendingPathComponent("source-train.csv").path, test = data.appendingPathComponent("source-test.csv").path
        for k in [2, 1] {
            let out = try toy(["features", "--data", train, "--out", dir, "--shard", "\(k)/2", "--threads", "1"])
            XCTAssertEqual(out.status, 0, out.stderr)
        }
        let sharded = accuracy(try results(try toy(["extract", "--train", dir, "--test", test, "--no-baseline", "--json", "--threads", "1"])), "extract")
        let direct = accuracy(try results(try toy(["extract", "--train", train, "--test", test, "--no-baseline", "--json", "--threads", "1"])), "extract")
        XCTAssertGreaterThan(direct, 0.5)
        XCTAssertEqual(sharded, direct)

        // Two processes writing shards of other data into one folder at the same moment: one of them is refused
        // (both passed the check before either wrote, and both reported success). Repeated, for the overlap.
        for round in 0..<3 {
            let shared = Self.root.appendingPathComponent("features-race-\(round)").path
            var outs = [CLITests.Output?](repeating: nil, count: 2)
            let lock = NSLock()
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                let r = try? toy(["features", "--data", i == 0 ? train : test, "--out", shared, "--shard", "\(i + 1)/2", "--threads", "1"])
                lock.lock(); outs[i] = r; lock.unlock()
            }
            XCTAssertEqual(outs.compactMap { $0 }.filter { $0.status == 0 }.count, 1, outs.map { $0?.stderr ?? "-" }.joined(separator: " | "))
            XCTAssertTrue(outs.contains { $0?.stderr.contains("holds features of other data") ?? false })
            let left = try FileManager.default.contentsOfDirectory(atPath: shared).filter { $0.contains("pending") }
            XCTAssertEqual(left, [], "pending chunks left behind")
        }
    }

    /// `adapt` on features folders (the target's made with --unlabelled), or on a mix of folders and datasets,
    /// trains what it trains on the datasets: every row's accuracy and label-free scores, the default model and
    /// the saved model's predictions. (One shard each: the toy backbone's features computed in other batches can
    /// differ in the last bits, which the label-free scores of trained heads show at 1e-6.)
    /// End-to-end adaptation and --target-labelled need the samples and are refused in one line.
    func testAdaptationFromFeatureFoldersIsAdaptationFromTheData() throws {
        let root = try featureFolders()
        func folder(_ name: String) -> String { root.appendingPathComponent(name).path }
        let target = data.appendingPathComponent("target-unlabelled.csv").path, targetTest = data.appendingPathComponent("target-test.csv").path
        // Required options only: no --target-test, no --out.
        let minimal = try toy(["adapt", "--source", folder("source"), "--target", folder("target"), "--threads", "1"])
        XCTAssertEqual(minimal.status, 0, minimal.stderr)
        XCTAssertTrue(minimal.stdout.contains("default model:"), minimal.stdout)
        func adapt(_ source: String, _ target: String, _ test: String, run: String) throws -> [String: Any] {
            let out = try toy(["adapt", "--source", source, "--target", target, "--target-test", test, "--out", folder(run),
                               "--json", "--threads", "1"])
            XCTAssertEqual(out.status, 0, out.stderr)
            return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
        }
        let fromData = try adapt(trainCSV, target, targetTest, run: "run-data")
        let fromFolders = try adapt(folder("source"), folder("target"), folder("test"), run: "run-folders")
        let mixed = try adapt(trainCSV, folder("target"), targetTest, run: "run-mixed")
        let rows = try XCTUnwrap(fromData["results"] as? [[String: Any]])
        XCTAssertGreaterThanOrEqual(rows.count, 10, "every method, the auto row and the oracle: \(rows)")
        XCTAssertGreaterThan(accuracy(rows, "dann", level: "features"), accuracy(rows, "source-only", level: "features") + 0.02)
        for other in [fromFolders, mixed] {
            let otherRows = try XCTUnwrap(other["results"] as? [[String: Any]])
            XCTAssertEqual(otherRows.count, rows.count)
            for (a, b) in zip(rows, otherRows) {
                XCTAssertEqual(a["strategy"] as? String, b["strategy"] as? String)
                XCTAssertEqual(a["accuracy"] as? Double, b["accuracy"] as? Double, "\(a["strategy"] ?? "")")
                XCTAssertEqual(a["label_free"] as? NSDictionary, b["label_free"] as? NSDictionary, "\(a["strategy"] ?? "")")
            }
            XCTAssertEqual(fromData["default_model"] as? NSDictionary, other["default_model"] as? NSDictionary)
        }
        // The run made from folders is a run like any other: evaluate scores the target test set with its default model.
        let scored = try results(try toy(["evaluate", "--model", folder("run-folders"), "--data", targetTest, "--json", "--threads", "1"]))
        let viaData = try results(try toy(["evaluate", "--model", folder("run-data"), "--data", targetTest, "--json", "--threads", "1"]))
        XCTAssertEqual(scored.first?["accuracy"] as? Double, viaData.first?["accuracy"] as? Double)

        for (extra, message) in [(["--level", "end-to-end"], "end-to-end adaptation trains the backbone on the samples"),
                                 (["--level", "both"], "end-to-end adaptation trains the backbone on the samples"),
                                 (["--target-labelled", data.appendingPathComponent("target-labelled.csv").path], "--target-labelled with a features folder")] {
            let out = try toy(["adapt", "--source", folder("source"), "--target", target, "--threads", "1"] + extra)
            XCTAssertNotEqual(out.status, 0)
            XCTAssertTrue(out.stderr.contains(message), out.stderr)
            XCTAssertFalse(out.stderr.contains("Fatal error"), out.stderr)
        }
    }

    /// Features folders of the source (labelled), the unlabelled target and the target test set, in a new folder.
    func featureFolders() throws -> URL {
        let root = Self.root.appendingPathComponent("feature-folders-\(UUID().uuidString)")
        for (set, out, extra) in [(trainCSV, "source", [String]()), (data.appendingPathComponent("target-unlabelled.csv").path, "target", ["--unlabelled"]),
                                  (data.appendingPathComponent("target-test.csv").path, "test", [])] {
            let made = try toy(["features", "--data", set, "--out", root.appendingPathComponent(out).path, "--threads", "1"] + extra)
            XCTAssertEqual(made.status, 0, made.stderr)
        }
        return root
    }

    func testEveryAdaptationMethodBeatsSourceOnly() throws {
        let out = try toy(["adapt", "--source", data.appendingPathComponent("source-train.csv").path,
                           "--target", data.appendingPathComponent("target-unlabelled.csv").path,
                           "--target-test", data.appendingPathComponent("target-test.csv").path,
                           "--method", "all", "--level", "both", "--json", "--threads", "1"])
        let rows = try results(out)
        // At both levels every method beats source-only: end to end (the toy backbone's two blocks trained),
        // and on frozen features, where the methods standardise the target with its own statistics (without
        // that, DANN and CORAL could only move a shared bottleneck and did not beat source-only).
        for level in ["end-to-end", "features"] {
            let base = accuracy(rows, "source-only", level: level)
            for m in ["dann", "coral", "adabn", "pseudo", "mcc", "shot", "bnm"] {
                let a = accuracy(rows, m, level: level)
                print("toy \(level): \(m) \(a) vs source-only \(base)")
                XCTAssertGreaterThan(a, base + 0.02, "\(m) at \(level) level")
            }
        }
        // Label propagation from the other methods' average prediction: feature level only.
        let propagated = accuracy(rows, "propagate", level: "features")
        print("toy features: propagate \(propagated) vs source-only \(accuracy(rows, "source-only", level: "features"))")
        XCTAssertGreaterThan(propagated, accuracy(rows, "source-only", level: "features") + 0.02)
        XCTAssertFalse(rows.contains { $0["strategy"] as? String == "propagate" && $0["level"] as? String == "end-to-end" })
        XCTAssertGreaterThan(accuracy(rows, "oracle", level: "features"), accuracy(rows, "source-only", level: "features"))
    }

    /// `adapt`'s label-free rule first checks that the source's classes form neighbourhoods in the backbone's
    /// features, which every method relies on. The toy source does, and a method is chosen; the same source with
    /// its labels shuffled does not, and the run keeps source-only and says why. No target labels are given.
    func testAutoKeepsSourceOnlyWhenTheSourceClassesFormNoNeighbourhoods() throws {
        func defaultModel(_ source: String) throws -> (id: String, reason: String) {
            let out = try toy(["adapt", "--source", source, "--target", data.appendingPathComponent("target-unlabelled.csv").path,
                               "--json", "--threads", "1"])
            XCTAssertEqual(out.status, 0, out.stderr)
            let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
            let model = try XCTUnwrap(obj["default_model"] as? [String: Any], out.stdout)
            let agreement = try XCTUnwrap(obj["source_neighbour_agreement"] as? Double, out.stdout)
            let reason = try XCTUnwrap(model["reason"] as? String)
            XCTAssertTrue(reason.contains(String(format: "agreement %.2f", agreement)), "the number the reason gives: \(reason)")
            return (try XCTUnwrap(model["id"] as? String), reason)
        }
        let clustered = try defaultModel(trainCSV)
        print("toy adapt, default model: \(clustered)")
        XCTAssertNotEqual(clustered.id, "source-only-features", clustered.reason)
        XCTAssertTrue(clustered.reason.contains("passed the check") && !clustered.reason.contains("do not form"), clustered.reason)
        var rng = RNG(seed: 7)
        let shuffled = try table("shuffled-labels.csv", from: trainCSV) { rows in
            let labels = rng.permutation(rows.count).map { rows[$0].prefix { $0 != "," } }
            return zip(rows, labels).map { row, label in Substring(label + row.drop { $0 != "," }) }
        }
        let kept = try defaultModel(shuffled.path)
        print("toy adapt, shuffled source labels, default model: \(kept)")
        XCTAssertEqual(kept.id, "source-only-features")
        XCTAssertTrue(kept.reason.contains("do not form neighbourhoods"), kept.reason)
        // --level auto (the default) tried end to end too; shuffled labels are no better than chance there either.
        XCTAssertTrue(kept.reason.contains("no better than chance"), kept.reason)
        let diagnosis = try toy(["diagnose", "--source", shuffled.path, "--target", data.appendingPathComponent("target-unlabelled.csv").path])
        XCTAssertEqual(diagnosis.status, 0, diagnosis.stderr)
        XCTAssertTrue(diagnosis.stdout.contains("source neighbours") && diagnosis.stdout.contains("do not form neighbourhoods"), diagnosis.stdout)
        // With a few target labels the default is semi, which then does not use the unlabelled target: it is the supervised head.
        let out = try toy(["adapt", "--source", shuffled.path, "--target", data.appendingPathComponent("target-unlabelled.csv").path,
                           "--target-labelled", data.appendingPathComponent("target-labelled.csv").path, "--target-labels-per-class", "3",
                           "--target-test", data.appendingPathComponent("target-test.csv").path, "--method", "source-only", "--json", "--threads", "1"])
        let rows = try results(out)
        XCTAssertEqual(accuracy(rows, "semi", level: "features", labels: 3), accuracy(rows, "supervised", level: "features", labels: 3))
        let reason = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])?["default_model"] as? [String: Any])["reason"] as? String
        XCTAssertTrue(reason?.contains("the unlabelled target not used") == true, reason ?? "no reason")
    }
}

extension ToyWorkflowTests {
    /// Where the classes lie along a direction the frozen backbone does not see (orthogonal to the latent space its
    /// first layer reads), the frozen features fail the neighbourhood check; `--level auto` (the default) then
    /// fine-tunes end to end, where the classes do form neighbourhoods, and chooses an end-to-end model without target
    /// labels. The target is the source moved along that direction (a third of the source-only boundary's margin):
    /// the chosen model beats source-only on it. With `--level features` the run keeps source-only.
    func testAutoAdaptsEndToEndWhereTheFrozenFeaturesMissTheClasses() throws {
        let fc0 = try SafeTensors.read(Self.root.appendingPathComponent("models/toy/backbone.safetensors")).tensor(named: "fc0.weight")
        let d = ToyData.dimensions
        // fc0's first six rows are the latent space's basis: a direction orthogonal to them.
        let basis = (0..<6).map { i in (0..<d).map { Double(fc0[flat: i * d + $0]) } }
        var rng = RNG(seed: 11)
        var u = (0..<d).map { _ in Double(rng.normal()) }
        for b in basis { let dot = zip(u, b).reduce(0) { $0 + $1.0 * $1.1 }; u = zip(u, b).map { $0 - dot * $1 } }
        let norm = u.reduce(0) { $0 + $1 * $1 }.squareRoot()
        u = u.map { $0 / norm }
        func write(_ name: String, perClass: Int, shift: Double, labelled: Bool) throws -> String {
            var text = (labelled ? "label," : "") + (0..<d).map { "x\($0)" }.joined(separator: ",") + "\n"
            for i in 0..<(2 * perClass) {
                let c = i % 2
                let along = Double(2 * c - 1) * 2 + shift
                let x = u.map { $0 * along + Double(rng.normal()) }
                text += (labelled ? "c\(c)," : "") + x.map { String(format: "%.5f", $0) }.joined(separator: ",") + "\n"
            }
            let url = Self.root.appendingPathComponent(name)
            try text.write(to: url, atomically: true, encoding: .utf8)
            return url.path
        }
        let source = try write("hidden-source.csv", perClass: 200, shift: 0, labelled: true)
        let target = try write("hidden-target.csv", perClass: 200, shift: 1.3, labelled: false)
        let test = try write("hidden-target-test.csv", perClass: 200, shift: 1.3, labelled: true)
        func run(_ extra: [String]) throws -> (rows: [[String: Any]], id: String, reason: String) {
            let out = try toy(["adapt", "--source", source, "--target", target, "--target-test", test, "--json", "--threads", "1"] + extra)
            let rows = try results(out)
            let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])
            let model = try XCTUnwrap(obj["default_model"] as? [String: Any], out.stdout)
            XCTAssertLessThan(try XCTUnwrap(obj["source_neighbour_agreement"] as? Double), AdaptationSelection.minimumNeighbourAgreement)
            return (rows, try XCTUnwrap(model["id"] as? String), try XCTUnwrap(model["reason"] as? String))
        }
        let auto = try run(["--backbone-lr-mult", "1"])
        print("toy adapt, classes along a hidden direction: \(auto.id): \(auto.reason)")
        XCTAssertTrue(auto.id.hasSuffix("-end-to-end") && !auto.id.hasPrefix("source-only"), auto.reason)
        XCTAssertTrue(auto.reason.contains("beyond chance") && auto.reason.contains("chosen without target labels"), auto.reason)
        let check = try XCTUnwrap(auto.rows.first { $0["strategy"] as? String == "source-only" && $0["level"] as? String == "end-to-end" }?["held_out_neighbours"] as? [String: Any])
        XCTAssertLessThan(try XCTUnwrap(check["p_value"] as? Double), AdaptationSelection.significance)
        // Which end-to-end methods ran: source-only and the four that follow the target's neighbourhoods.
        XCTAssertEqual(Set(auto.rows.filter { $0["level"] as? String == "end-to-end" }.map { $0["strategy"] as! String }),
                       Set(AdaptationSelection.endToEndMethods.map(\.rawValue)))
        let chosen = try XCTUnwrap(auto.rows.first { $0["strategy"] as? String == "auto" }?["accuracy"] as? Double)
        let frozen = accuracy(auto.rows, "source-only", level: "features")
        print("toy hidden direction: auto \(chosen), source-only on frozen features \(frozen), end to end \(accuracy(auto.rows, "source-only", level: "end-to-end"))")
        XCTAssertGreaterThan(chosen, frozen + 0.1)
        XCTAssertGreaterThan(chosen, accuracy(auto.rows, "source-only", level: "end-to-end") + 0.02)
        let features = try run(["--level", "features"])
        XCTAssertEqual(features.id, "source-only-features", features.reason)
        XCTAssertFalse(features.rows.contains { $0["level"] as? String == "end-to-end" })
    }

    var trainCSV: String { data.appendingPathComponent("source-train.csv").path }
    var testCSV: String { data.appendingPathComponent("source-test.csv").path }

    /// A toy table of `file`'s header and the data rows `pick` keeps, written under the test folder as `name`.
    func table(_ name: String, from file: String, rows pick: ([Substring]) -> [Substring]) throws -> URL {
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
        let url = Self.root.appendingPathComponent(name)
        try ((lines.prefix(1) + pick(Array(lines.dropFirst()))).joined(separator: "\n") + "\n").write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    /// `--epochs` is the budget of every training in the run, the from-scratch baseline's too (it used to train at
    /// least 30 epochs and 300 steps whatever `--epochs` said). Without it the baseline keeps its longer schedule.
    func testEpochsSetTheFromScratchBaselinesBudgetToo() throws {
        let runs = Self.root.appendingPathComponent("runs-epochs")
        try? FileManager.default.removeItem(at: runs)
        func epochs(_ extra: [String], _ name: String) throws -> (counts: [String: Int], stdout: String) {
            let out = runs.appendingPathComponent(name)
            let r = try toy(["extract", "--train", trainCSV, "--labels-per-class", "20", "--threads", "1", "--quiet", "--out", out.path] + extra)
            XCTAssertEqual(r.status, 0, r.stderr)
            let folder = out.appendingPathComponent("history")
            return (try FileManager.default.contentsOfDirectory(atPath: folder.path).reduce(into: [:]) { counts, file in
                let rows = try String(contentsOf: folder.appendingPathComponent(file), encoding: .utf8).split(separator: "\n")
                counts[file] = rows.count - 1
            }, r.stdout)
        }
        let two = try epochs(["--epochs", "2"], "two")
        XCTAssertEqual(two.counts, ["extract-20.csv": 2, "scratch-20.csv": 2])
        let defaults = try epochs([], "defaults")
        XCTAssertGreaterThan(defaults.counts["scratch-20.csv"] ?? 0, 5, "without --epochs the baseline trains its own schedule: \(defaults)")
        // Two epochs leave the baseline where it began (its training loss above ln 5, a uniform guess's): the run
        // says so. The head on pretrained features has learned, and so has the baseline on its own schedule.
        XCTAssertTrue(two.stdout.contains("scratch-20: its training loss ended at") && two.stdout.contains("ln(5) = 1.609: its training did not converge"), two.stdout)
        XCTAssertFalse(two.stdout.contains("extract-20: its training loss"), two.stdout)
        XCTAssertFalse(defaults.stdout.contains("did not converge"), defaults.stdout)
        // A long --epochs gives a long warmup (5 % of 300 epochs: 15), longer than early stopping's patience (5 for
        // the baseline), which stopped the baseline at epoch 6-7, at chance, while its learning rate was still
        // ramping up; the patience now counts from the warmup's end.
        let long = try epochs(["--epochs", "300"], "long")
        XCTAssertGreaterThan(long.counts["scratch-20.csv"] ?? 0, 15, "\(long.counts)")
        XCTAssertFalse(long.stdout.contains("did not converge"), long.stdout)
        let all = try toy(["extract", "--train", trainCSV, "--test", testCSV, "--epochs", "300", "--threads", "1", "--json", "--quiet"])
        XCTAssertEqual(all.status, 0, all.stderr)
        XCTAssertGreaterThan(accuracy(try results(all), "scratch"), 0.6, "the baseline with every label and 300 epochs (chance: 0.2)")
    }

    /// A --labels-per-class above every class's count uses every example, and says so (the row keeps the K asked for).
    func testLabelsPerClassAboveTheDataSaysEveryExampleWasUsed() throws {
        let r = try toy(["extract", "--train", trainCSV, "--labels-per-class", "100", "--no-baseline", "--threads", "1", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("--labels-per-class 100: no class of --train has more than 60 examples, so every one was used"), r.stdout)
        let fewer = try toy(["extract", "--train", trainCSV, "--labels-per-class", "5", "--no-baseline", "--threads", "1", "--quiet"])
        XCTAssertFalse(fewer.stdout.contains("every one was used"), fewer.stdout)
        XCTAssertFalse(fewer.stdout.contains("fewer examples"), fewer.stdout)
        // One class smaller than K: it is named, with the examples it had.
        let uneven = try table("uneven.csv", from: trainCSV) { rows in rows.filter { !$0.hasPrefix("c1,") } + rows.filter { $0.hasPrefix("c1,") }.prefix(10) }
        let short = try toy(["extract", "--train", uneven.path, "--labels-per-class", "20", "--no-baseline", "--threads", "1", "--quiet"])
        XCTAssertEqual(short.status, 0, short.stderr)
        XCTAssertTrue(short.stdout.contains("--labels-per-class 20: 1 class of --train has fewer examples, all used (c1 10)"), short.stdout)
    }

    /// 33 training rows in batches of 32 leave a last batch of one sample: the from-scratch network's BatchNorm
    /// made its running variance 0/0 there and every prediction NaN (accuracy 0.20, predict printing -nan).
    func testALastBatchOfOneSampleLeavesTheModelFinite() throws {
        let small = try table("train-33.csv", from: trainCSV) { Array($0.prefix(33)) }
        let run = Self.root.appendingPathComponent("runs-33").path
        try? FileManager.default.removeItem(atPath: run)
        XCTAssertEqual(try toy(["extract", "--train", small.path, "--out", run, "--threads", "1", "--quiet"]).status, 0)
        let p = try toy(["predict", "--model", run, "--strategy", "scratch", data.appendingPathComponent("target-unlabelled.csv").path, "--json"])
        XCTAssertEqual(p.status, 0, p.stderr)
        XCTAssertFalse(p.stdout.lowercased().contains("nan") || p.stdout.contains("null"), p.stdout)
    }

    /// A test set with 2 of the 5 classes: the run says so, and that macro-F1 (scikit-learn's rule) then compares
    /// only rows that predict the same classes.
    func testATestSetWithoutSomeClassesIsNoted() throws {
        let two = try table("test-c0-c1.csv", from: testCSV) { $0.filter { $0.hasPrefix("c0,") || $0.hasPrefix("c1,") } }
        let r = try toy(["extract", "--train", trainCSV, "--test", two.path, "--no-baseline", "--threads", "1", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("test-c0-c1.csv holds 2 of the 5 classes (none of c2, c3, c4): macro-F1 averages"), r.stdout)
        XCTAssertFalse(try toy(["extract", "--train", trainCSV, "--test", testCSV, "--no-baseline", "--threads", "1", "--quiet"])
            .stdout.contains("of the 5 classes"))
    }

    /// check-data warns about class names that differ only in case or spaces (one class typed two ways).
    func testCheckDataWarnsAboutClassNamesThatDifferOnlyInCase() throws {
        let text = try String(contentsOfFile: trainCSV, encoding: .utf8).replacingOccurrences(of: "\nc1,", with: "\nC0,")
        let file = Self.root.appendingPathComponent("case.csv")
        try text.write(to: file, atomically: true, encoding: .utf8)
        let r = try toy(["check-data", file.path, "--threads", "1"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("warning: class names that differ only in case or surrounding spaces (1 group), e.g. 'C0' and 'c0'"), r.stdout)
        XCTAssertFalse(try toy(["check-data", trainCSV, "--threads", "1"]).stdout.contains("class names that differ"))
    }

    /// Refused before any work: diagnose on sets too small to measure a distance (it said "the target looks like the
    /// source" from 4 and 1 samples), --unfreeze auto on fewer than 50 labelled samples (it trained the probe first).
    func testTooFewSamplesAreRefusedBeforeAnyWork() throws {
        let small = try table("thirty.csv", from: trainCSV) { Array($0.prefix(30)) }
        let tiny = try table("five.csv", from: trainCSV) { Array($0.prefix(5)) }
        for (args, message) in [(["diagnose", "--source", trainCSV, "--target", tiny.path], "diagnose needs at least 20 samples in each set"),
                                (["finetune", "--train", small.path, "--unfreeze", "auto"], "30 samples are too few (it needs 50)")] {
            let r = try toy(args + ["--threads", "1"])
            XCTAssertEqual(r.status, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(message), r.stderr)
            XCTAssertFalse(r.stderr.contains("training "), "refused before any training: \(r.stderr)")
        }
    }

    /// A method named twice in --method runs once.
    func testAMethodNamedTwiceRunsOnce() throws {
        let rows = try results(try toy(["adapt", "--source", trainCSV, "--target", data.appendingPathComponent("target-unlabelled.csv").path,
                                        "--method", "source-only,dann,dann", "--json", "--threads", "1"]))
        XCTAssertEqual(rows.map { $0["strategy"] as? String }, ["source-only", "dann", "auto"])
    }

    /// Under 50 training samples and no --test there is no validation split: the rows name no set (eval "none").
    func testRowsWithoutAnySetToScoreNameNone() throws {
        let small = try table("forty.csv", from: trainCSV) { Array($0.prefix(40)) }
        for row in try results(try toy(["extract", "--train", small.path, "--json", "--threads", "1"])) {
            XCTAssertEqual(row["eval"] as? String, "none", "\(row)")
            XCTAssertEqual(row["eval_set"] as? String, "none", "\(row)")
            XCTAssertTrue(row["accuracy"] is NSNull, "\(row)")
        }
    }

    func testKilledRunResumesToTheSameResult() throws {
        let runs = Self.root.appendingPathComponent("runs-resume")
        try? FileManager.default.removeItem(at: runs)
        let args = ["finetune", "--train", trainCSV, "--test", testCSV, "--labels-per-class", "20", "--json", "--threads", "1", "--no-cache"]
        let whole = try toy(args + ["--out", runs.appendingPathComponent("whole").path])
        let expected = try results(whole)

        let killedPath = runs.appendingPathComponent("killed").path
        let killed = try ReleaseApp.run("toy-tl", args + ["--out", killedPath], environment: [
            "TL_MODELS_DIR": Self.root.appendingPathComponent("models").path, "TL_TEST_KILL_AFTER_CHECKPOINTS": "12"])
        XCTAssertEqual(killed.status, 9, "the run should have been killed: \(killed.stderr)")
        XCTAssertTrue(FileManager.default.fileExists(atPath: killedPath + ".partial/checkpoints"))
        XCTAssertFalse(FileManager.default.fileExists(atPath: killedPath))

        let resumed = try toy(["finetune", "--resume", killedPath])
        let got = try results(resumed)
        XCTAssertEqual(got.count, expected.count)
        for (a, b) in zip(got, expected) {
            XCTAssertEqual(a["strategy"] as? String, b["strategy"] as? String)
            XCTAssertEqual(a["accuracy"] as? Double, b["accuracy"] as? Double, "\(a["strategy"]!)")
            XCTAssertEqual(a["macro_f1"] as? Double, b["macro_f1"] as? Double)
        }
        // The saved weights are identical too.
        for model in ["finetune-20", "scratch-20"] {
            let x = try Data(contentsOf: runs.appendingPathComponent("whole/models/\(model).safetensors"))
            let y = try Data(contentsOf: URL(fileURLWithPath: killedPath + "/models/\(model).safetensors"))
            XCTAssertEqual(x, y, model)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: killedPath + ".partial"))
    }

    /// End-to-end adaptation killed at several moments and resumed ends with the same bytes as an uninterrupted run:
    /// DANN's reversal schedule, SHOT's per-epoch centroid labels and the discriminator all resume exactly (issue 15).
    func testKilledEndToEndAdaptationResumesToTheSameBytes() throws {
        let runs = Self.root.appendingPathComponent("runs-resume-adapt")
        try? FileManager.default.removeItem(at: runs)
        let args = ["adapt", "--source", trainCSV, "--target", data.appendingPathComponent("target-unlabelled.csv").path,
                    "--level", "end-to-end", "--method", "source-only,dann,shot", "--threads", "1", "--no-cache", "--quiet"]
        XCTAssertEqual(try toy(args + ["--out", runs.appendingPathComponent("whole").path]).status, 0)
        let models = ["source-only-end-to-end", "dann-end-to-end", "shot-end-to-end"]
        for killAfter in ["3", "9", "17"] {
            let killedPath = runs.appendingPathComponent("killed-\(killAfter)").path
            let killed = try ReleaseApp.run("toy-tl", args + ["--out", killedPath], environment: [
                "TL_MODELS_DIR": Self.root.appendingPathComponent("models").path, "TL_TEST_KILL_AFTER_CHECKPOINTS": killAfter])
            XCTAssertEqual(killed.status, 9, "killed after \(killAfter) checkpoints: \(killed.stderr)")
            let resumed = try toy(["adapt", "--resume", killedPath])
            XCTAssertEqual(resumed.status, 0, resumed.stderr)
            for model in models {
                let x = try Data(contentsOf: runs.appendingPathComponent("whole/models/\(model).safetensors"))
                let y = try Data(contentsOf: URL(fileURLWithPath: killedPath + "/models/\(model).safetensors"))
                XCTAssertEqual(x, y, "\(model), killed after \(killAfter) checkpoints")
            }
        }
    }

    /// `propagate` balances its labels to the source's class proportions unless told the target is imbalanced
    /// (`balancePropagatedLabels` false, `--imbalanced-target`). Two well-separated classes (16 features, as the toy backbone gives), balanced in the source,
    /// 9 : 1 in the target: balancing to 1 : 1 relabels a good part of the larger class, and without it propagate
    /// keeps them.
    func testPropagateBalancesItsLabelsUnlessTheTargetIsImbalanced() throws {
        let saved = ProcessInfo.processInfo.environment["TL_MODELS_DIR"]
        setenv("TL_MODELS_DIR", Self.root.appendingPathComponent("models").path, 1)
        defer { if let saved { setenv("TL_MODELS_DIR", saved, 1) } else { unsetenv("TL_MODELS_DIR") } }
        let w = TransferWorkflows(domain: try ToyDomain(), options: WorkflowOptions())
        var rng = RNG(seed: 5)
        func points(_ counts: [Int], shift: Float) -> (Tensor, [Int]) {
            var values: [Float] = [], labels: [Int] = []
            for (c, n) in counts.enumerated() {
                for _ in 0..<n {
                    values += (0..<16).map { d in (d == 0 ? (c == 0 ? -3 : 3) : 0) + shift + rng.normal() * 0.7 }
                    labels.append(c)
                }
            }
            return (Tensor(shape: [labels.count, 16], scalars: values), labels)
        }
        let (fS, yS) = points([60, 60], shift: 0), (fT, _) = points([180, 20], shift: 0.5), (fTest, yTest) = points([180, 20], shift: 0.5)
        let source = LabelledSet(samples: Array(0..<yS.count), labels: yS, classNames: ["a", "b"], source: "source")
        let test = LabelledSet(samples: Array(0..<yTest.count), labels: yTest, classNames: ["a", "b"], source: "test")
        func propagate(balanced: Bool, rounds: Int? = nil) throws -> Double {
            var settings = AdaptationOptions()
            settings.balancePropagatedLabels = balanced
            settings.propagationRounds = rounds
            let rows = try w.adapt(source: source, features: fS, target: fT, targetTest: test, testFeatures: fTest,
                                   methods: [.sourceOnly, .adabn, .propagate], oracle: false, settings: settings, evalName: "test")
            return try XCTUnwrap(rows.first { $0.strategy == .propagate }?.accuracy)
        }
        // Each with its default rounds (2 balanced, 1 not); and one round balanced, as the flag's effect alone.
        let balanced = try propagate(balanced: true), kept = try propagate(balanced: false)
        let oneRound = try propagate(balanced: true, rounds: 1), keptTwoRounds = try propagate(balanced: false, rounds: 2)
        print("toy 9:1 target: propagate balanced \(balanced) (one round \(oneRound)), not balanced \(kept) (two rounds \(keptTwoRounds))")
        XCTAssertGreaterThan(kept, 0.95)
        XCTAssertLessThan(balanced, kept - 0.05)
        XCTAssertLessThan(oneRound, kept - 0.05)
        // The app's flag, and the default model's reason saying which was done.
        let target = data.appendingPathComponent("target-unlabelled.csv").path
        func reason(_ extra: [String]) throws -> (id: String, reason: String) {
            let out = try toy(["adapt", "--source", trainCSV, "--target", target, "--json", "--threads", "1"] + extra)
            XCTAssertEqual(out.status, 0, out.stderr)
            let model = try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any])?["default_model"] as? [String: Any])
            return (try XCTUnwrap(model["id"] as? String), try XCTUnwrap(model["reason"] as? String))
        }
        let plain = try reason([]), flagged = try reason(["--imbalanced-target"])
        XCTAssertEqual(plain.id, "propagate-features", plain.reason)
        XCTAssertTrue(plain.reason.contains("balanced to the source's class proportions, in 2 rounds"), plain.reason)
        XCTAssertEqual(flagged.id, "propagate-features", flagged.reason)
        XCTAssertTrue(flagged.reason.contains("propagated along") && !flagged.reason.contains("balanced"), flagged.reason)
        let refused = try toy(["adapt", "--source", trainCSV, "--target", target, "--method", "dann", "--imbalanced-target"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains("--imbalanced-target changes only propagate and semi"), refused.stderr)
        let noRound = try toy(["adapt", "--source", trainCSV, "--target", target, "--propagate-rounds", "0"])
        XCTAssertNotEqual(noRound.status, 0)
        XCTAssertTrue(noRound.stderr.contains("--propagate-rounds must be >= 1, got 0"), noRound.stderr)
        let unused = try toy(["adapt", "--source", trainCSV, "--target", target, "--method", "dann", "--propagate-rounds", "3"])
        XCTAssertNotEqual(unused.status, 0)
        XCTAssertTrue(unused.stderr.contains("--propagate-rounds changes only propagate and semi"), unused.stderr)
    }

    /// Each workflow trains a copy of the pretrained backbone of its own: a fine-tuned model keeps its weights
    /// while later workflows fine-tune, adapt end to end and re-estimate BatchNorm-free statistics, and the
    /// pretrained backbone is never changed (when they shared one backbone, each reset it for the next).
    func testWorkflowsTrainTheirOwnBackboneCopies() throws {
        // The toy model in-process (the apps' tests that follow inherit this process's environment: restore it).
        let saved = ProcessInfo.processInfo.environment["TL_MODELS_DIR"]
        setenv("TL_MODELS_DIR", Self.root.appendingPathComponent("models").path, 1)
        defer { if let saved { setenv("TL_MODELS_DIR", saved, 1) } else { unsetenv("TL_MODELS_DIR") } }
        let domain = try ToyDomain()
        let w = TransferWorkflows(domain: domain, options: WorkflowOptions())
        let train = try domain.labelled(at: data.appendingPathComponent("source-train.csv"))
        let test = try domain.labelled(at: data.appendingPathComponent("source-test.csv"))
        let target = try domain.unlabelled(at: data.appendingPathComponent("target-unlabelled.csv"))
        let pretrained = try w.features(test.samples, name: "test")
        let first = try w.finetune(train: train, test: nil, evalName: "validation").model
        let tuned = try w.features(first, test.samples, name: "test")
        XCTAssertNotEqual(tuned, pretrained, "fine-tuning changed nothing")
        _ = try w.finetune(train: train, test: nil, labelsPerClass: 5, evalName: "validation")
        _ = try w.adapt(source: train, target: target, targetTest: nil, methods: [.sourceOnly, .adabn, .mcc],
                        levels: [.endToEnd], oracle: false, evalName: "target")
        XCTAssertEqual(try w.features(first, test.samples, name: "test"), tuned)
        XCTAssertEqual(try w.pretrainedBackbone().weightsHash(), w.backboneHash)
        XCTAssertFalse(first.backbone === (try w.pretrainedBackbone()))
    }

    /// `finetune` and end-to-end `adapt` keep the frozen blocks' activations from the pass that computes a set's
    /// features (one pass through the frozen part per set, not two), and save the same models, byte for byte, as
    /// runs whose features came from the disk cache (where the frozen part runs on its own).
    func testTheFrozenPartRunsOncePerSetAndTheModelsDoNotDependOnTheCache() throws {
        let unlabelled = data.appendingPathComponent("target-unlabelled.csv").path
        let commands = [
            ("finetune", ["finetune", "--train", trainCSV, "--test", testCSV]),
            ("adapt", ["adapt", "--source", trainCSV, "--target", unlabelled, "--level", "both", "--method", "source-only,mcc"]),
        ]
        /// The sets named by progress lines that start with `prefix` ("features of train: 300 samples ...").
        func sets(_ stderr: String, _ prefix: String) -> Set<String> {
            Set(stderr.split(separator: "\n").filter { $0.hasPrefix(prefix) }.map { String($0.dropFirst(prefix.count).prefix { $0 != ":" }) })
        }
        for (name, command) in commands {
            let cache = Self.root.appendingPathComponent("cache-frozen-pass-\(name)").path
            try? FileManager.default.removeItem(atPath: cache)
            var models: [Data] = []
            for pass in ["cold", "warm"] {
                let out = Self.root.appendingPathComponent("frozen-pass-\(name)-\(pass)")
                try? FileManager.default.removeItem(at: out)
                let r = try ReleaseApp.run("toy-tl", command + ["--unfreeze", "1", "--epochs", "3", "--out", out.path, "--threads", "1"],
                                           environment: environment.merging(["TL_CACHE_DIR": cache]) { $1 })
                XCTAssertEqual(r.status, 0, r.stderr)
                let featured = sets(r.stderr, "features of "), frozen = sets(r.stderr, "frozen blocks on ")
                if pass == "cold" {
                    XCTAssertFalse(featured.isEmpty, r.stderr)
                    XCTAssertEqual(featured.intersection(frozen), [], "\(name), cold cache: the features' pass kept the frozen activations")
                } else {
                    XCTAssertEqual(featured, [], "\(name), warm cache: the features come from disk")
                    XCTAssertFalse(frozen.isEmpty, "\(name), warm cache: the frozen part runs on its own")
                }
                let files = try FileManager.default.contentsOfDirectory(atPath: out.appendingPathComponent("models").path).sorted()
                XCTAssertFalse(files.isEmpty)
                models.append(try files.reduce(into: Data()) { $0 += try Data(contentsOf: out.appendingPathComponent("models/" + $1)) })
            }
            XCTAssertEqual(models[0], models[1], "\(name): the same models with a cold and a warm feature cache")
        }
    }

    func testRunDirectoryEvaluateAndPredict() throws {
        let run = Self.root.appendingPathComponent("runs-eval/extract").path
        try? FileManager.default.removeItem(atPath: run)
        let r = try toy(["extract", "--train", trainCSV, "--test", testCSV, "--out", run, "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("extract"), r.stdout)
        for file in ["run.json", "metrics.json", "models/extract.safetensors", "models/scratch.safetensors",
                     "plots/confusion-extract.svg", "plots/learning-extract.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/" + file), file)
        }
        let metrics = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/metrics.json"))) as! [String: Any]
        let extractAccuracy = (metrics["results"] as! [[String: Any]]).first { $0["strategy"] as? String == "extract" }!["accuracy"] as! Double

        let e = try toy(["evaluate", "--model", run, "--data", testCSV, "--strategy", "extract", "--json"])
        let evaluated = try results(e)
        XCTAssertEqual(evaluated.first?["accuracy"] as? Double ?? -1, extractAccuracy, accuracy: 1e-9)

        let unlabelled = data.appendingPathComponent("target-unlabelled.csv").path
        // Adapted feature-level models are saved for raw target features: re-scored on the target test set they
        // give exactly the accuracy the adapt run reported.
        let adapted = Self.root.appendingPathComponent("runs-eval/adapt").path
        try? FileManager.default.removeItem(atPath: adapted)
        let targetTest = data.appendingPathComponent("target-test.csv").path
        let rows = try results(try toy(["adapt", "--source", trainCSV, "--target", unlabelled, "--target-test", targetTest,
                                        "--method", "source-only,dann,adabn", "--out", adapted, "--json", "--threads", "1"]))
        for method in ["source-only", "dann", "adabn"] {
            let scored = try results(try toy(["evaluate", "--model", adapted, "--data", targetTest, "--strategy",
                                              method + "-features", "--json"]))
            XCTAssertEqual(scored.first?["accuracy"] as? Double ?? -1, accuracy(rows, method, level: "features"), accuracy: 1e-9, method)
        }

        let p = try toy(["predict", "--model", run, "--top", "2", unlabelled])
        XCTAssertEqual(p.status, 0, p.stderr)
        XCTAssertEqual(p.stdout.split(separator: "\n").count, 300)
        XCTAssertTrue(p.stdout.split(separator: "\n").allSatisfy { $0.split(separator: "\t").count == 3 }, p.stdout)
        // After `--` every argument is a file, even one that looks like an option followed by a negative number.
        let dashed = try toy(["predict", "--model", run, "--", "--x.csv", "-1"])
        XCTAssertNotEqual(dashed.status, 0)
        XCTAssertTrue(dashed.stderr.contains("--x.csv: no such file"), dashed.stderr)
    }

    /// `diagnose` with only its required options: the source's own test split is close to it, the shifted target
    /// far; JSON keys as documented; a labelled target is read without its labels; the same seed, the same numbers.
    func testDiagnoseRanksTheShiftedTargetFarther() throws {
        func diagnose(_ target: String) throws -> [String: Any] {
            let r = try toy(["diagnose", "--source", trainCSV, "--target", target, "--json", "--threads", "1"])
            XCTAssertEqual(r.status, 0, r.stderr)
            return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        }
        let same = try diagnose(testCSV), shifted = try diagnose(data.appendingPathComponent("target-test.csv").path)
        for key in ["proxy_a_distance", "domain_classifier_error", "mmd", "class_names", "source_proportions",
                    "predicted_target_proportions", "proportion_shift", "recommendation", "source_samples", "target_samples",
                    "source_neighbour_agreement"] {
            XCTAssertNotNil(shifted[key], key)
        }
        XCTAssertGreaterThan(shifted["source_neighbour_agreement"] as! Double, AdaptationSelection.minimumNeighbourAgreement,
                             "the toy classes are Gaussian clusters")
        let near = same["proxy_a_distance"] as! Double, far = shifted["proxy_a_distance"] as! Double
        print("toy diagnose: proxy A-distance source test \(near), shifted target \(far); MMD² \(same["mmd"]!) vs \(shifted["mmd"]!)")
        XCTAssertLessThan(near, 0.5)
        XCTAssertGreaterThan(far, near + 0.5)
        XCTAssertGreaterThan(shifted["mmd"] as! Double, same["mmd"] as! Double)
        XCTAssertTrue((same["recommendation"] as! String).hasPrefix("the target looks like the source"))
        XCTAssertEqual(try diagnose(testCSV) as NSDictionary, same as NSDictionary, "seeded")
        let plain = try toy(["diagnose", "--source", trainCSV, "--target", data.appendingPathComponent("target-unlabelled.csv").path])
        XCTAssertEqual(plain.status, 0, plain.stderr)
        XCTAssertTrue(plain.stdout.contains("proxy A-distance") && plain.stdout.contains("recommendation"), plain.stdout)
    }

    /// `demo --json` (and the run's metrics.json) carries the diagnosis its table's note prints: the numbers
    /// `diagnose --json` gives for the demo's source and target, with the two sets named (it had none).
    func testDemoJSONHoldsTheDiagnosisOfItsShift() throws {
        let out = Self.root.appendingPathComponent("demo-run").path
        let r = try toy(["demo", "--fixtures", data.path, "--json", "--threads", "1", "--out", out])
        XCTAssertEqual(r.status, 0, r.stderr)
        let demo = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
        var diagnosis = try XCTUnwrap(demo["diagnosis"] as? [String: Any], r.stdout)
        XCTAssertEqual(diagnosis.removeValue(forKey: "source") as? String, "source-train.csv")
        XCTAssertEqual(diagnosis.removeValue(forKey: "target") as? String, "target-unlabelled.csv")
        let d = try toy(["diagnose", "--source", trainCSV, "--target", data.appendingPathComponent("target-unlabelled.csv").path,
                         "--json", "--threads", "1"])
        XCTAssertEqual(d.status, 0, d.stderr)
        var alone = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(d.stdout.utf8)) as? [String: Any], d.stdout)
        alone["app"] = nil; alone["command"] = nil
        XCTAssertGreaterThan(alone["proxy_a_distance"] as? Double ?? 0, 0.5, "the toy's shift is large")
        XCTAssertEqual(diagnosis as NSDictionary, alone as NSDictionary)
        let metrics = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/metrics.json"))) as! [String: Any]
        // metrics.json holds the same object, to the last digit (it used to be re-encoded, which changed some).
        XCTAssertEqual(metrics["diagnosis"] as? NSDictionary, demo["diagnosis"] as? NSDictionary)
        XCTAssertEqual(metrics["results"] as? NSArray, demo["results"] as? NSArray)
    }

    /// `adapt --target-labelled` with K labels per class: the target-only, supervised and semi rows, each with
    /// labels_per_class K; semi (source labels, K target labels and the unlabelled target) beats the K target labels
    /// alone and source-only, is not below supervised, and is the default model. Test examples never train: an overlap is refused.
    func testFewTargetLabelsSemiBeatsTargetOnly() throws {
        let unlabelled = data.appendingPathComponent("target-unlabelled.csv").path
        let targetTest = data.appendingPathComponent("target-test.csv").path
        let pool = data.appendingPathComponent("target-labelled.csv").path
        let out = try toy(["adapt", "--source", trainCSV, "--target", unlabelled, "--target-test", targetTest,
                           "--target-labelled", pool, "--target-labels-per-class", "3", "--method", "source-only",
                           "--json", "--threads", "1"])
        let rows = try results(out)
        let base = accuracy(rows, "source-only", level: "features")
        let own = accuracy(rows, "target-only", labels: 3), supervised = accuracy(rows, "supervised", labels: 3)
        let semi = accuracy(rows, "semi", labels: 3)
        print("toy, 3 target labels per class: source-only \(base), target-only \(own), supervised \(supervised), semi \(semi)")
        XCTAssertGreaterThan(semi, own + 0.02)
        XCTAssertGreaterThan(semi, base + 0.02)
        XCTAssertGreaterThanOrEqual(semi, supervised, "the unlabelled target on top of the labels")
        for name in ["target-only", "supervised", "semi"] {
            let row = try XCTUnwrap(rows.first { $0["strategy"] as? String == name })
            XCTAssertEqual(row["labels_per_class"] as? Int, 3, name)
            XCTAssertEqual(row["level"] as? String, "features", name)
        }
        let object = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as! [String: Any]
        XCTAssertEqual((object["default_model"] as? [String: Any])?["id"] as? String, "semi-features-3")

        // All of the pool (no K) and only the required options besides it.
        let all = try toy(["adapt", "--source", trainCSV, "--target", unlabelled, "--target-labelled", pool])
        XCTAssertEqual(all.status, 0, all.stderr)
        XCTAssertTrue(all.stdout.contains("semi"), all.stdout)

        // The test set as labelled examples: one line naming the file and the problem, no run.
        let overlap = try toy(["adapt", "--source", trainCSV, "--target", unlabelled, "--target-test", targetTest,
                               "--target-labelled", targetTest])
        XCTAssertNotEqual(overlap.status, 0)
        let lines = overlap.stderr.split(separator: "\n").filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, 1, overlap.stderr)
        XCTAssertTrue(overlap.stderr.contains("target-test.csv") && overlap.stderr.contains("also in the target test set"), overlap.stderr)
        // Labelled examples of one class only: target-only would be a one-class model. One line, no run.
        let oneClass = try table("target-labelled-c0.csv", from: pool) { $0.filter { $0.hasPrefix("c0,") } }
        let single = try toy(["adapt", "--source", trainCSV, "--target", unlabelled, "--target-labelled", oneClass.path,
                              "--out", Self.root.appendingPathComponent("runs-one-class").path])
        XCTAssertEqual(single.status, 1)
        XCTAssertEqual(single.stderr.split(separator: "\n").count, 1, single.stderr)
        XCTAssertTrue(single.stderr.contains("target-labelled-c0.csv") && single.stderr.contains("one class ('c0')"), single.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: Self.root.appendingPathComponent("runs-one-class").path))
        let noPool = try toy(["adapt", "--source", trainCSV, "--target", unlabelled, "--target-labels-per-class", "3"])
        XCTAssertNotEqual(noPool.status, 0)
        XCTAssertTrue(noPool.stderr.contains("--target-labels-per-class needs --target-labelled"), noPool.stderr)
    }

    /// `finetune --unfreeze auto` with only its required options: every depth of the toy backbone (0-2 blocks) is
    /// tried on four fifths and scored on the fifth held out; the default 2 stays unless the most accurate depth
    /// beats it beyond chance (McNemar); the model trained is the very model
    /// `--unfreeze <that depth>` trains; run.json records the search. End-to-end adapt chooses its depth the same way.
    func testUnfreezeAutoChoosesTheDepthByValidation() throws {
        let runs = Self.root.appendingPathComponent("runs-unfreeze")
        try? FileManager.default.removeItem(at: runs)
        let out = try toy(["finetune", "--train", trainCSV, "--test", testCSV, "--unfreeze", "auto", "--no-baseline",
                           "--out", runs.appendingPathComponent("auto").path, "--json", "--threads", "1"])
        let row = try XCTUnwrap(try results(out).first { $0["strategy"] as? String == "finetune" })
        let search = try XCTUnwrap(row["unfreeze"] as? [String: Any], "\(row)")
        let curve = try XCTUnwrap(search["curve"] as? [[String: Any]])
        XCTAssertEqual(curve.map { $0["blocks"] as? Int }, [0, 1, 2])
        let scores = curve.map { ($0["validation_accuracy"] as! Double, -($0["validation_loss"] as! Double)) }
        let chosen = try XCTUnwrap(search["chosen"] as? Int), best = try XCTUnwrap(search["best"] as? Int)
        XCTAssertEqual(best, scores.indices.max { scores[$0] < scores[$1] }, "the most accurate depth, the lower loss on a tie")
        XCTAssertEqual(search["default_blocks"] as? Int, 2)
        if let p = search["p_value"] as? Double {
            XCTAssertEqual(chosen, p < 0.05 ? best : 2, "the default stays unless the best beats it beyond chance")
        } else {
            XCTAssertEqual(chosen, best)
        }
        let record = try JSONSerialization.jsonObject(with: Data(contentsOf: runs.appendingPathComponent("auto/run.json"))) as! [String: Any]
        XCTAssertEqual((record["unfreeze"] as? [String: Any])?["chosen"] as? Int, chosen)
        let info = try toy(["info", "--model", runs.appendingPathComponent("auto").path])
        XCTAssertTrue(info.stdout.contains("--unfreeze auto: held-out accuracy"), info.stdout)
        let fixed = try results(try toy(["finetune", "--train", trainCSV, "--test", testCSV, "--unfreeze", "\(chosen)",
                                         "--no-baseline", "--json", "--threads", "1"]))
        print("toy --unfreeze auto: validation \(scores), chose \(chosen); test \(accuracy([row], "finetune"))")
        XCTAssertEqual(accuracy([row], "finetune"), accuracy(fixed, "finetune"), "auto keeps the model of the depth it chose")

        let adapted = try results(try toy(["adapt", "--source", trainCSV, "--target", data.appendingPathComponent("target-unlabelled.csv").path,
                                           "--level", "end-to-end", "--method", "source-only", "--unfreeze", "auto", "--json", "--threads", "1"]))
        let e2e = try XCTUnwrap(adapted.first { $0["level"] as? String == "end-to-end" })
        XCTAssertNotNil((e2e["unfreeze"] as? [String: Any])?["chosen"] as? Int, "\(e2e)")
    }

    /// `finetune --unfreeze auto`, `adapt --target-labelled` and `adapt` from features folders killed midway resume
    /// to the bytes of uninterrupted runs (the depth search's and the few-label rows' trainings each checkpoint under
    /// their own names); their runs then serve `evaluate` and `predict` in the minimal form.
    func testDepthSearchAndFewLabelRunsResumeToTheSameBytes() throws {
        let runs = Self.root.appendingPathComponent("runs-resume-new")
        try? FileManager.default.removeItem(at: runs)
        let unlabelled = data.appendingPathComponent("target-unlabelled.csv").path
        let folders = try featureFolders()
        let cases: [(name: String, args: [String], model: String, kill: String)] = [
            ("adapt-folders", ["adapt", "--source", folders.appendingPathComponent("source").path,
                               "--target", folders.appendingPathComponent("target").path, "--method", "source-only,dann"], "dann-features", "3"),
            ("finetune", ["finetune", "--train", trainCSV, "--unfreeze", "auto", "--no-baseline"], "finetune", "9"),
            ("adapt", ["adapt", "--source", trainCSV, "--target", unlabelled, "--method", "source-only",
                       "--target-labelled", data.appendingPathComponent("target-labelled.csv").path,
                       "--target-labels-per-class", "3"], "semi-features-3", "3"),
        ]
        for c in cases {
            let args = c.args + ["--json", "--threads", "1", "--no-cache"]
            let wholePath = runs.appendingPathComponent("\(c.name)-whole").path, killedPath = runs.appendingPathComponent("\(c.name)-killed").path
            let whole = try toy(args + ["--out", wholePath])
            XCTAssertEqual(whole.status, 0, whole.stderr)
            let killed = try ReleaseApp.run("toy-tl", args + ["--out", killedPath], environment: [
                "TL_MODELS_DIR": Self.root.appendingPathComponent("models").path, "TL_TEST_KILL_AFTER_CHECKPOINTS": c.kill])
            XCTAssertEqual(killed.status, 9, "\(c.name) should have been killed: \(killed.stderr)")
            let resumed = try toy([c.args[0], "--resume", killedPath])
            XCTAssertEqual(resumed.status, 0, resumed.stderr)
            let x = try Data(contentsOf: URL(fileURLWithPath: wholePath + "/models/\(c.model).safetensors"))
            let y = try Data(contentsOf: URL(fileURLWithPath: killedPath + "/models/\(c.model).safetensors"))
            XCTAssertEqual(x, y, c.name)
            let a = try JSONSerialization.jsonObject(with: Data(whole.stdout.utf8)) as! [String: Any]
            let b = try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)) as! [String: Any]
            XCTAssertEqual(a["default_model"] as? NSDictionary, b["default_model"] as? NSDictionary, c.name)
            let search = { (o: [String: Any]) in (o["results"] as? [[String: Any]])?.compactMap { $0["unfreeze"] as? NSDictionary } }
            XCTAssertEqual(search(a), search(b), c.name)
            for follow in [["evaluate", "--model", killedPath, "--data", c.name.hasPrefix("adapt") ? data.appendingPathComponent("target-test.csv").path : testCSV],
                           ["predict", "--model", killedPath, unlabelled]] {
                let out = try toy(follow)
                XCTAssertEqual(out.status, 0, "\(follow.joined(separator: " ")): \(out.stderr)")
                XCTAssertFalse(out.stdout.isEmpty)
            }
        }
    }

    func testBadInputIsOneLineAndLeavesNoRunDirectory() throws {
        let bad = Self.root.appendingPathComponent("bad")
        try FileManager.default.createDirectory(at: bad, withIntermediateDirectories: true)
        let oneClass = bad.appendingPathComponent("one-class.csv")
        try "label,x0\nc0,1\nc0,2\n".write(to: oneClass, atomically: true, encoding: .utf8)
        let broken = bad.appendingPathComponent("broken.csv")
        try "label,x0,x1\nc0,1,2\nc1,3,oops\n".write(to: broken, atomically: true, encoding: .utf8)
        let out = bad.appendingPathComponent("run").path
        func write(_ name: String, _ text: String) throws -> String {
            let file = bad.appendingPathComponent(name)
            try text.write(to: file, atomically: true, encoding: .utf8)
            return file.path
        }
        let all = (0..<5).map { "c\($0) 1\n" }.joined()
        let cases: [([String], String)] = [
            (["extract", "--train", bad.appendingPathComponent("missing").path, "--test", testCSV], "no such file or directory"),
            (["extract", "--train", oneClass.path, "--test", testCSV], "needs at least 2 classes"),
            (["extract", "--train", broken.path, "--test", testCSV], "broken.csv:3: 'oops' is not a number"),
            // Options checked before any work: class weights that are all 0, name a class twice or one not in the
            // data; a depth the backbone (2 blocks) does not have.
            (["extract", "--train", trainCSV, "--class-weights", try write("zero.txt", all.replacingOccurrences(of: " 1", with: " 0"))],
             "every class weight is 0"),
            (["extract", "--train", trainCSV, "--class-weights", try write("twice.txt", all + "c2 3\n")], "twice.txt:6: a second weight for class 'c2'"),
            (["extract", "--train", trainCSV, "--class-weights", try write("shoe.txt", all + "shoe 3\n")], "class 'shoe' is not in the training data"),
            (["finetune", "--train", trainCSV, "--unfreeze", "3"], "--unfreeze 3: the backbone has 2 blocks"),
            // A target test set with a class the source lacks: named as such (it said "the model's classes" before
            // any model existed).
            (["adapt", "--source", trainCSV, "--target", data.appendingPathComponent("target-unlabelled.csv").path, "--target-test",
              try write("k9-test.csv", try String(contentsOf: data.appendingPathComponent("target-test.csv"), encoding: .utf8)
                .split(separator: "\n").prefix(2).enumerated().map { $0.offset == 1 ? "k9" + $0.element.drop { $0 != "," } : String($0.element) }
                .joined(separator: "\n"))], "class 'k9' is not one of the classes trained on (c0, c1, c2, c3, c4)"),
            // A target of 3 samples: adaptation standardises and chooses on it (2 samples chose DANN, 8 points down).
            (["adapt", "--source", trainCSV, "--target", try write("tiny-target.csv", try String(contentsOf: data.appendingPathComponent("target-unlabelled.csv"), encoding: .utf8)
                .split(separator: "\n").prefix(4).joined(separator: "\n"))], "tiny-target.csv: has 3 samples; adaptation estimates the target's statistics"),
        ]
        for (args, message) in cases {
            let r = try toy(args + ["--out", out])
            XCTAssertNotEqual(r.status, 0, args.joined(separator: " "))
            let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty }
            XCTAssertEqual(lines.count, 1, r.stderr)
            XCTAssertTrue(r.stderr.contains(message), "expected '\(message)' in: \(r.stderr)")
            XCTAssertFalse(FileManager.default.fileExists(atPath: out))
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".partial"))
        }
        // --method and --level are parsed as their types: a bad value is a usage error naming the option.
        for (option, value) in [("--method", "dann,nope"), ("--method", "dann,"), ("--level", "deep")] {
            let r = try toy(["adapt", "--source", trainCSV, "--target", testCSV, option, value, "--out", out])
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertTrue(r.stderr.contains("'\(value)' is invalid for '\(option)"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".partial"))
        }
        for value in ["-1000", "nan"] {
            let r = try toy(["finetune", "--train", trainCSV, "--backbone-lr-mult=\(value)", "--out", out])
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertTrue(r.stderr.contains("--backbone-lr-mult must be a finite number >= 0"), r.stderr)
        }
        // A required option missing: the subcommand's usage, as for a parse error (it printed the app's).
        for (command, option) in [("extract", "--train"), ("adapt", "--source"), ("finetune", "--train")] {
            let r = try toy([command])
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertEqual(r.stderr, "Error: missing \(option) (see --help)\nUsage: toy-tl \(command) <options>\n  See 'toy-tl \(command) --help' for more information.\n")
        }
        // --unfreeze 0 trains no backbone block: how blocks train cannot be set (it was accepted and ignored).
        for extra in [["--gradual"], ["--backbone-lr-mult", "0.5"]] {
            let r = try toy(["finetune", "--train", trainCSV, "--unfreeze", "0", "--out", out] + extra)
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertTrue(r.stderr.contains("--unfreeze 0 trains none"), r.stderr)
            XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".partial"))
        }
        // Options that train the backbone change nothing at the feature level: refused, not ignored.
        for extra in [["--augment"], ["--unfreeze", "auto"], ["--gradual"]] {
            let r = try toy(["adapt", "--source", trainCSV, "--target", testCSV, "--level", "features", "--out", out] + extra)
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertTrue(r.stderr.contains("train the backbone: they need --level auto, end-to-end or both"), r.stderr)
        }
        // Missing pretrained model: the error says which command fetches it.
        let noModels = try ReleaseApp.run("toy-tl", ["extract", "--train", trainCSV, "--test", testCSV, "--no-cache", "--out", out],
                                          environment: ["TL_MODELS_DIR": bad.appendingPathComponent("no-models").path])
        XCTAssertNotEqual(noModels.status, 0)
        XCTAssertTrue(noModels.stderr.contains("scripts/fetch-models"), noModels.stderr)
        XCTAssertEqual(noModels.stderr.split(separator: "\n").filter { !$0.isEmpty }.count, 1, noModels.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: out + ".partial"))
        let notRun = try toy(["evaluate", "--model", bad.path, "--data", testCSV])
        XCTAssertNotEqual(notRun.status, 0)
        XCTAssertTrue(notRun.stderr.contains("not a run directory"), notRun.stderr)
        // A run made by another app, or with another class count.
        let run = Self.root.appendingPathComponent("runs-bad/extract").path
        try? FileManager.default.removeItem(atPath: run)
        XCTAssertEqual(try toy(["extract", "--train", trainCSV, "--test", testCSV, "--out", run, "--quiet", "--no-baseline"]).status, 0)
        let sixClasses = bad.appendingPathComponent("six.csv")
        try "label,\((0..<32).map { "x\($0)" }.joined(separator: ","))\n".appending((0..<6).map { "k\($0)," + Array(repeating: "0", count: 32).joined(separator: ",") }.joined(separator: "\n")).write(to: sixClasses, atomically: true, encoding: .utf8)
        let mismatch = try toy(["evaluate", "--model", run, "--data", sixClasses.path])
        XCTAssertNotEqual(mismatch.status, 0)
        XCTAssertTrue(mismatch.stderr.contains("classes"), mismatch.stderr)
        var record = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: run + "/run.json"))) as! [String: Any]
        record["app"] = "vision-tl"
        try JSONSerialization.data(withJSONObject: record).write(to: URL(fileURLWithPath: run + "/run.json"))
        let other = try toy(["evaluate", "--model", run, "--data", testCSV])
        XCTAssertTrue(other.stderr.contains("made by vision-tl, not toy-tl"), other.stderr)
    }
}
