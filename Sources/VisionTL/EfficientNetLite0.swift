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
    let expandConv: Conv2d?
    let bn0: BatchNorm?
    let depthwiseConv: Conv2d
    let bn1: BatchNorm
    let projectConv: Conv2d
    let bn2: BatchNorm

    public init(_ c: Configuration, batchNormEps eps: Float, momentum: Float, rng: inout RNG) {
        configuration = c
        if c.expansion != 1 {
            expandConv = Conv2d(inputChannels: c.inputs, outputChannels: c.expanded, kernelSize: 1, bias: false, rng: &rng)
            bn0 = BatchNorm(channels: c.expanded, eps: eps, momentum: momentum)
        } else {
            expandConv = nil
            bn0 = nil
        }
        depthwiseConv = Conv2d(inputChannels: c.expanded, outputChannels: c.expanded, kernelSize: c.kernel,
                               stride: c.stride, padding: .same, groups: c.expanded, bias: false, rng: &rng)
        bn1 = BatchNorm(channels: c.expanded, eps: eps, momentum: momentum)
        projectConv = Conv2d(inputChannels: c.expanded, outputChannels: c.outputs, kernelSize: 1, bias: false, rng: &rng)
        bn2 = BatchNorm(channels: c.outputs, eps: eps, momentum: momentum)
        super.init()
        if let expandConv, let bn0 {
            child("_expand_conv", expandConv)
            child("_bn0", bn0)
        }
        child("_depthwise_conv", depthwiseConv)
        child("_bn1", bn1)
        child("_project_conv", projectConv)
        child("_bn2", bn2)
    }

    /// [N, H, W, inputs] -> [N, ceil(H / stride), ceil(W / stride), outputs], on the tape.
    public func callAsFunction(_ x: Variable) -> Variable {
        var h = x
        if let expandConv, let bn0 { h = bn0(expandConv(h)).relu6() }
        h = bn1(depthwiseConv(h)).relu6()
        h = bn2(projectConv(h))
        return configuration.hasResidual ? h + x : h
    }
}

/// A list of modules named "0", "1", ... (PyTorch's ModuleList), so that `_blocks.7.<...>` is a path.
final class ModuleList<M: Module>: Module {
    let items: [M]
    init(_ items: [M]) {
        self.items = items
        super.init()
        for (i, m) in items.enumerated() { child(String(i), m) }
    }
}

/// EfficientNet-Lite0 (ImageNet), as DATA.md describes it: stem 3x3 stride-2 conv to 32 channels, 16 MBConv
/// blocks in 7 stages, 1x1 head conv to 1280, global average pool (the 1280-d feature), and `_fc` (1000 ImageNet
/// logits; not part of the feature path, kept for `logits` and the golden test). ReLU6 everywhere, BatchNorm eps
/// 1e-3 (momentum 0.01, the TF port's), TensorFlow SAME padding (the odd pixel goes bottom/right), no
/// squeeze-excite. Input: NHWC RGB normalised (x - 127) / 128, 224 x 224 as trained (any size >= 32 works).
///
/// Parameter names are the pretrained file's (`_conv_stem.weight`, `_bn0.*`, `_blocks.N._expand_conv.weight`,
/// ..., `_conv_head.weight`, `_bn1.*`, `_fc.*`), loaded 1:1 with `load(strict: true)`.
///
/// Blocks for unfreezing (18): the stem (`_conv_stem`, `_bn0`), `_blocks.0` ... `_blocks.15`, and the head
/// (`_conv_head`, `_bn1`). When a run needs no gradient through a block and its BatchNorms use running
/// statistics, the block runs on the fused inference path (`FusedEfficientNet`: BatchNorm folded into the
/// convolutions, bias + ReLU6 in the same pass, image by image so activations stay in cache); otherwise on the
/// tape with the engine's ops. Both compute the same function.
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

    let convStem: Conv2d
    let bn0: BatchNorm
    let mbBlocks: [MBConvBlock]
    let convHead: Conv2d
    let bn1: BatchNorm
    let fc: Linear
    /// Scratch buffers of the fused inference path, kept across calls.
    let scratch = ScratchPool()
    /// Per-image outputs of the fused path (frozen blocks), reused when the same image meets the same weights.
    let memo = ActivationMemo()
    /// Use the fused inference path where it applies (tests turn it off to compare both paths).
    public var fusedInference = true
    /// Reuse the fused path's per-image outputs for inputs seen before with the same weights (`memo`). Benchmarks
    /// that feed the same batch again and again turn it off, to time the computation.
    public var memoizesActivations = true

    /// Randomly initialised (PyTorch's defaults); load pretrained weights with `load(_:)` or `pretrained(from:)`.
    public init(rng: inout RNG) {
        let eps = Self.batchNormEps, momentum = Self.batchNormMomentum
        convStem = Conv2d(inputChannels: 3, outputChannels: Self.stemChannels, kernelSize: 3, stride: 2, padding: .same,
                          bias: false, rng: &rng)
        bn0 = BatchNorm(channels: Self.stemChannels, eps: eps, momentum: momentum)
        mbBlocks = Self.blockConfigurations.map { MBConvBlock($0, batchNormEps: eps, momentum: momentum, rng: &rng) }
        let top = mbBlocks.last!.configuration.outputs
        convHead = Conv2d(inputChannels: top, outputChannels: Self.headChannels, kernelSize: 1, bias: false, rng: &rng)
        bn1 = BatchNorm(channels: Self.headChannels, eps: eps, momentum: momentum)
        fc = Linear(inputs: Self.headChannels, outputs: Self.imageNetClasses, rng: &rng)
        super.init()
        child("_conv_stem", convStem)
        child("_bn0", bn0)
        child("_blocks", ModuleList(mbBlocks))
        child("_conv_head", convHead)
        child("_bn1", bn1)
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
                x = Variable(FusedEfficientNet(self, blocks: i..<j, scratch: scratch).run(x.value, blocks: i..<j, memo: memoizesActivations ? memo : nil))
                i = j
            } else if needsNoGradient(block: i, input: x) {
                x = Variable(statisticsBlock(i, x.value))
                i += 1
            } else {
                x = block(i, x)
                i += 1
            }
        }
        return x
    }

    /// Block `i` on the tape.
    func block(_ i: Int, _ x: Variable) -> Variable {
        if i == 0 { return bn0(convStem(x)).relu6() }
        if i <= mbBlocks.count { return mbBlocks[i - 1](x) }
        return bn1(convHead(x)).relu6()
    }

    func modules(ofBlock i: Int) -> Module {
        i == 0 ? ModuleList([convStem as Module, bn0]) : i <= mbBlocks.count ? mbBlocks[i - 1] : ModuleList([convHead as Module, bn1])
    }

    /// The fused path computes exactly the tape's function when nothing needs a gradient and every BatchNorm
    /// normalises with its running statistics.
    func canFuse(block i: Int, input x: Variable) -> Bool {
        needsNoGradient(block: i, input: x)
            && !modules(ofBlock: i).batchNormLayers().contains { $0.layer.usesBatchStatistics }
    }

    /// Nothing in block `i` records on the tape (inference, frozen blocks, AdaBN's statistics passes).
    func needsNoGradient(block i: Int, input x: Variable) -> Bool {
        guard fusedInference else { return false }
        if Autograd.isRecording && x.requiresGrad { return false }
        return !(Autograd.isRecording && modules(ofBlock: i).parameters.contains(where: \.requiresGrad))
    }

    /// Block `i` with training-mode BatchNorm but no gradient (AdaBN re-estimating statistics): the convolutions
    /// and activations run on the C kernels over the whole batch, each BatchNorm is the engine's (batch
    /// statistics, running-statistics update), so the result is the tape's.
    func statisticsBlock(_ i: Int, _ x: Tensor) -> Tensor {
        Autograd.noGrad {
            func convBN(_ conv: Conv2d, _ bn: BatchNorm, _ input: Tensor, relu6: Bool) -> Tensor {
                let raw = FoldedConvolution(conv, activation: .none).applyBatch(input)
                var y = bn(Variable(raw)).value
                if relu6 { y.withUnsafeMutableBufferPointer { p in for k in p.indices { p[k] = min(max(p[k], 0), 6) } } }
                return y
            }
            if i == 0 { return convBN(convStem, bn0, x, relu6: true) }
            if i > mbBlocks.count { return convBN(convHead, bn1, x, relu6: true) }
            let b = mbBlocks[i - 1]
            var h = x
            if let e = b.expandConv, let bn = b.bn0 { h = convBN(e, bn, h, relu6: true) }
            h = convBN(b.depthwiseConv, b.bn1, h, relu6: true)
            h = convBN(b.projectConv, b.bn2, h, relu6: false)
            if b.configuration.hasResidual { h.addInPlace(x) }
            return h
        }
    }
}
