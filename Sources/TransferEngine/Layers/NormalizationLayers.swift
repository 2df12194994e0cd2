import Foundation

/// Layer normalisation over the last axis (BERT's LayerNorm; eps 1e-12 there). Input [..., dimension].
public final class LayerNorm: Module {
    public let weight: Variable
    public let bias: Variable
    public let eps: Float

    /// weight = 1, bias = 0 (PyTorch's initialisation).
    public init(dimension: Int, eps: Float = 1e-5) {
        weight = Variable(Tensor(shape: [dimension], repeating: 1))
        bias = Variable(Tensor(zeros: [dimension]))
        self.eps = eps
        super.init()
        register(parameter: "weight", weight)
        register(parameter: "bias", bias)
    }

    public func callAsFunction(_ x: Variable) -> Variable { x.layerNorm(weight: weight, bias: bias, eps: eps) }
}

/// Batch normalisation over every axis but the last: input [N, C] or NHWC [N, H, W, C].
///
/// Parameters weight, bias and buffers running_mean, running_var carry PyTorch's names. In training mode the
/// batch statistics normalise and update the running ones; in eval mode, or whenever `frozenStatistics` is set
/// (BatchNorm inside frozen blocks while the rest of the model trains), the running statistics normalise and
/// never change. PyTorch's num_batches_tracked is kept as `batchesTracked`, not as a buffer, because pretrained
/// files need not carry it.
public final class BatchNorm: Module {
    public let weight: Variable
    public let bias: Variable
    public let runningMean: Variable
    public let runningVariance: Variable
    public let eps: Float
    /// Weight of the new batch in the running update (PyTorch convention, default 0.1; the TF-ported EfficientNet
    /// uses 0.01). nil means a cumulative average over every batch since the last reset (PyTorch's momentum=None).
    public var momentum: Float?
    /// Normalise with the running statistics and never update them, even in training mode.
    public var frozenStatistics = false
    /// Training batches seen since creation or the last `resetRunningStatistics()`.
    public private(set) var batchesTracked = 0

    public init(channels: Int, eps: Float = 1e-5, momentum: Float? = 0.1) {
        weight = Variable(Tensor(shape: [channels], repeating: 1))
        bias = Variable(Tensor(zeros: [channels]))
        runningMean = Variable(Tensor(zeros: [channels]))
        runningVariance = Variable(Tensor(shape: [channels], repeating: 1))
        self.eps = eps
        self.momentum = momentum
        super.init()
        register(parameter: "weight", weight)
        register(parameter: "bias", bias)
        register(buffer: "running_mean", runningMean)
        register(buffer: "running_var", runningVariance)
    }

    public var channels: Int { weight.value.count }

    /// True when a forward pass would use (and update) batch statistics.
    public var usesBatchStatistics: Bool { isTraining && !frozenStatistics }

    /// `activation` (e.g. `.relu`) is fused into the same passes: the bits of `layer(x).relu()`, faster.
    public func callAsFunction(_ x: Variable, activation: ClampActivation? = nil) -> Variable {
        var factor: Float? = nil
        if usesBatchStatistics {
            batchesTracked += 1
            factor = momentum ?? 1 / Float(batchesTracked)
        }
        return x.batchNorm(weight: weight, bias: bias, runningMean: runningMean, runningVariance: runningVariance,
                           useBatchStatistics: usesBatchStatistics, updateFactor: factor, eps: eps, activation: activation)
    }

    /// Running mean 0, variance 1, no batches seen: the start of AdaBN's re-estimation. Together with
    /// `momentum = nil` and training mode, the following forward passes (under `Autograd.noGrad`) leave the
    /// exact average of their batch statistics.
    public func resetRunningStatistics() {
        runningMean.value = Tensor(zeros: [channels])
        runningVariance.value = Tensor(shape: [channels], repeating: 1)
        batchesTracked = 0
    }
}

extension Module {
    /// Every BatchNorm in the tree with its dotted name, optionally only those under one of `prefixes` (at a dot
    /// boundary, as `freeze`). For freezing their statistics with the blocks they live in, or for AdaBN.
    public func batchNormLayers(under prefixes: [String] = []) -> [(name: String, layer: BatchNorm)] {
        namedModules().compactMap { name, module in
            guard let bn = module as? BatchNorm,
                  prefixes.isEmpty || prefixes.contains(where: { Module.matches(name, $0) }) else { return nil }
            return (name, bn)
        }
    }
}
