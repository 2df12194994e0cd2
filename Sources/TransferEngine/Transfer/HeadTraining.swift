import Foundation

extension TransferWorkflows {
    // MARK: Heads on features

    /// Trains a head on features with a Create ML validation split and early stopping. Returns the head, its
    /// history and the validation rows it held out. `extra` adds a loss on each batch's representation
    /// (feature-level adaptation); its modules train too. `initial`: start from that head's weights (standardisation
    /// included) instead of a new one; `frozen`: parameter prefixes of the head that stay fixed; `classWeighted`:
    /// false when the options' class weights do not describe `labels` (they are the source's).
    func trainHead(features: Tensor, labels: [Int], classes: Int, kind: ClassifierHead.Kind,
                   name: String, rng: inout RNG, initial: ClassifierHead? = nil, frozen: [String] = [],
                   checkpoint: Bool = true, classWeighted: Bool = true, extra: ((ClassifierHead) -> ExtraLoss)? = nil) throws
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
        let parts = ModuleGroup([("head", head)] + (extraLoss?.modules ?? []))
        let trainer = Trainer(name: name, module: parts, groups: [ParameterGroup(module: parts)], options: opts,
                              checkpointer: checkpoint ? checkpointer : nil)
        try fitClassifier(trainer, split: split, labels: labels, labelSmoothing: opts.labelSmoothing,
                          classWeights: classWeighted ? options.classWeights : nil, rng: &rng, extra: extraLoss) { rows, training, rng in
            let h = head.representation(Variable(features.gatherRows(rows)), training: training, rng: &rng)
            return (h, head.classify(h))
        }
        return (head, trainer.history, split.validation)
    }

    /// Trains with `trainer` on the rows `split.train`: each step's loss is the cross-entropy of the logits
    /// `forward(rows, training, rng)` gives (plus `extra`'s term on its representation); the epoch's validation
    /// scores `split.validation` (loss and accuracy, without label smoothing).
    func fitClassifier(_ trainer: Trainer, split: (train: [Int], validation: [Int]), labels: [Int], labelSmoothing: Float,
                       classWeights weights: [Float]?, rng: inout RNG, extra: ExtraLoss? = nil,
                       forward: ([Int], Bool, inout RNG) throws -> (representation: Variable, logits: Variable)) throws {
        // `validate` is an optional closure (so escaping in type), though `fit` only calls it while it runs.
        try withoutActuallyEscaping(forward) { forward in
            try trainer.fit(count: split.train.count, rng: &rng, step: { idx, rng in
                let rows = idx.map { split.train[$0] }
                let (h, logits) = try forward(rows, true, &rng)
                let y = rows.map { labels[$0] }
                var loss = Variable.crossEntropy(logits: logits, labels: y, labelSmoothing: labelSmoothing, classWeights: weights)
                let term = try extra.map { try $0.loss(h, logits, trainer.position, &rng) }
                if let term { loss = loss + term }
                return BatchResult(loss: loss, logits: logits.value, labels: y, adaptationLoss: term.map { Double($0.value.scalar) })
            }, validate: split.validation.isEmpty ? nil : {
                var r = RNG(seed: 0)  // evaluation draws nothing
                let logits = try forward(split.validation, false, &r).logits
                let y = split.validation.map { labels[$0] }
                let loss = Variable.crossEntropy(logits: logits, labels: y, classWeights: weights).value.scalar
                return (Double(loss), Double(zip(logits.value.argmaxRows(), y).filter { $0 == $1 }.count) / Double(y.count))
            })
        }
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

    func evaluate(_ head: ClassifierHead, _ features: Tensor, _ set: LabelledSet<some Any>) -> ClassificationReport {
        ClassificationReport(predictions: probabilities(head, features).argmaxRows(), labels: set.labels,
                             classNames: set.classNames)
    }

    /// The report on the validation rows of `set` (nil when training held none out: under 50 samples).
    func validationReport(_ set: LabelledSet<D.Sample>, _ validation: [Int],
                          _ score: (LabelledSet<D.Sample>) throws -> ClassificationReport) rethrows -> ClassificationReport? {
        validation.isEmpty ? nil : try score(set.subset(validation))
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
}
