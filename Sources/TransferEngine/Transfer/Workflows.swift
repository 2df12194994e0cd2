import Foundation

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
    /// Fine-tuning (and end-to-end adaptation, and the from-scratch baseline, within `scratchMinimum`).
    public var fineTuning: TrainOptions = {
        var o = TrainOptions()
        o.epochs = 15; o.batchSize = 32; o.learningRate = 1e-3; o.weightDecay = 1e-4; o.patience = 5
        o.minimumSteps = 150
        return o
    }()
    /// The from-scratch baseline trains with `fineTuning`'s options for at least this many epochs and optimizer
    /// steps (a small network from random weights needs a longer schedule than fine-tuning); nil: exactly
    /// `fineTuning`'s budget (the command line's `--epochs` asks for that).
    public var scratchMinimum: (epochs: Int, steps: Int)? = (30, 300)
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
    /// Memory for backbone outputs kept between the workflows of one process (`ActivationCache`).
    public var activationCacheBytes = 1 << 30
    /// When features are computed, keep the activations below the top `unfreeze` blocks too (the frozen part
    /// that fine-tuning and end-to-end adaptation train on top of), so that part runs once per set, not twice.
    /// For commands that fine-tune after extracting features; it changes no value (`features`).
    public var keepsFrozenActivations = false

    public init() {}
}

/// The three techniques (feature extraction, fine-tuning, domain adaptation) plus the from-scratch baseline,
/// generic over a domain. Nothing here knows about images, audio or text.
public final class TransferWorkflows<D: TransferDomain> {
    public let domain: D
    public var options: WorkflowOptions
    public var checkpointer: TrainingCheckpointer?
    /// The pretrained backbone as loaded: features and checks run on it, nothing trains or re-estimates it.
    var pretrained: (any Backbone<D.Input>)?
    /// Hash of the pretrained weights (every workflow starts from them; computed once).
    public private(set) var backboneHash = ""
    /// Backbone outputs of this process's workflows, in memory (see `ActivationCache`).
    let activationCache: ActivationCache

    public init(domain: D, options: WorkflowOptions) {
        self.domain = domain
        self.options = options
        activationCache = ActivationCache(limitBytes: options.activationCacheBytes)
    }

    /// The pretrained backbone, loaded once, frozen and in inference mode. It is never changed: a workflow that
    /// trains blocks or re-estimates statistics takes its own `backboneCopy()`.
    public func pretrainedBackbone() throws -> any Backbone<D.Input> {
        if let b = pretrained { return b }
        let b = try freshBackbone()
        pretrained = b
        backboneHash = b.weightsHash()
        return b
    }

    /// A copy of the pretrained backbone of its own (loaded again from the domain's file), frozen and in inference
    /// mode, for one workflow to train or re-estimate.
    public func backboneCopy() throws -> any Backbone<D.Input> {
        _ = try pretrainedBackbone()
        return try freshBackbone()
    }

    private func freshBackbone() throws -> any Backbone<D.Input> {
        let b = try domain.pretrainedBackbone()
        b.freeze()
        b.train(false)
        return b
    }

    // MARK: Features

    /// Pooled features [N, F] through the frozen pretrained backbone, cached in memory and on disk.
    public func features(_ samples: [D.Sample], name: String) throws -> Tensor {
        let bb = try pretrainedBackbone()
        let key = FeatureCache.key(["features", D.name, backboneHash, domain.preprocessingKey]
                                   + samples.map(domain.cacheKey))
        if let kept = activationCache[key]?.parts.first?.rows { return kept }
        if let cached = options.cache?.load(key)?["features"], cached.shape == [samples.count, bb.featureCount] {
            activationCache[key] = .init(parts: [.init(rows: cached, ids: nil)], rowsPerSample: 1)
            return cached
        }
        // The frozen part's activations on the way, when a fine-tuning workflow will train on top of them: the
        // backbone's blocks are a chain, so blocks 0..<end then end..<count compute exactly `bb.features`.
        let end = options.keepsFrozenActivations && options.unfreezeCandidates == nil
            ? bb.firstTrainableBlock(unfreezing: options.unfreeze) : 0
        var frozen: [Activation.Part]? = end > 0 ? [] : nil, frozenBytes = 0, rowsPerSample = 1
        let f = try pooled(samples, name: "features of \(name)", width: bb.featureCount) { input in
            guard frozen != nil else { return bb.features(input) }
            let a = bb.forward(input, through: end)
            rowsPerSample = a.rowsPerSample
            frozen! += a.split()
            frozenBytes += a.value.value.count * MemoryLayout<Float>.size
            if frozenBytes > options.activationCacheBytes { frozen = nil }  // more than the cache keeps: not worth holding
            return bb.forward(a, from: end)
        }
        if let bad = f.withUnsafeBufferPointer({ $0.firstIndex { !$0.isFinite } }) {
            throw EngineError.invalidFile(domain.describe(samples[bad / bb.featureCount]), "its features are not finite numbers (NaN or infinity); not cached")
        }
        if !samples.isEmpty { options.cache?.store(key, ["features": f]) }
        if let frozen { activationCache[activationKey(samples, through: end, backbone: bb)] = .init(parts: frozen, rowsPerSample: rowsPerSample) }
        activationCache[key] = .init(parts: [.init(rows: f, ids: nil)], rowsPerSample: 1)
        return f
    }

    /// The key of the activations of `samples` below block `end` of `bb`: those blocks' weights and statistics,
    /// the preprocessing and the samples.
    func activationKey(_ samples: [D.Sample], through end: Int, backbone bb: any Backbone<D.Input>) -> String {
        FeatureCache.key(["activations", D.name, bb.weightsHash(blocks: 0..<end), String(end), domain.preprocessingKey]
                         + samples.map(domain.cacheKey))
    }

    /// Pooled outputs [N, width] of `forward` over batches of samples, without gradients ([0, width] for none).
    func pooled(_ samples: [D.Sample], name: String, width: Int, scratch: Bool = false,
                _ forward: (D.Input) -> Variable) throws -> Tensor {
        let parts = try runBackbone(samples, name: name, scratch: scratch) { [forward($0).value] }
        return Tensor.concatenateRows(parts, rowShape: [width])
    }

    /// Per-sample activations below block `end` of `bb`, plus rows per sample. Kept in memory under the weights and
    /// statistics of those blocks and the samples, so the frozen part runs once per set however many models train
    /// or are evaluated on top of it.
    func activations(_ samples: [D.Sample], through end: Int, name: String,
                     backbone bb: any Backbone<D.Input>) throws -> ActivationCache.Entry {
        let key = activationKey(samples, through: end, backbone: bb)
        if let kept = activationCache[key] { return kept }
        var rows = 1
        let parts = try runBackbone(samples, name: "frozen blocks on \(name)") { input in
            let a = bb.forward(input, through: end)
            rows = a.rowsPerSample
            return a.split()
        }
        let entry = ActivationCache.Entry(parts: parts, rowsPerSample: rows)
        activationCache[key] = entry
        return entry
    }

    /// Loads every sample as `batch` does, keeping nothing: a file that cannot be read is reported before the
    /// training that would otherwise reach it only at the end.
    public func checkReadable(_ samples: [D.Sample], name: String) throws {
        _ = try runBackbone(samples, name: "reading \(name)") { _ in [Never]() }
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
}
