import ArgumentParser
import Foundation
import TransferEngine

/// `info`: versions, the OpenBLAS kernel in use, threads, the models folder, the backbone's blocks and
/// parameters, and with --model a saved run's summary.
struct InfoCommand<D: CommandLineDomain>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: "info",
                             abstract: "Show versions, the OpenBLAS kernel, threads, the backbone's blocks and parameters.")
    }

    @Option(help: "A run directory to describe.")
    var model: String?
    @OptionGroup var runtime: RuntimeThreads
    @OptionGroup var domainOptions: D.Options

    func run() throws {
        runtime.apply()
        let run = try model.map { try SavedRun($0, app: D.appName) }
        var rows = runtimeRows(app: D.appName)   // after the run: an exported one brings its own models folder
        let saved = run.flatMap { try? $0.model(nil) }
        let options = try run.flatMap { r in try saved.map { try r.options(domainOptions, model: $0) } } ?? domainOptions
        let domain = try D(options: options)
        do {
            let bb = try domain.pretrainedBackbone()
            rows.append(("backbone parameters", String(bb.parameterCount)))
            rows.append(("feature width", String(bb.featureCount)))
            rows.append(("blocks (bottom to top)", String(bb.blocks.count)))
            for (i, name) in bb.blockNames.enumerated() {
                let count = bb.namedParameters().filter { p in bb.blocks[i].contains { Module.matches(p.name, $0) } }
                    .reduce(0) { $0 + $1.variable.value.count }
                rows.append(("  block \(i)", "\(name): \(count) parameters"))
            }
        } catch {
            rows.append(("backbone", "not available: \(error)"))
        }
        if let run {
            rows.append(("run", "\(run.record.command), seed \(run.record.seed), created \(run.record.created)"))
            rows.append(("run models", run.record.models.joined(separator: ", ")))
            rows.append(("default model", run.record.defaultModel.map { id in
                run.record.defaultReason.map { "\(id): \($0)" } ?? id } ?? "-"))
            if let search = run.record.unfreeze { rows.append(("unfreeze", search.summary)) }
            if let m = saved {
                rows.append(("classes", m.classNames.joined(separator: ", ")))
                let what = switch m.kind {
                case .head: "the pretrained backbone as it was"
                case .finetuned: "the backbone with its fine-tuned blocks"
                case .scratch: "a network trained from scratch"
                }
                rows.append(("model", "\(m.headKind.withArticle) head on \(m.headInputs) features of \(what)"))
            }
            if let contract = saved?.contract ?? run.record.contract {
                rows.append(("run settings", contract.describedSettings.isEmpty ? "-" : contract.describedSettings))
            }
        }
        printRows(rows)
    }
}

/// Versions, kernel, threads and models folder: the first rows of every `info`.
func runtimeRows(app: String) -> [(String, String)] {
    let cpu = BLASKernel.CPUFeatures.current()
    return [
        ("app", "\(app) \(TransferEngineVersion.string)"),
        ("engine", "TransferEngine \(TransferEngineVersion.string)"),
        ("openblas kernel", BLASKernel.loadedCore),
        ("best kernel for this CPU", BLASKernel.bestCore(for: cpu) ?? "(OpenBLAS default)"),
        ("OPENBLAS_CORETYPE", ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"] ?? "(unset)"),
        ("openblas build", BLASKernel.configuration),
        ("engine kernels", Runtime.engineKernels + (ProcessInfo.processInfo.environment["TL_KERNEL_ISA"].map {
            " (TL_KERNEL_ISA=\($0)" + (["avx512", "avx2", "sse2"].contains($0) ? ")" : ": not avx512, avx2 or sse2, ignored)")
        } ?? "")),
        ("threads", String(Runtime.threads)),
        ("models folder", ModelStore.directory.path),
    ]
}

func printRows(_ rows: [(String, String)]) {
    let width = rows.map(\.0.count).max() ?? 0
    for (k, v) in rows { print(k.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + v.printable) }
}

/// `--threads` alone (for commands that train nothing).
struct RuntimeThreads: ParsableArguments {
    @Option(help: "Threads for OpenBLAS and the engine's own loops (default: every core).")
    var threads: Int?

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    func apply() { Runtime.setThreads(threads) }
}
