import CJPEGShim
import Foundation
import TransferEngine

/// Reads JPEG files into RGB `Image`s through libjpeg-turbo (the C shim `CJPEGShim` owns libjpeg's
/// error_exit/setjmp, so no libjpeg error ever unwinds through Swift).
///
/// Behaviour, chosen to match PIL's `Image.open(f).convert("RGB")` (the reference the golden tests use):
/// baseline and progressive, greyscale (R = G = B), YCbCr with any chroma subsampling, and RGB JPEGs; the
/// accurate integer IDCT and fancy upsampling. EXIF orientation is not applied (PIL does not either). CMYK/YCCK
/// files are refused. Damaged files are errors, never partly decoded images: libjpeg pads a truncated file with
/// grey and only warns, which here is the error "truncated JPEG data"; corrupt entropy-coded data likewise.
public enum JPEGDecoder {
    /// Decodes JPEG bytes; `name` (usually the path) is what errors report.
    public static func decode(_ data: Data, name: String, maxPixels: Int = PNGDecoder.defaultMaxPixels) throws -> Image {
        guard maxPixels > 0 else { throw EngineError.invalidArgument("JPEGDecoder: maxPixels must be positive, got \(maxPixels)") }
        var out = tl_jpeg_image()
        var message = [CChar](repeating: 0, count: 320)
        let status = data.withUnsafeBytes { raw -> Int32 in
            message.withUnsafeMutableBufferPointer { err in
                tl_jpeg_decode(raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count, UInt64(maxPixels),
                               &out, err.baseAddress, err.count)
            }
        }
        guard status == 0, let base = out.pixels else {
            let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw EngineError.invalidFile(name, text.isEmpty ? "corrupt JPEG data" : text)
        }
        defer { tl_jpeg_free(&out) }
        let count = Int(out.width) * Int(out.height) * 3
        let pixels = [Float](unsafeUninitializedCapacity: count) { dst, initialized in
            for i in 0..<count { dst[i] = Float(base[i]) }
            initialized = count
        }
        return Image(width: Int(out.width), height: Int(out.height), channels: 3, pixels: pixels)
    }
}

/// The image files the vision app reads: PNG and JPEG, told apart by their first bytes (a JPEG named `.png`
/// still decodes); the extension only decides which files of a folder are images.
public enum ImageFile {
    /// Extensions listed as images in folders (case-insensitive).
    public static let extensions: Set<String> = ["png", "jpg", "jpeg"]

    public static func isImage(_ url: URL) -> Bool { extensions.contains(url.pathExtension.lowercased()) }

    enum Format { case png, jpeg }

    static func format(of bytes: some Collection<UInt8>) -> Format? {
        let head = Array(bytes.prefix(8))
        if head.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) { return .png }
        if head.starts(with: [0xFF, 0xD8, 0xFF]) { return .jpeg }
        return nil
    }

    /// Decodes PNG or JPEG bytes; `name` is what errors report.
    public static func decode(_ data: Data, name: String, maxPixels: Int = PNGDecoder.defaultMaxPixels) throws -> Image {
        switch format(of: data) {
        case .png: return try PNGDecoder.decode(data, name: name, maxPixels: maxPixels)
        case .jpeg: return try JPEGDecoder.decode(data, name: name, maxPixels: maxPixels)
        case nil: throw EngineError.invalidFile(name, data.isEmpty ? "empty file" : "not a PNG or JPEG file")
        }
    }

    /// Reads and decodes a PNG or JPEG file; errors name `url.path`.
    public static func read(_ url: URL, maxPixels: Int = PNGDecoder.defaultMaxPixels) throws -> Image {
        let data = try InputFile.read(url, limit: PNGDecoder.maxFileBytes, what: "an image file")
        return try decode(data, name: url.path, maxPixels: maxPixels)
    }

    /// Width and height from the file's header alone (PNG IHDR; JPEG's first SOFn marker), nil when not found.
    public static func size(_ url: URL) -> (width: Int, height: Int)? {
        guard let data = try? InputFile.read(url, limit: PNGDecoder.maxFileBytes, what: "an image file") else { return nil }
        let b = [UInt8](data.prefix(1 << 20))
        func be(_ i: Int, _ n: Int) -> Int { b[i..<i + n].reduce(0) { $0 << 8 | Int($1) } }
        switch format(of: b) {
        case .png:
            return b.count >= 24 ? (be(16, 4), be(20, 4)) : nil
        case .jpeg:
            var i = 2
            while i + 9 < b.count {
                guard b[i] == 0xFF else { return nil }
                let marker = b[i + 1]
                if marker == 0xFF { i += 1; continue }
                if marker == 0xD8 || (0xD0...0xD7).contains(marker) { i += 2; continue }
                // SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC): precision, height, width.
                if (0xC0...0xCF).contains(marker) && ![0xC4, 0xC8, 0xCC].contains(marker) { return (be(i + 7, 2), be(i + 5, 2)) }
                i += 2 + be(i + 2, 2)
            }
            return nil
        case nil:
            return nil
        }
    }
}
