import CJPEGEncoder
import Foundation
import VisionTL
import XCTest

/// vision-tl end to end on the fixtures, through its release binary (see `ReleaseApp`). What transfer must
/// show, with margins a broken pipeline cannot meet:
/// - Fashion-MNIST: ImageNet features beat the from-scratch CNN at 10 labels per class and with all labels, and
///   fine-tuning is at least as good as extraction with all labels;
/// - MNIST -> optdigits: DANN beats source-only by 5 points (three seeds);
/// - bad input: one line naming the file, non-zero exit, no run directory left behind.
final class VisionAppTests: XCTestCase, ReleaseAppTests {
    static let app = ReleaseApp("vision-tl", model: "efficientnet-lite0/model.safetensors", fixtures: "vision")

    func vision(_ arguments: [String]) throws -> CLITests.Output { try Self.app.run(arguments) }

    func fashion(_ split: String) -> String { Self.app.fixtures.appendingPathComponent("fashion/" + split).path }
    func digits(_ path: String) -> String { Self.app.fixtures.appendingPathComponent(path).path }

    func testFashionFeaturesBeatScratchWithTenLabelsPerClass() throws {
        let rows = try results(try vision(["extract", "--train", fashion("train"), "--test", fashion("test"),
                                           "--labels-per-class", "10", "--json"]))
        let scratch = accuracy(rows, "scratch", labels: 10), extract = accuracy(rows, "extract", labels: 10)
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

    /// diagnose ranks the fixture pairs as they are: Fashion's train and test sets are one domain (measured
    /// proxy A-distance 0.02), MNIST and optdigits two (2.00).
    func testDiagnoseTellsTheSameDomainFromTheShift() throws {
        func pad(_ source: String, _ target: String) throws -> Double {
            let r = try vision(["diagnose", "--source", source, "--target", target, "--json"])
            XCTAssertEqual(r.status, 0, r.stderr)
            let d = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
            return try XCTUnwrap(d["proxy_a_distance"] as? Double)
        }
        let same = try pad(fashion("train"), fashion("test")), shift = try pad(digits("mnist/train"), digits("optdigits/unlabelled"))
        print("diagnose: fashion train -> test \(same), mnist -> optdigits \(shift)")
        XCTAssertLessThan(same, 0.3)
        XCTAssertGreaterThan(shift, 1.5)
    }

    func testCorruptPNGIsOneLineNamingTheFileAndNoRunIsLeft() throws {
        let data = Self.app.work.appendingPathComponent("bad-data")
        try? FileManager.default.removeItem(at: data)
        for (label, files) in [("sandal", ["10", "11"]), ("bag", ["20", "21"])] {
            let folder = data.appendingPathComponent("train/\(label)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let source = Self.app.fixtures.appendingPathComponent("fashion/train/\(label)")
            let names = try FileManager.default.contentsOfDirectory(atPath: source.path).sorted().prefix(files.count)
            for n in names { try FileManager.default.copyItem(at: source.appendingPathComponent(n), to: folder.appendingPathComponent(n)) }
        }
        let bad = data.appendingPathComponent("train/bag/broken.png")
        let good = try Data(contentsOf: try FileManager.default.contentsOfDirectory(at: data.appendingPathComponent("train/sandal"),
                                                                                     includingPropertiesForKeys: nil)[0])
        try good.prefix(good.count / 2).write(to: bad)  // truncated mid-file
        let run = Self.app.work.appendingPathComponent("bad-run").path
        let r = try vision(["extract", "--train", data.appendingPathComponent("train").path, "--test",
                            data.appendingPathComponent("train").path, "--out", run, "--no-cache"])
        XCTAssertNotEqual(r.status, 0)
        let progress = ["features of", "training", "train ", "test "]   // progress lines, before the error
        let lines = r.stderr.split(separator: "\n").filter { line in !line.isEmpty && !progress.contains { line.hasPrefix($0) } }
        XCTAssertEqual(lines.count, 1, r.stderr)
        XCTAssertTrue(r.stderr.contains(bad.path + ": "), r.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: run))
        XCTAssertFalse(FileManager.default.fileExists(atPath: run + ".partial"))
    }

    /// check-data lists every unreadable file (not just the first), identical images under two labels and images
    /// shared with the test set, and exits non-zero; a clean set passes.
    func testCheckDataListsEveryProblem() throws {
        let data = Self.app.work.appendingPathComponent("check-data")
        try? FileManager.default.removeItem(at: data)
        let classes = Self.app.classFolders("fashion/train").prefix(2)
        var kept: [URL] = []
        for c in classes {
            let folder = data.appendingPathComponent("train/\(c)")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for f in Self.app.classFolders("fashion/train/\(c)").prefix(4) {
                let to = folder.appendingPathComponent(f)
                try FileManager.default.copyItem(atPath: Self.app.fixture("fashion/train/\(c)/\(f)"), toPath: to.path)
                kept.append(to)
            }
        }
        let clean = try vision(["check-data", data.appendingPathComponent("train").path])
        XCTAssertEqual(clean.status, 0, clean.stdout + clean.stderr)
        XCTAssertTrue(clean.stdout.contains("usable: yes"), clean.stdout)
        XCTAssertFalse(clean.stdout.contains("not read as samples"), clean.stdout)
        // Files training skips (another type, or outside a class folder): a warning naming them, still usable.
        let notes = data.appendingPathComponent("train/\(classes.first!)/notes.txt"), loose = data.appendingPathComponent("train/loose.png")
        try Data("x".utf8).write(to: notes)
        try FileManager.default.copyItem(at: kept[0], to: loose)
        let skipping = try vision(["check-data", data.appendingPathComponent("train").path, "--json"])
        XCTAssertEqual(skipping.status, 0, skipping.stdout + skipping.stderr)
        let object = try JSONSerialization.jsonObject(with: Data(skipping.stdout.utf8)) as! [String: Any]
        XCTAssertEqual(Set(object["skipped_files"] as? [String] ?? []), [notes.path, loose.path])
        XCTAssertTrue((object["warnings"] as? [String] ?? []).contains { $0.contains("2 files in check-data/train are not read as samples") && $0.contains(".png 1, .txt 1") }, skipping.stdout)
        for f in [notes, loose] { try FileManager.default.removeItem(at: f) }
        // Two broken files, one image under both labels, one training image in the test set.
        let broken = [data.appendingPathComponent("train/\(classes.first!)/broken-1.png"), data.appendingPathComponent("train/\(classes.last!)/broken-2.png")]
        for b in broken { try Data([0x89, 0x50, 0x4E, 0x47]).write(to: b) }
        try FileManager.default.copyItem(at: kept[0], to: data.appendingPathComponent("train/\(classes.last!)/copy.png"))
        let test = data.appendingPathComponent("test/\(classes.first!)")
        try FileManager.default.createDirectory(at: test, withIntermediateDirectories: true)
        try FileManager.default.copyItem(at: kept[1], to: test.appendingPathComponent("leak.png"))
        let r = try vision(["check-data", data.appendingPathComponent("train").path, "--test", data.appendingPathComponent("test").path])
        XCTAssertEqual(r.status, 1, r.stdout + r.stderr)
        for b in broken { XCTAssertTrue(r.stdout.contains(b.path + ": "), r.stdout) }
        XCTAssertTrue(r.stdout.contains("2 of 11 samples cannot be read"), r.stdout)
        XCTAssertTrue(r.stdout.contains("identical samples carry different labels"), r.stdout)
        XCTAssertTrue(r.stdout.contains("1 test sample is identical to samples of the data"), r.stdout)
        // The image under two labels is that problem, not also a duplicate warning.
        XCTAssertFalse(r.stdout.contains("exact duplicate"), r.stdout)
        XCTAssertTrue(r.stdout.contains("images 28x28 to 28x28"), r.stdout)
        XCTAssertTrue(r.stdout.contains("usable: no (2 problems)"), r.stdout)
    }

    /// A FIFO (which would block a read forever) named like a PNG in a class folder is one error naming it.
    func testAFIFOInAClassFolderIsOneErrorNotAHang() throws {
        let data = try Self.app.folderSlice("fashion/train", classes: 2, perClass: 3)
        let fifo = data + "/" + Self.app.classFolders("fashion/train")[0] + "/zz-pipe.png"
        XCTAssertEqual(mkfifo(fifo, 0o600), 0)
        let r = try vision(["extract", "--train", data, "--no-baseline", "--no-cache"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("\(fifo): is not a regular file (a FIFO, device or socket)"), r.stderr)
    }

    /// Twelve PNGs at the 50-megapixel limit in one batch: decoded side by side before resizing they need about
    /// 9 GB (issue 15: 64 of them needed 38 GB); decoded and resized one per worker, under 2 GB. The run gets 4 GB
    /// of address space, so the old way fails here and this way passes.
    func testHugeImagesInOneBatchAreDecodedOneAtATimePerWorker() throws {
        let big = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Inputs/grey-7071x7071.png")
        let data = Self.app.work.appendingPathComponent("huge")
        try? FileManager.default.removeItem(at: data)
        for label in ["a", "b"] {
            let folder = data.appendingPathComponent(label)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for i in 0..<6 { try FileManager.default.createSymbolicLink(at: folder.appendingPathComponent("\(i).png"), withDestinationURL: big) }
        }
        let r = try CLITests.run(at: URL(fileURLWithPath: "/bin/sh"),
                                 ["-c", "ulimit -v 4000000 && exec \"$0\" \"$@\"", Self.app.binary.path,
                                  "extract", "--train", data.path, "--no-baseline", "--no-cache", "--threads", "2", "--json"],
                                 environment: ["TL_MODELS_DIR": Self.app.modelsDirectory])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertTrue(r.stdout.contains("\"extract\""), r.stdout)
    }

    func testCSVLayoutRunDirectoryEvaluateAndPredict() throws {
        // A CSV of path,label over fixture images (paths relative to the CSV), three classes.
        let dir = Self.app.work.appendingPathComponent("csv")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir.appendingPathComponent("img"), withIntermediateDirectories: true)
        var train = "path,label\n", test = "path,label\n"
        for label in ["trouser", "bag", "sneaker"] {
            for split in ["train", "test"] {
                let source = Self.app.fixtures.appendingPathComponent("fashion/\(split)/\(label)")
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
        for file in ["run.json", "metrics.json", "models/extract.safetensors", "plots/confusion-extract.svg"] {
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

    /// A JPEG copy of the Fashion fixture (quality 95, 4:2:0, made here with libjpeg) gives the PNG fixture's
    /// accuracy to within a point; a folder mixing PNG and JPEG files is read whole by predict and check-data.
    /// (The images are 28 x 28, so an 8 x 8 DCT block is a large part of one: lower qualities lose more, e.g.
    /// measured with Pillow-written copies, extract 0.845 on PNG, 0.840 at quality 100, 0.838 at 95, 0.824 at 75.)
    func testJPEGCopyOfFashionMatchesThePNGAccuracy() throws {
        let copy = Self.app.work.appendingPathComponent("fashion-jpeg")
        try? FileManager.default.removeItem(at: copy)
        let fm = FileManager.default
        for split in ["train", "test"] {
            let root = URL(fileURLWithPath: fashion(split))
            for label in try fm.contentsOfDirectory(atPath: root.path).sorted() {
                let folder = copy.appendingPathComponent("\(split)/\(label)")
                try fm.createDirectory(at: folder, withIntermediateDirectories: true)
                for name in try fm.contentsOfDirectory(atPath: root.appendingPathComponent(label).path) where name.hasSuffix(".png") {
                    let image = try PNGDecoder.read(root.appendingPathComponent("\(label)/\(name)"))
                    let bytes = image.pixels.map { UInt8($0) }
                    var size = 0
                    let encoded = try XCTUnwrap(bytes.withUnsafeBufferPointer {
                        tl_test_jpeg_encode($0.baseAddress, UInt32(image.width), UInt32(image.height), 95, &size)
                    })
                    defer { free(encoded) }
                    try Data(bytes: encoded, count: size).write(to: folder.appendingPathComponent(name.dropLast(4) + ".jpg"))
                }
            }
        }
        func extract(_ root: String, out: String? = nil) throws -> Double {
            let rows = try results(try vision(["extract", "--train", root + "/train", "--test", root + "/test", "--no-baseline", "--json"]
                                              + (out.map { ["--out", $0] } ?? [])))
            return accuracy(rows, "extract")
        }
        let run = Self.app.work.appendingPathComponent("fashion-jpeg-run").path
        let png = try extract(Self.app.fixtures.appendingPathComponent("fashion").path)
        let jpeg = try extract(copy.path, out: run)
        print("fashion, all labels, extract: PNG \(png), JPEG copy (quality 95) \(jpeg)")
        XCTAssertGreaterThan(png, 0.80)
        XCTAssertLessThanOrEqual(abs(png - jpeg), 0.01)

        // A folder mixing both formats: every file is predicted and counted.
        let mixed = Self.app.work.appendingPathComponent("mixed/bag")
        try? fm.removeItem(at: mixed.deletingLastPathComponent())
        try fm.createDirectory(at: mixed, withIntermediateDirectories: true)
        let pngs = try fm.contentsOfDirectory(atPath: fashion("test") + "/bag").sorted().prefix(3)
        let jpegs = try fm.contentsOfDirectory(atPath: copy.path + "/test/bag").sorted().suffix(3)
        for n in pngs { try fm.copyItem(atPath: fashion("test") + "/bag/" + n, toPath: mixed.path + "/" + n) }
        for n in jpegs { try fm.copyItem(atPath: copy.path + "/test/bag/" + n, toPath: mixed.path + "/" + n.uppercased()) }
        let p = try vision(["predict", "--model", run, mixed.path])
        XCTAssertEqual(p.status, 0, p.stderr)
        let predicted = p.stdout.split(separator: "\n").map { String($0.split(separator: "\t")[0]) }
        XCTAssertEqual(Set(predicted), Set(try fm.contentsOfDirectory(atPath: mixed.path).map { mixed.path + "/" + $0 }), p.stdout)
        let check = try vision(["check-data", mixed.deletingLastPathComponent().path, "--json"])
        XCTAssertTrue(check.stdout.contains("\"bag\""), check.stdout + check.stderr)

        // A broken file among them costs the others nothing: they are predicted (and in --csv), the broken one is
        // one error line naming it, and the exit status says not everything was predicted.
        let broken = mixed.appendingPathComponent("broken.png"), empty = mixed.appendingPathComponent("empty.png")
        try Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A]).write(to: broken)
        try Data().write(to: empty)
        let csv = Self.app.work.appendingPathComponent("mixed-predictions.csv").path
        let partial = try vision(["predict", "--model", run, mixed.path, "--csv", csv])
        XCTAssertEqual(partial.status, 1, partial.stderr)
        XCTAssertEqual(Set(partial.stdout.split(separator: "\n").map { String($0.split(separator: "\t")[0]) }), Set(predicted), partial.stdout)
        let errors = partial.stderr.split(separator: "\n").filter { $0.hasPrefix("Error: ") }
        XCTAssertEqual(errors.count, 2, partial.stderr)
        XCTAssertTrue(errors.contains { $0.hasPrefix("Error: " + broken.path + ":") && $0.hasSuffix("(no prediction)") }, partial.stderr)
        XCTAssertTrue(errors.contains { $0.hasPrefix("Error: " + empty.path + ":") && $0.hasSuffix("(no prediction)") }, partial.stderr)
        XCTAssertTrue(partial.stderr.split(separator: "\n").contains("2 of 8 inputs could not be read; the others are predicted"), partial.stderr)
        XCTAssertEqual(try String(contentsOfFile: csv, encoding: .utf8).split(separator: "\n").count, 7, "a header and the 6 readable files")
        let json = try vision(["predict", "--model", run, mixed.path, "--json"])
        let object = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        XCTAssertEqual((object?["predictions"] as? [Any])?.count, 6, json.stdout)
        XCTAssertEqual(Set((object?["unreadable"] as? [[String: String]] ?? []).compactMap { $0["input"] }), [broken.path, empty.path], json.stdout)
        // Nothing readable: the error, as before.
        let only = try vision(["predict", "--model", run, broken.path])
        XCTAssertNotEqual(only.status, 0)
        XCTAssertTrue(only.stderr.contains(broken.path), only.stderr)
    }
}
