import XCTest
@testable import TransferEngine

/// The adaptation losses: gradient checks (central differences, see GradCheck.swift) and the values they must
/// take on cases worked by hand.
final class AdaptationLossTests: XCTestCase {
    var rng = RNG(seed: 11)

    func testGradients() {
        let logits = randomInput([6, 4], &rng, scale: 1.5)
        print("mcc", checkGradients([logits]) { Variable.minimumClassConfusionLoss(logits: logits) })
        print("bnm", checkGradients([logits]) { Variable.batchNuclearNormLoss(logits: logits) })
        print("im", checkGradients([logits]) { Variable.informationMaximisationLoss(logits: logits) })
        let a = randomInput([5, 3], &rng), b = randomInput([7, 3], &rng)
        print("coral", checkGradients([a, b]) { Variable.coralLoss(a, b) })
        let m = randomInput([7, 3], &rng)
        print("nuclear norm", checkGradients([m]) { m.nuclearNorm() })
        let wide = randomInput([3, 5], &rng)   // rank 3 of 5 columns: zero singular values are left out
        print("nuclear norm, rank-deficient Gram", checkGradients([wide]) { wide.nuclearNorm() })
    }

    func testNuclearNormIsTheSumOfSingularValues() {
        // [[3, 0], [0, -2], [0, 0]] has singular values 3 and 2; a rotation leaves them unchanged.
        let c = Float(cos(0.3)), s = Float(sin(0.3))
        let a = Tensor(shape: [3, 2], scalars: [3, 0, 0, -2, 0, 0]).matmul(Tensor(shape: [2, 2], scalars: [c, -s, s, c]))
        XCTAssertEqual(Variable(a).nuclearNorm().value.scalar, 5, accuracy: 1e-5)
        XCTAssertEqual(Variable(Tensor(zeros: [4, 3])).nuclearNorm().value.scalar, 0)
    }

    func testLossValuesOnWorkedCases() {
        // One-hot, balanced, confident predictions: no class confusion, the largest nuclear norm (sqrt of each class's
        // count), information maximisation at its minimum -log K.
        let big: Float = 40
        let logits = Variable(Tensor(shape: [4, 2], scalars: [big, 0, 0, big, big, 0, 0, big]))
        XCTAssertEqual(Variable.minimumClassConfusionLoss(logits: logits, temperature: 1).value.scalar, 0, accuracy: 1e-5)
        XCTAssertEqual(Variable.batchNuclearNormLoss(logits: logits).value.scalar, -2 * Float(2).squareRoot() / 4, accuracy: 1e-5)
        XCTAssertEqual(Variable.informationMaximisationLoss(logits: logits).value.scalar, -Float(log(2.0)), accuracy: 1e-4)
        // Uniform predictions: every class confused with every other ((K - 1) / K after row normalisation / K... here
        // each row of the normalised matrix is uniform, so the off-diagonal mass is K - 1, divided by K).
        let uniform = Variable(Tensor(zeros: [5, 4]))
        XCTAssertEqual(Variable.minimumClassConfusionLoss(logits: uniform).value.scalar, 3.0 / 4.0, accuracy: 1e-5)
        XCTAssertEqual(Variable.informationMaximisationLoss(logits: uniform).value.scalar, 0, accuracy: 1e-4)
    }
}
