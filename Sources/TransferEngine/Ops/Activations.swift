import Foundation

// Pointwise nonlinearities on the tape. Each is forward + derivative in one place.

extension Variable {
    /// Shared shape of a pointwise op: y = f(x); dx = g * df(x, y).
    @inline(__always)
    func pointwise(_ f: (Float) -> Float, derivative: @escaping (_ x: Float, _ y: Float) -> Float) -> Variable {
        let x = self
        let y = x.value.map(f)
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(uninitializedShape: x.shape)
            let o = dx.mutablePointer, pg = g.pointer, px = x.value.pointer, py = y.pointer
            for i in 0..<dx.count { o[i] = pg[i] * derivative(px[i], py[i]) }
            x.accumulate(dx)
        }
    }

    public func relu() -> Variable { pointwise({ max($0, 0) }, derivative: { x, _ in x > 0 ? 1 : 0 }) }

    public func relu6() -> Variable {
        pointwise({ min(max($0, 0), 6) }, derivative: { x, _ in x > 0 && x < 6 ? 1 : 0 })
    }

    public func leakyRelu(slope: Float = 0.01) -> Variable {
        pointwise({ $0 > 0 ? $0 : slope * $0 }, derivative: { x, _ in x > 0 ? 1 : slope })
    }

    /// Clamp to [low, high]; the gradient passes only strictly inside.
    public func clamp(min low: Float = -.infinity, max high: Float = .infinity) -> Variable {
        pointwise({ Swift.min(Swift.max($0, low), high) }, derivative: { x, _ in x > low && x < high ? 1 : 0 })
    }

    /// Exact GELU, x * Phi(x) with the error function (BERT's).
    public func gelu() -> Variable {
        pointwise({ x in 0.5 * x * (1 + erff(x * 0.70710678118654752)) },
                  derivative: { x, _ in
                      0.5 * (1 + erff(x * 0.70710678118654752)) + x * 0.39894228040143268 * expf(-0.5 * x * x)
                  })
    }

    public func tanh() -> Variable { pointwise({ tanhf($0) }, derivative: { _, y in 1 - y * y }) }

    public func sigmoid() -> Variable {
        pointwise({ x in x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x)) }, derivative: { _, y in y * (1 - y) })
    }

    public func exp() -> Variable { pointwise({ expf($0) }, derivative: { _, y in y }) }

    public func log() -> Variable { pointwise({ logf($0) }, derivative: { x, _ in 1 / x }) }

    public func square() -> Variable { pointwise({ $0 * $0 }, derivative: { x, _ in 2 * x }) }

    public func sqrt() -> Variable { pointwise({ sqrtf($0) }, derivative: { _, y in 0.5 / y }) }
}
