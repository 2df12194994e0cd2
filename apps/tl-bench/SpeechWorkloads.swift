import SpeechTL
import TransferEngine

/// W6: openWakeWord's log-mel front-end on 1 s 16 kHz clips; W7: speech_embedding on 76x32 windows. Batch 256
/// each, as in scripts/bench-peers (onnxruntime on melspectrogram.onnx and embedding_model.onnx). W9: a training
/// step of the from-scratch baseline (ScratchCNN on whole 1 s clips, batch 32, a 10-word head, AdamW), the step
/// that `extract` repeats 150 epochs long for its baseline.
func speechWorkloads() -> [Workload] {
    [
        Workload(id: "W6", group: "W6", description: "log-mel front-end, 256 x 1 s clips", unit: "clips/s") {
            var rng = RNG(seed: 6)
            let audio = rng.uniformTensor([256, 16000], -32767, 32767)
            let mel = MelSpectrogram()
            return { _ = mel(audio); return 256 }
        },
        Workload(id: "W7", group: "W7", description: "speech_embedding, 256 windows 76x32", unit: "windows/s") {
            let model = try SpeechEmbedding.pretrained()
            model.freeze()
            model.train(false)
            var rng = RNG(seed: 7)
            let windows = rng.uniformTensor([256, 76, 32], 0.1, 4)  // log-mel range after x/10 + 2, as the peer script
            return { Autograd.noGrad { _ = model.embed(windows: windows) }; return 256 }
        },
        Workload(id: "W9", group: "W9", description: "speech scratch CNN train step, 32 x 97x32", unit: "clips/s") {
            var rng = RNG(seed: 9)
            let net = ScratchCNN(rng: &rng)
            net.train(true)
            let head = Linear(inputs: net.featureCount, outputs: 10, rng: &rng)
            let mel = rng.uniformTensor([32, 1, 97, SpeechEmbedding.bands], 0.1, 4)
            let labels = (0..<32).map { _ in rng.int(below: 10) }
            let optimizer = AdamW(groups: [ParameterGroup(module: net, namePrefix: "backbone."),
                                           ParameterGroup(module: head, namePrefix: "head.")],
                                  learningRate: 1e-3, weightDecay: 0.01)
            return {
                optimizer.zeroGrad()
                let loss = Variable.crossEntropy(logits: head(net.features(mel)), labels: labels)
                loss.backward()
                optimizer.step(lr: 1e-3)
                return 32
            }
        },
    ]
}
