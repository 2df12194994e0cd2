import Foundation
@testable import TransferEngine

// Layers only the tests use, built from engine ops and checked against PyTorch: a padded multi-head
// self-attention and a dropout module (the apps use BERT's packed attention and the heads' own dropout op).

/// Inverted dropout, active only in training mode. The caller passes the run's generator, so one seed drives
/// every mask.
final class Dropout: Module {
    var rate: Float

    init(rate: Float) {
        precondition(rate >= 0 && rate <= 1, "Dropout: rate \(rate) is not in [0, 1]")
        self.rate = rate
        super.init()
    }

    func callAsFunction(_ x: Variable, rng: inout RNG) -> Variable {
        x.dropout(rate: rate, rng: &rng, training: isTraining)
    }
}

/// Multi-head self-attention: out(attention(query(x), key(x), value(x))) with optional key padding.
/// Input [B, T, dimension]; output [B, T, dimension]. Children `query`, `key`, `value`, `out` are Linear layers.
final class MultiHeadSelfAttention: Module {
    let query: Linear
    let key: Linear
    let value: Linear
    let out: Linear
    let heads: Int

    init(dimension: Int, heads: Int, rng: inout RNG) {
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
    func callAsFunction(_ x: Variable, validKeys: Tensor? = nil) -> Variable {
        let a = Variable.scaledDotProductAttention(query: query(x), key: key(x), value: value(x), heads: heads,
                                                   validKeys: validKeys)
        return out(a)
    }
}
