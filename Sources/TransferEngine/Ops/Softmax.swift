import Foundation

// Softmax and log-softmax on the tape, stable (the row maximum is subtracted before exponentiating).

extension Tensor {
    /// Softmax along `axis` (a raw kernel, also used by the losses).
    public func softmax(axis: Int = -1) -> Tensor {
        let (outer, length, inner, _) = around(axis)
        var out = Tensor(uninitializedShape: shape)
        let p = pointer, o = out.mutablePointer
        Parallel.forEach(outer, minimumChunk: max(1, 8192 / max(length * inner, 1))) { range in
            for i in range {
                for j in 0..<inner {
                    let base = i * length * inner + j
                    softmaxLine(p + base, o + base, length, inner)
                }
            }
        }
        return out
    }

    /// log(softmax(x)) along `axis`, computed as x - max - log Σ exp(x - max).
    public func logSoftmax(axis: Int = -1) -> Tensor {
        let (outer, length, inner, _) = around(axis)
        var out = Tensor(uninitializedShape: shape)
        let p = pointer, o = out.mutablePointer
        Parallel.forEach(outer, minimumChunk: max(1, 8192 / max(length * inner, 1))) { range in
            for i in range {
                for j in 0..<inner {
                    let x = p + i * length * inner + j, y = o + i * length * inner + j
                    var m = -Float.infinity
                    for l in 0..<length { m = max(m, x[l * inner]) }
                    var s: Float = 0
                    for l in 0..<length { s += expf(x[l * inner] - m) }
                    let shift = m + logf(s)
                    for l in 0..<length { y[l * inner] = x[l * inner] - shift }
                }
            }
        }
        return out
    }
}

/// Softmax of `n` values `stride` apart, from `x` into `y` (which may alias `x`).
@inline(__always)
func softmaxLine(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int, _ stride: Int = 1) {
    var m = -Float.infinity
    for l in 0..<n { m = max(m, x[l * stride]) }
    var s: Float = 0
    for l in 0..<n {
        let e = expf(x[l * stride] - m)
        y[l * stride] = e
        s += e
    }
    let r = 1 / s
    for l in 0..<n { y[l * stride] *= r }
}

extension Variable {
    /// Softmax along `axis` (default: the last, i.e. the classes of [N, K] logits). Same shape as the input.
    public func softmax(axis: Int = -1) -> Variable {
        let x = self
        let y = x.value.softmax(axis: axis)
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            // dx = y ⊙ (g - Σ g⊙y) along the axis.
            let (outer, length, inner, _) = y.around(axis)
            var dx = Tensor(uninitializedShape: y.shape)
            let py = y.pointer, pg = g.pointer, o = dx.mutablePointer
            for i in 0..<outer {
                for j in 0..<inner {
                    let base = i * length * inner + j
                    var dot: Float = 0
                    for l in 0..<length { dot += pg[base + l * inner] * py[base + l * inner] }
                    for l in 0..<length { o[base + l * inner] = py[base + l * inner] * (pg[base + l * inner] - dot) }
                }
            }
            x.accumulate(dx)
        }
    }

    /// log(softmax(x)) along `axis`, without overflow for large logits. Same shape as the input.
    public func logSoftmax(axis: Int = -1) -> Variable {
        let x = self
        let y = x.value.logSoftmax(axis: axis)
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            // dx = g - softmax ⊙ Σ g along the axis; softmax = exp(y).
            let (outer, length, inner, _) = y.around(axis)
            var dx = Tensor(uninitializedShape: y.shape)
            let py = y.pointer, pg = g.pointer, o = dx.mutablePointer
            for i in 0..<outer {
                for j in 0..<inner {
                    let base = i * length * inner + j
                    var s: Float = 0
                    for l in 0..<length { s += pg[base + l * inner] }
                    for l in 0..<length { o[base + l * inner] = pg[base + l * inner] - expf(py[base + l * inner]) * s }
                }
            }
            x.accumulate(dx)
        }
    }
}
