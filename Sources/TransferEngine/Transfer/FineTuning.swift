import Foundation

extension TransferWorkflows {
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

    /// Linear probe, then the top `options.unfreeze` blocks (or the depth `--unfreeze auto` chooses) trained with
    /// discriminative learning rates.
    public func finetune(train: LabelledSet<D.Sample>, test: LabelledSet<D.Sample>?, labelsPerClass: Int? = nil,
                         evalName: String) throws -> (result: StrategyResult, model: FineTuned) {
        let set = trainingSet(train, labelsPerClass: labelsPerClass)
        let classes = set.classNames.count
        var rng = RNG(seed: options.seed)
        // The test set is scored only once the model is trained: a file there that cannot be read is reported now.
        if let test { try checkReadable(test.samples, name: evalName) }
        if options.unfreezeCandidates != nil { try DepthSearch.checkEnough(set.count) }
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
        let tuned = try trainTop(try backboneCopy(), blocks: search?.chosen ?? options.unfreeze, head: head,
                                 samples: set.samples, labels: set.labels, classes: classes, name: name, rng: &rng)
        let seconds = Date().timeIntervalSince(start)
        let report = try test.map { try evaluate(tuned.model, $0, name: evalName) }
            ?? validationReport(set, tuned.validation) { try evaluate(tuned.model, $0, name: "validation") }
        var result = StrategyResult(strategy: .finetune, level: nil, eval: test == nil ? "validation" : evalName,
                                    evaluatedOn: test == nil ? .validation : .test, labelsPerClass: labelsPerClass,
                                    report: report, trainSeconds: seconds, history: probeHistory + tuned.history,
                                    model: tuned.model.saved(classNames: set.classNames))
        result.depthSearch = search
        return (result, tuned.model)
    }

    /// Trains the top `blocks` blocks of `bb` (a `backboneCopy()`) together with `head` on labelled samples, plus an
    /// optional extra loss on the batch's features (for end-to-end adaptation).
    func trainTop(_ bb: any Backbone<D.Input>, blocks: Int, head: ClassifierHead, samples: [D.Sample], labels: [Int],
                  classes: Int, name: String, rng: inout RNG,
                  extra: ExtraLoss? = nil) throws -> (model: FineTuned, history: [EpochLog], validation: [Int]) {
        let k = min(blocks, bb.blocks.count)
        let first = bb.firstTrainableBlock(unfreezing: k)
        bb.setTrainableTop(options.gradualUnfreezing ? 1 : k)
        let split = Splits.trainValidation(labels: labels, classCount: classes,
                                           fraction: Splits.validationFraction(forCount: labels.count), rng: &rng)
        // The frozen part is deterministic without augmentation: its activations are computed once and kept.
        let cached = options.augment ? nil : try activations(samples, through: first, name: "train", backbone: bb)
        var opts = options.fineTuning
        if split.validation.isEmpty || extra != nil { opts.patience = nil }
        if extra != nil { opts.restoresBestWeights = false }  // as in trainHead
        opts.epochs = opts.epochs(forCount: split.train.count)
        let parts = ModuleGroup([("backbone", bb), ("head", head)] + (extra?.modules ?? []))
        var groups = [ParameterGroup(module: head, namePrefix: "head."),
                      ParameterGroup(module: bb, prefixes: bb.topBlockPrefixes(k), namePrefix: "backbone.",
                                     lrMultiplier: options.backboneLRMultiplier)]
        for (n, m) in extra?.modules ?? [] { groups.append(ParameterGroup(module: m, namePrefix: n + ".")) }
        let trainer = Trainer(name: name, module: parts, groups: groups, options: opts, checkpointer: checkpointer)
        if options.gradualUnfreezing {
            trainer.onEpoch = { log in bb.setTrainableTop(min(k, log.epoch + 1)) }
        }
        try fitClassifier(trainer, split: split, labels: labels, labelSmoothing: opts.labelSmoothing,
                          classWeights: options.classWeights, rng: &rng, extra: extra) { rows, training, rng in
            let f: Variable
            if let cached {
                f = bb.forward(Activation.join(rows.map { cached.parts[$0] }, sequences: bb.activationsAreSequences,
                                               rowsPerSample: cached.rowsPerSample), from: first)
            } else {
                let input = try domain.batch(rows.map { samples[$0] }, augment: training, scratch: false, rng: &rng)
                f = bb.forward(bb.forward(input, through: first), from: first)
            }
            let h = head.representation(f, training: training, rng: &rng)
            return (h, head.classify(h))
        }
        bb.freeze()
        return (FineTuned(backbone: bb, head: head, firstTrainableBlock: first), trainer.history, split.validation)
    }

    /// An extra training loss computed from a batch's head representation and logits (adaptation methods).
    struct ExtraLoss {
        var modules: [(String, Module)]
        /// (representation, logits, where training is, rng) -> loss
        var loss: (Variable, Variable, TrainingPosition, inout RNG) throws -> Variable
    }

    /// Pooled features [N, F] through a fine-tuned model (its frozen part's activations kept, see `activations`).
    public func features(_ model: FineTuned, _ samples: [D.Sample], name: String) throws -> Tensor {
        let bb = model.backbone, first = model.firstTrainableBlock
        bb.train(false)
        let frozen = try activations(samples, through: first, name: name, backbone: bb)
        var out: [Tensor] = []
        Autograd.noGrad {
            let progress = ProgressReporter(label: "\(name) through the fine-tuned model", total: samples.count, unit: "samples")
            for start in stride(from: 0, to: samples.count, by: options.inferenceBatchSize) {
                let rows = start..<min(samples.count, start + options.inferenceBatchSize)
                let a = Activation.join(Array(frozen.parts[rows]), sequences: bb.activationsAreSequences,
                                        rowsPerSample: frozen.rowsPerSample)
                out.append(bb.forward(a, from: first).value)
                progress.advance(by: rows.count)
            }
            progress.finish()
        }
        return Tensor.concatenateRows(out, rowShape: [bb.featureCount])
    }

    public func evaluate(_ model: FineTuned, _ test: LabelledSet<D.Sample>, name: String) throws -> ClassificationReport {
        evaluate(model.head, try features(model, test.samples, name: name), test)
    }
}
