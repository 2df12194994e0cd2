import Foundation
import TransferEngine

/// How a clip's window embeddings become one feature vector.
///
/// Measured on the fixtures (logistic head on frozen features; adaptation at feature level, seeds 42, 1, 2;
/// re-measured 2026-11-29 after feature-level adaptation began standardising the target with its own statistics):
/// | pooling | source/test, 5 per word | all labels | target: source-only | best adaptation | oracle |
/// |---|---|---|---|---|---|
/// | mean | 0.92 | 0.99 | 0.725 / 0.683 / 0.667 | 0.775 / 0.767 / 0.767 | 0.875 / 0.892 / 0.908 |
/// | mean-max | 0.94 | 1.00 | 0.683 / 0.700 / 0.733 | 0.783 / 0.800 / 0.775 | 0.908 / 0.867 / 0.908 |
/// The max half helps in-domain a little and adapts a little better on average (0.786 against 0.770), but its
/// margin over source-only is less even (+10.0 / +10.0 / +4.2 points against +5.0 / +8.4 / +10.0), so `mean`
/// stays the default: every seed gains at least 5 points with it.
public enum WindowPooling: String, CaseIterable, Sendable {
    /// Mean over the windows: 96 features.
    case mean
    /// Mean, then max over the windows, concatenated: 192 features.
    case meanMax = "mean-max"
}

/// Google's speech_embedding (as shipped by openWakeWord 0.4.0): 76 log-mel frames x 32 bands -> 96 features,
/// 20 convolutions, 328k parameters.
///
/// Input of `forward(_:through:)`: `[B, W, 76, 32]`, W windows per clip (openWakeWord's scale, x/10 + 2 of the
/// dB mel), which become W rows per sample `[B·W, 76, 32, 1]` (NHWC: H = time, W = mel, C = 1; the ONNX graph's
/// Reshape to NCHW [B, 1, 76, 34] is the same memory). After the last block the W window embeddings of each clip
/// are pooled (`WindowPooling`).
///
/// Architecture (declared once, in `layers`; checked against onnxruntime on the original `embedding_model.onnx`,
/// see the golden test):
/// - conv0: pad the mel axis by 1 each side, 3x3 conv 1 -> 24 without bias (76x34 -> 74x32), ReLU, then a real
///   BatchNorm `bn0` (eps 1e-3, not folded), LeakyReLU(0.2), max(x, -0.4).
/// - conv1...conv18: odd ones 1x3 padded by 1 in width (same), even ones 3x1 unpadded in height; BatchNorm is
///   folded into their weights and biases; each is followed by LeakyReLU(0.2) and max(x, -0.4). Channels 24
///   (conv1-2), 48 (3-6), 72 (7-10), 96 (11-18). Max pooling (no padding) after conv2, 6, 10, 14, 18 with
///   kernel = stride 2x2, 1x2, 2x2, 1x2, 2x2 (time x mel).
/// - conv19: 3x1, 96 -> 96, no bias, no activation -> [B·W, 1, 1, 96].
///
/// Blocks for unfreezing, bottom to top: `conv0`+`bn0`; then one per pooling stage (conv1-2, conv3-6, conv7-10,
/// conv11-14, conv15-18); then `conv19`. Only `bn0` is a BatchNorm layer: the other 18 have been folded into
/// the convolutions by the converter, so AdaBN can re-estimate the statistics of `bn0` only.
public final class SpeechEmbedding: Module, Backbone {
    public typealias Input = Tensor

    public static let frames = 76
    public static let bands = 32
    public static let width = 96
    /// The activation's slope and floor.
    public static let slope: Float = 0.2, floor: Float = -0.4

    /// One convolution and what follows it. Time is never padded.
    public struct Layer: Sendable {
        public let outputs: Int
        public let kernel: (time: Int, mel: Int)
        /// Zeros added on each side of the mel axis.
        public let melPadding: Int
        /// A bias (the BatchNorm folded in by the converter).
        public let bias: Bool
        /// ReLU, then `bn0`, before the activation.
        public let batchNorm: Bool
        /// LeakyReLU(`slope`), then max(x, `floor`).
        public let activates: Bool
        /// Max pooling (time, mel), kernel = stride, after the activation.
        public let pool: (time: Int, mel: Int)?

        /// 1x3 along mel, padded.
        static func mel(_ outputs: Int) -> Layer {
            Layer(outputs: outputs, kernel: (1, 3), melPadding: 1, bias: true, batchNorm: false, activates: true, pool: nil)
        }

        /// 3x1 along time, unpadded.
        static func time(_ outputs: Int, pool: (time: Int, mel: Int)? = nil) -> Layer {
            Layer(outputs: outputs, kernel: (3, 1), melPadding: 0, bias: true, batchNorm: false, activates: true, pool: pool)
        }
    }

    /// conv0 ... conv19, the network's one declaration of its layers.
    public static let layers: [Layer] = [
        Layer(outputs: 24, kernel: (3, 3), melPadding: 1, bias: false, batchNorm: true, activates: true, pool: nil),
        .mel(24), .time(24, pool: (2, 2)),
        .mel(48), .time(48), .mel(48), .time(48, pool: (1, 2)),
        .mel(72), .time(72), .mel(72), .time(72, pool: (2, 2)),
        .mel(96), .time(96), .mel(96), .time(96, pool: (1, 2)),
        .mel(96), .time(96), .mel(96), .time(96, pool: (2, 2)),
        Layer(outputs: 96, kernel: (3, 1), melPadding: 0, bias: false, batchNorm: false, activates: false, pool: nil),
    ]

    public let convs: [Conv2d]
    public let bn0: BatchNorm
    public let pooling: WindowPooling

    public var featureCount: Int { pooling == .mean ? SpeechEmbedding.width : 2 * SpeechEmbedding.width }
    public var activationsAreSequences: Bool { false }

    /// Convolutions per block: conv0 (with bn0), the five pooling stages, conv19.
    static let blockConvs: [Range<Int>] = [0..<1, 1..<3, 3..<7, 7..<11, 11..<15, 15..<19, 19..<20]

    public var blocks: [[String]] {
        SpeechEmbedding.blockConvs.enumerated().map { i, r in r.map { "conv\($0)" } + (i == 0 ? ["bn0"] : []) }
    }

    public var blockNames: [String] {
        ["conv0 + bn0 (76x32 -> 74x32x24; bn0 is the only BatchNorm, the one AdaBN re-estimates)", "conv1-2 + pool (-> 36x16x24)", "conv3-6 + pool (-> 32x8x48)",
         "conv7-10 + pool (-> 14x4x72)", "conv11-14 + pool (-> 10x2x96)", "conv15-18 + pool (-> 3x1x96)",
         "conv19 (-> 96)"]
    }

    /// Randomly initialised (PyTorch's default initialisation); load the pretrained weights with `load(file:)`.
    public init(pooling: WindowPooling = .mean, rng: inout RNG) {
        var convs: [Conv2d] = []
        var inputs = 1
        for l in SpeechEmbedding.layers {
            let p = l.melPadding
            convs.append(Conv2d(inputChannels: inputs, outputChannels: l.outputs, kernelSize: (l.kernel.time, l.kernel.mel),
                                padding: p > 0 ? .explicit(top: 0, bottom: 0, left: p, right: p) : .valid, bias: l.bias,
                                rng: &rng))
            inputs = l.outputs
        }
        self.convs = convs
        // Keras' BatchNormalization momentum 0.99 is PyTorch's 0.01.
        bn0 = BatchNorm(channels: SpeechEmbedding.layers[0].outputs, eps: 1e-3, momentum: 0.01)
        self.pooling = pooling
        super.init()
        for (i, c) in convs.enumerated() { child("conv\(i)", c) }
        child("bn0", bn0)
    }

    // MARK: Running

    /// Convolution `i` and what follows it (`layers[i]`), on the tape.
    func layer(_ i: Int, _ x: Variable) -> Variable {
        let l = SpeechEmbedding.layers[i]
        var y = convs[i](x)
        if l.batchNorm { y = bn0(y.relu()) }
        if l.activates { y = y.leakyReluFloor(slope: SpeechEmbedding.slope, floor: SpeechEmbedding.floor) }
        if let p = l.pool { y = y.maxPool2d(kernels: (p.time, p.mel), strides: (p.time, p.mel)) }
        return y
    }

    func block(_ b: Int, _ x: Variable) -> Variable {
        var y = x
        for i in SpeechEmbedding.blockConvs[b] { y = layer(i, y) }
        return y
    }

    /// Use `EmbeddingInference` where no gradient and no BatchNorm batch statistics are needed (tests switch it
    /// off to compare the two paths).
    public var fastInference = true

    /// Whether blocks `range` can run on the inference path for `input`.
    func runsFast(_ range: Range<Int>, _ input: Variable) -> Bool {
        guard fastInference, !range.isEmpty else { return false }
        if range.contains(0) && bn0.usesBatchStatistics { return false }
        guard Autograd.isRecording else { return true }
        if input.requiresGrad { return false }
        let convs = range.flatMap { SpeechEmbedding.blockConvs[$0] }.map { self.convs[$0] }
        return !convs.contains { $0.weight.requiresGrad || ($0.bias?.requiresGrad ?? false) }
            && !(range.contains(0) && (bn0.weight.requiresGrad || bn0.bias.requiresGrad))
    }

    /// Blocks `range` on NHWC activations: on the tape up to the first block from which the rest can run on the
    /// inference path (e.g. AdaBN: bn0 with batch statistics on the tape, blocks 1-6 fast).
    func run(_ range: Range<Int>, _ x: Variable) -> Variable {
        var y = x
        for b in range {
            if runsFast(b..<range.upperBound, y) {
                let layers = SpeechEmbedding.blockConvs[b].lowerBound..<SpeechEmbedding.blockConvs[range.upperBound - 1].upperBound
                return Variable(EmbeddingInference(model: self).run(y.value, layers: layers))
            }
            y = block(b, y)
        }
        return y
    }

    public func forward(_ input: Tensor, through end: Int) -> Activation {
        precondition(input.rank == 4 && input.shape[2] == SpeechEmbedding.frames && input.shape[3] == SpeechEmbedding.bands,
                     "SpeechEmbedding: input shape \(input.shape) must be [clips, windows, 76, 32]")
        let windows = input.shape[1]
        let x = Variable(input.reshaped([input.shape[0] * windows, SpeechEmbedding.frames, SpeechEmbedding.bands, 1]))
        return Activation(run(0..<end, x), rowsPerSample: windows)
    }

    public func forward(_ activation: Activation, from start: Int) -> Variable {
        let x = run(start..<blocks.count, activation.value)
        return x.reshaped([x.shape[0], SpeechEmbedding.width]).poolWindows(activation.rowsPerSample,
                                                                             includeMax: pooling == .meanMax)
    }

    /// Embeddings of single windows `[N, 76, 32]` (or `[N, 76, 32, 1]`) -> `[N, 96]`, no pooling.
    public func embed(windows: Tensor) -> Variable {
        let x = run(0..<blocks.count, Variable(windows.reshaped([windows.shape[0], SpeechEmbedding.frames, SpeechEmbedding.bands, 1])))
        return x.reshaped([windows.shape[0], SpeechEmbedding.width])
    }

    // MARK: Loading the converted ONNX file

    /// The ONNX initializers are TensorFlow op names, not module paths, so they are mapped explicitly:
    ///
    /// | parameter | initializer in `embedding.safetensors` |
    /// |---|---|
    /// | `conv0.weight` [24,1,3,3] | `model/conv2d/StatefulPartitionedCall/StatefulPartitionedCall/Conv2D/ReadVariableOp:0` |
    /// | `bn0.weight` (scale) | `model/batch_normalization/ReadVariableOp:0` |
    /// | `bn0.bias` | `model/batch_normalization/ReadVariableOp_1:0` |
    /// | `bn0.running_mean` | `model/batch_normalization/FusedBatchNormV3/ReadVariableOp:0` |
    /// | `bn0.running_var` | `model/batch_normalization/FusedBatchNormV3/ReadVariableOp_1:0` |
    /// | `convN.weight`, `convN.bias` (N = 1...18) | `model/conv2d_N/Conv2D_weights_fused_bn`, `..._bias_fused_bn` |
    /// | `conv19.weight` [96,96,3,1] | `model/conv2d_19/Conv2D/ReadVariableOp:0` |
    ///
    /// (The BatchNormalization node's inputs are scale, B, mean, var in that order.) Conv weights are ONNX's
    /// [O, I, KH, KW], the engine's layout, with H = time and W = mel as here. The graph's remaining
    /// initializers are constants of its structure and are checked, not loaded: `pad_const__6` (pad the mel
    /// axis by 1), `new_shape__315` ([-1, 1, 76, 34]), `new_shape__264` ([-1, 1, 1, 96]) and
    /// `const_fold_opt__286` (the -0.4 floor).
    public static func parameterMap() -> [String: String] {
        var m: [String: String] = [
            "conv0.weight": "model/conv2d/StatefulPartitionedCall/StatefulPartitionedCall/Conv2D/ReadVariableOp:0",
            "bn0.weight": "model/batch_normalization/ReadVariableOp:0",
            "bn0.bias": "model/batch_normalization/ReadVariableOp_1:0",
            "bn0.running_mean": "model/batch_normalization/FusedBatchNormV3/ReadVariableOp:0",
            "bn0.running_var": "model/batch_normalization/FusedBatchNormV3/ReadVariableOp_1:0",
            "conv19.weight": "model/conv2d_19/Conv2D/ReadVariableOp:0",
        ]
        for n in 1...18 {
            m["conv\(n).weight"] = "model/conv2d_\(n)/Conv2D_weights_fused_bn"
            m["conv\(n).bias"] = "model/conv2d_\(n)/Conv2D_bias_fused_bn"
        }
        return m
    }

    /// Graph constants that must hold these values for the architecture above to be the file's.
    static let structuralConstants: [String: [Double]] = [
        "pad_const__6": [0, 0, 1, 0, 0, 0, 1, 0],
        "new_shape__315": [-1, 1, 76, 34],
        "new_shape__264": [-1, 1, 1, 96],
        "const_fold_opt__286": [-0.4],
    ]

    /// Loads `embedding.safetensors` strictly: every parameter and buffer from its initializer with the exact
    /// shape, every initializer of the file used or checked, nothing unknown.
    public func load(file: SafeTensorsFile) throws {
        let map = SpeechEmbedding.parameterMap()
        let known = Set(map.values).union(SpeechEmbedding.structuralConstants.keys)
        if let extra = file.names.first(where: { !known.contains($0) }) {
            throw EngineError.invalidFile(file.path, "unexpected tensor '\(extra)': not speech_embedding as converted from openWakeWord 0.4.0")
        }
        for (name, expected) in SpeechEmbedding.structuralConstants {
            guard file.contains(name) else { throw EngineError.invalidFile(file.path, "missing tensor '\(name)'") }
            let values: [Double]
            if try file.dtype(of: name).isInteger {
                values = try file.int64(named: name).map(Double.init)
            } else {
                values = try file.tensor(named: name).scalars.map(Double.init)
            }
            guard values.count == expected.count, zip(values, expected).allSatisfy({ abs($0 - $1) < 1e-6 }) else {
                throw EngineError.invalidFile(file.path, "constant '\(name)' is \(values), expected \(expected): a different graph")
            }
        }
        var state: [String: Tensor] = [:]
        for (param, variable) in namedParameters() + namedBuffers() {
            guard let source = map[param] else {
                throw EngineError.invalidFile(file.path, "no initializer is mapped to parameter '\(param)'")
            }
            guard file.contains(source) else { throw EngineError.invalidFile(file.path, "missing tensor '\(source)' (for \(param))") }
            let shape = try file.shape(of: source)
            guard shape == variable.value.shape else {
                throw EngineError.invalidFile(file.path, "tensor '\(source)' has shape \(shape), \(param) needs \(variable.value.shape)")
            }
            state[param] = try file.tensor(named: source)
        }
        try load(state, strict: true, source: file.path)
    }

    /// The pretrained weights, relative to the models folder.
    public static let modelPath = "speech-embedding/embedding.safetensors"

    /// The pretrained backbone from `modelPath` in the models folder.
    public static func pretrained(pooling: WindowPooling = .mean) throws -> SpeechEmbedding {
        let url = try ModelStore.file(modelPath)
        var rng = RNG(seed: 0)
        let model = SpeechEmbedding(pooling: pooling, rng: &rng)
        try model.load(file: try SafeTensors.read(url))
        return model
    }
}
