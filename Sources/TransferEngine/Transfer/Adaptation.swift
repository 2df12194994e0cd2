import Foundation

/// Unsupervised domain adaptation methods (labelled source, unlabelled target). `propagate` starts from the other
/// methods' average prediction on the target, so it is trained after them (feature level only).
public enum AdaptationMethod: String, CaseIterable, Codable, Sendable {
    case sourceOnly = "source-only", dann, coral, adabn, pseudo, mcc, shot, bnm, propagate
}

/// Where adaptation acts: on cached features (a trainable head with a bottleneck; seconds), or end to end
/// (the backbone's top blocks unfrozen).
public enum AdaptationLevel: String, CaseIterable, Codable, Sendable {
    case features, endToEnd = "end-to-end"
}

/// Settings of the adaptation methods.
public struct AdaptationOptions: Sendable {
    /// Unlabelled target samples adaptation needs: it standardises the target with its own statistics and chooses
    /// its model by agreement on it (2 samples chose DANN, 8 points below source-only), as `diagnose` needs.
    public static let minimumTargetSamples = DomainDiagnosis.minimumSamples

    /// Refuses a target of fewer than `minimumTargetSamples` (naming `path` when given).
    public static func checkTargetSize(_ count: Int, path: String? = nil) throws {
        guard count < minimumTargetSamples else { return }
        let problem = "has \(count) samples; adaptation estimates the target's statistics and chooses its model on them, and needs at least \(minimumTargetSamples)"
        throw path.map { EngineError.invalidFile($0, problem) } ?? EngineError.invalidArgument("the target set " + problem)
    }

    /// Weight of the Deep CORAL loss (on the head's representation).
    public var coralWeight: Float = 1
    /// Weight of the domain-discriminator loss in DANN (its gradient reversal ramps 0 -> 1 by 2/(1+exp(-10p))-1).
    public var dannWeight: Float = 1
    /// Pseudo-labels need at least this probability.
    public var pseudoThreshold: Float = 0.9
    /// Self-training rounds.
    public var pseudoRounds = 3
    /// Folds for the target-supervised oracle (cross-validation on the labelled target test set).
    public var oracleFolds = 5
    /// Minimum Class Confusion: softmax temperature and loss weight (Jin et al. 2020; TLlib's defaults).
    public var mccTemperature: Float = 2.5
    public var mccWeight: Float = 1
    /// Batch Nuclear-norm Maximisation: loss weight (Cui et al. 2020).
    public var bnmWeight: Float = 1
    /// SHOT: weight of the information-maximisation loss and of the nearest-centroid pseudo-label loss (Liang et al. 2020).
    public var shotIMWeight: Float = 1
    public var shotPseudoWeight: Float = 0.3
    /// `propagate` and `semi` balance their propagated labels to the source's class proportions (the target's classes
    /// are assumed to come in them, as the other methods assume); false for a target known to be otherwise.
    public var balancePropagatedLabels = true
    /// Rounds of `propagate` and `semi`: each after the first propagates the previous round's head's predictions.
    /// nil: `effectivePropagationRounds`.
    public var propagationRounds: Int? = nil
    /// `propagationRounds`, by default 2 when the labels are balanced and 1 when not: a later round starts from a head
    /// trained on the source too, whose predictions lean back towards the source's class proportions (on the
    /// label-shifted shifts, unbalanced, a second round cost 3.3 points on speech and 5.6 on vision).
    public var effectivePropagationRounds: Int { propagationRounds ?? (balancePropagatedLabels ? 2 : 1) }
    /// What `propagate` and `semi` did after propagating, for the default model's reason ("propagated along ...").
    public var propagationSummary: String {
        (balancePropagatedLabels ? " and balanced to the source's class proportions" : "")
            + (effectivePropagationRounds > 1 ? ", in \(effectivePropagationRounds) rounds" : "")
    }

    public init() {}
}

/// A two-layer domain classifier for DANN.
final class DomainDiscriminator: Module {
    let fc1: Linear, fc2: Linear
    init(inputs: Int, hidden: Int = 256, rng: inout RNG) {
        fc1 = Linear(inputs: inputs, outputs: hidden, rng: &rng)
        fc2 = Linear(inputs: hidden, outputs: 1, rng: &rng)
        super.init()
        child("fc1", fc1)
        child("fc2", fc2)
    }
    func callAsFunction(_ x: Variable) -> Variable { fc2(fc1(x).relu()) }
}

extension TransferWorkflows {
    /// Runs the chosen methods at the chosen levels and scores every model on the unlabelled target without
    /// labels (`labelFree`, what `AdaptationSelection` chooses by). With `targetTest` (labelled target data, for
    /// reporting only: it chooses nothing) reports target accuracy and, with `oracle`, the target-supervised oracle
    /// (k-fold cross-validation on `targetTest`: each fold is predicted by a head trained on the other folds).
    /// With `endToEndWhereNeeded` and the feature level alone in `levels`: where the source's classes form no
    /// neighbourhoods in the frozen features (`AdaptationSelection.formsNeighbourhoods`), `methods` among
    /// `AdaptationSelection.endToEndMethods` (source-only always) run end to end too, scored among themselves.
    public func adapt(source: LabelledSet<D.Sample>, target: [D.Sample], targetTest: LabelledSet<D.Sample>?,
                      methods: [AdaptationMethod], levels: [AdaptationLevel], oracle: Bool, endToEndWhereNeeded: Bool = false,
                      endToEndMethods: [AdaptationMethod]? = nil, targetLabelled: LabelledSet<D.Sample>? = nil,
                      targetLabelsPerClass: Int? = nil,
                      settings: AdaptationOptions = AdaptationOptions(), evalName: String) throws -> [StrategyResult] {
        try AdaptationOptions.checkTargetSize(target.count)
        let test = try targetTest?.relabelled(to: source.classNames)
        let labelled = try targetLabelled.map { try trainingSet($0.relabelled(to: source.classNames), labelsPerClass: targetLabelsPerClass) }
        if let targetLabelled { try checkTargetLabelled(targetLabelled, test: test) }
        if let labelled, labelled.count == 0 { throw EngineError.invalidFile(labelled.source, "no labelled target samples") }
        var results: [StrategyResult] = []
        let fS = try features(source.samples, name: "source")
        let fT = try features(target, name: "target")
        let fTest = try test.map { try features($0.samples, name: evalName) }
        let fL = try labelled.map { try features($0.samples, name: "labelled target") }   // every set read before training
        if levels.contains(.features) {
            results += try adaptFeatures(source: source, fS: fS, fT: fT, test: test, fTest: fTest,
                                         methods: Self.seedingPropagation(methods), settings: settings, evalName: evalName)
        }
        if levels.contains(.endToEnd) {
            results += try adaptEndToEnd(source: source, target: target, fS: fS, fT: fT, test: test,
                                         methods: endToEndMethods ?? methods, settings: settings, evalName: evalName)
        }
        try propagateAndScore(&results, propagating: methods.contains(.propagate) && levels.contains(.features),
                              source: source, fS: fS, target: target, fT: fT, test: test, fTest: fTest,
                              settings: settings, evalName: evalName)
        if endToEndWhereNeeded, levels == [.features],
           !AdaptationSelection.formsNeighbourhoods(AdaptationSelection.neighbourAgreement(unadapted(source: fS, target: fT).source,
                                                                                         labels: source.labels)) {
            // Source-only first: where its check fails, the stage's methods cannot be chosen, and do not run.
            let stage = AdaptationSelection.endToEndMethods.filter { $0 == .sourceOnly || methods.contains($0) }
            var tuned = try adaptEndToEnd(source: source, target: target, fS: fS, fT: fT, test: test, methods: stage,
                                          settings: settings, evalName: evalName) { $0.heldOutNeighbours?.passed == true }
            try scoreWithoutLabels(&tuned, predictions: try targetPredictions(tuned, target: target, fT: fT), source: source,
                                   fS: fS, fT: fT)
            results += tuned
        }
        if let labelled, let fL {
            // After the label-free scores: these rows use target labels, so they are not candidates of the label-free rule.
            results += try adaptWithTargetLabels(source: source, fS: fS, fT: fT, labelled: labelled, fL: fL, test: test,
                                                 fTest: fTest, labelsPerClass: targetLabelsPerClass, settings: settings,
                                                 evalName: evalName)
        }
        if oracle, let test, let fTest {
            results.append(try self.oracle(test: test, fTest: fTest, settings: settings, evalName: evalName))
        }
        return results
    }

    /// Feature-level adaptation on features computed beforehand (features folders made by `features`, one set
    /// per domain): the same methods, label-free scores and oracle as `adapt` at the features level, from the
    /// features alone. `source` and `targetTest` hold the labels of the rows of `fS` and `fTest`; `S` is whatever
    /// identifies a row (the samples themselves need not be at hand).
    public func adapt<S>(source: LabelledSet<S>, features fS: Tensor, target fT: Tensor, targetTest: LabelledSet<S>?,
                         testFeatures fTest: Tensor?, methods: [AdaptationMethod], oracle: Bool,
                         settings: AdaptationOptions = AdaptationOptions(), evalName: String) throws -> [StrategyResult] {
        guard fT.rank == 2 else { throw EngineError.invalidArgument("the target features are not a matrix") }
        try AdaptationOptions.checkTargetSize(fT.shape[0])
        let width = fT.shape[1]
        guard fS.shape == [source.count, width], (targetTest == nil) == (fTest == nil),
              fTest.map({ $0.shape == [targetTest!.count, width] }) ?? true else {
            throw EngineError.invalidArgument("adapt: features of shapes \(fS.shape), \(fT.shape), \(fTest?.shape ?? []) do not match \(source.count) source and \(targetTest?.count ?? 0) test labels of one backbone")
        }
        let test = try targetTest?.relabelled(to: source.classNames)
        var results = try adaptFeatures(source: source, fS: fS, fT: fT, test: test, fTest: fTest,
                                        methods: Self.seedingPropagation(methods), settings: settings, evalName: evalName)
        try propagateAndScore(&results, propagating: methods.contains(.propagate), source: source, fS: fS, target: nil,
                              fT: fT, test: test, fTest: fTest, settings: settings, evalName: evalName)
        if oracle, let test, let fTest {
            results.append(try self.oracle(test: test, fTest: fTest, settings: settings, evalName: evalName))
        }
        return results
    }

    func result(_ strategy: Strategy, _ level: AdaptationLevel?, _ report: ClassificationReport?, _ start: Date,
                _ history: [EpochLog], _ evalName: String, model: SavedModel? = nil) -> StrategyResult {
        StrategyResult(strategy: strategy, level: level, eval: evalName, labelsPerClass: nil, report: report,
                       trainSeconds: Date().timeIntervalSince(start), history: history, model: model)
    }

    /// A feature-level result. With `aligned`, the head (trained on source features) sees target features in the
    /// source's coordinates: it is evaluated on the aligned target test features and saved re-targeted, so the
    /// saved model applies to raw target features as they come. Keeps the source/target representations for the
    /// alignment plot.
    func headResult(_ method: Strategy, _ head: ClassifierHead, _ data: FeatureDomains, aligned: Bool,
                    _ test: LabelledSet<some Any>?, _ start: Date, _ history: [EpochLog], _ evalName: String,
                    classNames: [String]) throws -> StrategyResult {
        let (fT, fTest) = aligned ? (data.targetAligned, data.testAligned) : (data.target, data.test)
        var model = SavedModel(kind: .head, head: head, classNames: classNames)
        if aligned {
            let trained = head.stateDict()
            head.retarget(from: data.targetStatistics, to: data.sourceStatistics)
            model = SavedModel(kind: .head, head: head, classNames: classNames)
            try head.load(trained)
        }
        let report = test.map { evaluate(head, fTest, $0) }
        var r = result(method, .features, report, start, history, evalName, model: model)
        var rng = RNG(seed: 0)
        r.alignment = Autograd.noGrad {
            (head.representation(Variable(data.source), training: false, rng: &rng).value,
             head.representation(Variable(fT), training: false, rng: &rng).value)
        }
        return r
    }

    /// Both domains' features standardised with the source's statistics, as a source-trained head sees them
    /// without adaptation (the "before" picture of the alignment plot).
    public func unadaptedFeatures(source: [D.Sample], target: [D.Sample]) throws -> (source: Tensor, target: Tensor) {
        unadapted(source: try features(source, name: "source"), target: try features(target, name: "target"))
    }

    /// `unadaptedFeatures` of features at hand.
    public func unadapted(source fS: Tensor, target fT: Tensor) -> (source: Tensor, target: Tensor) {
        let (mean, scale) = ClassifierHead.statistics(fS)
        return ((fS - mean) / scale, (fT - mean) / scale)
    }

    /// A random batch of target rows for the alignment losses.
    func targetBatch(_ count: Int, size: Int, rng: inout RNG) -> [Int] {
        (0..<min(size, max(count, 1))).map { _ in rng.int(below: count) }
    }

    // MARK: Feature level

    /// The features of both domains, and the target's moved into the source's coordinates (each domain
    /// standardised with its own statistics once the head standardises with the source's).
    struct FeatureDomains {
        let source: Tensor, target: Tensor, test: Tensor
        let sourceStatistics: ClassifierHead.Statistics, targetStatistics: ClassifierHead.Statistics
        let targetAligned: Tensor, testAligned: Tensor

        /// `test`: the labelled target test set's features, when there is one.
        init(source: Tensor, target: Tensor, test: Tensor?) {
            (self.source, self.target) = (source, target)
            self.test = test ?? Tensor(zeros: [0, source.shape[1]])
            sourceStatistics = ClassifierHead.statistics(source)
            targetStatistics = ClassifierHead.statistics(target)
            targetAligned = ClassifierHead.align(target, from: targetStatistics, to: sourceStatistics)
            testAligned = ClassifierHead.align(self.test, from: targetStatistics, to: sourceStatistics)
        }
    }

    /// Every method trains the same architecture (standardisation -> bottleneck MLP -> classifier) on the source.
    /// Source-only knows nothing of the target. The adaptation methods all standardise the target with its own
    /// statistics (domain-specific normalisation, as AdaBN / DSBN do for BatchNorm): AdaBN is exactly that on the
    /// source-only head; DANN and CORAL align the bottleneck on top of it; pseudo-labelling self-trains from the
    /// AdaBN head. On MNIST -> optdigits this took feature-level DANN from 12 % to 65 %.
    func adaptFeatures<S>(source: LabelledSet<S>, fS: Tensor, fT: Tensor, test: LabelledSet<S>?, fTest: Tensor?,
                       methods: [AdaptationMethod], settings: AdaptationOptions, evalName: String) throws -> [StrategyResult] {
        let classes = source.classNames.count
        let data = FeatureDomains(source: fS, target: fT, test: fTest)
        let fTa = data.targetAligned
        var results: [StrategyResult] = []
        var start = Date()
        var rng = RNG(seed: options.seed)
        let (sourceHead, sourceHistory, _) = try trainHead(features: fS, labels: source.labels, classes: classes, kind: .mlp,
                                                        name: "adapt-features-source-only", rng: &rng)
        let sourceSeconds = Date().timeIntervalSince(start)
        for method in methods {
            start = Date()
            var r = RNG(seed: options.seed &+ UInt64(AdaptationMethod.allCases.firstIndex(of: method)!))
            switch method {
            case .sourceOnly:
                var res = try headResult(.sourceOnly, sourceHead, data, aligned: false, test, start, sourceHistory,
                                         evalName, classNames: source.classNames)
                res.trainSeconds = sourceSeconds
                results.append(res)
            case .adabn:
                results.append(try headResult(.adabn, sourceHead, data, aligned: true, test, start, [], evalName,
                                              classNames: source.classNames))
            case .coral:
                let (head, history, _) = try trainHead(features: fS, labels: source.labels, classes: classes, kind: .mlp,
                                                       name: "adapt-features-coral", rng: &r) { head in
                    self.coralExtra(head: head, targetFeatures: fTa, weight: settings.coralWeight)
                }
                results.append(try headResult(.coral, head, data, aligned: true, test, start, history, evalName,
                                              classNames: source.classNames))
            case .dann:
                var discriminatorRNG = RNG(seed: options.seed &+ 101)
                let (head, history, _) = try trainHead(features: fS, labels: source.labels, classes: classes, kind: .mlp,
                                                       name: "adapt-features-dann", rng: &r) { head in
                    self.dannExtra(width: head.representationWidth, weight: settings.dannWeight, rng: &discriminatorRNG,
                                   targetCount: fTa.shape[0]) { idx, rng in
                        head.representation(Variable(fTa.gatherRows(idx)), training: true, rng: &rng)
                    }
                }
                results.append(try headResult(.dann, head, data, aligned: true, test, start, history, evalName,
                                              classNames: source.classNames))
            case .pseudo:
                let (head, history) = try selfTrain(sourceHead, [], features: fS, labels: source.labels, target: fTa,
                                                    classes: classes, settings: settings, name: "adapt-features-pseudo", rng: &r)
                results.append(try headResult(.pseudo, head, data, aligned: true, test, start, history, evalName,
                                              classNames: source.classNames))
            case .mcc, .bnm, .shot:
                // The target's representation comes from the head being trained, on target features standardised
                // with their own statistics. SHOT starts from the source-only head and keeps its classifier fixed.
                let initial = method == .shot ? sourceHead : nil
                let (head, history, _) = try trainHead(features: fS, labels: source.labels, classes: classes, kind: .mlp,
                                                       name: "adapt-features-\(method.rawValue)", rng: &r,
                                                       initial: initial, frozen: initial == nil ? [] : ["fc"]) { head in
                    self.targetObjective(method, settings: settings, head: head, targetFeatures: fTa)
                }
                results.append(try headResult(Strategy(method), head, data, aligned: true, test, start, history, evalName,
                                              classNames: source.classNames))
            case .propagate:
                break   // after every other method, from their predictions (`addPropagation`)
            }
        }
        return results
    }

    /// `methods` with AdaBN in front when propagate is the only one: it needs predictions to start from.
    static func seedingPropagation(_ methods: [AdaptationMethod]) -> [AdaptationMethod] {
        methods == [.propagate] ? [.adabn, .propagate] : methods
    }

    /// Every candidate's predictions on the target; with `propagating`, the propagate row from them; then the
    /// label-free scores of all of them.
    func propagateAndScore<S>(_ results: inout [StrategyResult], propagating: Bool, source: LabelledSet<S>, fS: Tensor,
                              target: [D.Sample]?, fT: Tensor, test: LabelledSet<S>?, fTest: Tensor?,
                              settings: AdaptationOptions, evalName: String) throws {
        var predictions = try targetPredictions(results, target: target, fT: fT)
        if propagating {
            try addPropagation(&results, predictions: &predictions, source: source, fS: fS, fT: fT, test: test,
                               fTest: fTest, settings: settings, evalName: evalName)
        }
        try scoreWithoutLabels(&results, predictions: predictions, source: source, fS: fS, fT: fT)
    }

    /// `propagate`: the other feature-level candidates' predictions on the target (`predictions`), summed (their
    /// average, up to scale: propagation is linear in its seeds), spread along the target's nearest-neighbour graph
    /// (`LabelPropagation`, on its features standardised with its own statistics) and balanced to the source's class
    /// proportions (unless `settings.balancePropagatedLabels` is false); a head is then trained on the source and
    /// every target sample with its propagated label, as pseudo-labelling does, and its row joins the feature-level
    /// rows. (With the end-to-end models' predictions in the seeds too, the vision and speech demos scored 2.7 and 3.3
    /// points lower.)
    func addPropagation<S>(_ results: inout [StrategyResult], predictions: inout [String: Tensor], source: LabelledSet<S>,
                           fS: Tensor, fT: Tensor, test: LabelledSet<S>?, fTest: Tensor?, settings: AdaptationOptions,
                           evalName: String) throws {
        let start = Date()
        var seeds: Tensor?
        for r in results where r.level == .features {
            if let p = predictions[r.identifier] { seeds = seeds.map { $0 + p } ?? p }
        }
        guard let seeds else { throw EngineError.invalidArgument("propagate starts from the other methods' predictions, and none ran") }
        let data = FeatureDomains(source: fS, target: fT, test: fTest)
        var rng = RNG(seed: options.seed &+ UInt64(AdaptationMethod.allCases.firstIndex(of: .propagate)!))
        let (head, history) = try trainOnPropagated(seeds, data: data, features: fS, labels: source.labels,
                                                    balanced: settings.balancePropagatedLabels, rounds: settings.effectivePropagationRounds,
                                                    classes: source.classNames.count, name: "adapt-features-propagate", rng: &rng)
        let row = try headResult(.propagate, head, data, aligned: true, test, start, history, evalName,
                                 classNames: source.classNames)
        predictions[row.identifier] = try probabilities(row.model!, features: fT, name: "target through \(row.identifier)")
        results.insert(row, at: results.lastIndex { $0.level == .features }.map { $0 + 1 } ?? results.count)
    }

    /// A head trained on the labelled rows (`x`, `y`) and every target sample with the label its seed propagates
    /// to (`LabelPropagation`): `seeds` holds a row of class scores per target sample (`data.target`), then one per
    /// row of `anchors` (further target samples, e.g. labelled ones), all on one nearest-neighbour graph of the
    /// target's features standardised with the target's own statistics. With `balanced`, the target samples'
    /// propagated scores are balanced to the class proportions of `y` before their argmax (`LabelPropagation.balance`):
    /// the covariate-shift assumption of the other methods, that the target's classes come in the source's
    /// proportions. Without it a class the seeds slightly favour everywhere took its neighbours' samples: propagate
    /// 0.761 -> 0.797 on the speech voices, 0.672 -> 0.689 on MNIST -> optdigits, 0.612 -> 0.628 on the reverse,
    /// 0.913 -> 0.903 on the reverse voices (seeds 42, 1, 2); `semi` on vision at 1 / 3 labels per class 0.630 ->
    /// 0.687, 0.712 -> 0.765.
    ///
    /// `rounds` > 1: each further round starts again from the previous round's head, its predictions on the target
    /// as the target's seeds (the anchors keep theirs), propagated, balanced and trained on the same way. Two rounds
    /// against one (seeds 42, 1, 2): propagate 0.689 -> 0.718 on MNIST -> optdigits, 0.628 -> 0.658 on the reverse,
    /// 0.797 -> 0.806 on the speech voices, 0.903 -> 0.910 on the reverse; semi on vision at 1 / 3 / 5 labels per
    /// class 0.687 / 0.765 / 0.786 -> 0.737 / 0.778 / 0.817, on speech 0.828 / 0.833 / 0.861 -> 0.828 / 0.817 /
    /// 0.833. Three rounds gained nothing more on vision and cost speech 1-3 points.
    func trainOnPropagated(_ seeds: Tensor, anchors: Tensor? = nil, data: FeatureDomains, features x: Tensor, labels y: [Int],
                           balanced: Bool, rounds: Int, classes: Int, name: String, rng: inout RNG) throws -> (ClassifierHead, [EpochLog]) {
        guard rounds >= 1 else { throw EngineError.invalidArgument("propagation needs at least 1 round, got \(rounds)") }
        let n = data.target.shape[0]
        let nodes = anchors.map { Tensor.concatenateRows([data.target, $0]) } ?? data.target
        let graph = LabelPropagation.Graph((nodes - data.targetStatistics.mean) / data.targetStatistics.scale)
        var counts = [Double](repeating: 0, count: classes)
        for label in y { counts[label] += 1 }
        func train(_ seeds: Tensor, name: String) throws -> (ClassifierHead, [EpochLog]) {
            var target = LabelPropagation.propagate(seeds, on: graph).rows(0..<n)
            if balanced { target = LabelPropagation.balance(target, proportions: counts) }
            let (head, history, _) = try trainHead(features: Tensor.concatenateRows([x, data.targetAligned]),
                                                   labels: y + target.argmaxRows(), classes: classes, kind: .mlp,
                                                   name: name, rng: &rng)
            return (head, history)
        }
        var trained = try train(seeds, name: name)
        for round in 1..<rounds {
            let predicted = probabilities(trained.0, data.targetAligned)
            let next = anchors == nil ? predicted : Tensor.concatenateRows([predicted, seeds.rows(n..<seeds.shape[0])])
            trained = try train(next, name: "\(name)-\(round + 1)")
        }
        return trained
    }

    /// The target loss of MCC, BNM or SHOT, on a batch of target representations from `target(indices, training, rng)`
    /// (indices nil: every target sample, for SHOT's centroids) classified by `head`.
    func targetObjective(_ method: AdaptationMethod, settings: AdaptationOptions, head: ClassifierHead, targetCount: Int,
                         target: @escaping ([Int]?, Bool, inout RNG) throws -> Variable) -> ExtraLoss {
        var centroidLabels: [Int] = [], labelledEpoch = -1
        return ExtraLoss(modules: []) { h, _, position, rng in
            let idx = self.targetBatch(targetCount, size: h.shape[0], rng: &rng)
            let logits = head.classify(try target(idx, true, &rng))
            switch method {
            case .mcc:
                return Variable.minimumClassConfusionLoss(logits: logits, temperature: settings.mccTemperature) * settings.mccWeight
            case .bnm:
                return Variable.batchNuclearNormLoss(logits: logits) * settings.bnmWeight
            default:
                // SHOT: pseudo-labels from the nearest class centroid, recomputed at the start of every epoch from
                // the current representation (so a resumed run recomputes them exactly as an uninterrupted one).
                if labelledEpoch != position.epoch {
                    var r = RNG(seed: 0)
                    let all = try Autograd.noGrad { try target(nil, false, &r).value }
                    let p = Autograd.noGrad { head.classify(Variable(all)).softmax(axis: -1).value }
                    centroidLabels = self.nearestCentroidLabels(all, p)
                    labelledEpoch = position.epoch
                }
                let im = Variable.informationMaximisationLoss(logits: logits) * settings.shotIMWeight
                return im + Variable.crossEntropy(logits: logits, labels: idx.map { centroidLabels[$0] }) * settings.shotPseudoWeight
            }
        }
    }

    /// `targetObjective` on target features [N, d] (already standardised as the head expects) through `head`'s representation.
    func targetObjective(_ method: AdaptationMethod, settings: AdaptationOptions, head: ClassifierHead,
                         targetFeatures fT: Tensor) -> ExtraLoss {
        targetObjective(method, settings: settings, head: head, targetCount: fT.shape[0]) { idx, training, rng in
            head.representation(Variable(idx.map { fT.gatherRows($0) } ?? fT), training: training, rng: &rng)
        }
    }

    /// Self-training: `settings.pseudoRounds` times, `head`'s confident predictions on the target rows `fTa` join the
    /// labelled rows (`x`, `y`) and a new head is trained on them all (stops early when none is confident).
    func selfTrain(_ head: ClassifierHead, _ history: [EpochLog], features x: Tensor, labels y: [Int], target fTa: Tensor,
                   classes: Int, settings: AdaptationOptions, name: String, rng: inout RNG) throws -> (ClassifierHead, [EpochLog]) {
        var (head, history) = (head, history)
        for round in 0..<settings.pseudoRounds {
            let (idx, pseudo) = confident(probabilities(head, fTa), threshold: settings.pseudoThreshold, classes: classes)
            if idx.isEmpty { break }
            (head, history, _) = try trainHead(features: Tensor.concatenateRows([x, fTa.gatherRows(idx)]), labels: y + pseudo,
                                               classes: classes, kind: .mlp, name: "\(name)-\(round)", rng: &rng)
        }
        return (head, history)
    }

    /// Confident pseudo-labels: rows whose top probability reaches `threshold`, at most as many per class as
    /// the rarest confident class has times two (so one dominant class cannot take over self-training).
    func confident(_ p: Tensor, threshold: Float, classes: Int) -> (indices: [Int], labels: [Int]) {
        let n = p.shape[0]
        var byClass = [[(Int, Float)]](repeating: [], count: classes)
        for i in 0..<n {
            var best = 0
            for c in 1..<classes where p[flat: i * classes + c] > p[flat: i * classes + best] { best = c }
            let conf = p[flat: i * classes + best]
            if conf >= threshold { byClass[best].append((i, conf)) }
        }
        let nonEmpty = byClass.filter { !$0.isEmpty }.map(\.count)
        let cap = max(1, (nonEmpty.min() ?? 0) * 2)
        var idx: [Int] = [], labels: [Int] = []
        for (c, members) in byClass.enumerated() {
            for (i, _) in members.sorted(by: { $0.1 > $1.1 }).prefix(cap) { idx.append(i); labels.append(c) }
        }
        return (idx, labels)
    }

    func coralExtra(head: ClassifierHead, targetFeatures fT: Tensor, weight: Float) -> ExtraLoss {
        ExtraLoss(modules: []) { h, _, _, rng in
            let idx = self.targetBatch(fT.shape[0], size: h.shape[0], rng: &rng)
            let ht = head.representation(Variable(fT.gatherRows(idx)), training: true, rng: &rng)
            return Variable.coralLoss(h, ht) * weight
        }
    }

    /// DANN: a domain discriminator on the representation behind a gradient reversal whose strength ramps up.
    func dannExtra(width: Int, weight: Float, rng: inout RNG, targetCount: Int,
                   target: @escaping ([Int], inout RNG) throws -> Variable) -> ExtraLoss {
        let disc = DomainDiscriminator(inputs: width, rng: &rng)
        return ExtraLoss(modules: [("discriminator", disc)]) { h, _, position, rng in
            let lambda = Float(2 / (1 + Foundation.exp(-10 * position.fraction)) - 1)
            let idx = self.targetBatch(targetCount, size: h.shape[0], rng: &rng)
            let ht = try target(idx, &rng)
            let zs = disc(h.gradientReversal(lambda: lambda)), zt = disc(ht.gradientReversal(lambda: lambda))
            let ls = Variable.binaryCrossEntropy(logits: zs, targets: Tensor(zeros: zs.shape))
            let lt = Variable.binaryCrossEntropy(logits: zt, targets: Tensor(shape: zt.shape, repeating: 1))
            return (ls + lt) * (0.5 * weight)
        }
    }

    /// SHOT's labelling (`obtain_label` in its code): class centroids of the L2-normalised representation
    /// [N, d] weighted by the predictions [N, K], each sample labelled by the nearest centroid in cosine distance
    /// (classes predicted for no sample are left out), then once more with centroids of those hard labels.
    func nearestCentroidLabels(_ representation: Tensor, _ p: Tensor) -> [Int] {
        let (n, d, k) = (representation.shape[0], representation.shape[1], p.shape[1])
        var x = [Double](repeating: 0, count: n * (d + 1))
        for i in 0..<n {
            var norm = 1.0   // SHOT appends a constant 1 before normalising
            for j in 0..<d { let v = Double(representation[flat: i * d + j]); x[i * (d + 1) + j] = v; norm += v * v }
            x[i * (d + 1) + d] = 1
            norm = norm.squareRoot()
            for j in 0...d { x[i * (d + 1) + j] /= norm }
        }
        var weights = (0..<n * k).map { Double(p[flat: $0]) }
        var present = Set(p.argmaxRows())
        var labels = p.argmaxRows()
        for _ in 0..<2 {
            var centroids = [Double](repeating: 0, count: k * (d + 1)), mass = [Double](repeating: 1e-8, count: k)
            for i in 0..<n {
                for c in 0..<k where weights[i * k + c] != 0 {
                    let w = weights[i * k + c]
                    mass[c] += w
                    for j in 0...d { centroids[c * (d + 1) + j] += w * x[i * (d + 1) + j] }
                }
            }
            var norms = [Double](repeating: 0, count: k)
            for c in 0..<k {
                for j in 0...d { centroids[c * (d + 1) + j] /= mass[c] }
                norms[c] = max((0...d).reduce(0) { $0 + centroids[c * (d + 1) + $1] * centroids[c * (d + 1) + $1] }.squareRoot(), 1e-12)
            }
            for i in 0..<n {
                var best = -1, bestSimilarity = -Double.infinity
                for c in 0..<k where present.contains(c) {
                    let dot = (0...d).reduce(0) { $0 + x[i * (d + 1) + $1] * centroids[c * (d + 1) + $1] }
                    if dot / norms[c] > bestSimilarity { bestSimilarity = dot / norms[c]; best = c }
                }
                labels[i] = max(best, 0)
            }
            weights = [Double](repeating: 0, count: n * k)
            for i in 0..<n { weights[i * k + labels[i]] = 1 }
            present = Set(labels)
        }
        return labels
    }

    // MARK: End to end

    /// `goOn`: after source-only (when it runs first), whether the other methods run.
    func adaptEndToEnd(source: LabelledSet<D.Sample>, target: [D.Sample], fS: Tensor, fT: Tensor, test: LabelledSet<D.Sample>?,
                       methods: [AdaptationMethod], settings: AdaptationOptions, evalName: String,
                       goOn: (StrategyResult) -> Bool = { _ in true }) throws -> [StrategyResult] {
        let classes = source.classNames.count
        var results: [StrategyResult] = []
        // `--unfreeze auto`: the depth that fine-tunes the source best (on its validation split) trains every method.
        let search = try options.unfreezeCandidates.map {
            try searchDepth($0, samples: source.samples, labels: source.labels, classes: classes, headKind: .mlp,
                            name: "adapt-e2e-source")
        }
        let depth = search?.chosen ?? options.unfreeze
        /// The head's representation of target samples `idx` through `bb`'s trained blocks (the frozen part's
        /// activations are kept, see `activations`); nil: every target sample, in inference batches with the blocks
        /// in evaluation mode (no BatchNorm statistics updated).
        func targetRepresentation(_ head: ClassifierHead, _ bb: any Backbone<D.Input>) throws -> ([Int]?, Bool, inout RNG) throws -> Variable {
            let first = bb.firstTrainableBlock(unfreezing: depth)
            let acts = try activations(target, through: first, name: "target", backbone: bb)
            func run(_ idx: [Int], _ training: Bool, _ rng: inout RNG) -> Variable {
                let a = Activation.join(idx.map { acts.parts[$0] }, sequences: bb.activationsAreSequences,
                                        rowsPerSample: acts.rowsPerSample)
                return head.representation(bb.forward(a, from: first), training: training, rng: &rng)
            }
            return { idx, training, rng in
                if let idx { return run(idx, training, &rng) }
                bb.train(false)
                defer { bb.train(true) }
                let batches = stride(from: 0, to: target.count, by: self.options.inferenceBatchSize).map { start in
                    run(Array(start..<min(target.count, start + self.options.inferenceBatchSize)), false, &rng)
                }
                return Variable.concatenateRows(batches, rowShape: [head.representationWidth])
            }
        }
        func newHead(_ name: String, _ rng: inout RNG) throws -> (ClassifierHead, [EpochLog]) {
            let trained = try trainHead(features: fS, labels: source.labels, classes: classes, kind: .mlp,
                                        name: "adapt-e2e-probe-\(name)", rng: &rng)
            return (trained.head, trained.history)
        }
        /// `head` and the top blocks of `bb` trained on `samples` (source, or source and pseudo-labelled target).
        func train(_ name: String, _ bb: any Backbone<D.Input>, _ head: ClassifierHead, _ rng: inout RNG,
                   samples: [D.Sample]? = nil, labels: [Int]? = nil, extra: ExtraLoss? = nil) throws -> (model: FineTuned, history: [EpochLog], validation: [Int]) {
            try trainTop(bb, blocks: depth, head: head, samples: samples ?? source.samples,
                         labels: labels ?? source.labels, classes: classes, name: "adapt-e2e-\(name)",
                         rng: &rng, extra: extra)
        }
        func row(_ method: AdaptationMethod, _ tuned: (model: FineTuned, history: [EpochLog], validation: [Int]), probe: [EpochLog],
                 _ start: Date) throws -> StrategyResult {
            result(Strategy(method), .endToEnd, try test.map { try evaluate(tuned.model, $0, name: evalName) }, start,
                   probe + tuned.history, evalName, model: tuned.model.saved(classNames: source.classNames))
        }
        var sourceOnlyModel: FineTuned?
        methods: for method in methods {
            let start = Date()
            var rng = RNG(seed: options.seed)
            switch method {
            case .sourceOnly:
                let (head, probe) = try newHead("source-only", &rng)
                let tuned = try train("source-only", try backboneCopy(), head, &rng)
                sourceOnlyModel = tuned.model
                var r = try row(method, tuned, probe: probe, start)
                // The end-to-end stage's check (`AdaptationSelection.fineTunedChoice`): the source rows fine-tuning
                // held out, through the fine-tuned backbone, standardised with their own statistics.
                let held = tuned.validation
                if held.count >= 2 {
                    let f = try features(tuned.model, held.map { source.samples[$0] }, name: "source held out")
                    r.heldOutNeighbours = AdaptationSelection.neighbourCheck(unadapted(source: f, target: f).source,
                                                                             labels: held.map { source.labels[$0] })
                }
                results.append(r)
                if !goOn(r) { break methods }
            case .coral, .dann:
                let (head, probe) = try newHead(method.rawValue, &rng)
                let bb = try backboneCopy()
                let targetRep = try targetRepresentation(head, bb)
                let extra: ExtraLoss
                if method == .coral {
                    extra = ExtraLoss(modules: []) { h, _, _, rng in
                        let ht = try targetRep(self.targetBatch(target.count, size: h.shape[0], rng: &rng), true, &rng)
                        return Variable.coralLoss(h, ht) * settings.coralWeight
                    }
                } else {
                    extra = dannExtra(width: head.representationWidth, weight: settings.dannWeight, rng: &rng,
                                      targetCount: target.count) { try targetRep($0, true, &$1) }
                }
                results.append(try row(method, try train(method.rawValue, bb, head, &rng, extra: extra), probe: probe, start))
            case .adabn:
                results.append(try adaBN(source: source, target: target, test: test, start: start, evalName: evalName))
            case .pseudo:
                // Self-training end to end: pseudo-label the target with the source-only model, then train on both.
                let teacher: FineTuned
                if let m = sourceOnlyModel {
                    teacher = m
                } else {
                    let (head, _) = try newHead("pseudo-teacher", &rng)
                    teacher = try train("pseudo-teacher", try backboneCopy(), head, &rng).model
                }
                let p = probabilities(teacher.head, try features(teacher, target, name: "target"))
                let (idx, labels) = confident(p, threshold: settings.pseudoThreshold, classes: classes)
                let (head, probe) = try newHead("pseudo", &rng)
                let tuned = try train("pseudo", try backboneCopy(), head, &rng, samples: source.samples + idx.map { target[$0] },
                                      labels: source.labels + labels)
                results.append(try row(method, tuned, probe: probe, start))
            case .propagate:
                continue   // feature level only
            case .mcc, .bnm, .shot:
                // As at the feature level; SHOT keeps the probe's classifier fixed while the blocks and the
                // bottleneck move.
                let (head, probe) = try newHead(method.rawValue, &rng)
                if method == .shot { head.freeze(["fc"]) }
                let bb = try backboneCopy()
                let extra = targetObjective(method, settings: settings, head: head, targetCount: target.count,
                                            target: try targetRepresentation(head, bb))
                results.append(try row(method, try train(method.rawValue, bb, head, &rng, extra: extra), probe: probe, start))
            }
        }
        for i in results.indices { results[i].depthSearch = search }
        return results
    }

    /// AdaBN: every BatchNorm of the backbone re-estimates its statistics on each domain's data. The head is
    /// trained on source features computed with source statistics and applied to target features computed with
    /// target statistics. Without BatchNorm layers only the head's standardisation can adapt: said in a note.
    func adaBN(source: LabelledSet<D.Sample>, target: [D.Sample], test: LabelledSet<D.Sample>?, start: Date,
               evalName: String) throws -> StrategyResult {
        let bb = try backboneCopy()
        let layers = bb.batchNormLayers()
        if layers.isEmpty {
            ProgressReporter.note("adabn: this backbone has no BatchNorm layers; only the head's feature standardisation is re-estimated on the target")
        }
        var order = RNG(seed: options.seed &+ 7)
        func reestimate(on samples: [D.Sample], name: String) throws {
            for (_, bn) in layers { bn.resetRunningStatistics(); bn.momentum = nil; bn.frozenStatistics = false }
            bb.train(true)
            // Shuffled: labelled sets are often stored class by class, and one-class batches would give each layer
            // within-class variances (and normalise the next layers' inputs per class).
            let shuffled = order.permutation(samples.count).map { samples[$0] }
            _ = try runBackbone(shuffled, name: "BatchNorm statistics on \(name)") { input -> [Int] in
                _ = bb.features(input)
                return []
            }
            bb.train(false)
        }
        // Features with the statistics just estimated.
        func currentFeatures(_ samples: [D.Sample], name: String) throws -> Tensor {
            try pooled(samples, name: "features of \(name)", width: bb.featureCount) { bb.features($0) }
        }
        var rng = RNG(seed: options.seed)
        try reestimate(on: source.samples, name: "source")
        let fS = try currentFeatures(source.samples, name: "source (source statistics)")
        let (head, history, _) = try trainHead(features: fS, labels: source.labels, classes: source.classNames.count,
                                               kind: .mlp, name: "adapt-e2e-adabn", rng: &rng)
        try reestimate(on: target, name: "target")
        let fT = try currentFeatures(target, name: "target (target statistics)")
        head.standardise(from: fT)
        let report = try test.map { evaluate(head, try currentFeatures($0.samples, name: "\(evalName) (target statistics)"), $0) }
        let statistics = bb.namedBuffers().reduce(into: [String: Tensor]()) { $0[$1.name] = $1.variable.value }
        return result(.adabn, .endToEnd, report, start, history, evalName,
                      model: SavedModel(kind: .finetuned, head: head, classNames: source.classNames, backbone: statistics))
    }

    // MARK: Oracle

    func oracle(test: LabelledSet<some Any>, fTest: Tensor, settings: AdaptationOptions, evalName: String) throws -> StrategyResult {
        let start = Date()
        var rng = RNG(seed: options.seed)
        let k = max(2, min(settings.oracleFolds, test.classCounts.min() ?? 2))
        let folds = Splits.folds(labels: test.labels, classCount: test.classNames.count, k: k, rng: &rng)
        var predictions = [Int](repeating: 0, count: test.count)
        var history: [EpochLog] = []
        for (i, fold) in folds.enumerated() {
            let held = Set(fold)
            let trainIdx = (0..<test.count).filter { !held.contains($0) }
            let (head, h, _) = try trainHead(features: fTest.gatherRows(trainIdx), labels: trainIdx.map { test.labels[$0] },
                                          classes: test.classNames.count, kind: .mlp, name: "oracle-\(i)", rng: &rng)
            history = h
            for (j, p) in zip(fold, probabilities(head, fTest.gatherRows(fold)).argmaxRows()) { predictions[j] = p }
        }
        let report = ClassificationReport(predictions: predictions, labels: test.labels, classNames: test.classNames)
        return result(.oracle, .features, report, start, history, evalName)
    }
}
