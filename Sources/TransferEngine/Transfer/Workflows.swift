import Foundation

/// The outcome of one strategy on one evaluation set (one row of a results table / the JSON `results`).
public struct StrategyResult: Codable {
    /// scratch | extract | finetune | source-only | dann | coral | adabn | pseudo | oracle
    public var strategy: String
    /// "features" or "end-to-end" for adaptation methods; nil otherwise.
    public var level: String?
    /// Name of the evaluation set.
    public var eval: String
    /// What `report` was measured on: the test set given, the validation split held out from the training data
    /// (no test set given), or nothing (no labels to measure with).
    public var evaluatedOn: Evaluation = .test
    /// Scores of the model on the unlabelled target that need no target labels (adaptation rows).
    public var labelFree: LabelFreeScores?
    /// For the "auto" row: the identifier of the model the label-free rule chose.
    public var chosen: String?
    /// With `--unfreeze auto`: the depths tried and the one chosen.
    public var depthSearch: DepthSearch?
    /// Labelled training examples per class, nil when all were used.
    public var labelsPerClass: Int?
    /// nil when there was no labelled set to evaluate on.
    public var report: ClassificationReport?
    public var trainSeconds: Double
    public var history: [EpochLog]
    /// The trained model, to save in a run directory (not encoded with the result).
    public var model: SavedModel?
    /// Source and target representations after adaptation (for the PCA plot; not encoded).
    public var alignment: (source: Tensor, target: Tensor)?

    public var accuracy: Double? { report?.accuracy }
    public var macroF1: Double? { report?.macroF1 }

    enum CodingKeys: String, CodingKey {
        case strategy, level, eval, evaluatedOn, labelFree, chosen, depthSearch, labelsPerClass, report, trainSeconds, history
    }

    /// Where a result's accuracy comes from.
    public enum Evaluation: String, Codable, Sendable {
        case test, validation
        case notMeasured = "none"
    }

    public init(strategy: String, level: String?, eval: String, evaluatedOn: Evaluation = .test, labelsPerClass: Int?,
                report: ClassificationReport?, trainSeconds: Double, history: [EpochLog], model: SavedModel? = nil) {
        self.strategy = strategy
        self.level = level
        self.eval = eval
        self.evaluatedOn = report == nil ? .notMeasured : evaluatedOn
        self.labelsPerClass = labelsPerClass
        self.report = report
        self.trainSeconds = trainSeconds
        self.history = history
        self.model = model
    }

    /// A short identifier: strategy, level and labels per class ("finetune-10", "dann-end-to-end").
    public var identifier: String {
        [strategy, level, labelsPerClass.map { "\($0)" }].compactMap { $0 }.joined(separator: "-")
    }
}

/// A trained model as saved in a run: tensors under "head.", "backbone." (what differs from the pretrained
/// weights) or "net." (from-scratch network), and what is needed to rebuild it.
public struct SavedModel {
    public enum Kind: String, Codable, Sendable { case head, finetuned, scratch }
    public var kind: Kind
    public var headKind: ClassifierHead.Kind
    public var headInputs: Int
    public var headHidden: Int
    public var classNames: [String]
    public var tensors: [String: Tensor]
    /// What the model needs from its inputs (nil: saved before contracts were recorded, or not saved yet).
    public var contract: RunContract?

    public init(kind: Kind, head: ClassifierHead, classNames: [String], backbone: [String: Tensor] = [:],
                net: [String: Tensor] = [:]) {
        self.kind = kind
        headKind = head.kind
        headInputs = head.inputs
        headHidden = head.hidden
        self.classNames = classNames
        var t: [String: Tensor] = [:]
        for (k, v) in head.stateDict() { t["head." + k] = v }
        for (k, v) in backbone { t["backbone." + k] = v }
        for (k, v) in net { t["net." + k] = v }
        tensors = t
    }

    public var metadata: [String: String] {
        var m = ["kind": kind.rawValue, "head_kind": headKind.rawValue, "head_inputs": String(headInputs),
                 "head_hidden": String(headHidden),
                 "class_names": String(decoding: (try? JSONEncoder().encode(classNames)) ?? Data("[]".utf8), as: UTF8.self)]
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys   // the same model, the same bytes
        if let contract, let data = try? encoder.encode(contract) { m["contract"] = String(decoding: data, as: UTF8.self) }
        return m
    }

    public init(tensors: [String: Tensor], metadata: [String: String], source: String) throws {
        guard let kind = metadata["kind"].flatMap(Kind.init(rawValue:)),
              let headKind = metadata["head_kind"].flatMap(ClassifierHead.Kind.init(rawValue:)),
              let inputs = metadata["head_inputs"].flatMap(Int.init), let hidden = metadata["head_hidden"].flatMap(Int.init),
              let namesData = metadata["class_names"]?.data(using: .utf8),
              let names = try? JSONDecoder().decode([String].self, from: namesData) else {
            throw EngineError.invalidFile(source, "not a model saved by this suite (metadata missing or damaged)")
        }
        self.kind = kind
        self.headKind = headKind
        headInputs = inputs
        headHidden = hidden
        classNames = names
        self.tensors = tensors
        if let text = metadata["contract"] {
            guard let c = try? JSONDecoder().decode(RunContract.self, from: Data(text.utf8)) else {
                throw EngineError.invalidFile(source, "the model's contract metadata is damaged")
            }
            contract = c
        }
        guard names.count >= 2, inputs >= 1, hidden >= 1, inputs <= 1 << 20, hidden <= 1 << 20 else {
            throw EngineError.invalidFile(source, "not a model saved by this suite (metadata out of range)")
        }
        // The head is built from these numbers before its weights are loaded: they must describe the tensors the
        // file holds, so that metadata cannot make it allocate more than the file contains.
        let classes = names.count
        let expected = 2 * inputs   // standardisation: feature_mean, feature_scale
            + (headKind == .linear ? inputs * classes + classes : inputs * hidden + hidden + hidden * classes + classes)
        let stored = tensors.filter { $0.key.hasPrefix("head.") }.reduce(0) { $0 + $1.value.count }
        guard stored == expected else {
            throw EngineError.invalidFile(source, "the model's metadata (a \(headKind.rawValue) head, \(inputs) features in, \(classes) classes) does not match its head weights (\(stored) numbers, expected \(expected))")
        }
    }

    /// Tensors under `prefix` with the prefix removed.
    public func part(_ prefix: String) -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: tensors.filter { $0.key.hasPrefix(prefix) }.map { (String($0.key.dropFirst(prefix.count)), $0.value) })
    }

    /// The head, rebuilt and loaded.
    public func makeHead() throws -> ClassifierHead {
        var rng = RNG(seed: 0)
        let head = ClassifierHead(kind: headKind, inputs: headInputs, classes: classNames.count, hidden: headHidden, rng: &rng)
        try head.load(part("head."), source: "saved head")
        return head
    }
}

/// Options of the transfer workflows. Defaults are documented in the README and in `--help`.
public struct WorkflowOptions {
    public var seed: UInt64 = 42
    /// Batch size for running the backbone without gradients (feature extraction, evaluation).
    public var inferenceBatchSize = 64
    public var head: ClassifierHead.Kind = .linear
    /// Training of heads on cached features (extraction, linear probe, feature-level adaptation).
    public var headTraining: TrainOptions = {
        var o = TrainOptions()
        o.epochs = 60; o.batchSize = 32; o.learningRate = 1e-2; o.weightDecay = 1e-4; o.patience = 10
        o.minimumSteps = 300
        return o
    }()
    /// Fine-tuning (and end-to-end adaptation, and the from-scratch baseline).
    public var fineTuning: TrainOptions = {
        var o = TrainOptions()
        o.epochs = 15; o.batchSize = 32; o.learningRate = 1e-3; o.weightDecay = 1e-4; o.patience = 5
        o.minimumSteps = 150
        return o
    }()
    /// Top blocks to unfreeze when fine-tuning (Int.max: all).
    public var unfreeze = 2
    /// When set, `unfreeze` is chosen among these depths by accuracy on the validation split of the labelled
    /// training data (`--unfreeze auto`; see `DepthSearch`).
    public var unfreezeCandidates: [Int]?
    /// Backbone learning rate = head learning rate x this (discriminative learning rates).
    public var backboneLRMultiplier: Float = 0.1
    /// Unfreeze one more block per epoch (top first) until `unfreeze` are trainable.
    public var gradualUnfreezing = false
    /// Apply the domain's augmentation while fine-tuning. When off, the frozen part runs once and is cached.
    public var augment = false
    /// Per-class loss weights (nil: none).
    public var classWeights: [Float]?
    public var cache: FeatureCache?

    public init() {}
}

/// A module holding the parts of a model (for checkpoints and restore-best).
final class ModelParts: Module {
    init(_ parts: [(String, Module)]) {
        super.init()
        for (n, m) in parts { child(n, m) }
    }
}

/// The three techniques (feature extraction, fine-tuning, domain adaptation) plus the from-scratch baseline,
/// generic over a domain. Nothing here knows about images, audio or text.
public final class TransferWorkflows<D: TransferDomain> {
    public let domain: D
    public var options: WorkflowOptions
    public var checkpointer: TrainingCheckpointer?
    private var pretrained: (any Backbone<D.Input>)?
    private var pristineBackbone: [String: Tensor]?
    /// Hash of the pretrained weights (every workflow starts from them; computed once).
    public private(set) var backboneHash = ""

    public init(domain: D, options: WorkflowOptions) {
        self.domain = domain
        self.options = options
    }

    /// The pretrained backbone (loaded once; every workflow starts from its pristine weights).
    public func backbone() throws -> any Backbone<D.Input> {
        if let b = pretrained {
            if let pristine = pristineBackbone { try b.load(pristine, source: "pretrained weights") }
            b.freeze()
            for (_, bn) in b.batchNormLayers() { bn.frozenStatistics = false }
            b.train(false)
            return b
        }
        let b = try domain.pretrainedBackbone()
        b.freeze()
        b.train(false)
        pretrained = b
        pristineBackbone = b.stateDict()
        backboneHash = b.weightsHash()
        return b
    }

    // MARK: Features

    /// Pooled features [N, F] through the frozen pretrained backbone, cached on disk.
    public func features(_ samples: [D.Sample], name: String) throws -> Tensor {
        let bb = try backbone()
        let key = FeatureCache.key(["features", D.name, backboneHash, domain.preprocessingKey]
                                   + samples.map(domain.cacheKey))
        if let cached = options.cache?.load(key)?["features"], cached.shape == [samples.count, bb.featureCount] {
            return cached
        }
        let f = try pooled(samples, name: "features of \(name)", width: bb.featureCount) { bb.features($0) }
        if let bad = f.withUnsafeBufferPointer({ $0.firstIndex { !$0.isFinite } }) {
            throw EngineError.invalidFile(domain.describe(samples[bad / bb.featureCount]), "its features are not finite numbers (NaN or infinity); not cached")
        }
        if !samples.isEmpty { try options.cache?.store(key, ["features": f]) }
        return f
    }

    /// Pooled outputs [N, width] of `forward` over batches of samples, without gradients ([0, width] for none).
    func pooled(_ samples: [D.Sample], name: String, width: Int, scratch: Bool = false,
                _ forward: (D.Input) -> Variable) throws -> Tensor {
        let parts = try runBackbone(samples, name: name, scratch: scratch) { [forward($0).value] }
        return Tensor.concatenateRows(parts, rowShape: [width])
    }

    /// Per-sample activations below block `end` of the pretrained backbone, plus rows per sample.
    func activations(_ samples: [D.Sample], through end: Int, name: String,
                     backbone bb: any Backbone<D.Input>) throws -> (parts: [Activation.Part], rowsPerSample: Int) {
        var rows = 1
        let parts = try runBackbone(samples, name: "frozen blocks on \(name)") { input in
            let a = bb.forward(input, through: end)
            rows = a.rowsPerSample
            return a.split()
        }
        return (parts, rows)
    }

    /// Runs `body` over batches of samples without gradients, with progress, collecting its outputs.
    func runBackbone<T>(_ samples: [D.Sample], name: String, scratch: Bool = false,
                        _ body: (D.Input) throws -> [T]) throws -> [T] {
        var out: [T] = []
        if samples.isEmpty { return out }
        out.reserveCapacity(samples.count)
        let progress = ProgressReporter(label: name, total: samples.count, unit: "samples")
        var rng = RNG(seed: options.seed)
        try Autograd.noGrad {
            for start in stride(from: 0, to: samples.count, by: options.inferenceBatchSize) {
                let chunk = Array(samples[start..<min(samples.count, start + options.inferenceBatchSize)])
                out += try body(try domain.batch(chunk, augment: false, scratch: scratch, rng: &rng))
                progress.advance(by: chunk.count)
            }
        }
        progress.finish()
        return out
    }

    // MARK: Heads on features

    /// Trains a head on features with a Create ML validation split and early stopping. Returns the head, its
    /// history and the validation rows it held out. `extra` adds a loss on each batch's representation
    /// (feature-level adaptation); its modules train too. `initial`: start from that head's weights (standardisation
    /// included) instead of a new one; `frozen`: parameter prefixes of the head that stay fixed.
    func trainHead(features: Tensor, labels: [Int], classes: Int, kind: ClassifierHead.Kind,
                   name: String, rng: inout RNG, initial: ClassifierHead? = nil, frozen: [String] = [],
                   checkpoint: Bool = true, extra: ((ClassifierHead) -> ExtraLoss)? = nil) throws
        -> (head: ClassifierHead, history: [EpochLog], validation: [Int]) {
        let split = Splits.trainValidation(labels: labels, classCount: classes,
                                           fraction: Splits.validationFraction(forCount: labels.count), rng: &rng)
        let head = ClassifierHead(kind: kind, inputs: features.shape[1], classes: classes, rng: &rng)
        head.standardise(from: features.gatherRows(split.train))
        if let initial { try head.load(initial.stateDict(), source: "initial head") }
        if !frozen.isEmpty { head.freeze(frozen) }
        var opts = options.headTraining
        // Alignment losses trade source loss for domain invariance, so the source validation loss is a poor
        // stopping rule for them (as the adaptation literature finds): they train for the full schedule and keep
        // the last weights (the best source-validation epoch is usually an early one, before the gradient
        // reversal has ramped up: restoring it undid DANN on MNIST -> optdigits, 0.41-0.68 over seeds).
        if split.validation.isEmpty || extra != nil { opts.patience = nil }
        if extra != nil { opts.restoresBestWeights = false }
        opts.epochs = opts.epochs(forCount: split.train.count)
        let extraLoss = extra?(head)
        let parts = ModelParts([("head", head)] + (extraLoss?.modules ?? []))
        let trainer = Trainer(name: name, module: parts, groups: [ParameterGroup(module: parts)], options: opts,
                              checkpointer: checkpoint ? checkpointer : nil)
        let xTrain = features.gatherRows(split.train), yTrain = split.train.map { labels[$0] }
        let xVal = features.gatherRows(split.validation), yVal = split.validation.map { labels[$0] }
        let weights = options.classWeights
        try trainer.fit(count: split.train.count, rng: &rng, step: { idx, rng in
            let h = head.representation(Variable(xTrain.gatherRows(idx)), training: true, rng: &rng)
            let logits = head.classify(h)
            let y = idx.map { yTrain[$0] }
            var loss = Variable.crossEntropy(logits: logits, labels: y, labelSmoothing: opts.labelSmoothing,
                                             classWeights: weights)
            let term = try extraLoss.map { try $0.loss(h, logits, trainer.position, &rng) }
            if let term { loss = loss + term }
            return BatchResult(loss: loss, logits: logits.value, labels: y, adaptationLoss: term.map { Double($0.value.scalar) })
        }, validate: split.validation.isEmpty ? nil : {
            var r = RNG(seed: 0)  // evaluation draws nothing
            let logits = head(Variable(xVal), training: false, rng: &r)
            let loss = Variable.crossEntropy(logits: logits, labels: yVal, classWeights: weights).value.scalar
            let acc = zip(logits.value.argmaxRows(), yVal).filter { $0 == $1 }.count
            return (Double(loss), Double(acc) / Double(yVal.count))
        })
        return (head, trainer.history, split.validation)
    }

    /// Class probabilities [N, K] of a head on features (their logarithms with `log`, exact where a probability
    /// would round to 0).
    public func probabilities(_ head: ClassifierHead, _ features: Tensor, log: Bool = false) -> Tensor {
        var rng = RNG(seed: 0)
        return Autograd.noGrad {
            let logits = head(Variable(features), training: false, rng: &rng)
            return (log ? logits.logSoftmax(axis: -1) : logits.softmax(axis: -1)).value
        }
    }

    func evaluate(_ head: ClassifierHead, _ features: Tensor, _ set: LabelledSet<D.Sample>) -> ClassificationReport {
        ClassificationReport(predictions: probabilities(head, features).argmaxRows(), labels: set.labels,
                             classNames: set.classNames)
    }

    /// The training set, subsampled to `labelsPerClass` per class when given (stratified, seeded).
    public func trainingSet(_ train: LabelledSet<D.Sample>, labelsPerClass: Int?) -> LabelledSet<D.Sample> {
        guard let k = labelsPerClass else { return train }
        return train.subset(trainingRows(labels: train.labels, classCount: train.classNames.count, labelsPerClass: k))
    }

    /// The rows `trainingSet` keeps: `labelsPerClass` per class (stratified, seeded), or all.
    public func trainingRows(labels: [Int], classCount: Int, labelsPerClass: Int?) -> [Int] {
        guard let k = labelsPerClass else { return Array(labels.indices) }
        var rng = RNG(seed: options.seed ^ 0x5AB5)
        return Splits.subsample(labels: labels, classCount: classCount, perClass: k, rng: &rng)
    }

    // MARK: Feature extraction

    /// Frozen backbone, cached features, new head. Without a test set, the validation split held out from the
    /// training data reports (it also chose the epoch, so it flatters a little; the result says which it was).
    public func extract(train: LabelledSet<D.Sample>, test: LabelledSet<D.Sample>?, labelsPerClass: Int? = nil,
                        evalName: String) throws -> (result: StrategyResult, head: ClassifierHead) {
        let set = trainingSet(train, labelsPerClass: labelsPerClass)
        let fTrain = try features(set.samples, name: "train")
        let fTest = try test.map { try features($0.samples, name: evalName) }
        return try extract(features: fTrain, labels: set.labels, classNames: set.classNames,
                           test: test.map { (fTest!, $0.labels) }, labelsPerClass: labelsPerClass, evalName: evalName)
    }

    /// Feature extraction on features already computed (e.g. read from a features folder): `labels` index
    /// `classNames`, `features` rows are the training samples (already reduced to `labelsPerClass`, which is
    /// recorded), `test` labels index `classNames` too. The same numbers as computing the features here.
    public func extract(features fTrain: Tensor, labels: [Int], classNames: [String], test: (features: Tensor, labels: [Int])?,
                        labelsPerClass: Int?, evalName: String) throws -> (result: StrategyResult, head: ClassifierHead) {
        var rng = RNG(seed: options.seed)
        let start = Date()
        let (head, history, validation) = try trainHead(features: fTrain, labels: labels, classes: classNames.count,
                                                        kind: options.head, name: "extract-\(labelsPerClass ?? 0)", rng: &rng)
        let seconds = Date().timeIntervalSince(start)
        func score(_ f: Tensor, _ y: [Int]) -> ClassificationReport {
            ClassificationReport(predictions: probabilities(head, f).argmaxRows(), labels: y, classNames: classNames)
        }
        let report = test.map { score($0.features, $0.labels) }
            ?? (validation.isEmpty ? nil : score(fTrain.gatherRows(validation), validation.map { labels[$0] }))
        return (StrategyResult(strategy: "extract", level: nil, eval: test == nil ? "validation" : evalName,
                               evaluatedOn: test == nil ? .validation : .test, labelsPerClass: labelsPerClass,
                               report: report, trainSeconds: seconds, history: history,
                               model: SavedModel(kind: .head, head: head, classNames: classNames)), head)
    }

    /// The identity features of this domain's pretrained backbone carry (loads the weights; runs nothing).
    public func featureIdentity() throws -> FeatureShards.Identity {
        _ = try backbone()
        return FeatureShards.Identity(domain: D.name, backbone: backboneHash, preprocessingKey: domain.preprocessingKey)
    }

    /// Computes shard `k` of `n` of `set`'s (or unlabelled `samples`') backbone features into `dir`, one file per
    /// chunk of batches (memory stays that of one chunk). False: the shard was already done (nothing written).
    public func writeFeatureShard(to dir: URL, shard k: Int, of n: Int, samples: [D.Sample], labels: [Int]?,
                                  classNames: [String]?, name: String, chunkBatches: Int = 16) throws -> Bool {
        let identity = try featureIdentity()
        let bb = try backbone()
        let ids = samples.map(domain.cacheKey)
        return try FeatureShards.write(to: dir, shard: k, of: n, ids: ids, names: samples.map(domain.describe),
                                       labels: labels, classNames: classNames,
                                       identity: identity, width: bb.featureCount,
                                       chunkRows: options.inferenceBatchSize * chunkBatches) { rows in
            let part = rows.map { samples[$0] }
            let f = try pooled(part, name: "features of \(name), shard \(k)/\(n)", width: bb.featureCount) { bb.features($0) }
            if let bad = f.withUnsafeBufferPointer({ $0.firstIndex { !$0.isFinite } }) {
                throw EngineError.invalidFile(domain.describe(part[bad / bb.featureCount]), "its features are not finite numbers (NaN or infinity)")
            }
            return f
        }
    }

    /// The report on the validation rows of `set` (nil when training held none out: under 50 samples).
    func validationReport(_ set: LabelledSet<D.Sample>, _ validation: [Int],
                          _ score: (LabelledSet<D.Sample>) throws -> ClassificationReport) rethrows -> ClassificationReport? {
        validation.isEmpty ? nil : try score(set.subset(validation))
    }

    // MARK: Fine-tuning

    /// A fine-tuned model: the backbone (top blocks trained) and its head, with where the trained part starts.
    public struct FineTuned {
        public var backbone: any Backbone<D.Input>
        public var head: ClassifierHead
        public var firstTrainableBlock: Int

        /// Head plus the trained blocks' parameters and statistics (what differs from the pretrained file).
        public func saved(classNames: [String]) -> SavedModel {
            let prefixes = backbone.blocks[firstTrainableBlock...].flatMap { $0 }
            let trained = backbone.stateDict().filter { kv in prefixes.contains { Module.matches(kv.key, $0) } }
            return SavedModel(kind: .finetuned, head: head, classNames: classNames, backbone: trained)
        }
    }

    /// Linear probe, then the top `options.unfreeze` blocks trained with discriminative learning rates.
    public func finetune(train: LabelledSet<D.Sample>, test: LabelledSet<D.Sample>?, labelsPerClass: Int? = nil,
                         evalName: String) throws -> (result: StrategyResult, model: FineTuned) {
        let set = trainingSet(train, labelsPerClass: labelsPerClass)
        let classes = set.classNames.count
        var rng = RNG(seed: options.seed)
        let start = Date()
        // 1. Linear probe on cached features (the extraction head).
        let fTrain = try features(set.samples, name: "train")
        let (head, probeHistory, _) = try trainHead(features: fTrain, labels: set.labels, classes: classes, kind: options.head,
                                                    name: "finetune-probe-\(labelsPerClass ?? 0)", rng: &rng)
        // 2. Unfreeze the top blocks and train them with the head.
        let name = "finetune-\(labelsPerClass ?? 0)"
        let search = try options.unfreezeCandidates.map {
            try searchDepth($0, samples: set.samples, labels: set.labels, classes: classes, headKind: options.head,
                            name: name, reportingOn: test)
        }
        let saved = options.unfreeze
        defer { options.unfreeze = saved }
        if let search { options.unfreeze = search.chosen }
        let tuned = try trainTop(head: head, samples: set.samples, labels: set.labels, classes: classes, name: name, rng: &rng)
        let seconds = Date().timeIntervalSince(start)
        let report = try test.map { try evaluate(tuned.model, $0, name: evalName) }
            ?? validationReport(set, tuned.validation) { try evaluate(tuned.model, $0, name: "validation") }
        var result = StrategyResult(strategy: "finetune", level: nil, eval: test == nil ? "validation" : evalName,
                                    evaluatedOn: test == nil ? .validation : .test, labelsPerClass: labelsPerClass,
                                    report: report, trainSeconds: seconds, history: probeHistory + tuned.history,
                                    model: tuned.model.saved(classNames: set.classNames))
        result.depthSearch = search
        return (result, tuned.model)
    }

    /// Trains the top blocks of the pretrained backbone together with `head` on labelled samples, plus an
    /// optional extra loss on the batch's features (for end-to-end adaptation).
    func trainTop(head: ClassifierHead, samples: [D.Sample], labels: [Int], classes: Int, name: String,
                  rng: inout RNG, extra: ExtraLoss? = nil) throws -> (model: FineTuned, history: [EpochLog], validation: [Int]) {
        let bb = try backbone()
        let k = min(options.unfreeze, bb.blocks.count)
        let first = bb.blocks.count - k
        bb.setTrainableTop(options.gradualUnfreezing ? 1 : k)
        let split = Splits.trainValidation(labels: labels, classCount: classes,
                                           fraction: Splits.validationFraction(forCount: labels.count), rng: &rng)
        // The frozen part is deterministic without augmentation: run it once and train over its cache.
        let cached = options.augment ? nil : try activations(samples, through: first, name: "train", backbone: bb)
        var opts = options.fineTuning
        if split.validation.isEmpty || extra != nil { opts.patience = nil }
        if extra != nil { opts.restoresBestWeights = false }  // as in trainHead
        opts.epochs = opts.epochs(forCount: split.train.count)
        let parts = ModelParts([("backbone", bb), ("head", head)] + (extra?.modules ?? []))
        var groups = [ParameterGroup(module: head, namePrefix: "head."),
                      ParameterGroup(module: bb, prefixes: bb.topBlockPrefixes(k), namePrefix: "backbone.",
                                     lrMultiplier: options.backboneLRMultiplier)]
        for (n, m) in extra?.modules ?? [] { groups.append(ParameterGroup(module: m, namePrefix: n + ".")) }
        let trainer = Trainer(name: name, module: parts, groups: groups, options: opts, checkpointer: checkpointer)
        if options.gradualUnfreezing {
            trainer.onEpoch = { log in bb.setTrainableTop(min(k, log.epoch + 1)) }
        }
        let weights = options.classWeights
        func batchFeatures(_ indices: [Int], training: Bool, rng: inout RNG) throws -> Variable {
            if let cached {
                let act = Activation.join(indices.map { cached.parts[$0] }, sequences: bb.activationsAreSequences,
                                          rowsPerSample: cached.rowsPerSample)
                return bb.forward(act, from: first)
            }
            let input = try domain.batch(indices.map { samples[$0] }, augment: training, scratch: false, rng: &rng)
            return bb.forward(bb.forward(input, through: first), from: first)
        }
        try trainer.fit(count: split.train.count, rng: &rng, step: { idx, rng in
            let chosen = idx.map { split.train[$0] }
            let f = try batchFeatures(chosen, training: true, rng: &rng)
            let h = head.representation(f, training: true, rng: &rng)
            let logits = head.classify(h)
            let y = chosen.map { labels[$0] }
            var loss = Variable.crossEntropy(logits: logits, labels: y, labelSmoothing: opts.labelSmoothing, classWeights: weights)
            let term = try extra.map { try $0.loss(h, logits, trainer.position, &rng) }
            if let term { loss = loss + term }
            return BatchResult(loss: loss, logits: logits.value, labels: y, adaptationLoss: term.map { Double($0.value.scalar) })
        }, validate: split.validation.isEmpty ? nil : {
            var r = RNG(seed: 0)
            let y = split.validation.map { labels[$0] }
            let f = try batchFeatures(split.validation, training: false, rng: &r)
            let logits = head(f, training: false, rng: &r)
            let loss = Variable.crossEntropy(logits: logits, labels: y, classWeights: weights).value.scalar
            return (Double(loss), Double(zip(logits.value.argmaxRows(), y).filter { $0 == $1 }.count) / Double(y.count))
        })
        bb.freeze()
        return (FineTuned(backbone: bb, head: head, firstTrainableBlock: first), trainer.history, split.validation)
    }

    /// An extra training loss computed from a batch's head representation and logits (adaptation methods).
    struct ExtraLoss {
        var modules: [(String, Module)]
        /// (representation, logits, where training is, rng) -> loss
        var loss: (Variable, Variable, TrainingPosition, inout RNG) throws -> Variable
    }

    /// Pooled features [N, F] through a fine-tuned model (frozen part run from the pretrained weights).
    public func features(_ model: FineTuned, _ samples: [D.Sample], name: String) throws -> Tensor {
        let bb = model.backbone
        bb.train(false)
        return try pooled(samples, name: "\(name) through the fine-tuned model", width: bb.featureCount) { input in
            bb.forward(bb.forward(input, through: model.firstTrainableBlock), from: model.firstTrainableBlock)
        }
    }

    public func evaluate(_ model: FineTuned, _ test: LabelledSet<D.Sample>, name: String) throws -> ClassificationReport {
        evaluate(model.head, try features(model, test.samples, name: name), test)
    }

    // MARK: From scratch

    /// A small randomly initialised network of the domain's choosing, trained on the same data.
    public func scratch(train: LabelledSet<D.Sample>, test: LabelledSet<D.Sample>?, labelsPerClass: Int? = nil,
                        evalName: String, augment: Bool = true) throws -> StrategyResult {
        let set = trainingSet(train, labelsPerClass: labelsPerClass)
        let classes = set.classNames.count
        var rng = RNG(seed: options.seed)
        let net = domain.scratchBackbone(rng: &rng)
        net.unfreeze()
        let head = ClassifierHead(kind: .linear, inputs: net.featureCount, classes: classes, rng: &rng)
        let split = Splits.trainValidation(labels: set.labels, classCount: classes,
                                           fraction: Splits.validationFraction(forCount: set.count), rng: &rng)
        var opts = options.fineTuning
        opts.epochs = max(opts.epochs, 30)
        opts.minimumSteps = max(opts.minimumSteps, 300)
        if split.validation.isEmpty { opts.patience = nil }
        opts.epochs = opts.epochs(forCount: split.train.count)
        let parts = ModelParts([("net", net), ("head", head)])
        let trainer = Trainer(name: "scratch-\(labelsPerClass ?? 0)", module: parts,
                              groups: [ParameterGroup(module: parts)], options: opts, checkpointer: checkpointer)
        let start = Date()
        func logits(_ idx: [Int], of s: LabelledSet<D.Sample>, training: Bool, rng: inout RNG) throws -> Variable {
            let input = try domain.batch(idx.map { s.samples[$0] }, augment: training && augment, scratch: true, rng: &rng)
            return head(net.features(input), training: training, rng: &rng)
        }
        let weights = options.classWeights
        try trainer.fit(count: split.train.count, rng: &rng, step: { idx, rng in
            let chosen = idx.map { split.train[$0] }
            let z = try logits(chosen, of: set, training: true, rng: &rng)
            let y = chosen.map { set.labels[$0] }
            return BatchResult(loss: Variable.crossEntropy(logits: z, labels: y, classWeights: weights), logits: z.value, labels: y)
        }, validate: split.validation.isEmpty ? nil : {
            var r = RNG(seed: 0)
            let z = try logits(split.validation, of: set, training: false, rng: &r)
            let y = split.validation.map { set.labels[$0] }
            let loss = Variable.crossEntropy(logits: z, labels: y, classWeights: weights).value.scalar
            return (Double(loss), Double(zip(z.value.argmaxRows(), y).filter { $0 == $1 }.count) / Double(y.count))
        })
        let seconds = Date().timeIntervalSince(start)
        func score(_ s: LabelledSet<D.Sample>) throws -> ClassificationReport {
            var predictions: [Int] = []
            var r = RNG(seed: 0)
            try Autograd.noGrad {
                for b in stride(from: 0, to: s.count, by: options.inferenceBatchSize) {
                    let idx = Array(b..<min(s.count, b + options.inferenceBatchSize))
                    predictions += try logits(idx, of: s, training: false, rng: &r).value.argmaxRows()
                }
            }
            return ClassificationReport(predictions: predictions, labels: s.labels, classNames: s.classNames)
        }
        let report = try test.map(score) ?? validationReport(set, split.validation, score)
        return StrategyResult(strategy: "scratch", level: nil, eval: test == nil ? "validation" : evalName,
                              evaluatedOn: test == nil ? .validation : .test, labelsPerClass: labelsPerClass,
                              report: report, trainSeconds: seconds, history: trainer.history,
                              model: SavedModel(kind: .scratch, head: head, classNames: set.classNames, net: net.stateDict()))
    }

    // MARK: Saved models

    /// Refuses a model whose contract (features it expects, the pretrained weights) the backbone does not meet.
    func checkContract(_ saved: SavedModel, name: String) throws {
        let width = try featureWidth()
        try saved.contract?.check(featureWidth: width, backbone: backboneHash, source: name)
        guard saved.headInputs == width else {
            throw EngineError.invalidFile(name, "the model's head takes \(saved.headInputs) features, the backbone gives \(width)")
        }
    }

    /// Class probabilities [N, K] of a saved head model on stored pretrained features (a features folder, checked
    /// against this backbone when it was read). Fine-tuned and from-scratch models need the samples themselves.
    public func probabilities(_ saved: SavedModel, features: Tensor, name: String, log: Bool = false) throws -> Tensor {
        guard saved.kind == .head else {
            throw EngineError.invalidFile(name, "holds the pretrained backbone's features, but this model (\(saved.kind == .finetuned ? "fine-tuned" : "from scratch")) needs the samples themselves: give the dataset")
        }
        try checkContract(saved, name: name)
        guard features.shape.count == 2, features.shape[1] == saved.headInputs else {
            throw EngineError.invalidFile(name, "holds \(features.shape.last ?? 0) features per sample, the model's head takes \(saved.headInputs)")
        }
        return probabilities(try saved.makeHead(), features, log: log)
    }

    /// The contract of models trained by these workflows with the domain's `settings`.
    public func contract(settings: [String: String]) throws -> RunContract {
        RunContract(domain: D.name, settings: settings, featureWidth: try featureWidth(), backbone: backboneHash)
    }

    /// Width of the pretrained features; loads the backbone the first time, without resetting its weights after
    /// (a check, not a workflow: `backbone()` is for those).
    func featureWidth() throws -> Int { try pretrained?.featureCount ?? backbone().featureCount }

    /// Class probabilities [N, K] of a saved model on samples. A model whose contract (features it expects, the
    /// pretrained weights) the backbone does not meet is refused before anything runs.
    public func probabilities(_ saved: SavedModel, samples: [D.Sample], name: String, log: Bool = false) throws -> Tensor {
        let head = try saved.makeHead()
        if saved.kind != .scratch { try checkContract(saved, name: name) }
        switch saved.kind {
        case .head:
            return probabilities(head, try features(samples, name: name), log: log)
        case .finetuned:
            let bb = try backbone()
            try bb.load(saved.part("backbone."), strict: false, source: "saved backbone")
            defer { _ = try? backbone() }
            return probabilities(head, try pooled(samples, name: name, width: bb.featureCount) { bb.features($0) }, log: log)
        case .scratch:
            var rng = RNG(seed: options.seed)
            let net = domain.scratchBackbone(rng: &rng)
            try net.load(saved.part("net."), source: "saved network")
            guard saved.headInputs == net.featureCount else {
                throw EngineError.invalidFile(name, "the model's head takes \(saved.headInputs) features, its network gives \(net.featureCount)")
            }
            net.train(false)
            return probabilities(head, try pooled(samples, name: name, width: net.featureCount, scratch: true) { net.features($0) }, log: log)
        }
    }
}
