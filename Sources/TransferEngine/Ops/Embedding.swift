import Foundation

// Table lookup and dropout on the tape.

extension Variable {
    /// Rows of `table` [V, D] picked by `ids` (each in 0..<V): [ids.count, D], or `shape + [D]` when a leading
    /// shape is given (e.g. [B, T] token ids -> [B, T, D]). The gradient scatter-adds into the table rows, so a
    /// repeated id receives the sum of its gradients.
    public static func embedding(ids: [Int], table: Variable, shape: [Int]? = nil) -> Variable {
        precondition(table.rank == 2, "embedding: table shape \(table.shape) is not [count, dimension]")
        let vocabulary = table.shape[0], d = table.shape[1]
        let lead = shape ?? [ids.count]
        precondition(lead.reduce(1, *) == ids.count, "embedding: shape \(lead) clashes with \(ids.count) ids")
        for i in ids { precondition(i >= 0 && i < vocabulary, "embedding: id \(i) out of range for table \(table.shape)") }
        let y = table.value.gatherRows(ids).reshaped(lead + [d])
        return Autograd.result(y, [table], record: Autograd.needsGrad(table)) { g in
            var dt = Tensor(zeros: table.shape)
            let o = dt.mutablePointer, pg = g.pointer
            for (row, i) in ids.enumerated() {
                let src = pg + row * d, dst = o + i * d
                for j in 0..<d { dst[j] += src[j] }
            }
            table.accumulate(dt)
        }
    }

    /// Inverted dropout: in training, each element is zeroed with probability `rate` and the survivors are scaled
    /// by 1/(1 - rate), so evaluation needs no rescaling; otherwise (or with rate 0) the input itself.
    /// The mask is drawn from `rng`, one draw per element in order, so runs are reproducible.
    public func dropout(rate: Float, rng: inout RNG, training: Bool) -> Variable {
        precondition(rate >= 0 && rate <= 1, "dropout: rate \(rate) is not in [0, 1]")
        guard training && rate > 0 else { return self }
        let x = self
        let keep: Float = rate < 1 ? 1 / (1 - rate) : 0
        var mask = Tensor(uninitializedShape: x.shape)
        let m = mask.mutablePointer
        let threshold = UInt64(Double(rate) * 0x1p53)
        for i in 0..<mask.count { m[i] = rng.next() >> 11 < threshold ? 0 : keep }
        let y = x.value * mask
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in x.accumulate(g * mask) }
    }
}
