import XCTest
@testable import TransferEngine

/// The classifier head's domain-specific standardisation and the trainer's choice of final weights.
final class HeadAndTrainerTests: XCTestCase {
    /// A head trained on source features sees target features moved into the source's coordinates; re-targeted,
    /// it must compute the same logits on the raw target features (that is what an adapted model saves).
    func testRetargetedHeadOnRawFeaturesMatchesHeadOnAlignedFeatures() {
        var rng = RNG(seed: 3)
        let source = rng.normalTensor([40, 6], std: 2) + 1
        var target = rng.normalTensor([30, 6], std: 0.5) + (-3)
        target.withUnsafeMutableBufferPointer { p in for i in 0..<30 { p[i * 6 + 2] = 0 } }  // a dead target feature
        let head = ClassifierHead(kind: .mlp, inputs: 6, classes: 3, hidden: 8, rng: &rng)
        // The head's own statistics differ a little from the whole source set's (as with a validation split).
        head.standardise(from: source.gatherRows(Array(0..<32)))
        let s = ClassifierHead.statistics(source), t = ClassifierHead.statistics(target)
        let aligned = ClassifierHead.align(target, from: t, to: s)
        // Aligned target features have the source's mean on every live feature.
        let alignedMean = ClassifierHead.statistics(aligned).mean.scalars
        for j in [0, 1, 3, 4, 5] { XCTAssertEqual(alignedMean[j], s.mean.scalars[j], accuracy: 1e-4) }
        var r = RNG(seed: 0)
        let before = Autograd.noGrad { head(Variable(aligned), training: false, rng: &r).value }
        XCTAssertNotEqual(before, Autograd.noGrad { head(Variable(target), training: false, rng: &r).value })
        head.retarget(from: t, to: s)
        let after = Autograd.noGrad { head(Variable(target), training: false, rng: &r).value }
        for (a, b) in zip(after.scalars, before.scalars) { XCTAssertEqual(a, b, accuracy: 1e-4 * max(1, abs(b))) }
    }

    /// A run whose validation loss only rises: the best epoch is the first. Early-stopping runs end with the
    /// first epoch's weights; with `restoresBestWeights` off (alignment losses) they end with the last epoch's.
    func testTrainerRestoresTheBestEpochOnlyWhenAsked() throws {
        func train(restoring: Bool) throws -> (final: Float, afterEpochs: [Float]) {
            var rng = RNG(seed: 1)
            let layer = Linear(inputs: 1, outputs: 1, bias: false, rng: &rng)
            var options = TrainOptions()
            options.epochs = 4
            options.batchSize = 4
            options.patience = nil
            options.restoresBestWeights = restoring
            let trainer = Trainer(name: "t", module: layer, groups: [ParameterGroup(module: layer)], options: options)
            var afterEpochs: [Float] = []
            var epoch = 0.0
            let x = Tensor(shape: [4, 1], repeating: 1)
            try trainer.fit(count: 4, rng: &rng, step: { _, _ in
                BatchResult(loss: (layer(Variable(x)) + (-5)).square().mean())
            }, validate: {
                afterEpochs.append(layer.weight.value.scalars[0])
                epoch += 1
                return (epoch, 0)
            })
            return (layer.weight.value.scalars[0], afterEpochs)
        }
        let best = try train(restoring: true), last = try train(restoring: false)
        XCTAssertEqual(best.afterEpochs, last.afterEpochs)
        XCTAssertEqual(best.afterEpochs.count, 4)
        XCTAssertNotEqual(best.afterEpochs[0], best.afterEpochs[3], "training moved the weight")
        XCTAssertEqual(best.final, best.afterEpochs[0])
        XCTAssertEqual(last.final, last.afterEpochs[3])
    }
}
