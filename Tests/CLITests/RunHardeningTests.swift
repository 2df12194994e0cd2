import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import XCTest
import TransferEngine

/// Run directories and printing under the conditions issue 15's review found (through the toy app's release binary,
/// which is quick): resume from another folder, data changed under a killed run, a run.json pointing the cache
/// elsewhere, two processes on one run, --overwrite whose new run fails, temporary files of killed writes, and
/// control characters in labels and file names.
final class RunHardeningTests: XCTestCase {
    var work: URL { ToyWorkflowTests.root.appendingPathComponent("hardening-\(name.filter { $0.isLetter })") }
    var models: String { ToyWorkflowTests.root.appendingPathComponent("models").path }
    let data = ToyWorkflowTests.root.appendingPathComponent("data")

    override func setUpWithError() throws {
        try? FileManager.default.removeItem(at: work)
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        for file in ["source-train.csv", "source-test.csv"] {
            try FileManager.default.copyItem(at: data.appendingPathComponent(file), to: work.appendingPathComponent(file))
        }
    }

    func toy(_ args: [String], in directory: URL? = nil, killAfter: Int? = nil) throws -> CLITests.Output {
        var env = ["TL_MODELS_DIR": models, "TL_CACHE_DIR": work.appendingPathComponent("cache").path]
        if let killAfter { env["TL_TEST_KILL_AFTER_CHECKPOINTS"] = String(killAfter) }
        return try ReleaseApp.run("toy-tl", args, environment: env, directory: directory)
    }

    /// finetune with relative paths, started in `work`.
    func finetune(_ out: String, killAfter: Int? = nil) throws -> CLITests.Output {
        try toy(["finetune", "--train", "source-train.csv", "--test", "source-test.csv", "--labels-per-class", "20",
                 "--threads", "1", "--quiet", "--out", out], in: work, killAfter: killAfter)
    }

    func killed(_ out: String) throws -> String {
        let died = try finetune(out, killAfter: 12)
        XCTAssertEqual(died.status, 9, died.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: work.appendingPathComponent(out + ".partial").path))
        return work.appendingPathComponent(out).path
    }

    func model(_ run: String) throws -> Data {
        try Data(contentsOf: URL(fileURLWithPath: run).appendingPathComponent("models/finetune-20.safetensors"))
    }

    func testResumeFromAnotherFolderReadsTheRunsRelativePaths() throws {
        XCTAssertEqual(try finetune("whole").status, 0)
        let run = try killed("run")
        let history = URL(fileURLWithPath: run + ".partial/history")
        let killedCurves = try FileManager.default.contentsOfDirectory(atPath: history.path)
        XCTAssertFalse(killedCurves.isEmpty, "a killed run keeps the curves of its epochs so far")
        let resumed = try toy(["finetune", "--resume", run], in: ToyWorkflowTests.root)
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try model(run), try model(work.appendingPathComponent("whole").path))
        // The finished run's curves are those of the uninterrupted run, epoch by epoch (timings are not in them).
        let whole = work.appendingPathComponent("whole/history")
        for file in try FileManager.default.contentsOfDirectory(atPath: whole.path) {
            let expected = try String(contentsOf: whole.appendingPathComponent(file), encoding: .utf8)
            XCTAssertTrue(expected.hasPrefix("epoch,train_loss,train_accuracy,validation_loss,validation_accuracy,learning_rate,adaptation_loss\n1,"), expected)
            XCTAssertEqual(try String(contentsOfFile: run + "/history/" + file, encoding: .utf8), expected, file)
        }
    }

    /// A file replaced with its size and time kept (as `cp -p` or `rsync -a` do) is noticed by its contents.
    func testResumeRefusesDataThatChangedSinceTheRunStarted() throws {
        let run = try killed("run")
        let csv = work.appendingPathComponent("source-train.csv")
        let time = try FileManager.default.attributesOfItem(atPath: csv.path)[.modificationDate] as! Date
        var text = try String(contentsOf: csv, encoding: .utf8)
        let i = text[text.firstIndex(of: "\n")!...].firstIndex(of: "7")!   // a value, not the header
        text.replaceSubrange(i...i, with: "8")
        try text.write(to: csv, atomically: false, encoding: .utf8)
        try FileManager.default.setAttributes([.modificationDate: time], ofItemAtPath: csv.path)
        let resumed = try toy(["finetune", "--resume", run])
        XCTAssertNotEqual(resumed.status, 0)
        XCTAssertTrue(resumed.stderr.contains("source-train.csv: the train data changed since the run started"), resumed.stderr)
        XCTAssertEqual(resumed.stderr.split(separator: "\n").count, 1, resumed.stderr)
    }

    /// A checkpoint made for another schedule than the one this program plans for the same training (a run started
    /// by another version of the program) is refused with one line, not continued into a model neither would make.
    func testResumeRefusesACheckpointMadeForAnotherSchedule() throws {
        let run = try killed("run")
        let folder = URL(fileURLWithPath: run + ".partial/checkpoints")
        let files = try FileManager.default.contentsOfDirectory(at: folder, includingPropertiesForKeys: nil)
        let file = try XCTUnwrap(files.first { $0.pathExtension == "safetensors" }, "\(files)")
        let saved = try SafeTensors.read(file)
        var info = saved.metadata
        XCTAssertNotNil(info["total_steps"], "a checkpoint records the schedule it was made for")
        info["total_steps"] = String(Int(info["total_steps"] ?? "0")! + 1)
        try SafeTensors.write(try saved.tensors(), metadata: info, to: file)
        let resumed = try toy(["finetune", "--resume", run])
        XCTAssertEqual(resumed.status, 1, resumed.stderr)
        XCTAssertTrue(resumed.stderr.contains("optimizer steps"), resumed.stderr)
        XCTAssertEqual(resumed.stderr.split(separator: "\n").count, 1, resumed.stderr)
    }

    /// With --resume the run's own options replay: an option that would be ignored (--epochs, --train) is refused
    /// naming it; how to run (--threads, --quiet, --json, the cache) may be given.
    func testResumeRefusesOptionsItWouldIgnore() throws {
        let run = try killed("run")
        for extra in [["--epochs", "5"], ["--train", "source-test.csv"], ["--seed=7"]] {
            let r = try toy(["finetune", "--resume", run] + extra)
            XCTAssertEqual(r.status, 64, r.stderr)
            XCTAssertTrue(r.stderr.contains("\(extra[0].prefix { $0 != "=" }): --resume continues the run with the options it was started with"), r.stderr)
            XCTAssertTrue(FileManager.default.fileExists(atPath: run + ".partial/checkpoints"))
        }
        let resumed = try toy(["finetune", "--resume", run, "--threads", "1", "--quiet", "--json", "--cache", work.appendingPathComponent("cache").path])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(resumed.stderr, "", "--quiet given with --resume applies")
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)), "--json given with --resume applies")
    }

    /// A --resume that fails for a cause outside the run (here the pretrained models are not where it looks) keeps
    /// the checkpoints: once the cause is fixed, --resume ends with the uninterrupted run's model.
    func testAFailedResumeKeepsTheRunForALaterOne() throws {
        XCTAssertEqual(try finetune("whole").status, 0)
        let run = try killed("run")
        let failed = try ReleaseApp.run("toy-tl", ["finetune", "--resume", run], environment: [
            "TL_MODELS_DIR": work.appendingPathComponent("no-models").path, "TL_CACHE_DIR": work.appendingPathComponent("cache").path])
        XCTAssertEqual(failed.status, 1, failed.stderr)
        XCTAssertTrue(failed.stderr.contains("model file not found") && failed.stderr.contains("is kept"), failed.stderr)
        XCTAssertEqual(failed.stderr.split(separator: "\n").count, 1, failed.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + ".partial/checkpoints"))
        let resumed = try toy(["finetune", "--resume", run])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try model(run), try model(work.appendingPathComponent("whole").path))
    }

    /// The feature cache is a convenience: one that cannot be written (a file where its folder should be) gives one
    /// note for the folder, and the command goes on.
    func testAnUnwritableFeatureCacheIsANoteNotAnError() throws {
        let file = work.appendingPathComponent("not-a-folder")
        try Data().write(to: file)
        let r = try toy(["extract", "--train", "source-train.csv", "--test", "source-test.csv", "--threads", "1", "--cache", file.path],
                        in: work)
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(r.stderr.split(separator: "\n").filter { $0.hasPrefix("feature cache") },
                       ["feature cache \(file.path): cannot be written (File exists); features are not cached (--cache DIR names another folder, --no-cache skips it)"],
                       r.stderr)
    }

    /// An output that would overwrite an input is refused before any work, and nothing is written: `predict --csv`
    /// naming one of its inputs, `evaluate --out` naming the run's own folder (its metrics.json) or a folder inside
    /// the data; a `--csv` whose folder does not exist is refused before the predictions, not after.
    func testOutputsThatWouldOverwriteInputsAreRefused() throws {
        XCTAssertEqual(try finetune("run").status, 0)
        let table = work.appendingPathComponent("source-test.csv"), metrics = work.appendingPathComponent("run/metrics.json")
        let before = (try Data(contentsOf: table), try Data(contentsOf: metrics))
        for (args, message) in [(["predict", "--model", "run", "source-test.csv", "--csv", "source-test.csv"], "is the input source-test.csv"),
                                (["predict", "--model", "run", "source-test.csv", "--csv", "gone/p.csv"], "does not exist"),
                                (["evaluate", "--model", "run", "--data", "source-test.csv", "--out", "run"], "is a run's folder"),
                                (["evaluate", "--model", "run", "--data", work.path, "--out", "analysis"], "is inside the input")] {
            let r = try toy(args + ["--threads", "1"], in: work)
            XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
            XCTAssertEqual(r.stdout, "", "\(args): nothing predicted or scored before the refusal")
        }
        XCTAssertEqual(try Data(contentsOf: table), before.0)
        XCTAssertEqual(try Data(contentsOf: metrics), before.1)
        XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("analysis").path))

        // A folder that already holds a file evaluate writes (a user's own predictions.csv) keeps it, unless --overwrite.
        let mine = work.appendingPathComponent("mine")
        try FileManager.default.createDirectory(at: mine, withIntermediateDirectories: true)
        try Data("my predictions\n".utf8).write(to: mine.appendingPathComponent("predictions.csv"))
        let kept = try toy(["evaluate", "--model", "run", "--data", "source-test.csv", "--out", "mine"], in: work)
        XCTAssertEqual(kept.status, 1, kept.stderr)
        XCTAssertTrue(kept.stderr.contains("mine: already holds predictions.csv; give another --out, or add --overwrite to replace it"), kept.stderr)
        XCTAssertEqual(kept.stdout, "")
        XCTAssertEqual(try String(contentsOf: mine.appendingPathComponent("predictions.csv"), encoding: .utf8), "my predictions\n")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: mine.path), ["predictions.csv"])
        let replaced = try toy(["evaluate", "--model", "run", "--data", "source-test.csv", "--out", "mine", "--overwrite"], in: work)
        XCTAssertEqual(replaced.status, 0, replaced.stderr)
        XCTAssertTrue(try String(contentsOf: mine.appendingPathComponent("predictions.csv"), encoding: .utf8).hasPrefix("input,"))
        // An empty folder, or a new one, needs nothing.
        try FileManager.default.createDirectory(at: work.appendingPathComponent("empty"), withIntermediateDirectories: true)
        XCTAssertEqual(try toy(["evaluate", "--model", "run", "--data", "source-test.csv", "--out", "empty"], in: work).status, 0)
    }

    /// Output folders never swallow inputs: a run's --out inside its data, an --overwrite of a folder that holds the
    /// data, export into a run, features into its own data are refused and leave everything as it was; a path whose
    /// folder is a file is one plain line (not Foundation's "Error Domain=NSCocoaErrorDomain Code=516 ..."); and
    /// --resume accepts the RUN.partial a user sees after a kill.
    func testOutputFoldersNeverSwallowInputs() throws {
        XCTAssertEqual(try finetune("run").status, 0)
        let data = work.appendingPathComponent("run/data")
        try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: work.appendingPathComponent("source-train.csv"), to: data.appendingPathComponent("train.csv"))
        try Data().write(to: work.appendingPathComponent("afile"))
        let cases: [([String], String)] = [
            (["extract", "--train", "run/data/train.csv", "--out", "run", "--overwrite"], "run: holds the input run/data/train.csv, which replacing it would delete"),
            (["extract", "--train", "source-train.csv", "--out", "source-train.csv/x"], "is inside the input source-train.csv"),
            (["export", "--model", "run", "--out", "run/deploy"], "run/deploy: is inside the input run"),
            (["features", "--data", "run/data/train.csv", "--out", "run/data/train.csv"], "is the input run/data/train.csv"),
            (["extract", "--train", "source-train.csv", "--out", "afile/sub"], "afile: File exists"),
        ]
        for (args, message) in cases {
            let r = try toy(args + ["--threads", "1"] + (args[0] == "export" ? [] : ["--quiet"]), in: work)
            XCTAssertEqual(r.status, 1, "\(args): \(r.stderr)")
            XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
            XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
        }
        XCTAssertTrue(FileManager.default.fileExists(atPath: data.appendingPathComponent("train.csv").path), "the data is where it was")
        XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("run/deploy").path))
        let run = try killed("killed")
        let resumed = try toy(["finetune", "--resume", run + ".partial"])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertEqual(try model(run), try model(work.appendingPathComponent("run").path))
    }

    func testACacheFolderInRunJsonIsNotUsedOnResume() throws {
        let run = try killed("run")
        let json = URL(fileURLWithPath: run + ".partial/run.json")
        var record = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as! [String: Any]
        let elsewhere = work.appendingPathComponent("injected-cache").path
        record["arguments"] = (record["arguments"] as! [String]) + ["--cache", elsewhere]
        try JSONSerialization.data(withJSONObject: record).write(to: json)
        let resumed = try toy(["finetune", "--resume", run])
        XCTAssertEqual(resumed.status, 0, resumed.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: elsewhere), "the run.json's --cache was followed")
        XCTAssertTrue(FileManager.default.fileExists(atPath: work.appendingPathComponent("cache").path), "this command's cache is used")
    }

    /// A process working on a run holds its lock: another --resume, or --overwrite, is refused and removes nothing.
    func testARunInUseIsNeitherResumedNorOverwrittenByAnotherProcess() throws {
        let run = try killed("run")
        let fd = open(run + ".partial/.lock", O_RDWR)
        XCTAssertGreaterThanOrEqual(fd, 0)
        XCTAssertEqual(flock(fd, LOCK_EX | LOCK_NB), 0, "the killed run's lock was released by its death")
        let resumed = try toy(["finetune", "--resume", run])
        XCTAssertNotEqual(resumed.status, 0)
        XCTAssertTrue(resumed.stderr.contains("another process is working on this run"), resumed.stderr)
        let overwritten = try toy(["finetune", "--train", "source-train.csv", "--test", "source-test.csv",
                                   "--labels-per-class", "20", "--threads", "1", "--quiet", "--out", "run", "--overwrite"], in: work)
        XCTAssertNotEqual(overwritten.status, 0)
        XCTAssertTrue(overwritten.stderr.contains("another process is working on this run"), overwritten.stderr)
        // The same command without --overwrite: not the advice to --resume or --overwrite (both refused just now).
        let same = try finetune("run")
        XCTAssertNotEqual(same.status, 0)
        XCTAssertTrue(same.stderr.contains("another process is working on this run"), same.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: run + ".partial/checkpoints"), "the run in use was left alone")
        close(fd)
        XCTAssertEqual(try toy(["finetune", "--resume", run]).status, 0)
    }

    func testOverwriteKeepsTheFinishedRunUntilTheNewOneFinishes() throws {
        XCTAssertEqual(try finetune("run").status, 0)
        let record = try Data(contentsOf: work.appendingPathComponent("run/run.json"))
        // A learning rate this large makes the loss overflow during training, after the new run has started.
        let failed = try toy(["finetune", "--train", "source-train.csv", "--labels-per-class", "20", "--threads", "1",
                              "--quiet", "--lr", "1e30", "--out", "run", "--overwrite"], in: work)
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertTrue(failed.stderr.contains("diverged"), failed.stderr)
        XCTAssertEqual(try Data(contentsOf: work.appendingPathComponent("run/run.json")), record, "the finished run is intact")
        XCTAssertFalse(FileManager.default.fileExists(atPath: work.appendingPathComponent("run.partial").path))
        XCTAssertEqual(try finetune("run", killAfter: nil).status, 1, "without --overwrite an existing run is refused")
        let replaced = try toy(["finetune", "--train", "source-train.csv", "--labels-per-class", "10", "--threads", "1",
                                "--quiet", "--out", "run", "--overwrite"], in: work)
        XCTAssertEqual(replaced.status, 0, replaced.stderr)
        XCTAssertTrue(FileManager.default.fileExists(atPath: work.appendingPathComponent("run/models/finetune-10.safetensors").path))
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: work.path).filter { $0.hasPrefix("run.") }
        XCTAssertEqual(leftovers, [], "no replaced or partial folder left")
    }

    /// A run killed while its folder was being created (before run.json) is started again, not stuck; a folder
    /// of the user's that merely has the name is never removed.
    func testARunKilledWhileBeingCreatedStartsAgain() throws {
        let stillborn = work.appendingPathComponent("run.partial")
        try FileManager.default.createDirectory(at: stillborn.appendingPathComponent("checkpoints"), withIntermediateDirectories: true)
        try Data().write(to: stillborn.appendingPathComponent(".lock"))
        let resumed = try toy(["finetune", "--resume", work.appendingPathComponent("run").path])
        XCTAssertTrue(resumed.stderr.contains("stopped before it started; run the command again"), resumed.stderr)
        XCTAssertEqual(try finetune("run").status, 0)
        let mine = work.appendingPathComponent("mine.partial")
        try FileManager.default.createDirectory(at: mine, withIntermediateDirectories: true)
        try Data("notes".utf8).write(to: mine.appendingPathComponent("notes.txt"))
        let refused = try finetune("mine")
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(FileManager.default.fileExists(atPath: mine.appendingPathComponent("notes.txt").path))
    }

    func testTemporaryFilesOfKilledWritesAreDroppedWhenTheRunFinishes() throws {
        let run = try killed("run")
        try FileManager.default.createDirectory(atPath: run + ".partial/models", withIntermediateDirectories: true)
        for stray in ["models/.finetune-20.safetensors.tmp-99-abc", ".run.json.tmp-98-def"] {
            try Data([1]).write(to: URL(fileURLWithPath: run + ".partial/" + stray))
        }
        XCTAssertEqual(try toy(["finetune", "--resume", run]).status, 0)
        let files = FileManager.default.enumerator(atPath: run)!.allObjects as! [String]
        XCTAssertEqual(files.filter { $0.contains(".tmp-") || $0.hasSuffix(".lock") }, [], "\(files)")
    }

    /// Labels and file names come from the user's data: escape sequences are shown, never sent to the terminal.
    func testControlCharactersInLabelsAndFileNamesArePrintedEscaped() throws {
        let csv = work.appendingPathComponent("source-train.csv")
        let text = try String(contentsOf: csv, encoding: .utf8).replacingOccurrences(of: "\nc1,", with: "\nc1\u{1B}[31m,")
        try text.write(to: csv, atomically: true, encoding: .utf8)
        let out = try toy(["extract", "--train", "source-train.csv", "--threads", "1"], in: work)
        XCTAssertEqual(out.status, 0, out.stderr)
        XCTAssertFalse((out.stdout + out.stderr).contains("\u{1B}[31m"), "raw escape printed")
        XCTAssertTrue(out.stderr.contains("c1\\u{1B}[31m"), out.stderr)
        let missing = "no\u{1B}]0;title\u{7}such.csv"
        let failed = try toy(["extract", "--train", missing], in: work)
        XCTAssertNotEqual(failed.status, 0)
        XCTAssertFalse(failed.stderr.contains("\u{1B}"), failed.stderr)
        XCTAssertTrue(failed.stderr.contains("no\\u{1B}]0;title\\u{7}such.csv"), failed.stderr)
    }
}

extension RunHardeningTests {
    /// The toy's export predicts exactly as its run, with no models folder.
    func testExportedModelPredictsTheSameWithoutTheModelsFolder() throws {
        XCTAssertEqual(try finetune("run").status, 0)
        let dir = work.appendingPathComponent("exported").path
        let export = try toy(["export", "--model", work.appendingPathComponent("run").path, "--out", dir])
        XCTAssertEqual(export.status, 0, export.stderr)
        XCTAssertNotEqual(try toy(["export", "--model", work.appendingPathComponent("run").path, "--out", dir]).status, 0, "an existing folder is refused")
        let input = data.appendingPathComponent("target-unlabelled.csv").path
        let fromRun = try toy(["predict", "--model", work.appendingPathComponent("run").path, input, "--json"])
        let fromExport = try ReleaseApp.run("toy-tl", ["predict", "--model", dir, input, "--json"],
                                            environment: ["TL_MODELS_DIR": work.appendingPathComponent("nothing").path])
        XCTAssertEqual(fromExport.status, 0, fromExport.stderr)
        XCTAssertEqual(fromExport.stdout, fromRun.stdout)
        let card = try String(contentsOfFile: dir + "/README.md", encoding: .utf8)
        XCTAssertTrue(card.contains("- Classes ("), card)
        XCTAssertTrue(card.contains("Accuracy "), card)
        // info names the models folder the export uses: its own, whatever TL_MODELS_DIR says.
        let described = try ReleaseApp.run("toy-tl", ["info", "--model", dir], environment: ["TL_MODELS_DIR": work.appendingPathComponent("nothing").path])
        XCTAssertTrue(described.stdout.contains("models folder             \(dir)/Models"), described.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/Models/toy/backbone.safetensors"))

        // Another of the run's models: run.json and metrics.json of the export both name it as the default (the
        // run's metrics.json named the run's default, a model the export does not hold); every row stays.
        let scratch = work.appendingPathComponent("exported-scratch").path
        XCTAssertEqual(try toy(["export", "--model", work.appendingPathComponent("run").path, "--strategy", "scratch-20", "--out", scratch]).status, 0)
        func object(_ path: String) throws -> [String: Any] {
            try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        }
        let record = try object(scratch + "/run.json"), metrics = try object(scratch + "/metrics.json")
        let original = try object(work.appendingPathComponent("run/metrics.json").path)
        XCTAssertEqual(record["defaultModel"] as? String, "scratch-20")
        XCTAssertEqual((metrics["default_model"] as? [String: Any])?["id"] as? String, "scratch-20")
        XCTAssertEqual((metrics["default_model"] as? [String: Any])?["reason"] as? String, record["defaultReason"] as? String)
        XCTAssertEqual((metrics["results"] as? [Any])?.count, (original["results"] as? [Any])?.count)
        let info = try toy(["info", "--model", scratch])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.stdout.contains("a linear head on 16 features of a network trained from scratch"), info.stdout)
        // A short relative path is named as typed (it was the working folder's name and the file's), and a run
        // without label-free scores has no label-free column in its report.
        XCTAssertEqual((original["results"] as? [[String: Any]])?.last?["eval"] as? String, "source-test.csv")
        XCTAssertFalse(try String(contentsOf: work.appendingPathComponent("run/report.html"), encoding: .utf8).contains("ensemble agreement"))
    }
}

extension RunHardeningTests {
    /// report.html is one page that needs nothing else: no script, no external file, every in-page link resolves;
    /// it has the results, a section per model with its scores, confusion matrix and curves, and the features.
    func testReportIsOneSelfContainedPage() throws {
        let run = work.appendingPathComponent("adapt").path
        let out = try toy(["adapt", "--source", "source-train.csv", "--target", data.appendingPathComponent("target-unlabelled.csv").path,
                           "--target-test", data.appendingPathComponent("target-test.csv").path, "--method", "source-only,dann",
                           "--threads", "1", "--quiet", "--out", run], in: work)
        XCTAssertEqual(out.status, 0, out.stderr)
        let html = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
        XCTAssertTrue(html.hasPrefix("<!DOCTYPE html>") && html.hasSuffix("</html>\n"))
        for part in ["<h2>Data</h2>", "<h2>Results</h2>", "<h2>Source and target features before adaptation</h2>",
                     "id=\"model-source-only-features\"", "id=\"model-dann-features\"", "id=\"model-oracle-features\"",
                     "aria-label=\"confusion matrix\"", "aria-label=\"loss\"", "aria-label=\"accuracy\"", "best epoch",
                     "ensemble agreement", "source by class, target grey", "<h2 id=\"top-losses\">Top losses</h2>"] {
            XCTAssertTrue(html.contains(part), part)
        }
        XCTAssertFalse(html.contains("<script") || html.contains("http://") || html.contains("https://"))
        for source in html.components(separatedBy: "src=\"").dropFirst() { XCTAssertTrue(source.hasPrefix("data:image/png;base64,"), String(source.prefix(40))) }
        let links = html.components(separatedBy: "href=\"").dropFirst().map { String($0.prefix { $0 != "\"" }) }
        for link in links { XCTAssertTrue(link.hasPrefix("#") && html.contains("id=\"\(link.dropFirst())\""), link) }
        func count(_ s: String) -> Int { html.components(separatedBy: s).count - 1 }
        XCTAssertEqual(count("aria-label=\"confusion matrix\""), 3, "source-only, dann, oracle")
        XCTAssertEqual(count("aria-label=\"loss\""), 3)
        XCTAssertEqual(count("aria-label=\"adaptation loss\""), 1, "dann's domain loss, per epoch")
        XCTAssertEqual(count("aria-label=\"PCA scatter\""), 6, "before, source-only and dann: by domain and by class")
        // The default model's worst target-test samples, highest loss first.
        let losses = html.components(separatedBy: "<h2 id=\"top-losses\">")[1].components(separatedBy: "</table>")[0]
            .components(separatedBy: "<td class=num>").dropFirst().enumerated().filter { $0.offset % 2 == 1 }
            .map { Double($0.element.prefix { $0 != "<" })! }
        XCTAssertEqual(losses.count, 12)
        XCTAssertEqual(losses, losses.sorted(by: >))

        // Every figure is also a standalone SVG file that parses as XML.
        let plots = try FileManager.default.contentsOfDirectory(atPath: run + "/plots").sorted()
        XCTAssertEqual(plots, ["alignment-before.svg", "alignment-dann-features.svg", "alignment-source-only-features.svg",
                               "confusion-dann-features.svg", "confusion-oracle-features.svg", "confusion-source-only-features.svg",
                               "learning-dann-features.svg", "learning-oracle-features.svg", "learning-source-only-features.svg"])
        // Each class is named at its row and under its column.
        let confusion = try String(contentsOfFile: run + "/plots/confusion-dann-features.svg", encoding: .utf8)
        let classes = Set(try String(contentsOf: data.appendingPathComponent("source-train.csv"), encoding: .utf8)
            .split(separator: "\n").dropFirst().map { String($0.split(separator: ",")[0]) })
        XCTAssertGreaterThan(classes.count, 1)
        for c in classes { XCTAssertEqual(confusion.components(separatedBy: ">\(c)</text>").count - 1, 2, c) }
        for name in plots {
            let parser = XMLParser(data: try Data(contentsOf: URL(fileURLWithPath: run + "/plots/" + name)))
            XCTAssertTrue(parser.parse(), "\(name): \(parser.parserError.map { "\($0)" } ?? "")")
        }
    }
}

extension RunHardeningTests {
    /// `demo` outside the repository, with no --fixtures: it says where it looked and what to do (it said
    /// "(given as --fixtures)" of a flag not given).
    func testDemoWithoutFixturesSaysWhereItLooked() throws {
        try XCTSkipIf(ProcessInfo.processInfo.environment["TL_FIXTURES_DIR"] != nil, "TL_FIXTURES_DIR is set")
        let r = try toy(["demo"], in: work)
        XCTAssertEqual(r.status, 1, r.stderr)
        XCTAssertEqual(r.stderr, "Error: \(work.appendingPathComponent("Fixtures").path): no such folder: the fixtures are looked for in ./Fixtures by default; run from the repository, or give --fixtures\n")
    }
}
