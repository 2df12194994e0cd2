// Shape manipulation on the tape.

extension Tensor {
    /// Reorders axes: result dimension i is input dimension `axes[i]`.
    public func permuted(_ axes: [Int]) -> Tensor {
        precondition(axes.sorted() == Array(0..<rank), "permute: \(axes) is not a permutation of the axes of \(shape)")
        let outShape = axes.map { shape[$0] }
        var inStrides = [Int](repeating: 1, count: rank)
        for i in stride(from: rank - 2, through: 0, by: -1) { inStrides[i] = inStrides[i + 1] * shape[i + 1] }
        let strides = axes.map { inStrides[$0] }
        var out = Tensor(uninitializedShape: outShape)
        let o = out.mutablePointer, p = pointer
        let n = count
        guard n > 0 else { return out }
        // Innermost dimension copied in a tight loop; the rest walked with an odometer.
        let last = rank - 1, len = outShape[last], st = strides[last]
        var idx = [Int](repeating: 0, count: rank)
        var src = 0, i = 0
        while i < n {
            for j in 0..<len { o[i + j] = p[src + j * st] }
            i += len
            var d = last - 1
            while d >= 0 {
                idx[d] += 1; src += strides[d]
                if idx[d] < outShape[d] { break }
                src -= strides[d] * outShape[d]; idx[d] = 0
                d -= 1
            }
        }
        return out
    }
}

extension Variable {
    public func reshaped(_ shape: [Int]) -> Variable {
        let x = self
        return Autograd.result(x.value.reshaped(shape), [x], record: Autograd.needsGrad(x)) { g in
            x.accumulate(g.reshaped(x.shape))
        }
    }

    public func permuted(_ axes: [Int]) -> Variable {
        let x = self
        var inverse = [Int](repeating: 0, count: axes.count)
        for (i, a) in axes.enumerated() { inverse[a] = i }
        return Autograd.result(x.value.permuted(axes), [x], record: Autograd.needsGrad(x)) { g in
            x.accumulate(g.permuted(inverse))
        }
    }

    /// Concatenation along the first axis (`rowShape`: see `Tensor.concatenateRows`).
    public static func concatenateRows(_ parts: [Variable], rowShape: [Int]? = nil) -> Variable {
        let y = Tensor.concatenateRows(parts.map(\.value), rowShape: rowShape)
        return Autograd.result(y, parts, record: Autograd.needsGrad(parts)) { g in
            var start = 0
            for p in parts {
                let rows = p.shape[0]
                if p.requiresGrad { p.accumulate(g.rows(start..<start + rows)) }
                start += rows
            }
        }
    }

    /// Rows `range` of the first axis.
    public func rows(_ range: Range<Int>) -> Variable {
        let x = self
        return Autograd.result(x.value.rows(range), [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(zeros: x.shape)
            let inner = x.shape[0] == 0 ? 0 : x.value.count / x.shape[0]
            (dx.mutablePointer + range.lowerBound * inner).update(from: g.pointer, count: g.count)
            x.accumulate(dx)
        }
    }
}
