import ArgumentParser
import Foundation
import TransferEngine

/// An app whose domain is not plugged in yet: `--help`, `--version` and `info` only.
public struct AppInfo: Sendable {
    public var name: String
    public var summary: String

    public init(name: String, summary: String) {
        self.name = name
        self.summary = summary
    }
}

extension TransferCLI {
    nonisolated(unsafe) static var basicApp = AppInfo(name: "tl", summary: "")

    public static func main(_ app: AppInfo) {
        Runtime.prepare()
        basicApp = app
        BasicRootCommand.main()
    }
}

struct BasicRootCommand: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: TransferCLI.basicApp.name, abstract: TransferCLI.basicApp.summary,
                             version: "\(TransferCLI.basicApp.name) \(TransferEngineVersion.string) (\(Runtime.summary))",
                             subcommands: [BasicInfoCommand.self])
    }
}

struct BasicInfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show versions, the OpenBLAS kernel in use, threads and the models folder.")

    @OptionGroup var runtime: RuntimeThreads

    func run() throws {
        runtime.apply()
        printRows(runtimeRows(app: TransferCLI.basicApp.name))
    }
}
