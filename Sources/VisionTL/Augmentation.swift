import Foundation
import TransferEngine

/// Training-time augmentation settings. Defaults are torchvision's ImageNet recipe (`RandomResizedCrop(224)` +
/// `RandomHorizontalFlip()`); rotation and colour jitter are off unless asked for.
public struct AugmentationOptions: Equatable, Sendable {
    /// Output side: images come out `size` x `size`.
    public var size: Int
    /// Fraction of the image area the random crop covers (torchvision: 0.08...1). Tiny crops of a 28x28 image
    /// lose the object; `smallData` uses 0.35...1.
    public var scale: ClosedRange<Double>
    /// Aspect ratio (width / height) range of the crop, sampled log-uniformly (torchvision: 3/4...4/3).
    public var ratio: ClosedRange<Double>
    /// Mirror left-right with probability 1/2. Turn it off where mirroring changes the meaning (digits, text).
    public var horizontalFlip: Bool
    /// Rotation by an angle uniform in -rotationDegrees...rotationDegrees (counter-clockwise positive), bilinear,
    /// corners filled with black. 0 disables it.
    public var rotationDegrees: Float
    /// Brightness factor uniform in max(0, 1 - b)...1 + b (torchvision `ColorJitter(brightness: b)`). 0 disables.
    public var brightness: Float
    /// Contrast factor uniform in max(0, 1 - c)...1 + c, blending with the mean grey level. 0 disables.
    public var contrast: Float

    public init(size: Int = ImagePreprocessing.defaultSize, scale: ClosedRange<Double> = 0.08...1,
                ratio: ClosedRange<Double> = 0.75...(4.0 / 3.0), horizontalFlip: Bool = true,
                rotationDegrees: Float = 0, brightness: Float = 0, contrast: Float = 0) {
        precondition(size > 0, "AugmentationOptions: size must be positive, got \(size)")
        precondition(scale.lowerBound > 0 && scale.upperBound <= 1, "AugmentationOptions: scale \(scale) must lie in (0, 1]")
        precondition(ratio.lowerBound > 0, "AugmentationOptions: ratio \(ratio) must be positive")
        precondition(rotationDegrees >= 0 && brightness >= 0 && contrast >= 0,
                     "AugmentationOptions: rotation, brightness and contrast strengths must be non-negative")
        self.size = size
        self.scale = scale
        self.ratio = ratio
        self.horizontalFlip = horizontalFlip
        self.rotationDegrees = rotationDegrees
        self.brightness = brightness
        self.contrast = contrast
    }

    /// For small, low-resolution datasets (Fashion-MNIST-like): larger crops, small rotations, mild jitter.
    public static func smallData(size: Int = ImagePreprocessing.defaultSize, horizontalFlip: Bool = true) -> AugmentationOptions {
        AugmentationOptions(size: size, scale: 0.35...1, horizontalFlip: horizontalFlip, rotationDegrees: 10,
                            brightness: 0.2, contrast: 0.2)
    }

    /// `smallData` without flips: a mirrored digit is not the same digit.
    public static func digits(size: Int = ImagePreprocessing.defaultSize) -> AugmentationOptions {
        smallData(size: size, horizontalFlip: false)
    }
}

/// Seeded training augmentation, applied in a fixed order: random resized crop (resized with the same
/// Pillow-bilinear filter as evaluation), horizontal flip, rotation, brightness, contrast. Every random
/// choice comes from the `RNG` passed in, so the same seed gives the same images.
public enum Augmentation {
    /// One augmented `options.size` x `options.size` image.
    public static func apply(_ image: Image, _ options: AugmentationOptions, rng: inout RNG) -> Image {
        let box = randomResizedCropBox(width: image.width, height: image.height, scale: options.scale,
                                       ratio: options.ratio, rng: &rng)
        var out = ImagePreprocessing.resized(image, crop: box, width: options.size, height: options.size)
        if options.horizontalFlip && rng.uniform() < 0.5 { out = flippedHorizontally(out) }
        if options.rotationDegrees > 0 {
            let angle = rng.uniform(-options.rotationDegrees, options.rotationDegrees)
            out = rotated(out, degrees: angle)
        }
        if options.brightness > 0 {
            out = brightnessAdjusted(out, factor: rng.uniform(max(0, 1 - options.brightness), 1 + options.brightness))
        }
        if options.contrast > 0 {
            out = contrastAdjusted(out, factor: rng.uniform(max(0, 1 - options.contrast), 1 + options.contrast))
        }
        return out
    }

    /// A [N, size, size, 3] normalised training batch. One seed per image is drawn from `rng` up front, so the
    /// result does not depend on how the parallel loop splits the images.
    public static func trainingBatch(_ images: [Image], options: AugmentationOptions, rng: inout RNG) -> Tensor {
        try! trainingBatch(count: images.count, options: options, rng: &rng) { images[$0] }
    }

    /// The same, with image i made by `image(i)` (e.g. decoded from a file) inside the parallel loop; the seeds
    /// are drawn as above, so the batch equals the one from the decoded images.
    public static func trainingBatch(count: Int, options: AugmentationOptions, rng: inout RNG,
                                     _ image: (Int) throws -> Image) throws -> Tensor {
        let seeds = (0..<count).map { _ in rng.next() }
        return try ImagePreprocessing.batch(count: count, size: options.size) { i in
            var local = RNG(seed: seeds[i])
            return apply(try image(i), options, rng: &local)
        }
    }

    /// torchvision's `RandomResizedCrop.get_params`: up to 10 tries at an area fraction uniform in `scale` and
    /// a log-uniform aspect ratio, sides rounded to whole pixels; if none fits, the largest centred crop whose
    /// aspect ratio lies in `ratio`.
    public static func randomResizedCropBox(width: Int, height: Int, scale: ClosedRange<Double>,
                                            ratio: ClosedRange<Double>, rng: inout RNG) -> PixelBox {
        let area = Double(width * height)
        let logLo = log(ratio.lowerBound), logHi = log(ratio.upperBound)
        for _ in 0..<10 {
            let target = area * (scale.lowerBound + (scale.upperBound - scale.lowerBound) * rng.uniform())
            let aspect = exp(logLo + (logHi - logLo) * rng.uniform())
            let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
            let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
            if w > 0 && w <= width && h > 0 && h <= height {
                let y = rng.int(below: height - h + 1), x = rng.int(below: width - w + 1)
                return PixelBox(x: x, y: y, width: w, height: h)
            }
        }
        let inRatio = Double(width) / Double(height)
        var w = width, h = height
        if inRatio < ratio.lowerBound {
            h = max(1, Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven)))
        } else if inRatio > ratio.upperBound {
            w = max(1, Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven)))
        }
        return PixelBox(x: (width - w) / 2, y: (height - h) / 2, width: w, height: h)
    }

    /// Mirrored left-right.
    public static func flippedHorizontally(_ image: Image) -> Image {
        var out = image
        let c = image.channels
        for y in 0..<image.height {
            for x in 0..<image.width {
                for ch in 0..<c { out[x, y, ch] = image[image.width - 1 - x, y, ch] }
            }
        }
        return out
    }

    /// Rotated counter-clockwise by `degrees` about the image centre, same size, bilinear; whatever comes from
    /// outside the source is black (edges fade into it over one pixel).
    public static func rotated(_ image: Image, degrees: Float) -> Image {
        let theta = Double(degrees) * Double.pi / 180
        let cs = Float(cos(theta)), sn = Float(sin(theta))
        let (w, h, c) = (image.width, image.height, image.channels)
        let cx = Float(w) / 2, cy = Float(h) / 2
        var out = [Float](repeating: 0, count: w * h * c)
        image.pixels.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for y in 0..<h {
                    for x in 0..<w {
                        // Inverse map: the source point that lands on this output pixel's centre (y points down).
                        let dx = Float(x) + 0.5 - cx, dy = Float(y) + 0.5 - cy
                        let u = cs * dx - sn * dy + cx - 0.5, v = sn * dx + cs * dy + cy - 0.5
                        let x0f = u.rounded(.down), y0f = v.rounded(.down)
                        guard x0f >= -1 && x0f < Float(w) && y0f >= -1 && y0f < Float(h) else { continue }
                        let fx = u - x0f, fy = v - y0f, x0 = Int(x0f), y0 = Int(y0f)
                        let o = dst.baseAddress! + (y * w + x) * c
                        // Taps outside the source are black, i.e. contribute nothing.
                        for j in 0..<2 where y0 + j >= 0 && y0 + j < h {
                            let yy = y0 + j, wy = j == 0 ? 1 - fy : fy
                            for i in 0..<2 where x0 + i >= 0 && x0 + i < w {
                                let xx = x0 + i, wx = i == 0 ? 1 - fx : fx
                                let s = src.baseAddress! + (yy * w + xx) * c, k = wy * wx
                                for ch in 0..<c { o[ch] += k * s[ch] }
                            }
                        }
                    }
                }
            }
        }
        return Image(width: w, height: h, channels: c, pixels: out)
    }

    /// Every value times `factor`, clipped to 0...255 (torchvision's `adjust_brightness`).
    public static func brightnessAdjusted(_ image: Image, factor: Float) -> Image {
        var out = image
        for i in out.pixels.indices { out.pixels[i] = min(255, max(0, image.pixels[i] * factor)) }
        return out
    }

    /// Blended with the image's mean grey level: mean + factor * (x - mean), clipped to 0...255
    /// (torchvision's `adjust_contrast`; grey level 0.299 R + 0.587 G + 0.114 B).
    public static func contrastAdjusted(_ image: Image, factor: Float) -> Image {
        let n = image.width * image.height
        var total: Double = 0
        if image.channels == 3 {
            for i in 0..<n {
                total += Double(0.299 * image.pixels[3 * i] + 0.587 * image.pixels[3 * i + 1] + 0.114 * image.pixels[3 * i + 2])
            }
        } else {
            for v in image.pixels { total += Double(v) }
        }
        let mean = Float(total / Double(n))
        var out = image
        for i in out.pixels.indices { out.pixels[i] = min(255, max(0, mean + factor * (image.pixels[i] - mean))) }
        return out
    }
}
