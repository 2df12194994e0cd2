import XCTest
@testable import TransferEngine

/// Empty and size-1 shapes through the elementwise, reduction, matmul and concatenation ops: each computes the
/// right (empty) result, as numpy does. The cause of issue 20's 5.6e14-byte allocation was `concatenateRows` of
/// no batches (an empty target test set): with `-Ounchecked` its precondition was gone and it read the shape of a
/// tensor that did not exist; it now makes a [0, d] result from the row shape it is given.
final class EmptyShapeTests: XCTestCase {
    var rng = RNG(seed: 3)

    func testElementwiseBroadcastsEmptyAndSizeOneShapes() {
        let empty = Tensor(zeros: [0, 4]), row = rng.normalTensor([4]), one = rng.normalTensor([1, 4])
        for r in [empty - row, row - empty, empty * row, empty + one, empty / Tensor(2), empty * 3] {
            XCTAssertEqual(r.shape, [0, 4])
            XCTAssertEqual(r.count, 0)
        }
        XCTAssertEqual((Tensor(zeros: [3, 0]) + Tensor(zeros: [0])).shape, [3, 0])
        XCTAssertEqual((Tensor(zeros: [0, 1]) + Tensor(zeros: [1, 5])).shape, [0, 5])
        // Size 1 broadcasts both ways.
        let a = rng.normalTensor([3, 1]), b = rng.normalTensor([1, 4])
        let s = a + b
        XCTAssertEqual(s.shape, [3, 4])
        XCTAssertEqual(s[flat: 2 * 4 + 3], a[flat: 2] + b[flat: 3])
        XCTAssertEqual((one - row).shape, [1, 4])
        XCTAssertEqual(Tensor(zeros: [0]).map { $0 + 1 }.shape, [0])
        // On the tape, with gradients of the right (empty) shapes.
        let x = Variable(Tensor(zeros: [0, 4]), requiresGrad: true), w = Variable(rng.normalTensor([4]), requiresGrad: true)
        ((x - w) * w).sum().backward()
        XCTAssertEqual(x.grad?.shape, [0, 4])
        XCTAssertEqual(w.grad?.scalars, [0, 0, 0, 0])
    }

    func testReductionsOfEmptyShapes() {
        let empty = Tensor(zeros: [0, 3])
        XCTAssertEqual(empty.sum(), 0)
        XCTAssertEqual(empty.sum(axis: 0).shape, [3])
        XCTAssertEqual(empty.sum(axis: 0).scalars, [0, 0, 0])
        XCTAssertEqual(empty.sum(axis: 1).shape, [0])
        XCTAssertEqual(empty.sum(axis: 0, keepingDimension: true).shape, [1, 3])
        XCTAssertEqual(empty.softmax(axis: -1).shape, [0, 3])
        XCTAssertEqual(empty.argmaxRows(), [])
        XCTAssertEqual(Tensor(shape: [2, 1], scalars: [5, -1]).argmaxRows(), [0, 0])
        let one = rng.normalTensor([1, 3])
        XCTAssertEqual(one.sum(axis: 0).scalars, one.scalars)
        let v = Variable(empty, requiresGrad: true)
        v.sum(axis: 0).sum().backward()
        XCTAssertEqual(v.grad?.shape, [0, 3])
        XCTAssertEqual(Variable(Tensor(zeros: [4, 0])).mean(axis: 0).shape, [0])
    }

    func testMatmulWithEmptyDimensions() {
        let w = rng.normalTensor([4, 5])
        XCTAssertEqual(Tensor(zeros: [0, 4]).matmul(w).shape, [0, 5])
        XCTAssertEqual(Tensor(zeros: [2, 0, 4]).matmul(w).shape, [2, 0, 5])
        // An empty inner dimension is a sum of nothing: zeros.
        let z = Tensor(shape: [3, 0], scalars: []).matmul(Tensor(shape: [0, 2], scalars: []))
        XCTAssertEqual(z.shape, [3, 2])
        XCTAssertEqual(z.scalars, [0, 0, 0, 0, 0, 0])
        let zb = Tensor(zeros: [2, 3, 0]).matmul(Tensor(zeros: [0, 2]))
        XCTAssertEqual(zb.shape, [2, 3, 2])
        XCTAssertEqual(zb.scalars, [Float](repeating: 0, count: 12))
        XCTAssertEqual(Tensor(zeros: [0, 3]).matmul(Tensor(zeros: [0, 2]), transposeSelf: true).scalars, [Float](repeating: 0, count: 6))
        XCTAssertEqual(Tensor(zeros: [4, 0]).matmul(w, transposeSelf: true).shape, [0, 5])
        // Size-1 dimensions against a plain loop.
        let a = rng.normalTensor([1, 4]), p = a.matmul(w)
        for j in 0..<5 { XCTAssertEqual(p[flat: j], (0..<4).reduce(0) { $0 + a[flat: $1] * w[flat: $1 * 5 + j] }, accuracy: 1e-5) }
        let x = Variable(Tensor(zeros: [0, 4]), requiresGrad: true), wv = Variable(w, requiresGrad: true)
        x.matmul(wv).sum().backward()
        XCTAssertEqual(x.grad?.shape, [0, 4])
        XCTAssertEqual(wv.grad?.scalars, [Float](repeating: 0, count: 20))
    }

    func testConcatenationAndRowSelectionOfEmptyShapes() {
        XCTAssertEqual(Tensor.concatenateRows([], rowShape: [1280]).shape, [0, 1280])
        let a = rng.normalTensor([2, 3])
        let c = Tensor.concatenateRows([Tensor(zeros: [0, 3]), a, Tensor(zeros: [0, 3])])
        XCTAssertEqual(c, a)
        XCTAssertEqual(Tensor.concatenateRows([a], rowShape: [3]), a)
        XCTAssertEqual(a.rows(1..<1).shape, [0, 3])
        XCTAssertEqual(a.gatherRows([]).shape, [0, 3])
        XCTAssertEqual(Tensor(zeros: [0, 3]).gatherRows([]).shape, [0, 3])
        XCTAssertEqual(Tensor(shape: [0, 2], scalars: []).shape, [0, 2])
        let v = Variable.concatenateRows([], rowShape: [7])
        XCTAssertEqual(v.shape, [0, 7])
        let parts = [Variable(Tensor(zeros: [0, 3]), requiresGrad: true), Variable(a, requiresGrad: true)]
        Variable.concatenateRows(parts).sum().backward()
        XCTAssertEqual(parts[0].grad?.shape, [0, 3])
        XCTAssertEqual(parts[1].grad?.scalars, [Float](repeating: 1, count: 6))
    }
}
