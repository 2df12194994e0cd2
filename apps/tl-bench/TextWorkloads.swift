import Foundation
import TextTL
import TransferEngine

/// W4 (all-MiniLM-L6-v2 forward + mean pooling) and W5 (its fine-tuning step), as scripts/bench/peer_worker.py
/// runs them on transformers' BertModel: random word pieces between [CLS] and [SEP], every sequence full length.
func textWorkloads() -> [Workload] {
    [
        Workload(id: "W4", group: "W4", description: "MiniLM-L6 forward + mean pool, 64x128", unit: "sequences/s",
                 gigaflopPerUnit: {
                     let config = try BERTConfiguration(contentsOf: miniLMFolder.appendingPathComponent("config.json"))
                     return 2 * Double(config.multiplyAdds(length: 128)) / 1e9
                 }) {
            let encoder = try miniLM()
            let batch = randomTokens(batch: 64, length: 128, seed: 5)
            return {
                let f = Autograd.noGrad { encoder.features(batch).value }
                precondition(f.shape == [64, 384])
                return 64
            }
        },
        Workload(id: "W5", group: "W5", description: "MiniLM-L6 fine-tune step (top 2 layers), 32x64", unit: "sequences/s") {
            // The whole forward runs every step (no cached frozen activations, unlike the fine-tuning workflow),
            // layers 4 and 5 plus a 2-class linear head train, cross-entropy, AdamW; no dropout (as the peer's eval()).
            let encoder = try miniLM()
            encoder.setTrainableTop(2)
            var rng = RNG(seed: 6)
            let head = Linear(inputs: encoder.featureCount, outputs: 2, rng: &rng)
            let batch = randomTokens(batch: 32, length: 64, seed: 7)
            let labels = (0..<32).map { _ in rng.int(below: 2) }
            let optimizer = AdamW(groups: [ParameterGroup(module: encoder, prefixes: encoder.topBlockPrefixes(2), namePrefix: "backbone."),
                                           ParameterGroup(module: head, namePrefix: "head.")],
                                  learningRate: 2e-5, weightDecay: 0.01)
            return {
                optimizer.zeroGrad()
                let loss = Variable.crossEntropy(logits: head(encoder.features(batch)), labels: labels)
                loss.backward()
                optimizer.step(lr: 2e-5)
                return 32
            }
        },
    ]
}

private var miniLMFolder: URL { ModelStore.directory.appendingPathComponent("all-MiniLM-L6-v2") }

/// The encoder with mean pooling only (no L2 normalisation), as the peer pools.
private func miniLM() throws -> BERTEncoder {
    let encoder = try BERTEncoder.load(folder: miniLMFolder, normalizesFeatures: false)
    encoder.freeze()
    encoder.train(false)
    return encoder
}

/// Random word pieces (ids 1000..<30522) between [CLS] and [SEP], no padding.
private func randomTokens(batch: Int, length: Int, seed: UInt64) -> TokenBatch {
    var rng = RNG(seed: seed)
    let rows = (0..<batch).map { _ in [101] + (0..<length - 2).map { _ in 1000 + rng.int(below: 30522 - 1000) } + [102] }
    return TokenBatch(rows)
}
