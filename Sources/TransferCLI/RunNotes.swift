import Foundation
import TransferEngine

// The notes under a training command's table that come from its results (the command adds its own).

/// The note when K examples per class (`option`) asked for more than a class of `set` holds: every example of
/// that class was used (the rows still say K). When no class has K, one note says every example was used.
func labelBudgetNotes(_ k: Int?, labels: [Int], classNames: [String], option: String, set: String) -> [String] {
    guard let k else { return [] }
    let counts = Dictionary(grouping: labels) { $0 }.mapValues(\.count)
    guard let largest = counts.values.max() else { return [] }
    if k >= largest { return ["\(option) \(k): no class of \(set) has more than \(largest) examples, so every one was used"] }
    let short = counts.filter { $0.value < k }.sorted { $0.key < $1.key }
    guard !short.isEmpty else { return [] }
    let named = short.prefix(5).map { "\(classNames[$0.key]) \($0.value)" }.joined(separator: ", ") + (short.count > 5 ? ", ..." : "")
    return ["\(option) \(k): \(counted(short.count, "classes")) of \(set) \(short.count == 1 ? "has" : "have") fewer examples, all used (\(named))"]
}

/// A note for each trained row whose last epoch's classification loss is above a uniform guess's, ln(classes): its
/// training did not converge. A learning rate far too high does this without the loss becoming infinite (which stops
/// the run; the predictions may still be better than chance), and so do too few epochs.
func notConvergedNotes(_ results: [StrategyResult]) -> [String] {
    results.compactMap { r in
        guard let last = r.history.last, let classes = r.model?.classNames.count, classes >= 2 else { return nil }
        let loss = last.trainLoss - (last.adaptationLoss ?? 0), guess = Foundation.log(Double(classes))
        guard loss > guess else { return nil }
        return String(format: "%@: its training loss ended at %.4g, above a uniform guess's ln(%d) = %.3f: its training did not converge (too few --epochs or too high an --lr do this)",
                      r.identifier, loss, classes, guess)
    }
}

/// A note per evaluation set that lacks some of the model's classes: macro-F1 averages over the classes in the
/// labels or a row's predictions (as scikit-learn does), so a row that predicts an absent class averages over
/// more classes than one that does not, and their macro-F1s are not alike.
func missingClassNotes(_ results: [StrategyResult]) -> [String] {
    var seen: Set<String> = [], notes: [String] = []
    for r in results {
        guard let report = r.report, !seen.contains(r.eval) else { continue }
        seen.insert(r.eval)
        let absent = report.classNames.indices.filter { report.support[$0] == 0 }.map { report.classNames[$0] }
        guard !absent.isEmpty else { continue }
        notes.append("\(r.eval) holds \(report.classNames.count - absent.count) of the \(report.classNames.count) classes (none of "
                     + absent.prefix(5).joined(separator: ", ") + (absent.count > 5 ? ", ..." : "") + "): macro-F1 averages over the classes "
                     + "in its labels or a row's predictions, as scikit-learn does, so it compares rows that predict the same classes only")
    }
    return notes
}
