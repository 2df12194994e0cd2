import TransferEngine
import XCTest

/// `LabelPropagation`: the nearest-neighbour search against brute force, and propagation correcting noisy seeds
/// where the classes form neighbourhoods.
final class LabelPropagationTests: XCTestCase {
    func testNearestNeighboursMatchBruteForceAcrossBlocks() {
        var rng = RNG(seed: 7)
        let n = 300, d = 5, k = 4   // more rows than one block of 256
        let x = Tensor(shape: [n, d], scalars: (0..<n * d).map { _ in rng.normal() })
        let found = LabelPropagation.nearestNeighbours(x, k: k)
        XCTAssertEqual(found.count, n)
        func cosine(_ i: Int, _ j: Int) -> Double {
            var dot = 0.0, a = 0.0, b = 0.0
            for c in 0..<d {
                let u = Double(x[flat: i * d + c]), v = Double(x[flat: j * d + c])
                dot += u * v; a += u * u; b += v * v
            }
            return dot / (a * b).squareRoot()
        }
        for i in [0, 1, 255, 256, 299] {
            let expected = (0..<n).filter { $0 != i }.sorted { cosine(i, $0) > cosine(i, $1) }.prefix(k)
            XCTAssertEqual(found[i].map(\.index), Array(expected), "row \(i)")
            for (j, s) in found[i] { XCTAssertEqual(Double(s), cosine(i, j), accuracy: 1e-5) }
        }
        // k is capped at the other rows; a single row has no neighbours.
        XCTAssertEqual(LabelPropagation.nearestNeighbours(x.rows(0..<3), k: 10).map(\.count), [2, 2, 2])
        XCTAssertEqual(LabelPropagation.nearestNeighbours(x.rows(0..<1), k: 10).map(\.count), [0])
    }

    /// Three tight clusters whose seeds are right for 70 % of each cluster and wrong (another class, confidently)
    /// for the rest: after propagation every sample takes its cluster's label, and each row sums to 1.
    func testPropagationGivesEachClusterItsMajorityLabel() {
        var rng = RNG(seed: 11)
        let classes = 3, perClass = 40, d = 8
        let centres = (0..<classes).map { _ in (0..<d).map { _ in rng.normal() * 4 } }
        var values: [Float] = [], truth: [Int] = [], seeds: [Float] = []
        for c in 0..<classes {
            for i in 0..<perClass {
                values += centres[c].map { $0 + rng.normal() * 0.3 }
                truth.append(c)
                let seeded = i % 10 < 7 ? c : (c + 1) % classes
                seeds += (0..<classes).map { $0 == seeded ? 0.9 : 0.05 }
            }
        }
        let x = Tensor(shape: [truth.count, d], scalars: values)
        let y = Tensor(shape: [truth.count, classes], scalars: seeds)
        XCTAssertEqual(zip(y.argmaxRows(), truth).filter { $0 == $1 }.count, 84, "70 % of the seeds are right")
        let f = LabelPropagation.propagate(y, over: x)
        XCTAssertEqual(f.argmaxRows(), truth)
        for i in 0..<truth.count {
            XCTAssertEqual((0..<classes).reduce(Float(0)) { $0 + f[flat: i * classes + $1] }, 1, accuracy: 1e-5)
        }
        // Without neighbours' weight (alpha 0) the seeds come back unchanged.
        XCTAssertEqual(LabelPropagation.propagate(y, over: x, alpha: 0).argmaxRows(), y.argmaxRows())
    }

    /// The labelled examples' seeds of `semi`: one 1 per row, at the label's column.
    func testOneHotRows() {
        let t = Tensor(oneHot: [2, 0, 1], classes: 3)
        XCTAssertEqual(t.shape, [3, 3])
        XCTAssertEqual(t.scalars, [0, 0, 1, 1, 0, 0, 0, 1, 0])
        XCTAssertEqual(Tensor(oneHot: [], classes: 4).shape, [0, 4])
    }

    /// Balancing: scores in which class 0 outscores class 1 on every row (its argmax takes them all) are rescaled
    /// so the classes' total scores match the proportions while each row still sums to 1 and the rows keep their
    /// order of preference; with equal proportions the half of the rows most in favour of class 1 go to class 1.
    func testBalanceGivesEachClassItsShare() {
        let n = 8
        // Row i: class 1's score grows with i but never reaches class 0's.
        let scores = Tensor(shape: [n, 2], scalars: (0..<n).flatMap { i -> [Float] in
            let p1 = 0.05 + 0.05 * Float(i)
            return [1 - p1, p1]
        })
        XCTAssertEqual(scores.argmaxRows(), Array(repeating: 0, count: n))
        XCTAssertEqual(LabelPropagation.balance(scores, proportions: [1, 1]).argmaxRows(), [0, 0, 0, 0, 1, 1, 1, 1])
        for proportions in [[1.0, 1.0], [3.0, 1.0], [0.25, 0.75]] {
            let q = LabelPropagation.balance(scores, proportions: proportions)
            let total = proportions.reduce(0, +)
            for c in 0..<2 {
                let sum = (0..<n).reduce(Float(0)) { $0 + q[flat: $1 * 2 + c] }
                XCTAssertEqual(Double(sum), Double(n) * proportions[c] / total, accuracy: 1e-3, "\(proportions)")
            }
            for i in 0..<n { XCTAssertEqual(q[flat: i * 2] + q[flat: i * 2 + 1], 1, accuracy: 1e-5) }
            for i in 1..<n { XCTAssertGreaterThan(q[flat: i * 2 + 1], q[flat: (i - 1) * 2 + 1], "\(proportions)") }
        }
        // A class that scores 0 everywhere stays at 0; the others share the rows.
        let absent = Tensor(shape: [2, 3], scalars: [0.7, 0, 0.3, 0.6, 0, 0.4])
        let q = LabelPropagation.balance(absent, proportions: [1, 1, 1])
        XCTAssertEqual(q[flat: 1], 0); XCTAssertEqual(q[flat: 4], 0)
        XCTAssertEqual(q.argmaxRows(), [0, 2])
    }
}
