import Foundation

/// 2-D convolution layer over NHWC input: [N, H, W, inputChannels] -> [N, OH, OW, outputChannels].
///
/// `weight` is [outputChannels, inputChannels/groups, KH, KW] and `bias` [outputChannels], named and laid out
/// as in PyTorch files. `groups == inputChannels == outputChannels` is a depthwise convolution (direct kernel).
public final class Conv2d: Module {
    public let weight: Variable
    public let bias: Variable?
    public let strides: (height: Int, width: Int)
    public let dilations: (height: Int, width: Int)
    public let groups: Int
    /// Mutable so a backbone can switch, e.g., to TensorFlow SAME after construction.
    public var padding: Padding

    public var kernelSize: (height: Int, width: Int) { (weight.shape[2], weight.shape[3]) }
    public var inputChannels: Int { weight.shape[1] * groups }
    public var outputChannels: Int { weight.shape[0] }

    /// PyTorch's default initialisation: kaiming_uniform(a: √5), i.e. weight and bias uniform in ±1/√fanIn with
    /// fanIn = inputChannels/groups · KH · KW.
    public init(inputChannels: Int, outputChannels: Int, kernelSize: (height: Int, width: Int),
                strides: (height: Int, width: Int) = (1, 1), padding: Padding = .valid,
                dilations: (height: Int, width: Int) = (1, 1), groups: Int = 1, bias: Bool = true, rng: inout RNG) {
        precondition(groups > 0 && inputChannels % groups == 0 && outputChannels % groups == 0,
                     "Conv2d: \(groups) groups must divide input channels \(inputChannels) and outputs \(outputChannels)")
        let shape = [outputChannels, inputChannels / groups, kernelSize.height, kernelSize.width]
        let bound = 1 / Float(inputChannels / groups * kernelSize.height * kernelSize.width).squareRoot()
        weight = Variable(rng.uniformTensor(shape, -bound, bound), requiresGrad: true)
        self.bias = bias ? Variable(rng.uniformTensor([outputChannels], -bound, bound), requiresGrad: true) : nil
        self.strides = strides
        self.dilations = dilations
        self.groups = groups
        self.padding = padding
        super.init()
        register(parameter: "weight", weight)
        if let b = self.bias { register(parameter: "bias", b) }
    }

    /// Square kernel, stride and dilation.
    public convenience init(inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int = 1,
                            padding: Padding = .valid, dilation: Int = 1, groups: Int = 1, bias: Bool = true,
                            rng: inout RNG) {
        self.init(inputChannels: inputChannels, outputChannels: outputChannels, kernelSize: (kernelSize, kernelSize),
                  strides: (stride, stride), padding: padding, dilations: (dilation, dilation), groups: groups,
                  bias: bias, rng: &rng)
    }

    /// Multiply-adds of one image [height, width, inputChannels] (each output value: inputChannels/groups x KH x KW
    /// products) and the output's size: the FLOP count a benchmark divides by (FLOPs = 2 x multiply-adds).
    public func multiplyAdds(height: Int, width: Int) -> (count: Int, height: Int, width: Int) {
        let g = WindowGeometry(input: [1, height, width, inputChannels], kernel: kernelSize, strides: strides,
                               dilations: dilations, padding: padding, op: "Conv2d")
        return (g.oh * g.ow * outputChannels * inputChannels / groups * g.kh * g.kw, g.oh, g.ow)
    }

    /// [N, H, W, inputChannels] -> [N, OH, OW, outputChannels].
    public func callAsFunction(_ x: Variable) -> Variable {
        x.conv2d(weight: weight, bias: bias, strides: (strides.height, strides.width), padding: padding,
                 dilations: (dilations.height, dilations.width), groups: groups)
    }
}
