import Foundation
import TransferEngine

/// speech_embedding's forward pass without gradients, laid out for this network's shapes.
///
/// Why a separate path (profiled with perf): through the engine's general convolution the embedding ran at about
/// 0.3x onnxruntime's windows/s. Every convolution here is a 1-D kernel (1x3 along mel, 3x1 along time) with few
/// channels (24-96); one big im2col + multi-threaded sgemm over the whole batch spent most of its time in
/// OpenBLAS's packing (`sgemm_oncopy`) and in memory traffic, plus separate bias, activation and pooling passes.
/// Here, with every layer's shape, pooling and channels read from `SpeechEmbedding.layers`:
/// - The batch is split over the threads, and each thread runs its windows one small step (`windowsPerStep`)
///   at a time through all layers with single-threaded sgemm calls: the working set stays in L2, and OpenBLAS
///   takes its no-packing "direct" kernel for such small products where the CPU has one (AVX-512 builds).
/// - The layer with `bn0` (conv0, one input channel) is a direct loop with ReLU, bn0 (`BatchNorm.folded` to a
///   scale and shift: it follows the ReLU, so it cannot go into the weights) and the activation fused in.
/// - Every other layer: an im2col of block copies (one contiguous run of the input per kernel row), one sgemm with
///   K = taps·C on weights packed by `Conv2d.packedWeight`, then, if the layer activates, one epilogue that adds
///   the bias and applies LeakyReLU(0.2) + max(x, -0.4). Where a max pool follows, the epilogue pools first and
///   activates the pooled value (the activation is monotone and the bias is the same within a pooling window, so
///   act(max(a, b) + bias) = max(act(a + bias), act(b + bias))). A kernel covering the whole unpadded map
///   (conv19's 3x1 on [3, 1, 96]) needs no im2col: the input already is the GEMM's left matrix.
///
/// The tape path (`SpeechEmbedding.block`, engine ops) runs whenever a gradient or BatchNorm batch statistics are
/// needed; `SpeechEmbeddingTests` checks that both paths agree and that this one matches onnxruntime.
struct EmbeddingInference {
    /// Windows per step of one thread.
    nonisolated(unsafe) static var windowsPerStep = 1

    /// A layer as run here: its declaration, input channels, weights as the GEMM's right matrix [taps·C, O] and bias.
    struct Layer {
        let spec: SpeechEmbedding.Layer
        let inputs: Int
        let weight: [Float]
        let bias: [Float]
    }

    let layers: [Layer]
    let bnScale: [Float], bnShift: [Float]

    init(model: SpeechEmbedding) {
        layers = zip(SpeechEmbedding.layers, model.convs).map { spec, conv in
            precondition(spec.activates || (!spec.bias && spec.pool == nil),
                         "EmbeddingInference: a layer without activation has neither bias nor pooling")
            precondition(!spec.batchNorm || (conv.inputChannels == 1 && spec.activates && spec.outputs % 8 == 0),
                         "EmbeddingInference: bn0 follows a one-channel convolution with a multiple of 8 outputs")
            return Layer(spec: spec, inputs: conv.inputChannels, weight: conv.packedWeight(columns: conv.outputChannels),
                         bias: conv.bias?.value.scalars ?? [Float](repeating: 0, count: conv.outputChannels))
        }
        (bnScale, bnShift) = model.bn0.folded
    }

    /// Output size of layer `l`'s convolution (before pooling) on an [h, w] map.
    static func convolved(_ l: SpeechEmbedding.Layer, h: Int, w: Int) -> (h: Int, w: Int) {
        (h - l.kernel.time + 1, w + 2 * l.melPadding - l.kernel.mel + 1)
    }

    /// Runs layers `range` (whole blocks) on NHWC activations `[N, H, W, C]`.
    func run(_ input: Tensor, layers range: Range<Int>) -> Tensor {
        if range.isEmpty { return input }
        let n = input.shape[0]
        var shapes = [Array(input.shape.dropFirst())]
        // Per-step buffer sizes: activations (ping-pong), im2col and the GEMM output before pooling.
        var act = 0, cols = 0, gemm = 0
        for i in range {
            let l = layers[i].spec, s = shapes.last!
            let (oh, ow) = EmbeddingInference.convolved(l, h: s[0], w: s[1])
            let pool = l.pool ?? (time: 1, mel: 1)
            shapes.append([oh / pool.time, ow / pool.mel, l.outputs])
            act = max(act, shapes.last!.reduce(1, *))
            cols = max(cols, oh * ow * l.kernel.time * l.kernel.mel * s[2])
            gemm = max(gemm, oh * ow * l.outputs)
        }
        let step = max(1, EmbeddingInference.windowsPerStep)
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
                        for (k, i) in range.enumerated() {
                            let s = shapes[k]
                            let last = k == range.count - 1
                            let dest = last ? target + start * outPer : y
                            self.layer(i, x, n: m, h: s[0], w: s[1], cols: colBuffer, gemm: gemmBuffer, into: dest)
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

    /// Layer `i` (convolution, activation, pooling) on `n` windows [n, h, w, C] at `x`, written to `y`.
    func layer(_ i: Int, _ x: UnsafePointer<Float>, n: Int, h: Int, w: Int, cols: UnsafeMutablePointer<Float>,
               gemm: UnsafeMutablePointer<Float>, into y: UnsafeMutablePointer<Float>) {
        let layer = layers[i], l = layer.spec
        if l.batchNorm { oneChannel(layer, x, n: n, h: h, w: w, into: y); return }
        let c = layer.inputs, o = l.outputs
        let (oh, ow) = EmbeddingInference.convolved(l, h: h, w: w)
        let rows = n * oh * ow, k = l.kernel.time * l.kernel.mel * c
        // A kernel covering the whole unpadded map: x already is the im2col matrix.
        let whole = oh == 1 && ow == 1 && l.melPadding == 0
        if !whole {
            for r in 0..<(n * oh) {
                let image = x + (r / oh) * h * w * c
                EmbeddingInference.tapRows(l, image, oy: r % oh, ow: ow, w: w, c: c, into: cols + r * ow * k)
            }
        }
        layer.weight.withUnsafeBufferPointer { wb in
            InferenceKernels.sgemm(m: rows, n: o, k: k, a: whole ? x : UnsafePointer(cols), lda: k, b: wb.baseAddress!,
                                   ldb: o, c: l.pool == nil ? y : gemm, ldc: o)
        }
        guard l.activates else { return }
        layer.bias.withUnsafeBufferPointer { bb in
            let bias = bb.baseAddress!
            guard let pool = l.pool else {
                EmbeddingInference.biasActivation(y, rows: rows, channels: o, bias: bias)
                return
            }
            let (ph, pw) = (pool.time, pool.mel), ph2 = oh / ph, pw2 = ow / pw
            for r in 0..<(n * ph2) {
                let img = r / ph2, y0 = (r % ph2) * ph
                for x0 in 0..<pw2 {
                    let dst = y + (r * pw2 + x0) * o
                    let first = gemm + ((img * oh + y0) * ow + x0 * pw) * o
                    dst.update(from: first, count: o)
                    for dy in 0..<ph {
                        for dx in 0..<pw where dy > 0 || dx > 0 { EmbeddingInference.maxInto(dst, first + (dy * ow + dx) * o, o) }
                    }
                }
            }
            EmbeddingInference.biasActivation(y, rows: n * ph2 * pw2, channels: o, bias: bias)
        }
    }

    /// The one-input-channel layer (conv0) + ReLU + bn0 + activation, directly: per output pixel, 24 channels
    /// (three 8-wide accumulators) at a time over the taps.
    func oneChannel(_ layer: Layer, _ x: UnsafePointer<Float>, n: Int, h: Int, w: Int,
                    into y: UnsafeMutablePointer<Float>) {
        let l = layer.spec, o = l.outputs, groups = o / 8, chunks = (groups + 2) / 3
        let (kh, kw, pad) = (l.kernel.time, l.kernel.mel, l.melPadding)
        let (oh, ow) = EmbeddingInference.convolved(l, h: h, w: w)
        typealias V = SIMD8<Float>
        // Weights [tap][group], scale and shift as 8-wide vectors, zero beyond the outputs up to whole chunks.
        func vectors(_ a: [Float], rows: Int) -> [V] {
            var v = [V](repeating: V(), count: rows * chunks * 3)
            for r in 0..<rows { for g in 0..<groups { v[r * chunks * 3 + g] = V(a[(r * o + g * 8)..<(r * o + g * 8 + 8)]) } }
            return v
        }
        let wv = vectors(layer.weight, rows: kh * kw)
        let scale = vectors(bnScale, rows: 1), shift = vectors(bnShift, rows: 1)
        let zero = V(), slope = V(repeating: SpeechEmbedding.slope), floor = V(repeating: SpeechEmbedding.floor)
        @inline(__always) func finish(_ a: V, _ g: Int) -> V {
            let r = a.replacing(with: zero, where: a .< zero) * scale[g] + shift[g]
            let leaky = r.replacing(with: r * slope, where: r .< zero)
            return leaky.replacing(with: floor, where: leaky .< floor)
        }
        wv.withUnsafeBufferPointer { wp in
            for r in 0..<(n * oh) {
                let image = x + (r / oh) * h * w, oy = r % oh
                for ox in 0..<ow {
                    let out = UnsafeMutableRawPointer(y + (r * ow + ox) * o)
                    for chunk in 0..<chunks {
                        let g = chunk * 3
                        var a0 = V(), a1 = V(), a2 = V()
                        for ky in 0..<kh {
                            let row = image + (oy + ky) * w
                            for kx in 0..<kw {
                                let ix = ox + kx - pad
                                if ix < 0 || ix >= w { continue }
                                let xv = V(repeating: row[ix]), wt = wp.baseAddress! + (ky * kw + kx) * chunks * 3 + g
                                a0 += xv * wt[0]; a1 += xv * wt[1]; a2 += xv * wt[2]
                            }
                        }
                        out.storeBytes(of: finish(a0, g), toByteOffset: g * 32, as: V.self)
                        if g + 1 < groups { out.storeBytes(of: finish(a1, g + 1), toByteOffset: (g + 1) * 32, as: V.self) }
                        if g + 2 < groups { out.storeBytes(of: finish(a2, g + 2), toByteOffset: (g + 2) * 32, as: V.self) }
                    }
                }
            }
        }
    }

    /// Writes the im2col rows of output row `oy` of one image [h, w, c] to `dst`: `ow` rows of taps·c values in
    /// (tap, channel) order, zeros where the mel padding is. The taps of one kernel row are one contiguous run.
    static func tapRows(_ l: SpeechEmbedding.Layer, _ image: UnsafePointer<Float>, oy: Int, ow: Int, w: Int, c: Int,
                        into dst: UnsafeMutablePointer<Float>) {
        let (kh, kw, pad) = (l.kernel.time, l.kernel.mel, l.melPadding)
        let run = kw * c, line = w * c
        var d = dst
        for ox in 0..<ow {
            var src = image + (oy * w + ox - pad) * c
            let lo = max(0, pad - ox), hi = max(lo, min(kw, w + pad - ox))  // taps [lo, hi) lie inside the map
            if lo == 0 && hi == kw {
                for _ in 0..<kh { d.update(from: src, count: run); d += run; src += line }
            } else {
                for _ in 0..<kh {
                    d.update(repeating: 0, count: run)
                    (d + lo * c).update(from: src + lo * c, count: (hi - lo) * c)
                    d += run; src += line
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
