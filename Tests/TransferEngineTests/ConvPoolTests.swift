import Foundation
import XCTest
@testable import TransferEngine

final class ConvPoolTests: XCTestCase {
    var rng = RNG(seed: 3)

    // MARK: Golden values from PyTorch (Golden/make_conv_pool_golden.py)

    struct Blob: Decodable {
        let shape: [Int]
        let data: [Float]
        var tensor: Tensor { Tensor(shape: shape, scalars: data) }
    }

    struct Case: Decodable {
        let name, op: String
        let input: Blob
        let weight, bias: Blob?
        let kernel, stride, dilation, pads: [Int]
        let groups: Int
        let same: Bool
        let countIncludePad: Bool?
        let output: Blob
    }

    struct Golden: Decodable { let cases: [Case] }

    func testMatchesPyTorchGolden() throws {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/conv_pool.json")
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url))
        XCTAssertEqual(golden.cases.count, 11)
        // Tolerance 1e-4 absolute: outputs are O(1) sums of at most 75 Float32 products; PyTorch and sgemm add in
        // different orders, which moves the last bits (~1e-6), while any indexing mistake moves values by O(0.1).
        let tolerance: Float = 1e-4
        var worst: Float = 0, worstCase = ""
        for c in golden.cases {
            let padding: Padding = c.same
                ? .same : .explicit(top: c.pads[0], bottom: c.pads[1], left: c.pads[2], right: c.pads[3])
            if c.same {
                let s = c.input.shape
                let v = Padding.same.amounts(input: s[1], kernel: c.kernel[0], stride: c.stride[0], dilation: c.dilation[0], vertical: true)
                let h = Padding.same.amounts(input: s[2], kernel: c.kernel[1], stride: c.stride[1], dilation: c.dilation[1], vertical: false)
                XCTAssertEqual([v.before, v.after, h.before, h.after], c.pads, "\(c.name): SAME padding amounts")
            }
            // Run once recording (parameters need gradients) and once not: both paths must give the same values.
            for recording in [false, true] {
                let x = Variable(c.input.tensor, requiresGrad: recording)
                let y: Variable
                switch c.op {
                case "conv2d":
                    let w = Variable(c.weight!.tensor, requiresGrad: recording)
                    let b = c.bias.map { Variable($0.tensor, requiresGrad: recording) }
                    y = x.conv2d(weight: w, bias: b, strides: (c.stride[0], c.stride[1]), padding: padding,
                                 dilations: (c.dilation[0], c.dilation[1]), groups: c.groups)
                case "maxPool2d":
                    y = x.maxPool2d(kernel: c.kernel[0], stride: c.stride[0], padding: padding)
                case "avgPool2d":
                    y = x.avgPool2d(kernel: c.kernel[0], stride: c.stride[0], padding: padding,
                                    countingPadding: c.countIncludePad ?? false)
                case "globalAveragePool":
                    y = x.globalAveragePool()
                default:
                    XCTFail("unknown op \(c.op)")
                    continue
                }
                XCTAssertEqual(y.shape, c.output.shape, c.name)
                guard y.shape == c.output.shape else { continue }
                let d = y.value.maxAbsDifference(c.output.tensor)
                XCTAssertLessThanOrEqual(d, tolerance, c.name)
                if d >= worst { (worst, worstCase) = (d, c.name) }
            }
        }
        print("conv/pool golden: worst |difference| \(worst) (\(worstCase)), tolerance \(tolerance)")
    }

    // MARK: Every kernel path against a naive convolution

    /// Direct 7-loop convolution, NHWC input and PyTorch-layout weight; pads are (top, bottom, left, right).
    func naiveConv(_ x: Tensor, _ w: Tensor, _ b: Tensor?, strides: (Int, Int), pads: [Int], dilations: (Int, Int),
                   groups: Int) -> Tensor {
        let (n, h, wi, c) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (o, cg, kh, kw) = (w.shape[0], w.shape[1], w.shape[2], w.shape[3])
        let og = o / groups
        let oh = (h + pads[0] + pads[1] - (kh - 1) * dilations.0 - 1) / strides.0 + 1
        let ow = (wi + pads[2] + pads[3] - (kw - 1) * dilations.1 - 1) / strides.1 + 1
        var y = Tensor(zeros: [n, oh, ow, o])
        for b0 in 0..<n { for oy in 0..<oh { for ox in 0..<ow { for oc in 0..<o {
            var s = b?[flat: oc] ?? 0
            let group = oc / og
            for ic in 0..<cg { for ky in 0..<kh { for kx in 0..<kw {
                let iy = oy * strides.0 - pads[0] + ky * dilations.0, ix = ox * strides.1 - pads[2] + kx * dilations.1
                guard iy >= 0, iy < h, ix >= 0, ix < wi else { continue }
                s += x[flat: ((b0 * h + iy) * wi + ix) * c + group * cg + ic] * w[flat: ((oc * cg + ic) * kh + ky) * kw + kx]
            } } }
            y[flat: ((b0 * oh + oy) * ow + ox) * o + oc] = s
        } } } }
        return y
    }

    /// Asserts `y` has `expected`'s shape and is within 1e-4 of it everywhere; returns the largest difference.
    @discardableResult
    func assertClose(_ y: Tensor, _ expected: Tensor, _ message: String, line: UInt = #line) -> Float {
        XCTAssertEqual(y.shape, expected.shape, message, line: line)
        guard y.shape == expected.shape else { return .infinity }
        let d = y.maxAbsDifference(expected)
        XCTAssertLessThanOrEqual(d, 1e-4, message, line: line)
        return d
    }

    func testEveryKernelPathMatchesNaiveConvolution() {
        // (input, weight, strides, pads, dilations, groups): im2col, grouped, pointwise, grouped pointwise,
        // depthwise (direct), channel multiplier 2 (grouped im2col), strided 1x1, rectangular everything.
        let configs: [([Int], [Int], (Int, Int), [Int], (Int, Int), Int)] = [
            ([2, 7, 6, 3], [5, 3, 3, 3], (1, 1), [1, 1, 1, 1], (1, 1), 1),
            ([1, 6, 5, 34], [7, 34, 3, 3], (1, 1), [1, 1, 1, 1], (1, 1), 1),  // over 32 input channels: im2col
            ([1, 8, 9, 6], [6, 2, 3, 3], (2, 2), [0, 1, 1, 0], (1, 1), 3),
            ([2, 4, 5, 7], [3, 7, 1, 1], (1, 1), [0, 0, 0, 0], (1, 1), 1),
            ([2, 4, 5, 6], [4, 3, 1, 1], (1, 1), [0, 0, 0, 0], (1, 1), 2),
            ([2, 9, 8, 5], [5, 1, 3, 3], (2, 2), [1, 1, 1, 1], (1, 1), 5),
            ([1, 9, 8, 5], [5, 1, 5, 3], (1, 2), [2, 3, 1, 0], (2, 1), 5),
            ([1, 6, 6, 3], [6, 1, 3, 3], (1, 1), [1, 1, 1, 1], (1, 1), 3),
            ([2, 5, 7, 4], [3, 4, 1, 1], (2, 2), [0, 0, 0, 0], (1, 1), 1),
            ([1, 10, 9, 2], [3, 2, 2, 4], (3, 2), [1, 0, 2, 1], (2, 2), 1),
            ([2, 6, 5, 37], [37, 1, 3, 3], (2, 1), [1, 1, 0, 2], (1, 2), 37),  // two SIMD blocks and a tail
            ([1, 5, 9, 20], [20, 1, 3, 3], (1, 1), [1, 1, 1, 1], (1, 1), 20),  // paired interior pixels
            // a 7 x 7 layer with a 5 x 5 kernel, as EfficientNet's last blocks: every pixel on the border path,
            // whose channels go four vectors at a time (64 of 70 with AVX-512, 64 with AVX2 and SSE2) before a tail
            ([1, 7, 7, 70], [70, 1, 5, 5], (1, 1), [2, 2, 2, 2], (1, 1), 70),
            // up to 32 input channels (ck_conv_few): a spectrogram's first layer; two vectors and a tail, stride 2,
            // asymmetric padding; a rectangular kernel with stride 3 and more than one tile of pixels per row;
            // 32 channels in, 64 out (two pairs of vectors)
            ([2, 11, 19, 1], [16, 1, 3, 3], (1, 1), [1, 1, 1, 1], (1, 1), 1),
            ([1, 9, 10, 2], [37, 2, 3, 3], (2, 2), [0, 2, 1, 0], (1, 1), 1),
            ([2, 13, 29, 4], [20, 4, 5, 3], (3, 3), [2, 1, 0, 2], (1, 1), 1),
            ([1, 6, 9, 32], [64, 32, 3, 3], (1, 1), [1, 1, 1, 1], (1, 1), 1),
        ]
        var worst: Float = 0
        for (xs, ws, st, pads, dil, groups) in configs {
            let x = rng.normalTensor(xs), w = rng.normalTensor(ws), b = rng.normalTensor([ws[0]])
            let padding = Padding.explicit(top: pads[0], bottom: pads[1], left: pads[2], right: pads[3])
            for bias in [nil, b] {
                let y = Variable(x).conv2d(weight: Variable(w), bias: bias.map { Variable($0) }, strides: st,
                                           padding: padding, dilations: dil, groups: groups).value
                let ref = naiveConv(x, w, bias, strides: st, pads: pads, dilations: dil, groups: groups)
                worst = max(worst, assertClose(y, ref, "\(xs) * \(ws) groups \(groups)"))
            }
        }
        print("conv kernels vs naive: worst |difference| \(worst)")
    }

    /// The inference path's dense convolution (`FoldedConvolution`, `ck_conv_direct`: e.g. EfficientNet's stem) with
    /// TF SAME padding against the naive convolution: rows of pixels in tiles where every tap is inside the image
    /// horizontally, one pixel at a time at the borders, on widths of 1 pixel to a few tiles; outputs in one or two
    /// blocks of 32 with a tail; stride 1 and 2, kernels 3 and 5; ReLU6 in the store.
    func testInferenceDirectConvolutionMatchesNaiveConvolution() {
        // (input [N, H, W, C], outputs, kernel, stride)
        let configs: [([Int], Int, Int, Int)] = [
            ([2, 45, 37, 3], 32, 3, 2), ([1, 9, 23, 1], 20, 3, 1), ([1, 12, 17, 5], 40, 5, 1),
            ([2, 1, 9, 2], 8, 3, 2), ([1, 16, 30, 4], 33, 5, 2), ([1, 7, 8, 3], 32, 3, 1),
        ]
        var worst: Float = 0
        for (xs, outputs, k, s) in configs {
            let conv = Conv2d(inputChannels: xs[3], outputChannels: outputs, kernelSize: k, stride: s, padding: .same, rng: &rng)
            let x = rng.normalTensor(xs)
            let total = { (n: Int) in max(((n + s - 1) / s - 1) * s + k - n, 0) }
            let pads = [total(xs[1]) / 2, total(xs[1]) - total(xs[1]) / 2, total(xs[2]) / 2, total(xs[2]) - total(xs[2]) / 2]
            let ref = naiveConv(x, conv.weight.value, conv.bias?.value, strides: (s, s), pads: pads, dilations: (1, 1), groups: 1)
            for activation in [FoldedConvolution.Activation.none, .relu6] {
                let y = FoldedConvolution(conv, activation: activation).applyBatch(x)
                let expected = activation == .none ? ref : Tensor(shape: ref.shape, scalars: ref.scalars.map { min(max($0, 0), 6) })
                worst = max(worst, assertClose(y, expected, "\(xs) -> \(outputs), kernel \(k), stride \(s), \(activation)"))
            }
        }
        print("inference direct convolution vs naive: worst |difference| \(worst)")
    }

    /// The input gradient of a stride-1 direct convolution, computed as a direct convolution of the output gradient
    /// with the filters transposed and flipped, against im2col's adjoint (a GEMM, then col2im): one input channel, a
    /// vector of input channels and a tail (from 37 outputs), a rectangular kernel with asymmetric padding, 32 -> 64,
    /// padding after the image larger than the kernel (output rows that read only padding), and padding before it
    /// as large as the kernel allows.
    func testDirectInputGradientMatchesIm2colAdjoint() {
        // (input, weight, pads [top, bottom, left, right])
        let configs: [([Int], [Int], [Int])] = [
            ([2, 11, 19, 1], [16, 1, 3, 3], [1, 1, 1, 1]), ([1, 9, 10, 20], [37, 20, 3, 3], [0, 2, 1, 0]),
            ([2, 13, 29, 4], [20, 4, 5, 3], [2, 1, 0, 2]), ([1, 6, 9, 32], [64, 32, 3, 3], [1, 1, 1, 1]),
            ([2, 5, 7, 3], [5, 3, 3, 3], [2, 4, 0, 3]),
        ]
        for (xs, ws, pads) in configs {
            let x = rng.normalTensor(xs), w = rng.normalTensor(ws)
            let padding = Padding.explicit(top: pads[0], bottom: pads[1], left: pads[2], right: pads[3])
            let plan = ConvolutionPlan(input: xs, weight: ws, strides: (1, 1), padding: padding, dilations: (1, 1), groups: 1)
            XCTAssertTrue(plan.hasDirectInputGradient, "\(xs) * \(ws)")
            let gy = rng.normalTensor(plan.outputShape)
            let direct = plan.backward(gy, x, w, input: true, weight: false).input!
            let adjoint = plan.backward(gy, x, w, input: true, weight: false, direct: false).input!
            assertClose(direct, adjoint, "\(xs) * \(ws) pads \(pads)")
        }
    }

    /// The direct path on an empty batch: an empty output and a zero weight gradient (no chunk to sum).
    func testDirectConvolutionOfAnEmptyBatch() {
        let x = Variable(Tensor(zeros: [0, 5, 4, 1])), w = randomInput([3, 1, 3, 3], &rng)
        let y = x.conv2d(weight: w, padding: .symmetric(1))
        XCTAssertEqual(y.shape, [0, 5, 4, 3])
        y.sum().backward()
        XCTAssertEqual(w.grad?.scalars, [Float](repeating: 0, count: 27))
    }

    func testChunkedBatchesMatchOneChunk() {
        // The direct kernel (3 input channels) and im2col (33; weights scaled so that outputs and gradients have the
        // magnitudes of the 3-channel case, which the absolute tolerances below were set for).
        let x3 = randomInput([5, 6, 5, 3], &rng), w3 = randomInput([4, 3, 3, 3], &rng), b3 = randomInput([4], &rng)
        chunkedBatchesMatchOneChunk(x3, w3, b3)
        let x33 = randomInput([5, 6, 5, 33], &rng), w33 = randomInput([4, 33, 3, 3], &rng, scale: 0.3)
        chunkedBatchesMatchOneChunk(x33, w33, randomInput([4], &rng))
    }

    func chunkedBatchesMatchOneChunk(_ x: Variable, _ w: Variable, _ b: Variable) {
        func run() -> (Tensor, Tensor, Tensor, Tensor) {
            for v in [x, w, b] { v.grad = nil }
            let y = x.conv2d(weight: w, bias: b, stride: 2, padding: .same)
            (y * y).sum().backward()
            return (y.value, x.grad!, w.grad!, b.grad!)
        }
        let whole = run()
        let saved = ConvolutionPlan.workspaceBytes
        ConvolutionPlan.workspaceBytes = 1  // one image per chunk
        defer { ConvolutionPlan.workspaceBytes = saved }
        let plan = ConvolutionPlan(input: x.shape, weight: w.shape, strides: (2, 2), padding: .same, dilations: (1, 1), groups: 1)
        XCTAssertEqual(plan.imagesPerChunk, 1)
        let chunked = run()
        XCTAssertLessThanOrEqual(whole.0.maxAbsDifference(chunked.0), 1e-5)
        XCTAssertLessThanOrEqual(whole.1.maxAbsDifference(chunked.1), 1e-4)
        XCTAssertLessThanOrEqual(whole.2.maxAbsDifference(chunked.2), 1e-4)
        XCTAssertLessThanOrEqual(whole.3.maxAbsDifference(chunked.3), 1e-4)
    }

    /// Chunks of images depend on the shapes only, not on the threads that take them: one thread and two give
    /// the same bits (the weight gradient is summed chunk by chunk in chunk order).
    func testConvolutionIsBitIdenticalOnOneThreadAndTwo() {
        // im2col + GEMM (33 input channels) and the direct kernel (2)
        for (x, w, b) in [(randomInput([7, 9, 8, 33], &rng), randomInput([6, 33, 3, 3], &rng), randomInput([6], &rng)),
                          (randomInput([7, 9, 8, 2], &rng), randomInput([17, 2, 3, 3], &rng), randomInput([17], &rng))] {
            bitIdenticalOnOneThreadAndTwo(x, w, b)
        }
    }

    func bitIdenticalOnOneThreadAndTwo(_ x: Variable, _ w: Variable, _ b: Variable) {
        func run(threads: Int) -> [[Float]] {
            Runtime.setThreads(threads)
            for v in [x, w, b] { v.grad = nil }
            let y = x.conv2d(weight: w, bias: b, padding: .symmetric(1))
            (y * y).sum().backward()
            return [y.value.scalars, x.grad!.scalars, w.grad!.scalars, b.grad!.scalars]
        }
        let saved = (ConvolutionPlan.workspaceBytes, Runtime.threads)
        ConvolutionPlan.workspaceBytes = 2 * 9 * 8 * 9 * x.shape[3] * 4   // two images per chunk: four chunks
        defer { ConvolutionPlan.workspaceBytes = saved.0; Runtime.setThreads(saved.1) }
        XCTAssertEqual(ConvolutionPlan(input: x.shape, weight: w.shape, strides: (1, 1), padding: .symmetric(1),
                                       dilations: (1, 1), groups: 1).chunks, 4)
        XCTAssertEqual(run(threads: 1), run(threads: 2))
    }

    /// The engine's other parallel reductions split their rows into `Parallel.reductionParts` partials whatever
    /// the thread count, so they give the same bits on 1, 2 or 3 threads (the split used to follow the threads:
    /// the speech demo's from-scratch baseline scored 0.44 on one thread and 0.43 on two): a depthwise
    /// convolution's weight gradient, BatchNorm and LayerNorm (statistics and gradients), the column sums of a
    /// linear layer's bias gradient. (OpenBLAS's own sgemm can change its split with the thread count for some
    /// shapes, e.g. a [24, 4096] x [4096, 40] weight gradient on two threads; the engine does not control that.)
    func testReductionsAreBitIdenticalOnAnyThreadCount() {
        let xd = randomInput([2, 6, 5, 16], &rng), wd = randomInput([16, 1, 3, 3], &rng), bd = randomInput([16], &rng)
        let xn = randomInput([2048, 64], &rng), g = randomInput([64], &rng), beta = randomInput([64], &rng)
        let mean = Variable(Tensor(zeros: [64])), variance = Variable(Tensor(shape: [64], repeating: 1))
        let rows = randomInput([4096, 40], &rng).value
        func run(threads: Int) -> [[Float]] {
            Runtime.setThreads(threads)
            for v in [xd, wd, bd, xn, g, beta] { v.grad = nil }
            let depthwise = xd.conv2d(weight: wd, bias: bd, padding: .same, groups: 16)
            let normalised = xn.batchNorm(weight: g, bias: beta, runningMean: mean, runningVariance: variance,
                                          useBatchStatistics: true).layerNorm(weight: g, bias: beta)
            ((depthwise * depthwise).sum() + (normalised * normalised * normalised).sum()).backward()
            return [depthwise.value.scalars, normalised.value.scalars, sumColumns(rows.pointer, rows: 4096, columns: 40),
                    ConvolutionPlan.columnSums(rows.pointer, rows: 4096, columns: 40).scalars]
                + [xd, wd, bd, xn, g, beta].map { $0.grad!.scalars }
        }
        let saved = Runtime.threads
        defer { Runtime.setThreads(saved) }
        let one = run(threads: 1)
        for threads in [2, 3] {
            for (i, (a, b)) in zip(one, run(threads: threads)).enumerated() { XCTAssertEqual(a, b, "result \(i) on \(threads) threads") }
        }
    }

    // MARK: Gradient checks

    func testConvolutionGradients() {
        var worst = 0.0
        let x = randomInput([2, 5, 6, 3], &rng), w = randomInput([4, 3, 3, 3], &rng, scale: 0.5), b = randomInput([4], &rng)
        worst = max(worst, checkGradients([x, w, b]) { x.conv2d(weight: w, bias: b) })
        worst = max(worst, checkGradients([x, w]) { x.conv2d(weight: w, stride: 2, padding: .same) })
        // One input channel and 18 outputs: the direct kernel's whole vectors (16 lanes) and its tail; 33 input
        // channels: im2col and its adjoint.
        let x33 = randomInput([1, 4, 5, 33], &rng), w33 = randomInput([3, 33, 3, 3], &rng, scale: 0.3)
        worst = max(worst, checkGradients([x33, w33]) { x33.conv2d(weight: w33, padding: .symmetric(1)) })
        let x1c = randomInput([2, 6, 5, 1], &rng), w18 = randomInput([18, 1, 3, 3], &rng, scale: 0.5), b18 = randomInput([18], &rng)
        worst = max(worst, checkGradients([x1c, w18, b18], samples: 120) { x1c.conv2d(weight: w18, bias: b18, padding: .symmetric(1)) })
        worst = max(worst, checkGradients([x, w, b]) {
            x.conv2d(weight: w, bias: b, strides: (2, 1), padding: .explicit(top: 0, bottom: 2, left: 1, right: 0), dilations: (1, 2))
        })

        let xg = randomInput([1, 6, 5, 4], &rng), wg = randomInput([6, 2, 3, 3], &rng, scale: 0.5), bg = randomInput([6], &rng)
        worst = max(worst, checkGradients([xg, wg, bg]) { xg.conv2d(weight: wg, bias: bg, padding: .symmetric(1), groups: 2) })

        let xd = randomInput([2, 7, 6, 4], &rng), wd = randomInput([4, 1, 3, 3], &rng), bd = randomInput([4], &rng)
        worst = max(worst, checkGradients([xd, wd, bd]) { xd.conv2d(weight: wd, bias: bd, stride: 2, padding: .same, groups: 4) })
        let wd5 = randomInput([4, 1, 5, 5], &rng, scale: 0.5)
        worst = max(worst, checkGradients([xd, wd5]) { xd.conv2d(weight: wd5, padding: .same, groups: 4) })
        worst = max(worst, checkGradients([xd, wd]) { xd.conv2d(weight: wd, stride: 1, padding: .symmetric(2), dilation: 2, groups: 4) })
        // 17 channels: one 16-lane SIMD block plus the scalar tail.
        let xs = randomInput([1, 5, 6, 17], &rng), ws = randomInput([17, 1, 3, 3], &rng), bs = randomInput([17], &rng)
        worst = max(worst, checkGradients([xs, ws, bs], samples: 120) { xs.conv2d(weight: ws, bias: bs, stride: 2, padding: .same, groups: 17) })

        let x1 = randomInput([2, 3, 4, 5], &rng), w1 = randomInput([3, 5, 1, 1], &rng), b1 = randomInput([3], &rng)
        worst = max(worst, checkGradients([x1, w1, b1]) { x1.conv2d(weight: w1, bias: b1) })
        let w1g = randomInput([4, 1, 1, 1], &rng)
        let x1g = randomInput([1, 3, 3, 2], &rng)
        worst = max(worst, checkGradients([x1g, w1g]) { x1g.conv2d(weight: w1g, groups: 2) })  // channel multiplier 2
        print("conv gradient checks: worst relative error \(worst)")
    }

    func testPoolingGradients() {
        // Max pooling: distinct values at least 0.05 apart, so no finite difference (step 0.01) changes a maximum.
        func spread(_ shape: [Int]) -> Variable {
            let n = shape.reduce(1, *)
            let values = rng.permutation(n).map { Float($0) * 0.05 - Float(n) * 0.025 }
            return Variable(Tensor(shape: shape, scalars: values), requiresGrad: true)
        }
        var worst = 0.0
        let xm = spread([2, 6, 7, 3])
        worst = max(worst, checkGradients([xm]) { xm.maxPool2d(kernel: 2) })
        worst = max(worst, checkGradients([xm]) { xm.maxPool2d(kernel: 3, stride: 1, padding: .symmetric(1)) })
        worst = max(worst, checkGradients([xm]) { xm.maxPool2d(kernel: 3, stride: 2, padding: .same) })

        let x = randomInput([2, 7, 6, 3], &rng)
        worst = max(worst, checkGradients([x]) { x.avgPool2d(kernel: 2) })
        worst = max(worst, checkGradients([x]) { x.avgPool2d(kernel: 3, stride: 2, padding: .symmetric(1)) })
        worst = max(worst, checkGradients([x]) { x.avgPool2d(kernel: 3, stride: 2, padding: .same, countingPadding: true) })
        worst = max(worst, checkGradients([x]) { x.globalAveragePool() })
        print("pooling gradient checks: worst relative error \(worst)")
    }

    func testMaxPoolRoutesGradientToTheMaximum() {
        let x = Variable(Tensor(shape: [1, 2, 2, 2], scalars: [1, 8, 4, 5, 3, 6, 2, 7]), requiresGrad: true)
        let y = x.maxPool2d(kernel: 2)
        XCTAssertEqual(y.value.scalars, [4, 8])
        y.sum().backward()
        XCTAssertEqual(x.grad?.scalars, [0, 1, 1, 0, 0, 0, 0, 0])
    }

    /// Channel blocks of 16 (the vectorised path) and the scalar tail against a naive loop, on values drawn from
    /// a few integers so that windows often hold ties: the same maxima, and each gradient at the first maximum
    /// in the window's row-major order.
    func testMaxPoolChannelBlocksMatchNaivePoolingWithTies() {
        let (n, h, w, c) = (2, 7, 6, 37)
        let x = Variable(Tensor(shape: [n, h, w, c], scalars: (0..<(n * h * w * c)).map { _ in Float(rng.int(below: 5)) }),
                         requiresGrad: true)
        for (k, s, pad) in [(2, 2, 0), (3, 2, 1), (3, 1, 1)] {
            x.grad = nil
            let y = x.maxPool2d(kernel: k, stride: s, padding: .symmetric(pad))
            let (oh, ow) = (y.shape[1], y.shape[2])
            let weights = (0..<y.value.count).map { Float($0 % 7) + 1 }
            (y * Variable(Tensor(shape: y.shape, scalars: weights))).sum().backward()
            var dx = [Float](repeating: 0, count: n * h * w * c)
            var maxima = [Float](repeating: 0, count: y.value.count)
            let xs = x.value.scalars
            for b in 0..<n { for oy in 0..<oh { for ox in 0..<ow { for ch in 0..<c {
                var best = -Float.infinity, at = -1
                for iy in (oy * s - pad)..<(oy * s - pad + k) where iy >= 0 && iy < h {
                    for ix in (ox * s - pad)..<(ox * s - pad + k) where ix >= 0 && ix < w {
                        let i = ((b * h + iy) * w + ix) * c + ch
                        if xs[i] > best { best = xs[i]; at = i }
                    }
                }
                let o = ((b * oh + oy) * ow + ox) * c + ch
                maxima[o] = best
                dx[at] += weights[o]
            } } } }
            XCTAssertEqual(y.value.scalars, maxima, "kernel \(k) stride \(s) pad \(pad)")
            XCTAssertEqual(x.grad?.scalars, dx, "kernel \(k) stride \(s) pad \(pad)")
        }
    }

    // MARK: Layer and recording

    func testConv2dLayer() {
        let conv = Conv2d(inputChannels: 6, outputChannels: 4, kernelSize: 3, stride: 2, padding: .same, groups: 2, rng: &rng)
        XCTAssertEqual(conv.namedParameters().map(\.name), ["weight", "bias"])
        XCTAssertEqual(conv.weight.shape, [4, 3, 3, 3])
        XCTAssertEqual(conv.bias?.shape, [4])
        let bound = 1 / Float(27).squareRoot()
        XCTAssertTrue(conv.weight.value.scalars.allSatisfy { abs($0) <= bound })
        XCTAssertTrue(conv.bias!.value.scalars.allSatisfy { abs($0) <= bound })
        XCTAssertGreaterThan(conv.weight.value.scalars.map(abs).max()!, bound * 0.8)

        let x = Variable(rng.normalTensor([2, 9, 8, 6]))
        XCTAssertEqual(conv(x).shape, [2, 5, 4, 4])
        conv.padding = .valid
        XCTAssertEqual(conv(x).shape, [2, 4, 3, 4])
        let depthwise = Conv2d(inputChannels: 5, outputChannels: 5, kernelSize: (3, 3), groups: 5, bias: false, rng: &rng)
        XCTAssertEqual(depthwise.namedParameters().map(\.name), ["weight"])
        XCTAssertEqual(depthwise.weight.shape, [5, 1, 3, 3])
    }

    func testFrozenConvolutionRecordsNothing() {
        let w = Variable(rng.normalTensor([4, 3, 3, 3])), x = Variable(rng.normalTensor([1, 5, 5, 3]))
        let y = x.conv2d(weight: w, padding: .same).maxPool2d(kernel: 2).avgPool2d(kernel: 2).globalAveragePool()
        XCTAssertFalse(y.requiresGrad)
        XCTAssertNil(y.backwardFunction)
        // Only the weight learns: the input gets no gradient, the weight does.
        let p = Variable(rng.normalTensor([4, 3, 3, 3]), requiresGrad: true)
        x.conv2d(weight: p).sum().backward()
        XCTAssertNil(x.grad)
        XCTAssertEqual(p.grad?.shape, [4, 3, 3, 3])
    }
}
