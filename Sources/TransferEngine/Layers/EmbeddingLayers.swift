import Foundation

/// A lookup table: ids -> rows of `weight` [count, dimension].
public final class Embedding: Module {
    public let weight: Variable

    /// Standard normal initialisation (PyTorch's default for nn.Embedding).
    public init(count: Int, dimension: Int, rng: inout RNG) {
        weight = Variable(rng.normalTensor([count, dimension]))
        super.init()
        register(parameter: "weight", weight)
    }

    public var dimension: Int { weight.shape[1] }

    /// [ids.count, dimension], or `shape + [dimension]` (e.g. ids of [B, T] tokens -> [B, T, dimension]).
    public func callAsFunction(_ ids: [Int], shape: [Int]? = nil) -> Variable {
        Variable.embedding(ids: ids, table: weight, shape: shape)
    }
}
