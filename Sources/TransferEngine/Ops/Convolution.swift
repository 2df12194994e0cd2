import CKernels
import Foundation

// 2-D convolution over NHWC tensors: im2col + one sgemm per group, a plain GEMM for 1x1 convolutions, and a
// direct kernel for depthwise convolutions (where a GEMM would have an inner dimension of KH*KW).

/// How a sliding window (convolution or pooling) treats the border.
public enum Padding: Equatable, Sendable {
    /// No padding: only windows that lie fully inside the input.
    case valid
    /// TensorFlow's SAME: output size ceil(input / stride); total padding
    /// max((ceil(input / stride) - 1) * stride + (kernel - 1) * dilation + 1 - input, 0), of which the top/left
    /// side gets half and the bottom/right side the odd pixel. (EfficientNet-Lite's weights were trained with it;
    /// PyTorch's symmetric `padding=` cannot express the odd pixel.)
    case same
    case explicit(top: Int, bottom: Int, left: Int, right: Int)

    /// The same padding on every side (PyTorch's `padding=p`).
    public static func symmetric(_ p: Int) -> Padding { .explicit(top: p, bottom: p, left: p, right: p) }

    /// PyTorch's `padding=(height, width)`.
    public static func symmetric(height: Int, width: Int) -> Padding {
        .explicit(top: height, bottom: height, left: width, right: width)
    }

    /// Padding (before, after) along one axis of length `input`.
    func amounts(input: Int, kernel: Int, stride: Int, dilation: Int, vertical: Bool) -> (before: Int, after: Int) {
        switch self {
        case .valid:
            return (0, 0)
        case .same:
            let out = (input + stride - 1) / stride
            let total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - input, 0)
            return (total / 2, total - total / 2)
        case let .explicit(top, bottom, left, right):
            return vertical ? (top, bottom) : (left, right)
        }
    }
}

/// Sizes of one sliding-window op over an NHWC tensor [n, h, w, c] (convolution or pooling).
struct WindowGeometry {
    let n, h, w, c: Int
    let kh, kw, sh, sw, dh, dw: Int
    let top, bottom, left, right: Int
    let oh, ow: Int

    init(input shape: [Int], kernel: (Int, Int), strides: (Int, Int), dilations: (Int, Int), padding: Padding,
         op: String) {
        precondition(shape.count == 4, "\(op): input of shape \(shape) is not NHWC (rank 4)")
        precondition(kernel.0 > 0 && kernel.1 > 0 && strides.0 > 0 && strides.1 > 0 && dilations.0 > 0 && dilations.1 > 0,
                     "\(op): kernel \(kernel), strides \(strides) and dilations \(dilations) must be positive")
        (n, h, w, c) = (shape[0], shape[1], shape[2], shape[3])
        (kh, kw) = kernel
        (sh, sw) = strides
        (dh, dw) = dilations
        (top, bottom) = padding.amounts(input: h, kernel: kh, stride: sh, dilation: dh, vertical: true)
        (left, right) = padding.amounts(input: w, kernel: kw, stride: sw, dilation: dw, vertical: false)
        precondition(top >= 0 && bottom >= 0 && left >= 0 && right >= 0, "\(op): negative padding \(padding)")
        let spanH = (kh - 1) * dh + 1, spanW = (kw - 1) * dw + 1
        precondition(h + top + bottom >= spanH && w + left + right >= spanW,
                     "\(op): input of shape \(shape) with padding \(padding) is smaller than the \(kh)x\(kw) window")
        oh = (h + top + bottom - spanH) / sh + 1
        ow = (w + left + right - spanW) / sw + 1
    }

    /// Kernel taps [lo, hi) along one axis that land inside [0, limit) for a window starting at `start`.
    @inline(__always)
    static func taps(start: Int, dilation: Int, kernel: Int, limit: Int) -> (lo: Int, hi: Int) {
        let lo = start >= 0 ? 0 : (-start + dilation - 1) / dilation
        let hi = start >= limit ? 0 : min(kernel, (limit - start + dilation - 1) / dilation)
        return (lo, max(lo, hi))
    }

    /// ceil(a / b) for b > 0 and any sign of a.
    @inline(__always)
    static func ceilDivide(_ a: Int, _ b: Int) -> Int { a >= 0 ? (a + b - 1) / b : -((-a) / b) }

    /// For each input position along one axis, the (kernel tap, output position) pairs whose window reads it:
    /// `input + 1` start indices, then pair t at [input + 1 + 2t] (tap) and [input + 2 + 2t] (output).
    static func readers(input: Int, kernel: Int, stride: Int, dilation: Int, pad: Int, outputs: Int) -> [Int] {
        var starts: [Int] = [], pairs: [Int] = []
        for i in 0..<input {
            starts.append(pairs.count / 2)
            for k in 0..<kernel {
                let t = i + pad - k * dilation
                if t < 0 { break }
                if t % stride == 0 && t / stride < outputs { pairs += [k, t / stride] }
            }
        }
        starts.append(pairs.count / 2)
        return starts + pairs
    }
}

/// 16-float SIMD blocks for the channel loops (unaligned loads and stores: channel offsets are arbitrary).
enum Lanes {
    typealias Vector = SIMD16<Float>
    static let width = 16

    @inline(__always)
    static func load(_ p: UnsafePointer<Float>) -> Vector { UnsafeRawPointer(p).loadUnaligned(as: Vector.self) }

    @inline(__always)
    static func store(_ v: Vector, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: Vector.self)
    }
}

/// A convolution's sizes and the kernel chosen for them. Weight layout is PyTorch's [O, C/groups, KH, KW].
struct ConvolutionPlan {
    let g: WindowGeometry
    let groups, outputs: Int
    /// Input and output channels per group.
    let cg, og: Int
    /// im2col row length of one group: the patch of one output pixel, (ky, kx, channel) with channel fastest.
    let kg: Int
    /// 1x1, stride 1, unpadded: the NHWC input already is the im2col matrix.
    let isPointwise: Bool
    /// One filter per channel: a direct kernel vectorised over channels beats a GEMM with inner size KH*KW.
    let isDepthwise: Bool
    /// At most 32 input channels, no dilation, square stride (the layers of small CNNs like the scratch baselines):
    /// `ck_conv_few` computes it from the padded image directly, forward and weight gradient, instead of im2col
    /// writing kh·kw·cin floats per pixel for OpenBLAS, which packs both operands again (measured on the speech
    /// scratch CNN: 1 -> 16, 16 -> 32 and 32 -> 64 channels). With stride 1 its input gradient is a direct
    /// convolution too (`directInputGradient`).
    let isDirect: Bool
    /// Images per im2col chunk: the batch in the fewest equal chunks whose patch matrix stays under
    /// `workspaceBytes`, so it is still in cache when the GEMM reads it. Chunks depend on the shapes only (not on
    /// the thread count), so the weight gradient's per-chunk sums add up in the same order on any machine.
    let imagesPerChunk: Int
    var chunks: Int { (g.n + imagesPerChunk - 1) / imagesPerChunk }

    /// Variable so tests can force several chunks on small inputs.
    static var workspaceBytes = 1 << 20

    init(input: [Int], weight: [Int], strides: (Int, Int), padding: Padding, dilations: (Int, Int), groups: Int) {
        precondition(weight.count == 4, "conv2d: weight of shape \(weight) is not [out, in/groups, kh, kw]")
        g = WindowGeometry(input: input, kernel: (weight[2], weight[3]), strides: strides, dilations: dilations,
                           padding: padding, op: "conv2d")
        precondition(groups > 0 && g.c % groups == 0 && weight[0] % groups == 0,
                     "conv2d: shapes \(input) and \(weight) clash (\(groups) groups must divide input channels \(g.c) and outputs \(weight[0]))")
        precondition(weight[1] * groups == g.c,
                     "conv2d: shapes \(input) and \(weight) clash (weight expects \(weight[1]) x \(groups) groups input channels, input has \(g.c))")
        self.groups = groups
        outputs = weight[0]
        cg = g.c / groups
        og = outputs / groups
        kg = g.kh * g.kw * cg
        isPointwise = g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1
            && g.top == 0 && g.bottom == 0 && g.left == 0 && g.right == 0
        isDepthwise = groups > 1 && cg == 1 && og == 1
        isDirect = groups == 1 && (1...32).contains(cg) && !isPointwise && g.dh == 1 && g.dw == 1 && g.sh == g.sw
        let perImage = max(1, g.oh * g.ow * kg * MemoryLayout<Float>.stride)
        let most = max(1, min(g.n, ConvolutionPlan.workspaceBytes / perImage))
        let fewest = max(1, (g.n + most - 1) / most)
        imagesPerChunk = max(1, (g.n + fewest - 1) / fewest)
    }

    var outputShape: [Int] { [g.n, g.oh, g.ow, outputs] }

    // MARK: Forward

    func forward(_ x: Tensor, _ weight: Tensor, _ bias: Tensor?) -> Tensor {
        var y = Tensor(uninitializedShape: outputShape)
        let px = x.pointer, py = y.mutablePointer
        let pixels = g.oh * g.ow
        if isDepthwise {
            // [C, 1, KH, KW] -> [KH, KW, C]: the taps of one kernel position are contiguous like the channels.
            let wr = weight.permuted([2, 3, 0, 1])
            withExtendedLifetime(wr) { depthwiseForward(px, wr.pointer, bias?.pointer, py) }
            return y
        }
        if isDirect {
            let (packed, outPad) = packedDirectWeights(weight)
            ConvolutionPlan.directConvolution(px, images: g.n, height: g.h, width: g.w, channels: g.c, packed: packed,
                                              outPad: outPad, bias: bias?.pointer, outputs: outputs, kernel: (g.kh, g.kw),
                                              stride: g.sh, before: (g.top, g.left), out: (g.oh, g.ow), into: py)
            return y
        }
        // The bias goes in first and the GEMM adds to it (beta 1): one pass over the output instead of two.
        if let bias { ConvolutionPlan.fillRows(py, rows: g.n * pixels, with: bias.pointer, columns: outputs) }
        let beta: Float = bias == nil ? 0 : 1
        if isPointwise {
            for gi in 0..<groups {
                BLAS.sgemm(transB: true, m: g.n * pixels, n: og, k: cg, a: px + gi * cg, lda: g.c,
                           b: weight.pointer + gi * og * cg, ldb: cg, beta: beta, c: py + gi * og, ldc: outputs)
            }
        } else {
            // Reordered per call (weights are small next to activations) so patch rows and filters share layout.
            let wr = weight.permuted([0, 2, 3, 1])
            let pw = wr.pointer
            // Chunks spread over the threads, each chunk's patches and product on one thread, in its cache.
            withExtendedLifetime(wr) {
                BLAS.perThread(chunks) { range in
                    var cols = Tensor(uninitializedShape: [imagesPerChunk * pixels * kg])
                    let pc = cols.mutablePointer
                    for chunk in range {
                        let n0 = chunk * imagesPerChunk, n1 = min(g.n, n0 + imagesPerChunk)
                        for gi in 0..<groups {
                            im2col(px, images: n0..<n1, channelOffset: gi * cg, into: pc)
                            BLAS.sgemm(transB: true, m: (n1 - n0) * pixels, n: og, k: kg, a: pc, lda: kg,
                                       b: pw + gi * og * kg, ldb: kg, beta: beta,
                                       c: py + n0 * pixels * outputs + gi * og, ldc: outputs)
                        }
                    }
                    withExtendedLifetime(cols) {}
                }
            }
        }
        return y
    }

    /// Floats of one zero-padded image for `ck_conv_few`.
    var paddedImageCount: Int { ((g.oh - 1) * g.sh + g.kh) * ((g.ow - 1) * g.sw + g.kw) * g.c }

    /// Where filter `o`'s tap `t` (in ck_conv_few's order: ky, kx, channel) sits in a [O, C, KH, KW] weight.
    func weightIndex(output o: Int, tap t: Int) -> Int {
        let (ky, kx, ci) = (t / (g.kw * cg), t / cg % g.kw, t % cg)
        return ((o * cg + ci) * g.kh + ky) * g.kw + kx
    }

    /// [O, C, KH, KW] -> [KH][KW][C][O rounded up to 16], padding zero, as `ck_conv_few` reads it.
    func packedDirectWeights(_ weight: Tensor) -> (weights: [Float], outPad: Int) {
        let (pw, cg, kh, kw) = (weight.pointer, cg, g.kh, g.kw)
        return ConvolutionPlan.packForDirect(outputs: outputs, inputs: cg, kernel: (kh, kw)) { o, c, ky, kx in
            pw[((o * cg + c) * kh + ky) * kw + kx]
        }
    }

    /// Filters in `ck_conv_few`'s layout, [KH][KW][inputs][outputs rounded up to 16] with zero padding; `tap(o, i,
    /// ky, kx)` is the weight from input channel i to output channel o at kernel position (ky, kx).
    static func packForDirect(outputs: Int, inputs: Int, kernel: (h: Int, w: Int),
                              _ tap: (Int, Int, Int, Int) -> Float) -> (weights: [Float], outPad: Int) {
        let outPad = (outputs + 15) / 16 * 16
        var packed = [Float](repeating: 0, count: kernel.h * kernel.w * inputs * outPad)
        for ky in 0..<kernel.h { for kx in 0..<kernel.w { for i in 0..<inputs { for o in 0..<outputs {
            packed[((ky * kernel.w + kx) * inputs + i) * outPad + o] = tap(o, i, ky, kx)
        } } } }
        return (packed, outPad)
    }

    /// A direct convolution with stride 1 whose padding before the image is less than the kernel (e.g. 3 x 3 with
    /// padding 1) has an input gradient that is itself a direct convolution, `directInputGradient`.
    var hasDirectInputGradient: Bool { isDirect && g.sh == 1 && g.top < g.kh && g.left < g.kw }

    /// The input gradient of a stride-1 direct convolution, as a direct convolution of `gy` [N, OH, OW, O] with the
    /// filters transposed (outputs <-> inputs) and flipped, padded by kernel - 1 - padding before the image (output
    /// rows and columns that read only padding fall outside that window: they pass nothing back): no im2col
    /// matrix, no GEMM, no col2im into a zeroed tensor. Each image on its own, so any thread count gives the same bits.
    func directInputGradient(_ gy: Tensor, _ weight: Tensor) -> Tensor {
        let (kh, kw, h, w, cg) = (g.kh, g.kw, g.h, g.w, cg)
        let pw = weight.pointer
        // The gradient's outputs are the convolution's input channels c, its inputs the output channels o.
        let (packed, inPad) = ConvolutionPlan.packForDirect(outputs: cg, inputs: outputs, kernel: (kh, kw)) { c, o, ky, kx in
            pw[((o * cg + c) * kh + (kh - 1 - ky)) * kw + (kw - 1 - kx)]
        }
        var dx = Tensor(uninitializedShape: [g.n, h, w, g.c])
        ConvolutionPlan.directConvolution(gy.pointer, images: g.n, height: g.oh, width: g.ow, channels: outputs,
                                          packed: packed, outPad: inPad, bias: nil, outputs: g.c, kernel: (kh, kw),
                                          stride: 1, before: (kh - 1 - g.top, kw - 1 - g.left), out: (h, w),
                                          into: dx.mutablePointer)
        return dx
    }

    /// `ck_conv_few` on each of `images` NHWC images of x [images, height, width, channels] into y [images, out.h,
    /// out.w, outputs], the images spread over the threads, each thread with its own zero-padded scratch image.
    static func directConvolution(_ x: UnsafePointer<Float>, images: Int, height: Int, width: Int, channels: Int,
                                  packed: [Float], outPad: Int, bias: UnsafePointer<Float>?, outputs: Int,
                                  kernel: (h: Int, w: Int), stride: Int, before: (top: Int, left: Int),
                                  out: (h: Int, w: Int), into y: UnsafeMutablePointer<Float>) {
        let padded = ((out.h - 1) * stride + kernel.h) * ((out.w - 1) * stride + kernel.w) * channels
        packed.withUnsafeBufferPointer { pw in
            Parallel.forEach(images) { range in
                var scratch = [Float](repeating: 0, count: padded)
                scratch.withUnsafeMutableBufferPointer { ps in
                    for n in range {
                        ck_conv_few(x + n * height * width * channels, height, width, channels, pw.baseAddress, outPad,
                                    bias, outputs, kernel.h, kernel.w, stride, before.top, before.left, out.h, out.w,
                                    ps.baseAddress, y + n * out.h * out.w * outputs)
                    }
                }
            }
        }
    }

    /// The weight gradient of a direct convolution: each chunk of images (the im2col chunks, so the partition
    /// does not depend on the thread count) into its own slot, summed in chunk order.
    func directWeightGradient(_ gy: Tensor, _ x: Tensor) -> Tensor {
        guard chunks > 0 else { return Tensor(zeros: [outputs, cg, g.kh, g.kw]) }  // an empty batch
        let outPad = (outputs + 15) / 16 * 16, taps = g.kh * g.kw * cg, slot = taps * outPad
        let pixels = g.oh * g.ow, px = x.pointer, pg = gy.pointer
        var partial = [Float](repeating: 0, count: chunks * slot)
        partial.withUnsafeMutableBufferPointer { pp in
            let pp = pp.baseAddress!
            Parallel.forEach(chunks) { range in
                var scratch = [Float](repeating: 0, count: paddedImageCount)
                scratch.withUnsafeMutableBufferPointer { ps in
                    for chunk in range {
                        for n in chunk * imagesPerChunk..<min(g.n, (chunk + 1) * imagesPerChunk) {
                            ck_conv_few_weight_grad(px + n * g.h * g.w * g.c, g.h, g.w, g.c, pg + n * pixels * outputs,
                                                    outputs, g.kh, g.kw, g.sh, g.top, g.left, g.oh, g.ow, ps.baseAddress,
                                                    pp + chunk * slot, outPad)
                        }
                    }
                }
            }
        }
        var dw = Tensor(uninitializedShape: [outputs, cg, g.kh, g.kw])
        let pdw = dw.mutablePointer
        for o in 0..<outputs { for t in 0..<taps {
            var sum = partial[t * outPad + o]
            for chunk in 1..<chunks { sum += partial[chunk * slot + t * outPad + o] }
            pdw[weightIndex(output: o, tap: t)] = sum
        } }
        return dw
    }

    /// Writes the patches of images `images` for channels [channelOffset, channelOffset + cg) as rows of `kg`
    /// (on the calling thread: callers spread chunks of images over the threads).
    func im2col(_ px: UnsafePointer<Float>, images: Range<Int>, channelOffset c0: Int, into pc: UnsafeMutablePointer<Float>) {
        let (h, w, c, kh, kw, sh, sw, dh, dw) = (g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw)
        let (top, left, oh, ow, cg, kg) = (g.top, g.left, g.oh, g.ow, cg, kg)
        // With all channels and no dilation, the kw taps of one kernel row are one contiguous run of the input.
        let runs = cg == c && dw == 1
        for r in 0..<(images.count * oh) {
            let n = images.lowerBound + r / oh, iy0 = (r % oh) * sh - top
            var dst = pc + r * ow * kg
            for ox in 0..<ow {
                let ix0 = ox * sw - left
                let inside = runs && ix0 >= 0 && ix0 + kw <= w
                for ky in 0..<kh {
                    let iy = iy0 + ky * dh
                    if iy < 0 || iy >= h {
                        dst.update(repeating: 0, count: kw * cg)
                        dst += kw * cg
                        continue
                    }
                    let xrow = px + (n * h + iy) * w * c + c0
                    if inside {
                        let src = xrow + ix0 * c
                        for j in 0..<(kw * c) { dst[j] = src[j] }
                        dst += kw * c
                        continue
                    }
                    for kx in 0..<kw {
                        let ix = ix0 + kx * dw
                        if ix < 0 || ix >= w {
                            for j in 0..<cg { dst[j] = 0 }
                        } else {
                            let src = xrow + ix * c
                            for j in 0..<cg { dst[j] = src[j] }
                        }
                        dst += cg
                    }
                }
            }
        }
    }

    /// Adjoint of `im2col`: every input pixel of `images` gathers the patch entries that copied it and adds them
    /// to channels [channelOffset, +cg) of `pdx` (on the calling thread, like `im2col`).
    func col2im(_ pd: UnsafePointer<Float>, images: Range<Int>, channelOffset c0: Int, into pdx: UnsafeMutablePointer<Float>) {
        let (h, w, c, kh, kw, sh, sw, dh, dw) = (g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw)
        let (top, left, oh, ow, cg, kg) = (g.top, g.left, g.oh, g.ow, cg, kg)
        for r in 0..<(images.count * h) {
            let local = r / h, iy = r % h, n = images.lowerBound + local
            for ix in 0..<w {
                let dst = pdx + ((n * h + iy) * w + ix) * c + c0
                for ky in 0..<kh {
                    let t = iy + top - ky * dh
                    if t < 0 { break }
                    if t % sh != 0 { continue }
                    let oy = t / sh
                    if oy >= oh { continue }
                    for kx in 0..<kw {
                        let u = ix + left - kx * dw
                        if u < 0 { break }
                        if u % sw != 0 { continue }
                        let ox = u / sw
                        if ox >= ow { continue }
                        let src = pd + ((local * oh + oy) * ow + ox) * kg + (ky * kw + kx) * cg
                        for j in 0..<cg { dst[j] += src[j] }
                    }
                }
            }
        }
    }

    // MARK: Backward

    /// Gradients with respect to the input [N, H, W, C] and the weight [O, C/groups, KH, KW], each only if asked.
    func backward(_ gy: Tensor, _ x: Tensor, _ weight: Tensor, input needInput: Bool, weight needWeight: Bool,
                  direct: Bool = true) -> (input: Tensor?, weight: Tensor?) {
        if isDepthwise { return depthwiseBackward(gy, x, weight, input: needInput, weight: needWeight) }
        if isDirect && direct {
            let dx = needInput ? (hasDirectInputGradient ? directInputGradient(gy, weight)
                                                         : backward(gy, x, weight, input: true, weight: false, direct: false).input) : nil
            return (dx, needWeight ? directWeightGradient(gy, x) : nil)
        }
        let pg = gy.pointer, px = x.pointer
        let pixels = g.oh * g.ow
        // Zeroed once: col2im adds into it (a per-pixel clear would be a memset call per few channels).
        var dx: Tensor? = needInput ? (isPointwise ? Tensor(uninitializedShape: x.shape) : Tensor(zeros: x.shape)) : nil
        if isPointwise {
            let rows = g.n * pixels
            var dw: Tensor? = needWeight ? Tensor(uninitializedShape: weight.shape) : nil
            for gi in 0..<groups {
                if dx != nil {
                    BLAS.sgemm(m: rows, n: cg, k: og, a: pg + gi * og, lda: outputs, b: weight.pointer + gi * og * cg,
                               ldb: cg, c: dx!.mutablePointer + gi * cg, ldc: g.c)
                }
                if dw != nil {
                    BLAS.sgemm(transA: true, m: og, n: cg, k: rows, a: pg + gi * og, lda: outputs, b: px + gi * cg,
                               ldb: g.c, c: dw!.mutablePointer + gi * og * cg, ldc: cg)
                }
            }
            return (dx, dw)
        }
        let wr = weight.permuted([0, 2, 3, 1])
        // Each chunk's weight gradient goes to its own slot, summed in chunk order afterwards; the chunks write
        // disjoint images of dx.
        let slot = outputs * kg, chunks = chunks
        var partial = Tensor(uninitializedShape: [needWeight ? chunks * slot : 0])
        let pdx = dx?.mutablePointer, pp = partial.mutablePointer, pw = wr.pointer
        withExtendedLifetime(wr) {
            BLAS.perThread(chunks) { range in
                var cols = Tensor(uninitializedShape: [needWeight ? imagesPerChunk * pixels * kg : 0])
                var dcols = Tensor(uninitializedShape: [needInput ? imagesPerChunk * pixels * kg : 0])
                let pc = cols.mutablePointer, pd = dcols.mutablePointer
                for chunk in range {
                    let n0 = chunk * imagesPerChunk, n1 = min(g.n, n0 + imagesPerChunk), rows = (n1 - n0) * pixels
                    let gChunk = pg + n0 * pixels * outputs
                    for gi in 0..<groups {
                        if needWeight {
                            im2col(px, images: n0..<n1, channelOffset: gi * cg, into: pc)
                            BLAS.sgemm(transA: true, m: og, n: kg, k: rows, a: gChunk + gi * og, lda: outputs, b: pc, ldb: kg,
                                       c: pp + chunk * slot + gi * og * kg, ldc: kg)
                        }
                        if let pdx {
                            BLAS.sgemm(m: rows, n: kg, k: og, a: gChunk + gi * og, lda: outputs, b: pw + gi * og * kg,
                                       ldb: kg, c: pd, ldc: kg)
                            col2im(pd, images: n0..<n1, channelOffset: gi * cg, into: pdx)
                        }
                    }
                }
                withExtendedLifetime((cols, dcols)) {}
            }
        }
        guard needWeight else { return (dx, nil) }
        var dwr = Tensor(zeros: [outputs, g.kh, g.kw, cg])
        let pdw = dwr.mutablePointer
        for chunk in 0..<chunks {
            let src = pp + chunk * slot
            for j in 0..<slot { pdw[j] += src[j] }
        }
        return (dx, dwr.permuted([0, 3, 1, 2]))
    }

    /// Gradient of the bias: the sum of `gy` over every output pixel, [O].
    func biasGradient(_ gy: Tensor) -> Tensor {
        ConvolutionPlan.columnSums(gy.pointer, rows: g.n * g.oh * g.ow, columns: outputs)
    }

    // MARK: Depthwise (direct)

    // The depthwise kernels work on blocks of 16 channels held in SIMD registers across all taps of a window
    // (one load and one store of the output per block instead of one per tap), with a scalar loop for the
    // remaining channels.

    /// y[n, oy, ox, c] = b[c] + Σ x[n, iy, ix, c] · w[ky, kx, c] with w as [KH, KW, C]. Parallel over output rows.
    /// Square strides without dilation run the vectorised C kernel (`ck_depthwise`: AVX-512/AVX2 where the CPU
    /// has them; the Swift loop below is compiled for baseline SSE2 only).
    func depthwiseForward(_ px: UnsafePointer<Float>, _ pw: UnsafePointer<Float>, _ pb: UnsafePointer<Float>?,
                          _ py: UnsafeMutablePointer<Float>) {
        let (h, w, c, kh, kw, sh, sw, dh, dw) = (g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw)
        let (top, left, oh, ow) = (g.top, g.left, g.oh, g.ow)
        if sh == sw && dh == 1 && dw == 1 {
            Parallel.forEach(g.n * oh, minimumChunk: max(1, 32768 / max(1, ow * c * kh * kw))) { rows in
                var r = rows.lowerBound
                while r < rows.upperBound {
                    let n = r / oh, oy0 = r % oh, oy1 = min(oh, oy0 + rows.upperBound - r)
                    ck_depthwise(px + n * h * w * c, h, w, c, pw, pb, kh, kw, sh, top, left, oh, ow, oy0, oy1,
                                 py + n * oh * ow * c, Int32(CK_ACT_NONE))
                    r += oy1 - oy0
                }
            }
            return
        }
        let blocked = c - c % Lanes.width
        Parallel.forEach(g.n * oh, minimumChunk: max(1, 32768 / max(1, ow * c * kh * kw))) { rows in
            for r in rows {
                let n = r / oh, iy0 = (r % oh) * sh - top
                let (ky0, ky1) = WindowGeometry.taps(start: iy0, dilation: dh, kernel: kh, limit: h)
                var ox = 0
                while ox < ow {
                    let out = py + (r * ow + ox) * c
                    let ix0 = ox * sw - left
                    let (kx0, kx1) = WindowGeometry.taps(start: ix0, dilation: dw, kernel: kw, limit: w)
                    // Window origin; may point before the image, but only in-bounds taps are read.
                    let origin = px + ((n * h + iy0) * w + ix0) * c
                    var j = 0
                    if sw == 1 && ox + 1 < ow && ix0 >= 0 && ix0 + 1 + (kw - 1) * dw < w {
                        // Two neighbouring interior pixels share every weight load (measured: ~1.4x at stride 1;
                        // at stride 2 the wider x footprint made it slower).
                        let step = sw * c
                        while j < blocked {
                            var a0 = pb.map { Lanes.load($0 + j) } ?? Lanes.Vector()
                            var a1 = a0
                            for ky in ky0..<ky1 {
                                let xr = origin + ky * dh * w * c + j, wr = pw + ky * kw * c + j
                                for kx in 0..<kw {
                                    let wv = Lanes.load(wr + kx * c), xp = xr + kx * dw * c
                                    a0 += Lanes.load(xp) * wv
                                    a1 += Lanes.load(xp + step) * wv
                                }
                            }
                            Lanes.store(a0, out + j)
                            Lanes.store(a1, out + c + j)
                            j += Lanes.width
                        }
                        while j < c {
                            var a0 = pb?[j] ?? 0, a1 = a0
                            for ky in ky0..<ky1 {
                                let xr = origin + ky * dh * w * c + j, wr = pw + ky * kw * c + j
                                for kx in 0..<kw {
                                    a0 += xr[kx * dw * c] * wr[kx * c]
                                    a1 += xr[kx * dw * c + step] * wr[kx * c]
                                }
                            }
                            out[j] = a0
                            out[c + j] = a1
                            j += 1
                        }
                        ox += 2
                        continue
                    }
                    while j < blocked {
                        var acc = pb.map { Lanes.load($0 + j) } ?? Lanes.Vector()
                        for ky in ky0..<ky1 {
                            let xr = origin + ky * dh * w * c + j, wr = pw + ky * kw * c + j
                            for kx in kx0..<kx1 { acc += Lanes.load(xr + kx * dw * c) * Lanes.load(wr + kx * c) }
                        }
                        Lanes.store(acc, out + j)
                        j += Lanes.width
                    }
                    while j < c {
                        var acc = pb?[j] ?? 0
                        for ky in ky0..<ky1 {
                            let xr = origin + ky * dh * w * c + j, wr = pw + ky * kw * c + j
                            for kx in kx0..<kx1 { acc += xr[kx * dw * c] * wr[kx * c] }
                        }
                        out[j] = acc
                        j += 1
                    }
                    ox += 1
                }
            }
        }
    }

    func depthwiseBackward(_ gy: Tensor, _ x: Tensor, _ weight: Tensor, input needInput: Bool, weight needWeight: Bool)
        -> (input: Tensor?, weight: Tensor?) {
        let (n, h, w, c, kh, kw, sh, sw, dh, dw) = (g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw)
        let (top, left, oh, ow) = (g.top, g.left, g.oh, g.ow)
        let pg = gy.pointer, px = x.pointer
        let blocked = c - c % Lanes.width
        var dx: Tensor?
        if needInput {
            let wr = weight.permuted([2, 3, 0, 1])
            var out = Tensor(uninitializedShape: x.shape)
            let pdx = out.mutablePointer, pw = wr.pointer
            let rowReaders = WindowGeometry.readers(input: h, kernel: kh, stride: sh, dilation: dh, pad: top, outputs: oh)
            let colReaders = WindowGeometry.readers(input: w, kernel: kw, stride: sw, dilation: dw, pad: left, outputs: ow)
            // Gather per input row: each input pixel sums g · w over the output pixels whose window holds it, so
            // no two threads write one pixel.
            withExtendedLifetime(wr) { rowReaders.withUnsafeBufferPointer { rt in colReaders.withUnsafeBufferPointer { ct in
                let rp = rt.baseAddress! + h + 1, cp = ct.baseAddress! + w + 1
                Parallel.forEach(n * h, minimumChunk: max(1, 32768 / max(1, w * c * kh * kw))) { rows in
                    for r in rows {
                        let b = r / h, iy = r % h
                        for ix in 0..<w {
                            let dst = pdx + (r * w + ix) * c
                            var j = 0
                            while j < blocked {
                                var acc = Lanes.Vector()
                                for t in rt[iy]..<rt[iy + 1] {
                                    let gr = pg + (b * oh + rp[2 * t + 1]) * ow * c + j, wrow = pw + rp[2 * t] * kw * c + j
                                    for u in ct[ix]..<ct[ix + 1] {
                                        acc += Lanes.load(gr + cp[2 * u + 1] * c) * Lanes.load(wrow + cp[2 * u] * c)
                                    }
                                }
                                Lanes.store(acc, dst + j)
                                j += Lanes.width
                            }
                            while j < c {
                                var acc: Float = 0
                                for t in rt[iy]..<rt[iy + 1] {
                                    let gr = pg + (b * oh + rp[2 * t + 1]) * ow * c + j, wrow = pw + rp[2 * t] * kw * c + j
                                    for u in ct[ix]..<ct[ix + 1] { acc += gr[cp[2 * u + 1] * c] * wrow[cp[2 * u] * c] }
                                }
                                dst[j] = acc
                                j += 1
                            }
                        }
                    }
                }
            } } }
            dx = out
        }
        guard needWeight else { return (dx, nil) }
        // One partial [KH, KW, C] per part (`Parallel.reductionParts`), summed in a fixed order so results depend
        // neither on scheduling nor on the thread count.
        // Within an output row, each tap's products are summed over the row's pixels in registers first.
        let taps = kh * kw * c
        let parts = min(Parallel.reductionParts, n * oh)
        var partial = Tensor(zeros: [max(parts, 1), taps])
        let pp = partial.mutablePointer
        Parallel.forEach(parts) { range in
            for part in range {
                let acc = pp + part * taps
                for r in (n * oh * part / parts)..<(n * oh * (part + 1) / parts) {
                    let b = r / oh, iy0 = (r % oh) * sh - top
                    let (ky0, ky1) = WindowGeometry.taps(start: iy0, dilation: dh, kernel: kh, limit: h)
                    let grow = pg + r * ow * c
                    for ky in ky0..<ky1 {
                        let xrow = px + (b * h + iy0 + ky * dh) * w * c
                        for kx in 0..<kw {
                            // Output columns whose tap kx lands inside the image: 0 <= ox·sw - left + kx·dw < w.
                            let shift = kx * dw - left
                            let o0 = max(0, WindowGeometry.ceilDivide(-shift, sw))
                            let o1 = min(ow, WindowGeometry.ceilDivide(w - shift, sw))
                            if o0 >= o1 { continue }
                            let ap = acc + (ky * kw + kx) * c
                            var j = 0
                            while j < blocked {
                                var s = Lanes.Vector()
                                for ox in o0..<o1 {
                                    s += Lanes.load(grow + ox * c + j) * Lanes.load(xrow + (ox * sw + shift) * c + j)
                                }
                                Lanes.store(Lanes.load(ap + j) + s, ap + j)
                                j += Lanes.width
                            }
                            while j < c {
                                var s: Float = 0
                                for ox in o0..<o1 { s += grow[ox * c + j] * xrow[(ox * sw + shift) * c + j] }
                                ap[j] += s
                                j += 1
                            }
                        }
                    }
                }
            }
        }
        let dwr = partial.sum(axis: 0).reshaped([kh, kw, c, 1])
        return (dx, dwr.permuted([2, 3, 0, 1]))
    }

    // MARK: Row helpers

    static func fillRows(_ p: UnsafeMutablePointer<Float>, rows: Int, with v: UnsafePointer<Float>, columns: Int) {
        Parallel.forEach(rows, minimumChunk: max(1, 32768 / max(1, columns))) { range in
            for i in range { (p + i * columns).update(from: v, count: columns) }
        }
    }

    /// Column sums of a [rows, columns] matrix, in `Parallel.reductionParts` partials combined in a fixed order.
    static func columnSums(_ p: UnsafePointer<Float>, rows: Int, columns: Int) -> Tensor {
        let parts = max(1, min(Parallel.reductionParts, rows * columns / 32768))
        var partial = Tensor(zeros: [parts, columns])
        let pp = partial.mutablePointer
        Parallel.forEach(parts) { range in
            for part in range {
                let acc = pp + part * columns
                for i in (rows * part / parts)..<(rows * (part + 1) / parts) {
                    let row = p + i * columns
                    for j in 0..<columns { acc[j] += row[j] }
                }
            }
        }
        return partial.sum(axis: 0)
    }
}

extension Variable {
    /// 2-D convolution of an NHWC input (self, [N, H, W, C]) with square stride and dilation.
    /// `weight` is [O, C/groups, KH, KW] (PyTorch's layout), `bias` [O]; the result is [N, OH, OW, O] with
    /// OH = (H + padTop + padBottom - dilation·(KH-1) - 1) / stride + 1 (ceil(H / stride) for `.same`).
    public func conv2d(weight: Variable, bias: Variable? = nil, stride: Int = 1, padding: Padding = .valid,
                       dilation: Int = 1, groups: Int = 1) -> Variable {
        conv2d(weight: weight, bias: bias, strides: (stride, stride), padding: padding,
               dilations: (dilation, dilation), groups: groups)
    }

    /// 2-D convolution with separate (height, width) strides and dilations; see `conv2d(weight:bias:stride:...)`.
    public func conv2d(weight: Variable, bias: Variable?, strides: (Int, Int), padding: Padding,
                       dilations: (Int, Int) = (1, 1), groups: Int = 1) -> Variable {
        let x = self
        let plan = ConvolutionPlan(input: x.shape, weight: weight.shape, strides: strides, padding: padding,
                                   dilations: dilations, groups: groups)
        if let bias {
            precondition(bias.shape == [plan.outputs],
                         "conv2d: shapes \(weight.shape) and \(bias.shape) clash (bias must be [\(plan.outputs)])")
        }
        let y = plan.forward(x.value, weight.value, bias?.value)
        let parents = bias.map { [x, weight, $0] } ?? [x, weight]
        return Autograd.result(y, parents, record: Autograd.needsGrad(parents)) { g in
            if x.requiresGrad || weight.requiresGrad {
                let (dx, dw) = plan.backward(g, x.value, weight.value, input: x.requiresGrad, weight: weight.requiresGrad)
                if let dx { x.accumulate(dx) }
                if let dw { weight.accumulate(dw) }
            }
            if let bias, bias.requiresGrad { bias.accumulate(plan.biasGradient(g)) }
        }
    }
}
