/// Seeded, stratified choices of which samples train, validate or are held out.
public enum Splits {
    /// Create ML's automatic validation rule: no validation under 50 samples, 10% up to 200, else 5%.
    public static func validationFraction(forCount n: Int) -> Double {
        n < 50 ? 0 : (n <= 200 ? 0.10 : 0.05)
    }

    /// Splits indices into (train, validation), stratified by label: each class gives
    /// round(fraction * its count) samples to validation (at least one when the fraction is non-zero and the
    /// class has two or more), chosen by `rng`.
    public static func trainValidation(labels: [Int], classCount: Int, fraction: Double,
                                       rng: inout RNG) -> (train: [Int], validation: [Int]) {
        guard fraction > 0 else { return (Array(labels.indices), []) }
        var train: [Int] = [], validation: [Int] = []
        for (c, members) in byClass(labels, classCount).enumerated() {
            _ = c
            var m = members
            rng.shuffle(&m)
            var k = Int((Double(m.count) * fraction).rounded())
            if k == 0 && m.count >= 2 { k = 1 }
            validation += m.prefix(k)
            train += m.dropFirst(k)
        }
        return (train.sorted(), validation.sorted())
    }

    /// At most `perClass` samples of each class, chosen by `rng` (stratified subsampling for few-label runs).
    public static func subsample(labels: [Int], classCount: Int, perClass: Int, rng: inout RNG) -> [Int] {
        var chosen: [Int] = []
        for members in byClass(labels, classCount) {
            var m = members
            rng.shuffle(&m)
            chosen += m.prefix(perClass)
        }
        return chosen.sorted()
    }

    /// Stratified k folds: fold i's indices (each class dealt round-robin after a seeded shuffle).
    public static func folds(labels: [Int], classCount: Int, k: Int, rng: inout RNG) -> [[Int]] {
        var folds = [[Int]](repeating: [], count: k)
        var next = 0
        for members in byClass(labels, classCount) {
            var m = members
            rng.shuffle(&m)
            for i in m { folds[next % k].append(i); next += 1 }
        }
        return folds.map { $0.sorted() }
    }

    static func byClass(_ labels: [Int], _ classCount: Int) -> [[Int]] {
        var groups = [[Int]](repeating: [], count: classCount)
        for (i, y) in labels.enumerated() { groups[y].append(i) }
        return groups
    }
}
