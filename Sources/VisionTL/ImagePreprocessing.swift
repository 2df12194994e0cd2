import TransferEngine

/// A rectangle of whole pixels inside an image.
public struct PixelBox: Equatable, Sendable {
    public var x: Int, y: Int, width: Int, height: Int
    public init(x: Int, y: Int, width: Int, height: Int) {
        self.x = x
        self.y = y
        self.width = width
        self.height = height
    }
}

/// Resizing, cropping and normalisation into the NHWC batches EfficientNet-Lite0 takes.
///
/// Resizing reproduces Pillow's `Image.resize(size, Image.BILINEAR)`: a triangle filter whose support widens by
/// the shrink factor (so shrinking is antialiased: every source pixel contributes), pixel centres at +0.5,
/// taps clipped at the border and weights renormalised. It runs in Float, where Pillow rounds to 8 bits after
/// each of its two passes, so results differ from Pillow's by at most about 1.0 on the 0...255 scale (the
/// tests measure this against Pillow goldens).
///
/// The evaluation transform is torchvision's `Resize(S)` + `CenterCrop(S)`: the shorter side becomes S, the
/// longer `Int(S * long / short)` (truncated), then the centre S x S is kept with offsets
/// `round((side - S) / 2)` rounding halves to even, as Python's `round` does. Small images (28x28, 8x8) are
/// upscaled by the same filter. Only the pixels inside the crop are computed.
public enum ImagePreprocessing {
    /// EfficientNet-Lite0's input size.
    public static let defaultSize = 224
    /// EfficientNet-Lite normalisation: (x - 127) / 128 maps 0...255 to about -1...1.
    public static let normalisationMean: Float = 127
    public static let normalisationScale: Float = 128

    // MARK: Geometry

    /// `image` resized to `width` x `height` (Pillow bilinear).
    public static func resized(_ image: Image, width: Int, height: Int) -> Image {
        resized(image, crop: PixelBox(x: 0, y: 0, width: image.width, height: image.height), width: width, height: height)
    }

    /// The `crop` box of `image` resized to `width` x `height`: the same as cropping first and then resizing (the
    /// filter never reaches outside the box), which is what torchvision's `resized_crop` does.
    public static func resized(_ image: Image, crop: PixelBox, width: Int, height: Int) -> Image {
        resample(image, crop: crop, width: width, height: height, outputX: 0..<width, outputY: 0..<height)
    }

    /// The `box` region of `image`, copied.
    public static func cropped(_ image: Image, _ box: PixelBox) -> Image {
        checkBox(box, image, "cropped")
        let c = image.channels
        var p = [Float](repeating: 0, count: box.width * box.height * c)
        for y in 0..<box.height {
            let src = ((box.y + y) * image.width + box.x) * c
            for i in 0..<(box.width * c) { p[y * box.width * c + i] = image.pixels[src + i] }
        }
        return Image(width: box.width, height: box.height, channels: c, pixels: p)
    }

    /// The centre `width` x `height` of `image` (torchvision `CenterCrop` offsets); the image must be at least
    /// that large.
    public static func centreCropped(_ image: Image, width: Int, height: Int) -> Image {
        precondition(width <= image.width && height <= image.height,
                     "centreCropped: \(width)x\(height) does not fit in a \(image.width)x\(image.height) image")
        return cropped(image, PixelBox(x: centreOffset(image.width, width), y: centreOffset(image.height, height),
                                       width: width, height: height))
    }

    /// Size after torchvision's `Resize(size)`: shorter side `size`, aspect ratio kept (longer side truncated).
    public static func shorterSideSize(width: Int, height: Int, size: Int) -> (width: Int, height: Int) {
        width <= height ? (size, Int(Double(size) * Double(height) / Double(width)))
            : (Int(Double(size) * Double(width) / Double(height)), size)
    }

    /// The evaluation transform: shorter side to `size`, then the centre `size` x `size` (see the type's note).
    public static func evaluationImage(_ image: Image, size: Int = defaultSize) -> Image {
        precondition(size > 0, "evaluationImage: size must be positive, got \(size)")
        let (w, h) = shorterSideSize(width: image.width, height: image.height, size: size)
        let x0 = centreOffset(w, size), y0 = centreOffset(h, size)
        return resample(image, crop: PixelBox(x: 0, y: 0, width: image.width, height: image.height), width: w,
                        height: h, outputX: x0..<(x0 + size), outputY: y0..<(y0 + size))
    }

    /// torchvision's centre offset `int(round((outer - inner) / 2))`, halves to even like Python.
    static func centreOffset(_ outer: Int, _ inner: Int) -> Int {
        Int((Double(outer - inner) / 2).rounded(.toNearestOrEven))
    }

    // MARK: Batches

    /// Writes `image` (grey or RGB, already `size` x `size`) normalised into one NHWC slot: `destination` points
    /// at `height * width * 3` Floats. Grey is repeated into the three channels.
    public static func writeNormalised(_ image: Image, to destination: UnsafeMutablePointer<Float>) {
        let n = image.width * image.height
        let inv = 1 / normalisationScale, mean = normalisationMean
        image.pixels.withUnsafeBufferPointer { src in
            if image.channels == 3 {
                for i in 0..<(n * 3) { destination[i] = (src[i] - mean) * inv }
            } else {
                for i in 0..<n {
                    let v = (src[i] - mean) * inv
                    destination[3 * i] = v
                    destination[3 * i + 1] = v
                    destination[3 * i + 2] = v
                }
            }
        }
    }

    /// The evaluation batch: each image through `evaluationImage`, normalised, as a [N, size, size, 3] tensor.
    public static func evaluationBatch(_ images: [Image], size: Int = defaultSize) -> Tensor {
        try! batch(count: images.count, size: size) { evaluationImage(images[$0], size: size) }
    }

    /// A [count, size, size, 3] NHWC tensor whose slot i holds `make(i)` normalised; `make` runs in parallel
    /// over images and must return `size` x `size` images. Each worker makes one image at a time, so a batch of
    /// files decoded inside `make` holds at most one full-resolution image per thread. If `make` throws, the
    /// error of the first failing index is thrown.
    public static func batch(count: Int, size: Int, _ make: (Int) throws -> Image) throws -> Tensor {
        var t = Tensor(uninitializedShape: [count, size, size, 3])
        var failures = [Error?](repeating: nil, count: count)
        let slot = size * size * 3
        t.withUnsafeMutableBufferPointer { buffer in
            failures.withUnsafeMutableBufferPointer { failed in
                let base = buffer.baseAddress!, failedBase = failed.baseAddress!
                Parallel.forEach(count, minimumChunk: 1) { range in
                    for i in range {
                        do {
                            let image = try make(i)
                            precondition(image.width == size && image.height == size,
                                         "batch: image \(i) is \(image.width)x\(image.height), expected \(size)x\(size)")
                            writeNormalised(image, to: base + i * slot)
                        } catch {
                            failedBase[i] = error
                        }
                    }
                }
            }
        }
        if let failure = failures.lazy.compactMap({ $0 }).first { throw failure }
        return t
    }

    // MARK: Pillow's bilinear resampler

    /// Resizes the `crop` box of `image` to `width` x `height` but computes only the outputs in
    /// `outputX` x `outputY` (so a following centre crop costs nothing extra). `pillowRounding` rounds to whole
    /// numbers in 0...255 after each pass as Pillow's 8-bit path does; only the tests use it, to show that this
    /// rounding is the whole difference from Pillow.
    static func resample(_ image: Image, crop: PixelBox, width: Int, height: Int,
                         outputX: Range<Int>, outputY: Range<Int>, pillowRounding: Bool = false) -> Image {
        checkBox(crop, image, "resized")
        precondition(width > 0 && height > 0, "resized: output size \(width)x\(height) must be positive")
        precondition(outputX.lowerBound >= 0 && outputX.upperBound <= width && outputY.lowerBound >= 0
                     && outputY.upperBound <= height && !outputX.isEmpty && !outputY.isEmpty,
                     "resized: output window \(outputX) x \(outputY) outside \(width)x\(height)")
        let c = image.channels
        let horizontal = FilterTaps(inputLength: crop.width, outputLength: width, outputs: outputX)
        let vertical = FilterTaps(inputLength: crop.height, outputLength: height, outputs: outputY)
        // Horizontal pass first, as in Pillow, over just the source rows the vertical taps reach.
        let rowLo = vertical.first.min()!, rowHi = zip(vertical.first, vertical.count).map { $0 + $1 }.max()!
        let ow = outputX.count, oh = outputY.count, line = ow * c
        var temp = [Float](repeating: 0, count: (rowHi - rowLo) * line)
        image.pixels.withUnsafeBufferPointer { src in
            temp.withUnsafeMutableBufferPointer { dst in
                for r in rowLo..<rowHi {
                    horizontal.apply(src.baseAddress! + ((crop.y + r) * image.width + crop.x) * c,
                                     to: dst.baseAddress! + (r - rowLo) * line, channels: c, round: pillowRounding)
                }
            }
        }
        var out = [Float](repeating: 0, count: oh * line)
        temp.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                vertical.table.withUnsafeBufferPointer { table in
                    for i in 0..<oh {
                        let w = table.baseAddress! + i * vertical.stride, o = dst.baseAddress! + i * line
                        for k in 0..<vertical.count[i] {
                            let wk = w[k], s = src.baseAddress! + (vertical.first[i] - rowLo + k) * line
                            for e in 0..<line { o[e] += wk * s[e] }
                        }
                    }
                }
            }
        }
        if pillowRounding { out = out.map { min(255, max(0, $0.rounded())) } }
        return Image(width: ow, height: oh, channels: c, pixels: out)
    }

    private static func checkBox(_ box: PixelBox, _ image: Image, _ op: String) {
        precondition(box.width > 0 && box.height > 0 && box.x >= 0 && box.y >= 0 && box.x + box.width <= image.width
                     && box.y + box.height <= image.height,
                     "\(op): box \(box) is not inside a \(image.width)x\(image.height) image")
    }
}

/// Pillow's `precompute_coeffs` for the bilinear (triangle) filter along one axis: for each output index, the
/// first input index, the number of taps, and normalised weights.
struct FilterTaps {
    var first: [Int] = []
    var count: [Int] = []
    /// `stride` weights per output, the first `count[j]` of them used.
    private(set) var table: [Float] = []
    let stride: Int

    /// Input indices are 0..<inputLength (a crop's own coordinates); only `outputs` of 0..<outputLength are made.
    init(inputLength: Int, outputLength: Int, outputs: Range<Int>) {
        let scale = Double(inputLength) / Double(outputLength)
        let filterScale = max(scale, 1)
        let support = filterScale  // the triangle's support is 1, widened when shrinking (antialiasing)
        stride = Int(support.rounded(.up)) * 2 + 1
        table = [Float](repeating: 0, count: outputs.count * stride)
        var w = [Double](repeating: 0, count: stride)
        for (j, xx) in outputs.enumerated() {
            let centre = (Double(xx) + 0.5) * scale
            // Int() truncates toward zero like Pillow's (int) cast; both ends are then clipped to the input.
            let lo = max(Int(centre - support + 0.5), 0)
            let n = min(Int(centre + support + 0.5), inputLength) - lo
            var total = 0.0
            for x in 0..<n {
                let t = abs((Double(x + lo) - centre + 0.5) / filterScale)
                w[x] = t < 1 ? 1 - t : 0
                total += w[x]
            }
            for x in 0..<n { table[j * stride + x] = Float(total != 0 ? w[x] / total : w[x]) }
            first.append(lo)
            count.append(n)
        }
    }

    /// Filters one row of `channels`-interleaved pixels (`src` at the crop's left edge) into `dst`.
    func apply(_ src: UnsafePointer<Float>, to dst: UnsafeMutablePointer<Float>, channels c: Int, round: Bool) {
        table.withUnsafeBufferPointer { table in
            for j in 0..<count.count {
                let w = table.baseAddress! + j * stride, s = src + first[j] * c
                for ch in 0..<c {
                    var sum: Float = 0
                    for k in 0..<count[j] { sum += w[k] * s[k * c + ch] }
                    dst[j * c + ch] = round ? min(255, max(0, sum.rounded())) : sum
                }
            }
        }
    }
}
