import Foundation
import TransferEngine

/// Principal component analysis for plots of high-dimensional features (e.g. source vs target features before
/// and after adaptation).
///
/// The covariance is one sgemm; its top eigenvectors come from block power (subspace) iteration with a few
/// spare directions, which converges at the rate of the gap to the first spare one, followed by Rayleigh-Ritz.
/// Deterministic: the start block comes from a fixed seed, and each component's sign is chosen so that its
/// largest-magnitude entry is positive.
public struct PCA: Sendable {
    /// Feature means, shape [D].
    public let mean: Tensor
    /// Unit principal directions, largest variance first, shape [components, D].
    public let components: Tensor
    /// Variance along each component (the covariance's eigenvalues, divisor N-1).
    public let explainedVariance: [Double]
    /// Total variance (trace of the covariance), for explained-variance ratios.
    public let totalVariance: Double

    /// Share of the total variance along each component.
    public var explainedVarianceRatio: [Double] {
        explainedVariance.map { totalVariance > 0 ? $0 / totalVariance : 0 }
    }

    /// Fits to `x` of shape [N, D] (N >= 1 rows of D features; `components` <= D).
    public static func fit(_ x: Tensor, components k: Int = 2) -> PCA {
        precondition(x.rank == 2 && x.shape[0] >= 1, "PCA.fit: shape \(x.shape) is not [N >= 1, D]")
        let n = x.shape[0], d = x.shape[1]
        precondition(k >= 1 && k <= d, "PCA.fit: \(k) components and shape \(x.shape) clash (need 1 <= components <= D)")

        var sums = [Double](repeating: 0, count: d)
        x.withUnsafeBufferPointer { p in
            for i in 0..<n { for j in 0..<d { sums[j] += Double(p[i * d + j]) } }
        }
        let mean = Tensor(shape: [d], scalars: sums.map { Float($0 / Double(n)) })
        // Centre explicitly: X^T X - N mu mu^T would cancel catastrophically in Float when the mean is large.
        let centred = x - mean
        let covariance = centred.matmul(centred, transposeSelf: true) * (1 / Float(max(1, n - 1)))
        var trace = 0.0
        for j in 0..<d { trace += Double(covariance[flat: j * d + j]) }

        let (vectors, values) = topEigenvectors(covariance, dimension: d, count: k)
        var rows: [Float] = []
        for c in 0..<k {
            var column = (0..<d).map { vectors[$0 * k + c] }
            let largest = column.indices.max { abs(column[$0]) < abs(column[$1]) } ?? 0
            if column[largest] < 0 { column = column.map { -$0 } }
            rows += column.map(Float.init)
        }
        return PCA(mean: mean, components: Tensor(shape: [k, d], scalars: rows), explainedVariance: values.map { max(0, $0) }, totalVariance: trace)
    }

    /// Projects `x` of shape [N, D] onto the components: shape [N, components].
    public func transform(_ x: Tensor) -> Tensor {
        let d = mean.count, k = components.shape[0]
        precondition(x.rank == 2 && x.shape[1] == d, "PCA.transform: shapes \(x.shape) and [N, \(d)] clash")
        guard x.shape[0] > 0 else { return Tensor(zeros: [0, k]) }
        // (x - mean) W^T = x W^T - (W mean), without an [N, D] temporary.
        var offset = [Float](repeating: 0, count: k)
        for c in 0..<k {
            var s = 0.0
            for j in 0..<d { s += Double(components[flat: c * d + j]) * Double(mean[flat: j]) }
            offset[c] = Float(s)
        }
        return x.matmul(components, transposeOther: true) - Tensor(shape: [k], scalars: offset)
    }

    // MARK: Eigen solver

    /// Top `count` eigenpairs of the symmetric positive semi-definite `matrix` [D, D]: vectors as a row-major
    /// [D, count] array (columns are the vectors), values descending.
    static func topEigenvectors(_ matrix: Tensor, dimension d: Int, count k: Int,
                                maxIterations: Int = 1000) -> (vectors: [Double], values: [Double]) {
        let p = min(d, k + 8)
        var rng = RNG(seed: 0x5CA1AB1E)
        var q = [Double](repeating: 0, count: d * p)
        for i in q.indices { q[i] = Double(rng.normal()) }
        orthonormalize(&q, rows: d, columns: p, rng: &rng)

        for iteration in 0... {
            let zd = matrix.matmul(Tensor(shape: [d, p], scalars: q.map(Float.init))).scalars.map(Double.init)
            if iteration % 5 == 0 || iteration >= maxIterations {
                // Rayleigh-Ritz: H = Q^T (A Q); Ritz vectors Q V with values theta; residual |A Q v - theta Q v|.
                var h = [Double](repeating: 0, count: p * p)
                for a in 0..<p {
                    for b in 0..<p {
                        var s = 0.0
                        for i in 0..<d { s += q[i * p + a] * zd[i * p + b] }
                        h[a * p + b] = s
                    }
                }
                for a in 0..<p { for b in 0..<a { let m = (h[a * p + b] + h[b * p + a]) / 2; h[a * p + b] = m; h[b * p + a] = m } }
                let (theta, v) = symmetricEigen(h, size: p)
                var vectors = [Double](repeating: 0, count: d * k)
                var worst = 0.0
                for c in 0..<k {
                    var r2 = 0.0
                    for i in 0..<d {
                        var u = 0.0, au = 0.0
                        for a in 0..<p {
                            u += q[i * p + a] * v[a * p + c]
                            au += zd[i * p + a] * v[a * p + c]
                        }
                        vectors[i * k + c] = u
                        r2 += (au - theta[c] * u) * (au - theta[c] * u)
                    }
                    worst = max(worst, r2.squareRoot())
                }
                // Float sgemm limits the attainable residual to about 1e-6 of the largest eigenvalue.
                if worst <= 1e-5 * max(theta[0], 1e-30) || theta[0] <= 0 || iteration >= maxIterations {
                    return (vectors, Array(theta.prefix(k)))
                }
            }
            q = zd
            orthonormalize(&q, rows: d, columns: p, rng: &rng)
        }
        fatalError("unreachable")
    }

    /// Modified Gram-Schmidt (twice, for orthogonality to rounding) on the columns of row-major `a` [rows, columns].
    /// A column that vanishes (rank deficiency) is replaced by a fresh random one.
    static func orthonormalize(_ a: inout [Double], rows: Int, columns: Int, rng: inout RNG) {
        var scale = 0.0
        for v in a { scale = max(scale, abs(v)) }
        for c in 0..<columns {
            var attempts = 0
            while true {
                for _ in 0..<2 {
                    for b in 0..<c {
                        var dot = 0.0
                        for i in 0..<rows { dot += a[i * columns + b] * a[i * columns + c] }
                        for i in 0..<rows { a[i * columns + c] -= dot * a[i * columns + b] }
                    }
                }
                var norm = 0.0
                for i in 0..<rows { norm += a[i * columns + c] * a[i * columns + c] }
                norm = norm.squareRoot()
                if norm > 1e-10 * max(scale, 1e-300) || attempts >= 3 {
                    for i in 0..<rows { a[i * columns + c] /= max(norm, 1e-300) }
                    break
                }
                for i in 0..<rows { a[i * columns + c] = Double(rng.normal()) }
                attempts += 1
                scale = 1
            }
        }
    }

}
