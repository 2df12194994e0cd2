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
    func candidate(_ strategy: Strategy, _ agreement: Double) -> StrategyResult {
        var rng = RNG(seed: 1)
        let model = SavedModel(kind: .head, head: ClassifierHead(kind: .linear, inputs: 2, classes: 2, rng: &rng), classNames: ["a", "b"])
        var r = StrategyResult(strategy: strategy, level: .features, eval: "t", labelsPerClass: nil, report: nil,
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
}
