import Foundation
import TransferEngine

/// The from-scratch baseline: a small CNN in the spirit of the classic two-convolution Keras/PyTorch MNIST
/// examples, with BatchNorm: conv 3x3 (32) + BN + ReLU + max-pool 2, conv 3x3 (64) + BN + ReLU + max-pool 2,
/// flattened: 7 x 7 x 64 = 3136 features for the head at the default input of 28 x 28 (the fixtures' native
/// size; ceil(ceil(side / 2) / 2)² x 64 in general). Input RGB normalised like the pretrained network's.
///
/// Blocks: `conv1`+`bn1`, `conv2`+`bn2`.
public final class ScratchCNN: Module, StackedBackbone {
    public typealias Input = Tensor
    public static let defaultSize = 28

    let conv1: Conv2d, bn1: BatchNorm, conv2: Conv2d, bn2: BatchNorm
    let inputSize: Int
    public let featureCount: Int

    public init(inputSize: Int = defaultSize, rng: inout RNG) {
        self.inputSize = inputSize
        conv1 = Conv2d(inputChannels: 3, outputChannels: 32, kernelSize: 3, padding: .same, bias: false, rng: &rng)
        bn1 = BatchNorm(channels: 32)
        conv2 = Conv2d(inputChannels: 32, outputChannels: 64, kernelSize: 3, padding: .same, bias: false, rng: &rng)
        bn2 = BatchNorm(channels: 64)
        let side = ((inputSize + 1) / 2 + 1) / 2
        featureCount = side * side * 64
        super.init()
        child("conv1", conv1)
        child("bn1", bn1)
        child("conv2", conv2)
        child("bn2", bn2)
    }

    public var blocks: [[String]] { [["conv1", "bn1"], ["conv2", "bn2"]] }
    public var blockNames: [String] { ["conv1 3x3 3->32, bn1, max-pool 2", "conv2 3x3 32->64, bn2, max-pool 2"] }
    public var activationsAreSequences: Bool { false }

    public func block(_ i: Int, _ x: Variable) -> Variable {
        i == 0 ? bn1(conv1(x), activation: .relu).maxPool2d(kernel: 2, padding: .same)
            : bn2(conv2(x), activation: .relu).maxPool2d(kernel: 2, padding: .same)
    }

    /// Runs the remaining blocks, then flattens.
    public func forward(_ activation: Activation, from start: Int) -> Variable {
        let x = run(activation.value, blocks: start..<blocks.count)
        precondition(x.value.count == x.shape[0] * featureCount,
                     "ScratchCNN: built for \(inputSize)x\(inputSize) inputs, got an activation of shape \(x.shape)")
        return x.reshaped([x.shape[0], featureCount])
    }
}
