import Foundation

// Pooling over NHWC tensors. Windows and padding follow `WindowGeometry` (Convolution.swift); every kernel runs
// its innermost loop over the contiguous channels and is parallel over independent rows.

extension Variable {
    /// Max pooling of an NHWC input [N, H, W, C] -> [N, OH, OW, C]; `stride` defaults to `kernel` (PyTorch).
    /// Padded positions never win (PyTorch pads with -inf); the gradient goes to the first maximum of each window.
    public func maxPool2d(kernel: Int, stride: Int? = nil, padding: Padding = .valid) -> Variable {
        maxPool2d(kernels: (kernel, kernel), strides: (stride ?? kernel, stride ?? kernel), padding: padding)
    }

    /// Max pooling with (height, width) kernel and strides.
    public func maxPool2d(kernels: (Int, Int), strides: (Int, Int), padding: Padding = .valid) -> Variable {
        let x = self
        let g = WindowGeometry(input: x.shape, kernel: kernels, strides: strides, dilations: (1, 1), padding: padding,
                               op: "maxPool2d")
        precondition(max(g.top, g.bottom) < g.kh && max(g.left, g.right) < g.kw,
                     "maxPool2d: padding \(padding) leaves windows of kernel \(kernels) with no input pixel")
        let record = Autograd.needsGrad(x)
        var y = Tensor(uninitializedShape: [g.n, g.oh, g.ow, g.c])
        let px = x.value.pointer, py = y.mutablePointer
        // The argmax (flat index within its image) exists only when a backward pass can need it.
        let argmax: [Int32]
        if record {
            precondition(g.h * g.w * g.c <= Int(Int32.max), "maxPool2d: image of shape \(x.shape) too large")
            argmax = [Int32](unsafeUninitializedCapacity: y.count) { buffer, initialized in
                Variable.maxPoolForward(g, px, py, buffer.baseAddress!)
                initialized = y.count
            }
        } else {
            argmax = []
            Variable.maxPoolForward(g, px, py, nil)
        }
        return Autograd.result(y, [x], record: record) { gy in
            var dx = Tensor(zeros: x.shape)
            let pdx = dx.mutablePointer, pg = gy.pointer
            let image = g.h * g.w * g.c, perImage = g.oh * g.ow * g.c
            // Parallel over images: each image's maxima lie in that image, so no two threads add to one pixel.
            argmax.withUnsafeBufferPointer { arg in
                Parallel.forEach(g.n, minimumChunk: max(1, 65536 / max(1, perImage))) { images in
                    for b in images {
                        let dst = pdx + b * image, src = pg + b * perImage, a = arg.baseAddress! + b * perImage
                        for i in 0..<perImage { dst[Int(a[i])] += src[i] }
                    }
                }
            }
            x.accumulate(dx)
        }
    }

    static func maxPoolForward(_ g: WindowGeometry, _ px: UnsafePointer<Float>, _ py: UnsafeMutablePointer<Float>,
                               _ pa: UnsafeMutablePointer<Int32>?) {
        let (h, w, c, kh, kw, sh, sw, top, left, oh, ow) = (g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.top, g.left, g.oh, g.ow)
        let blocked = c - c % Lanes.width
        let lane = SIMD16<Int32>(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
        Parallel.forEach(g.n * oh, minimumChunk: max(1, 32768 / max(1, ow * c * kh * kw))) { rows in
            for r in rows {
                let n = r / oh, iy0 = (r % oh) * sh - top
                let image = px + n * h * w * c
                let (ky0, ky1) = WindowGeometry.taps(start: iy0, dilation: 1, kernel: kh, limit: h)
                for ox in 0..<ow {
                    let ix0 = ox * sw - left
                    let (kx0, kx1) = WindowGeometry.taps(start: ix0, dilation: 1, kernel: kw, limit: w)
                    let out = py + (r * ow + ox) * c, arg = pa.map { $0 + (r * ow + ox) * c }
                    let first = ((iy0 + ky0) * w + ix0 + kx0) * c
                    // Blocks of 16 channels keep the running maximum (and its index) in registers over the window,
                    // replaced where a later tap is strictly greater: the first maximum wins, NaN never replaces.
                    var j = 0
                    while j < blocked {
                        var best = Lanes.load(image + first + j)
                        var at = SIMD16<Int32>(repeating: Int32(first + j)) &+ lane
                        for iy in (iy0 + ky0)..<(iy0 + ky1) {
                            for ix in (ix0 + kx0)..<(ix0 + kx1) {
                                let offset = (iy * w + ix) * c + j
                                let v = Lanes.load(image + offset)
                                let greater = v .> best
                                best.replace(with: v, where: greater)
                                if arg != nil { at.replace(with: SIMD16<Int32>(repeating: Int32(offset)) &+ lane, where: greater) }
                            }
                        }
                        Lanes.store(best, out + j)
                        if let arg { UnsafeMutableRawPointer(arg + j).storeBytes(of: at, as: SIMD16<Int32>.self) }
                        j += Lanes.width
                    }
                    while j < c {
                        var best = image[first + j], at = first + j
                        for iy in (iy0 + ky0)..<(iy0 + ky1) {
                            for ix in (ix0 + kx0)..<(ix0 + kx1) {
                                let offset = (iy * w + ix) * c + j
                                if image[offset] > best { best = image[offset]; at = offset }
                            }
                        }
                        out[j] = best
                        arg?[j] = Int32(at)
                        j += 1
                    }
                }
            }
        }
    }

    /// Average pooling of an NHWC input [N, H, W, C] -> [N, OH, OW, C]; `stride` defaults to `kernel`.
    /// With `countingPadding` false (the default; PyTorch's `count_include_pad=False`, TensorFlow's behaviour),
    /// each window averages only its input pixels; with true, padded zeros count (divisor KH·KW).
    public func avgPool2d(kernel: Int, stride: Int? = nil, padding: Padding = .valid,
                          countingPadding: Bool = false) -> Variable {
        avgPool2d(kernels: (kernel, kernel), strides: (stride ?? kernel, stride ?? kernel), padding: padding,
                  countingPadding: countingPadding)
    }

    /// Average pooling with (height, width) kernel and strides.
    public func avgPool2d(kernels: (Int, Int), strides: (Int, Int), padding: Padding = .valid,
                          countingPadding: Bool = false) -> Variable {
        let x = self
        let g = WindowGeometry(input: x.shape, kernel: kernels, strides: strides, dilations: (1, 1), padding: padding,
                               op: "avgPool2d")
        let (n, h, w, c, kh, kw, sh, sw, top, left, oh, ow) =
            (g.n, g.h, g.w, g.c, g.kh, g.kw, g.sh, g.sw, g.top, g.left, g.oh, g.ow)
        // 1 / divisor of each window = rowFactor[oy] * columnFactor[ox].
        let rowFactor: [Float] = (0..<oh).map { oy in
            let t = WindowGeometry.taps(start: oy * sh - top, dilation: 1, kernel: kh, limit: h)
            return 1 / Float(countingPadding ? kh : max(1, t.hi - t.lo))
        }
        let columnFactor: [Float] = (0..<ow).map { ox in
            let t = WindowGeometry.taps(start: ox * sw - left, dilation: 1, kernel: kw, limit: w)
            return 1 / Float(countingPadding ? kw : max(1, t.hi - t.lo))
        }
        var y = Tensor(uninitializedShape: [n, oh, ow, c])
        let px = x.value.pointer, py = y.mutablePointer
        rowFactor.withUnsafeBufferPointer { rf in
            columnFactor.withUnsafeBufferPointer { cf in
                Parallel.forEach(n * oh, minimumChunk: max(1, 32768 / max(1, ow * c * kh * kw))) { rows in
                    for r in rows {
                        let b = r / oh, oy = r % oh, iy0 = oy * sh - top
                        let (ky0, ky1) = WindowGeometry.taps(start: iy0, dilation: 1, kernel: kh, limit: h)
                        for ox in 0..<ow {
                            let ix0 = ox * sw - left
                            let (kx0, kx1) = WindowGeometry.taps(start: ix0, dilation: 1, kernel: kw, limit: w)
                            let out = py + (r * ow + ox) * c
                            out.update(repeating: 0, count: c)
                            for iy in (iy0 + ky0)..<(iy0 + ky1) {
                                for ix in (ix0 + kx0)..<(ix0 + kx1) {
                                    let xp = px + ((b * h + iy) * w + ix) * c
                                    for j in 0..<c { out[j] += xp[j] }
                                }
                            }
                            let s = rf[oy] * cf[ox]
                            for j in 0..<c { out[j] *= s }
                        }
                    }
                }
            }
        }
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { gy in
            var dx = Tensor(uninitializedShape: x.shape)
            let pdx = dx.mutablePointer, pg = gy.pointer
            // Gather per input row (no two threads write one pixel): sum g / divisor over the windows holding it.
            rowFactor.withUnsafeBufferPointer { rf in
                columnFactor.withUnsafeBufferPointer { cf in
                    Parallel.forEach(n * h, minimumChunk: max(1, 32768 / max(1, w * c * kh * kw))) { rows in
                        for r in rows {
                            let b = r / h, iy = r % h
                            for ix in 0..<w {
                                let dst = pdx + (r * w + ix) * c
                                dst.update(repeating: 0, count: c)
                                for ky in 0..<kh {
                                    let t = iy + top - ky
                                    if t < 0 { break }
                                    if t % sh != 0 || t / sh >= oh { continue }
                                    let oy = t / sh
                                    for kx in 0..<kw {
                                        let u = ix + left - kx
                                        if u < 0 { break }
                                        if u % sw != 0 || u / sw >= ow { continue }
                                        let ox = u / sw
                                        let gp = pg + ((b * oh + oy) * ow + ox) * c, s = rf[oy] * cf[ox]
                                        for j in 0..<c { dst[j] += s * gp[j] }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            x.accumulate(dx)
        }
    }

    /// Mean over the spatial axes: [N, H, W, C] -> [N, C].
    public func globalAveragePool() -> Variable {
        let x = self
        precondition(x.rank == 4, "globalAveragePool: input of shape \(x.shape) is not NHWC (rank 4)")
        let (n, pixels, c) = (x.shape[0], x.shape[1] * x.shape[2], x.shape[3])
        let scale = 1 / Float(max(1, pixels))
        var y = Tensor(uninitializedShape: [n, c])
        let px = x.value.pointer, py = y.mutablePointer
        Parallel.forEach(n, minimumChunk: max(1, 65536 / max(1, pixels * c))) { images in
            for b in images {
                let out = py + b * c
                out.update(repeating: 0, count: c)
                for p in 0..<pixels {
                    let xp = px + (b * pixels + p) * c
                    for j in 0..<c { out[j] += xp[j] }
                }
                for j in 0..<c { out[j] *= scale }
            }
        }
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { gy in
            var dx = Tensor(uninitializedShape: x.shape)
            let pdx = dx.mutablePointer, pg = gy.pointer
            Parallel.forEach(n * pixels, minimumChunk: max(1, 32768 / max(1, c))) { rows in
                for r in rows {
                    let dst = pdx + r * c, gp = pg + (r / pixels) * c
                    for j in 0..<c { dst[j] = gp[j] * scale }
                }
            }
            x.accumulate(dx)
        }
    }
}
