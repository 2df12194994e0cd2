import XCTest
@testable import TransferEngine

/// Gradient check by central differences.
///
/// The scalar checked is L = Σ f(inputs) ⊙ R with a fixed random R, so every output element matters. For each
/// input element (all of them, or `samples` chosen at random for big tensors), the numerical derivative
/// (L(x+h) - L(x-h)) / 2h is computed with L accumulated in Double, and compared with the tape's gradient:
/// pass when |analytic - numeric| <= tolerance * max(1, |numeric|). The worst difference is returned so tests
/// can print it. Defaults: h = 1e-2, tolerance = 1e-2 (Float32 forward; rounding error is ~1e-5 relative).
@discardableResult
func checkGradients(_ inputs: [Variable], step: Float = 1e-2, tolerance: Double = 1e-2, samples: Int = 60,
                    seed: UInt64 = 7, file: StaticString = #filePath, line: UInt = #line,
                    _ f: () -> Variable) -> Double {
    var rng = RNG(seed: seed)
    for v in inputs { v.grad = nil }
    let y = f()
    let r = rng.uniformTensor(y.shape, 0.5, 1.5)
    func loss() -> Double {
        let out = Autograd.noGrad { f() }.value
        var s = 0.0
        for i in 0..<out.count { s += Double(out[flat: i]) * Double(r[flat: i]) }
        return s
    }
    (y * Variable(r)).sum().backward()
    var worst = 0.0
    for (k, v) in inputs.enumerated() where v.requiresGrad {
        guard let g = v.grad else {
            XCTFail("input \(k): no gradient reached it", file: file, line: line)
            continue
        }
        XCTAssertEqual(g.shape, v.shape, "input \(k): gradient shape", file: file, line: line)
        let indices = v.value.count <= samples ? Array(0..<v.value.count) : (0..<samples).map { _ in rng.int(below: v.value.count) }
        for i in indices {
            let x0 = v.value[flat: i]
            v.value[flat: i] = x0 + step
            let up = loss()
            v.value[flat: i] = x0 - step
            let down = loss()
            v.value[flat: i] = x0
            let numeric = (up - down) / (2 * Double(step))
            let analytic = Double(g[flat: i])
            let diff = abs(analytic - numeric)
            worst = max(worst, diff / max(1, abs(numeric)))
            if diff > tolerance * max(1, abs(numeric)) {
                XCTFail("input \(k) element \(i): analytic \(analytic) vs numeric \(numeric)", file: file, line: line)
                return worst
            }
        }
    }
    return worst
}

/// A leaf needing a gradient, with random normal values (std `scale`) kept at least `margin` away from every
/// point in `kinks` (non-zero inputs; no finite difference straddles a kink).
func randomInput(_ shape: [Int], _ rng: inout RNG, scale: Float = 1, margin: Float = 0.05,
                 kinks: [Float] = [0]) -> Variable {
    var t = rng.normalTensor(shape, std: scale)
    t.withUnsafeMutableBufferPointer { b in
        for i in b.indices {
            for k in kinks where abs(b[i] - k) < margin { b[i] = k + (b[i] < k ? -margin : margin) * 1.5 }
        }
    }
    return Variable(t, requiresGrad: true)
}
