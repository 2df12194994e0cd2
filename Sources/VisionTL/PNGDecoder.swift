// CPNG is imported only for its `link "png16"`: a C target does not pass its system library's link flag on,
// while a Swift import of the module records it for the final link.
import CPNG
import CPNGShim
import Foundation
import TransferEngine

/// Reads PNG files into RGB `Image`s through libpng (the C shim `CPNGShim` owns libpng's setjmp/longjmp, so no
/// libpng error ever unwinds through Swift).
///
/// Behaviour, chosen to match what PIL's `Image.open(f).convert("RGB")` gives (the reference the tests use):
/// - Every colour type and depth is accepted: grey 1/2/4/8/16-bit, grey+alpha, RGB 8/16, RGBA 8/16, palette
///   1/2/4/8-bit (with or without tRNS), Adam7-interlaced or not. Grey becomes R = G = B; sub-byte grey is scaled
///   to the full range (a 2-bit 3 -> 255); palette indices become their colours.
/// - **Alpha is dropped** by default (an alpha channel and tRNS transparency are ignored), exactly as
///   `convert("RGB")` does. `.compositeOverBlack` multiplies the colour by alpha instead.
/// - **Gamma is ignored** (gAMA, sRGB, iCCP, cHRM, sBIT): samples come out as stored, like PIL.
/// - 16-bit samples keep their precision: v -> v / 257 (65535 -> 255.0). PIL differs here: it keeps the high
///   byte of 16-bit RGB(A)/grey+alpha (at most 1.0 away) and clips 16-bit grey (its "I" mode) at 255.
/// - Damaged files are errors, never partly decoded images: truncation anywhere up to IEND (a missing IEND
///   included, which PIL would tolerate), a CRC mismatch in any chunk (ancillary ones included, which libpng by
///   default only warns about; all CRCs are checked before decoding, so a damaged IDAT is reported as the CRC
///   error it is rather than as a zlib error), zlib errors, too little image data. Bytes after IEND are
///   ignored. Images over `maxPixels` are refused from the IHDR before anything is allocated. libpng warnings
///   (e.g. an odd iCCP profile) are not errors and are not printed.
///
/// Errors are `EngineError.invalidFile(name, problem)` with a one-line problem such as "not a PNG file",
/// "truncated PNG data", "CRC error in chunk IDAT" or "image is 100000x100000, over the 50-megapixel limit".
public enum PNGDecoder {
    /// Largest accepted width * height (50 megapixels: far above any training image, far below what
    /// exhausts memory: decoded as 16-bit RGBA plus the Float copy it is about 1 GB).
    public static let defaultMaxPixels = 50_000_000
    /// Largest PNG file read (512 MiB: a 50-megapixel 16-bit RGBA image stored uncompressed is 400 MB).
    public static let maxFileBytes = 512 << 20

    public enum AlphaHandling: Sendable {
        /// Ignore alpha and tRNS (PIL's `convert("RGB")`).
        case drop
        /// Colour times alpha: transparent pixels become black.
        case compositeOverBlack
    }

    /// Decodes PNG bytes; `name` (usually the path) is what errors report.
    public static func decode(_ data: Data, name: String, maxPixels: Int = defaultMaxPixels,
                              alpha: AlphaHandling = .drop) throws -> Image {
        precondition(maxPixels > 0, "PNGDecoder: maxPixels must be positive, got \(maxPixels)")
        var out = tl_png_image()
        var message = [CChar](repeating: 0, count: 320)
        let status = data.withUnsafeBytes { raw -> Int32 in
            message.withUnsafeMutableBufferPointer { err in
                tl_png_decode(raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count, UInt64(maxPixels),
                              alpha == .drop ? 0 : 1, &out, err.baseAddress, err.count)
            }
        }
        guard status == 0, let base = out.pixels else {
            let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw EngineError.invalidFile(name, text.isEmpty ? "corrupt PNG data" : text)
        }
        defer { tl_png_free(&out) }
        return convert(base, width: Int(out.width), height: Int(out.height), channels: Int(out.channels),
                       sixteenBit: out.bit_depth == 16)
    }

    /// Reads and decodes a file; errors name `url.path`.
    public static func read(_ url: URL, maxPixels: Int = defaultMaxPixels, alpha: AlphaHandling = .drop) throws -> Image {
        let data = try InputFile.read(url, limit: maxFileBytes, what: "a PNG file")
        return try decode(data, name: url.path, maxPixels: maxPixels, alpha: alpha)
    }

    /// Shim output (RGB or RGBA, 8-bit or host-order 16-bit) -> Float RGB on the 0...255 scale.
    private static func convert(_ base: UnsafeMutablePointer<UInt8>, width: Int, height: Int, channels: Int,
                                sixteenBit: Bool) -> Image {
        let n = width * height
        let pixels = [Float](unsafeUninitializedCapacity: n * 3) { dst, initialized in
            if sixteenBit {
                let src = UnsafeRawPointer(base).assumingMemoryBound(to: UInt16.self)
                expand(src, dst.baseAddress!, count: n, channels: channels, scale: 1 / 257, alphaMax: 65535)
            } else {
                expand(UnsafePointer(base), dst.baseAddress!, count: n, channels: channels, scale: 1, alphaMax: 255)
            }
            initialized = n * 3
        }
        return Image(width: width, height: height, channels: 3, pixels: pixels)
    }

    @inline(__always)
    private static func expand<T: BinaryInteger>(_ src: UnsafePointer<T>, _ dst: UnsafeMutablePointer<Float>, count n: Int,
                                                 channels: Int, scale: Float, alphaMax: Float) {
        if channels == 3 {
            for i in 0..<(n * 3) { dst[i] = Float(src[i]) * scale }
        } else {
            // RGBA only reaches here for `.compositeOverBlack`.
            for i in 0..<n {
                let a = Float(src[4 * i + 3]) / alphaMax
                for c in 0..<3 { dst[3 * i + c] = Float(src[4 * i + c]) * scale * a }
            }
        }
    }
}
