import CKernels
import Foundation

/// A convolution with the BatchNorm after it folded in (w' = w * gamma / sqrt(var + eps),
/// b' = beta - mean * gamma / sqrt(var + eps)), its weights packed for the vectorised C kernels, and bias,
/// activation and residual applied in the kernels' store: the building block of a backbone's inference path
/// (a domain lists its layers; this type and `InferenceKernels` are the only way it reaches the kernels).
/// Channels-last; square kernels, TF "SAME" padding; pointwise, depthwise and dense (few-channel) convolutions.
public struct FoldedConvolution: Sendable {
    /// What the kernels apply after the bias (and the residual).
    public enum Activation: Sendable {
        case none, relu6
        var code: Int32 { self == .none ? Int32(CK_ACT_NONE) : Int32(CK_ACT_RELU6) }
    }
    enum Kind: Sendable { case pointwise, depthwise, direct }
    let kind: Kind
    public let inputs: Int, outputs: Int, kernel: Int, stride: Int
    /// pointwise: [in][outPad]; depthwise: [kh][kw][c]; direct: [kh][kw][in][outPad].
    public let weight: [Float]
    let outPad: Int
    public let bias: [Float]
    let activation: Activation

    /// The convolution alone (its own bias only), for the batch-statistics path.
    public init(_ conv: Conv2d, activation: Activation) {
        let c = conv.outputChannels
        self.init(conv, scale: [Float](repeating: 1, count: c), shift: [Float](repeating: 0, count: c), activation: activation)
    }

    /// The convolution followed by `bn` with its running statistics, folded.
    public init(_ conv: Conv2d, _ bn: BatchNorm, activation: Activation) {
        let (scale, shift) = bn.folded
        self.init(conv, scale: scale, shift: shift, activation: activation)
    }

    private init(_ conv: Conv2d, scale: [Float], shift: [Float], activation: Activation) {
        var shift = shift
        let c = scale.count
        if let convBias = conv.bias?.value.scalars { for j in 0..<c { shift[j] += convBias[j] * scale[j] } }
        let (kh, kw) = (conv.kernelSize.height, conv.kernelSize.width)
        precondition(kh == kw && conv.strides.height == conv.strides.width, "FoldedConvolution: square kernels only")
        inputs = conv.inputChannels
        outputs = conv.outputChannels
        kernel = kh
        stride = conv.strides.height
        bias = shift
        self.activation = activation
        outPad = (outputs + Int(CK_PACK_COLUMNS) - 1) / Int(CK_PACK_COLUMNS) * Int(CK_PACK_COLUMNS)
        if conv.groups == inputs && conv.groups == outputs && conv.groups > 1 {
            kind = .depthwise
            let w = conv.weight.value.scalars  // [C, 1, KH, KW]
            var packed = [Float](repeating: 0, count: kh * kw * outputs)
            for o in 0..<outputs { for t in 0..<(kh * kw) { packed[t * outputs + o] = w[o * kh * kw + t] * scale[o] } }
            weight = packed
        } else {
            precondition(conv.groups == 1, "FoldedConvolution: grouped convolutions are not supported")
            kind = kh == 1 && stride == 1 ? .pointwise : .direct
            weight = conv.packedWeight(columns: outPad, scale: scale)
        }
    }

    /// Output size and TF SAME padding before the image (top or left) along an axis of length n.
    public func geometry(_ n: Int) -> (out: Int, before: Int) {
        let out = (n + stride - 1) / stride
        let total = max((out - 1) * stride + kernel - n, 0)
        return (out, total / 2)
    }

    /// Runs on `count` consecutive images [count, h, w, inputs] -> [count, oh, ow, outputs] (residual, if any,
    /// shaped like the output). A pointwise convolution takes them as one matrix, so its weights are read once for
    /// all of them; the others go image by image. Each output value is computed the same way whatever `count`.
    public func apply(_ x: UnsafePointer<Float>, count: Int = 1, h: Int, w: Int, residual: UnsafePointer<Float>?,
                      into y: UnsafeMutablePointer<Float>) -> (h: Int, w: Int) {
        let (oh, top) = geometry(h), (ow, left) = geometry(w)
        weight.withUnsafeBufferPointer { wp in
            bias.withUnsafeBufferPointer { bp in
                switch kind {
                case .pointwise:
                    ck_pointwise(x, inputs, count * h * w, inputs, wp.baseAddress, outPad, bp.baseAddress, residual,
                                 outputs, y, outputs, outputs, activation.code)
                case .depthwise:
                    precondition(residual == nil)
                    for i in 0..<count {
                        ck_depthwise(x + i * h * w * inputs, h, w, inputs, wp.baseAddress, bp.baseAddress, kernel,
                                     kernel, stride, top, left, oh, ow, 0, oh, y + i * oh * ow * outputs, activation.code)
                    }
                case .direct:
                    precondition(residual == nil)
                    for i in 0..<count {
                        ck_conv_direct(x + i * h * w * inputs, h, w, inputs, wp.baseAddress, outPad, bp.baseAddress,
                                       outputs, kernel, kernel, stride, top, left, oh, ow, 0, oh,
                                       y + i * oh * ow * outputs, activation.code)
                    }
                }
            }
        }
        return (oh, ow)
    }

    /// Runs on a whole batch [N, H, W, inputs] -> [N, OH, OW, outputs], parallel over rows (the batch-statistics
    /// path: the BatchNorm that follows needs the whole batch's output first).
    public func applyBatch(_ x: Tensor) -> Tensor {
        let conv = self
        let (n, h, w) = (x.shape[0], x.shape[1], x.shape[2])
        let (oh, top) = conv.geometry(h), (ow, left) = conv.geometry(w)
        var y = Tensor(uninitializedShape: [n, oh, ow, conv.outputs])
        let inSize = h * w * conv.inputs, outSize = oh * ow * conv.outputs
        x.withUnsafeBufferPointer { src in
            y.withUnsafeMutableBufferPointer { dst in
                conv.weight.withUnsafeBufferPointer { wp in
                    conv.bias.withUnsafeBufferPointer { bp in
                        let px = src.baseAddress!, py = dst.baseAddress!, pw = wp.baseAddress!, pb = bp.baseAddress!
                        switch conv.kind {
                        case .pointwise:
                            let rows = n * h * w
                            Parallel.forEach(rows, minimumChunk: 256) { r in
                                ck_pointwise(px + r.lowerBound * conv.inputs, conv.inputs, r.count, conv.inputs, pw, conv.outPad,
                                             pb, nil, 0, py + r.lowerBound * conv.outputs, conv.outputs, conv.outputs, conv.activation.code)
                            }
                        case .depthwise, .direct:
                            Parallel.forEach(n * oh, minimumChunk: 4) { r in
                                var row = r.lowerBound
                                while row < r.upperBound {
                                    let image = row / oh, oy0 = row % oh, oy1 = min(oh, oy0 + r.upperBound - row)
                                    if conv.kind == .depthwise {
                                        ck_depthwise(px + image * inSize, h, w, conv.inputs, pw, pb, conv.kernel, conv.kernel, conv.stride,
                                                     top, left, oh, ow, oy0, oy1, py + image * outSize, conv.activation.code)
                                    } else {
                                        ck_conv_direct(px + image * inSize, h, w, conv.inputs, pw, conv.outPad, pb, conv.outputs,
                                                       conv.kernel, conv.kernel, conv.stride, top, left, oh, ow, oy0, oy1,
                                                       py + image * outSize, conv.activation.code)
                                    }
                                    row += oy1 - oy0
                                }
                            }
                        }
                    }
                }
            }
        }
        return y
    }
}

extension BatchNorm {
    /// This BatchNorm with its running statistics as y = x * scale + shift per channel:
    /// scale = gamma / sqrt(var + eps), shift = beta - mean * scale.
    public var folded: (scale: [Float], shift: [Float]) {
        let g = weight.value.scalars, b = bias.value.scalars
        let m = runningMean.value.scalars, v = runningVariance.value.scalars
        var scale = [Float](repeating: 0, count: channels), shift = [Float](repeating: 0, count: channels)
        for j in 0..<channels {
            scale[j] = g[j] / (v[j] + eps).squareRoot()
            shift[j] = b[j] - m[j] * scale[j]
        }
        return (scale, shift)
    }
}

extension Conv2d {
    /// The weight (ungrouped) as a GEMM's B matrix [KH·KW·inputs, columns], rows in (tap, input channel) order,
    /// output channel o in column o times `scale[o]` (if given), columns beyond the outputs zero.
    public func packedWeight(columns: Int, scale: [Float]? = nil) -> [Float] {
        precondition(groups == 1 && columns >= outputChannels, "Conv2d.packedWeight: ungrouped, columns >= outputs")
        let w = weight.value.scalars  // [O, I, KH, KW]
        let (o, i, taps) = (outputChannels, inputChannels, kernelSize.height * kernelSize.width)
        var p = [Float](repeating: 0, count: taps * i * columns)
        for oc in 0..<o {
            let s = scale?[oc] ?? 1
            for ic in 0..<i { for t in 0..<taps { p[(t * i + ic) * columns + oc] = w[(oc * i + ic) * taps + t] * s } }
        }
        return p
    }
}

/// The BLAS a domain's hand-laid inference path may use (besides `FoldedConvolution`): small products computed
/// one per thread, each on the calling thread.
public enum InferenceKernels {
    /// Row-major C[m, n] = A[m, k] B[k, n] (`lda`, `ldb`, `ldc`: row strides as stored), on the calling thread's
    /// BLAS (single-threaded inside `eachThread`).
    public static func sgemm(m: Int, n: Int, k: Int, a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                             c: UnsafeMutablePointer<Float>, ldc: Int) {
        BLAS.sgemm(m: m, n: n, k: k, a: a, lda: lda, b: b, ldb: ldb, c: c, ldc: ldc)
    }

    /// Runs `body(thread)` for every thread in 0..<threads at once, with BLAS single-threaded meanwhile (each
    /// thread's products run on its own core; OpenBLAS's own threads would oversubscribe them), then restores
    /// BLAS's thread count.
    public static func eachThread(_ threads: Int, _ body: (Int) -> Void) {
        BLAS.singleThreaded {
            Parallel.run(threads, body)
        }
    }
}
