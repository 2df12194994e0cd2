import Foundation
import TransferEngine

// Ops on packed sequences, on the tape.
//
// Sequences are packed: the real tokens [N, D] (N = Σ lengths), sequence after sequence, never padded, inside
// the encoder and between its blocks (see `Activation`). Every token-wise layer (Linear, LayerNorm, GELU) runs
// on them as on any rows; only attention and pooling need the sequence boundaries, given as lengths.

/// Where each sequence starts in the packed rows.
func packedOffsets(_ lengths: [Int]) -> [Int] {
    var offsets = [Int](repeating: 0, count: lengths.count)
    var sum = 0
    for (i, l) in lengths.enumerated() { offsets[i] = sum; sum += l }
    return offsets
}

extension Variable {
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
