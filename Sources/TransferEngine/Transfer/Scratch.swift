import Foundation

extension TransferWorkflows {
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
        if let floor = options.scratchMinimum {
            opts.epochs = max(opts.epochs, floor.epochs)
            opts.minimumSteps = max(opts.minimumSteps, floor.steps)
        }
        if split.validation.isEmpty { opts.patience = nil }
        opts.epochs = opts.epochs(forCount: split.train.count)
        let parts = ModuleGroup([("net", net), ("head", head)])
        let trainer = Trainer(name: "scratch-\(labelsPerClass ?? 0)", module: parts,
                              groups: [ParameterGroup(module: parts)], options: opts, checkpointer: checkpointer)
        let start = Date()
        func forward(_ idx: [Int], of s: LabelledSet<D.Sample>, training: Bool, rng: inout RNG) throws -> (Variable, Variable) {
            let input = try domain.batch(idx.map { s.samples[$0] }, augment: training && augment, scratch: true, rng: &rng)
            let h = head.representation(net.features(input), training: training, rng: &rng)
            return (h, head.classify(h))
        }
        // No label smoothing: the baseline trains as it always has.
        try fitClassifier(trainer, split: split, labels: set.labels, labelSmoothing: 0,
                          classWeights: options.classWeights, rng: &rng) { rows, training, rng in
            try forward(rows, of: set, training: training, rng: &rng)
        }
        let seconds = Date().timeIntervalSince(start)
        func score(_ s: LabelledSet<D.Sample>) throws -> ClassificationReport {
            var predictions: [Int] = []
            var r = RNG(seed: 0)
            try Autograd.noGrad {
                for b in stride(from: 0, to: s.count, by: options.inferenceBatchSize) {
                    let idx = Array(b..<min(s.count, b + options.inferenceBatchSize))
                    predictions += try forward(idx, of: s, training: false, rng: &r).1.value.argmaxRows()
                }
            }
            return ClassificationReport(predictions: predictions, labels: s.labels, classNames: s.classNames)
        }
        let report = try test.map(score) ?? validationReport(set, split.validation, score)
        return StrategyResult(strategy: .scratch, level: nil, eval: test == nil ? "validation" : evalName,
                              evaluatedOn: test == nil ? .validation : .test, labelsPerClass: labelsPerClass,
                              report: report, trainSeconds: seconds, history: trainer.history,
                              model: SavedModel(kind: .scratch, head: head, classNames: set.classNames, net: net.stateDict()))
    }
}
