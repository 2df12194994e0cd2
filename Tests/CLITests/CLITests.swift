import Foundation
import XCTest

/// Runs the built apps as a user would and checks what they print.
final class CLITests: XCTestCase {
    /// The apps sit next to the test bundle in the build products folder.
    static let products = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()

    struct Output { var status: Int32; var stdout: String; var stderr: String }

    /// Runs an app of this build (debug or release, next to the test bundle).
    static func run(_ app: String, _ arguments: [String], environment: [String: String] = [:], directory: URL? = nil) throws -> Output {
        try run(at: products.appendingPathComponent(app), arguments, environment: environment, directory: directory)
    }

    /// Runs an executable with the environment of the tests plus `environment`, without the re-execution guard
    /// variable (each run decides its OpenBLAS kernel itself, as a user's would).
    static func run(at executable: URL, _ arguments: [String], environment: [String: String] = [:],
                    directory: URL? = nil) throws -> Output {
        let p = Process()
        p.executableURL = executable
        if let directory { p.currentDirectoryURL = directory }
        p.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["TL_OPENBLAS_REEXEC"] = nil
        for (k, v) in environment { env[k] = v }
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile(), e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Output(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    func testEveryAppHasHelpAndVersion() throws {
        for app in ["vision-tl", "speech-tl", "text-tl"] {
            let help = try Self.run(app, ["--help"])
            XCTAssertEqual(help.status, 0, app)
            XCTAssertTrue(help.stdout.contains("USAGE: \(app)"), help.stdout)
            XCTAssertTrue(help.stdout.contains("info"), help.stdout)
            let version = try Self.run(app, ["--version"])
            XCTAssertEqual(version.status, 0, app)
            XCTAssertTrue(version.stdout.hasPrefix("\(app) 0."), version.stdout)
            XCTAssertTrue(version.stdout.contains("OpenBLAS kernel"), version.stdout)
        }
    }

    func testInfoNamesTheKernel() throws {
        let info = try Self.run("vision-tl", ["info", "--threads", "1"])
        XCTAssertEqual(info.status, 0, info.stderr)
        XCTAssertTrue(info.stdout.contains("openblas kernel"), info.stdout)
        XCTAssertTrue(info.stdout.contains("threads                   1"), info.stdout)
    }

    func testUserCoreTypeWins() throws {
        let info = try Self.run("text-tl", ["info"], environment: ["OPENBLAS_CORETYPE": "Prescott"])
        XCTAssertTrue(info.stdout.contains("openblas kernel           Prescott"), info.stdout)
    }

    func testEmptyCoreTypeIsReplacedByTheBestKernelThroughReexecution() throws {
        // An empty variable makes OpenBLAS 0.3.21 pick Cooperlake blindly; the app must re-execute itself
        // with the best kernel for this CPU (or with the variable unset when none is better).
        let info = try Self.run("speech-tl", ["info"], environment: ["OPENBLAS_CORETYPE": ""])
        XCTAssertEqual(info.status, 0, info.stderr)
        let best = info.stdout.split(separator: "\n").first { $0.hasPrefix("best kernel for this CPU") }?
            .split(separator: " ").last.map(String.init)
        let loaded = info.stdout.split(separator: "\n").first { $0.hasPrefix("openblas kernel") }?
            .split(separator: " ").last.map(String.init)
        XCTAssertNotNil(best)
        if let best, best != "default)" { XCTAssertEqual(loaded, best, info.stdout) }
    }

    func testBadOptionIsOneClearLineAndNonZeroExit() throws {
        let r = try Self.run("vision-tl", ["info", "--threads", "0"])
        XCTAssertNotEqual(r.status, 0)
        XCTAssertTrue(r.stderr.contains("--threads must be at least 1"), r.stderr)
        // A negative number is the option's value, checked as such (ArgumentParser alone reads `-1` as a flag and
        // said "Missing value").
        let negative = try Self.run("vision-tl", ["info", "--threads", "-2"])
        XCTAssertNotEqual(negative.status, 0)
        XCTAssertTrue(negative.stderr.contains("--threads must be at least 1"), negative.stderr)
        XCTAssertFalse(negative.stderr.contains("Missing value"), negative.stderr)
    }
}
