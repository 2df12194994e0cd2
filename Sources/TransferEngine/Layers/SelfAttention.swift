import Foundation

/// Multi-head self-attention: out(attention(query(x), key(x), value(x))) with optional key padding.
/// Input [B, T, dimension]; output [B, T, dimension]. Children `query`, `key`, `value`, `out` are Linear layers.
public final class MultiHeadSelfAttention: Module {
    public let query: Linear
    public let key: Linear
    public let value: Linear
    public let out: Linear
    public let heads: Int

    public init(dimension: Int, heads: Int, rng: inout RNG) {
        precondition(heads > 0 && dimension % heads == 0, "MultiHeadSelfAttention: \(dimension) does not split into \(heads) heads")
        self.heads = heads
        query = Linear(inputs: dimension, outputs: dimension, rng: &rng)
        key = Linear(inputs: dimension, outputs: dimension, rng: &rng)
        value = Linear(inputs: dimension, outputs: dimension, rng: &rng)
        out = Linear(inputs: dimension, outputs: dimension, rng: &rng)
        super.init()
        child("query", query)
        child("key", key)
        child("value", value)
        child("out", out)
    }

    /// `validKeys`: optional [B, T] flags, 1 = token, 0 = padding (BERT's attention_mask).
    public func callAsFunction(_ x: Variable, validKeys: Tensor? = nil) -> Variable {
        let a = Variable.scaledDotProductAttention(query: query(x), key: key(x), value: value(x), heads: heads,
                                                   validKeys: validKeys)
        return out(a)
    }
}
