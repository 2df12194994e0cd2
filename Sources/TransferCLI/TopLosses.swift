import Foundation
import TransferEngine

/// How report.html shows a sample next to its loss (besides its description): a small picture or its text.
public enum SamplePreview: Sendable {
    /// A PNG file's bytes (a thumbnail).
    case png([UInt8])
    case text(String)
}

/// One of the highest-loss evaluation samples of a model.
struct TopLoss {
    let input: String
    let preview: SamplePreview?
    let truth: String
    let predicted: String
    let probability: Double
    let loss: Double
}

/// Which model's worst-predicted samples report.html shows, on which set; computed only when a report is written.
struct TopLossRequest {
    let model: String
    let set: String
    let compute: () throws -> [TopLoss]
}

/// A sample's cross-entropy from the log-probability of its true class: never -0 or a rounding's -1e-8 (printed as
/// -0.000), as a cross-entropy is >= 0.
func sampleLoss(_ logProbability: Float) -> Double { Swift.max(0, 0 - Double(logProbability)) }

extension TransferWorkflows where D: CommandLineDomain {
    /// The `count` samples of `set` with the highest cross-entropy under `model`, highest first (ties by order).
    func topLosses(of model: SavedModel, on set: LabelledSet<D.Sample>, name: String, count: Int = 12) throws -> [TopLoss] {
        let logP = try probabilities(model, samples: set.samples, name: name, log: true)
        let k = model.classNames.count
        let losses = set.labels.enumerated().map { sampleLoss(logP[flat: $0.offset * k + $0.element]) }
        let worst = losses.indices.sorted { losses[$0] != losses[$1] ? losses[$0] > losses[$1] : $0 < $1 }.prefix(count)
        let predicted = logP.argmaxRows()
        return worst.map { i in
            TopLoss(input: domain.describe(set.samples[i]), preview: domain.preview(set.samples[i]),
                    truth: model.classNames[set.labels[i]], predicted: model.classNames[predicted[i]],
                    probability: Foundation.exp(Double(logP[flat: i * k + predicted[i]])), loss: losses[i])
        }
    }

    /// The request for `result`'s model on the labelled `set`, or nil when it saved no model.
    func topLossRequest(_ result: StrategyResult, on set: LabelledSet<D.Sample>, name: String) -> TopLossRequest? {
        guard let model = result.model else { return nil }
        return TopLossRequest(model: result.identifier, set: name) { try self.topLosses(of: model, on: set, name: name) }
    }
}
