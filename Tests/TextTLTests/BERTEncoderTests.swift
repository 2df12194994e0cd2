import XCTest
import TransferEngine
@testable import TextTL

/// The BERT encoder against Hugging Face `transformers` 4.40 BertModel on PyTorch 1.13 (Golden/encoder.json,
/// made by Golden/make_encoder_golden.py): pooled embeddings, per-token hidden states at block boundaries,
/// and gradients through the top two layers. Plus the packed attention op and the split points.
final class BERTEncoderTests: XCTestCase {
    static let folder = "all-MiniLM-L6-v2"

    /// The model folder from $TL_MODELS_DIR, ./Models, or the repository's Models folder.
    static let modelFolder: URL? = {
        [ModelStore.directory.appendingPathComponent(folder),
         WordPieceTests.repository.appendingPathComponent("Models").appendingPathComponent(folder)]
            .first { FileManager.default.fileExists(atPath: $0.appendingPathComponent("model.safetensors").path) }
    }()

    static let shared: Result<(BERTEncoder, WordPieceTokenizer), Error>? = modelFolder.map { url in
        Result { (try BERTEncoder.load(folder: url, normalizesFeatures: false),
                  try WordPieceTokenizer(vocabulary: url.appendingPathComponent("vocab.txt"))) }
    }

    func model() throws -> (BERTEncoder, WordPieceTokenizer) {
        guard let shared = Self.shared else {
            throw XCTSkip("Models/\(Self.folder) not found: fetch the pretrained models with scripts/fetch-models (or set TL_MODELS_DIR)")
        }
        let (encoder, tokenizer) = try shared.get()
        encoder.freeze()
        encoder.normalizesFeatures = false
        return (encoder, tokenizer)
    }

    struct Golden: Decodable {
        struct Text: Decodable { let text: String; let ids: [Int]; let pooled: String }
        struct Hidden: Decodable { let text: String; let ids: [Int]; let through_blocks: [String: String] }
        struct Grad: Decodable { let shape: [Int]; let values: String }
        struct Gradients: Decodable { let texts: [String]; let r: String; let loss: Double; let tensors: [String: Grad] }
        struct Tiny: Decodable { let ids: [Int]; let pooled: String }
        let texts: [Text]
        let hidden: Hidden
        let tiny: [Tiny]
        let gradients: Gradients
    }

    static let golden: Golden = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/encoder.json")
        do { return try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url)) } catch {
            fatalError("cannot read \(url.path) (\(error)); run Golden/make_encoder_golden.py")
        }
    }()

    static func floats(_ base64: String) -> [Float] {
        let bytes = [UInt8](Data(base64Encoded: base64)!)
        return stride(from: 0, to: bytes.count, by: 4).map {
            Float(bitPattern: UInt32(bytes[$0]) | UInt32(bytes[$0 + 1]) << 8 | UInt32(bytes[$0 + 2]) << 16 | UInt32(bytes[$0 + 3]) << 24)
        }
    }

    static func maxDifference(_ a: [Float], _ b: [Float]) -> Float {
        precondition(a.count == b.count, "\(a.count) vs \(b.count) values")
        return zip(a, b).map { abs($0 - $1) }.max() ?? 0
    }

    static func normalized(_ v: [Float]) -> [Float] {
        let norm = Float(v.reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot())
        return v.map { $0 / norm }
    }

    func testSanitySentence() throws {
        let (encoder, tokenizer) = try model()
        encoder.normalizesFeatures = true
        defer { encoder.normalizesFeatures = false }
        let batch = tokenizer.batch(["This is an example sentence"])
        XCTAssertEqual(batch.ids, [101, 2023, 2003, 2019, 2742, 6251, 102])
        let f = Autograd.noGrad { encoder.features(batch) }.value.scalars
        let expected: [Float] = [0.0677, 0.0635, 0.0487, 0.0793, 0.0375]
        print("BERTEncoderTests: sanity embedding starts \(f.prefix(5).map { String(format: "%.4f", $0) })")
        for (a, b) in zip(f.prefix(5), expected) { XCTAssertEqual(a, b, accuracy: 2e-4) }
    }

    /// Every golden text in one batch of mixed lengths (batch composition must not matter), then a few of them
    /// alone.
    func testPooledEmbeddingsMatchTransformers() throws {
        let (encoder, tokenizer) = try model()
        let golden = Self.golden.texts
        let ids = tokenizer.encode(golden.map(\.text), maxLength: 128)
        for (g, i) in zip(golden, ids) { XCTAssertEqual(i, g.ids, "ids of \(g.text.debugDescription)") }
        let all = Autograd.noGrad { encoder.features(TokenBatch(ids)) }.value
        var worst: Float = 0, worstNormalized: Float = 0
        for (k, g) in golden.enumerated() {
            let ours = Array(all.scalars[k * 384..<(k + 1) * 384]), expected = Self.floats(g.pooled)
            worst = max(worst, Self.maxDifference(ours, expected))
            worstNormalized = max(worstNormalized, Self.maxDifference(Self.normalized(ours), Self.normalized(expected)))
        }
        print("BERTEncoderTests: \(golden.count) texts, max |pooled - transformers| \(worst), normalised \(worstNormalized)")
        XCTAssertLessThan(worst, 1e-4)
        XCTAssertLessThan(worstNormalized, 1e-4)

        encoder.normalizesFeatures = true
        defer { encoder.normalizesFeatures = false }
        for k in [0, 2, 7, 24] {
            let alone = Autograd.noGrad { encoder.features(TokenBatch([ids[k]])) }.value.scalars
            XCTAssertLessThan(Self.maxDifference(alone, Self.normalized(Self.floats(golden[k].pooled))), 1e-4,
                              golden[k].text.debugDescription)
        }
    }

    func testHiddenStatesAtBlockBoundariesMatchTransformers() throws {
        let (encoder, tokenizer) = try model()
        let h = Self.golden.hidden
        let batch = tokenizer.batch([h.text])
        XCTAssertEqual(batch.ids, h.ids)
        for (key, values) in h.through_blocks.sorted(by: { $0.key < $1.key }) {
            let end = Int(key)!
            let act = Autograd.noGrad { encoder.forward(batch, through: end) }
            XCTAssertEqual(act.value.shape, [h.ids.count, 384])
            XCTAssertEqual(act.lengths, [h.ids.count])
            let d = Self.maxDifference(act.value.value.scalars, Self.floats(values))
            print("BERTEncoderTests: through block \(end), max |hidden - transformers| \(d)")
            XCTAssertLessThan(d, 1e-4, "through block \(end)")
        }
    }

    /// Splitting the forward pass at any block, through the workflows' per-sample split/join, changes nothing.
    func testEverySplitPointGivesTheSameFeatures() throws {
        let (encoder, tokenizer) = try model()
        let batch = tokenizer.batch(["short", "a somewhat longer sentence, with punctuation!", "mid length text here"])
        let whole = Autograd.noGrad { encoder.features(batch) }.value
        for k in 0...encoder.blocks.count {
            let parts = Autograd.noGrad { encoder.forward(batch, through: k) }.split()
            XCTAssertEqual(parts.map { $0.rows.shape[0] }, batch.lengths)
            let rejoined = Activation.join(parts.reversed(), sequences: true, rowsPerSample: 1)
            let f = Autograd.noGrad { encoder.forward(rejoined, from: k) }.value
            let expected = Tensor.concatenateRows((0..<3).reversed().map { whole.rows($0..<$0 + 1) })
            XCTAssertLessThan(f.maxAbsDifference(expected), 1e-5, "split at block \(k)")
        }
    }

    /// The same batch split at any block gives exactly `features`, to the bit (the workflows keep the frozen part's
    /// activations from the pass that computes the features, and the feature cache must not depend on which did).
    func testFeaturesSplitAtAnyBlockAreBitIdentical() throws {
        let (encoder, tokenizer) = try model()
        let batch = tokenizer.batch(["short", "a somewhat longer sentence, with punctuation!", "mid length text here"])
        let whole = Autograd.noGrad { encoder.features(batch) }.value
        for k in 0...encoder.blocks.count {
            let split = Autograd.noGrad { encoder.forward(encoder.forward(batch, through: k), from: k) }.value
            XCTAssertEqual(split.scalars, whole.scalars, "split at block \(k)")
        }
    }

    func testTopTwoLayerGradientsMatchTransformers() throws {
        let (encoder, tokenizer) = try model()
        let g = Self.golden.gradients
        encoder.normalizesFeatures = true
        encoder.setTrainableTop(2)
        defer { encoder.freeze(); encoder.zeroGrad(); encoder.normalizesFeatures = false }
        XCTAssertEqual(encoder.trainableParameters.count, 32, "16 tensors in each of the top two layers")
        let batch = tokenizer.batch(g.texts)
        let r = Variable(Tensor(shape: [4, 384], scalars: Self.floats(g.r)))
        let loss = (encoder.features(batch) * r).sum()
        XCTAssertEqual(Double(loss.value.scalar), g.loss, accuracy: 1e-3)
        loss.backward()
        let params = Dictionary(uniqueKeysWithValues: encoder.namedParameters().map { ($0.name, $0.variable) })
        XCTAssertNil(params["embeddings.word_embeddings.weight"]!.grad, "frozen embeddings get no (dense) gradient")
        XCTAssertNil(params["encoder.layer.3.output.dense.weight"]!.grad)
        for (name, expected) in g.tensors.sorted(by: { $0.key < $1.key }) {
            guard let grad = params[name]?.grad else { XCTFail("no gradient for \(name)"); continue }
            let ours = Array(grad.scalars.prefix(expected.shape.reduce(1, *)))
            let want = Self.floats(expected.values)
            let scale = max(want.map(abs).max() ?? 1, 1e-6)
            let d = Self.maxDifference(ours, want)
            print("BERTEncoderTests: d loss/d \(name): max difference \(d) (largest value \(scale))")
            XCTAssertLessThan(d, 1e-3 * scale + 1e-6, name)
        }
    }

    /// Another BERT shape (2 layers, hidden 32, 4 heads, eps 1e-5, 40 positions) saved by transformers as a
    /// classification checkpoint ("bert."-prefixed keys, a classifier and pooler beside them) loads through the
    /// same code and matches transformers. Needs no fetched model: Golden/tiny-bert is committed (200 KB).
    func testAnotherBERTShapeLoadsAndMatchesTransformers() throws {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/tiny-bert")
        let encoder = try BERTEncoder.load(folder: folder, normalizesFeatures: false)
        XCTAssertEqual(encoder.configuration.layers, 2)
        XCTAssertEqual(encoder.configuration.layerNormEps, 1e-5)
        XCTAssertEqual(encoder.blocks.count, 3)
        XCTAssertEqual(encoder.featureCount, 32)
        let tokenizer = try WordPieceTokenizer(vocabulary: folder.appendingPathComponent("vocab.txt"))
        XCTAssertEqual(tokenizer.vocabularySize, 1000)
        let batch = TokenBatch(Self.golden.tiny.map(\.ids))
        let f = Autograd.noGrad { encoder.features(batch) }.value.scalars
        var worst: Float = 0
        for (k, t) in Self.golden.tiny.enumerated() {
            worst = max(worst, Self.maxDifference(Array(f[k * 32..<(k + 1) * 32]), Self.floats(t.pooled)))
        }
        print("BERTEncoderTests: tiny BERT, \(Self.golden.tiny.count) sequences, max |pooled - transformers| \(worst)")
        XCTAssertLessThan(worst, 1e-4)
    }

    /// The fused layer (four engine ops) equals the layer built from unfused ops, forward and backward.
    func testFusedLayerEqualsUnfusedLayer() throws {
        let (encoder, tokenizer) = try model()
        let batch = tokenizer.batch(["one short text", "and a second, rather longer text to attend over"])
        let x = Autograd.noGrad { encoder.embeddings(packedIDs: batch.ids, lengths: batch.lengths) }
        let input = Variable(x.value, requiresGrad: true)
        let layer = encoder.layers[4]
        layer.unfreeze()
        defer { encoder.freeze(); encoder.zeroGrad() }
        var rng = RNG(seed: 9)
        let r = Variable(rng.uniformTensor(x.shape, 0.5, 1.5))
        (layer(input, lengths: batch.lengths) * r).sum().backward()
        let fused = [input.grad!] + layer.parameters.map { $0.grad! }
        input.grad = nil
        layer.zeroGrad()
        (layer.unfused(input, lengths: batch.lengths) * r).sum().backward()
        let plain = [input.grad!] + layer.parameters.map { $0.grad! }
        XCTAssertLessThan(layer(input, lengths: batch.lengths).value.maxAbsDifference(layer.unfused(input, lengths: batch.lengths).value), 1e-5)
        for (i, (a, b)) in zip(fused, plain).enumerated() {
            let scale = max(b.scalars.map(abs).max() ?? 0, 1e-3)
            XCTAssertLessThan(a.maxAbsDifference(b), 1e-4 * scale + 1e-6, "gradient \(i)")
        }
    }

    func testMultiplyAddsOfMiniLMShape() {
        // 6 layers x (128 tokens x (4 x 384² + 2 x 384 x 1536) + 2 x 128² x 384)
        XCTAssertEqual(BERTConfiguration().multiplyAdds(length: 128), 1_434_451_968)
    }

    func testConfigurationRejectsWhatTheEncoderDoesNotCompute() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bert-config-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let base: [String: Any] = ["model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
                                   "intermediate_size": 16, "vocab_size": 10, "max_position_embeddings": 4]
        let url = dir.appendingPathComponent("config.json")
        func write(_ changes: [String: Any]) throws {
            try JSONSerialization.data(withJSONObject: base.merging(changes) { $1 }).write(to: url)
        }
        for (changes, message) in [(["hidden_act": "gelu_new"], "hidden_act 'gelu_new'"),
                                   (["position_embedding_type": "relative_key"], "position_embedding_type"),
                                   (["model_type": "roberta"], "model_type 'roberta'"),
                                   (["num_attention_heads": 3], "inconsistent sizes")] as [([String: Any], String)] {
            try write(changes)
            XCTAssertThrowsError(try BERTConfiguration(contentsOf: url)) { error in
                XCTAssertTrue("\(error)".contains(message), "\(error)")
            }
        }
        try write([:])
        let c = try BERTConfiguration(contentsOf: url)
        XCTAssertEqual([c.hiddenSize, c.layers, c.heads, c.intermediateSize, c.vocabularySize, c.maxPositions], [8, 1, 2, 16, 10, 4])
        XCTAssertEqual(c.layerNormEps, 1e-12)
        // A random encoder of that shape has every block and parameter name of the file layout.
        let tiny = BERTEncoder(c)
        XCTAssertEqual(tiny.blocks, [["embeddings"], ["encoder.layer.0"]])
        XCTAssertEqual(Set(tiny.namedParameters().map(\.name)), [
            "embeddings.word_embeddings.weight", "embeddings.position_embeddings.weight",
            "embeddings.token_type_embeddings.weight", "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias",
            "encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.query.bias",
            "encoder.layer.0.attention.self.key.weight", "encoder.layer.0.attention.self.key.bias",
            "encoder.layer.0.attention.self.value.weight", "encoder.layer.0.attention.self.value.bias",
            "encoder.layer.0.attention.output.dense.weight", "encoder.layer.0.attention.output.dense.bias",
            "encoder.layer.0.attention.output.LayerNorm.weight", "encoder.layer.0.attention.output.LayerNorm.bias",
            "encoder.layer.0.intermediate.dense.weight", "encoder.layer.0.intermediate.dense.bias",
            "encoder.layer.0.output.dense.weight", "encoder.layer.0.output.dense.bias",
            "encoder.layer.0.output.LayerNorm.weight", "encoder.layer.0.output.LayerNorm.bias",
        ])
    }
}

extension BERTLayer {
    /// The same layer from unfused engine ops (Linear, attention, +, LayerNorm, GELU): the fused layer's reference.
    func unfused(_ x: Variable, lengths: [Int]) -> Variable {
        let a = Variable.packedSelfAttention(query: query(x), key: key(x), value: value(x), heads: heads, lengths: lengths)
        let h = attentionNorm(attentionOut(a) + x)
        let f = intermediate(h).gelu()
        return outputNorm(output(f) + h)
    }
}
