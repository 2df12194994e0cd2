/// A decoded image: `height x width x channels` Float samples, row-major HWC (channels last, like the NHWC
/// tensors the backbone takes), on the 0...255 scale of 8-bit images.
///
/// `channels` is 3 (RGB) for everything `PNGDecoder` returns; 1 (grey) is allowed for images built in memory
/// (e.g. MNIST-style pixel tables) and becomes RGB by repeating the value (`rgb()`, or directly when written into
/// a batch). 16-bit sources keep their precision (v / 257), so values need not be whole numbers.
public struct Image: Equatable, Sendable {
    public let width: Int
    public let height: Int
    public let channels: Int
    /// `height * width * channels` values, pixel (x, y) channel c at `(y * width + x) * channels + c`.
    public var pixels: [Float]

    public init(width: Int, height: Int, channels: Int = 3, pixels: [Float]) {
        precondition(width > 0 && height > 0, "Image: size \(width)x\(height) must be positive")
        precondition(channels == 1 || channels == 3, "Image: \(channels) channels, expected 1 (grey) or 3 (RGB)")
        precondition(pixels.count == width * height * channels,
                     "Image: \(width)x\(height)x\(channels) needs \(width * height * channels) values, got \(pixels.count)")
        self.width = width
        self.height = height
        self.channels = channels
        self.pixels = pixels
    }

    /// An image of one colour (a value per channel).
    public init(width: Int, height: Int, filledWith colour: [Float]) {
        precondition(colour.count == 1 || colour.count == 3, "Image: fill colour needs 1 or 3 values, got \(colour.count)")
        var p = [Float](repeating: 0, count: width * height * colour.count)
        for i in 0..<(width * height) { for c in 0..<colour.count { p[i * colour.count + c] = colour[c] } }
        self.init(width: width, height: height, channels: colour.count, pixels: p)
    }

    /// A grey image from 8-bit values, row-major (e.g. one row of an MNIST table).
    public init(grey values: [UInt8], width: Int, height: Int) {
        self.init(width: width, height: height, channels: 1, pixels: values.map { Float($0) })
    }

    /// Channel `c` of pixel (x, y).
    public subscript(x: Int, y: Int, c: Int) -> Float {
        get { pixels[(y * width + x) * channels + c] }
        set { pixels[(y * width + x) * channels + c] = newValue }
    }

    /// The same image with 3 channels: grey values repeated into R, G and B; RGB images unchanged.
    public func rgb() -> Image {
        if channels == 3 { return self }
        var p = [Float](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            let v = pixels[i]
            p[3 * i] = v
            p[3 * i + 1] = v
            p[3 * i + 2] = v
        }
        return Image(width: width, height: height, channels: 3, pixels: p)
    }
}
