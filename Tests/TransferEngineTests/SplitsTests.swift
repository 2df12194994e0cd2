import TransferEngine
import XCTest

/// The seeded, stratified choices of `Splits` (few-label runs draw their K examples per class with `subsample`).
final class SplitsTests: XCTestCase {
    /// 3 classes of 10, 4 and 1 samples, shuffled.
    let labels = [0, 1, 0, 2, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0]

    func testSubsampleIsStratifiedAndSeeded() {
        func draw(_ k: Int, seed: UInt64) -> [Int] {
            var rng = RNG(seed: seed)
            return Splits.subsample(labels: labels, classCount: 3, perClass: k, rng: &rng)
        }
        for k in [1, 3, 5] {
            let rows = draw(k, seed: 42)
            XCTAssertEqual(rows, rows.sorted())
            XCTAssertEqual(Set(rows).count, rows.count, "no row twice")
            let counts = (0..<3).map { c in rows.filter { labels[$0] == c }.count }
            XCTAssertEqual(counts, [min(k, 10), min(k, 4), 1], "K per class, or all of a smaller class")
            XCTAssertEqual(draw(k, seed: 42), rows, "the same seed draws the same rows")
        }
        XCTAssertNotEqual(draw(3, seed: 42), draw(3, seed: 7), "another seed draws other rows")
    }
}

/// McNemar's test behind `--unfreeze auto`'s rule, against values from the chi-square distribution.
final class DepthSearchTests: XCTestCase {
    func testMcNemar() {
        XCTAssertEqual(DepthSearch.mcNemar(0, 0), 1)
        XCTAssertEqual(DepthSearch.mcNemar(10, 4), 0.18145, accuracy: 1e-4)   // chi2 = 25/14
        XCTAssertEqual(DepthSearch.mcNemar(4, 10), 0.18145, accuracy: 1e-4)
        XCTAssertEqual(DepthSearch.mcNemar(20, 5), 0.0051098, accuracy: 1e-6)  // chi2 = 7.84
        XCTAssertEqual(DepthSearch.mcNemar(3, 2), 1, accuracy: 1e-12)          // |b - c| - 1 = 0
    }
}
