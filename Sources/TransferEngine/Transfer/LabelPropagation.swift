import Foundation

/// Label propagation (Zhou et al. 2004, "Learning with local and global consistency"; used on deep features by
/// Iscen et al. 2019): class scores spread along a k-nearest-neighbour graph of the samples until neighbours agree,
/// F <- alpha S F + (1 - alpha) Y, with S = D^-1/2 W D^-1/2 and W the symmetrised graph (weights: cosine
/// similarity, negative ones cut to 0). It is the cluster assumption used directly: samples in one neighbourhood
/// end up with one label.
public enum LabelPropagation {
    /// Neighbours per sample, the weight of the neighbours against the seeds, and iterations (alpha^50 < 0.01: the
    /// series has converged). Chosen on the development shifts of `scripts/adaptation-shifts`: alpha 0.9 against 0.99.
    public static let neighbours = 10
    public static let alpha = 0.9
    public static let iterations = 50

    /// For each row of `features` [N, d], the `k` other rows most similar to it in cosine similarity, most similar
    /// first (ties: the lower index), with their similarities. Computed in blocks of rows, so memory stays O(N k).
    public static func nearestNeighbours(_ features: Tensor, k: Int) -> [[(index: Int, similarity: Float)]] {
        let n = features.shape[0], d = features.shape[1]
        let k = min(k, n - 1)
        guard n >= 2, k >= 1 else { return Array(repeating: [], count: n) }
        var v = features.scalars
        for i in 0..<n {
            var norm: Float = 0
            for c in 0..<d { norm += v[i * d + c] * v[i * d + c] }
            let inverse = norm > 0 ? 1 / norm.squareRoot() : 0
            for c in 0..<d { v[i * d + c] *= inverse }
        }
        let z = Tensor(shape: [n, d], scalars: v)
        var result: [[(index: Int, similarity: Float)]] = []
        result.reserveCapacity(n)
        let block = 256
        for start in stride(from: 0, to: n, by: block) {
            let end = min(start + block, n)
            let similarity = z.rows(start..<end).matmul(z, transposeOther: true).scalars
            for r in 0..<(end - start) {
                let i = start + r
                // The k best so far, most similar first; a later index replaces only a strictly more similar one.
                var best: [(index: Int, similarity: Float)] = []
                best.reserveCapacity(k + 1)
                for j in 0..<n where j != i {
                    let s = similarity[r * n + j]
                    if best.count == k, !(s > best[k - 1].similarity) { continue }
                    var at = best.count
                    while at > 0, s > best[at - 1].similarity { at -= 1 }
                    best.insert((j, s), at: at)
                    if best.count > k { best.removeLast() }
                }
                result.append(best)
            }
        }
        return result
    }

    /// The symmetrically normalised k-nearest-neighbour graph of `features` [N, d] that `propagate` spreads scores
    /// along: W + W^T as adjacency lists (a mutual neighbour's two weights add up), then D^-1/2 W D^-1/2.
    public struct Graph: Sendable {
        let edges: [[(Int, Double)]]
        public var count: Int { edges.count }

        public init(_ features: Tensor, k: Int = neighbours) {
            let n = features.shape[0]
            var edges = [[(Int, Double)]](repeating: [], count: n)
            for (i, list) in nearestNeighbours(features, k: k).enumerated() {
                for (j, s) in list where s > 0 {
                    edges[i].append((j, Double(s)))
                    edges[j].append((i, Double(s)))
                }
            }
            let degree = edges.map { $0.reduce(0) { $0 + $1.1 } }
            let scale = degree.map { $0 > 0 ? 1 / $0.squareRoot() : 0 }
            for i in 0..<n { edges[i] = edges[i].map { ($0.0, $0.1 * scale[i] * scale[$0.0]) } }
            self.edges = edges
        }
    }

    /// Propagates `seeds` [N, K] (e.g. class probabilities) over the k-nearest-neighbour graph of `features` [N, d];
    /// returns the propagated scores [N, K], each row normalised to sum to 1 (a row that received nothing keeps its seed).
    public static func propagate(_ seeds: Tensor, over features: Tensor, k: Int = neighbours, alpha: Double = alpha,
                                 iterations: Int = iterations) -> Tensor {
        propagate(seeds, on: Graph(features, k: k), alpha: alpha, iterations: iterations)
    }

    /// `propagate` on a graph already built (several propagations over the same samples build it once).
    public static func propagate(_ seeds: Tensor, on graph: Graph, alpha: Double = alpha, iterations: Int = iterations) -> Tensor {
        let n = seeds.shape[0], classes = seeds.shape[1]
        precondition(graph.count == n, "one seed row per sample")
        let edges = graph.edges
        let y = (0..<n * classes).map { Double(seeds[flat: $0]) }
        var f = y, next = y
        for _ in 0..<iterations {
            for i in 0..<n {
                for c in 0..<classes { next[i * classes + c] = (1 - alpha) * y[i * classes + c] }
                for (j, w) in edges[i] {
                    for c in 0..<classes { next[i * classes + c] += alpha * w * f[j * classes + c] }
                }
            }
            swap(&f, &next)
        }
        var out = [Float](repeating: 0, count: n * classes)
        for i in 0..<n {
            let total = (0..<classes).reduce(0) { $0 + f[i * classes + $1] }
            for c in 0..<classes { out[i * classes + c] = Float(total > 0 ? f[i * classes + c] / total : y[i * classes + c]) }
        }
        return Tensor(shape: [n, classes], scalars: out)
    }

    /// `scores` [N, K] (non-negative, e.g. propagated scores) rescaled so the classes take the shares `proportions`
    /// (K values, summing to anything positive) of the N rows, while each row still sums to 1: Sinkhorn-Knopp,
    /// alternately scaling the columns to N x proportion and the rows to 1 (`iterations` rounds, ending on the rows).
    /// Its argmax is a labelling in which no class takes another's samples merely because it scores higher everywhere
    /// (the classes' total scores match the proportions; their argmax counts only approximately).
    /// A class whose column is all 0 stays 0.
    public static func balance(_ scores: Tensor, proportions: [Double], iterations: Int = iterations) -> Tensor {
        let n = scores.shape[0], classes = scores.shape[1]
        precondition(proportions.count == classes, "one proportion per class")
        let total = proportions.reduce(0, +)
        var q = (0..<n * classes).map { Double(scores[flat: $0]) }
        for _ in 0..<iterations {
            for c in 0..<classes {
                let sum = (0..<n).reduce(0) { $0 + q[$1 * classes + c] }
                guard sum > 0 else { continue }
                let scale = Double(n) * proportions[c] / total / sum
                for i in 0..<n { q[i * classes + c] *= scale }
            }
            for i in 0..<n {
                let sum = (0..<classes).reduce(0) { $0 + q[i * classes + $1] }
                guard sum > 0 else { continue }
                for c in 0..<classes { q[i * classes + c] /= sum }
            }
        }
        return Tensor(shape: [n, classes], scalars: q.map { Float($0) })
    }
}
