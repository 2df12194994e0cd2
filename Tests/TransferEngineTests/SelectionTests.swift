@testable import TransferEngine
import XCTest

/// The neighbourhood check of the label-free selection rule (`AdaptationSelection.neighbourAgreement`).
final class SelectionTests: XCTestCase {
    /// `perClass` samples of each of `classes` Gaussian clusters in `dimensions` dimensions, centres `spread` apart.
    func clusters(classes: Int, perClass: Int, dimensions: Int, spread: Float, seed: UInt64) -> (Tensor, [Int]) {
        var rng = RNG(seed: seed)
        let centres = (0..<classes).map { _ in (0..<dimensions).map { _ in rng.normal() * spread } }
        var values: [Float] = [], labels: [Int] = []
        for c in 0..<classes {
            for _ in 0..<perClass {
                values += centres[c].map { $0 + rng.normal() }
                labels.append(c)
            }
        }
        return (Tensor(shape: [labels.count, dimensions], scalars: values), labels)
    }

    func testSeparatedClassesAgreeAndShuffledLabelsDoNot() throws {
        let (x, y) = clusters(classes: 4, perClass: 50, dimensions: 16, spread: 3, seed: 1)
        let separated = try XCTUnwrap(AdaptationSelection.neighbourAgreement(x, labels: y))
        XCTAssertGreaterThan(separated, 0.95)
        var rng = RNG(seed: 2)
        let shuffled = rng.permutation(y.count).map { y[$0] }
        let random = try XCTUnwrap(AdaptationSelection.neighbourAgreement(x, labels: shuffled))
        XCTAssertLessThan(abs(random), 0.15, "no better than chance")
        XCTAssertLessThan(random, AdaptationSelection.minimumNeighbourAgreement)
        // Overlapping clusters fall in between.
        let (o, oy) = clusters(classes: 4, perClass: 50, dimensions: 16, spread: 0.35, seed: 3)
        let overlapping = try XCTUnwrap(AdaptationSelection.neighbourAgreement(o, labels: oy))
        XCTAssertGreaterThan(overlapping, random)
        XCTAssertLessThan(overlapping, separated)
    }

    /// Chance is the chance of a random other sample's label: with 90 % of one class, a nearest neighbour that
    /// shares the label 82 % of the time (as random labels would) is no agreement at all.
    func testChanceFollowsTheClassProportions() throws {
        var rng = RNG(seed: 4)
        let x = Tensor(shape: [1000, 8], scalars: (0..<8000).map { _ in rng.normal() })
        let labels = (0..<1000).map { $0 < 900 ? 0 : 1 }
        let agreement = try XCTUnwrap(AdaptationSelection.neighbourAgreement(x, labels: labels))
        XCTAssertLessThan(abs(agreement), 0.2, "random features: about chance even though 82 % of neighbours share the label")
    }

    func testTooLittleToMeasureIsNil() {
        let x = Tensor(shape: [3, 2], scalars: [1, 0, 0, 1, 1, 1])
        XCTAssertNil(AdaptationSelection.neighbourAgreement(x, labels: [0, 0, 0]), "one class")
        XCTAssertNil(AdaptationSelection.neighbourAgreement(x.gatherRows([0]), labels: [0]), "one sample")
        XCTAssertNil(AdaptationSelection.neighbourAgreement(x, labels: [0, 1]), "labels and rows disagree")
    }

    /// Above `neighbourSamples` rows it looks at evenly spaced rows: still measured, the same every time.
    func testLargeSetsAreSubsampledDeterministically() throws {
        let (x, y) = clusters(classes: 2, perClass: AdaptationSelection.neighbourSamples / 2 + 300, dimensions: 16, spread: 3, seed: 5)
        let first = try XCTUnwrap(AdaptationSelection.neighbourAgreement(x, labels: y))
        XCTAssertEqual(first, AdaptationSelection.neighbourAgreement(x, labels: y))
        XCTAssertGreaterThan(first, 0.9)
    }

    /// A candidate with a model and an ensemble agreement `agreement` (the only score `choose` reads).
    func candidate(_ strategy: Strategy, _ agreement: Double, level: AdaptationLevel = .features) -> StrategyResult {
        var rng = RNG(seed: 1)
        let model = SavedModel(kind: .head, head: ClassifierHead(kind: .linear, inputs: 2, classes: 2, rng: &rng), classNames: ["a", "b"])
        var r = StrategyResult(strategy: strategy, level: level, eval: "t", labelsPerClass: nil, report: nil,
                               trainSeconds: 0, history: [], model: model)
        r.labelFree = LabelFreeScores(reverseValidation: 0, informationMaximisation: 0, meanEntropy: 0,
                                      agreementWithSourceOnly: nil, ensembleAgreement: agreement, predictedProportions: [])
        return r
    }

    /// Where a method agrees with the candidates' average clearly more than source-only does, the rule takes
    /// propagate (that average refined on the target's neighbourhoods), whatever propagate's own agreement; where
    /// none does, or the source fails the neighbourhood check, source-only; without propagate, the best method.
    func testPropagateIsChosenWhereTheEnsembleSupportsAdapting() throws {
        let supported = [candidate(.sourceOnly, 0.50), candidate(.dann, 0.80), candidate(.mcc, 0.70), candidate(.propagate, 0.60)]
        let pick = try XCTUnwrap(AdaptationSelection.choose(supported, neighbourAgreement: 0.9))
        XCTAssertEqual(pick.identifier, "propagate-features")
        XCTAssertTrue(pick.reason.contains("dann-features agrees most") && pick.reason.contains("of the 3 candidates")
                      && pick.reason.contains("passed the check"), pick.reason)
        XCTAssertEqual(AdaptationSelection.choose(Array(supported.dropLast()), neighbourAgreement: 0.9)?.identifier, "dann-features")
        let unsupported = [candidate(.sourceOnly, 0.80), candidate(.dann, 0.805), candidate(.propagate, 0.95)]
        XCTAssertEqual(AdaptationSelection.choose(unsupported, neighbourAgreement: 0.9)?.identifier, "source-only-features")
        let gated = try XCTUnwrap(AdaptationSelection.choose(supported, neighbourAgreement: 0.3))
        XCTAssertEqual(gated.identifier, "source-only-features")
        XCTAssertTrue(gated.reason.contains("would have chosen propagate-features"), gated.reason)
    }

    /// The end-to-end stage's check: a one-sided binomial test of the nearest-neighbour hits against chance.
    func testTheHeldOutCheckIsABinomialTestAgainstChance() throws {
        // P(X >= k), X ~ Binomial(n, p), against sums written out.
        XCTAssertEqual(AdaptationSelection.binomialTail(0, of: 5, p: 0.3), 1)
        XCTAssertEqual(AdaptationSelection.binomialTail(5, of: 5, p: 0.5), 1.0 / 32, accuracy: 1e-12)
        XCTAssertEqual(AdaptationSelection.binomialTail(4, of: 5, p: 0.5), 6.0 / 32, accuracy: 1e-12)
        XCTAssertEqual(AdaptationSelection.binomialTail(2, of: 3, p: 0.1), 3 * 0.01 * 0.9 + 0.001, accuracy: 1e-12)
        XCTAssertEqual(AdaptationSelection.binomialTail(6, of: 5, p: 0.5), 0)
        // Separated clusters pass on 20 rows; the same rows with shuffled labels do not; 4 rows cannot pass at all.
        let (x, y) = clusters(classes: 2, perClass: 10, dimensions: 8, spread: 3, seed: 5)
        let separated = try XCTUnwrap(AdaptationSelection.neighbourCheck(x, labels: y))
        XCTAssertEqual(separated.rows, 20)
        XCTAssertTrue(separated.passed, "\(separated)")
        var rng = RNG(seed: 6)
        let shuffled = try XCTUnwrap(AdaptationSelection.neighbourCheck(x, labels: rng.permutation(20).map { y[$0] }))
        XCTAssertFalse(shuffled.passed, "\(shuffled)")
        let few = try XCTUnwrap(AdaptationSelection.neighbourCheck(x.gatherRows([0, 1, 10, 11]), labels: [y[0], y[1], y[10], y[11]]))
        XCTAssertEqual(few.agreement, 1, accuracy: 1e-12)
        XCTAssertFalse(few.passed, "4 rows: \(few)")
    }

    /// Where the source fails the check on the frozen features, the end-to-end candidates decide among themselves:
    /// the best of them when the fine-tuned source-only model's held-out rows pass their check and it agrees with
    /// their average 1 % more than that model; else source-only on the frozen features.
    func testEndToEndCandidatesDecideWhereTheFrozenFeaturesFailTheCheck() throws {
        func results(check: NeighbourCheck?, bnm: Double) -> [StrategyResult] {
            var base = candidate(.sourceOnly, 0.90, level: .endToEnd)
            base.heldOutNeighbours = check
            return [candidate(.sourceOnly, 0.70), candidate(.dann, 0.95), candidate(.propagate, 0.99), base,
                    candidate(.bnm, bnm, level: .endToEnd), candidate(.mcc, 0.905, level: .endToEnd)]
        }
        let passed = NeighbourCheck(agreement: 0.43, rows: 403, pValue: 1e-20)
        let pick = try XCTUnwrap(AdaptationSelection.choose(results(check: passed, bnm: 0.97), neighbourAgreement: 0.36))
        XCTAssertEqual(pick.identifier, "bnm-end-to-end")
        XCTAssertTrue(pick.reason.contains("beyond chance") && pick.reason.contains("of the 3 end-to-end candidates"), pick.reason)
        // Not 1 % above fine-tuned source-only; the check failed; not measured: source-only on the frozen features.
        let close = try XCTUnwrap(AdaptationSelection.choose(results(check: passed, bnm: 0.905), neighbourAgreement: 0.36))
        XCTAssertEqual(close.identifier, "source-only-features", close.reason)
        let failed = NeighbourCheck(agreement: 0.03, rows: 403, pValue: 0.3)
        let noise = try XCTUnwrap(AdaptationSelection.choose(results(check: failed, bnm: 0.97), neighbourAgreement: 0.36))
        XCTAssertEqual(noise.identifier, "source-only-features")
        XCTAssertTrue(noise.reason.contains("no better than chance"), noise.reason)
        XCTAssertEqual(AdaptationSelection.choose(results(check: nil, bnm: 0.97), neighbourAgreement: 0.36)?.identifier, "source-only-features")
        // Where the frozen features pass, the end-to-end rows are ordinary candidates (--level both).
        XCTAssertEqual(AdaptationSelection.choose(results(check: failed, bnm: 0.97), neighbourAgreement: 0.9)?.identifier, "propagate-features")
    }
}
