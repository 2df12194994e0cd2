import XCTest
@testable import TransferEngine

/// The C kernels behind ReLU-like clamps and BatchNorm on batch statistics compute, in wide vectors, exactly what
/// the engine's scalar Swift loops computed (same operations in the same order, no fused multiply-adds): compared
/// bit for bit with those formulas, on a channel count with whole vectors and a scalar tail (19 = 16 + 3 = 2 x 8 + 3).
final class TrainingKernelTests: XCTestCase {
    var rng = RNG(seed: 17)

    func testClampsMatchTheScalarFormulasBitForBit() {
        var values = rng.normalTensor([7, 19], std: 4).scalars
        values[3] = .nan; values[20] = .infinity; values[41] = -.infinity; values[50] = -0.0; values[60] = 6
        values[70] = 0
        let x = Variable(Tensor(shape: [7, 19], scalars: values), requiresGrad: true)
        let g = rng.normalTensor([7, 19])
        for (name, low, high, y, upper) in [("relu", Float(0), Float.infinity, x.relu(), false),
                                            ("relu6", 0, 6, x.relu6(), true),
                                            ("clamp", -0.4, 1.1, x.clamp(min: -0.4, max: 1.1), true)] {
            x.zeroGrad()
            y.backward(seed: g)
            for i in 0..<values.count {
                let v = values[i]
                let expected = Swift.min(Swift.max(v, low), high)
                XCTAssertEqual(y.value[flat: i].bitPattern, expected.bitPattern, "\(name)(\(v))")
                let passes = v > low && (!upper || v < high)
                XCTAssertEqual(x.grad![flat: i].bitPattern, (passes ? g[flat: i] : 0).bitPattern, "\(name)'(\(v))")
            }
        }
    }

    func testBatchNormMatchesTheScalarFormulasBitForBit() {
        let c = 19, rows = 5 * 7 * 9
        let x = Variable(rng.normalTensor([5, 7, 9, c], std: 3) + 2, requiresGrad: true)
        let w = Variable(rng.normalTensor([c]), requiresGrad: true), b = Variable(rng.normalTensor([c]), requiresGrad: true)
        let g = rng.normalTensor(x.shape)
        let y = x.batchNorm(weight: w, bias: b, runningMean: Variable(Tensor(zeros: [c])),
                            runningVariance: Variable(Tensor(shape: [c], repeating: 1)), useBatchStatistics: true)
        y.backward(seed: g)
        // One chunk of rows per column sum here (rows x c < 32768), so the sums run over the rows in order.
        XCTAssertLessThan(rows * 2 * c, 32768)
        for j in 0..<c {
            var s = 0.0, ss = 0.0, sg = 0.0, sgx = 0.0
            for r in 0..<rows { s += Double(x.value[flat: r * c + j]) }
            let m = s / Double(rows)
            for r in 0..<rows { let d = Double(x.value[flat: r * c + j]) - m; ss += d * d }
            let mean = Float(m), rstd = Float(1 / (ss / Double(rows) + 1e-5).squareRoot())
            let scale = rstd * w.value[flat: j], shift = -mean * scale + b.value[flat: j]
            for r in 0..<rows {
                let i = r * c + j
                XCTAssertEqual(y.value[flat: i].bitPattern, (x.value[flat: i] * scale + shift).bitPattern, "y[\(r), \(j)]")
                sg += Double(g[flat: i])
                sgx += Double(g[flat: i] * (x.value[flat: i] - mean) * rstd)
            }
            XCTAssertEqual(b.grad![flat: j].bitPattern, Float(sg).bitPattern, "dbias[\(j)]")
            XCTAssertEqual(w.grad![flat: j].bitPattern, Float(sgx).bitPattern, "dweight[\(j)]")
            let a = Float(sg / Double(rows)), bb = Float(sgx / Double(rows))
            for r in 0..<rows {
                let i = r * c + j
                let dx = scale * (g[flat: i] - a - (x.value[flat: i] - mean) * rstd * bb)
                XCTAssertEqual(x.grad![flat: i].bitPattern, dx.bitPattern, "dx[\(r), \(j)]")
            }
        }
    }

    /// ReLU and ReLU6 fused into BatchNorm give the bits of BatchNorm followed by the activation: the output and
    /// the gradients of x, weight and bias, on batch statistics and on running ones.
    func testFusedActivationMatchesBatchNormThenActivation() {
        let c = 19
        let x = Variable(rng.normalTensor([3, 5, 7, c], std: 3) + 1, requiresGrad: true)
        let w = Variable(rng.normalTensor([c]), requiresGrad: true), b = Variable(rng.normalTensor([c]) * 4, requiresGrad: true)
        let g = rng.normalTensor(x.shape)
        let rm = Variable(rng.normalTensor([c])), rv = Variable(rng.uniformTensor([c], 0.5, 2))
        for activation in [ClampActivation.relu, .relu6] {
            for batchStatistics in [true, false] {
                func run(fused: Bool) -> [[UInt32]] {
                    for v in [x, w, b] { v.zeroGrad() }
                    var y = x.batchNorm(weight: w, bias: b, runningMean: rm, runningVariance: rv,
                                        useBatchStatistics: batchStatistics, activation: fused ? activation : nil)
                    if !fused { y = activation == .relu ? y.relu() : y.relu6() }
                    y.backward(seed: g)
                    return [y.value, x.grad!, w.grad!, b.grad!].map { $0.scalars.map(\.bitPattern) }
                }
                let (fused, separate) = (run(fused: true), run(fused: false))
                for (k, name) in ["y", "dx", "dweight", "dbias"].enumerated() {
                    XCTAssertEqual(fused[k], separate[k], "\(activation) batch statistics \(batchStatistics): \(name)")
                }
                // Both sides of the activation's kinks are reached.
                XCTAssertTrue(fused[0].contains(0) && fused[0].contains { Float(bitPattern: $0) > 0 })
            }
        }
    }
}
