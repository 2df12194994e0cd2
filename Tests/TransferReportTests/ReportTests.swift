import XCTest
import TransferEngine
@testable import TransferReport

/// PNG files re-parsed and inflated by an independent decoder written here (stored and fixed-Huffman blocks),
/// checksums against published test vectors, and PCA on data with a known dominant direction.
final class ReportTests: XCTestCase {
    // MARK: Checksums and PNG

    func testChecksumsMatchPublishedVectors() {
        XCTAssertEqual(PNGWriter.crc32(Array("123456789".utf8)), 0xCBF4_3926)
        XCTAssertEqual(PNGWriter.adler32(Array("Wikipedia".utf8)), 0x11E6_0398)
        XCTAssertEqual(PNGWriter.crc32([UInt8]()), 0)
        XCTAssertEqual(PNGWriter.adler32([]), 1)
        // Long input: the modulo must be applied before the 32-bit sums overflow.
        let long = [UInt8](repeating: 255, count: 100_000)
        var a: UInt64 = 1, b: UInt64 = 0
        for v in long { a = (a + UInt64(v)) % 65521; b = (b + a) % 65521 }
        XCTAssertEqual(PNGWriter.adler32(long), UInt32(b << 16 | a))
    }

    func testPNGRoundTripsThroughIndependentDecoder() throws {
        var rng = RNG(seed: 7)
        let noise = (0..<(37 * 23 * 3)).map { _ in UInt8(rng.int(below: 256)) }
        // Flat areas with edges and gradients exercise long matches and every row filter.
        let plotLike = (0..<(64 * 40 * 3)).map { i -> UInt8 in
            let x = (i / 3) % 64, y = (i / 3) / 64
            return x == y || y == 20 ? 0 : (x > 40 ? UInt8(4 * x % 256) : 255)
        }
        let grey = (0..<(70_000)).map { UInt8($0 % 7 == 0 ? 0 : 200) }   // spans several stored blocks
        let cases: [(w: Int, h: Int, c: Int, px: [UInt8])] = [(37, 23, 3, noise), (64, 40, 3, plotLike), (350, 200, 1, grey), (1, 1, 3, [1, 2, 3])]
        for (w, h, c, px) in cases {
            for compression in [PNGWriter.Compression.stored, .fixedHuffman] {
                let png = PNGWriter.encode(width: w, height: h, channels: c, pixels: px, compression: compression)
                let decoded = try decodePNG(png)
                XCTAssertEqual(decoded.width, w)
                XCTAssertEqual(decoded.height, h)
                XCTAssertEqual(decoded.channels, c)
                XCTAssertTrue(decoded.pixels == px, "\(w)x\(h)x\(c) \(compression) pixels differ after decoding")
            }
        }
        let flat = PNGWriter.encode(width: 64, height: 40, channels: 3, pixels: plotLike)
        XCTAssertLessThan(flat.count, plotLike.count / 10, "flat image compresses")
    }

    func testPNGWriteIsAtomic() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("report-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("a.png")
        var pixels = [UInt8](repeating: 0, count: 8 * 4 * 3)
        for i in pixels.indices { pixels[i] = [10, 20, 30][i % 3] }
        pixels[3 * (8 + 2)] = 255
        try PNGWriter.write(width: 8, height: 4, channels: 3, pixels: pixels, to: url)
        let decoded = try decodePNG(Array(Data(contentsOf: url)))
        XCTAssertEqual(decoded.pixels, pixels)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["a.png"], "no temporary left")
        XCTAssertThrowsError(try PNGWriter.write(width: 8, height: 4, channels: 3, pixels: pixels, to: dir.appendingPathComponent("missing/b.png")))
    }

    // MARK: PCA

    func testPCAFindsDominantDirections() {
        var rng = RNG(seed: 3)
        let n = 400, d = 30
        // Unit directions u (variance 9) and w (variance 4, orthogonal to u) plus small isotropic noise.
        var u = (0..<d).map { _ in Double(rng.normal()) }
        let un = u.reduce(0) { $0 + $1 * $1 }.squareRoot(); u = u.map { $0 / un }
        var w = (0..<d).map { _ in Double(rng.normal()) }
        let uw = zip(u, w).reduce(0) { $0 + $1.0 * $1.1 }
        w = zip(w, u).map { $0 - uw * $1 }
        let wn = w.reduce(0) { $0 + $1 * $1 }.squareRoot(); w = w.map { $0 / wn }
        var values = [Float]()
        for _ in 0..<n {
            let a = 3 * Double(rng.normal()), b = 2 * Double(rng.normal())
            for j in 0..<d { values.append(Float(5 + a * u[j] + b * w[j] + 0.1 * Double(rng.normal()))) }
        }
        let x = Tensor(shape: [n, d], scalars: values)
        let pca = PCA.fit(x, components: 2)
        let c = pca.components.scalars
        let cosU = abs(zip(c[0..<d], u).reduce(0) { $0 + Double($1.0) * $1.1 })
        let cosW = abs(zip(c[d..<(2 * d)], w).reduce(0) { $0 + Double($1.0) * $1.1 })
        XCTAssertGreaterThan(cosU, 0.995)
        XCTAssertGreaterThan(cosW, 0.99)
        XCTAssertEqual(pca.explainedVariance[0], 9, accuracy: 1.5)
        XCTAssertEqual(pca.explainedVariance[1], 4, accuracy: 0.8)
        XCTAssertGreaterThan(pca.explainedVarianceRatio[0] + pca.explainedVarianceRatio[1], 0.9)
        XCTAssertEqual(pca.mean.scalars[0], 5, accuracy: 0.5)

        // Against the covariance computed here in Double: C v = lambda v, and the components are orthonormal.
        var mu = [Double](repeating: 0, count: d)
        for i in 0..<n { for j in 0..<d { mu[j] += Double(values[i * d + j]) / Double(n) } }
        var cov = [Double](repeating: 0, count: d * d)
        for i in 0..<n {
            for a in 0..<d { for b in 0..<d { cov[a * d + b] += (Double(values[i * d + a]) - mu[a]) * (Double(values[i * d + b]) - mu[b]) / Double(n - 1) } }
        }
        var worst = 0.0
        for k in 0..<2 {
            let v = (0..<d).map { Double(c[k * d + $0]) }
            for a in 0..<d {
                let cv = (0..<d).reduce(0.0) { $0 + cov[a * d + $1] * v[$1] }
                worst = max(worst, abs(cv - pca.explainedVariance[k] * v[a]) / pca.explainedVariance[0])
            }
            XCTAssertEqual(v.reduce(0) { $0 + $1 * $1 }, 1, accuracy: 1e-5)
        }
        XCTAssertLessThan(worst, 1e-4, "eigen-residual")
        XCTAssertEqual((0..<d).reduce(0.0) { $0 + Double(c[$1]) * Double(c[d + $1]) }, 0, accuracy: 1e-5)
        print("PCA worst eigen-residual relative to lambda1: \(worst)")

        // Projections are centred, with the component variances.
        let y = pca.transform(x)
        XCTAssertEqual(y.shape, [n, 2])
        var m0 = 0.0, v0 = 0.0
        for i in 0..<n { m0 += Double(y[flat: 2 * i]) }
        m0 /= Double(n)
        for i in 0..<n { v0 += (Double(y[flat: 2 * i]) - m0) * (Double(y[flat: 2 * i]) - m0) }
        XCTAssertEqual(m0, 0, accuracy: 1e-3)
        XCTAssertEqual(v0 / Double(n - 1), pca.explainedVariance[0], accuracy: 1e-3 * pca.explainedVariance[0])
        // Deterministic, including the signs.
        XCTAssertEqual(PCA.fit(x, components: 2).components, pca.components)
    }

    func testPCAOnDegenerateData() {
        let constant = PCA.fit(Tensor(shape: [4, 3], repeating: 2), components: 2)
        XCTAssertEqual(constant.explainedVariance, [0, 0])
        for c in 0..<2 {
            let norm = (0..<3).reduce(Float(0)) { $0 + constant.components[flat: c * 3 + $1] * constant.components[flat: c * 3 + $1] }
            XCTAssertEqual(norm, 1, accuracy: 1e-5)
        }
        for v in constant.transform(Tensor(shape: [1, 3], repeating: 2)).scalars { XCTAssertEqual(v, 0, accuracy: 1e-5) }
        // Fewer samples than dimensions: rank 1, the one direction is found.
        let two = PCA.fit(Tensor(shape: [2, 50], scalars: (0..<100).map { Float($0 < 50 ? 1 : -1) }), components: 2)
        XCTAssertEqual(two.components[flat: 0], 1 / Float(50).squareRoot(), accuracy: 1e-4)
        XCTAssertEqual(two.explainedVariance[0], 100, accuracy: 1e-3)
        XCTAssertEqual(two.explainedVariance[1], 0, accuracy: 1e-3)
    }

    // MARK: Independent PNG decoder (stored and fixed-Huffman deflate only; enough for what PNGWriter emits)

    struct DecodeError: Error { let message: String }

    func decodePNG(_ png: [UInt8]) throws -> (width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        guard png.starts(with: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]) else { throw DecodeError(message: "signature") }
        func be(_ i: Int) -> Int { Int(png[i]) << 24 | Int(png[i + 1]) << 16 | Int(png[i + 2]) << 8 | Int(png[i + 3]) }
        var i = 8
        var chunks: [(String, [UInt8])] = []
        while i < png.count {
            let length = be(i)
            let type = String(decoding: png[(i + 4)..<(i + 8)], as: UTF8.self)
            let data = Array(png[(i + 8)..<(i + 8 + length)])
            guard PNGWriter.crc32(png[(i + 4)..<(i + 8 + length)]) == UInt32(be(i + 8 + length)) else {
                throw DecodeError(message: "CRC of \(type)")
            }
            chunks.append((type, data))
            i += 12 + length
        }
        XCTAssertEqual(i, png.count)
        XCTAssertEqual(chunks.map(\.0), ["IHDR", "IDAT", "IEND"])
        let header = chunks[0].1
        let width = Int(header[0]) << 24 | Int(header[1]) << 16 | Int(header[2]) << 8 | Int(header[3])
        let height = Int(header[4]) << 24 | Int(header[5]) << 16 | Int(header[6]) << 8 | Int(header[7])
        XCTAssertEqual(header[8], 8)
        let channels = header[9] == 2 ? 3 : 1
        let z = chunks.filter { $0.0 == "IDAT" }.flatMap(\.1)
        XCTAssertEqual((Int(z[0]) << 8 | Int(z[1])) % 31, 0, "zlib header check")
        XCTAssertEqual(z[0] & 0x0F, 8, "deflate")
        let raw = try inflate(Array(z[2...]))
        let adler = UInt32(z[z.count - 4]) << 24 | UInt32(z[z.count - 3]) << 16 | UInt32(z[z.count - 2]) << 8 | UInt32(z[z.count - 1])
        XCTAssertEqual(PNGWriter.adler32(raw), adler)
        let stride = width * channels
        guard raw.count == height * (stride + 1) else { throw DecodeError(message: "size \(raw.count)") }
        var out = [UInt8](repeating: 0, count: height * stride)
        for y in 0..<height {
            let filter = raw[y * (stride + 1)]
            for x in 0..<stride {
                let v = raw[y * (stride + 1) + 1 + x]
                let a = x >= channels ? Int(out[y * stride + x - channels]) : 0
                let b = y > 0 ? Int(out[(y - 1) * stride + x]) : 0
                let c = x >= channels && y > 0 ? Int(out[(y - 1) * stride + x - channels]) : 0
                let p = a + b - c
                let predictor: Int
                switch filter {
                case 0: predictor = 0
                case 1: predictor = a
                case 2: predictor = b
                case 3: predictor = (a + b) / 2
                case 4: predictor = abs(p - a) <= abs(p - b) && abs(p - a) <= abs(p - c) ? a : abs(p - b) <= abs(p - c) ? b : c
                default: throw DecodeError(message: "filter \(filter)")
                }
                out[y * stride + x] = v &+ UInt8(predictor & 0xFF)
            }
        }
        return (width, height, channels, out)
    }

    func inflate(_ data: [UInt8]) throws -> [UInt8] {
        var position = 0   // in bits
        func bit() throws -> Int {
            guard position / 8 < data.count else { throw DecodeError(message: "truncated") }
            defer { position += 1 }
            return Int(data[position / 8] >> UInt8(position % 8)) & 1
        }
        func bits(_ n: Int) throws -> Int { var v = 0; for k in 0..<n { v |= try bit() << k }; return v }
        func code(_ n: Int, _ prefix: Int) throws -> Int { var v = prefix; for _ in 0..<n { v = v << 1 | (try bit()) }; return v }
        // RFC 1951 section 3.2.5 tables, derived rather than copied from the encoder.
        let lengthExtra = (0..<29).map { $0 < 8 || $0 == 28 ? 0 : ($0 - 4) / 4 }
        var lengthBase = [3]
        for k in 0..<27 { lengthBase.append(lengthBase[k] + (1 << lengthExtra[k])) }
        lengthBase.append(258)
        let distanceExtra = (0..<30).map { $0 < 4 ? 0 : ($0 - 2) / 2 }
        var distanceBase = [1]
        for k in 0..<29 { distanceBase.append(distanceBase[k] + (1 << distanceExtra[k])) }
        var out: [UInt8] = []
        var final = 0
        repeat {
            final = try bits(1)
            let type = try bits(2)
            if type == 0 {
                position = (position + 7) / 8 * 8
                let length = try bits(16), complement = try bits(16)
                guard length == ~complement & 0xFFFF else { throw DecodeError(message: "stored length") }
                for _ in 0..<length { out.append(UInt8(try bits(8))) }
            } else if type == 1 {
                while true {
                    var c = try code(7, 0), symbol: Int
                    if c <= 0x17 { symbol = 256 + c } else {
                        c = try code(1, c)
                        if c >= 0x30 && c <= 0xBF { symbol = c - 0x30 } else if c >= 0xC0 && c <= 0xC7 { symbol = 280 + c - 0xC0 } else {
                            symbol = 144 + (try code(1, c)) - 0x190
                        }
                    }
                    if symbol < 256 { out.append(UInt8(symbol)); continue }
                    if symbol == 256 { break }
                    let li = symbol - 257
                    let length = lengthBase[li] + (try bits(lengthExtra[li]))
                    let di = try code(5, 0)
                    let distance = distanceBase[di] + (try bits(distanceExtra[di]))
                    guard distance <= out.count else { throw DecodeError(message: "distance too far") }
                    for _ in 0..<length { out.append(out[out.count - distance]) }
                }
            } else {
                throw DecodeError(message: "block type \(type) not expected")
            }
        } while final == 0
        guard (position + 7) / 8 + 4 == data.count else { throw DecodeError(message: "trailing bytes") }
        return out
    }
}
