import Foundation
import Synchronization
import XCTest

/// One app's RELEASE binary, run on the fixtures as a user would (the end-to-end tests need release speed; build
/// it first with `swift build -c release`, as scripts/test does). The binary is `<package>/.build/release/<name>`,
/// or `$TL_RELEASE_DIR/<name>` (e.g. a `--scratch-path` build:
/// `TL_RELEASE_DIR=$PWD/.build-x/release swift test --filter VisionAppTests`). Models come from `$TL_MODELS_DIR`
/// or `<package>/Models`; features are cached in a temporary folder shared by this app's tests in this process
/// (`cache`: made empty by the first of them, so every test run starts cold; a set's features are computed once).
struct ReleaseApp {
    static let package = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    let name: String
    /// The pretrained model file the app needs, relative to the models folder.
    let model: String
    /// `Fixtures/<fixtures>`.
    let fixtures: URL
    /// A fresh temporary folder for this process.
    let work: URL
    /// Appended to every command line.
    let arguments: [String]

    init(_ name: String, model: String, fixtures: String, arguments: [String] = []) {
        self.name = name
        self.model = model
        self.fixtures = Self.package.appendingPathComponent("Fixtures/" + fixtures)
        self.arguments = arguments
        work = FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-tests-\(getpid())")
        try? FileManager.default.removeItem(at: work)
        try? FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        TestScratch.removeAtExit(work)
        TestScratch.removeAtExit(cache)
        Self.emptiedCaches.withLock { emptied in
            if emptied.insert(name).inserted { try? FileManager.default.removeItem(at: cache) }
        }
    }

    /// Apps whose `cache` this process has made empty.
    private static let emptiedCaches = Mutex<Set<String>>([])

    var binary: URL { Self.binary(name) }

    /// The feature cache of this app's tests in this process (`TL_CACHE_DIR`).
    var cache: URL { FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-tests-\(getpid())-cache") }

    /// The release binary of the app `name`: `$TL_RELEASE_DIR/<name>` or `<package>/.build/release/<name>`.
    static func binary(_ name: String) -> URL {
        let dir = ProcessInfo.processInfo.environment["TL_RELEASE_DIR"].map { URL(fileURLWithPath: $0) }
            ?? package.appendingPathComponent(".build/release")
        return dir.appendingPathComponent(name)
    }

    /// The release binary of the app `name`; a missing one fails the test.
    static func builtBinary(_ name: String) throws -> URL {
        guard FileManager.default.isExecutableFile(atPath: binary(name).path) else {
            XCTFail("\(binary(name).path) is missing: run `swift build -c release` first (or set TL_RELEASE_DIR)")
            throw XCTSkip("no release binary")
        }
        return binary(name)
    }

    /// Runs the release binary of the app `name` (the toy app's tests use it: no models to fetch).
    static func run(_ name: String, _ args: [String], environment: [String: String] = [:], directory: URL? = nil) throws -> CLITests.Output {
        try CLITests.run(at: builtBinary(name), args, environment: environment, directory: directory)
    }

    var modelsDirectory: String {
        ProcessInfo.processInfo.environment["TL_MODELS_DIR"] ?? Self.package.appendingPathComponent("Models").path
    }

    /// `Fixtures/<fixtures>/<path>`.
    func fixture(_ path: String) -> String { fixtures.appendingPathComponent(path).path }

    /// Runs the app; a missing binary fails the test, missing models skip it (with the command that fetches them).
    func run(_ args: [String]) throws -> CLITests.Output {
        let binary = try Self.builtBinary(name)
        guard FileManager.default.fileExists(atPath: modelsDirectory + "/" + model) else {
            throw XCTSkip("\(model) not found under \(modelsDirectory): fetch the pretrained models with scripts/fetch-models")
        }
        let start = Date()
        let out = try CLITests.run(at: binary, args + arguments, environment: [
            "TL_MODELS_DIR": modelsDirectory, "TL_CACHE_DIR": cache.path,
        ])
        print("\(name) \(args.prefix(1).joined()) took \(String(format: "%.1f", Date().timeIntervalSince(start))) s")
        return out
    }

    /// The `results` of a successful `--json` run, which must print exactly one line.
    func results(_ out: CLITests.Output, file: StaticString = #filePath, line: UInt = #line) throws -> [[String: Any]] {
        XCTAssertEqual(out.status, 0, out.stderr, file: file, line: line)
        XCTAssertEqual(out.stdout.split(separator: "\n").count, 1, "--json prints one line: \(out.stdout)", file: file, line: line)
        let obj = try JSONSerialization.jsonObject(with: Data(out.stdout.utf8)) as? [String: Any]
        XCTAssertEqual(obj?["app"] as? String, name, file: file, line: line)
        return obj?["results"] as? [[String: Any]] ?? []
    }

    /// The accuracy of the row with this strategy, level (any when nil) and labels per class (nil: all labels).
    func accuracy(_ rows: [[String: Any]], _ strategy: String, level: String? = nil, labels: Int? = nil,
                  file: StaticString = #filePath, line: UInt = #line) -> Double {
        let row = rows.first { ($0["strategy"] as? String) == strategy && ($0["labels_per_class"] as? Int) == labels
            && (level == nil || ($0["level"] as? String) == level) }
        XCTAssertNotNil(row, "no \(strategy) \(level ?? "") row in \(rows)", file: file, line: line)
        return row?["accuracy"] as? Double ?? -1
    }
}

/// A test case of one app's release binary: `results` and `accuracy` read its `--json` output.
protocol ReleaseAppTests {
    static var app: ReleaseApp { get }
}

extension ReleaseAppTests {
    func results(_ out: CLITests.Output, file: StaticString = #filePath, line: UInt = #line) throws -> [[String: Any]] {
        try Self.app.results(out, file: file, line: line)
    }

    func accuracy(_ rows: [[String: Any]], _ strategy: String, level: String? = nil, labels: Int? = nil,
                  file: StaticString = #filePath, line: UInt = #line) -> Double {
        Self.app.accuracy(rows, strategy, level: level, labels: labels, file: file, line: line)
    }
}

/// Temporary folders of this test process, removed when it exits: each run of the suite used to leave about a
/// gigabyte of work folders and feature caches under /tmp. `TL_KEEP_TEST_FILES=1` keeps them for a look.
enum TestScratch {
    private static let folders = Mutex<Set<URL>>([])
    private static let registered: Void = { atexit { TestScratch.removeAll() } }()

    static func removeAtExit(_ url: URL) {
        guard ProcessInfo.processInfo.environment["TL_KEEP_TEST_FILES"] == nil else { return }
        _ = registered
        folders.withLock { _ = $0.insert(url.standardizedFileURL) }
    }

    private static func removeAll() {
        for url in folders.withLock({ $0 }) { try? FileManager.default.removeItem(at: url) }
    }
}
