import Foundation
import TransferEngine

// Ops between padded batches of sequences and packed tokens, on the tape.
//
// Inside the encoder every token-wise layer (Linear, LayerNorm, GELU) runs on the packed real tokens [N, D]
// (N = Σ lengths), so padding costs nothing whatever the batch order; only attention needs the sequence
// boundaries, and `Variable.packedSelfAttention` takes them as lengths. Between blocks the workflows see the
// padded [B, T, D] form with lengths (see `Activation`).

/// Where each sequence starts in the packed rows.
func packedOffsets(_ lengths: [Int]) -> [Int] {
    var offsets = [Int](repeating: 0, count: lengths.count)
    var sum = 0
    for (i, l) in lengths.enumerated() { offsets[i] = sum; sum += l }
    return offsets
}

extension Tensor {
    /// Copies rows: for every (from, to, count) block, `count` rows of `width` floats.
    fileprivate func copyRows(into out: inout Tensor, width: Int, _ blocks: [(from: Int, to: Int, count: Int)]) {
        withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for b in blocks where b.count > 0 {
                    (dst.baseAddress! + b.to * width).update(from: src.baseAddress! + b.from * width, count: b.count * width)
                }
            }
        }
    }
}

extension Variable {
    /// [B, T, D] padded -> [Σ lengths, D]: the first `lengths[b]` rows of every sequence, in order.
    func packed(lengths: [Int]) -> Variable {
        let x = self
        precondition(x.rank == 3 && x.shape[0] == lengths.count, "packed: shape \(x.shape) clashes with \(lengths.count) lengths")
        let t = x.shape[1], d = x.shape[2], n = lengths.reduce(0, +)
        precondition(lengths.allSatisfy { $0 <= t }, "packed: a length exceeds the \(t) positions of \(x.shape)")
        if n == lengths.count * t { return x.reshaped([n, d]) }
        let offsets = packedOffsets(lengths)
        let blocks = lengths.indices.map { (from: $0 * t, to: offsets[$0], count: lengths[$0]) }
        var y = Tensor(uninitializedShape: [n, d])
        x.value.copyRows(into: &y, width: d, blocks)
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(zeros: x.shape)
            g.copyRows(into: &dx, width: d, blocks.map { (from: $0.to, to: $0.from, count: $0.count) })
            x.accumulate(dx)
        }
    }

    /// [Σ lengths, D] packed -> [B, T, D] with zero padding after each sequence.
    func unpacked(lengths: [Int], length t: Int) -> Variable {
        let x = self
        let d = x.shape[1], n = lengths.reduce(0, +)
        precondition(x.rank == 2 && x.shape[0] == n, "unpacked: shape \(x.shape) clashes with lengths summing to \(n)")
        if n == lengths.count * t { return x.reshaped([lengths.count, t, d]) }
        let offsets = packedOffsets(lengths)
        let blocks = lengths.indices.map { (from: offsets[$0], to: $0 * t, count: lengths[$0]) }
        var y = Tensor(zeros: [lengths.count, t, d])
        x.value.copyRows(into: &y, width: d, blocks)
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(uninitializedShape: x.shape)
            g.copyRows(into: &dx, width: d, blocks.map { (from: $0.to, to: $0.from, count: $0.count) })
            x.accumulate(dx)
        }
    }

    /// Mean over each sequence's rows of packed [Σ lengths, D] -> [B, D] (sentence-transformers' mean pooling).
    func meanPooled(lengths: [Int]) -> Variable {
        let x = self
        let d = x.shape[1]
        precondition(x.rank == 2 && x.shape[0] == lengths.reduce(0, +), "meanPooled: shape \(x.shape) clashes with the lengths")
        let offsets = packedOffsets(lengths)
        var y = Tensor(zeros: [lengths.count, d])
        x.value.withUnsafeBufferPointer { px in
            y.withUnsafeMutableBufferPointer { py in
                for (b, l) in lengths.enumerated() where l > 0 {
                    let out = py.baseAddress! + b * d
                    for r in offsets[b]..<offsets[b] + l {
                        let row = px.baseAddress! + r * d
                        for j in 0..<d { out[j] += row[j] }
                    }
                    let inv = 1 / Float(l)
                    for j in 0..<d { out[j] *= inv }
                }
            }
        }
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(uninitializedShape: x.shape)
            g.withUnsafeBufferPointer { pg in
                dx.withUnsafeMutableBufferPointer { pd in
                    for (b, l) in lengths.enumerated() where l > 0 {
                        let inv = 1 / Float(l), src = pg.baseAddress! + b * d
                        for r in offsets[b]..<offsets[b] + l {
                            let row = pd.baseAddress! + r * d
                            for j in 0..<d { row[j] = src[j] * inv }
                        }
                    }
                }
            }
            x.accumulate(dx)
        }
    }

    /// Rows of [B, D] divided by their Euclidean norm (at least `eps`, as torch.nn.functional.normalize).
    func l2Normalized(eps: Float = 1e-12) -> Variable {
        let x = self
        precondition(x.rank == 2, "l2Normalized: shape \(x.shape) is not [B, D]")
        let rows = x.shape[0], d = x.shape[1]
        var norms = [Float](repeating: 0, count: rows)
        var y = Tensor(uninitializedShape: x.shape)
        x.value.withUnsafeBufferPointer { px in
            y.withUnsafeMutableBufferPointer { py in
                for r in 0..<rows {
                    var s: Double = 0
                    for j in 0..<d { let v = Double(px[r * d + j]); s += v * v }
                    let norm = max(Float(s.squareRoot()), eps)
                    norms[r] = norm
                    for j in 0..<d { py[r * d + j] = px[r * d + j] / norm }
                }
            }
        }
        let kept = norms, out = y
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            // dx = (g - y (g·y)) / norm (the clamped branch, norm = eps, is treated the same way).
            var dx = Tensor(uninitializedShape: x.shape)
            out.withUnsafeBufferPointer { py in
                g.withUnsafeBufferPointer { pg in
                    dx.withUnsafeMutableBufferPointer { pd in
                        for r in 0..<rows {
                            var dot: Float = 0
                            for j in 0..<d { dot += pg[r * d + j] * py[r * d + j] }
                            for j in 0..<d { pd[r * d + j] = (pg[r * d + j] - py[r * d + j] * dot) / kept[r] }
                        }
                    }
                }
            }
            x.accumulate(dx)
        }
    }
}
