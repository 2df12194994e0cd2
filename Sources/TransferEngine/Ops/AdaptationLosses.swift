import Foundation

// Losses of the unsupervised adaptation methods, composed from taped ops (gradient-checked in
// AdaptationLossTests) except the nuclear norm, which has its own backward.

extension Variable {
    /// Deep CORAL: ||C_a - C_b||²_F / (4 d²) between the feature covariances of two batches [n, d].
    public static func coralLoss(_ a: Variable, _ b: Variable) -> Variable {
        require(a.rank == 2 && b.rank == 2 && a.shape[1] == b.shape[1], "coralLoss: shapes \(a.shape) and \(b.shape) clash")
        func covariance(_ x: Variable) -> Variable {
            let centred = x - x.mean(axis: 0, keepingDimension: true)
            return centred.matmul(centred, transposeSelf: true) * (1 / Float(max(x.shape[0] - 1, 1)))
        }
        let d = Float(a.shape[1])
        return (covariance(a) - covariance(b)).square().sum() * (1 / (4 * d * d))
    }

    /// Entropy of each row of probabilities given as logits [B, K]: -Σ p log p, shape [B].
    public static func entropy(logits: Variable) -> Variable {
        (logits.softmax(axis: -1) * logits.logSoftmax(axis: -1)).sum(axis: 1) * -1
    }

    /// Minimum Class Confusion (Jin et al. 2020, as in TLlib's `mcc.py`): the off-diagonal mass of the row-normalised
    /// class-correlation matrix of temperature-scaled target predictions, samples weighted by 1 + exp(-entropy)
    /// (confident samples count more), divided by the number of classes.
    public static func minimumClassConfusionLoss(logits: Variable, temperature: Float = 2.5) -> Variable {
        require(logits.rank == 2 && logits.shape[0] > 0, "minimumClassConfusionLoss: logits \(logits.shape) must be [B > 0, K]")
        let (b, k) = (logits.shape[0], logits.shape[1])
        let scaled = logits * (1 / temperature)
        let p = scaled.softmax(axis: -1)
        let h = Variable.entropy(logits: scaled.detached()).value
        var w = h.map { 1 + Foundation.exp(-$0) }
        w = w * (Float(b) / w.sum())
        let weighted = p * Variable(w.reshaped([b, 1]))
        let confusion = weighted.matmul(p, transposeSelf: true)                       // [K, K]
        // + 1e-12: with large logits a class can get exactly zero probability on the whole batch (its row would
        // be 0 / 0).
        let normalised = confusion / (confusion.sum(axis: 1, keepingDimension: true) + 1e-12)
        var identity = Tensor(zeros: [k, k])
        for i in 0..<k { identity[flat: i * k + i] = 1 }
        return (normalised.sum() - (normalised * Variable(identity)).sum()) * (1 / Float(k))
    }

    /// Batch Nuclear-norm Maximisation (Cui et al. 2020): minus the nuclear norm of the batch's softmax matrix
    /// [B, K], divided by B.
    public static func batchNuclearNormLoss(logits: Variable) -> Variable {
        require(logits.rank == 2 && logits.shape[0] > 0, "batchNuclearNormLoss: logits \(logits.shape) must be [B > 0, K]")
        return logits.softmax(axis: -1).nuclearNorm() * (-1 / Float(logits.shape[0]))
    }

    /// SHOT's information maximisation (Liang et al. 2020): mean entropy of each prediction minus the entropy of the
    /// mean prediction (minimised: confident predictions, spread over the classes).
    public static func informationMaximisationLoss(logits: Variable, epsilon: Float = 1e-5) -> Variable {
        require(logits.rank == 2 && logits.shape[0] > 0, "informationMaximisationLoss: logits \(logits.shape) must be [B > 0, K]")
        let meanEntropy = Variable.entropy(logits: logits).mean()
        let meanPrediction = logits.softmax(axis: -1).mean(axis: 0)
        let diversity = (meanPrediction * (meanPrediction + epsilon).log()).sum() * -1
        return meanEntropy - diversity
    }

    /// Nuclear norm (sum of singular values) of a matrix [m, n], from the eigen-decomposition of AᵀA (n x n, small:
    /// the number of classes). Backward: A·V·diag(1/σ)·Vᵀ = U·Vᵀ, over the non-zero singular values.
    public func nuclearNorm() -> Variable {
        require(rank == 2, "nuclearNorm: needs a matrix, got \(shape)")
        let x = self
        let (m, n) = (shape[0], shape[1])
        var gram = [Double](repeating: 0, count: n * n)
        let p = x.value.pointer
        for i in 0..<m { for a in 0..<n { let va = Double(p[i * n + a]); for b in 0..<n { gram[a * n + b] += va * Double(p[i * n + b]) } } }
        let (values, vectors) = symmetricEigen(gram, size: n)
        let sigma = values.map { Swift.max($0, 0).squareRoot() }
        let largest = sigma.max() ?? 0
        let total = sigma.reduce(0, +)
        return Autograd.result(Tensor(Float(total)), [x], record: Autograd.needsGrad(x)) { g in
            // W = V diag(1/σ) Vᵀ over σ > tolerance; dA = g · A W.
            var w = [Double](repeating: 0, count: n * n)
            for (j, s) in sigma.enumerated() where s > 1e-6 * Swift.max(largest, 1e-30) {
                for a in 0..<n { for b in 0..<n { w[a * n + b] += vectors[a * n + j] * vectors[b * n + j] / s } }
            }
            var dx = Tensor(zeros: [m, n])
            let o = dx.mutablePointer, scale = Double(g.scalar)
            for i in 0..<m {
                for b in 0..<n {
                    var s = 0.0
                    for a in 0..<n { s += Double(p[i * n + a]) * w[a * n + b] }
                    o[i * n + b] = Float(scale * s)
                }
            }
            x.accumulate(dx)
        }
    }
}
