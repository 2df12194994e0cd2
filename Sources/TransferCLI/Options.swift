import ArgumentParser
import Foundation
import TransferEngine

/// Options every subcommand shares.
struct CommonOptions: ParsableArguments {
    @Option(help: "Seed for every random choice: initialisation, shuffling, splits, augmentation.")
    var seed: UInt64 = 42

    @Option(help: "Threads for OpenBLAS and the engine's own loops (default: every core).")
    var threads: Int?

    @Flag(help: "Print exactly one JSON object on stdout instead of a table.")
    var json = false

    @Flag(help: "No progress output on stderr.")
    var quiet = false

    @Option(help: "Feature cache folder (default: $TL_CACHE_DIR, else ~/.cache/transfer-suite).")
    var cache: String?

    @Flag(help: "Do not read or write the feature cache.")
    var noCache = false

    func validate() throws {
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1, got \(threads)") }
    }

    func apply() {
        Runtime.setThreads(threads)
        if quiet { ProgressReporter.quiet = true }   // --json keeps progress on stderr: stdout stays one JSON object
    }

    /// For `--resume`: which feature cache to use belongs to this machine and this invocation, not to the run
    /// (a run.json from elsewhere must not point the cache at a folder of its choice; features are the same with
    /// or without it). The path is made absolute first, as the resumed run works in the run's start folder.
    /// Threads and output (`--quiet`, `--json`) given now apply too: they change how the run goes, not its results.
    mutating func adoptInvocationSettings(of current: CommonOptions) {
        noCache = current.noCache
        cache = current.cache.map { URL(fileURLWithPath: $0).path }
        if let t = current.threads { threads = t }
        quiet = quiet || current.quiet
        json = json || current.json
    }

    /// The options `--resume` may be given with (the run's own options are replayed from run.json).
    static let resumeOptions: [(name: String, takesValue: Bool)] = [
        ("--resume", true), ("--threads", true), ("--cache", true), ("--no-cache", false), ("--quiet", false), ("--json", false)]

    /// Refuses, with --resume, an option that would be ignored (the run continues with the options it started with).
    static func checkResumeArguments(_ arguments: [String]) throws {
        var i = 0
        while i < arguments.count {
            let argument = arguments[i], name = String(argument.prefix { $0 != "=" })
            guard let known = resumeOptions.first(where: { $0.name == name }) else {
                throw ValidationError("\(name): --resume continues the run with the options it was started with; only "
                                      + resumeOptions.dropFirst().map(\.name).joined(separator: ", ") + " may be given with it")
            }
            i += known.takesValue && !argument.contains("=") ? 2 : 1
        }
    }

    var featureCache: FeatureCache? {
        noCache ? nil : FeatureCache(directory: cache.map { URL(fileURLWithPath: $0, isDirectory: true) } ?? FeatureCache.defaultDirectory)
    }
}

/// Training hyper-parameters a user may override.
struct TrainingFlags: ParsableArguments {
    @Option(help: "Training epochs of every training in the run, the from-scratch baseline's too (default: 60 for heads on features, 15 for fine-tuning, 30 from scratch, raised on small sets to at least 300, 150 and 300 optimizer steps; early stopping on a validation split may end sooner).")
    var epochs: Int?

    @Option(help: "Mini-batch size for training (default: 32).")
    var batchSize: Int?

    @Option(help: "Learning rate (default: 0.01 for heads on features, 0.001 for fine-tuning and from scratch; AdamW with warmup + cosine).")
    var lr: Float?

    @Option(help: "Class weights for the loss: none, auto (n / (classes x n_class)), or a file of 'class weight' lines.")
    var classWeights: String = "none"

    func validate() throws {
        if let epochs, epochs < 1 { throw ValidationError("--epochs must be at least 1") }
        if let batchSize, batchSize < 1 { throw ValidationError("--batch-size must be at least 1") }
        if let lr, !(lr > 0 && lr.isFinite) { throw ValidationError("--lr must be a positive finite number, got \(lr)") }
    }

    func apply(to o: inout WorkflowOptions) {
        if let epochs {
            o.headTraining.epochs = epochs; o.fineTuning.epochs = epochs
            o.headTraining.minimumSteps = 0; o.fineTuning.minimumSteps = 0; o.scratchMinimum = nil
        }
        if let batchSize { o.headTraining.batchSize = batchSize; o.fineTuning.batchSize = batchSize }
        if let lr { o.headTraining.learningRate = lr; o.fineTuning.learningRate = lr }
    }

    /// The weights for `classNames` from `--class-weights` and the training labels.
    func weights(classNames: [String], labels: [Int]) throws -> [Float]? {
        switch classWeights {
        case "none": return nil
        case "auto":
            var counts = [Int](repeating: 0, count: classNames.count)
            for y in labels { counts[y] += 1 }
            return counts.map { Float(labels.count) / Float(classNames.count * max($0, 1)) }
        default:
            let path = classWeights
            guard let text = String(data: try InputFile.read(URL(fileURLWithPath: path), limit: 16 << 20, what: "a class-weights file"),
                                    encoding: .utf8) else {
                throw EngineError.invalidFile(path, "the class-weights file is not UTF-8 text")
            }
            var w = [String: Float]()
            for (n, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "," })
                if parts.isEmpty { continue }
                guard parts.count == 2, let v = Float(parts[1]), v >= 0, v.isFinite else {
                    throw EngineError.invalidFile("\(path):\(n + 1)", "expected 'class weight', got '\(line)'")
                }
                guard w.updateValue(v, forKey: String(parts[0])) == nil else {
                    throw EngineError.invalidFile("\(path):\(n + 1)", "a second weight for class '\(parts[0])'")
                }
            }
            if let unknown = w.keys.sorted().first(where: { !classNames.contains($0) }) {
                throw EngineError.invalidFile(path, "class '\(unknown)' is not in the training data (classes: \(classNames.joined(separator: ", ")))")
            }
            let weights = try classNames.map { name in
                guard let v = w[name] else { throw EngineError.invalidFile(path, "no weight for class '\(name)'") }
                return v
            }
            guard weights.contains(where: { $0 > 0 }) else { throw EngineError.invalidFile(path, "every class weight is 0: nothing to learn from") }
            return weights
        }
    }
}

/// Where a run writes its results, and resuming a killed one.
struct RunOptions: ParsableArguments {
    @Option(help: "Run directory to create (weights, options, metrics, plots). Must not exist yet, unless --overwrite.")
    var out: String?

    @Flag(help: "Replace the run at --out (finished, or an unfinished RUN.partial) with a new one.")
    var overwrite = false

    @Option(help: "Continue the killed run RUN_DIR from its last checkpoint (the other options are read from it).")
    var resume: String?
}
