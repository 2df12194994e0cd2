import Foundation

/// y = x·Wᵀ + b over the last axis. W is [outputs, inputs] as in PyTorch files.
public final class Linear: Module {
    public let weight: Variable
    public let bias: Variable?

    /// Kaiming-uniform initialisation (PyTorch's default: bound 1/sqrt(inputs) for weight and bias).
    public init(inputs: Int, outputs: Int, bias: Bool = true, rng: inout RNG) {
        let bound = 1 / Float(inputs).squareRoot()
        weight = Variable(rng.uniformTensor([outputs, inputs], -bound, bound), requiresGrad: true)
        self.bias = bias ? Variable(rng.uniformTensor([outputs], -bound, bound), requiresGrad: true) : nil
        super.init()
        register(parameter: "weight", weight)
        if let b = self.bias { register(parameter: "bias", b) }
    }

    public func callAsFunction(_ x: Variable) -> Variable { x.linear(weight: weight, bias: bias) }
}
