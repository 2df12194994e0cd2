import XCTest
@testable import TransferEngine

final class BasicOpsGradientTests: XCTestCase {
    var rng = RNG(seed: 1)

    func testArithmeticWithBroadcasting() {
        let a = randomInput([3, 4], &rng), b = randomInput([4], &rng), c = randomInput([3, 1], &rng)
        let d = Variable(rng.uniformTensor([3, 4], 1, 2), requiresGrad: true)
        checkGradients([a, b]) { a + b }
        checkGradients([a, c]) { a - c }
        checkGradients([a, b, c]) { a * b * c }
        checkGradients([a, d]) { a / d }
        checkGradients([a]) { -(a * 3 + 1) }
        // Gradient reversal is deliberately not a true gradient: identity forward, -lambda times backward.
        let r = Variable(rng.normalTensor([3, 4]), requiresGrad: true)
        (r.gradientReversal(lambda: 0.5) * Variable(Tensor(shape: [3, 4], repeating: 2))).sum().backward()
        XCTAssertEqual(r.grad?.scalars, [Float](repeating: -1, count: 12))
    }

    func testActivations() {
        let x = randomInput([5, 7], &rng, scale: 2, margin: 0.1)
        checkGradients([x]) { x.relu() }
        let x6 = randomInput([5, 7], &rng, scale: 4, margin: 0.1, kinks: [0, 6])
        checkGradients([x6]) { x6.relu6() }
        checkGradients([x]) { x.leakyRelu(slope: 0.2) }
        let xc = randomInput([5, 7], &rng, margin: 0.1, kinks: [-0.4, 1.1])
        checkGradients([xc]) { xc.clamp(min: -0.4, max: 1.1) }
        checkGradients([x]) { x.gelu() }
        checkGradients([x]) { x.tanh() }
        checkGradients([x]) { x.sigmoid() }
        checkGradients([x]) { x.exp() }
        checkGradients([x]) { x.square() }
        let p = Variable(rng.uniformTensor([4, 3], 0.5, 2), requiresGrad: true)
        checkGradients([p]) { p.log() }
        checkGradients([p]) { p.sqrt() }
    }

    func testMatmulAllTransposes() {
        for ta in [false, true] {
            for tb in [false, true] {
                let a = randomInput(ta ? [4, 3] : [3, 4], &rng), b = randomInput(tb ? [5, 4] : [4, 5], &rng)
                checkGradients([a, b]) { a.matmul(b, transposeSelf: ta, transposeOther: tb) }
                let ba = randomInput(ta ? [2, 4, 3] : [2, 3, 4], &rng), bb = randomInput(tb ? [2, 5, 4] : [2, 4, 5], &rng)
                checkGradients([ba, bb]) { ba.matmul(bb, transposeSelf: ta, transposeOther: tb) }
            }
        }
        let x = randomInput([2, 3, 4], &rng), w = randomInput([5, 4], &rng), bias = randomInput([5], &rng)
        checkGradients([x, w, bias]) { x.linear(weight: w, bias: bias) }
    }

    func testReductionsAndShapes() {
        let x = randomInput([2, 3, 4], &rng)
        checkGradients([x]) { x.sum() }
        checkGradients([x]) { x.mean() }
        for axis in 0..<3 {
            checkGradients([x]) { x.sum(axis: axis) }
            checkGradients([x]) { x.mean(axis: axis, keepingDimension: true) }
        }
        checkGradients([x]) { x.reshaped([4, 6]) }
        checkGradients([x]) { x.permuted([2, 0, 1]) }
        let y = randomInput([1, 3, 4], &rng)
        checkGradients([x, y]) { Variable.concatenateRows([x, y]) }
        checkGradients([x]) { x.rows(1..<2) }
    }

    func testMatmulMatchesNaiveProduct() {
        let a = rng.normalTensor([7, 5]), b = rng.normalTensor([5, 3])
        let c = a.matmul(b)
        for i in 0..<7 {
            for j in 0..<3 {
                var s: Float = 0
                for k in 0..<5 { s += a[flat: i * 5 + k] * b[flat: k * 3 + j] }
                XCTAssertEqual(c[flat: i * 3 + j], s, accuracy: 1e-5)
            }
        }
    }

    func testShapeClashNamesBothShapes() {
        XCTAssertEqual(Tensor.broadcastShape([2, 3], [3]), [2, 3])
        XCTAssertEqual(Tensor.broadcastShape([2, 1, 4], [3, 1]), [2, 3, 4])
    }

    func testGradientsAccumulateAcrossUses() {
        let x = Variable(Tensor(shape: [2], scalars: [1, 2]), requiresGrad: true)
        (x * x + x).sum().backward()
        XCTAssertEqual(x.grad?.scalars, [3, 5])
        (x * 2).sum().backward()
        XCTAssertEqual(x.grad?.scalars, [5, 7])
    }

    func testNothingRecordedWithoutGradients() {
        let w = Variable(Tensor(shape: [2, 2], repeating: 1))  // frozen
        let x = Variable(Tensor(shape: [1, 2], repeating: 1))
        let y = x.matmul(w).relu()
        XCTAssertFalse(y.requiresGrad)
        XCTAssertNil(y.backwardFunction)
        let p = Variable(Tensor(shape: [2, 2], repeating: 1), requiresGrad: true)
        let z = Autograd.noGrad { x.matmul(p) }
        XCTAssertNil(z.backwardFunction)
    }
}
