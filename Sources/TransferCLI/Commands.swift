import ArgumentParser
import Foundation
import TransferEngine

extension ClassifierHead.Kind: ExpressibleByArgument {}
extension AdaptationLevel: ExpressibleByArgument {}

/// A display name for a dataset path: its last two components ("fashion/test"), or a short relative path as typed.
func datasetName(_ path: String) -> String {
    // A short relative path is shown as typed ("mix", not the working folder's name and "mix").
    let typed = path.split(separator: "/").filter { $0 != "." }
    if !path.hasPrefix("/"), !typed.isEmpty, typed.count <= 2, !typed.contains("..") { return typed.joined(separator: "/") }
    let parts = URL(fileURLWithPath: path).standardizedFileURL.pathComponents.filter { $0 != "/" }
    return parts.suffix(2).joined(separator: "/")
}

/// Checks that a required data path was given and exists.
func requirePath(_ value: String?, _ option: String) throws -> URL {
    guard let value else { throw ValidationError("missing \(option) (see --help)") }
    guard FileManager.default.fileExists(atPath: value) else {
        throw EngineError.invalidFile(value, "no such file or directory (given as \(option))")
    }
    return URL(fileURLWithPath: value)
}

/// Checks, before any work, that a file a command will write (`option`, e.g. --csv) can be written and is none of
/// its inputs (see `checkNotInput`).
func checkOutputFile(_ path: String, option: String, inputs: [String]) throws {
    let target = URL(fileURLWithPath: path).resolvingSymlinksInPath().standardizedFileURL
    if DatasetFolders.isDirectory(target) { throw EngineError.invalidFile(path, "is a folder (given as \(option), a file to write)") }
    let parent = target.deletingLastPathComponent()
    guard DatasetFolders.isDirectory(parent) else {
        let what = FileManager.default.fileExists(atPath: parent.path) ? "is not a folder" : "does not exist"
        throw EngineError.invalidFile(path, "cannot be written: its folder \(parent.path) \(what) (given as \(option))")
    }
    try checkNotInput(path, option: option, inputs: inputs)
}

/// Refuses an output path (`option`) that is one of `inputs` (data files or folders given on the command line, a
/// run) or inside one of those folders, where writing would overwrite or add to them; with `holdsNoInput`, also an
/// output folder that holds one of them (replacing it, as --overwrite does, would delete that input).
func checkNotInput(_ path: String, option: String, inputs: [String], holdsNoInput: Bool = false) throws {
    func resolved(_ p: String) -> String { URL(fileURLWithPath: p).resolvingSymlinksInPath().standardizedFileURL.path }
    func isInside(_ a: String, _ folder: String) -> Bool { a.hasPrefix(folder.hasSuffix("/") ? folder : folder + "/") }
    let target = resolved(path)
    for input in inputs {
        let url = resolved(input)
        let inside = isInside(target, url)
        if url == target || inside {
            throw EngineError.invalidFile(path, "is \(inside ? "inside " : "")the input \(input); \(option) would overwrite or add to it (give it another path)")
        }
        if holdsNoInput && isInside(url, target) {
            throw EngineError.invalidFile(path, "holds the input \(input), which replacing it would delete (give \(option) another path)")
        }
    }
}

/// The datasets a command read, with their sizes and per-class counts: shown on stderr once all are read and
/// checked (`show`, so a bad input still gives one line) and saved in run.json (`data`).
final class DataLog {
    struct Entry: Codable, Equatable {
        var path: String
        var samples: Int
        /// Samples per class (labelled sets).
        var classes: [String: Int]?
        /// Hash of every sample's contents (the domain's cache key) and label, in order: `--resume` refuses data
        /// that changed since the run started.
        var fingerprint: String?
    }
    private(set) var entries: [String: Entry] = [:]
    private var lines: [String] = []

    func show() { for line in lines { ProgressReporter.note(line) } }

    func labelled<D: TransferDomain>(_ w: TransferWorkflows<D>, _ path: String?, option: String, role: String) throws -> LabelledSet<D.Sample> {
        let set = try w.domain.labelled(at: try requirePath(path, option))
        let counts = Dictionary(uniqueKeysWithValues: zip(set.classNames, set.classCounts))
        entries[role] = Entry(path: path!, samples: set.count, classes: counts,
                              fingerprint: fingerprint(w, set.samples, labels: set.labels.map { set.classNames[$0] }))
        lines.append("\(role) \(datasetName(path!)): \(set.count) samples, \(set.classNames.count) classes ("
                     + zip(set.classNames, set.classCounts).map { "\($0) \($1)" }.joined(separator: ", ") + ")")
        return set
    }

    func unlabelled<D: TransferDomain>(_ w: TransferWorkflows<D>, _ path: String?, option: String, role: String) throws -> [D.Sample] {
        let samples = try w.domain.unlabelled(at: try requirePath(path, option))
        entries[role] = Entry(path: path!, samples: samples.count, classes: nil, fingerprint: fingerprint(w, samples, labels: []))
        lines.append("\(role) \(datasetName(path!)): \(samples.count) unlabelled samples")
        return samples
    }

    /// A labelled set given as a features folder (see `features`).
    func stored<D: TransferDomain>(_ w: TransferWorkflows<D>, _ path: String, role: String) throws -> StoredFeatureSet {
        let s = try StoredFeatureSet(w, path: path)
        let set = s.set
        entries[role] = Entry(path: path, samples: set.count, classes: Dictionary(uniqueKeysWithValues: zip(set.classNames, set.classCounts)),
                              fingerprint: s.fingerprint)
        lines.append("\(role) \(datasetName(path)) (features folder): \(set.count) samples, \(set.classNames.count) classes ("
                     + zip(set.classNames, set.classCounts).map { "\($0) \($1)" }.joined(separator: ", ") + ")")
        return s
    }

    /// A labelled set given as a dataset or as a features folder: its labels (row indices as samples) and a way
    /// to get its features (from the folder, or through the backbone).
    func labelledFeatures<D: TransferDomain>(_ w: TransferWorkflows<D>, _ path: String?, option: String, role: String) throws
        -> (set: LabelledSet<Int>, features: () throws -> Tensor, dataset: LabelledSet<D.Sample>?) {
        let url = try requirePath(path, option)
        if FeatureShards.isFeatureFolder(url) {
            let s = try stored(w, path!, role: role)
            return (s.set, { s.features }, nil)
        }
        let set = try labelled(w, path, option: option, role: role)
        return (LabelledSet(samples: Array(set.samples.indices), labels: set.labels, classNames: set.classNames, source: set.source),
                { try w.features(set.samples, name: datasetName(path!)) }, set)
    }

    /// An unlabelled set given as a dataset or as a features folder (any features folder: labels are ignored).
    func unlabelledFeatures<D: TransferDomain>(_ w: TransferWorkflows<D>, _ path: String?, option: String, role: String) throws
        -> (count: Int, features: () throws -> Tensor) {
        let url = try requirePath(path, option)
        if FeatureShards.isFeatureFolder(url) {
            let s = try FeatureShards.load(URL(fileURLWithPath: path!, isDirectory: true), expecting: try w.featureIdentity())
            entries[role] = Entry(path: path!, samples: s.names.count, classes: nil, fingerprint: s.fingerprint)
            lines.append("\(role) \(datasetName(path!)) (features folder): \(s.names.count) unlabelled samples")
            return (s.names.count, { s.features })
        }
        let samples = try unlabelled(w, path, option: option, role: role)
        return (samples.count, { try w.features(samples, name: datasetName(path!)) })
    }

    private func fingerprint<D: TransferDomain>(_ w: TransferWorkflows<D>, _ samples: [D.Sample], labels: [String]) -> String {
        var h = FNV64()
        for s in samples { h.add(w.domain.cacheKey(s)) }
        for l in labels { h.add(l) }
        return h.hex
    }

    /// Refuses to continue a run whose data changed since it started (`recorded`: the run's entries).
    func check(against recorded: [String: Entry]?) throws {
        guard let recorded else { return }
        for (role, now) in entries.sorted(by: { $0.key < $1.key }) {
            guard let then = recorded[role], then.fingerprint != nil, then != now else { continue }
            throw EngineError.invalidFile(now.path, "the \(role) data changed since the run started (\(then.samples) samples then, \(now.samples) now, contents differ); start the run again")
        }
    }
}

/// What a training command produced: results, notes for the table, source/target features before adaptation
/// (for the alignment plot), and the model `evaluate`/`predict` use by default with the reason it was chosen
/// (never a test accuracy).
struct RunOutcome {
    var results: [StrategyResult]
    var notes: [String] = []
    var before: (source: Tensor, target: Tensor)? = nil
    var defaultModel: (identifier: String, reason: String)? = nil
    /// The source set's labels, to colour the source features by class in report.html.
    var sourceLabels: (labels: [Int], classNames: [String])? = nil
    /// The default model's highest-loss test samples, for report.html (only with a labelled test set).
    var topLosses: TopLossRequest? = nil
    /// What `diagnose` measured between the two sets named (the demo's shift), for the JSON output.
    var diagnosis: Diagnosis? = nil
    struct Diagnosis { var source: String, target: String, measured: DomainDiagnosis }
    /// The source's neighbour agreement that `adapt`'s label-free rule checked (`AdaptationSelection`).
    var neighbourAgreement: Double? = nil
}

/// A command that trains: creates (or resumes) a run directory, runs, prints and saves the results.
protocol TrainingCommand: ParsableCommand {
    associatedtype D: CommandLineDomain
    var common: CommonOptions { get set }
    var runOptions: RunOptions { get }
    var domainOptions: D.Options { get }
    /// Loads and checks the inputs (before any run directory exists), noting each dataset in `log`, then returns
    /// the work to do.
    func prepare(_ workflows: TransferWorkflows<D>, log: DataLog) throws -> () throws -> RunOutcome
    /// Applies command-specific options to the workflow options.
    func configure(_ options: inout WorkflowOptions, domain: D) throws
}

extension TrainingCommand {
    func run() throws {
        let name = Self.configuration.commandName!
        if let resume = runOptions.resume {
            try CommonOptions.checkResumeArguments(Array(TransferCLI.arguments.dropFirst(2)))
            let (dir, record) = try RunDirectory.resume(resume, app: D.appName, command: name)
            do {
                // The run's recorded arguments, read from the folder it started in; the cache is this command's.
                var replay = try Self.parse(TransferCLI.joiningNegativeNumbers(record.arguments))
                replay.common.adoptInvocationSettings(of: common)
                if let start = record.directory, !FileManager.default.changeCurrentDirectoryPath(start) {
                    throw EngineError.invalidFile(start, "the run was started in this folder, which is gone; its relative paths cannot be found")
                }
                try replay.execute(run: dir, record: record)
            } catch {
                // Often the cause is outside the run (a data folder moved away, the models or the cache elsewhere):
                // the checkpoints are kept for a --resume once it is fixed; --overwrite starts the run again.
                dir.release()
                throw EngineError.invalidArgument("\(error) (the unfinished run \(dir.partial.path) cannot continue now and is kept: "
                                                  + "--resume it again once this is fixed, or start again with --overwrite)")
            }
        } else {
            try execute(run: nil, record: nil)
        }
    }

    func execute(run existing: RunDirectory?, record existingRecord: RunDirectory.Record?) throws {
        common.apply()
        let workflows = try makeWorkflows(D.self, domainOptions, common) { try configure(&$0, domain: $1) }
        let log = DataLog()
        let work = try prepare(workflows, log: log)
        // A missing or damaged model fails here, before any training; so does a depth the backbone does not have.
        let contract = try workflows.contract(settings: domainOptions.contract)
        try workflows.checkUnfreeze()
        if let existingRecord {
            try log.check(against: existingRecord.data)
            if let then = existingRecord.contract, then != contract {
                throw EngineError.invalidFile(existing!.final.path, "the pretrained model or the settings differ from those the run started with (now: backbone \(contract.backbone), \(contract.describedSettings); then: backbone \(then.backbone), \(then.describedSettings))")
            }
        }
        let name = Self.configuration.commandName!
        var run = existing
        var record = existingRecord
        if run == nil, let out = runOptions.out {
            try checkNotInput(out, option: "--out", inputs: log.entries.values.map(\.path).sorted(), holdsNoInput: true)
            let args = Array(TransferCLI.arguments.dropFirst(2))
            let r = RunDirectory.Record(app: D.appName, version: TransferEngineVersion.string, command: name, arguments: args,
                                        seed: common.seed, options: workflows.domain.optionsSummary, contract: contract,
                                        data: log.entries.isEmpty ? nil : log.entries,
                                        directory: FileManager.default.currentDirectoryPath,
                                        models: [], defaultModel: nil, defaultReason: nil,
                                        created: ISO8601DateFormatter().string(from: Date()))
            run = try RunDirectory.create(out, record: r, overwrite: runOptions.overwrite)
            record = r
        }
        workflows.checkpointer = run
        do {
            var outcome = try work()
            for i in outcome.results.indices { outcome.results[i].model?.contract = contract }
            if let run, var rec = record {
                try Output.save(outcome, app: D.appName, command: name, to: run, record: &rec)
                try run.finish()
            }
            var notes = outcome.notes + missingClassNotes(outcome.results) + notConvergedNotes(outcome.results)
            if let search = outcome.results.compactMap(\.depthSearch).first { notes.append(search.summary) }
            if let (id, reason) = outcome.defaultModel { notes.append("default model: \(id) (\(reason))") }
            if let run { notes.append("run saved to \(run.final.path)") }
            Output.print(app: D.appName, command: name, results: outcome.results, defaultModel: outcome.defaultModel,
                         diagnosis: outcome.diagnosis, neighbourAgreement: outcome.neighbourAgreement, json: common.json, notes: notes)
        } catch {
            // A new run's error would only repeat on --resume; a resumed run keeps its checkpoints (see run()).
            if existing == nil { run?.discard() }
            throw error
        }
    }
}

/// The domain and its workflows: seed and cache from the common options, then the domain's defaults, then
/// the command's own options.
func makeWorkflows<D: CommandLineDomain>(_: D.Type, _ domainOptions: D.Options, _ common: CommonOptions,
                                         configure: (inout WorkflowOptions, D) throws -> Void = { _, _ in }) throws -> TransferWorkflows<D> {
    let domain = try D(options: domainOptions)
    var options = WorkflowOptions()
    options.seed = common.seed
    options.cache = common.featureCache
    domain.adjust(&options)
    try configure(&options, domain)
    return TransferWorkflows(domain: domain, options: options)
}

/// Options for the new-task commands (extract, finetune).
struct TaskOptions: ParsableArguments {
    @Option(help: "Labelled training data: a folder per class, or a table with a label column (extract: or a features folder made by `features`).")
    var train: String?
    @Option(help: "Labelled test data, same layout (classes must be among the training classes; extract: or a features folder). Optional: it only reports; without it the validation split held out from the training data reports.")
    var test: String?
    @Option(help: "Use only N labelled training examples per class (stratified, seeded). Default: all.")
    var labelsPerClass: Int?
    @Option(help: "Head on the backbone features: linear, or mlp (one hidden layer of 256, ReLU, dropout 0.2).")
    var head: ClassifierHead.Kind = .linear
    @Flag(help: "Skip the from-scratch baseline (a small randomly initialised network trained on the same data).")
    var noBaseline = false

    func validate() throws {
        if let labelsPerClass, labelsPerClass < 1 { throw ValidationError("--labels-per-class must be at least 1") }
    }

    /// Loads and checks the sets, then returns the work: the from-scratch baseline (unless skipped) and `strategy`,
    /// whose model is the run's default (the technique asked for; the baseline is there to compare with).
    func work<D: CommandLineDomain>(_ w: TransferWorkflows<D>, log: DataLog, training: TrainingFlags,
                                 strategy: @escaping (LabelledSet<D.Sample>, LabelledSet<D.Sample>?, Int?, String) throws -> StrategyResult)
        throws -> () throws -> RunOutcome {
        if usesFeatureFolders {
            throw EngineError.invalidArgument("a features folder (made by `features`) is taken by extract only: this command runs the backbone on the samples themselves; give the dataset")
        }
        let train = try log.labelled(w, self.train, option: "--train", role: "train")
        try train.validateForTraining()
        let test = try self.test.map { try log.labelled(w, $0, option: "--test", role: "test").relabelled(to: train.classNames) }
        w.options.classWeights = try training.weights(classNames: train.classNames, labels: train.labels)
        let evalName = self.test.map(datasetName) ?? "validation", k = labelsPerClass, baseline = !noBaseline
        return {
            log.show()
            // The technique first: it reads the test set before it trains (a file there that cannot be read is
            // reported before any training), the baseline scores it only once trained. The table keeps the
            // baseline first.
            let main = try strategy(train, test, k, evalName)
            let results = (baseline ? [try w.scratch(train: train, test: test, labelsPerClass: k, evalName: evalName)] : []) + [main]
            return RunOutcome(results: results, notes: Self.notes(main, tested: test != nil)
                                + labelBudgetNotes(k, labels: train.labels, classNames: train.classNames, option: "--labels-per-class", set: "--train"),
                              defaultModel: (main.identifier, "the \(main.name) model this command trained"),
                              topLosses: test.flatMap { w.topLossRequest(main, on: $0, name: evalName) })
        }
    }

    static func notes(_ main: StrategyResult, tested: Bool) -> [String] {
        if tested { return [] }
        return [main.report == nil
            ? "no --test, and too few training samples to hold out a validation split (under 50): accuracy not measured"
            : "no --test: accuracy is on the validation split held out from the training data (\(main.report!.support.reduce(0, +)) samples; it also chose the epoch)"]
    }

    /// Whether `--train` or `--test` is a features folder (made by `features`) rather than a dataset.
    var usesFeatureFolders: Bool {
        [train, test].contains { $0.map { FeatureShards.isFeatureFolder(URL(fileURLWithPath: $0)) } ?? false }
    }

    /// `extract` with a features folder for `--train` and/or `--test` (a dataset given with one runs through the
    /// backbone as usual). No from-scratch baseline: it needs the samples themselves.
    func featureWork<D: CommandLineDomain>(_ w: TransferWorkflows<D>, log: DataLog, training: TrainingFlags) throws -> () throws -> RunOutcome {
        let train = try log.labelledFeatures(w, self.train, option: "--train", role: "train")
        try train.set.validateForTraining()
        let test = try self.test.map { try log.labelledFeatures(w, $0, option: "--test", role: "test") }
        let testSet = try test?.set.relabelled(to: train.set.classNames)
        let testSamples = try test?.dataset?.relabelled(to: train.set.classNames)   // nil for a features folder
        w.options.classWeights = try training.weights(classNames: train.set.classNames, labels: train.set.labels)
        let evalName = self.test.map(datasetName) ?? "validation", k = labelsPerClass, baseline = !noBaseline
        return {
            log.show()
            let rows = w.trainingRows(labels: train.set.labels, classCount: train.set.classNames.count, labelsPerClass: k)
            let f = try train.features().gatherRows(rows)
            let fTest = try test?.features()
            let main = try w.extract(features: f, labels: rows.map { train.set.labels[$0] }, classNames: train.set.classNames,
                                     test: testSet.map { (fTest!, $0.labels) }, labelsPerClass: k, evalName: evalName).result
            var notes = Self.notes(main, tested: testSet != nil)
                + labelBudgetNotes(k, labels: train.set.labels, classNames: train.set.classNames, option: "--labels-per-class", set: "--train")
            if baseline { notes.append("trained from a features folder: no from-scratch baseline (it needs the samples)") }
            return RunOutcome(results: [main], notes: notes,
                              defaultModel: (main.identifier, "the \(main.name) model this command trained"),
                              topLosses: testSamples.flatMap { w.topLossRequest(main, on: $0, name: evalName) })
        }
    }
}

struct ExtractCommand<D: CommandLineDomain>: TrainingCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: "extract",
                             abstract: "Feature extraction: frozen pretrained backbone, cached features, a new head.")
    }

    @OptionGroup var task: TaskOptions
    @OptionGroup var training: TrainingFlags
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    func configure(_ options: inout WorkflowOptions, domain: D) throws {
        training.apply(to: &options)
        options.head = task.head
        options.unfreeze = 0   // extraction trains no block (a one-block backbone was refused for fine-tuning's default 2)
    }

    func prepare(_ w: TransferWorkflows<D>, log: DataLog) throws -> () throws -> RunOutcome {
        if task.usesFeatureFolders { return try task.featureWork(w, log: log, training: training) }
        return try task.work(w, log: log, training: training) { try w.extract(train: $0, test: $1, labelsPerClass: $2, evalName: $3).result }
    }
}

/// Parses `--unfreeze K|all`.
struct UnfreezeCount: ExpressibleByArgument {
    var value: Int
    /// `auto`: the depth is chosen on held-out labelled data among `DepthSearch.candidates` (see `DepthSearch`).
    var auto = false
    init?(argument: String) {
        if argument == "all" { value = Int.max; return }
        if argument == "auto" { value = 2; auto = true; return }
        guard let k = Int(argument), k >= 0 else { return nil }
        value = k
    }
    init(_ k: Int) { value = k }
    var defaultValueDescription: String { auto ? "auto" : value == Int.max ? "all" : String(value) }
}

struct FineTuneOptions: ParsableArguments {
    @Option(help: "Top blocks of the backbone to train: a number (0: the head alone), all, or auto (each of 0-4 blocks fine-tuned on four fifths of the labelled data and scored on the fifth held out; the default 2 stays unless the best beats it beyond chance, McNemar p < 0.05; end-to-end adapt chooses on the source).")
    var unfreeze = UnfreezeCount(2)
    @Option(help: "Backbone learning rate = head learning rate x this (discriminative learning rates).")
    var backboneLrMult: Float = Self.defaultBackboneLrMult
    static let defaultBackboneLrMult: Float = 0.1
    @Flag(help: "Unfreeze gradually: one more block per epoch, top first.")
    var gradual = false
    @Flag(help: "Augment training samples (the frozen part is then re-run every batch instead of cached).")
    var augment = false

    /// The options as given by no flag (parsed from nothing: an unparsed instance holds no values).
    static let defaults = try! FineTuneOptions.parse([])

    func validate() throws {
        guard backboneLrMult >= 0, backboneLrMult.isFinite else {
            throw ValidationError("--backbone-lr-mult must be a finite number >= 0 (0: the unfrozen blocks keep their weights), got \(backboneLrMult)")
        }
        // With no block to train, these would be accepted and ignored.
        if unfreeze.value == 0, !unfreeze.auto, gradual || backboneLrMult != Self.defaultBackboneLrMult {
            throw ValidationError("--gradual and --backbone-lr-mult set how backbone blocks train, and --unfreeze 0 trains none: give --unfreeze 1 or more, or drop them")
        }
    }

    func apply(to o: inout WorkflowOptions) {
        o.unfreeze = unfreeze.value
        o.unfreezeCandidates = unfreeze.auto ? DepthSearch.candidates : nil
        o.backboneLRMultiplier = backboneLrMult
        o.gradualUnfreezing = gradual
        o.augment = augment
    }
}

struct FinetuneCommand<D: CommandLineDomain>: TrainingCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: "finetune",
                             abstract: "Fine-tuning: linear probe, then the top blocks trained with smaller learning rates.")
    }

    @OptionGroup var task: TaskOptions
    @OptionGroup var fine: FineTuneOptions
    @OptionGroup var training: TrainingFlags
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    func configure(_ options: inout WorkflowOptions, domain: D) throws {
        training.apply(to: &options)
        fine.apply(to: &options)
        options.head = task.head
        options.keepsFrozenActivations = true
    }

    func prepare(_ w: TransferWorkflows<D>, log: DataLog) throws -> () throws -> RunOutcome {
        try task.work(w, log: log, training: training) { try w.finetune(train: $0, test: $1, labelsPerClass: $2, evalName: $3).result }
    }
}

struct AdaptCommand<D: CommandLineDomain>: TrainingCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: "adapt",
                             abstract: "Unsupervised domain adaptation: labelled source, unlabelled target.",
                             discussion: """
                             Methods: source-only (baseline), dann (gradient reversal + domain discriminator, \
                             lambda 2/(1+exp(-10p))-1), coral (Deep CORAL), adabn (BatchNorm statistics re-estimated \
                             on the target), pseudo (self-training on confident pseudo-labels), mcc (Minimum Class \
                             Confusion, temperature 2.5), shot (information maximisation + nearest-centroid pseudo-labels, \
                             classifier fixed), bnm (Batch Nuclear-norm Maximisation), propagate (the other \
                             feature-level methods' average prediction on the target spread along the target's 10 \
                             nearest neighbours, then a head trained on the source and those labels; feature level \
                             only); \
                             auto (the default) runs them all and chooses the run's default model without target \
                             labels: where the source's classes form neighbourhoods in the backbone's features and a \
                             method agrees with the average prediction more than source-only does (ensemble \
                             validation), propagate; otherwise source-only. \
                             Levels: features (a head with a 256-wide bottleneck on cached features), end-to-end \
                             (the backbone's top blocks trained too), both, and auto (the default): features, and \
                             where the source's classes form no neighbourhoods in the frozen features, source-only \
                             end to end; if the source rows it held out form neighbourhoods in its features beyond \
                             chance, mcc, shot, bnm and pseudo end to end too, and the one that agrees most with \
                             their average prediction (1% more than source-only end to end) becomes the default; \
                             else source-only on the frozen features. With --target-test, the target-supervised oracle \
                             (5-fold cross-validation on that set) is reported as well.
                             """)
    }

    @Option(help: "Labelled source data: a folder per class, a table with a label column, or a features folder (see features; feature level only).")
    var source: String?
    @Option(help: "Unlabelled target data: a folder of files, a table without labels, or a features folder (features --unlabelled).")
    var target: String?
    @Option(help: "Labelled target data, for reporting only (optional): it never chooses the default model. A features folder too.")
    var targetTest: String?
    @Option(help: "A few labelled target examples (optional): adds the rows target-only, supervised and semi (feature level), and semi becomes the default model. Must not share samples with --target-test; may share them with --target.")
    var targetLabelled: String?
    @Option(help: "Labelled target examples per class drawn from --target-labelled (stratified, seeded; default: all).")
    var targetLabelsPerClass: Int?
    @Option(help: "Method: auto (every method, the default model chosen without target labels), source-only, dann, coral, adabn, pseudo, mcc, shot, bnm, or a comma-separated list of them (all = auto).")
    var method = MethodChoice.auto
    @Option(help: "Level: auto (features; where the source's classes form no neighbourhoods in the frozen features, source-only, mcc, shot, bnm and pseudo end to end too; not with --target-labelled), features, end-to-end or both.")
    var level = LevelChoice.auto
    @Option(help: "Weight of the DANN domain-discriminator loss.")
    var dannWeight: Float = AdaptationOptions().dannWeight
    @Option(help: "Weight of the Deep CORAL loss.")
    var coralWeight: Float = AdaptationOptions().coralWeight
    @Option(help: "Minimum probability for a pseudo-label.")
    var pseudoThreshold: Float = AdaptationOptions().pseudoThreshold
    @Option(help: "Self-training rounds (feature level).")
    var pseudoRounds: Int = AdaptationOptions().pseudoRounds
    @Option(help: "Rounds of propagate and semi: each after the first propagates the previous round's predictions (default: 2, or 1 with --imbalanced-target).")
    var propagateRounds: Int?
    @Flag(help: "The target's classes are known not to come in the source's proportions: propagate and semi do not balance their labels to them (DANN, MCC, SHOT and BNM still assume they do).")
    var imbalancedTarget = false
    @OptionGroup var fine: FineTuneOptions
    @OptionGroup var training: TrainingFlags
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    func validate() throws {
        for (name, value) in [("--dann-weight", dannWeight), ("--coral-weight", coralWeight)] where !(value >= 0 && value.isFinite) {
            throw ValidationError("\(name) must be a finite number >= 0, got \(value)")
        }
        if !(pseudoThreshold > 0 && pseudoThreshold <= 1) { throw ValidationError("--pseudo-threshold must be in (0, 1], got \(pseudoThreshold)") }
        if pseudoRounds < 0 { throw ValidationError("--pseudo-rounds must be >= 0, got \(pseudoRounds)") }
        if let rounds = propagateRounds, rounds < 1 { throw ValidationError("--propagate-rounds must be >= 1, got \(rounds)") }
        let propagates = targetLabelled != nil || (method.methods.contains(.propagate) && level.levels.contains(.features))
        for (flag, given) in [("--imbalanced-target", imbalancedTarget),
                              ("--propagate-rounds", propagateRounds != nil)] where given && !propagates {
            throw ValidationError("\(flag) changes only propagate and semi: it needs propagate at the feature level (--method auto or a list with propagate) or --target-labelled")
        }
        if let k = targetLabelsPerClass {
            if k < 1 { throw ValidationError("--target-labels-per-class must be >= 1, got \(k)") }
            if targetLabelled == nil { throw ValidationError("--target-labels-per-class needs --target-labelled") }
        }
        // The backbone's training options change nothing at the feature level (they were accepted and ignored).
        let defaults = FineTuneOptions.defaults
        if level == .features, fine.unfreeze.value != defaults.unfreeze.value || fine.unfreeze.auto || fine.gradual || fine.augment
            || fine.backboneLrMult != defaults.backboneLrMult {
            throw ValidationError("--unfreeze, --backbone-lr-mult, --gradual and --augment train the backbone: they need --level auto, end-to-end or both")
        }
    }

    func configure(_ options: inout WorkflowOptions, domain: D) throws {
        training.apply(to: &options)
        fine.apply(to: &options)
        if level == .features { options.unfreeze = 0 }   // the feature level trains no block
        options.keepsFrozenActivations = level != .features
    }

    func prepare(_ w: TransferWorkflows<D>, log: DataLog) throws -> () throws -> RunOutcome {
        if [source, target, targetTest].contains(where: { $0.map { FeatureShards.isFeatureFolder(URL(fileURLWithPath: $0)) } ?? false }) {
            return try featureWork(w, log: log)
        }
        let sourceSet = try log.labelled(w, source, option: "--source", role: "source")
        try sourceSet.validateForTraining()
        let targetSamples = try log.unlabelled(w, target, option: "--target", role: "target")
        try AdaptationOptions.checkTargetSize(targetSamples.count, path: target!)
        let test = try targetTest.map { try log.labelled(w, $0, option: "--target-test", role: "target test").relabelled(to: sourceSet.classNames) }
        let labelled = try targetLabelled.map { try log.labelled(w, $0, option: "--target-labelled", role: "labelled target").relabelled(to: sourceSet.classNames) }
        // Before anything is printed or created (`adapt` checks again, for callers of the engine).
        if let labelled { try w.checkTargetLabelled(labelled, test: test) }
        w.options.classWeights = try training.weights(classNames: sourceSet.classNames, labels: sourceSet.labels)
        let methods = method.methods, levels = level.levels, settings = settings, endToEndWhereNeeded = level == .auto && labelled == nil
        return {
            log.show()
            let results = try w.adapt(source: sourceSet, target: targetSamples, targetTest: test, methods: methods,
                                      levels: levels, oracle: test != nil, endToEndWhereNeeded: endToEndWhereNeeded,
                                      targetLabelled: labelled,
                                      targetLabelsPerClass: targetLabelsPerClass, settings: settings,
                                      evalName: test.map { _ in datasetName(targetTest!) } ?? "none")
            let before = try w.unadaptedFeatures(source: sourceSet.samples, target: targetSamples)
            var outcome = Self.outcome(results, tested: test != nil, before: before, source: sourceSet,
                                       settings: settings) { chosen in
                test.flatMap { w.topLossRequest(chosen, on: $0, name: datasetName(targetTest!)) }
            }
            outcome.notes += labelBudgetNotes(targetLabelsPerClass, labels: labelled?.labels ?? [], classNames: labelled?.classNames ?? [], option: "--target-labels-per-class",
                                              set: "--target-labelled")
            return outcome
        }
    }

    var settings: AdaptationOptions {
        var s = AdaptationOptions()
        s.dannWeight = dannWeight
        s.coralWeight = coralWeight
        s.pseudoThreshold = pseudoThreshold
        s.pseudoRounds = pseudoRounds
        s.balancePropagatedLabels = !imbalancedTarget
        s.propagationRounds = propagateRounds
        return s
    }

    /// The run's default model, chosen without target labels (`AdaptationSelection`), its auto row, and the rest
    /// of what the run saves.
    static func outcome(_ adapted: [StrategyResult], tested: Bool, before: (source: Tensor, target: Tensor),
                        source: LabelledSet<some Any>, settings: AdaptationOptions, topLosses: (StrategyResult) -> TopLossRequest?) -> RunOutcome {
        var results = adapted
        let agreement = AdaptationSelection.neighbourAgreement(before.source, labels: source.labels)
        var pick = AdaptationSelection.choose(results, neighbourAgreement: agreement, settings: settings)
        if let pick, results.filter({ $0.model != nil && $0.labelFree != nil }).count > 1 {
            results.append(AdaptationSelection.autoRow(pick.identifier, of: results))
        }
        if let semi = results.first(where: { $0.strategy == .semi }) {
            // Chosen by what it uses, not by a score: it is the only model trained on the source labels, the
            // target labels and the unlabelled target together.
            pick = (semi.identifier, AdaptationSelection.formsNeighbourhoods(agreement)
                ? "semi-supervised: the labelled target examples and the supervised model's predictions propagated along the unlabelled target's nearest neighbours\(settings.propagationSummary), then trained on those and the source labels"
                : String(format: "semi-supervised: trained on the source labels and the labelled target examples, the unlabelled target not used: the source's classes do not form neighbourhoods in the backbone's features (nearest-neighbour agreement %.2f)", agreement ?? 0))
        }
        let chosen = pick.flatMap { p in results.first { $0.identifier == p.identifier } }
        return RunOutcome(results: results, notes: tested ? [] : ["no --target-test: target accuracy not measured"],
                          before: before, defaultModel: pick, sourceLabels: (source.labels, source.classNames),
                          topLosses: chosen.flatMap(topLosses), neighbourAgreement: agreement)
    }

    /// `adapt` with a features folder (made by `features`) for `--source`, `--target` and/or `--target-test` (a
    /// dataset given with one runs through the backbone as usual): feature-level adaptation, from the features
    /// alone. End-to-end adaptation and --target-labelled need the samples themselves and are refused.
    func featureWork(_ w: TransferWorkflows<D>, log: DataLog) throws -> () throws -> RunOutcome {
        guard !level.levels.contains(.endToEnd) else {
            throw EngineError.invalidArgument("--level \(level.rawValue): end-to-end adaptation trains the backbone on the samples themselves, and a features folder holds only their features; use --level features, or give the datasets")
        }
        guard targetLabelled == nil else {
            throw EngineError.invalidArgument("--target-labelled with a features folder: semi-supervised adaptation checks the labelled examples against the samples; give --source, --target and --target-test as datasets")
        }
        let source = try log.labelledFeatures(w, self.source, option: "--source", role: "source")
        try source.set.validateForTraining()
        let target = try log.unlabelledFeatures(w, self.target, option: "--target", role: "target")
        try AdaptationOptions.checkTargetSize(target.count, path: self.target!)
        let test = try targetTest.map { try log.labelledFeatures(w, $0, option: "--target-test", role: "target test") }
        let testSet = try test?.set.relabelled(to: source.set.classNames)
        let testSamples = try test?.dataset?.relabelled(to: source.set.classNames)   // nil for a features folder
        w.options.classWeights = try training.weights(classNames: source.set.classNames, labels: source.set.labels)
        let methods = method.methods, settings = settings
        return {
            log.show()
            let fS = try source.features(), fT = try target.features(), fTest = try test?.features()
            let results = try w.adapt(source: source.set, features: fS, target: fT, targetTest: testSet, testFeatures: fTest,
                                      methods: methods, oracle: testSet != nil, settings: settings,
                                      evalName: targetTest.map(datasetName) ?? "none")
            return Self.outcome(results, tested: testSet != nil, before: w.unadapted(source: fS, target: fT), source: source.set,
                                settings: settings) { chosen in
                testSamples.flatMap { w.topLossRequest(chosen, on: $0, name: datasetName(targetTest!)) }
            }
        }
    }
}

/// `--method`: auto/all, one method, or a comma-separated list of them.
struct MethodChoice: ExpressibleByArgument {
    static let auto = MethodChoice(methods: AdaptationMethod.allCases, text: "auto")
    let methods: [AdaptationMethod]
    let text: String

    init(methods: [AdaptationMethod], text: String) { self.methods = methods; self.text = text }

    init?(argument: String) {
        if argument == "all" || argument == "auto" { self.init(methods: AdaptationMethod.allCases, text: argument); return }
        let names = argument.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        let parsed = names.compactMap(AdaptationMethod.init(rawValue:))
        guard !parsed.isEmpty, parsed.count == names.count else { return nil }
        // A method named twice runs once (it would train the same model twice and print two equal rows).
        self.init(methods: parsed.enumerated().filter { !parsed[..<$0.offset].contains($0.element) }.map(\.element), text: argument)
    }

    var defaultValueDescription: String { text }
    static var allValueStrings: [String] { ["auto"] + AdaptationMethod.allCases.map(\.rawValue) }
}

/// `--level`: auto, features, end-to-end or both.
enum LevelChoice: String, CaseIterable, ExpressibleByArgument {
    case auto, features, endToEnd = "end-to-end", both

    /// The levels every run trains (auto adds end to end where the frozen features fail the neighbourhood check).
    var levels: [AdaptationLevel] {
        switch self {
        case .auto, .features: return [.features]
        case .endToEnd: return [.endToEnd]
        case .both: return AdaptationLevel.allCases
        }
    }
}

struct DemoCommand<D: CommandLineDomain>: TrainingCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: "demo",
                             abstract: "Run everything on the fixtures and print one comparison table.")
    }

    @Option(help: "Fixtures folder (default: $TL_FIXTURES_DIR, else ./Fixtures).")
    var fixtures: String?
    @OptionGroup var training: TrainingFlags
    @OptionGroup var runOptions: RunOptions
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    func configure(_ options: inout WorkflowOptions, domain: D) throws {
        training.apply(to: &options)
        options.keepsFrozenActivations = true
    }

    func prepare(_ w: TransferWorkflows<D>, log _: DataLog) throws -> () throws -> RunOutcome {
        let root = fixtures ?? ProcessInfo.processInfo.environment["TL_FIXTURES_DIR"] ?? "Fixtures"
        let plan = D.demo
        let given = fixtures != nil ? "--fixtures" : ProcessInfo.processInfo.environment["TL_FIXTURES_DIR"] != nil ? "$TL_FIXTURES_DIR" : nil
        guard given != nil || DatasetFolders.isDirectory(URL(fileURLWithPath: root)) else {
            throw EngineError.invalidFile(URL(fileURLWithPath: root).path, "no such folder: the fixtures are looked for in ./Fixtures by default; run from the repository, or give --fixtures")
        }
        func path(_ p: String) throws -> URL { try requirePath(URL(fileURLWithPath: root).appendingPathComponent(p).path, given ?? "--fixtures") }
        let task = try plan.task.map { t -> (LabelledSet<D.Sample>, LabelledSet<D.Sample>, DemoPlan.Task) in
            let train = try w.domain.labelled(at: try path(t.train))
            try train.validateForTraining()
            return (train, try w.domain.labelled(at: try path(t.test)).relabelled(to: train.classNames), t)
        }
        let shift = try plan.shift.map { s -> (LabelledSet<D.Sample>, [D.Sample], LabelledSet<D.Sample>, DemoPlan.Shift) in
            let src = try w.domain.labelled(at: try path(s.source))
            try src.validateForTraining()
            return (src, try w.domain.unlabelled(at: try path(s.target)),
                    try w.domain.labelled(at: try path(s.targetTest)).relabelled(to: src.classNames), s)
        }
        return {
            var results: [StrategyResult] = []
            var before: (source: Tensor, target: Tensor)?
            var chosen: (identifier: String, reason: String)?
            if let (train, test, t) = task {
                let evalName = datasetName(t.test)
                for k in t.labelsPerClass {
                    results.append(try w.scratch(train: train, test: test, labelsPerClass: k, evalName: evalName))
                    results.append(try w.extract(train: train, test: test, labelsPerClass: k, evalName: evalName).result)
                    let tuned = try w.finetune(train: train, test: test, labelsPerClass: k, evalName: evalName).result
                    results.append(tuned)
                    if k == nil { chosen = (tuned.identifier, "fine-tuned on all the task's labels") }
                }
            }
            var notes: [String] = []
            var diagnosis: RunOutcome.Diagnosis?
            if let (source, target, test, s) = shift {
                let d = try w.diagnose(source: source, target: target), from = datasetName(s.source), to = datasetName(s.target)
                diagnosis = .init(source: from, target: to, measured: d)
                notes.append(String(format: "diagnose %@ -> %@: proxy A-distance %.2f, MMD² %.4f; recommendation: %@",
                                    from, to, d.proxyADistance, d.mmd, d.recommendation))
                let adapted = try w.adapt(source: source, target: target, targetTest: test, methods: s.methods,
                                          levels: s.levels, oracle: true, endToEndMethods: s.endToEndMethods,
                                          evalName: datasetName(s.targetTest))
                results += adapted
                before = try w.unadaptedFeatures(source: source.samples, target: target)
                if let pick = AdaptationSelection.choose(adapted, neighbourAgreement: d.sourceNeighbourAgreement) {
                    results.append(AdaptationSelection.autoRow(pick.identifier, of: adapted))
                    chosen = chosen ?? pick
                }
                if s.levels == [.features], !AdaptationSelection.formsNeighbourhoods(d.sourceNeighbourAgreement) {
                    notes.append("the demo adapts on the frozen features only, for its time; adapt's default --level auto fine-tunes end to end on this shift (source-only, then mcc, shot, bnm and pseudo if its check passes; the README gives what it chose)")
                }
            }
            return RunOutcome(results: results, notes: notes, before: before, defaultModel: chosen,
                              sourceLabels: shift.map { ($0.0.labels, $0.0.classNames) }, diagnosis: diagnosis,
                              neighbourAgreement: diagnosis?.measured.sourceNeighbourAgreement)
        }
    }
}

/// `evaluate`: scores a saved run on a labelled set.
struct EvaluateCommand<D: CommandLineDomain>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: "evaluate", abstract: "Score a saved run's model on a labelled set.")
    }

    @Option(help: "Run directory made by extract, finetune, adapt or demo.")
    var model: String
    @Option(help: "Labelled data: a folder per class, or a table with a label column, or a features folder made by `features` (models of extract and feature-level adapt only).")
    var data: String
    @Option(help: "Which of the run's models (default: the run's default model, chosen without test labels). Names are listed in run.json.")
    var strategy: String?
    @Option(help: "Folder for the error analysis: predictions.csv (every input with its true and predicted label, the probability, the loss and the top 3), confusions.csv (the confused pairs, most frequent first) and metrics.json.")
    var out: String?
    @Flag(help: "Replace predictions.csv, confusions.csv and metrics.json in an --out folder that already holds them.")
    var overwrite = false
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    /// The files `--out` gets.
    static var analysisFiles: [String] { ["predictions.csv", "confusions.csv", "metrics.json"] }

    func validate() throws {
        if overwrite, out == nil { throw ValidationError("--overwrite replaces the files of --out: give --out") }
    }

    func run() throws {
        common.apply()
        if let out, FileManager.default.fileExists(atPath: out), !DatasetFolders.isDirectory(URL(fileURLWithPath: out)) {
            throw EngineError.invalidFile(out, "exists and is not a folder (given as --out)")
        }
        if let out {
            let folder = URL(fileURLWithPath: out, isDirectory: true)
            if FileManager.default.fileExists(atPath: folder.appendingPathComponent("run.json").path) {
                throw EngineError.invalidFile(out, "is a run's folder, whose metrics.json --out would replace; give the error analysis a folder of its own")
            }
            let held = Self.analysisFiles.filter { FileManager.default.fileExists(atPath: folder.appendingPathComponent($0).path) }
            if !held.isEmpty, !overwrite {
                throw EngineError.invalidFile(out, "already holds \(held.joined(separator: ", ")); give another --out, or add --overwrite to replace \(held.count == 1 ? "it" : "them")")
            }
            try checkNotInput(out, option: "--out", inputs: [data])
        }
        let saved = try SavedRun(model, app: D.appName)
        let m = try saved.model(strategy)
        let w = try makeWorkflows(D.self, try saved.options(domainOptions, model: m), common)
        let url = try requirePath(data, "--data")
        func check(_ classNames: [String]) throws {
            guard classNames.count <= m.classNames.count else {
                throw EngineError.invalidFile(data, "has \(classNames.count) classes, the model knows \(m.classNames.count) (\(m.classNames.joined(separator: ", ")))")
            }
        }
        let logP: Tensor, labels: [Int], inputs: [String]
        if FeatureShards.isFeatureFolder(url) {
            // A features folder (made by `features`) stands for the dataset: a head model scores it without the backbone.
            let stored = try StoredFeatureSet(w, path: data)
            try check(stored.set.classNames)
            labels = try stored.set.relabelled(to: m.classNames).labels
            logP = try w.probabilities(m, features: stored.features, name: datasetName(data), log: true)
            inputs = stored.names
        } else {
            let set = try w.domain.labelled(at: url)
            try check(set.classNames)
            let test = try set.relabelled(to: m.classNames)
            logP = try w.probabilities(m, samples: test.samples, name: datasetName(data), log: true)
            (labels, inputs) = (test.labels, test.samples.map(w.domain.describe))
        }
        let report = ClassificationReport(predictions: logP.argmaxRows(), labels: labels, classNames: m.classNames)
        var result = StrategyResult(strategy: .savedModel, level: nil, eval: datasetName(data), labelsPerClass: nil,
                                    report: report, trainSeconds: 0, history: [])
        result.modelName = strategy ?? saved.record.defaultModel
        let analysis = ErrorAnalysis(logProbabilities: logP, labels: labels, classNames: m.classNames, inputs: inputs)
        if let out {
            let folder = URL(fileURLWithPath: out, isDirectory: true)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            var metrics = Output.object(app: D.appName, command: "evaluate", results: [result])
            metrics["report"] = Output.jsonObject(report)
            // All three or none (a full disk left a predictions.csv alone, which then needed --overwrite).
            try AtomicFile.write(zip(Self.analysisFiles, [analysis.predictionsCSV, analysis.confusionsCSV, Output.encode(metrics)])
                .map { (Data($1.utf8), folder.appendingPathComponent($0)) })
        }
        if common.json {
            print(Output.json(app: D.appName, command: "evaluate", results: [result]))
        } else {
            print(report.table)
            let pairs = analysis.confusedPairs.prefix(5)
            if !pairs.isEmpty {
                print("most confused (true -> predicted): " + pairs.map { "\($0.true.printable) -> \($0.predicted.printable) \($0.count)" }.joined(separator: ", "))
            }
            for note in missingClassNotes([result]) { print(note.printable) }
            if let out { print("error analysis saved to \(out)/predictions.csv, confusions.csv and metrics.json".printable) }
        }
    }
}

/// `predict`: top-k labels with probabilities for files.
struct PredictCommand<D: CommandLineDomain>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(commandName: "predict", abstract: "Print the top-k labels with probabilities for files.")
    }

    @Option(help: "Run directory made by extract, finetune, adapt or demo.")
    var model: String
    @Option(help: "Which of the run's models (default: the run's default model, chosen without test labels). Names are listed in run.json.")
    var strategy: String?
    @Option(help: "How many labels to show per input.")
    var top = 3
    @Option(help: "Below this probability the answer is 'unsure' instead of the most likely label (0 to 1).")
    var threshold: Double?
    @Option(help: "Also write the predictions to this CSV file (input, label, probability, then the top labels and their probabilities).")
    var csv: String?
    @Argument(help: "Files to classify (folders: every file in them).")
    var files: [String]
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    func validate() throws {
        if files.isEmpty { throw ValidationError("give at least one file to classify") }
        if top < 1 { throw ValidationError("--top must be at least 1") }
        if let threshold, !(0...1).contains(threshold) { throw ValidationError("--threshold must be between 0 and 1, got \(threshold)") }
    }

    func run() throws {
        common.apply()
        if let csv { try checkOutputFile(csv, option: "--csv", inputs: files) }
        let saved = try SavedRun(model, app: D.appName)
        let m = try saved.model(strategy)
        let w = try makeWorkflows(D.self, try saved.options(domainOptions, model: m), common)
        let domain = w.domain
        var samples: [D.Sample] = []
        for f in files { samples += try domain.predictionSamples(try requirePath(f, "FILE")) }
        // An unreadable input does not cost the others their predictions: when the batch fails, every input is read
        // on its own, the readable ones are predicted, and each unreadable one is named on a line of its own (exit
        // status 1). Nothing is read twice when every input is readable.
        var unreadable: [(input: String, problem: String)] = []
        let p: Tensor
        do {
            p = try w.probabilities(m, samples: samples, name: "inputs")
        } catch let error where samples.count > 1 {
            let bad = domain.unreadable(samples, scratch: m.kind == .scratch)
            guard !bad.isEmpty, bad.count < samples.count else { throw error }
            unreadable = bad.map { (domain.describe(samples[$0.index]), $0.problem) }
            let skipped = Set(bad.map(\.index))
            samples = samples.indices.filter { !skipped.contains($0) }.map { samples[$0] }
            p = try w.probabilities(m, samples: samples, name: "inputs")
        }
        let k = m.classNames.count
        var rows: [[String: Any]] = []
        var table = [["input", "label", "probability"] + (1...min(top, k)).flatMap { ["top\($0)", "top\($0)_probability"] }]
        for (i, s) in samples.enumerated() {
            let ranked = (0..<k).sorted { p[flat: i * k + $0] > p[flat: i * k + $1] }.prefix(top)
            let top = ranked.map { (m.classNames[$0], Double(p[flat: i * k + $0])) }
            let label = top[0].1 < (threshold ?? 0) ? "unsure" : top[0].0
            table.append([domain.describe(s), label, String(format: "%.6f", top[0].1)] + top.flatMap { [$0.0, String(format: "%.6f", $0.1)] })
            if common.json {
                rows.append(["input": domain.describe(s), "label": label, "top": top.map { ["label": $0.0, "probability": $0.1] }])
            } else {
                // Inputs and labels come from the user's data: control characters (tabs too) are shown escaped.
                print("\(domain.describe(s).printable)\t" + (threshold == nil ? "" : "\(label.printable)\t")
                      + top.map { "\($0.0.printable) " + String(format: "%.3f", $0.1) }.joined(separator: "\t"))
            }
        }
        if let csv { try AtomicFile.write(Data(Output.csv(table).utf8), to: URL(fileURLWithPath: csv)) }
        if common.json {
            print(Output.encode(["app": D.appName, "command": "predict", "predictions": rows,
                                 "unreadable": unreadable.map { ["input": $0.input, "problem": $0.problem] }]))
        }
        guard unreadable.isEmpty else {
            for u in unreadable { FileHandle.standardError.write(Data("Error: \(u.problem.printable) (no prediction)\n".utf8)) }
            FileHandle.standardError.write(Data("\(unreadable.count) of \(unreadable.count + samples.count) inputs could not be read; the others are predicted\n".utf8))
            throw ExitCode.failure
        }
    }
}

/// What `evaluate --out` writes: each input with its true and predicted label, the probability of the prediction,
/// the loss (-log of the true label's probability) and the top 3; and the confused pairs, most frequent first.
struct ErrorAnalysis {
    /// Log-probabilities [N, K] (losses stay exact where a probability rounds to 0).
    let logProbabilities: Tensor
    let labels: [Int]
    let classNames: [String]
    let inputs: [String]

    var predictionsCSV: String {
        let k = classNames.count, shown = min(3, k)
        var rows = [["input", "true", "predicted", "probability", "loss"] + (1...shown).flatMap { ["top\($0)", "top\($0)_probability"] }]
        for (i, y) in labels.enumerated() {
            func p(_ c: Int) -> Double { Foundation.exp(Double(logProbabilities[flat: i * k + c])) }
            let ranked = (0..<k).sorted { logProbabilities[flat: i * k + $0] > logProbabilities[flat: i * k + $1] }
            rows.append([inputs[i], classNames[y], classNames[ranked[0]], String(format: "%.6f", p(ranked[0])),
                         String(format: "%.6f", sampleLoss(logProbabilities[flat: i * k + y]))]
                        + ranked.prefix(shown).flatMap { [classNames[$0], String(format: "%.6f", p($0))] })
        }
        return Output.csv(rows)
    }

    /// Off-diagonal cells of the confusion matrix with a count, most frequent first (ties by class order).
    var confusedPairs: [(true: String, predicted: String, count: Int, shareOfTrue: Double)] {
        let report = ClassificationReport(predictions: logProbabilities.argmaxRows(), labels: labels, classNames: classNames)
        var pairs: [(true: String, predicted: String, count: Int, shareOfTrue: Double)] = []
        for (t, row) in report.confusion.enumerated() {
            let total = row.reduce(0, +)
            for (p, n) in row.enumerated() where p != t && n > 0 {
                pairs.append((classNames[t], classNames[p], n, Double(n) / Double(total)))
            }
        }
        return pairs.enumerated().sorted { $0.element.count != $1.element.count ? $0.element.count > $1.element.count : $0.offset < $1.offset }
            .map(\.element)
    }

    var confusionsCSV: String {
        Output.csv([["true", "predicted", "count", "share_of_true"]]
                   + confusedPairs.map { [$0.true, $0.predicted, String($0.count), String(format: "%.4f", $0.shareOfTrue)] })
    }
}
