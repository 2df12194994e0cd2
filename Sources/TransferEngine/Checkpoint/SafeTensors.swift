import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reading and writing safetensors files: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
/// mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional
/// "__metadata__" string map), then the raw little-endian row-major data.
///
/// Reading treats the file as hostile, with the reference implementation's rules: the header is at most
/// 100 MB and valid JSON without duplicate keys; every range lies in the data section and has exactly the
/// size its dtype and shape need; and the ranges, sorted, tile the data section with no overlap and no gap.
/// Every violation throws `EngineError.invalidFile(path, problem)`. Headers need not be 8-byte aligned
/// (the reference reader accepts any length; only its writer pads).
public enum SafeTensors {
    /// Element types of the format. All can be parsed; those with `isReadable` convert to Float.
    public enum DType: String, CaseIterable, Sendable {
        case BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64

        public var size: Int {
            switch self {
            case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3: return 1
            case .I16, .U16, .F16, .BF16: return 2
            case .I32, .U32, .F32: return 4
            case .I64, .U64, .F64: return 8
            }
        }

        public var isInteger: Bool { [.BOOL, .U8, .I8, .I16, .U16, .I32, .U32, .I64, .U64].contains(self) }
    }

    /// Where a tensor lives in the file.
    public struct Entry: Equatable, Sendable {
        public let dtype: DType
        public let shape: [Int]
        /// Byte range relative to the start of the data section.
        public let range: Range<Int>
    }

    /// The largest header accepted (the reference implementation's limit).
    public static let maximumHeaderLength = 100_000_000

    /// Maps `url` and checks its header. Tensor data is read (and converted) on demand.
    public static func read(_ url: URL) throws -> SafeTensorsFile {
        try SafeTensorsFile(url: url)
    }

    /// Writes `tensors` as F32 (names sorted bytewise, header padded with spaces to a multiple of 8 bytes so the
    /// data is aligned), atomically: an existing file at `url` is replaced only once the new one is complete.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:], to url: URL) throws {
        let names = tensors.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        if tensors["__metadata__"] != nil {
            throw EngineError.invalidFile(url.path, "'__metadata__' is reserved and cannot name a tensor")
        }
        var json = "{"
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
                .map { "\(quote($0)):\(quote(metadata[$0]!))" }
            json += "\"__metadata__\":{\(pairs.joined(separator: ","))}"
        }
        var offset = 0
        for (i, name) in names.enumerated() {
            let t = tensors[name]!
            let end = offset + t.count * 4
            json += (i > 0 || !metadata.isEmpty ? "," : "")
                + "\(quote(name)):{\"dtype\":\"F32\",\"shape\":[\(t.shape.map(String.init).joined(separator: ","))],"
                + "\"data_offsets\":[\(offset),\(end)]}"
            offset = end
        }
        json += "}"
        var header = Array(json.utf8)
        header += [UInt8](repeating: 0x20, count: (8 - header.count % 8) % 8)
        var length = UInt64(header.count).littleEndian
        try AtomicFile.write(to: url) { out in
            try withUnsafeBytes(of: &length) { try out.write($0) }
            try out.write(header)
            for name in names {
                let t = tensors[name]!
                #if _endian(big)
                let le = t.scalars.map { $0.bitPattern.littleEndian }
                try le.withUnsafeBytes { try out.write($0) }
                #else
                try t.withUnsafeBufferPointer { try out.write(UnsafeRawBufferPointer($0)) }
                #endif
            }
        }
    }

    /// A JSON string literal.
    static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where u.value < 0x20: out += String(format: "\\u%04x", u.value)
            default: out.unicodeScalars.append(u)
            }
        }
        return out + "\""
    }
}

/// A validated, memory-mapped safetensors file.
public final class SafeTensorsFile {
    public let path: String
    /// Tensor names, sorted.
    public let names: [String]
    public let entries: [String: SafeTensors.Entry]
    /// The "__metadata__" map (empty when absent).
    public let metadata: [String: String]

    private let mapping: UnsafeMutableRawPointer
    private let fileSize: Int
    private let dataStart: Int

    init(url: URL) throws {
        let path = url.path
        self.path = path
        func bad(_ problem: String) -> EngineError { EngineError.invalidFile(path, problem) }

        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw bad("cannot open: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw bad("cannot stat: \(String(cString: strerror(errno)))") }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw bad("not a regular file") }
        let size = Int(info.st_size)
        guard size >= 8 else { throw bad("file is \(size) bytes, too short for a safetensors header (needs 8)") }
        // A private read-only mapping: pages load on first use, and only the tensors asked for are touched.
        guard let base = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), base != MAP_FAILED else {
            throw bad("cannot map: \(String(cString: strerror(errno)))")
        }
        mapping = base
        fileSize = size

        let declared = UInt64(littleEndian: UnsafeRawPointer(base).loadUnaligned(as: UInt64.self))
        guard declared <= UInt64(SafeTensors.maximumHeaderLength) else {
            munmap(base, size)
            throw bad("header length \(declared) exceeds the \(SafeTensors.maximumHeaderLength)-byte limit")
        }
        let headerLength = Int(declared)
        guard headerLength <= size - 8 else {
            munmap(base, size)
            throw bad("header length \(headerLength) runs past the end of the file (\(size) bytes)")
        }
        dataStart = 8 + headerLength
        do {
            let header = UnsafeRawBufferPointer(start: base + 8, count: headerLength)
            (entries, metadata) = try SafeTensorsFile.parseHeader(header, dataSize: size - dataStart, bad: bad)
        } catch {
            munmap(base, size)
            throw error
        }
        names = entries.keys.sorted()
    }

    deinit { munmap(mapping, fileSize) }

    public func contains(_ name: String) -> Bool { entries[name] != nil }

    public func dtype(of name: String) throws -> SafeTensors.DType { try entry(name).dtype }
    public func shape(of name: String) throws -> [Int] { try entry(name).shape }

    private func entry(_ name: String) throws -> SafeTensors.Entry {
        guard let e = entries[name] else { throw EngineError.invalidFile(path, "no tensor named '\(name)'") }
        return e
    }

    /// The tensor `name` converted to Float32 (from any dtype but the 8-bit floats; 64-bit integers above 2^24
    /// lose precision).
    public func tensor(named name: String) throws -> Tensor {
        let e = try entry(name)
        var out = Tensor(uninitializedShape: e.shape)
        let n = out.count
        guard n > 0 else { return out }
        let src = UnsafeRawPointer(mapping + dataStart + e.range.lowerBound), dst = out.mutablePointer
        @inline(__always) func convert<T>(_: T.Type, _ f: (T) -> Float) {
            Parallel.forEach(n, minimumChunk: 1 << 16) { r in
                for i in r { dst[i] = f(src.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
            }
        }
        switch e.dtype {
        case .F32:
            #if _endian(big)
            convert(UInt32.self) { Float(bitPattern: UInt32(littleEndian: $0)) }
            #else
            memcpy(dst, src, n * 4)
            #endif
        case .F16: convert(UInt16.self) { halfToFloat(UInt16(littleEndian: $0)) }
        case .BF16: convert(UInt16.self) { Float(bitPattern: UInt32(UInt16(littleEndian: $0)) << 16) }
        case .F64: convert(UInt64.self) { Float(Double(bitPattern: UInt64(littleEndian: $0))) }
        case .I64: convert(Int64.self) { Float(Int64(littleEndian: $0)) }
        case .U64: convert(UInt64.self) { Float(UInt64(littleEndian: $0)) }
        case .I32: convert(Int32.self) { Float(Int32(littleEndian: $0)) }
        case .U32: convert(UInt32.self) { Float(UInt32(littleEndian: $0)) }
        case .I16: convert(Int16.self) { Float(Int16(littleEndian: $0)) }
        case .U16: convert(UInt16.self) { Float(UInt16(littleEndian: $0)) }
        case .I8: convert(Int8.self) { Float($0) }
        case .U8: convert(UInt8.self) { Float($0) }
        case .BOOL: convert(UInt8.self) { $0 != 0 ? 1 : 0 }
        case .F8_E4M3, .F8_E5M2:
            throw EngineError.invalidFile(path, "tensor '\(name)' has dtype \(e.dtype.rawValue), which cannot be read as Float32")
        }
        return out
    }

    /// The integer tensor `name` (any integer dtype) as Int64, e.g. token ids or BatchNorm's num_batches_tracked.
    public func int64(named name: String) throws -> [Int64] {
        let e = try entry(name)
        guard e.dtype.isInteger else {
            throw EngineError.invalidFile(path, "tensor '\(name)' has dtype \(e.dtype.rawValue), not an integer type")
        }
        let src = UnsafeRawPointer(mapping + dataStart + e.range.lowerBound), size = e.dtype.size
        let n = e.range.count / size
        return (0..<n).map { i in
            let at = i * size
            switch e.dtype {
            case .I64: return Int64(littleEndian: src.loadUnaligned(fromByteOffset: at, as: Int64.self))
            case .U64: return Int64(truncatingIfNeeded: UInt64(littleEndian: src.loadUnaligned(fromByteOffset: at, as: UInt64.self)))
            case .I32: return Int64(Int32(littleEndian: src.loadUnaligned(fromByteOffset: at, as: Int32.self)))
            case .U32: return Int64(UInt32(littleEndian: src.loadUnaligned(fromByteOffset: at, as: UInt32.self)))
            case .I16: return Int64(Int16(littleEndian: src.loadUnaligned(fromByteOffset: at, as: Int16.self)))
            case .U16: return Int64(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: at, as: UInt16.self)))
            case .I8: return Int64(src.loadUnaligned(fromByteOffset: at, as: Int8.self))
            default: return Int64(src.load(fromByteOffset: at, as: UInt8.self))
            }
        }
    }

    /// Every tensor converted to Float32.
    public func tensors() throws -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for n in names { out[n] = try tensor(named: n) }
        return out
    }

    // MARK: Header validation

    static func parseHeader(_ bytes: UnsafeRawBufferPointer, dataSize: Int,
                            bad: (String) -> EngineError) throws -> ([String: SafeTensors.Entry], [String: String]) {
        guard String(validating: bytes.assumingMemoryBound(to: UInt8.self), as: UTF8.self) != nil else {
            throw bad("header is not valid UTF-8")
        }
        let root: HeaderJSON
        do { root = try HeaderJSON.parse(bytes) } catch let e as HeaderJSON.SyntaxError {
            throw bad("header is not valid JSON (\(e.problem) at byte \(e.offset))")
        }
        guard case let .object(members) = root else { throw bad("header is not a JSON object") }

        var entries: [String: SafeTensors.Entry] = [:]
        var metadata: [String: String] = [:]
        for (name, value) in members {
            if name == "__metadata__" {
                guard case let .object(pairs) = value else { throw bad("__metadata__ must map strings to strings") }
                for (k, v) in pairs {
                    guard case let .string(s) = v else { throw bad("__metadata__ must map strings to strings ('\(k)' does not)") }
                    metadata[k] = s
                }
                continue
            }
            func badEntry(_ problem: String) -> EngineError { bad("tensor '\(name)': \(problem)") }
            guard case let .object(fields) = value else { throw badEntry("entry is not a JSON object") }
            let field = Dictionary(fields, uniquingKeysWith: { a, _ in a })
            guard case let .string(dtypeName)? = field["dtype"] else { throw badEntry("dtype missing or not a string") }
            guard let dtype = SafeTensors.DType(rawValue: dtypeName) else { throw badEntry("unknown dtype '\(dtypeName)'") }
            guard case let .array(dims)? = field["shape"], let shape = HeaderJSON.integers(dims) else {
                throw badEntry("shape missing or not a list of non-negative integers")
            }
            guard case let .array(offsets)? = field["data_offsets"], offsets.count == 2,
                  let pair = HeaderJSON.integers(offsets) else {
                throw badEntry("data_offsets missing or not two non-negative integers")
            }
            let (begin, end) = (pair[0], pair[1])
            guard begin <= end else { throw badEntry("data_offsets [\(begin), \(end)] end before they begin") }
            guard end <= dataSize else {
                throw badEntry("data_offsets [\(begin), \(end)] reach past the end of the data section (\(dataSize) bytes)")
            }
            var needed = dtype.size
            if !shape.contains(0) {
                for d in shape {
                    let (p, overflow) = needed.multipliedReportingOverflow(by: d)
                    guard !overflow else { throw badEntry("shape \(shape) is too large") }
                    needed = p
                }
            } else {
                needed = 0
            }
            guard end - begin == needed else {
                throw badEntry("holds \(end - begin) bytes but shape \(shape) of \(dtype.rawValue) needs \(needed)")
            }
            entries[name] = SafeTensors.Entry(dtype: dtype, shape: shape, range: begin..<end)
        }

        // The ranges must tile the data section: no overlap (aliasing) and no gap (room for hidden payloads).
        let ordered = entries.sorted { ($0.value.range.lowerBound, $0.value.range.upperBound, $0.key)
            < ($1.value.range.lowerBound, $1.value.range.upperBound, $1.key) }
        var covered = 0
        var previous: (name: String, range: Range<Int>)?
        for (name, e) in ordered {
            if e.range.lowerBound < covered, let p = previous {
                throw bad("tensors '\(p.name)' and '\(name)' overlap (data_offsets [\(p.range.lowerBound), \(p.range.upperBound)] "
                          + "and [\(e.range.lowerBound), \(e.range.upperBound)])")
            }
            if e.range.lowerBound > covered {
                throw bad("bytes \(covered)..<\(e.range.lowerBound) of the data section belong to no tensor (holes are not allowed)")
            }
            covered = e.range.upperBound
            if !e.range.isEmpty { previous = (name, e.range) }
        }
        if covered < dataSize {
            throw bad("bytes \(covered)..<\(dataSize) of the data section belong to no tensor (holes are not allowed)")
        }
        return (entries, metadata)
    }
}

/// IEEE half precision to Float (exact: every half is a Float).
@inline(__always)
func halfToFloat(_ h: UInt16) -> Float {
    let sign: Float = h & 0x8000 != 0 ? -1 : 1
    let exponent = Int((h >> 10) & 0x1f), mantissa = UInt32(h & 0x3ff)
    if exponent == 0 { return sign * Float(mantissa) * 0x1p-24 }
    let bits = (exponent == 31 ? 0x7f80_0000 : UInt32(exponent + 112) << 23) | (mantissa << 13)
    return sign * Float(bitPattern: bits)
}

// MARK: Modules

extension Module {
    /// Saves parameters and buffers (`stateDict()`) as an F32 safetensors file, atomically.
    public func save(to url: URL, metadata: [String: String] = [:]) throws {
        try SafeTensors.write(stateDict(), metadata: metadata, to: url)
    }

    /// Loads parameters and buffers by name from a safetensors file (any readable dtype, converted to Float32).
    /// With `strict`, every parameter and buffer must be in the file. Returns the names in the file that the
    /// module does not use (e.g. a pretraining head), sorted.
    @discardableResult
    public func loadWeights(from url: URL, strict: Bool = true) throws -> [String] {
        let file = try SafeTensors.read(url)
        let wanted = Set((namedParameters() + namedBuffers()).map(\.name))
        var state: [String: Tensor] = [:]
        for name in file.names where wanted.contains(name) { state[name] = try file.tensor(named: name) }
        try load(state, strict: strict, source: url.path)
        return file.names.filter { !wanted.contains($0) }
    }
}

// MARK: Header JSON

/// A strict JSON reader for headers: duplicate keys are an error (they would let one file mean two things),
/// nesting is limited (no stack overflow on "[[[[..."), and integers are kept exact.
indirect enum HeaderJSON {
    case object([(String, HeaderJSON)])
    case array([HeaderJSON])
    case string(String)
    /// A non-negative integer literal that fits in Int.
    case integer(Int)
    /// Any other number.
    case number
    case bool(Bool)
    case null

    struct SyntaxError: Error {
        let problem: String
        let offset: Int
    }

    static let maximumDepth = 64

    static func parse(_ bytes: UnsafeRawBufferPointer) throws -> HeaderJSON {
        var reader = Reader(bytes: bytes.assumingMemoryBound(to: UInt8.self))
        reader.skipSpace()
        let value = try reader.value(depth: 0)
        reader.skipSpace()
        guard reader.at == reader.bytes.count else { throw reader.fail("unexpected text after the header object") }
        return value
    }

    /// The values as non-negative Ints, or nil if any is something else.
    static func integers(_ values: [HeaderJSON]) -> [Int]? {
        var out: [Int] = []
        for v in values {
            guard case let .integer(i) = v else { return nil }
            out.append(i)
        }
        return out
    }

    struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var at = 0

        func fail(_ problem: String) -> SyntaxError { SyntaxError(problem: problem, offset: at) }

        var peek: UInt8? { at < bytes.count ? bytes[at] : nil }

        mutating func skipSpace() {
            while let c = peek, c == 0x20 || c == 0x0a || c == 0x0d || c == 0x09 { at += 1 }
        }

        mutating func expect(_ word: String) throws {
            for c in word.utf8 {
                guard peek == c else { throw fail("invalid literal") }
                at += 1
            }
        }

        mutating func value(depth: Int) throws -> HeaderJSON {
            guard depth < HeaderJSON.maximumDepth else { throw fail("nesting deeper than \(HeaderJSON.maximumDepth)") }
            guard let c = peek else { throw fail("unexpected end") }
            switch c {
            case UInt8(ascii: "{"):
                at += 1
                var members: [(String, HeaderJSON)] = []
                var keys = Set<String>()
                skipSpace()
                if peek == UInt8(ascii: "}") { at += 1; return .object(members) }
                while true {
                    skipSpace()
                    guard peek == UInt8(ascii: "\"") else { throw fail("expected a key") }
                    let keyAt = at
                    let key = try string()
                    guard keys.insert(key).inserted else { throw SyntaxError(problem: "duplicate key '\(key)'", offset: keyAt) }
                    skipSpace()
                    guard peek == UInt8(ascii: ":") else { throw fail("expected ':'") }
                    at += 1
                    skipSpace()
                    members.append((key, try value(depth: depth + 1)))
                    skipSpace()
                    if peek == UInt8(ascii: ",") { at += 1; continue }
                    guard peek == UInt8(ascii: "}") else { throw fail("expected ',' or '}'") }
                    at += 1
                    return .object(members)
                }
            case UInt8(ascii: "["):
                at += 1
                var items: [HeaderJSON] = []
                skipSpace()
                if peek == UInt8(ascii: "]") { at += 1; return .array(items) }
                while true {
                    skipSpace()
                    items.append(try value(depth: depth + 1))
                    skipSpace()
                    if peek == UInt8(ascii: ",") { at += 1; continue }
                    guard peek == UInt8(ascii: "]") else { throw fail("expected ',' or ']'") }
                    at += 1
                    return .array(items)
                }
            case UInt8(ascii: "\""): return .string(try string())
            case UInt8(ascii: "t"): try expect("true"); return .bool(true)
            case UInt8(ascii: "f"): try expect("false"); return .bool(false)
            case UInt8(ascii: "n"): try expect("null"); return .null
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
            default: throw fail("unexpected character")
            }
        }

        mutating func digits() -> Int {
            let start = at
            while let c = peek, c >= UInt8(ascii: "0"), c <= UInt8(ascii: "9") { at += 1 }
            return at - start
        }

        mutating func number() throws -> HeaderJSON {
            let negative = peek == UInt8(ascii: "-")
            if negative { at += 1 }
            let intStart = at
            let count = digits()
            guard count > 0 else { throw fail("invalid number") }
            guard count == 1 || bytes[intStart] != UInt8(ascii: "0") else { throw SyntaxError(problem: "leading zero", offset: intStart) }
            var plain = !negative
            if peek == UInt8(ascii: ".") {
                at += 1
                guard digits() > 0 else { throw fail("invalid number") }
                plain = false
            }
            if peek == UInt8(ascii: "e") || peek == UInt8(ascii: "E") {
                at += 1
                if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { at += 1 }
                guard digits() > 0 else { throw fail("invalid number") }
                plain = false
            }
            guard plain else { return .number }
            var value = 0
            for i in intStart..<at {
                let (m, o1) = value.multipliedReportingOverflow(by: 10)
                let (s, o2) = m.addingReportingOverflow(Int(bytes[i] - UInt8(ascii: "0")))
                if o1 || o2 { return .number }
                value = s
            }
            return .integer(value)
        }

        mutating func hex4() throws -> UInt32 {
            var v: UInt32 = 0
            for _ in 0..<4 {
                guard let c = peek, let d = Int(String(UnicodeScalar(c)), radix: 16) else { throw fail("invalid \\u escape") }
                v = v * 16 + UInt32(d)
                at += 1
            }
            return v
        }

        mutating func string() throws -> String {
            at += 1  // opening quote
            var out = [UInt8]()
            while true {
                guard let c = peek else { throw fail("unterminated string") }
                at += 1
                switch c {
                case UInt8(ascii: "\""):
                    return String(decoding: out, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    guard let e = peek else { throw fail("unterminated string") }
                    at += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(e)
                    case UInt8(ascii: "b"): out.append(0x08)
                    case UInt8(ascii: "f"): out.append(0x0c)
                    case UInt8(ascii: "n"): out.append(0x0a)
                    case UInt8(ascii: "r"): out.append(0x0d)
                    case UInt8(ascii: "t"): out.append(0x09)
                    case UInt8(ascii: "u"):
                        var scalar = try hex4()
                        if (0xD800..<0xDC00).contains(scalar) {
                            guard peek == UInt8(ascii: "\\") else { throw fail("unpaired surrogate") }
                            at += 1
                            guard peek == UInt8(ascii: "u") else { throw fail("unpaired surrogate") }
                            at += 1
                            let low = try hex4()
                            guard (0xDC00..<0xE000).contains(low) else { throw fail("unpaired surrogate") }
                            scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                        }
                        guard let u = Unicode.Scalar(scalar) else { throw fail("unpaired surrogate") }
                        out += Array(String(Character(u)).utf8)
                    default: throw fail("invalid escape")
                    }
                case 0..<0x20:
                    throw fail("control character in string")
                default:
                    out.append(c)
                }
            }
        }
    }
}
