import ArgumentParser
import Foundation
import TransferEngine

/// `info`: versions, the OpenBLAS kernel in use, threads, where models are looked for.
struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Show versions, the OpenBLAS kernel in use, threads and the models folder.")

    @OptionGroup var runtime: RuntimeOptions

    func run() throws {
        runtime.apply()
        let cpu = BLASKernel.CPUFeatures.current()
        let rows: [(String, String)] = [
            ("app", "\(TransferCLI.app.name) \(TransferCLI.app.version)"),
            ("engine", "TransferEngine \(TransferEngineVersion.string)"),
            ("openblas kernel", BLASKernel.loadedCore),
            ("best kernel for this CPU", BLASKernel.bestCore(for: cpu) ?? "(OpenBLAS default)"),
            ("OPENBLAS_CORETYPE", ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(unset)"),
            ("openblas build", BLASKernel.configuration),
            ("threads", String(Runtime.threads)),
            ("models folder", ModelStore.directory.path),
        ]
        let width = rows.map(\.0.count).max() ?? 0
        for (k, v) in rows { print(k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v) }
    }
}
