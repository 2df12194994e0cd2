import Foundation

/// How different two datasets look on the backbone's features, what the source model takes the target's class
/// mix to be, and the technique that follows from it. Needs no target labels.
public struct DomainDiagnosis: Codable, Sendable {
    public var sourceSamples: Int
    public var targetSamples: Int
    /// Proxy A-distance (Ben-David et al. 2007): 2 (1 - 2 err) for the held-out error `err` of a linear classifier
    /// telling the two sets apart, clipped to [0, 2]. 0: indistinguishable; 2: perfectly separable.
    public var proxyADistance: Double
    /// The domain classifier's error on the half of the (equal-sized) sets it did not train on.
    public var domainClassifierError: Double
    /// Squared maximum mean discrepancy with a Gaussian kernel (bandwidth: the median pairwise distance) on
    /// features standardised with both sets' statistics, on up to `mmdSamples` samples per set.
    public var mmd: Double
    public var classNames: [String]
    /// The source's class proportions (from its labels).
    public var sourceProportions: [Double]
    /// The target's class proportions as a linear head trained on the source predicts them.
    public var predictedTargetProportions: [Double]
    /// Total variation distance between the two proportions above (0 to 1).
    public var proportionShift: Double
    /// How well the source's classes form neighbourhoods in the backbone's features (chance-corrected
    /// nearest-neighbour agreement, `AdaptationSelection.neighbourAgreement`): below
    /// `AdaptationSelection.minimumNeighbourAgreement`, `adapt`'s auto rule does not adapt on the frozen features.
    public var sourceNeighbourAgreement: Double?
    public var recommendation: String

    /// Samples each set needs for a distance worth reporting.
    public static let minimumSamples = 20

    /// Samples per set for the MMD (its cost grows with the square).
    public static let mmdSamples = 400
    /// Samples per set for the domain classifier (equal counts, so chance is 50 %).
    public static let domainSamples = 2000
}

extension TransferWorkflows {
    /// Measures the shift from `source` to `target` on the pretrained backbone's features (cached like any
    /// feature extraction) and recommends a technique. Seeded: the same inputs and seed give the same numbers.
    public func diagnose(source: LabelledSet<D.Sample>, target: [D.Sample]) throws -> DomainDiagnosis {
        guard !target.isEmpty else { throw EngineError.invalidArgument("diagnose: the target set is empty") }
        try source.validateForTraining()
        // The domain classifier trains on half of each set and is scored on the other half: with a handful of
        // samples its error says nothing (4 source and 1 target images gave "the target looks like the source").
        guard min(source.count, target.count) >= DomainDiagnosis.minimumSamples else {
            throw EngineError.invalidArgument("diagnose needs at least \(DomainDiagnosis.minimumSamples) samples in each set to measure how far apart they are (source: \(source.count), target: \(target.count))")
        }
        let fS = try features(source.samples, name: "source"), fT = try features(target, name: "target")
        var rng = RNG(seed: options.seed &+ 0xd1a9)

        // Domain classifier on equal-sized random subsets, trained on one half of each and scored on the other.
        let n = min(fS.shape[0], fT.shape[0], DomainDiagnosis.domainSamples)
        let s = Array(rng.permutation(fS.shape[0]).prefix(n)), t = Array(rng.permutation(fT.shape[0]).prefix(n))
        let half = n / 2
        let error: Double
        if half >= 2 {
            let train = Tensor.concatenateRows([fS.gatherRows(Array(s[..<half])), fT.gatherRows(Array(t[..<half]))])
            let test = Tensor.concatenateRows([fS.gatherRows(Array(s[half...])), fT.gatherRows(Array(t[half...]))])
            let labels = [Int](repeating: 0, count: half) + [Int](repeating: 1, count: half)
            let testLabels = [Int](repeating: 0, count: n - half) + [Int](repeating: 1, count: n - half)
            let (head, _, _) = try trainHead(features: train, labels: labels, classes: 2, kind: .linear, name: "diagnose-domains",
                                             rng: &rng, checkpoint: false)
            let predicted = probabilities(head, test).argmaxRows()
            error = Double(zip(predicted, testLabels).filter { $0 != $1 }.count) / Double(testLabels.count)
        } else {
            error = 0.5
        }
        let pad = min(2, max(0, 2 * (1 - 2 * error)))

        let mmd = Self.gaussianMMD(fS.gatherRows(Array(rng.permutation(fS.shape[0]).prefix(DomainDiagnosis.mmdSamples))),
                                   fT.gatherRows(Array(rng.permutation(fT.shape[0]).prefix(DomainDiagnosis.mmdSamples))))

        // The source model's view of the target's class mix.
        let k = source.classNames.count
        let (head, _, _) = try trainHead(features: fS, labels: source.labels, classes: k, kind: .linear, name: "diagnose-source",
                                         rng: &rng, checkpoint: false)
        var predicted = [Double](repeating: 0, count: k), actual = [Double](repeating: 0, count: k)
        for y in probabilities(head, fT).argmaxRows() { predicted[y] += 1 / Double(fT.shape[0]) }
        for y in source.labels { actual[y] += 1 / Double(source.count) }
        let shift = zip(predicted, actual).reduce(0) { $0 + abs($1.0 - $1.1) } / 2

        let agreement = AdaptationSelection.neighbourAgreement(unadapted(source: fS, target: fT).source, labels: source.labels)
        return DomainDiagnosis(sourceSamples: fS.shape[0], targetSamples: fT.shape[0], proxyADistance: pad,
                               domainClassifierError: error, mmd: mmd, classNames: source.classNames,
                               sourceProportions: actual, predictedTargetProportions: predicted, proportionShift: shift,
                               sourceNeighbourAgreement: agreement,
                               recommendation: Self.recommendation(pad: pad, proportionShift: shift, neighbourAgreement: agreement))
    }

    /// The technique that follows from the measured distance (thresholds: see README, "diagnose").
    static func recommendation(pad: Double, proportionShift: Double, neighbourAgreement: Double?) -> String {
        // Where the source's classes form no neighbourhoods, unsupervised adaptation has nothing to follow.
        let clustered = AdaptationSelection.formsNeighbourhoods(neighbourAgreement)
        var text: String
        switch pad {
        case ..<0.5:
            text = String(format: "the target looks like the source (proxy A-distance %.2f): train on the source as it is (extract, or finetune with enough labels); adaptation has little to align", pad)
        case ..<1.5 where clustered:
            text = String(format: "a moderate shift (proxy A-distance %.2f): run adapt with the target as unlabelled data (its auto default keeps source-only when no method agrees more), and fine-tune the top blocks if you have labels", pad)
        case ..<1.5:
            text = String(format: "a moderate shift (proxy A-distance %.2f): fine-tune the top blocks if you have labels, and label a few target examples (adapt --target-labelled)", pad)
        case _ where clustered:
            text = String(format: "a large shift (proxy A-distance %.2f: the domains are almost perfectly separable): run adapt (auto), and label a few target examples per class, which at this distance is worth more than any unsupervised method", pad)
        default:
            text = String(format: "a large shift (proxy A-distance %.2f: the domains are almost perfectly separable): label a few target examples per class (adapt --target-labelled), which at this distance is worth more than any unsupervised method", pad)
        }
        if !clustered, let agreement = neighbourAgreement, pad >= 0.5 {
            text += String(format: "; unsupervised adaptation on the frozen features has nothing to follow here: the source's classes do not form neighbourhoods in the backbone's features (nearest-neighbour agreement %.2f, below %.2f); adapt's auto (--level auto) fine-tunes the top blocks end to end instead (slower), and keeps source-only unless the fine-tuned features pass their own check and a method there agrees with the others", agreement, AdaptationSelection.minimumNeighbourAgreement)
        }
        if proportionShift > 0.2 && pad < 1.5 {
            text += String(format: "; the source model sees a class mix on the target far from the source's (total variation %.2f): the target's classes may be unbalanced, where MCC, BNM and SHOT (which assume balanced classes) can hurt", proportionShift)
        } else if proportionShift > 0.2 {
            text += String(format: "; the source model sees a class mix on the target far from the source's (total variation %.2f), but at this distance its predictions there are unreliable: the numbers cannot tell a different class mix from a model that misreads the target", proportionShift)
        }
        return text
    }

    /// Biased squared MMD with a Gaussian kernel whose bandwidth is the median pairwise squared distance, on rows
    /// standardised with the pooled mean and deviation.
    static func gaussianMMD(_ a: Tensor, _ b: Tensor) -> Double {
        let both = Tensor.concatenateRows([a, b])
        let (mean, scale) = ClassifierHead.statistics(both)
        let x = (both - mean) / scale
        let n = x.shape[0], na = a.shape[0], d = x.shape[1]
        guard na > 0, n > na else { return 0 }
        let v = x.scalars
        var distances = [Double](repeating: 0, count: n * n)
        for i in 0..<n {
            for j in (i + 1)..<n {
                var s = 0.0
                for c in 0..<d { let e = Double(v[i * d + c] - v[j * d + c]); s += e * e }
                distances[i * n + j] = s
                distances[j * n + i] = s
            }
        }
        var offDiagonal: [Double] = []
        for i in 0..<n { for j in (i + 1)..<n { offDiagonal.append(distances[i * n + j]) } }
        offDiagonal.sort()
        let bandwidth = max(offDiagonal.isEmpty ? 1 : offDiagonal[offDiagonal.count / 2], 1e-12)
        var kaa = 0.0, kbb = 0.0, kab = 0.0
        for i in 0..<n {
            for j in 0..<n {
                let k = Foundation.exp(-distances[i * n + j] / bandwidth)
                switch (i < na, j < na) {
                case (true, true): kaa += k
                case (false, false): kbb += k
                default: kab += k
                }
            }
        }
        let nb = n - na
        return kaa / Double(na * na) + kbb / Double(nb * nb) - kab / Double(na * nb)
    }
}
