import Foundation

/// Scores of an adapted model that need no target labels (Musgrave et al. 2021, "Unsupervised domain adaptation:
/// a reality check"), measured on the unlabelled target set.
public struct LabelFreeScores: Codable, Equatable, Sendable {
    /// Reverse validation (Zhong et al. 2010; used to tune DANN in Ganin et al. 2016): a linear head trained on the
    /// target's pretrained features with this model's target predictions as labels, scored on the labelled source
    /// set (each domain standardised with its own statistics). Target predictions that are consistent with the
    /// source labels transfer back; collapsed or scrambled ones do not.
    public var reverseValidation: Double
    /// Information maximisation on the target: (entropy of the mean prediction - mean entropy of each prediction)
    /// / log K, in [-1, 1]; high when predictions are confident and spread over the classes.
    public var informationMaximisation: Double
    /// Mean entropy of each target prediction / log K (0: certain, 1: uniform).
    public var meanEntropy: Double
    /// Fraction of target samples on which this model and the source-only model of the same level agree.
    public var agreementWithSourceOnly: Double?
    /// Ensemble validation (EnsV, Hu et al. 2024): fraction of target samples on which this model agrees with the
    /// average prediction of every candidate of the run.
    public var ensembleAgreement: Double?
    /// Share of the target predicted as each class (the target's class proportions as this model sees them).
    public var predictedProportions: [Double]
}

/// The rule that picks a run's default adapted model without target labels.
///
/// Ensemble validation (EnsV, Hu et al. 2024): the average prediction of every candidate of the run is taken as
/// the target's pseudo-labels, and the candidate that agrees with it most is chosen; source-only stays unless a
/// method agrees with the ensemble at least `margin` more than it does. Chosen over reverse validation,
/// information maximisation and combinations of them on the development shifts (scripts/adaptation-shifts: the
/// three fixture shifts and their reverse directions, three seeds each, feature level): it had the highest mean
/// gain over source-only and never picked a collapsed or scrambled model, since such a model disagrees with the
/// others. Its known failure: when every method moves the same wrong way (binary sentiment under label shift,
/// where the diversity terms of MCC, BNM and SHOT push predictions towards balanced classes), the ensemble moves
/// with them. The README's table gives every shift.
public enum AdaptationSelection {
    /// An adapted model replaces source-only only when it agrees with the ensemble at least this much more.
    public static let margin = 0.01

    /// Picks among `results` (those with a model and label-free scores). Returns the identifier and a sentence
    /// saying why.
    public static func choose(_ results: [StrategyResult]) -> (identifier: String, reason: String)? {
        let candidates = results.filter { $0.model != nil && $0.labelFree?.ensembleAgreement != nil }
        func score(_ r: StrategyResult) -> Double { r.labelFree!.ensembleAgreement! }
        guard let best = candidates.max(by: { score($0) < score($1) }) else { return nil }
        func pct(_ x: Double) -> String { String(format: "%.1f%%", 100 * x) }
        let baseline = candidates.filter { $0.strategy == .sourceOnly }.max { score($0) < score($1) }
        guard let baseline, best.strategy != baseline.strategy else {
            if candidates.count == 1 { return (best.identifier, "\(best.identifier) is the only model with label-free scores") }
            return (best.identifier, "\(best.identifier) agrees most with the average prediction of the \(candidates.count) candidates on the target (\(pct(score(best))))")
        }
        if score(best) >= score(baseline) + margin {
            return (best.identifier, "\(best.identifier) agrees most with the average prediction of the \(candidates.count) candidates on the target (\(pct(score(best))), source-only \(pct(score(baseline)))); chosen without target labels")
        }
        return (baseline.identifier, "no method agrees with the candidates' average prediction \(pct(margin)) more than source-only does (\(pct(score(baseline))); best \(best.identifier) \(pct(score(best)))): keeping source-only")
    }

    /// The "auto" row of a results table: the chosen model's row under the strategy name "auto", with `chosen`
    /// naming it (its model stays saved under its own name).
    public static func autoRow(_ identifier: String, of results: [StrategyResult]) -> StrategyResult {
        var row = results.first { $0.identifier == identifier }!
        row.strategy = .auto
        row.level = nil
        row.chosen = identifier
        row.labelFree = nil
        row.model = nil
        row.alignment = nil
        row.history = []
        return row
    }

    /// (Entropy of the mean prediction - mean entropy) / log K, and mean entropy / log K, of probabilities [N, K].
    public static func informationMaximisation(_ p: Tensor) -> (score: Double, meanEntropy: Double) {
        let n = p.shape[0], k = p.shape[1]
        guard n > 0, k > 1 else { return (0, 0) }
        var mean = [Double](repeating: 0, count: k)
        var entropy = 0.0
        for i in 0..<n {
            for c in 0..<k {
                let v = Double(p[flat: i * k + c])
                mean[c] += v / Double(n)
                if v > 0 { entropy -= v * Foundation.log(v) / Double(n) }
            }
        }
        let meanEntropy = mean.reduce(0) { $1 > 0 ? $0 - $1 * Foundation.log($1) : $0 }
        let scale = Foundation.log(Double(k))
        return ((meanEntropy - entropy) / scale, entropy / scale)
    }
}

extension TransferWorkflows {
    /// Fills `labelFree` of every adaptation result that saved a model, from its predictions on the unlabelled target.
    func scoreWithoutLabels(_ results: inout [StrategyResult], source: LabelledSet<some Any>, fS: Tensor,
                            target: [D.Sample]?, fT: Tensor) throws {
        let classes = source.classNames.count
        var targetPredictions: [String: [Int]] = [:]
        var ensemble: Tensor?
        for i in results.indices {
            guard let model = results[i].model else { continue }
            // A head classifies the target's features as they are; other models need the samples themselves.
            let name = "target through \(results[i].identifier)"
            let p = try model.kind == .head || target == nil ? probabilities(model, features: fT, name: name)
                                                              : probabilities(model, samples: target!, name: name)
            ensemble = ensemble.map { $0 + p } ?? p
            let predicted = p.argmaxRows()
            targetPredictions[results[i].identifier] = predicted
            let (im, entropy) = AdaptationSelection.informationMaximisation(p)
            var proportions = [Double](repeating: 0, count: classes)
            for y in predicted { proportions[y] += 1 / Double(predicted.count) }
            results[i].labelFree = LabelFreeScores(
                reverseValidation: try reverseValidation(pseudoLabels: predicted, fT: fT, source: source, fS: fS),
                informationMaximisation: im, meanEntropy: entropy, agreementWithSourceOnly: nil, ensembleAgreement: nil,
                predictedProportions: proportions)
        }
        let consensus = ensemble?.argmaxRows() ?? []
        for i in results.indices where results[i].labelFree != nil {
            if let mine = targetPredictions[results[i].identifier] {
                results[i].labelFree!.ensembleAgreement = Double(zip(mine, consensus).filter { $0 == $1 }.count) / Double(max(mine.count, 1))
            }
            let baseline = StrategyResult(strategy: .sourceOnly, level: results[i].level, eval: "",
                                          labelsPerClass: nil, report: nil, trainSeconds: 0, history: []).identifier
            guard let mine = targetPredictions[results[i].identifier], let theirs = targetPredictions[baseline] else { continue }
            results[i].labelFree!.agreementWithSourceOnly = Double(zip(mine, theirs).filter { $0 == $1 }.count) / Double(max(mine.count, 1))
        }
    }

    /// Reverse validation: accuracy on the source of a linear head trained on target features labelled by `pseudoLabels`.
    func reverseValidation(pseudoLabels: [Int], fT: Tensor, source: LabelledSet<some Any>, fS: Tensor) throws -> Double {
        var rng = RNG(seed: options.seed &+ 0x7e5e)
        // The head standardises with the target's statistics; source features are moved into the target's
        // coordinates so that each domain is standardised with its own.
        let (head, _, _) = try trainHead(features: fT, labels: pseudoLabels, classes: source.classNames.count, kind: .linear,
                                         name: "reverse-validation", rng: &rng, checkpoint: false, classWeighted: false)
        let aligned = ClassifierHead.align(fS, from: ClassifierHead.statistics(fS), to: ClassifierHead.statistics(fT))
        let predicted = probabilities(head, aligned).argmaxRows()
        return Double(zip(predicted, source.labels).filter { $0 == $1 }.count) / Double(max(source.count, 1))
    }
}
