import Foundation

// Losses: each returns a scalar (shape []) Variable, averaged as PyTorch's default reduction="mean" does.

extension Variable {
    /// Cross-entropy of logits [N, K] against class indices `labels` (N of them, each in 0..<K), exactly as
    /// PyTorch's `F.cross_entropy(logits, labels, weight: classWeights, label_smoothing: labelSmoothing)`.
    ///
    /// With class weights w, every sample counts w[label] and the mean divides by Σ w[label_i]; label smoothing ε
    /// mixes (1 - ε)·NLL with ε/K · Σ_k w_k·(-log p_k), normalised by the same weight sum (PyTorch's definition).
    /// The gradient is (p·Σc - c)/W per row, where c is that weighted, smoothed target.
    public static func crossEntropy(logits: Variable, labels: [Int], labelSmoothing: Float = 0,
                                    classWeights: [Float]? = nil) -> Variable {
        let z = logits
        precondition(z.rank == 2 && z.shape[0] == labels.count,
                     "crossEntropy: shapes \(z.shape) and labels [\(labels.count)] clash (need [N, K] and N labels)")
        let n = z.shape[0], k = z.shape[1]
        precondition(labelSmoothing >= 0 && labelSmoothing <= 1, "crossEntropy: label smoothing \(labelSmoothing) is not in [0, 1]")
        if let classWeights {
            precondition(classWeights.count == k, "crossEntropy: shapes \(z.shape) and class weights [\(classWeights.count)] clash")
        }
        for y in labels { precondition(y >= 0 && y < k, "crossEntropy: label \(y) out of range for \(k) classes") }
        let w = classWeights ?? [Float](repeating: 1, count: k)
        let logP = z.value.logSoftmax(axis: -1)
        let lp = logP.pointer
        var total = 0.0
        let weightSum = labels.reduce(0.0) { $0 + Double(w[$1]) }
        let eps = Double(labelSmoothing)
        for i in 0..<n {
            let row = lp + i * k
            total -= (1 - eps) * Double(w[labels[i]]) * Double(row[labels[i]])
            if eps > 0 {
                var s = 0.0
                for j in 0..<k { s += Double(w[j]) * Double(row[j]) }
                total -= eps / Double(k) * s
            }
        }
        let loss = Tensor(Float(total / weightSum))
        return Autograd.result(loss, [z], record: Autograd.needsGrad(z)) { g in
            let scale = g.scalar / Float(weightSum)
            let smooth = labelSmoothing / Float(k)
            var dz = Tensor(uninitializedShape: z.shape)
            let o = dz.mutablePointer, lp = logP.pointer
            for i in 0..<n {
                let row = lp + i * k, out = o + i * k
                // c_j = smooth·w_j + (1-ε)·w_y·[j == y]
                let cy = (1 - labelSmoothing) * w[labels[i]]
                var cSum = cy
                if smooth > 0 { for j in 0..<k { cSum += smooth * w[j] } }
                for j in 0..<k { out[j] = expf(row[j]) * cSum - smooth * w[j] }
                out[labels[i]] -= cy
                for j in 0..<k { out[j] *= scale }
            }
            z.accumulate(dz)
        }
    }

    /// Binary cross-entropy on logits (PyTorch's `binary_cross_entropy_with_logits`, mean over every element):
    /// max(z, 0) - z·t + log(1 + exp(-|z|)), stable for any z. `targets` in [0, 1], as many as `logits`.
    public static func binaryCrossEntropy(logits: Variable, targets: Tensor) -> Variable {
        let z = logits
        precondition(z.value.count == targets.count,
                     "binaryCrossEntropy: shapes \(z.shape) and targets \(targets.shape) clash")
        let pz = z.value.pointer, pt = targets.pointer, n = z.value.count
        var total = 0.0
        for i in 0..<n {
            let x = pz[i]
            total += Double(max(x, 0) - x * pt[i] + log1pf(expf(-abs(x))))
        }
        let loss = Tensor(Float(total / Double(max(n, 1))))
        return Autograd.result(loss, [z], record: Autograd.needsGrad(z)) { g in
            let scale = g.scalar / Float(max(n, 1))
            var dz = Tensor(uninitializedShape: z.shape)
            let o = dz.mutablePointer, pz = z.value.pointer, pt = targets.pointer
            for i in 0..<n {
                let x = pz[i]
                let s = x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x))
                o[i] = (s - pt[i]) * scale
            }
            z.accumulate(dz)
        }
    }

    /// Mean over every element of (a - b)²; a and b have the same shape. Both may need gradients.
    public static func meanSquaredError(_ a: Variable, _ b: Variable) -> Variable {
        precondition(a.shape == b.shape, "meanSquaredError: shapes \(a.shape) and \(b.shape) clash")
        let n = a.value.count
        var diff = Tensor(uninitializedShape: a.shape)
        let o = diff.mutablePointer, pa = a.value.pointer, pb = b.value.pointer
        var total = 0.0
        for i in 0..<n {
            o[i] = pa[i] - pb[i]
            total += Double(o[i]) * Double(o[i])
        }
        let loss = Tensor(Float(total / Double(max(n, 1))))
        return Autograd.result(loss, [a, b], record: Autograd.needsGrad(a, b)) { g in
            let da = diff * (2 * g.scalar / Float(max(n, 1)))
            if a.requiresGrad { a.accumulate(da) }
            if b.requiresGrad { b.accumulate(-da) }
        }
    }
}
