import Foundation

/// Hyper-parameters of one training run. Defaults follow the anchors (Keras / fastai transfer recipes):
/// AdamW, warmup + cosine, early stopping on validation loss with the best weights restored.
public struct TrainOptions: Codable, Sendable {
    public var epochs: Int = 30
    public var batchSize: Int = 32
    public var learningRate: Float = 1e-3
    public var weightDecay: Float = 1e-4
    /// Fraction of all steps spent in linear warmup before the cosine decay.
    public var warmupFraction: Double = 0.05
    public var labelSmoothing: Float = 0
    /// Epochs without validation improvement before stopping (nil: never stop early); counted from the end of
    /// the learning-rate warmup when the warmup is at least this long.
    public var patience: Int? = 8
    /// End with the weights of the epoch with the lowest validation loss (when there is validation data); false:
    /// end with the last epoch's weights, for losses the validation set does not measure (domain alignment).
    public var restoresBestWeights = true
    /// Gradient clipping by global norm (nil: off).
    public var clipNorm: Float? = 5
    /// Small datasets give few batches per epoch: epochs are raised until training takes at least this many
    /// optimizer steps (0: exactly `epochs`, as when the user sets --epochs).
    public var minimumSteps = 0

    /// Epochs to run for `count` samples: `epochs`, raised to reach `minimumSteps`.
    public func epochs(forCount count: Int) -> Int {
        let perEpoch = max(1, (count + batchSize - 1) / batchSize)
        return max(epochs, (minimumSteps + perEpoch - 1) / perEpoch)
    }

    public init() {}
}

/// The batch a trainer is on: its epoch (from 0), its step (from 0, over all epochs) and the number of steps.
public struct TrainingPosition: Sendable {
    public var epoch: Int
    public var step: Int
    public var totalSteps: Int
    /// step / totalSteps, in [0, 1).
    public var fraction: Double { Double(step) / Double(max(totalSteps, 1)) }
}

/// One epoch of a training history.
public struct EpochLog: Codable, Equatable, Sendable {
    public var epoch: Int
    public var trainLoss: Double
    public var trainAccuracy: Double
    public var validationLoss: Double?
    public var validationAccuracy: Double?
    public var learningRate: Double
    /// Mean over the epoch's batches of the adaptation term inside `trainLoss` (DANN's domain loss, CORAL's, MCC's,
    /// BNM's or SHOT's), for adaptation runs.
    public var adaptationLoss: Double? = nil
}

/// Saves and restores a trainer's state so a killed run resumes where it stopped.
public protocol TrainingCheckpointer: AnyObject {
    /// Stores `tensors` and `info` under `name`, atomically.
    func save(_ name: String, tensors: [String: Tensor], info: [String: String]) throws
    /// The latest state saved under `name`, if any.
    func load(_ name: String) throws -> (tensors: [String: Tensor], info: [String: String])?
    /// The epochs of `name` so far, after each epoch's checkpoint (a run directory keeps them as CSV, so a killed
    /// run still shows its curves).
    func record(history: [EpochLog], of name: String) throws
}

extension TrainingCheckpointer {
    public func record(history: [EpochLog], of name: String) throws {}
}

extension EpochLog {
    public static let csvHeader = "epoch,train_loss,train_accuracy,validation_loss,validation_accuracy,learning_rate,adaptation_loss"

    /// One CSV row under `csvHeader` (empty fields when there was no validation split).
    public var csvRow: String {
        func f(_ x: Double?) -> String { x.map { String(format: "%.6g", $0) } ?? "" }
        return "\(epoch),\(f(trainLoss)),\(f(trainAccuracy)),\(f(validationLoss)),\(f(validationAccuracy)),\(f(learningRate)),\(f(adaptationLoss))"
    }

    /// What the progress line shows after this epoch.
    public var summary: String {
        var s = String(format: "loss %.4f", trainLoss)
        if let v = validationAccuracy { s += String(format: ", validation accuracy %.3f", v) }
        if let a = adaptationLoss { s += String(format: ", adaptation term %.4f", a) }
        return s
    }
}

/// The loss of one batch, and the logits to score training accuracy with.
public struct BatchResult {
    public var loss: Variable
    public var logits: Tensor?
    public var labels: [Int]
    /// The adaptation term inside `loss`, if any (for the epoch's log).
    public var adaptationLoss: Double?

    public init(loss: Variable, logits: Tensor? = nil, labels: [Int] = [], adaptationLoss: Double? = nil) {
        self.loss = loss
        self.logits = logits
        self.labels = labels
        self.adaptationLoss = adaptationLoss
    }
}

/// A mini-batch training loop shared by every workflow: seeded shuffling, AdamW over parameter groups,
/// warmup + cosine schedule, gradient clipping, validation, early stopping that restores the best weights,
/// and per-epoch checkpoints (weights, optimizer, RNG, history) for `--resume`.
public final class Trainer {
    public let options: TrainOptions
    public let module: Module
    public let optimizer: AdamW
    let name: String
    let checkpointer: TrainingCheckpointer?
    public private(set) var history: [EpochLog] = []
    /// Called after every epoch (for progress output).
    public var onEpoch: ((EpochLog) -> Void)?
    /// Where training is, as seen by the batch being computed (also right after `--resume`: counted from the
    /// epoch restored, not from this process's start, so schedules inside losses resume exactly).
    public private(set) var position = TrainingPosition(epoch: 0, step: 0, totalSteps: 1)

    /// `module` is everything whose state a checkpoint or the restore-best must capture; `groups` are the
    /// trainable parameter groups (discriminative learning rates).
    /// `options.epochs` is taken as given; use `TrainOptions.epochs(forCount:)` to apply `minimumSteps` first.
    public init(name: String, module: Module, groups: [ParameterGroup], options: TrainOptions,
                checkpointer: TrainingCheckpointer? = nil) {
        self.name = name
        self.module = module
        self.options = options
        self.checkpointer = checkpointer
        optimizer = AdamW(groups: groups, learningRate: options.learningRate, weightDecay: options.weightDecay)
    }

    /// Trains for `options.epochs` over `count` samples in shuffled batches. `step` computes a batch's loss
    /// from sample indices (with the RNG for augmentation and dropout); `validate` returns (loss, accuracy).
    public func fit(count: Int, rng: inout RNG, step: (_ indices: [Int], _ rng: inout RNG) throws -> BatchResult,
                    validate: (() throws -> (loss: Double, accuracy: Double))? = nil) throws {
        precondition(count > 0, "Trainer.fit: nothing to train on")
        let batchesPerEpoch = (count + options.batchSize - 1) / options.batchSize
        let totalSteps = max(1, batchesPerEpoch * options.epochs)
        let warmupSteps = Int(Double(totalSteps) * options.warmupFraction)
        let schedule = WarmupCosineSchedule(baseLR: options.learningRate, warmupSteps: warmupSteps)
        // Training never stops before the learning rate has reached its value. A warmup shorter than the patience
        // ends before the patience can run out; one at least as long (a long --epochs: 5 % of 300 epochs is 15, or
        // a small set's minimum steps) stopped training at chance while the rate was still ramping up, so there
        // the patience counts from the warmup's end.
        let warmupEpochs = (warmupSteps + batchesPerEpoch - 1) / max(1, batchesPerEpoch)
        let patienceStart = warmupEpochs >= (options.patience ?? Int.max) ? warmupEpochs : 0
        var startEpoch = 0
        var best: (loss: Double, state: [String: Tensor])?
        var badEpochs = 0
        if let saved = try checkpointer?.load(name) {
            (startEpoch, best, badEpochs) = try restore(saved, totalSteps: totalSteps, rng: &rng)
            if startEpoch >= options.epochs || (options.patience != nil && badEpochs >= options.patience!) {
                if options.restoresBestWeights, let best { try module.load(best.state, source: "checkpoint \(name)") }
                module.train(false)
                return
            }
        }
        let progress = ProgressReporter(label: "training \(name)", total: options.epochs - startEpoch, unit: "epochs")
        defer { progress.finish() }
        for epoch in startEpoch..<options.epochs {
            module.train(true)
            let order = rng.permutation(count)
            var lossSum = 0.0, correct = 0, seen = 0, adaptationSum = 0.0, adaptationBatches = 0
            for b in 0..<batchesPerEpoch {
                let indices = Array(order[(b * options.batchSize)..<min(count, (b + 1) * options.batchSize)])
                optimizer.zeroGrad()
                position = TrainingPosition(epoch: epoch, step: epoch * batchesPerEpoch + b, totalSteps: totalSteps)
                let result = try step(indices, &rng)
                guard result.loss.value.scalar.isFinite else {
                    throw EngineError.invalidArgument("training \(name) diverged: the loss is \(result.loss.value.scalar) at epoch \(epoch + 1); try a smaller --lr")
                }
                result.loss.backward()
                if let clip = options.clipNorm { _ = clipGradientNorm(optimizer.parameters, maxNorm: clip) }
                optimizer.step(lr: schedule.learningRate(step: epoch * batchesPerEpoch + b, totalSteps: totalSteps))
                lossSum += Double(result.loss.value.scalar) * Double(indices.count)
                if let a = result.adaptationLoss { adaptationSum += a; adaptationBatches += 1 }
                seen += indices.count
                if let logits = result.logits {
                    correct += zip(logits.argmaxRows(), result.labels).filter { $0 == $1 }.count
                }
            }
            module.train(false)
            var log = EpochLog(epoch: epoch + 1, trainLoss: lossSum / Double(seen),
                               trainAccuracy: Double(correct) / Double(seen),
                               validationLoss: nil, validationAccuracy: nil,
                               learningRate: Double(optimizer.learningRate),
                               adaptationLoss: adaptationBatches > 0 ? adaptationSum / Double(adaptationBatches) : nil)
            if let validate {
                let (vl, va) = try Autograd.noGrad { try validate() }
                log.validationLoss = vl
                log.validationAccuracy = va
                if best == nil || vl < best!.loss - 1e-6 {
                    best = (vl, module.stateDict())
                    badEpochs = 0
                } else if epoch >= patienceStart {
                    badEpochs += 1
                }
            }
            history.append(log)
            onEpoch?(log)
            progress.advance(detail: log.summary)
            let stop = options.patience.map { badEpochs >= $0 } ?? false
            try saveCheckpoint(epoch: epoch + 1, totalSteps: totalSteps, best: best, badEpochs: badEpochs, rng: rng)
            try checkpointer?.record(history: history, of: name)
            if stop { break }
        }
        if options.restoresBestWeights, let best { try module.load(best.state, source: "best weights of \(name)") }
        module.train(false)
    }

    private func saveCheckpoint(epoch: Int, totalSteps: Int, best: (loss: Double, state: [String: Tensor])?, badEpochs: Int,
                                rng: RNG) throws {
        guard let checkpointer else { return }
        var tensors: [String: Tensor] = [:]
        for (k, v) in module.stateDict() { tensors["model." + k] = v }
        for (k, v) in optimizer.stateDict() { tensors["optimizer." + k] = v }
        if let best { for (k, v) in best.state { tensors["best." + k] = v } }
        let historyJSON = String(decoding: try JSONEncoder().encode(history), as: UTF8.self)
        try checkpointer.save(name, tensors: tensors, info: [
            "epoch": String(epoch), "total_steps": String(totalSteps), "bad_epochs": String(badEpochs),
            "best_loss": best.map { String($0.loss) } ?? "",
            "rng": rng.stateWords.map(String.init).joined(separator: ","),
            "history": historyJSON,
        ])
    }

    /// The state a checkpoint saved, refused when it was made for another schedule (`totalSteps`: epochs x batches;
    /// the run's settings replay, so only another version of the program plans differently).
    private func restore(_ saved: (tensors: [String: Tensor], info: [String: String]), totalSteps: Int, rng: inout RNG) throws
        -> (Int, (loss: Double, state: [String: Tensor])?, Int) {
        let source = "checkpoint \(name)"
        if let planned = saved.info["total_steps"], planned != String(totalSteps) {
            throw EngineError.invalidFile(source, "it was made for \(planned) optimizer steps, but this version of the program "
                                          + "plans \(totalSteps) for the same training")
        }
        func part(_ prefix: String) -> [String: Tensor] {
            Dictionary(uniqueKeysWithValues: saved.tensors.filter { $0.key.hasPrefix(prefix) }
                .map { (String($0.key.dropFirst(prefix.count)), $0.value) })
        }
        try module.load(part("model."), source: source)
        try optimizer.loadStateDict(part("optimizer."), source: source)
        guard let epoch = saved.info["epoch"].flatMap(Int.init),
              let words = saved.info["rng"]?.split(separator: ",").compactMap({ UInt64($0) }), words.count == 4,
              let historyData = saved.info["history"]?.data(using: .utf8) else {
            throw EngineError.invalidFile(source, "checkpoint metadata is incomplete")
        }
        rng = RNG(stateWords: words)
        history = try JSONDecoder().decode([EpochLog].self, from: historyData)
        let bestState = part("best.")
        let best = (saved.info["best_loss"].flatMap(Double.init)).map { ($0, bestState) }
        return (epoch, best, Int(saved.info["bad_epochs"] ?? "0") ?? 0)
    }
}
