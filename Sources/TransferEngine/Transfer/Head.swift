import Foundation

/// The new classifier trained on backbone features: standardisation, then a linear layer or a small MLP.
///
/// Features are standardised with statistics of the training features (buffers `feature_mean`,
/// `feature_scale`), with each scale floored at the median scale: some pretrained features are exactly zero on
/// one dataset and not on another, and dividing by their tiny spread would multiply them by ~1e6.
/// The MLP's hidden layer (`bottleneck`) is where feature-level domain adaptation acts.
public final class ClassifierHead: Module {
    public enum Kind: String, Codable, CaseIterable, Sendable {
        case linear, mlp

        /// "a linear", "an mlp" (for messages).
        public var withArticle: String { self == .mlp ? "an mlp" : "a linear" }
    }

    public let kind: Kind
    public let inputs: Int
    public let classes: Int
    public let hidden: Int
    public let dropoutRate: Float
    let featureMean: Variable
    let featureScale: Variable
    public private(set) var fc: Linear!
    public private(set) var bottleneck: Linear?

    public init(kind: Kind, inputs: Int, classes: Int, hidden: Int = 256, dropout: Float = 0.2, rng: inout RNG) {
        self.kind = kind
        self.inputs = inputs
        self.classes = classes
        self.hidden = hidden
        self.dropoutRate = dropout
        featureMean = Variable(Tensor(zeros: [inputs]))
        featureScale = Variable(Tensor(shape: [inputs], repeating: 1))
        super.init()
        register(buffer: "feature_mean", featureMean)
        register(buffer: "feature_scale", featureScale)
        switch kind {
        case .linear:
            fc = child("fc", Linear(inputs: inputs, outputs: classes, rng: &rng))
        case .mlp:
            bottleneck = child("bottleneck", Linear(inputs: inputs, outputs: hidden, rng: &rng))
            fc = child("fc", Linear(inputs: hidden, outputs: classes, rng: &rng))
        }
    }

    /// Sets the standardisation from features [N, inputs].
    public func standardise(from features: Tensor) {
        let (mean, scale) = ClassifierHead.statistics(features)
        featureMean.value = mean
        featureScale.value = scale
    }

    /// Per-feature mean and standard deviation, the deviation floored at its median (see the type's comment).
    public static func statistics(_ x: Tensor) -> Statistics {
        let n = x.shape[0], d = x.shape[1], p = x.pointer
        var mean = [Double](repeating: 0, count: d), sq = [Double](repeating: 0, count: d)
        for i in 0..<n { for j in 0..<d { let v = Double(p[i * d + j]); mean[j] += v; sq[j] += v * v } }
        var std = [Float](repeating: 1, count: d)
        for j in 0..<d {
            mean[j] /= Double(max(n, 1))
            std[j] = Float(max(sq[j] / Double(max(n, 1)) - mean[j] * mean[j], 0).squareRoot())
        }
        let floor = max(std.sorted()[d / 2], 1e-6)
        return (Tensor(shape: [d], scalars: mean.map(Float.init)), Tensor(shape: [d], scalars: std.map { max($0, floor) }))
    }

    /// Per-feature statistics of one domain's features, as `statistics(_:)` computes them.
    public typealias Statistics = (mean: Tensor, scale: Tensor)

    /// Features of one domain moved into another's coordinates: `(x - from.mean) / from.scale * to.scale + to.mean`.
    /// A head standardising with `to`'s statistics then sees these features standardised with their own domain's
    /// statistics (domain-specific standardisation: AdaBN at the head's input).
    public static func align(_ x: Tensor, from: Statistics, to: Statistics) -> Tensor {
        (x - from.mean) / from.scale * to.scale + to.mean
    }

    /// Re-targets the head to raw features of a domain with statistics `from`: afterwards it computes on them what
    /// it computed on `align(x, from: from, to: to)` before.
    public func retarget(from: Statistics, to: Statistics) {
        // (align(x) - mean) / scale = (x - mean') / scale' with scale' = scale * from.scale / to.scale and
        // mean' = from.mean + (mean - to.mean) * from.scale / to.scale.
        let ratio = from.scale / to.scale
        featureMean.value = from.mean + (featureMean.value - to.mean) * ratio
        featureScale.value = featureScale.value * ratio
    }

    /// Standardised features.
    public func normalised(_ x: Variable) -> Variable { (x - featureMean) / featureScale }

    /// The hidden representation (MLP) or the standardised features (linear): what adaptation aligns.
    public func representation(_ x: Variable, training: Bool, rng: inout RNG) -> Variable {
        var h = normalised(x)
        if let bottleneck {
            h = bottleneck(h).relu()
            if training && dropoutRate > 0 { h = h.dropout(rate: dropoutRate, rng: &rng, training: true) }
        }
        return h
    }

    /// Logits from a representation.
    public func classify(_ h: Variable) -> Variable { fc(h) }

    /// Logits [B, classes] from features [B, inputs].
    public func callAsFunction(_ x: Variable, training: Bool, rng: inout RNG) -> Variable {
        classify(representation(x, training: training, rng: &rng))
    }

    /// Width of `representation`.
    public var representationWidth: Int { kind == .mlp ? hidden : inputs }
}
