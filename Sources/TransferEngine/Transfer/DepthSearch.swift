import Foundation

/// How many top blocks `--unfreeze auto` trained. Every candidate depth is fine-tuned on four fifths of the
/// labelled training data and scored on the fifth held out (never a test set). The default depth stays unless
/// the most accurate depth beats it on the held-out samples by more than chance would (McNemar's test on the
/// samples one gets right and the other wrong, p < 0.05): with a few hundred held-out samples, depths one or two
/// points apart cannot be told apart, and moving on such evidence is moving at random.
public struct DepthSearch: Codable, Sendable, Equatable {
    public struct Point: Codable, Sendable, Equatable {
        public var blocks: Int
        /// Accuracy on the held-out fifth.
        public var validationAccuracy: Double
        /// Mean cross-entropy on the held-out fifth (breaks ties of accuracy).
        public var validationLoss: Double
        /// On the test set when one was given: reported next to the curve, never used to choose.
        public var testAccuracy: Double?
    }
    public var curve: [Point]
    /// The depth the command would train without `auto` (`WorkflowOptions.unfreeze`, capped at the block count).
    public var defaultBlocks: Int
    /// The most accurate depth on the held-out samples (then the lower loss, then the shallower).
    public var best: Int
    /// McNemar's two-sided p-value, best against the default on the held-out samples (nil when they are the same).
    public var pValue: Double?
    /// The depth trained: `best` when p < `significance`, else `defaultBlocks`.
    public var chosen: Int

    /// The depths `--unfreeze auto` tries (capped at the backbone's block count): 0 (the head alone) to 4.
    public static let candidates = [0, 1, 2, 3, 4]
    /// `--unfreeze auto` needs this many labelled samples (a fifth of them is held out to score the depths).
    static let minimumSamples = 50

    static func tooFew(_ count: Int) -> EngineError {
        .invalidArgument("--unfreeze auto chooses the depth on labelled samples held out from training, and \(count) samples are too few (it needs \(minimumSamples)); give a number of blocks instead")
    }

    /// Refuses too few samples, before any training.
    static func checkEnough(_ count: Int) throws { if count < minimumSamples { throw tooFew(count) } }

    /// The share of the labelled samples held out to score the depths (Keras's customary validation_split).
    public static let heldOutFraction = 0.2
    public static let significance = 0.05

    /// One line for the console: each depth's held-out accuracy and the choice.
    public var summary: String {
        var line = "--unfreeze auto: held-out accuracy (loss) "
            + curve.map { String(format: "%d %@ %.3f (%.3f)", $0.blocks, $0.blocks == 1 ? "block" : "blocks", $0.validationAccuracy, $0.validationLoss) }.joined(separator: ", ")
        if let p = pValue {
            line += String(format: "; best %d vs default %d: McNemar p = %.3g, ", best, defaultBlocks, p)
                + (chosen == best ? "chose \(best)" : "kept \(defaultBlocks)")
        } else {
            line += "; chose \(chosen)"
        }
        if curve.allSatisfy({ $0.testAccuracy != nil }) {
            line += " (test of the four-fifths models, reported only: " + curve.map { String(format: "%.3f", $0.testAccuracy!) }.joined(separator: ", ") + ")"
        }
        return line
    }

    /// Two-sided p-value of McNemar's test with continuity correction: `b` samples only the first model gets right,
    /// `c` only the second.
    public static func mcNemar(_ b: Int, _ c: Int) -> Double {
        guard b + c > 0 else { return 1 }
        let d = max(Double(abs(b - c)) - 1, 0)
        let chi2 = d * d / Double(b + c)
        return erfc((chi2 / 2).squareRoot())   // chi-square with 1 degree of freedom
    }
}

extension TransferWorkflows {
    /// `--unfreeze auto`: a fifth of the labelled samples (stratified, seeded) is held out; on the rest a probe
    /// head is trained and, from a copy of it, `trainTop` at every candidate depth (capped at the block count),
    /// each with the same random state. The held-out fifth, which neither the probe nor any depth trained or
    /// stopped on, scores them (see `DepthSearch` for the rule). The caller trains the final model at the chosen
    /// depth on all the samples, as `--unfreeze <depth>` would. Each depth's accuracy on `reportingOn` is only
    /// reported.
    func searchDepth(_ candidates: [Int], samples: [D.Sample], labels: [Int], classes: Int, headKind: ClassifierHead.Kind,
                     name: String, reportingOn test: LabelledSet<D.Sample>? = nil) throws -> DepthSearch {
        var rng = RNG(seed: options.seed &+ 0xDE97)
        let (fit, held) = Splits.trainValidation(labels: labels, classCount: classes, fraction: DepthSearch.heldOutFraction, rng: &rng)
        try DepthSearch.checkEnough(labels.count)
        guard !held.isEmpty else { throw DepthSearch.tooFew(labels.count) }
        let blocks = try pretrainedBackbone().blocks.count
        let depths = Array(Set(candidates.map { min(max($0, 0), blocks) })).sorted()
        let defaultBlocks = min(options.unfreeze, blocks)
        let fitSamples = fit.map { samples[$0] }, fitLabels = fit.map { labels[$0] }
        let heldSamples = held.map { samples[$0] }, y = held.map { labels[$0] }
        let probe = try trainHead(features: try features(fitSamples, name: "depth search"), labels: fitLabels, classes: classes,
                                  kind: headKind, name: "\(name)-depth-probe", rng: &rng).head.stateDict()
        var curve: [DepthSearch.Point] = [], correct: [Int: [Bool]] = [:]
        for depth in Array(Set(depths + [defaultBlocks])).sorted() {
            var r = rng
            var unused = RNG(seed: 0)   // the probe's weights replace these
            let h = ClassifierHead(kind: headKind, inputs: try featureWidth(), classes: classes, rng: &unused)
            try h.load(probe, source: "probe head")
            let tuned = try trainTop(try backboneCopy(), blocks: depth, head: h, samples: fitSamples, labels: fitLabels, classes: classes,
                                     name: "\(name)-depth-\(depth)", rng: &r)
            let p = probabilities(tuned.model.head, try features(tuned.model, heldSamples, name: "held-out samples at depth \(depth)"))
            correct[depth] = zip(p.argmaxRows(), y).map { $0 == $1 }
            let accuracy = Double(correct[depth]!.filter { $0 }.count) / Double(y.count)
            let loss = y.enumerated().reduce(0.0) { $0 - Foundation.log(max(Double(p[flat: $1.offset * classes + $1.element]), 1e-12)) } / Double(y.count)
            let tested = try test.map { try evaluate(tuned.model, $0, name: "test at depth \(depth)").accuracy }
            curve.append(.init(blocks: depth, validationAccuracy: accuracy, validationLoss: loss, testAccuracy: tested))
        }
        let best = curve.max { a, b in
            (a.validationAccuracy, -a.validationLoss, -a.blocks) < (b.validationAccuracy, -b.validationLoss, -b.blocks)
        }!.blocks
        guard best != defaultBlocks else {
            return DepthSearch(curve: curve, defaultBlocks: defaultBlocks, best: best, pValue: nil, chosen: best)
        }
        let pairs = zip(correct[best]!, correct[defaultBlocks]!)
        let p = DepthSearch.mcNemar(pairs.filter { $0 && !$1 }.count, pairs.filter { !$0 && $1 }.count)
        return DepthSearch(curve: curve, defaultBlocks: defaultBlocks, best: best, pValue: p,
                           chosen: p < DepthSearch.significance ? best : defaultBlocks)
    }
}
