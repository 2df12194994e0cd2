import Foundation
import TransferEngine
import XCTest

/// `features --shard K/N` (issue 17): shards of a dataset computed in any order merge to exactly the features of one
/// shard, and `extract` trains the same model from either folder as from the dataset itself; a finished shard is not
/// computed again; incomplete sets, features of another backbone or preprocessing and bad --shard values are refused
/// with one line. Release binaries on a slice of the vision fixtures (5 classes, 120 training and 50 test images).
final class FeatureShardTests: XCTestCase {
    static let app = ReleaseApp("vision-tl", model: "efficientnet-lite0/model.safetensors", fixtures: "vision", arguments: ["--threads", "2"])

    /// The slices, and their features in one shard and in three (run as 3, 1, 2): made once for every test.
    struct Prepared { var train: String, test: String, one: URL, three: URL, testFeatures: URL }
    nonisolated(unsafe) static var prepared: Prepared?

    func prepare() throws -> Prepared {
        if let p = Self.prepared { return p }
        let app = Self.app
        let train = try app.folderSlice("fashion/train", classes: 5, perClass: 24)
        let test = try app.folderSlice("fashion/test", classes: 5, perClass: 10)
        let one = app.work.appendingPathComponent("features-one"), three = app.work.appendingPathComponent("features-three")
        let testFeatures = app.work.appendingPathComponent("features-test")
        try succeed(app.run(["features", "--data", train, "--out", one.path]))
        for k in [3, 1, 2] { try succeed(app.run(["features", "--data", train, "--out", three.path, "--shard", "\(k)/3"])) }
        try succeed(app.run(["features", "--data", test, "--out", testFeatures.path]))
        let p = Prepared(train: train, test: test, one: one, three: three, testFeatures: testFeatures)
        Self.prepared = p
        return p
    }

    @discardableResult
    func succeed(_ out: CLITests.Output, line: UInt = #line) -> CLITests.Output {
        XCTAssertEqual(out.status, 0, out.stderr, line: line)
        return out
    }

    /// A refusal: non-zero exit, exactly one line on stderr, containing every one of `words`.
    func refused(_ out: CLITests.Output, _ words: [String], line: UInt = #line) {
        XCTAssertNotEqual(out.status, 0, "should have been refused: \(out.stdout)", line: line)
        XCTAssertEqual(out.stderr.split(separator: "\n").count, 1, "one line: \(out.stderr)", line: line)
        for w in words { XCTAssertTrue(out.stderr.contains(w), "'\(w)' not in: \(out.stderr)", line: line) }
        XCTAssertFalse(out.stderr.contains("Fatal error"), out.stderr, line: line)
    }

    func bytes(_ t: Tensor) -> [UInt32] { t.withUnsafeBufferPointer { $0.map(\.bitPattern) } }

    func testThreeShardsMergeToTheBytesOfOneAndTrainTheSameModel() throws {
        let p = try prepare()
        let one = try FeatureShards.load(p.one, expecting: nil), three = try FeatureShards.load(p.three, expecting: nil)
        XCTAssertEqual(one.features.shape, [120, 1280])
        XCTAssertEqual(one.features.shape, three.features.shape)
        XCTAssertEqual(bytes(one.features), bytes(three.features), "merged shards differ from one shard")
        XCTAssertEqual(one.ids, three.ids)
        XCTAssertEqual(one.labels, three.labels)
        XCTAssertEqual(one.classNames, three.classNames)
        // Balanced: 120 samples in 3 shards of 40.
        for k in 1...3 {
            let files = try FileManager.default.contentsOfDirectory(atPath: p.three.path)
            XCTAssertTrue(files.contains(String(format: "shard-%04d-of-0003.json", k)))
        }
        XCTAssertEqual(FeatureShards.assignment(ids: one.ids, shard: 1, of: 3).count, 40)
        XCTAssertEqual(Set((1...3).flatMap { FeatureShards.assignment(ids: one.ids, shard: $0, of: 3) }).count, 120)

        // extract from either folder (test set as a features folder or as the dataset) = extract from the data.
        let app = Self.app
        func accuracy(_ args: [String]) throws -> Double {
            let rows = try app.results(try app.run(["extract"] + args + ["--no-baseline", "--json"]))
            return app.accuracy(rows, "extract", labels: args.firstIndex(of: "--labels-per-class").map { Int(args[$0 + 1])! })
        }
        let fromData = try accuracy(["--train", p.train, "--test", p.test])
        let fromOne = try accuracy(["--train", p.one.path, "--test", p.testFeatures.path])
        let fromThree = try accuracy(["--train", p.three.path, "--test", p.test])
        print("extract accuracy: from the data \(fromData), one shard \(fromOne), three shards \(fromThree)")
        XCTAssertGreaterThan(fromData, 0.5)
        XCTAssertEqual(fromOne, fromData)
        XCTAssertEqual(fromThree, fromData)
        // evaluate scores a features folder as it scores the dataset.
        let run = app.work.appendingPathComponent("run-from-shards").path
        try succeed(app.run(["extract", "--train", p.three.path, "--test", p.test, "--no-baseline", "--out", run, "--quiet"]))
        // The test set given as a dataset: report.html shows its highest-loss images, as for a run from the data.
        let report = try String(contentsOfFile: run + "/report.html", encoding: .utf8)
        XCTAssertTrue(report.contains("<h2 id=\"top-losses\">") && report.contains("<img"), "no top-loss gallery")
        let onData = app.accuracy(try app.results(try app.run(["evaluate", "--model", run, "--data", p.test, "--json"])), "extract")
        let onFeatures = app.accuracy(try app.results(try app.run(["evaluate", "--model", run, "--data", p.testFeatures.path, "--json"])), "extract")
        XCTAssertGreaterThan(onData, 0.5)
        XCTAssertEqual(onFeatures, onData)
        // The same with a label budget (the same rows are kept).
        XCTAssertEqual(try accuracy(["--train", p.three.path, "--test", p.testFeatures.path, "--labels-per-class", "8"]),
                       try accuracy(["--train", p.train, "--test", p.test, "--labels-per-class", "8"]))
    }

    func testAFinishedShardIsNotComputedAgain() throws {
        let p = try prepare()
        func listing() throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: p.three.path).sorted().map { name in
                let a = try FileManager.default.attributesOfItem(atPath: p.three.appendingPathComponent(name).path)
                return "\(name) \(a[.systemFileNumber]!) \((a[.modificationDate] as! Date).timeIntervalSince1970) \(a[.size]!)"
            }
        }
        let before = try listing()
        let out = succeed(try Self.app.run(["features", "--data", p.train, "--out", p.three.path, "--shard", "2/3"]))
        XCTAssertTrue(out.stdout.contains("already done"), out.stdout)
        let json = succeed(try Self.app.run(["features", "--data", p.train, "--out", p.three.path, "--shard", "3/3", "--json"]))
        let said = try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(said?["computed"] as? Bool, false, json.stdout)
        XCTAssertEqual(said?["samples"] as? Int, 40, json.stdout)
        XCTAssertEqual(try listing(), before, "a re-run of a finished shard wrote something")
    }

    /// A copy of the three-shard folder, `edit`ed.
    func copy(_ name: String, _ edit: (URL) throws -> Void) throws -> URL {
        let p = try prepare()
        let dir = Self.app.work.appendingPathComponent(name)
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.copyItem(at: p.three, to: dir)
        try edit(dir)
        return dir
    }

    func testAnIncompleteSetIsRefusedNamingTheMissingShard() throws {
        let dir = try copy("features-incomplete") { try FileManager.default.removeItem(at: $0.appendingPathComponent("shard-0002-of-0003.json")) }
        refused(try Self.app.run(["extract", "--train", dir.path]), [dir.lastPathComponent, "missing", "2/3"])
        XCTAssertFalse(try FileManager.default.contentsOfDirectory(atPath: dir.path).contains { $0 == "shard-0002-of-0003.json" })
    }

    /// A chunk swapped with another shard's, or with finite values changed, is refused: the features would otherwise
    /// sit next to the wrong labels (accuracy 0.50 instead of 0.40 on a helper's slice) and train silently.
    func testASwappedOrAlteredChunkIsRefused() throws {
        let swapped = try copy("features-swapped") { dir in
            let a = dir.appendingPathComponent("shard-0001-of-0003-00000.safetensors")
            try FileManager.default.removeItem(at: a)
            try FileManager.default.copyItem(at: dir.appendingPathComponent("shard-0002-of-0003-00000.safetensors"), to: a)
        }
        refused(try Self.app.run(["extract", "--train", swapped.path]), ["shard-0001-of-0003-00000.safetensors", "not those its manifest recorded"])
        let altered = try copy("features-altered") { dir in
            let url = dir.appendingPathComponent("shard-0003-of-0003-00000.safetensors")
            let f = try SafeTensors.read(url).tensor(named: "features")
            var values = f.scalars
            values[0] += 1
            try SafeTensors.write(["features": Tensor(shape: f.shape, scalars: values)], to: url)
        }
        refused(try Self.app.run(["extract", "--train", altered.path]), ["shard-0003-of-0003-00000.safetensors", "not those its manifest recorded"])
    }

    /// A manifest claiming a huge dataset is refused before anything of that size is allocated.
    func testAForgedDatasetSizeIsRefused() throws {
        let dir = try copy("features-forged-total") { dir in
            for k in 1...3 {
                let url = dir.appendingPathComponent(String(format: "shard-%04d-of-0003.json", k))
                var m = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
                m["total"] = 1_000_000_000_000
                try JSONSerialization.data(withJSONObject: m).write(to: url)
            }
        }
        refused(try Self.app.run(["extract", "--train", dir.path]), ["shard-0001-of-0003.json", "the manifests say the dataset has 1000000000000"])
    }

    func testFeaturesOfAnotherBackboneOrPreprocessingAreRefused() throws {
        for (field, name) in [("backbone", "features-other-backbone"), ("preprocessing", "features-other-preprocessing")] {
            let dir = try copy(name) { dir in
                for k in 1...3 {
                    let url = dir.appendingPathComponent(String(format: "shard-%04d-of-0003.json", k))
                    var m = try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
                    var identity = m["identity"] as! [String: Any]
                    identity[field] = "edited-\(field)"
                    m["identity"] = identity
                    try JSONSerialization.data(withJSONObject: m).write(to: url)
                }
            }
            refused(try Self.app.run(["extract", "--train", dir.path]), ["shard-0001-of-0003.json", "another backbone or preprocessing", "edited-\(field)"])
            // Nor can a shard join them.
            let p = try prepare()
            refused(try Self.app.run(["features", "--data", p.train, "--out", dir.path, "--shard", "1/3"]), ["another backbone or preprocessing"])
        }
        // Real other preprocessing: a shard at another image size cannot join the folder.
        let p = try prepare()
        refused(try Self.app.run(["features", "--data", p.train, "--out", p.three.path, "--shard", "1/3", "--image-size", "96"]),
                ["shard-0001-of-0003.json", "another backbone or preprocessing"])
        // Nor a shard of another split of the same data.
        refused(try Self.app.run(["features", "--data", p.train, "--out", p.three.path, "--shard", "1/2"]), ["3 shards, not 2"])
    }

    func testBadShardValuesAreOneLine() throws {
        let p = try prepare()
        // A value starting with a minus and a digit is the value, attached (--shard=-1/3) or not.
        for bad in [["--shard", "0/3"], ["--shard", "4/3"], ["--shard=-1/3"], ["--shard", "-1/3"], ["--shard", "1/0"], ["--shard", "3"], ["--shard", "x/3"],
                    ["--shard", "1/3/4"], ["--shard", ""], ["--shard", "1/100000"], ["--shard", " 1/3"]] {
            let out = Self.app.work.appendingPathComponent("features-bad")
            refused(try Self.app.run(["features", "--data", p.train, "--out", out.path] + bad), ["--shard"])
            XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "\(bad) left a folder behind")
        }
    }
}
