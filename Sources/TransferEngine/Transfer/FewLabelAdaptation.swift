import Foundation

/// Adaptation with a few labelled target examples besides the unlabelled target: supervised (source and target
/// labels) and semi-supervised (those and the unlabelled target), next to the target-only baseline. Feature level.
extension TransferWorkflows {
    /// Refuses labelled target examples of a single class (the `target-only` model would know one class), and
    /// examples that are also test examples (by content: `cacheKey`, never file names).
    public func checkTargetLabelled(_ labelled: LabelledSet<D.Sample>, test: LabelledSet<D.Sample>?) throws {
        let present = Set(labelled.labels)
        if present.count == 1, let only = present.first {
            throw EngineError.invalidFile(labelled.source, "every labelled target example is of one class ('\(labelled.classNames[only])'): label examples of at least 2 classes")
        }
        guard let test else { return }
        let testKeys = Set(test.samples.map(domain.cacheKey))
        let shared = labelled.samples.filter { testKeys.contains(domain.cacheKey($0)) }
        guard shared.isEmpty else {
            throw EngineError.invalidFile(labelled.source, "\(shared.count) of its samples are also in the target test set \(test.source) (same content, e.g. \(domain.describe(shared[0]))): test examples must never train")
        }
    }

    /// Three rows, each with `labelsPerClass` (nil: every labelled example was used):
    /// - `target-only`: a head (`options.head`, as `extract`) trained on the labelled target examples alone;
    /// - `supervised`: a head trained on the source and the labelled target together, each domain standardised
    ///   with its own statistics (as the adaptation methods do) and the target examples repeated until both
    ///   domains weigh the same in the loss (MME's and FixMatch-style labelled batches are half source, half target);
    /// - `semi`: the supervised head's predictions on the unlabelled target and the labelled target examples (as
    ///   one-hot anchors) propagated along the target's nearest-neighbour graph and balanced to the source's class
    ///   proportions (as `propagate` does without labels), then a head trained on the labelled rows of `supervised`
    ///   and every unlabelled target sample with its propagated label. The target labels anchor the classes that
    ///   unsupervised methods have to guess. When the source's classes do not form neighbourhoods in the features
    ///   (`AdaptationSelection.formsNeighbourhoods`), the supervised head as it is: the target's neighbourhoods are
    ///   not to be trusted there (self-training moved the sentiment shift by -1.5 to +1.2 points at random). Chosen
    ///   on scripts/few-label-shifts over self-training from the supervised head (confident predictions, 3 rounds:
    ///   2.0-2.7 points lower on MNIST -> optdigits, level on the speech voices over 13 seeds) and over the
    ///   supervised loss plus Minimum Class Confusion, which lost 3-5 points to `supervised` on the sentiment shift,
    ///   whose target classes are not balanced (MCC's diversity term assumes they are).
    /// `labelled` is already reduced to `labelsPerClass`; `fL` are its features.
    func adaptWithTargetLabels(source: LabelledSet<D.Sample>, fS: Tensor, fT: Tensor, labelled: LabelledSet<D.Sample>,
                               fL: Tensor, test: LabelledSet<D.Sample>?, fTest: Tensor?, labelsPerClass: Int?,
                               settings: AdaptationOptions, evalName: String) throws -> [StrategyResult] {
        let classes = source.classNames.count
        let tag = "\(labelsPerClass ?? 0)"
        var results: [StrategyResult] = []

        var start = Date()
        var rng = RNG(seed: options.seed &+ 0x7A11)
        let (own, ownHistory, _) = try trainHead(features: fL, labels: labelled.labels, classes: classes, kind: options.head,
                                                 name: "target-only-\(tag)", rng: &rng)
        results.append(result(.targetOnly, .features, test.map { evaluate(own, fTest!, $0) }, start, ownHistory, evalName,
                              model: SavedModel(kind: .head, head: own, classNames: source.classNames)))

        let data = FeatureDomains(source: fS, target: fT, test: fTest)
        let fTa = data.targetAligned
        let fLa = ClassifierHead.align(fL, from: data.targetStatistics, to: data.sourceStatistics)
        let repeats = max(1, Int((Double(fS.shape[0]) / Double(max(fL.shape[0], 1))).rounded()))
        let rows = (0..<repeats).flatMap { _ in 0..<fL.shape[0] }
        let x = Tensor.concatenateRows([fS, fLa.gatherRows(rows)])
        let y = source.labels + rows.map { labelled.labels[$0] }
        start = Date()
        var r = RNG(seed: options.seed &+ 0x5C9E)
        let (supervised, supervisedHistory, _) = try trainHead(features: x, labels: y, classes: classes, kind: .mlp,
                                                               name: "supervised-\(tag)", rng: &r)
        results.append(try headResult(.supervised, supervised, data, aligned: true, test, start, supervisedHistory, evalName,
                                      classNames: source.classNames))
        start = Date()
        // Propagation trusts the target's neighbourhoods; where the source's classes form none (the sentiment
        // sources of the development shifts), semi is the supervised head as it is.
        let agreement = AdaptationSelection.neighbourAgreement(unadapted(source: fS, target: fT).source, labels: source.labels)
        let (head, history) = AdaptationSelection.formsNeighbourhoods(agreement)
            ? try trainOnPropagated(Tensor.concatenateRows([probabilities(supervised, fTa), Tensor(oneHot: labelled.labels, classes: classes)]),
                                    anchors: fL, data: data, features: x, labels: y, balanced: settings.balancePropagatedLabels,
                                    rounds: settings.effectivePropagationRounds,
                                    classes: classes, name: "semi-\(tag)", rng: &r)
            : (supervised, supervisedHistory)
        results.append(try headResult(.semi, head, data, aligned: true, test, start, history, evalName,
                                      classNames: source.classNames))
        for i in results.indices { results[i].labelsPerClass = labelsPerClass }
        return results
    }
}
