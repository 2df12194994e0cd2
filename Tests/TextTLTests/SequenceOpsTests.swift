import XCTest
import TransferEngine
@testable import TextTL

/// The encoder's sequence ops: packed attention by central differences, mean pooling, L2 normalisation, and the
/// vectorised exact GELU against erf.
final class SequenceOpsTests: XCTestCase {
    var rng = RNG(seed: 11)

    /// Central differences in Double of L = Σ f() ⊙ R against the tape's gradient, on every element.
    func checkGradients(_ inputs: [Variable], tolerance: Double = 1e-2, _ f: () -> Variable,
                        file: StaticString = #filePath, line: UInt = #line) {
        var r = RNG(seed: 3)
        for v in inputs { v.grad = nil }
        let y = f()
        let weights = r.uniformTensor(y.shape, 0.5, 1.5)
        (y * Variable(weights)).sum().backward()
        func loss() -> Double {
            let out = Autograd.noGrad { f() }.value
            return (0..<out.count).reduce(0.0) { $0 + Double(out[flat: $1]) * Double(weights[flat: $1]) }
        }
        var worst = 0.0
        for (k, v) in inputs.enumerated() {
            guard let g = v.grad else { XCTFail("input \(k): no gradient", file: file, line: line); continue }
            for i in 0..<v.value.count {
                let x0 = v.value[flat: i], h: Float = 1e-2
                v.value[flat: i] = x0 + h
                let up = loss()
                v.value[flat: i] = x0 - h
                let down = loss()
                v.value[flat: i] = x0
                let numeric = (up - down) / (2 * Double(h))
                let diff = abs(Double(g[flat: i]) - numeric) / max(1, abs(numeric))
                worst = max(worst, diff)
                XCTAssertLessThan(diff, tolerance, "input \(k) element \(i)", file: file, line: line)
            }
        }
        print("SequenceOpsTests: worst relative gradient difference \(worst)")
    }

    func testPackedAttentionGradients() {
        let lengths = [3, 1, 4]
        let q = Variable(rng.normalTensor([8, 6]), requiresGrad: true)
        let k = Variable(rng.normalTensor([8, 6]), requiresGrad: true)
        let v = Variable(rng.normalTensor([8, 6]), requiresGrad: true)
        checkGradients([q, k, v]) { Variable.packedSelfAttention(query: q, key: k, value: v, heads: 3, lengths: lengths) }
    }

    /// Long sequences take the sequential path (OpenBLAS threads each GEMM); results agree with short ones.
    func testLongAndShortSequencesTogether() {
        let lengths = [100, 7, 93], width = 64, n = 200
        let q = rng.normalTensor([n, width]), k = rng.normalTensor([n, width]), v = rng.normalTensor([n, width])
        let together = Variable.packedSelfAttention(query: Variable(q), key: Variable(k), value: Variable(v), heads: 2, lengths: lengths).value
        var start = 0
        for l in lengths {
            let alone = Variable.packedSelfAttention(query: Variable(q.rows(start..<start + l)), key: Variable(k.rows(start..<start + l)),
                                                     value: Variable(v.rows(start..<start + l)), heads: 2, lengths: [l]).value
            XCTAssertLessThan(alone.maxAbsDifference(together.rows(start..<start + l)), 1e-6, "length \(l)")
            start += l
        }
    }

    func testPoolAndNormaliseGradients() {
        let x = Variable(rng.normalTensor([6, 4]), requiresGrad: true)
        checkGradients([x]) { x.meanPooled(lengths: [2, 3, 1]).l2Normalized() }
        let pooled = Variable(Tensor(shape: [3, 1], scalars: [1, 2, 6])).meanPooled(lengths: [2, 1]).value.scalars
        XCTAssertEqual(pooled, [1.5, 6])
    }

    func testVectorisedGELUMatchesErf() {
        var xs: [Float] = stride(from: -12, through: 12, by: 0.001).map { Float($0) }
        xs += [0, -0.0, 1e-8, -1e-8, 40, -40, 1e4, -1e4, .leastNormalMagnitude]
        let y = Variable(Tensor(shape: [xs.count], scalars: xs)).gelu().value.scalars
        var worst = 0.0
        for (x, v) in zip(xs, y) {
            let exact = 0.5 * Double(x) * (1 + erf(Double(x) / 2.0.squareRoot()))
            let err = abs(Double(v) - exact) / max(1, abs(exact))
            worst = max(worst, err)
        }
        print("SequenceOpsTests: GELU worst relative error \(worst) over \(xs.count) points")
        XCTAssertLessThan(worst, 3e-7)
        // The fused bias form equals gelu(x + b), and its gradients are right.
        let x = Variable(rng.normalTensor([3, 10], std: 2), requiresGrad: true)
        let b = Variable(rng.normalTensor([10]), requiresGrad: true)
        XCTAssertLessThan(x.biasGELU(b).value.maxAbsDifference((x + b).gelu().value), 1e-6)
        checkGradients([x, b]) { x.biasGELU(b) }
        checkGradients([x]) { x.gelu() }
    }

    // MARK: Fused Linear ops (the encoder's layer is four of them)

    func testLinearGELUEqualsLinearThenGELU() {
        var r = RNG(seed: 5)
        let x = Variable(rng.normalTensor([5, 4]), requiresGrad: true)
        let layer = Linear(inputs: 4, outputs: 6, rng: &r)
        XCTAssertLessThan(x.linearGELU(weight: layer.weight, bias: layer.bias!).value.maxAbsDifference(layer(x).gelu().value), 1e-6)
        checkGradients([x, layer.weight, layer.bias!]) { x.linearGELU(weight: layer.weight, bias: layer.bias!) }
    }

    func testLinearResidualLayerNormEqualsItsParts() {
        var r = RNG(seed: 6)
        let x = Variable(rng.normalTensor([5, 4]), requiresGrad: true)
        let residual = Variable(rng.normalTensor([5, 6]), requiresGrad: true)
        let layer = Linear(inputs: 4, outputs: 6, rng: &r)
        let norm = LayerNorm(dimension: 6, eps: 1e-12)
        norm.weight.value = rng.uniformTensor([6], 0.5, 1.5)
        norm.bias.value = rng.normalTensor([6])
        func fused() -> Variable {
            x.linearResidualLayerNorm(weight: layer.weight, bias: layer.bias!, residual: residual, normWeight: norm.weight,
                                      normBias: norm.bias, eps: norm.eps)
        }
        XCTAssertLessThan(fused().value.maxAbsDifference(norm(layer(x) + residual).value), 1e-5)
        checkGradients([x, residual, layer.weight, layer.bias!, norm.weight, norm.bias], fused)
    }

    func testFusedProjectionAttentionEqualsItsParts() {
        var r = RNG(seed: 8)
        let lengths = [3, 1, 4]
        let x = Variable(rng.normalTensor([8, 6]), requiresGrad: true)
        let q = Linear(inputs: 6, outputs: 6, rng: &r), k = Linear(inputs: 6, outputs: 6, rng: &r), v = Linear(inputs: 6, outputs: 6, rng: &r)
        func fused() -> Variable {
            Variable.packedSelfAttention(x, query: (q.weight, q.bias!), key: (k.weight, k.bias!), value: (v.weight, v.bias!),
                                         heads: 2, lengths: lengths)
        }
        let parts = Variable.packedSelfAttention(query: q(x), key: k(x), value: v(x), heads: 2, lengths: lengths)
        XCTAssertLessThan(fused().value.maxAbsDifference(parts.value), 1e-6)
        checkGradients([x, q.weight, q.bias!, k.weight, k.bias!, v.weight, v.bias!], fused)
    }
}
