import ArgumentParser
import Foundation
import TransferEngine

/// What an app plugs into the shared command line: a `TransferDomain` plus its own options, its demo on the
/// fixtures, and how to read files given to `predict`. A domain module stays free of the command line; the
/// conformance lives in the app's own module (e.g. Sources/ToyCLI).
public protocol CommandLineDomain: TransferDomain {
    /// Domain-specific options (e.g. `--image-size`), shown in every subcommand's help.
    associatedtype Options: ContractOptions
    static var appName: String { get }
    static var summary: String { get }
    init(options: Options) throws
    /// What `demo` runs, with paths relative to the fixtures folder.
    static var demo: DemoPlan { get }
    /// Samples to predict from one path given to `predict` (an image, a clip, a text file or table...).
    func predictionSamples(_ url: URL) throws -> [Sample]
    /// Adjusts workflow defaults for this domain (before command-line overrides).
    func adjust(_ options: inout WorkflowOptions)
    /// Domain options worth recording in run.json.
    var optionsSummary: [String: String] { get }
    /// For `check-data`: the spread of the samples' sizes (image sizes, durations, text lengths), or nil.
    func sizeSummary(_ samples: [Sample]) -> String?
    /// For `export`: every file the pretrained backbone reads, and where under a models folder it goes.
    func pretrainedFiles() throws -> [(file: URL, storedAs: String)]
    /// For `export`: the contract of a model whose pretrained files moved under the export's own models folder.
    func exported(_ contract: RunContract) -> RunContract
    /// For report.html's top losses: a thumbnail or the text of a sample, or nil (its description is shown).
    func preview(_ sample: Sample) -> SamplePreview?
}

extension CommandLineDomain {
    /// Each sample read and preprocessed on its own, as training or prediction reads it: the problem of every one
    /// that cannot be read, by index (`check-data` lists them all; `predict` predicts the others).
    func unreadable(_ samples: [Sample], scratch: Bool = false, progress: ProgressReporter? = nil) -> [(index: Int, problem: String)] {
        var rng = RNG(seed: 0), bad: [(index: Int, problem: String)] = []
        for (i, s) in samples.enumerated() {
            do { _ = try batch([s], augment: false, scratch: scratch, rng: &rng) } catch { bad.append((i, "\(error)")) }
            progress?.advance()
        }
        return bad
    }

    public func adjust(_ options: inout WorkflowOptions) {}
    public var optionsSummary: [String: String] { [:] }
    public func sizeSummary(_ samples: [Sample]) -> String? { nil }
    public func exported(_ contract: RunContract) -> RunContract { contract }
    public func preview(_ sample: Sample) -> SamplePreview? { nil }
}

/// "min .. max (median m)" of values shown with `format`, for `sizeSummary`.
public func spread(_ values: [Double], _ format: (Double) -> String) -> String? {
    guard !values.isEmpty else { return nil }
    let v = values.sorted()
    return "\(format(v[0])) to \(format(v[v.count - 1])) (median \(format(v[v.count / 2])))"
}

/// The demo of an app: a new task (scratch vs extraction vs fine-tuning at several label budgets) and a
/// domain shift (every adaptation method against source-only and the oracle).
public struct DemoPlan: Sendable {
    public struct Task: Sendable {
        public var train: String, test: String
        public var labelsPerClass: [Int?]
        public init(train: String, test: String, labelsPerClass: [Int?]) {
            self.train = train; self.test = test; self.labelsPerClass = labelsPerClass
        }
    }

    public struct Shift: Sendable {
        public var source: String, target: String, targetTest: String
        public var methods: [AdaptationMethod]
        public var levels: [AdaptationLevel]
        /// The methods run end to end (nil: `methods`), to keep a demo with a slow backbone within its time.
        public var endToEndMethods: [AdaptationMethod]?
        public init(source: String, target: String, targetTest: String, methods: [AdaptationMethod] = AdaptationMethod.allCases,
                    levels: [AdaptationLevel] = AdaptationLevel.allCases, endToEndMethods: [AdaptationMethod]? = nil) {
            self.source = source; self.target = target; self.targetTest = targetTest
            self.methods = methods; self.levels = levels; self.endToEndMethods = endToEndMethods
        }
    }

    public var task: Task?
    public var shift: Shift?

    public init(task: Task?, shift: Shift?) {
        self.task = task
        self.shift = shift
    }
}

/// Entry point shared by the apps: fixes the OpenBLAS kernel, then parses the command line.
public enum TransferCLI {
    /// The command line, with a negative number after a long option joined to it (`--epochs -1` as `--epochs=-1`,
    /// `--shard -1/3`): ArgumentParser reads `-1` as a short flag and said "Missing value for '--epochs
    /// <epochs>'"; now the option's own check names the value.
    static let arguments = joiningNegativeNumbers(CommandLine.arguments)

    /// `args` with every `--option` followed by a negative number (`-1`, `-0.5`, `-1/3`) written
    /// `--option=<number>`; nothing after `--`, and no other argument (a file named `-1.png` stays as it is).
    static func joiningNegativeNumbers(_ args: [String]) -> [String] {
        var out: [String] = []
        for (i, arg) in args.enumerated() {
            if arg == "--" { return out + args[i...] }
            let number = arg.hasPrefix("-") && (Double(arg) != nil || arg.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
                .allSatisfy { !$0.isEmpty && $0.allSatisfy(\.isNumber) })
            if number, let last = out.last, last.hasPrefix("--"), last.count > 2, !last.contains("=") {
                out[out.count - 1] = last + "=" + arg
            } else {
                out.append(arg)
            }
        }
        return out
    }

    public static func main<D: CommandLineDomain>(_ domain: D.Type) {
        Runtime.prepare()
        var command: ParsableCommand
        do {
            command = try RootCommand<D>.parseAsRoot(Array(arguments.dropFirst()))
        } catch {
            RootCommand<D>.exit(withError: error)
        }
        do {
            try command.run()
        } catch let error as ValidationError {
            // A usage error found while running (a required option missing): the subcommand's usage, as for
            // parse errors, not the app's ("Usage: vision-tl <subcommand>").
            let sub = type(of: command)
            let help = "See '\(D.appName) \(sub.configuration.commandName ?? "") --help' for more information."
            FileHandle.standardError.write(Data("Error: \(error.message)\nUsage: \(RootCommand<D>.usageString(for: sub))\n  \(help)\n".utf8))
            Foundation.exit(ExitCode.validationFailure.rawValue)
        } catch {
            RootCommand<D>.exit(withError: EngineError.plain(error))   // Foundation's file errors as one plain line
        }
    }
}

struct RootCommand<D: CommandLineDomain>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: D.appName,
            abstract: D.summary,
            discussion: """
            Pretrained models are read from $TL_MODELS_DIR or ./Models (fetch them with scripts/fetch-models).
            Backbone features are cached in $TL_CACHE_DIR or ~/.cache/transfer-suite.
            """,
            version: "\(D.appName) \(TransferEngineVersion.string) (\(Runtime.summary))",
            subcommands: [DemoCommand<D>.self, FeaturesCommand<D>.self, ExtractCommand<D>.self, FinetuneCommand<D>.self,
                          AdaptCommand<D>.self, DiagnoseCommand<D>.self, EvaluateCommand<D>.self, PredictCommand<D>.self,
                          CheckDataCommand<D>.self, ExportCommand<D>.self,
                          InfoCommand<D>.self])
    }
}
