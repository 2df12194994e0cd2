import Foundation
import TransferEngine

/// The from-scratch baseline: a small CNN on the whole clip's log-mel, trained on the same data.
///
/// Input `[B, 1, T, 32]` (one "window" spanning the clip's T frames, 97 for 1 s). Three blocks of 3x3 conv
/// (same padding) + BatchNorm + ReLU, with 2x2 max pooling after the first two and global average pooling after
/// the last: 16, 32, 64 channels, 64 features, 28k parameters. The log-mel is used as openWakeWord scales it
/// (x/10 + 2); the first BatchNorm takes care of its offset.
public final class ScratchCNN: Module, StackedBackbone {
    public typealias Input = Tensor
    let convs: [Conv2d]
    let norms: [BatchNorm]
    public static let channels = [16, 32, 64]

    public var featureCount: Int { ScratchCNN.channels.last! }
    public var activationsAreSequences: Bool { false }
    public var blocks: [[String]] { (0..<3).map { ["conv\($0)", "bn\($0)"] } }
    public var blockNames: [String] { ["conv0 + bn0 + pool", "conv1 + bn1 + pool", "conv2 + bn2 + average"] }

    public init(rng: inout RNG) {
        var convs: [Conv2d] = [], norms: [BatchNorm] = []
        var inputs = 1
        for c in ScratchCNN.channels {
            convs.append(Conv2d(inputChannels: inputs, outputChannels: c, kernelSize: 3, padding: .symmetric(1), rng: &rng))
            norms.append(BatchNorm(channels: c))
            inputs = c
        }
        self.convs = convs
        self.norms = norms
        super.init()
        for i in 0..<3 {
            child("conv\(i)", convs[i])
            child("bn\(i)", norms[i])
        }
    }

    public func block(_ i: Int, _ x: Variable) -> Variable {
        let y = norms[i](convs[i](x), activation: .relu)
        return i < 2 ? y.maxPool2d(kernel: 2) : y
    }

    public func forward(_ input: Tensor, through end: Int) -> Activation {
        precondition(input.rank == 4 && input.shape[1] == 1 && input.shape[3] == SpeechEmbedding.bands,
                     "ScratchCNN: input shape \(input.shape) must be [clips, 1, frames, 32]")
        return Activation(run(Variable(input.reshaped([input.shape[0], input.shape[2], input.shape[3], 1])), blocks: 0..<end))
    }

    public func forward(_ activation: Activation, from start: Int) -> Variable {
        run(activation.value, blocks: start..<blocks.count).globalAveragePool()
    }
}
