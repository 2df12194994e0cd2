import Foundation
import TransferEngine

/// The shape of a BERT encoder, read from a Hugging Face `config.json`.
public struct BERTConfiguration: Equatable, Sendable {
    public var hiddenSize = 384
    public var layers = 6
    public var heads = 12
    public var intermediateSize = 1536
    public var layerNormEps: Float = 1e-12
    public var vocabularySize = 30522
    public var maxPositions = 512
    public var typeVocabularySize = 2

    public init() {}

    /// Multiply-adds of the encoder layers on one sequence of `length` tokens: per layer the Q, K, V and output
    /// projections (4 h² per token), the feed-forward (2 h·i per token) and attention's QKᵀ and PV (2 length² h);
    /// embeddings, LayerNorm, softmax and GELU not counted (about 1.43 G for MiniLM-L6 at 128 tokens).
    public func multiplyAdds(length: Int) -> Int {
        let h = hiddenSize, i = intermediateSize
        return layers * (length * (4 * h * h + 2 * h * i) + 2 * length * length * h)
    }

    /// Reads and checks `config.json`. Only what this encoder computes is accepted: absolute positions and
    /// the exact (erf) GELU; anything else is one clear error naming the file.
    public init(contentsOf url: URL) throws {
        let object: Any
        let data = try InputFile.read(url, limit: 16 << 20, what: "a model configuration")
        do { object = try JSONSerialization.jsonObject(with: data) } catch {
            // Foundation's own words here are "The data is not in the correct format."
            throw EngineError.invalidFile(url.path, "the model configuration is not valid JSON (cut short or edited?)")
        }
        guard let json = object as? [String: Any] else { throw EngineError.invalidFile(url.path, "not a JSON object") }
        func int(_ key: String) throws -> Int {
            guard let v = json[key] as? NSNumber else { throw EngineError.invalidFile(url.path, "missing number '\(key)'") }
            return v.intValue
        }
        if let type = json["model_type"] as? String, type != "bert" {
            throw EngineError.invalidFile(url.path, "model_type '\(type)' is not supported (only BERT encoders)")
        }
        if let act = json["hidden_act"] as? String, act != "gelu" {
            throw EngineError.invalidFile(url.path, "hidden_act '\(act)' is not supported (only the exact 'gelu')")
        }
        if let pos = json["position_embedding_type"] as? String, pos != "absolute" {
            throw EngineError.invalidFile(url.path, "position_embedding_type '\(pos)' is not supported (only 'absolute')")
        }
        hiddenSize = try int("hidden_size")
        layers = try int("num_hidden_layers")
        heads = try int("num_attention_heads")
        intermediateSize = try int("intermediate_size")
        vocabularySize = try int("vocab_size")
        maxPositions = try int("max_position_embeddings")
        typeVocabularySize = (json["type_vocab_size"] as? NSNumber)?.intValue ?? 2
        layerNormEps = (json["layer_norm_eps"] as? NSNumber)?.floatValue ?? 1e-12
        guard hiddenSize > 0, layers > 0, heads > 0, hiddenSize % heads == 0, intermediateSize > 0, vocabularySize > 0,
              maxPositions > 0, typeVocabularySize > 0 else {
            throw EngineError.invalidFile(url.path, "inconsistent sizes (hidden \(hiddenSize), \(heads) heads, \(layers) layers)")
        }
    }
}

/// Layers of the right shapes filled with zeros: placeholders for pretrained weights (drawing 22 M random
/// numbers only to overwrite them would cost more than reading the file).
enum Placeholder {
    static func embedding(_ count: Int, _ dimension: Int) -> Embedding {
        var rng = RNG(seed: 0)
        let e = Embedding(count: 1, dimension: dimension, rng: &rng)
        e.weight.value = Tensor(zeros: [count, dimension])
        return e
    }

    static func linear(_ inputs: Int, _ outputs: Int) -> Linear {
        var rng = RNG(seed: 0)
        let l = Linear(inputs: 1, outputs: 1, rng: &rng)
        l.weight.value = Tensor(zeros: [outputs, inputs])
        l.bias!.value = Tensor(zeros: [outputs])
        return l
    }
}

/// `embeddings.*`: word + position + token type (always type 0), then LayerNorm.
final class BERTEmbeddings: Module {
    let word: Embedding, position: Embedding, tokenType: Embedding, norm: LayerNorm

    init(_ c: BERTConfiguration) {
        word = Placeholder.embedding(c.vocabularySize, c.hiddenSize)
        position = Placeholder.embedding(c.maxPositions, c.hiddenSize)
        tokenType = Placeholder.embedding(c.typeVocabularySize, c.hiddenSize)
        norm = LayerNorm(dimension: c.hiddenSize, eps: c.layerNormEps)
        super.init()
        child("word_embeddings", word)
        child("position_embeddings", position)
        child("token_type_embeddings", tokenType)
        child("LayerNorm", norm)
    }

    /// Packed token ids (sequence after sequence) -> [N, hidden].
    func callAsFunction(packedIDs ids: [Int], lengths: [Int]) -> Variable {
        var positions: [Int] = []
        positions.reserveCapacity(ids.count)
        for l in lengths { positions.append(contentsOf: 0..<l) }
        let x = Variable.embedding(ids: ids, table: word.weight)
            + Variable.embedding(ids: positions, table: position.weight)
            + Variable.embedding(ids: [0], table: tokenType.weight, shape: [])
        return norm(x)
    }
}

/// `encoder.layer.N.*`: post-LayerNorm transformer layer (self-attention, then the feed-forward block).
final class BERTLayer: Module {
    let query: Linear, key: Linear, value: Linear, attentionOut: Linear, attentionNorm: LayerNorm
    let intermediate: Linear, output: Linear, outputNorm: LayerNorm
    let heads: Int

    init(_ c: BERTConfiguration) {
        let h = c.hiddenSize
        heads = c.heads
        query = Placeholder.linear(h, h)
        key = Placeholder.linear(h, h)
        value = Placeholder.linear(h, h)
        attentionOut = Placeholder.linear(h, h)
        attentionNorm = LayerNorm(dimension: h, eps: c.layerNormEps)
        intermediate = Placeholder.linear(h, c.intermediateSize)
        output = Placeholder.linear(c.intermediateSize, h)
        outputNorm = LayerNorm(dimension: h, eps: c.layerNormEps)
        super.init()
        child("attention", ModuleGroup([
            ("self", ModuleGroup([("query", query), ("key", key), ("value", value)])),
            ("output", ModuleGroup([("dense", attentionOut), ("LayerNorm", attentionNorm)])),
        ]))
        child("intermediate", ModuleGroup([("dense", intermediate)]))
        child("output", ModuleGroup([("dense", output), ("LayerNorm", outputNorm)]))
    }

    /// Packed tokens [N, hidden] -> [N, hidden]. Four fused engine ops: Q/K/V projections + attention, output
    /// projection + residual + LayerNorm, intermediate projection + GELU, output projection + residual + LayerNorm.
    func callAsFunction(_ x: Variable, lengths: [Int]) -> Variable {
        let a = Variable.packedSelfAttention(x, query: (query.weight, query.bias!), key: (key.weight, key.bias!),
                                             value: (value.weight, value.bias!), heads: heads, lengths: lengths)
        let h = a.linearResidualLayerNorm(weight: attentionOut.weight, bias: attentionOut.bias!, residual: x,
                                          normWeight: attentionNorm.weight, normBias: attentionNorm.bias, eps: attentionNorm.eps)
        let f = h.linearGELU(weight: intermediate.weight, bias: intermediate.bias!)
        return f.linearResidualLayerNorm(weight: output.weight, bias: output.bias!, residual: h,
                                         normWeight: outputNorm.weight, normBias: outputNorm.bias, eps: outputNorm.eps)
    }
}

/// A BERT encoder as a backbone: blocks `embeddings`, `encoder.layer.0` ... `encoder.layer.{L-1}`; the feature
/// is the mean of the last hidden states over the real tokens (sentence-transformers' pooling), optionally
/// L2-normalised. Parameters carry the Hugging Face names (`pooler.*` is not part of it).
///
/// Activations between blocks are packed tokens [Σ lengths, hidden] with the sequence lengths; below block 1
/// (`through: 0`) they are the token ids themselves, so every split point works.
public final class BERTEncoder: Module, Backbone {
    public typealias Input = TokenBatch

    public let configuration: BERTConfiguration
    /// L2-normalise the pooled feature (as sentence-transformers' all-MiniLM-L6-v2 pipeline does).
    public var normalizesFeatures: Bool
    let embeddings: BERTEmbeddings
    let layers: [BERTLayer]

    /// An encoder of `configuration`'s shape with zero weights (LayerNorms 1 and 0): load pretrained ones.
    public init(_ configuration: BERTConfiguration, normalizesFeatures: Bool = true) {
        self.configuration = configuration
        self.normalizesFeatures = normalizesFeatures
        embeddings = BERTEmbeddings(configuration)
        var layers: [BERTLayer] = []
        for _ in 0..<configuration.layers { layers.append(BERTLayer(configuration)) }
        self.layers = layers
        super.init()
        child("embeddings", embeddings)
        child("encoder", ModuleGroup([("layer", ModuleGroup(list: layers))]))
    }

    /// Builds the encoder from a folder holding `config.json` and `model.safetensors` (Hugging Face layout).
    /// Keys may carry a `bert.` prefix (as in fine-tuned classification checkpoints); `pooler.*`,
    /// `embeddings.position_ids` and heads on top are ignored, every encoder weight must be present.
    public static func load(folder: URL, normalizesFeatures: Bool = true) throws -> BERTEncoder {
        let configuration = try BERTConfiguration(contentsOf: folder.appendingPathComponent("config.json"))
        let weightsURL = folder.appendingPathComponent("model.safetensors")
        guard FileManager.default.fileExists(atPath: weightsURL.path) else {
            throw EngineError.invalidFile(weightsURL.path, "model file not found; fetch the pretrained models with: scripts/fetch-models (or set TL_MODELS_DIR)")
        }
        let file = try SafeTensors.read(weightsURL)
        let encoder = BERTEncoder(configuration, normalizesFeatures: normalizesFeatures)
        let wanted = Set(encoder.namedParameters().map(\.name))
        var state: [String: Tensor] = [:]
        for name in file.names {
            let key = name.hasPrefix("bert.") ? String(name.dropFirst(5)) : name
            if wanted.contains(key) { state[key] = try file.tensor(named: name) }
        }
        try encoder.load(state, strict: true, source: weightsURL.path)
        return encoder
    }

    public var featureCount: Int { configuration.hiddenSize }

    public var blocks: [[String]] { [["embeddings"]] + layers.indices.map { ["encoder.layer.\($0)"] } }

    public var blockNames: [String] { ["embeddings (word, position, type, LayerNorm)"] + layers.indices.map { "encoder layer \($0)" } }

    public var activationsAreSequences: Bool { true }

    /// Runs layers `range` (layer i is block i + 1) on packed tokens.
    func layers(_ range: Range<Int>, _ x: Variable, lengths: [Int]) -> Variable {
        var x = x
        for i in range { x = layers[i](x, lengths: lengths) }
        return x
    }

    public func forward(_ input: TokenBatch, through end: Int) -> Activation {
        precondition(end >= 0 && end <= blocks.count, "BERTEncoder: block \(end) out of 0...\(blocks.count)")
        let longest = input.lengths.max() ?? 0
        precondition(longest <= configuration.maxPositions,
                     "BERTEncoder: \(longest) tokens exceed the model's \(configuration.maxPositions) positions")
        if end == 0 { return Activation(ids: input.ids, lengths: input.lengths) }
        let x = embeddings(packedIDs: input.ids, lengths: input.lengths)
        return Activation(layers(0..<end - 1, x, lengths: input.lengths), lengths: input.lengths)
    }

    public func forward(_ activation: Activation, from start: Int) -> Variable {
        precondition(start >= 0 && start <= blocks.count, "BERTEncoder: block \(start) out of 0...\(blocks.count)")
        guard let lengths = activation.lengths else { preconditionFailure("BERTEncoder: activations must carry lengths") }
        let x: Variable
        if start == 0 {
            guard let ids = activation.ids else { preconditionFailure("BERTEncoder: block 0 takes token ids") }
            x = layers(0..<layers.count, embeddings(packedIDs: ids, lengths: lengths), lengths: lengths)
        } else {
            x = layers(start - 1..<layers.count, activation.value, lengths: lengths)
        }
        let pooled = x.meanPooled(lengths: lengths)
        return normalizesFeatures ? pooled.l2Normalized() : pooled
    }
}
