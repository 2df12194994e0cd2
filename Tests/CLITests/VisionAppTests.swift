import Foundation
import XCTest

/// vision-tl end to end on the fixtures, through the RELEASE binary (`swift build -c release` first; CI's
/// scripts/test does). What transfer must show, with margins a broken pipeline cannot meet:
/// - Fashion-MNIST: ImageNet features beat the from-scratch CNN at 10 labels per class and with all labels, and
///   fine-tuning is at least as good as extraction with all labels;
/// - MNIST -> optdigits: DANN beats source-only by 5 points (three seeds);
/// - bad input: one line naming the file, non-zero exit, no run directory left behind.
///
/// The binary is `<package>/.build/release/vision-tl`, or `$TL_RELEASE_DIR/vision-tl` when that is set (for
/// builds with another --scratch-path). Models come from `$TL_MODELS_DIR` or `<package>/Models`; features are
/// cached in a temp folder shared by these tests only.
final class VisionAppTests: XCTestCase {
    static let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let fixtures = package.appendingPathComponent("Fixtures/vision")
    static let work: URL = {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vision-tl-tests-\(getpid())")
        try? FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }()

    static var binary: URL {
        let dir = ProcessInfo.processInfo.environment["TL_RELEASE_DIR"].map { URL(fileURLWithPath: $0) }
            ?? package.appendingPathComponent(".build/release")
        return dir.appendingPathComponent("vision-tl")
    }

    override func setUpWithError() throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else {
            XCTFail("\(Self.binary.path) is missing: run `swift build -c release` first (or set TL_RELEASE_DIR)")
            throw XCTSkip("release binary missing")
        }
        let models = ProcessInfo.processInfo.environment["TL_MODELS_DIR"] ?? Self.package.appendingPathComponent("Models").path
        guard FileManager.default.fileExists(atPath: models + "/efficientnet-lite0/model.safetensors") else {
            throw XCTSkip("EfficientNet-Lite0 weights not found under \(models); fetch them with scripts/fetch-models")
        }
    }

    struct Output { var status: Int32; var stdout: String; var stderr: String }

    func vision(_ arguments: [String]) throws -> Output {
        let p = Process()
        p.executableURL = Self.binary
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["TL_OPENBLAS_REEXEC"] = nil
        env["TL_CACHE_DIR"] = Self.work.appendingPathComponent("cache").path
        if env["TL_MODELS_DIR"] == nil { env["TL_MODELS_DIR"] = Self.package.appendingPathComponent("Models").path }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        let start = Date()
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        print("vision-tl \(arguments.prefix(1).joined()) took \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// The `results` of a `--json` run (which must print exactly one line).
    func results(_ out: Output) throws -> [[String: Any]] {
        XCTAssertEqual(out.status, 0, out.stderr)
        XCTAssertEqual(out.stdout.split(separator: "\n").count, 1, "--json prints one line: \(out.stdout)")
        let obj = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(obj?["app"] as? String, "vision-tl")
        return obj?["results"] as? [[String: Any]] ?? []
    }

    func accuracy(_ rows: [[String: Any]], _ strategy: String, level: String? = nil) -> Double {
        let row = rows.first { ($0["strategy"] as? String) == strategy && (level == nil || ($0["level"] as? String) == level) }
        XCTAssertNotNil(row, "no \(strategy) \(level ?? "") row in \(rows)")
        return row?["accuracy"] as? Double ?? -1
    }

    func fashion(_ split: String) -> String { Self.fixtures.appendingPathComponent("fashion/" + split).path }
    func digits(_ path: String) -> String { Self.fixtures.appendingPathComponent(path).path }

    func testFashionFeaturesBeatScratchWithTenLabelsPerClass() throws {
        let rows = try results(try vision(["extract", "--train", fashion("train"), "--test", fashion("test"),
                                           "--labels-per-class", "10", "--json"]))
        let scratch = accuracy(rows, "scratch"), extract = accuracy(rows, "extract")
        print("fashion, 10 labels per class: scratch \(scratch), extract \(extract)")
        // DATA.md's external check: a linear probe on these features reaches 76%; chance is 10%.
        XCTAssertGreaterThan(extract, 0.70)
        XCTAssertGreaterThan(extract, scratch + 0.05)
    }

    func testFashionTransferBeatsScratchAndFineTuningMatchesExtractionWithAllLabels() throws {
        let extracted = try results(try vision(["extract", "--train", fashion("train"), "--test", fashion("test"), "--json"]))
        let tuned = try results(try vision(["finetune", "--train", fashion("train"), "--test", fashion("test"),
                                            "--no-baseline", "--json"]))
        let scratch = accuracy(extracted, "scratch"), extract = accuracy(extracted, "extract")
        let finetune = accuracy(tuned, "finetune")
        print("fashion, all labels: scratch \(scratch), extract \(extract), finetune \(finetune)")
        // With all 100 images per class the small CNN is a strong baseline (DATA.md's external check: 81 %, linear
        // probe 85 %): transfer must still come out ahead, and fine-tuning must not lose to the linear probe.
        XCTAssertGreaterThan(extract, 0.80)
        XCTAssertGreaterThan(max(extract, finetune), scratch)
        XCTAssertGreaterThan(extract, scratch - 0.01, "extraction is never more than a point below scratch")
        XCTAssertGreaterThanOrEqual(finetune, extract)
    }

    /// MNIST -> optdigits on frozen features, over three seeds (the demo's 42, 1, 2): DANN with the target
    /// standardised by its own statistics beats source-only by far more than the 5 points the issue asks
    /// (measured: 0.33 -> 0.67, 0.32 -> 0.69, 0.29 -> 0.68), and stays below the target-trained oracle.
    func testDANNBeatsSourceOnlyOnOptdigits() throws {
        for seed in ["42", "1", "2"] {
            let rows = try results(try vision(["adapt", "--source", digits("mnist/train"), "--target", digits("optdigits/unlabelled"),
                                               "--target-test", digits("optdigits/test"), "--method", "source-only,dann",
                                               "--level", "features", "--seed", seed, "--json"]))
            let base = accuracy(rows, "source-only", level: "features"), dann = accuracy(rows, "dann", level: "features")
            let oracle = accuracy(rows, "oracle")
            print("mnist -> optdigits, seed \(seed): source-only \(base), dann \(dann), oracle \(oracle)")
            XCTAssertGreaterThan(dann, base + 0.05, "seed \(seed)")
            XCTAssertGreaterThan(oracle, 0.80, "optdigits/test by 5-fold cross-validation on its own features")
            XCTAssertGreaterThan(oracle, dann, "seed \(seed)")
        }
    }

    func testCorruptPNGIsOneLineNamingTheFileAndNoRunIsLeft() throws {
        let data = Self.work.appendingPathComponent("bad-data")
        try? FileManager.default.removeItem(at: data)
        for (label, files) in [("sandal", ["10", "11"]), ("bag", ["20", "21"])] {
            let folder = data.appendingPathComponent("train/\(label)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let source = Self.fixtures.appendingPathComponent("fashion/train/\(label)")
            let names = try FileManager.default.contentsOfDirectory(atPath: source.path).sorted().prefix(files.count)
            for n in names { try FileManager.default.copyItem(at: source.appendingPathComponent(n), to: folder.appendingPathComponent(n)) }
        }
        let bad = data.appendingPathComponent("train/bag/broken.png")
        let good = try Data(contentsOf: try FileManager.default.contentsOfDirectory(at: data.appendingPathComponent("train/sandal"),
                                                                                     includingPropertiesForKeys: nil)[0])
        try good.prefix(good.count / 2).write(to: bad)  // truncated mid-file
        let run = Self.work.appendingPathComponent("bad-run").path
        let r = try vision(["extract", "--train", data.appendingPathComponent("train").path, "--test",
                            data.appendingPathComponent("train").path, "--out", run, "--no-cache"])
        XCTAssertNotEqual(r.status, 0)
        let lines = r.stderr.split(separator: "\n").filter { !$0.isEmpty && !$0.hasPrefix("features of") && !$0.hasPrefix("training") }
        XCTAssertEqual(lines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains(bad.path + ": "), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run))
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + ".partial"))
    }

    func testCSVLayoutRunDirectoryEvaluateAndPredict() throws {
        // A CSV of path,label over fixture images (paths relative to the CSV), three classes.
        let dir = Self.work.appendingPathComponent("csv")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("img"), withIntermediateDirectories: true)
        var train = "path,label\n", test = "path,label\n"
        for label in ["trouser", "bag", "sneaker"] {
            for split in ["train", "test"] {
                let source = Self.fixtures.appendingPathComponent("fashion/\(split)/\(label)")
                for n in try FileManager.default.contentsOfDirectory(atPath: source.path).sorted().prefix(15) {
                    let name = "\(split)-\(label)-\(n)"
                    try FileManager.default.copyItem(at: source.appendingPathComponent(n), to: dir.appendingPathComponent("img/" + name))
                    if split == "train" { train += "img/\(name),\(label)\n" } else { test += "img/\(name),\(label)\n" }
                }
            }
        }
        try train.write(to: dir.appendingPathComponent("train.csv"), atomically: true, encoding: .utf8)
        try test.write(to: dir.appendingPathComponent("test.csv"), atomically: true, encoding: .utf8)
        let run = dir.appendingPathComponent("run").path
        let r = try vision(["extract", "--train", dir.appendingPathComponent("train.csv").path,
                            "--test", dir.appendingPathComponent("test.csv").path, "--out", run, "--no-baseline", "--quiet"])
        XCTAssertEqual(r.status, 0, r.stderr)
        for file in ["run.json", "metrics.json", "models/extract.safetensors", "plots/confusion-extract.png"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/" + file), file)
        }
        let evaluated = try results(try vision(["evaluate", "--model", run, "--data", dir.appendingPathComponent("test.csv").path, "--json"]))
        XCTAssertGreaterThan(evaluated.first?["accuracy"] as? Double ?? 0, 0.9, "trousers, bags and sneakers are easy")
        let images = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("img").path).sorted()
            .filter { $0.hasPrefix("test-bag") }.prefix(3).map { dir.appendingPathComponent("img/" + $0).path }
        let p = try vision(["predict", "--model", run, "--top", "2"] + images)
        XCTAssertEqual(p.status, 0, p.stderr)
        let lines = p.stdout.split(separator: "\n")
        XCTAssertEqual(lines.count, 3, p.stdout)
        for (line, path) in zip(lines, images) {
            let fields = line.split(separator: "\t")
            XCTAssertEqual(fields.count, 3, String(line))
            XCTAssertEqual(String(fields[0]), path)
        }
    }
}
