import ArgumentParser
import Foundation
import TransferEngine

/// What an app tells the shared command line about itself.
public struct AppInfo: Sendable {
    public var name: String
    public var summary: String
    public var version: String

    public init(name: String, summary: String, version: String = TransferEngineVersion.string) {
        self.name = name
        self.summary = summary
        self.version = version
    }
}

/// Entry point shared by the apps: fixes the OpenBLAS kernel, then parses the command line.
public enum TransferCLI {
    nonisolated(unsafe) static var app = AppInfo(name: "tl", summary: "")

    public static func main(_ app: AppInfo) {
        Runtime.prepare()
        TransferCLI.app = app
        RootCommand.main()
    }
}

struct RootCommand: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: TransferCLI.app.name,
            abstract: TransferCLI.app.summary,
            version: "\(TransferCLI.app.name) \(TransferCLI.app.version) (\(Runtime.summary))",
            subcommands: [InfoCommand.self])
    }
}

/// Options every subcommand shares.
struct RuntimeOptions: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and the engine's own loops (default: every core).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    func apply() { Runtime.setThreads(threads) }
}
