import SpeechTL
import TransferEngine

/// W6: openWakeWord's log-mel front-end on 1 s 16 kHz clips; W7: speech_embedding on 76x32 windows. Batch 256
/// each, as in scripts/bench-peers (onnxruntime on melspectrogram.onnx and embedding_model.onnx).
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
    ]
}
