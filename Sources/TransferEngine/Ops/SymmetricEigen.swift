// Small dense linear algebra in Double: PCA of features and the nuclear norm of a batch of predictions use it.

/// Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations: values descending, vectors as
/// the columns of a row-major [size, size] array.
public func symmetricEigen(_ m: [Double], size n: Int) -> (values: [Double], vectors: [Double]) {
    var a = m
    var v = [Double](repeating: 0, count: n * n)
    for i in 0..<n { v[i * n + i] = 1 }
    for _ in 0..<100 {
        var off = 0.0, diagonal = 0.0
        for i in 0..<n {
            diagonal += a[i * n + i] * a[i * n + i]
            for j in 0..<n where j != i { off += a[i * n + j] * a[i * n + j] }
        }
        if off <= 1e-30 * max(diagonal, 1e-300) { break }
        for p in 0..<n {
            for q in (p + 1)..<max(p + 1, n) where a[p * n + q] != 0 {
                let theta = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q])
                let t = (theta >= 0 ? 1 : -1) / (abs(theta) + (theta * theta + 1).squareRoot())
                let c = 1 / (t * t + 1).squareRoot(), s = t * c
                for k in 0..<n {
                    let akp = a[k * n + p], akq = a[k * n + q]
                    a[k * n + p] = c * akp - s * akq
                    a[k * n + q] = s * akp + c * akq
                }
                for k in 0..<n {
                    let apk = a[p * n + k], aqk = a[q * n + k]
                    a[p * n + k] = c * apk - s * aqk
                    a[q * n + k] = s * apk + c * aqk
                }
                for k in 0..<n {
                    let vkp = v[k * n + p], vkq = v[k * n + q]
                    v[k * n + p] = c * vkp - s * vkq
                    v[k * n + q] = s * vkp + c * vkq
                }
            }
        }
    }
    let order = (0..<n).sorted { a[$0 * n + $0] > a[$1 * n + $1] }
    var vectors = [Double](repeating: 0, count: n * n)
    for (newColumn, old) in order.enumerated() { for k in 0..<n { vectors[k * n + newColumn] = v[k * n + old] } }
    return (order.map { a[$0 * n + $0] }, vectors)
}
