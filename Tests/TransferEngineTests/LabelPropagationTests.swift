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
}
