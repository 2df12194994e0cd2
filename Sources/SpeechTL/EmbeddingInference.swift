import Foundation
import TransferEngine

/// speech_embedding's forward pass without gradients, laid out for this network's shapes.
///
/// Why a separate path (profiled with perf): through the engine's general convolution the embedding ran at about
/// 0.3x onnxruntime's windows/s. Every convolution here is a 1-D kernel (1x3 along mel, 3x1 along time) with few
/// channels (24-96); one big im2col + multi-threaded sgemm over the whole batch spent most of its time in
/// OpenBLAS's packing (`sgemm_oncopy`) and in memory traffic, plus separate bias, activation and pooling passes.
/// Here:
/// - The batch is split over the threads, and each thread runs its windows one small step (`windowsPerStep`)
///   at a time through all layers with single-threaded sgemm calls: the working set stays in L2, and OpenBLAS
///   takes its no-packing "direct" kernel for such small products where the CPU has one (AVX-512 builds).
/// - conv0 (one input channel) is a direct loop with ReLU, bn0 (folded to scale and shift) and the activation
///   fused in.
/// - conv1-18: a 1-D im2col of block copies (3 contiguous channel vectors per output pixel), one sgemm with
///   K = 3C, then one epilogue that adds the bias and applies LeakyReLU(0.2) + max(x, -0.4). Where a max pool
///   follows, the epilogue pools first and activates the pooled value (the activation is monotone and the bias
///   is the same within a pooling window, so act(max(a, b) + bias) = max(act(a + bias), act(b + bias))).
/// - conv19 is a plain GEMM: its 3x1 window is the whole remaining [3, 1, 96] map.
///
/// The tape path (`SpeechEmbedding.block`, engine ops) runs whenever a gradient or BatchNorm batch statistics are
/// needed; `SpeechEmbeddingTests` checks that both paths agree and that this one matches onnxruntime.
struct EmbeddingInference {
    /// Windows per step of one thread.
    nonisolated(unsafe) static var windowsPerStep = 1

    let weights: [[Float]]
    let biases: [[Float]]
    let bnScale: [Float], bnShift: [Float]

    init(model: SpeechEmbedding) {
        weights = model.convs.map(EmbeddingInference.packed)
        biases = model.convs.map { $0.bias?.value.scalars ?? [Float](repeating: 0, count: $0.outputChannels) }
        let bn = model.bn0
        let g = bn.weight.value.scalars, b = bn.bias.value.scalars
        let m = bn.runningMean.value.scalars, v = bn.runningVariance.value.scalars
        bnScale = (0..<g.count).map { g[$0] / (v[$0] + bn.eps).squareRoot() }
        bnShift = (0..<g.count).map { b[$0] - m[$0] * g[$0] / (v[$0] + bn.eps).squareRoot() }
    }

    /// A layer's weights packed as the GEMM's B matrix [taps·C, O], rows in (tap, channel) order.
    static func packed(_ conv: Conv2d) -> [Float] {
        let w = conv.weight.value.scalars  // [O, C, KH, KW]
        let o = conv.outputChannels, c = conv.inputChannels, taps = conv.kernelSize.height * conv.kernelSize.width
        var p = [Float](repeating: 0, count: taps * c * o)
        for oc in 0..<o { for ic in 0..<c { for t in 0..<taps { p[(t * c + ic) * o + oc] = w[(oc * c + ic) * taps + t] } } }
        return p
    }

    /// [H, W, C] after conv `i` (and its pooling) from [H, W, C] before it.
    static func outputShape(layer i: Int, input s: [Int]) -> [Int] {
        var (h, w) = (s[0], s[1])
        if i == 0 || i == 19 || i % 2 == 0 { h -= 2 }
        if let (ph, pw) = SpeechEmbedding.pools[i] { h /= ph; w /= pw }
        return [h, w, SpeechEmbedding.channels[i]]
    }

    /// Runs convolutions `layers` (whole blocks) on NHWC activations `[N, H, W, C]`.
    func run(_ input: Tensor, layers: Range<Int>) -> Tensor {
        if layers.isEmpty { return input }
        let n = input.shape[0]
        var shapes = [Array(input.shape.dropFirst())]
        for i in layers { shapes.append(EmbeddingInference.outputShape(layer: i, input: shapes.last!)) }
        let step = max(1, EmbeddingInference.windowsPerStep)
        // Per-step buffer sizes: activations (ping-pong), im2col and the GEMM output before pooling.
        var act = 0, cols = 0, gemm = 0
        for (k, i) in layers.enumerated() {
            let (h, w, c) = (shapes[k][0], shapes[k][1], shapes[k][2])
            let oh = (i == 0 || i == 19 || i % 2 == 0) ? h - 2 : h
            act = max(act, shapes[k + 1].reduce(1, *))
            cols = max(cols, oh * w * 3 * c)
            gemm = max(gemm, oh * w * SpeechEmbedding.channels[i])
        }
        var out = Tensor(uninitializedShape: [n] + shapes.last!)
        let inPer = input.count / max(n, 1), outPer = out.count / max(n, 1)
        let threads = max(1, min(Parallel.threadCount, (n + step - 1) / step))
        input.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                let source = src.baseAddress!, target = dst.baseAddress!
                let work = { (thread: Int) in
                    let buffer = UnsafeMutablePointer<Float>.allocate(capacity: step * (2 * act + cols + gemm))
                    defer { buffer.deallocate() }
                    let ping = buffer, pong = buffer + step * act, colBuffer = buffer + 2 * step * act
                    let gemmBuffer = colBuffer + step * cols
                    var start = n * thread / threads
                    let end = n * (thread + 1) / threads
                    while start < end {
                        let m = min(step, end - start)
                        var x = UnsafePointer(source + start * inPer)
                        var y = ping
                        for (k, i) in layers.enumerated() {
                            let s = shapes[k]
                            let last = k == layers.count - 1
                            let dest = last ? target + start * outPer : y
                            self.layer(i, x, n: m, h: s[0], w: s[1], c: s[2], cols: colBuffer, gemm: gemmBuffer, into: dest)
                            x = UnsafePointer(dest)
                            y = y == ping ? pong : ping
                        }
                        start += m
                    }
                }
                InferenceKernels.eachThread(threads, work)
            }
        }
        return out
    }

    /// Conv `i` (with its activation and pooling) on `n` windows [n, h, w, c] at `x`, written to `y`.
    func layer(_ i: Int, _ x: UnsafePointer<Float>, n: Int, h: Int, w: Int, c: Int, cols: UnsafeMutablePointer<Float>,
               gemm: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        if i == 0 { conv0(x, n: n, h: h, w: w, into: y); return }
        let o = SpeechEmbedding.channels[i]
        let timeKernel = i % 2 == 0 || i == 19  // 3x1 along time, unpadded; odd i < 19: 1x3 along mel, padded
        let oh = timeKernel ? h - 2 : h
        let rows = n * oh * w, k = 3 * c
        let pool = SpeechEmbedding.pools[i]
        weights[i].withUnsafeBufferPointer { wb in
            let b = wb.baseAddress!
            if i == 19 && oh == 1 && w == 1 {
                // The 3x1 window covers the whole [3, 1, C] map: x already is the im2col matrix [n, 3C].
                InferenceKernels.sgemm(m: n, n: o, k: k, a: x, lda: k, b: b, ldb: o, c: y, ldc: o)
                return
            }
            for r in 0..<(n * oh) {
                let img = r / oh, oy = r % oh
                for ox in 0..<w {
                    let dst = cols + (r * w + ox) * k
                    if timeKernel {
                        for t in 0..<3 { (dst + t * c).update(from: x + ((img * h + oy + t) * w + ox) * c, count: c) }
                    } else {
                        for t in 0..<3 {
                            let ix = ox + t - 1
                            if ix < 0 || ix >= w { (dst + t * c).update(repeating: 0, count: c) }
                            else { (dst + t * c).update(from: x + ((img * h + oy) * w + ix) * c, count: c) }
                        }
                    }
                }
            }
            InferenceKernels.sgemm(m: rows, n: o, k: k, a: cols, lda: k, b: b, ldb: o, c: pool == nil ? y : gemm, ldc: o)
        }
        if i == 19 { return }  // no bias, no activation
        biases[i].withUnsafeBufferPointer { bb in
            let bias = bb.baseAddress!
            guard let (ph, pw) = pool else {
                EmbeddingInference.biasActivation(y, rows: rows, channels: o, bias: bias)
                return
            }
            let ph2 = oh / ph, pw2 = w / pw
            for r in 0..<(n * ph2) {
                let img = r / ph2, y0 = (r % ph2) * ph
                for x0 in 0..<pw2 {
                    let dst = y + (r * pw2 + x0) * o
                    let first = gemm + ((img * oh + y0) * w + x0 * pw) * o
                    dst.update(from: first, count: o)
                    for dy in 0..<ph { for dx in 0..<pw where dy > 0 || dx > 0 { EmbeddingInference.maxInto(dst, first + (dy * w + dx) * o, o) } }
                }
            }
            EmbeddingInference.biasActivation(y, rows: n * ph2 * pw2, channels: o, bias: bias)
        }
    }

    /// conv0 (3x3, 1 -> 24, mel axis padded by 1) + ReLU + bn0 + activation, directly.
    func conv0(_ x: UnsafePointer<Float>, n: Int, h: Int, w: Int, into y: UnsafeMutablePointer<Float>) {
        let oh = h - 2, o = 24
        typealias V = SIMD8<Float>
        func load(_ a: [Float], _ j: Int) -> V { V(a[j..<(j + 8)]) }
        let w0 = weights[0]
        let wv = (0..<9).map { t in (load(w0, t * o), load(w0, t * o + 8), load(w0, t * o + 16)) }
        let s = (load(bnScale, 0), load(bnScale, 8), load(bnScale, 16)), t = (load(bnShift, 0), load(bnShift, 8), load(bnShift, 16))
        let zero = V(), slope = V(repeating: SpeechEmbedding.slope), floor = V(repeating: SpeechEmbedding.floor)
        @inline(__always) func finish(_ a: V, _ s: V, _ t: V) -> V {
            let r = a.replacing(with: zero, where: a .< zero) * s + t
            let l = r.replacing(with: r * slope, where: r .< zero)
            return l.replacing(with: floor, where: l .< floor)
        }
        wv.withUnsafeBufferPointer { wp in
            for r in 0..<(n * oh) {
                let img = r / oh, oy = r % oh
                for ox in 0..<w {
                    var a0 = V(), a1 = V(), a2 = V()
                    for ky in 0..<3 {
                        let row = x + (img * h + oy + ky) * w
                        for kx in 0..<3 {
                            let ix = ox + kx - 1
                            if ix < 0 || ix >= w { continue }
                            let xv = V(repeating: row[ix]), wt = wp[ky * 3 + kx]
                            a0 += xv * wt.0; a1 += xv * wt.1; a2 += xv * wt.2
                        }
                    }
                    let dst = UnsafeMutableRawPointer(y + (r * w + ox) * o)
                    dst.storeBytes(of: finish(a0, s.0, t.0), as: V.self)
                    dst.storeBytes(of: finish(a1, s.1, t.1), toByteOffset: 32, as: V.self)
                    dst.storeBytes(of: finish(a2, s.2, t.2), toByteOffset: 64, as: V.self)
                }
            }
        }
    }

    /// dst = max(dst, src) over `count` floats.
    @inline(__always)
    static func maxInto(_ dst: UnsafeMutablePointer<Float>, _ src: UnsafePointer<Float>, _ count: Int) {
        var j = 0
        while j + 8 <= count {
            let a = UnsafeRawPointer(dst + j).loadUnaligned(as: SIMD8<Float>.self)
            let b = UnsafeRawPointer(src + j).loadUnaligned(as: SIMD8<Float>.self)
            UnsafeMutableRawPointer(dst + j).storeBytes(of: a.replacing(with: b, where: b .> a), as: SIMD8<Float>.self)
            j += 8
        }
        while j < count { if src[j] > dst[j] { dst[j] = src[j] }; j += 1 }
    }

    /// In place over [rows, channels]: y = max(leakyRelu(y + bias, 0.2), -0.4).
    @inline(__always)
    static func biasActivation(_ y: UnsafeMutablePointer<Float>, rows: Int, channels o: Int, bias pb: UnsafePointer<Float>) {
        let slope = SIMD8<Float>(repeating: SpeechEmbedding.slope), floor = SIMD8<Float>(repeating: SpeechEmbedding.floor)
        let zero = SIMD8<Float>()
        for r in 0..<rows {
            let row = y + r * o
            var j = 0
            while j + 8 <= o {
                let v = UnsafeRawPointer(row + j).loadUnaligned(as: SIMD8<Float>.self)
                    + UnsafeRawPointer(pb + j).loadUnaligned(as: SIMD8<Float>.self)
                let l = v.replacing(with: v * slope, where: v .< zero)
                UnsafeMutableRawPointer(row + j).storeBytes(of: l.replacing(with: floor, where: l .< floor), as: SIMD8<Float>.self)
                j += 8
            }
            while j < o {
                let v = row[j] + pb[j], l = v > 0 ? v : v * SpeechEmbedding.slope
                row[j] = l > SpeechEmbedding.floor ? l : SpeechEmbedding.floor
                j += 1
            }
        }
    }
}
