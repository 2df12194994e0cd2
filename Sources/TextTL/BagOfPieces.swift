import Foundation
import TransferEngine

/// The from-scratch baseline: a fastText-style bag of n-grams. Each text is its word pieces plus hashed
/// word-piece bigrams; the feature is the mean of their learned embeddings (one block, `embedding`), and the
/// workflow puts a linear classifier on it. Trained from random initialisation on the same labelled texts.
public final class BagOfPiecesBackbone: Module, Backbone {
    public typealias Input = TokenBatch

    /// Buckets for hashed bigrams, after the unigram ids.
    public static let bigramBuckets = 1 << 14
    public static let dimension = 32

    let table: Embedding
    public let vocabularySize: Int

    public init(vocabularySize: Int, rng: inout RNG) {
        self.vocabularySize = vocabularySize
        table = Embedding(count: vocabularySize + Self.bigramBuckets, dimension: Self.dimension, rng: &rng)
        // fastText's initialisation scale: small uniform values, so early means are not dominated by noise.
        let bound = 1 / Float(Self.dimension)
        table.weight.value = rng.uniformTensor(table.weight.shape, -bound, bound)
        super.init()
        child("embedding", table)
    }

    /// Unigram ids followed by hashed bigram ids for one text's word pieces (never empty).
    public static func bag(pieces: [Int], vocabularySize: Int, unknownID: Int) -> [Int] {
        guard !pieces.isEmpty else { return [unknownID] }
        var ids = pieces
        ids.reserveCapacity(2 * pieces.count)
        for i in 1..<pieces.count {
            var h = UInt64(truncatingIfNeeded: pieces[i - 1]) &* 0x9E37_79B9_7F4A_7C15
            h ^= UInt64(truncatingIfNeeded: pieces[i]) &+ 0x632B_E59B_D9B4_E019 &+ (h << 6) &+ (h >> 2)
            ids.append(vocabularySize + Int(h % UInt64(bigramBuckets)))
        }
        return ids
    }

    public var featureCount: Int { Self.dimension }
    public var blocks: [[String]] { [["embedding"]] }
    public var blockNames: [String] { ["embedding bag (word pieces + hashed bigrams, mean)"] }
    public var activationsAreSequences: Bool { true }

    /// Block 0 turns ids into the mean embedding, kept as sequences of one row each [B, D].
    public func forward(_ input: TokenBatch, through end: Int) -> Activation {
        if end == 0 { return Activation(ids: input.ids, lengths: input.lengths) }
        return Activation(pool(input.ids, lengths: input.lengths), lengths: [Int](repeating: 1, count: input.batchSize))
    }

    public func forward(_ activation: Activation, from start: Int) -> Variable {
        if start >= 1 { return activation.value }
        guard let ids = activation.ids, let lengths = activation.lengths else {
            preconditionFailure("BagOfPiecesBackbone: block 0 takes token ids with lengths")
        }
        return pool(ids, lengths: lengths)
    }

    func pool(_ ids: [Int], lengths: [Int]) -> Variable {
        Variable.embedding(ids: ids, table: table.weight).meanPooled(lengths: lengths)
    }
}
