/// Classification metrics from predictions and true labels.
public struct ClassificationReport: Codable, Equatable {
    public var classNames: [String]
    /// confusion[true][predicted]
    public var confusion: [[Int]]
    public var accuracy: Double
    public var macroF1: Double
    public var precision: [Double]
    public var recall: [Double]
    public var f1: [Double]
    public var support: [Int]

    public init(predictions: [Int], labels: [Int], classNames: [String]) {
        precondition(predictions.count == labels.count, "ClassificationReport: \(predictions.count) predictions for \(labels.count) labels")
        let k = classNames.count
        var m = [[Int]](repeating: [Int](repeating: 0, count: k), count: k)
        for (p, y) in zip(predictions, labels) { m[y][p] += 1 }
        self.classNames = classNames
        confusion = m
        let correct = (0..<k).reduce(0) { $0 + m[$1][$1] }
        accuracy = labels.isEmpty ? 0 : Double(correct) / Double(labels.count)
        let support = m.map { $0.reduce(0, +) }
        let predicted = (0..<k).map { j in (0..<k).reduce(0) { $0 + m[$1][j] } }
        let precision = (0..<k).map { predicted[$0] == 0 ? 0 : Double(m[$0][$0]) / Double(predicted[$0]) }
        let recall = (0..<k).map { support[$0] == 0 ? 0 : Double(m[$0][$0]) / Double(support[$0]) }
        let f1 = (0..<k).map { i -> Double in
            let p = precision[i], r = recall[i]
            return p + r == 0 ? 0 : 2 * p * r / (p + r)
        }
        self.support = support
        self.precision = precision
        self.recall = recall
        self.f1 = f1
        // Macro average over the classes that occur in the labels or the predictions, as scikit-learn does.
        let present = (0..<k).filter { support[$0] > 0 || predicted[$0] > 0 }
        macroF1 = present.isEmpty ? 0 : present.reduce(0) { $0 + f1[$1] } / Double(present.count)
    }

    /// A readable per-class table.
    public var table: String {
        let names = classNames.map(\.printable)
        let w = max(5, names.map(\.count).max() ?? 5)
        var lines = ["class".padding(toLength: w, withPad: " ", startingAt: 0) + "  precision  recall     f1  support"]
        for i in names.indices {
            lines.append(names[i].padding(toLength: w, withPad: " ", startingAt: 0)
                + String(format: "  %9.3f  %6.3f  %5.3f  %7d", precision[i], recall[i], f1[i], support[i]))
        }
        lines.append(String(format: "accuracy %.4f   macro-F1 %.4f   (%d samples)", accuracy, macroF1, support.reduce(0, +)))
        return lines.joined(separator: "\n")
    }
}
