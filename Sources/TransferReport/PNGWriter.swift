import Foundation
import TransferEngine

/// Encodes 8-bit greyscale or RGB images as PNG without any library, so reports work where libpng is absent
/// and the engine stays free of image code.
///
/// Each row gets the PNG filter with the smallest sum of absolute residuals (libpng's heuristic); the zlib
/// stream is one fixed-Huffman deflate block with greedy LZ77 matching. Plots are mostly flat colour, so this
/// shrinks a 640x480 plot from 900 KiB raw to a few tens of KiB.
public enum PNGWriter {
    public enum Compression: Sendable {
        /// Uncompressed deflate blocks (fastest; files as big as the raw pixels).
        case stored
        /// Fixed-Huffman deflate with LZ77 matching.
        case fixedHuffman
    }

    /// PNG bytes of a `width` x `height` image with `channels` = 1 (grey) or 3 (RGB) interleaved 8-bit samples,
    /// rows top to bottom: `pixels.count == width * height * channels`.
    public static func encode(width: Int, height: Int, channels: Int, pixels: [UInt8],
                              compression: Compression = .fixedHuffman) -> [UInt8] {
        precondition(channels == 1 || channels == 3, "PNGWriter: channels must be 1 (grey) or 3 (RGB), got \(channels)")
        precondition(width > 0 && height > 0 && width <= 0x7FFF_FFFF && height <= 0x7FFF_FFFF,
                     "PNGWriter: image size \(width)x\(height) is not encodable")
        precondition(pixels.count == width * height * channels,
                     "PNGWriter: \(width)x\(height)x\(channels) image needs \(width * height * channels) bytes, got \(pixels.count)")
        var out: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]
        var header = bigEndian(UInt32(width)) + bigEndian(UInt32(height))
        header += [8, channels == 3 ? 2 : 0, 0, 0, 0]   // depth, colour type, deflate, adaptive filters, no interlace
        appendChunk("IHDR", header, to: &out)
        let filtered = filterRows(width: width, height: height, channels: channels, pixels: pixels)
        appendChunk("IDAT", zlib(filtered, compression: compression), to: &out)
        appendChunk("IEND", [], to: &out)
        return out
    }

    /// Encodes and writes atomically (see `AtomicFile`).
    public static func write(width: Int, height: Int, channels: Int, pixels: [UInt8], to url: URL,
                             compression: Compression = .fixedHuffman) throws {
        let png = encode(width: width, height: height, channels: channels, pixels: pixels, compression: compression)
        try AtomicFile.write(to: url) { try $0.write(png) }
    }

    // MARK: Checksums

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// CRC-32 (ISO-HDLC, as PNG and zip use it) of `bytes`.
    public static func crc32<S: Sequence>(_ bytes: S) -> UInt32 where S.Element == UInt8 {
        var c: UInt32 = 0xFFFF_FFFF
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
        return c ^ 0xFFFF_FFFF
    }

    /// Adler-32 (zlib's trailer checksum) of `bytes`.
    public static func adler32(_ bytes: [UInt8]) -> UInt32 {
        var a: UInt32 = 1, b: UInt32 = 0
        var i = 0
        // 5552 is the largest run for which the sums cannot overflow 32 bits before the modulo.
        while i < bytes.count {
            let end = min(bytes.count, i + 5552)
            while i < end {
                a &+= UInt32(bytes[i])
                b &+= a
                i += 1
            }
            a %= 65521
            b %= 65521
        }
        return b << 16 | a
    }

    // MARK: Container

    static func bigEndian(_ v: UInt32) -> [UInt8] { [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)] }

    static func appendChunk(_ type: String, _ data: [UInt8], to out: inout [UInt8]) {
        let typeBytes = Array(type.utf8)
        out += bigEndian(UInt32(data.count))
        out += typeBytes
        out += data
        out += bigEndian(crc32(typeBytes + data))
    }

    /// Rows prefixed with their filter type byte, each filtered with the type that leaves the smallest sum of
    /// absolute (signed) residuals.
    static func filterRows(width: Int, height: Int, channels: Int, pixels: [UInt8]) -> [UInt8] {
        let stride = width * channels
        var out = [UInt8](repeating: 0, count: height * (stride + 1))
        var candidate = [[UInt8]](repeating: [UInt8](repeating: 0, count: stride), count: 5)
        let zeroRow = [UInt8](repeating: 0, count: stride)
        for y in 0..<height {
            let row = y * stride
            var bestType = 0
            var bestCost = Int.max
            for type in 0..<5 {
                var cost = 0
                for i in 0..<stride {
                    let x = pixels[row + i]
                    let a = i >= channels ? pixels[row + i - channels] : 0
                    let b = y > 0 ? pixels[row - stride + i] : zeroRow[i]
                    let c = i >= channels && y > 0 ? pixels[row - stride + i - channels] : 0
                    let r: UInt8
                    switch type {
                    case 0: r = x
                    case 1: r = x &- a
                    case 2: r = x &- b
                    case 3: r = x &- UInt8((Int(a) + Int(b)) / 2)
                    default: r = x &- paeth(a, b, c)
                    }
                    candidate[type][i] = r
                    cost += r < 128 ? Int(r) : 256 - Int(r)
                }
                if cost < bestCost { bestCost = cost; bestType = type }
            }
            let o = y * (stride + 1)
            out[o] = UInt8(bestType)
            for i in 0..<stride { out[o + 1 + i] = candidate[bestType][i] }
        }
        return out
    }

    static func paeth(_ a: UInt8, _ b: UInt8, _ c: UInt8) -> UInt8 {
        let p = Int(a) + Int(b) - Int(c)
        let pa = abs(p - Int(a)), pb = abs(p - Int(b)), pc = abs(p - Int(c))
        if pa <= pb && pa <= pc { return a }
        return pb <= pc ? b : c
    }

    // MARK: zlib / deflate

    /// A zlib stream (RFC 1950) around a deflate stream (RFC 1951).
    static func zlib(_ data: [UInt8], compression: Compression) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]   // 32 KiB window; 0x7801 is divisible by 31 as required
        switch compression {
        case .stored: out += deflateStored(data)
        case .fixedHuffman: out += deflateFixed(data)
        }
        out += bigEndian(adler32(data))
        return out
    }

    static func deflateStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        var i = 0
        repeat {
            let n = min(65535, data.count - i)
            let final: UInt8 = i + n == data.count ? 1 : 0
            out.append(final)   // BFINAL, BTYPE=00, then padding to the byte boundary
            out += [UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
            out += data[i..<(i + n)]
            i += n
        } while i < data.count
        return out
    }

    static let lengthBase: [Int] = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31,
                                    35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258]
    static let lengthExtra: [Int] = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2,
                                     3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    static let distanceBase: [Int] = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193,
                                      257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    static let distanceExtra: [Int] = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6,
                                       7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13]

    /// LSB-first bit packer; Huffman codes are given MSB-first and reversed on the way in, as deflate demands.
    struct BitWriter {
        var bytes: [UInt8] = []
        var buffer: UInt64 = 0
        var count = 0

        mutating func write(_ value: Int, bits: Int) {
            buffer |= UInt64(value) << UInt64(count)
            count += bits
            while count >= 8 {
                bytes.append(UInt8(buffer & 0xFF))
                buffer >>= 8
                count -= 8
            }
        }

        mutating func writeCode(_ code: Int, bits: Int) {
            var reversed = 0
            for i in 0..<bits where code >> i & 1 != 0 { reversed |= 1 << (bits - 1 - i) }
            write(reversed, bits: bits)
        }

        mutating func flush() {
            if count > 0 { bytes.append(UInt8(buffer & 0xFF)) }
            buffer = 0
            count = 0
        }
    }

    /// The fixed literal/length code of RFC 1951 section 3.2.6.
    static func writeLiteralOrLength(_ symbol: Int, _ w: inout BitWriter) {
        switch symbol {
        case 0...143: w.writeCode(0x30 + symbol, bits: 8)
        case 144...255: w.writeCode(0x190 + symbol - 144, bits: 9)
        case 256...279: w.writeCode(symbol - 256, bits: 7)
        default: w.writeCode(0xC0 + symbol - 280, bits: 8)
        }
    }

    static func deflateFixed(_ data: [UInt8]) -> [UInt8] {
        var w = BitWriter()
        w.write(1, bits: 1)   // BFINAL
        w.write(1, bits: 2)   // BTYPE=01, fixed Huffman
        let window = 32768, maxChain = 48
        let hashBits = 15
        var head = [Int](repeating: -1, count: 1 << hashBits)
        var previous = [Int](repeating: -1, count: window)
        let n = data.count
        func hash(_ i: Int) -> Int {
            (Int(data[i]) << 10 ^ Int(data[i + 1]) << 5 ^ Int(data[i + 2])) & ((1 << hashBits) - 1)
        }
        func insert(_ i: Int) {
            guard i + 2 < n else { return }
            let h = hash(i)
            previous[i & (window - 1)] = head[h]
            head[h] = i
        }
        var i = 0
        while i < n {
            var bestLength = 0, bestDistance = 0
            if i + 2 < n {
                var candidate = head[hash(i)]
                var chain = 0
                let limit = min(258, n - i)
                while candidate >= 0 && i - candidate <= window && chain < maxChain {
                    if data[candidate + bestLength] == data[i + bestLength] {
                        var length = 0
                        while length < limit && data[candidate + length] == data[i + length] { length += 1 }
                        if length > bestLength {
                            bestLength = length
                            bestDistance = i - candidate
                            if length == limit { break }
                        }
                    }
                    let next = previous[candidate & (window - 1)]
                    if next >= candidate { break }   // slot already reused by a newer position
                    candidate = next
                    chain += 1
                }
            }
            if bestLength >= 3 {
                var code = lengthBase.count - 1
                while lengthBase[code] > bestLength { code -= 1 }
                writeLiteralOrLength(257 + code, &w)
                w.write(bestLength - lengthBase[code], bits: lengthExtra[code])
                var dcode = distanceBase.count - 1
                while distanceBase[dcode] > bestDistance { dcode -= 1 }
                w.writeCode(dcode, bits: 5)
                w.write(bestDistance - distanceBase[dcode], bits: distanceExtra[dcode])
                for j in i..<(i + bestLength) { insert(j) }
                i += bestLength
            } else {
                writeLiteralOrLength(Int(data[i]), &w)
                insert(i)
                i += 1
            }
        }
        writeLiteralOrLength(256, &w)   // end of block
        w.flush()
        return w.bytes
    }
}
