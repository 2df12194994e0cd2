import XCTest
@testable import TransferEngine

/// safetensors reading and writing: round trips, dtype decoding from hand-built bytes, and a corpus of corrupt
/// files, each of which must throw one `EngineError.invalidFile` naming the file and the problem.
final class SafeTensorsTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

    /// A file made of an 8-byte length, `header` (unpadded unless the caller pads it) and `data`.
    func file(_ name: String, header: String, data: [UInt8], length: UInt64? = nil) throws -> URL {
        let h = Array(header.utf8)
        return try file(name, bytes: le(length ?? UInt64(h.count)) + h + data)
    }

    func file(_ name: String, bytes: [UInt8]) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    func le<T: FixedWidthInteger>(_ v: T) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
    func f32(_ values: [Float]) -> [UInt8] { values.flatMap { le($0.bitPattern) } }

    // MARK: Round trip

    func testRoundTripWithMetadataScalarsAndEmptyTensors() throws {
        var rng = RNG(seed: 1)
        let tensors: [String: Tensor] = [
            "layer.0.weight": rng.normalTensor([3, 5]),
            "b": rng.normalTensor([7]),
            "scalar": Tensor(2.5),
            "empty": Tensor(zeros: [0, 4]),
            "naïve \"quoted\"\\name\n": Tensor(shape: [1, 1, 2], scalars: [.infinity, -0.0]),
        ]
        let metadata = ["format": "pt", "note": "line\nbreak \"and\" ünïcode", "seed": "1"]
        let url = dir.appendingPathComponent("model.safetensors")
        try SafeTensors.write(tensors, metadata: metadata, to: url)

        let bytes = try Array(Data(contentsOf: url))
        let headerLength = Int(bytes[0..<8].reversed().reduce(UInt64(0)) { $0 << 8 | UInt64($1) })
        XCTAssertEqual(headerLength % 8, 0, "header padded so the data is aligned")
        let header = String(decoding: bytes[8..<(8 + headerLength)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{\"__metadata__\":{\"format\":\"pt\""), header)
        XCTAssertEqual(bytes.count, 8 + headerLength + tensors.values.reduce(0) { $0 + $1.count * 4 })
        // An independent parser sees the same header.
        let json = try JSONSerialization.jsonObject(with: Data(header.utf8)) as! [String: Any]
        XCTAssertEqual(json["__metadata__"] as? [String: String], metadata)
        let order = tensors.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        let begins = order.map { ((json[$0] as! [String: Any])["data_offsets"] as! [Int])[0] }
        XCTAssertEqual(begins, begins.sorted(), "data laid out in sorted name order")

        let read = try SafeTensors.read(url)
        XCTAssertEqual(read.path, url.path)
        XCTAssertEqual(read.names, tensors.keys.sorted())
        XCTAssertEqual(read.metadata, metadata)
        for (name, t) in tensors {
            XCTAssertEqual(try read.dtype(of: name), .F32)
            XCTAssertEqual(try read.shape(of: name), t.shape)
            XCTAssertEqual(try read.tensor(named: name), t, name)
        }
        XCTAssertEqual(try read.tensor(named: "scalar").scalar, 2.5)
        XCTAssertEqual(try read.tensors().count, tensors.count)
        XCTAssertThrowsError(try read.tensor(named: "missing")) { e in
            XCTAssertEqual(e as? EngineError, .invalidFile(url.path, "no tensor named 'missing'"))
        }

        // Overwriting replaces the file and leaves no temporary file behind; an empty dictionary is a valid file.
        try SafeTensors.write([:], to: url)
        XCTAssertEqual(try Array(Data(contentsOf: url)), le(UInt64(8)) + Array("{}      ".utf8))
        XCTAssertEqual(try SafeTensors.read(url).names, [])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["model.safetensors"])
        XCTAssertThrowsError(try SafeTensors.write(["__metadata__": Tensor(1)], to: url))
    }

    func testAtomicWriteNeverLeavesPartialFiles() throws {
        struct Boom: Error {}
        let url = dir.appendingPathComponent("keep.bin")
        try AtomicFile.write(Data([1, 2, 3]), to: url)
        XCTAssertThrowsError(try AtomicFile.write(to: url) { w in
            try w.write([9, 9, 9, 9])
            throw Boom()
        }) { XCTAssertTrue($0 is Boom) }
        XCTAssertEqual(try Data(contentsOf: url), Data([1, 2, 3]), "a failed write keeps the old contents")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["keep.bin"], "temporary file removed")

        let nowhere = dir.appendingPathComponent("no/such/dir/x.safetensors")
        XCTAssertThrowsError(try SafeTensors.write(["a": Tensor(1)], to: nowhere)) { e in
            let text = "\(e)"
            XCTAssertTrue(text.hasPrefix(nowhere.path + ": cannot create a temporary file"), text)
        }

        // Files that belong together: one that cannot be written leaves none of them (nor a temporary file), and
        // the old contents stay.
        let a = dir.appendingPathComponent("a.csv"), b = dir.appendingPathComponent("b.csv")
        XCTAssertThrowsError(try AtomicFile.write([(Data([1]), a), (Data([2]), b), (Data([3]), nowhere)]))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), ["keep.bin"])
        try AtomicFile.write([(Data([1]), a), (Data([2]), url)])
        XCTAssertEqual(try Data(contentsOf: a), Data([1]))
        XCTAssertEqual(try Data(contentsOf: url), Data([2]))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted(), ["a.csv", "keep.bin"])
    }

    // MARK: Decoding other dtypes

    func testDecodesF16BF16I64AndIntegers() throws {
        let half: [UInt16] = [0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001, 0x8400, 0x7C00, 0x0000]
        let halfValues: [Float] = [1, -2, 0.5, 65504, 0x1p-24, -0x1p-14, .infinity, 0]
        let bf: [UInt16] = [0x3F80, 0xC040, 0x4049, 0x0000]
        let bfValues: [Float] = [1, -3, 3.140625, 0]
        let ints: [Int64] = [-5, 1 << 40, 7]
        let bytes: [UInt8] = [0, 1, 255]
        let header = """
        {"h":{"dtype":"F16","shape":[2,4],"data_offsets":[0,16]},\
        "bf":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]},\
        "ids":{"dtype":"I64","shape":[3],"data_offsets":[24,48]},\
        "mask":{"dtype":"BOOL","shape":[3],"data_offsets":[48,51]},\
        "u":{"dtype":"U8","shape":[3],"data_offsets":[51,54]},\
        "f8":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[54,56]},\
        "__metadata__":{"format":"pt"}}
        """
        // Not padded: the header length is odd, so every tensor is misaligned in the mapping.
        XCTAssertNotEqual(header.utf8.count % 8, 0)
        let url = try file("mixed.safetensors", header: header,
                           data: half.flatMap { le($0) } + bf.flatMap { le($0) } + ints.flatMap { le($0) } + bytes + bytes + [0x38, 0x40])
        let f = try SafeTensors.read(url)
        XCTAssertEqual(f.names, ["bf", "f8", "h", "ids", "mask", "u"])
        XCTAssertEqual(f.metadata, ["format": "pt"])
        XCTAssertEqual(try f.tensor(named: "h"), Tensor(shape: [2, 4], scalars: halfValues))
        XCTAssertEqual(try f.tensor(named: "bf").scalars, bfValues)
        XCTAssertEqual(try f.int64(named: "ids"), ints)
        XCTAssertEqual(try f.tensor(named: "ids").scalars, ints.map(Float.init))
        XCTAssertEqual(try f.tensor(named: "mask").scalars, [0, 1, 1])
        XCTAssertEqual(try f.int64(named: "u"), [0, 1, 255])
        XCTAssertEqual(try f.dtype(of: "f8"), .F8_E4M3)
        XCTAssertThrowsError(try f.tensor(named: "f8")) { e in
            XCTAssertEqual("\(e)", "\(url.path): tensor 'f8' has dtype F8_E4M3, which cannot be read as Float32")
        }
        XCTAssertThrowsError(try f.int64(named: "bf")) { e in XCTAssertTrue("\(e)".contains("not an integer type")) }

        // Every half-precision bit pattern converts exactly.
        for bits in UInt16.min...UInt16.max {
            let ours = halfToFloat(bits), reference = Float(Float16(bitPattern: bits))
            if reference.isNaN { XCTAssertTrue(ours.isNaN) } else if ours.bitPattern != reference.bitPattern {
                XCTFail("half 0x\(String(bits, radix: 16)): \(ours) vs \(reference)")
                break
            }
        }
    }

    // MARK: Corrupt files

    func testCorruptFilesThrowNamingFileAndProblem() throws {
        let a = f32([1, 2, 3, 4]), b = f32([5, 6])
        func entry(_ name: String, _ dtype: String = "F32", _ shape: String, _ offsets: String) -> String {
            "\"\(name)\":{\"dtype\":\"\(dtype)\",\"shape\":\(shape),\"data_offsets\":\(offsets)}"
        }
        let goodHeader = "{" + entry("a", "F32", "[2,2]", "[0,16]") + "," + entry("b", "F32", "[2]", "[16,24]") + "}"
        let good = le(UInt64(goodHeader.utf8.count)) + Array(goodHeader.utf8) + a + b
        XCTAssertEqual(try SafeTensors.read(try file("good.safetensors", bytes: good)).tensor(named: "b").scalars, [5, 6])

        func headerWith(_ entries: String...) -> String { "{" + entries.joined(separator: ",") + "}" }
        let deep = String(repeating: "[", count: 10_000) + String(repeating: "]", count: 10_000)
        var cases: [(label: String, bytes: [UInt8], problem: String)] = [
            ("empty", [], "file is 0 bytes, too short"),
            ("cut at 4", Array(good[0..<4]), "file is 4 bytes, too short"),
            ("cut at 7", Array(good[0..<7]), "too short"),
            ("cut at 8", Array(good[0..<8]), "header length \(goodHeader.utf8.count) runs past the end of the file (8 bytes)"),
            ("cut in header", Array(good[0..<30]), "runs past the end of the file"),
            ("cut at data", Array(good[0..<(8 + goodHeader.utf8.count)]), "tensor 'a': data_offsets [0, 16] reach past the end of the data section (0 bytes)"),
            ("cut in data", Array(good.dropLast(3)), "tensor 'b': data_offsets [16, 24] reach past the end of the data section (21 bytes)"),
            ("huge header length", le(UInt64(1) << 40) + good.dropFirst(8), "header length 1099511627776 exceeds the 100000000-byte limit"),
            ("max header length", le(UInt64.max) + good.dropFirst(8), "exceeds the 100000000-byte limit"),
            ("header length zero", le(UInt64(0)) + good.dropFirst(8), "header is not valid JSON (unexpected end at byte 0)"),
            ("trailing bytes", good + [0, 0, 0, 0], "bytes 24..<28 of the data section belong to no tensor"),
        ]
        let headerCases: [(String, String, [UInt8], String)] = [
            ("not JSON", "{not json}", a, "header is not valid JSON (expected a key at byte 1)"),
            ("truncated JSON", "{\"a\":{\"dtype\":", a, "header is not valid JSON"),
            ("JSON array", "[1,2]", [], "header is not a JSON object"),
            ("trailing text", goodHeader + "x", a + b, "unexpected text after the header object"),
            ("duplicate key", headerWith(entry("a", "F32", "[2]", "[0,8]"), entry("a", "F32", "[2]", "[8,16]")), a, "duplicate key 'a'"),
            ("deep nesting", "{\"x\":" + deep + "}", [], "nesting deeper than 64"),
            ("overlap", headerWith(entry("a", "F32", "[4]", "[0,16]"), entry("b", "F32", "[2]", "[8,16]")), a,
             "tensors 'a' and 'b' overlap (data_offsets [0, 16] and [8, 16])"),
            ("same range twice", headerWith(entry("a", "F32", "[2]", "[0,8]"), entry("b", "F32", "[2]", "[0,8]")), f32([1, 2]), "overlap"),
            ("out of range", headerWith(entry("a", "F32", "[4]", "[0,16]"), entry("b", "F32", "[2]", "[16,24]")), a,
             "tensor 'b': data_offsets [16, 24] reach past the end of the data section (16 bytes)"),
            ("end before begin", headerWith(entry("a", "F32", "[0]", "[8,4]")), a, "tensor 'a': data_offsets [8, 4] end before they begin"),
            ("wrong byte size", headerWith(entry("a", "F32", "[3]", "[0,16]")), a, "tensor 'a': holds 16 bytes but shape [3] of F32 needs 12"),
            ("dtype size", headerWith(entry("a", "F16", "[4]", "[0,16]")), a, "shape [4] of F16 needs 8"),
            ("unknown dtype", headerWith(entry("a", "F17", "[4]", "[0,16]")), a, "tensor 'a': unknown dtype 'F17'"),
            ("hole", headerWith(entry("a", "F32", "[2]", "[0,8]"), entry("b", "F32", "[1]", "[12,16]")), a,
             "bytes 8..<12 of the data section belong to no tensor (holes are not allowed)"),
            ("negative dim", headerWith(entry("a", "F32", "[-4]", "[0,16]")), a, "tensor 'a': shape missing or not a list of non-negative integers"),
            ("fractional dim", headerWith(entry("a", "F32", "[4.0]", "[0,16]")), a, "shape missing or not a list"),
            ("shape not a list", headerWith(entry("a", "F32", "4", "[0,16]")), a, "shape missing or not a list"),
            ("huge shape", headerWith(entry("a", "F32", "[4294967296,4294967296,4]", "[0,16]")), a, "shape [4294967296, 4294967296, 4] is too large"),
            ("three offsets", headerWith(entry("a", "F32", "[4]", "[0,8,16]")), a, "tensor 'a': data_offsets missing or not two non-negative integers"),
            ("offset too big", headerWith(entry("a", "F32", "[4]", "[0,99999999999999999999]")), a, "data_offsets missing or not two"),
            ("no dtype", "{\"a\":{\"shape\":[4],\"data_offsets\":[0,16]}}", a, "tensor 'a': dtype missing or not a string"),
            ("entry not object", "{\"a\":[4]}", a, "tensor 'a': entry is not a JSON object"),
            ("metadata not strings", "{\"__metadata__\":{\"epoch\":3}}", [], "__metadata__ must map strings to strings ('epoch' does not)"),
            ("metadata not object", "{\"__metadata__\":\"pt\"}", [], "__metadata__ must map strings to strings"),
            ("control char", "{\"a\nb\":{}}", [], "control character in string"),
            ("bad escape", "{\"a\\qb\":{}}", [], "invalid escape"),
            ("lone surrogate", "{\"a\\ud800b\":{}}", [], "unpaired surrogate"),
            ("leading zero", headerWith(entry("a", "F32", "[04]", "[0,16]")), a, "leading zero"),
        ]
        for (label, header, data, problem) in headerCases {
            cases.append((label, le(UInt64(header.utf8.count)) + Array(header.utf8) + data, problem))
        }
        cases.append(("invalid UTF-8", le(UInt64(4)) + [0x7b, 0xff, 0xfe, 0x7d], "header is not valid UTF-8"))

        for (i, c) in cases.enumerated() {
            let url = try file("corrupt-\(i).safetensors", bytes: c.bytes)
            XCTAssertThrowsError(try SafeTensors.read(url), c.label) { e in
                guard case let .invalidFile(path, problem)? = e as? EngineError else {
                    return XCTFail("\(c.label): not an invalidFile error: \(e)")
                }
                XCTAssertEqual(path, url.path, c.label)
                XCTAssertTrue(problem.contains(c.problem), "\(c.label): '\(problem)' does not say '\(c.problem)'")
            }
        }

        XCTAssertThrowsError(try SafeTensors.read(dir.appendingPathComponent("absent.safetensors"))) { e in
            XCTAssertTrue("\(e)".hasSuffix("absent.safetensors: cannot open: No such file or directory"), "\(e)")
        }
        XCTAssertThrowsError(try SafeTensors.read(dir)) { e in XCTAssertEqual("\(e)", "\(dir.path): not a regular file") }
    }

    func testToleratedVariants() throws {
        // Unaligned headers, whitespace, key order, extra fields, empty tensors sharing an offset, and zero-size
        // tensors at the end are all valid per the reference implementation.
        let header = """
         { "z" : {"shape":[0,3],"dtype":"F32","data_offsets":[8,8],"extra":true},
          "a": {"dtype":"F32","shape":[2],"data_offsets":[0,8]}, "e": {"dtype":"I64","shape":[0],"data_offsets":[8,8]},
          "s": {"dtype":"F32","shape":[],"data_offsets":[8,12]}, "\\u00e9\\ud83d\\ude00": {"dtype":"F32","shape":[0],"data_offsets":[12,12]} }\t
        """
        let url = try file("variants.safetensors", header: header, data: f32([1, 2, 3]))
        let f = try SafeTensors.read(url)
        XCTAssertEqual(f.names, ["a", "e", "s", "z", "é😀"])
        XCTAssertEqual(try f.tensor(named: "z").shape, [0, 3])
        XCTAssertEqual(try f.int64(named: "e"), [])
        XCTAssertEqual(try f.tensor(named: "s"), Tensor(3))
        XCTAssertEqual(try f.tensor(named: "a").scalars, [1, 2])
    }

    // MARK: Modules

    func testModuleSaveAndLoadWeights() throws {
        var rng = RNG(seed: 4)
        let source = Linear(inputs: 3, outputs: 2, rng: &rng)
        let url = dir.appendingPathComponent("linear.safetensors")
        try source.save(to: url, metadata: ["epoch": "3"])
        XCTAssertEqual(try SafeTensors.read(url).metadata, ["epoch": "3"])

        let target = Linear(inputs: 3, outputs: 2, rng: &rng)
        XCTAssertNotEqual(target.weight.value, source.weight.value)
        XCTAssertEqual(try target.loadWeights(from: url), [])
        XCTAssertEqual(target.stateDict(), source.stateDict())

        // Extra tensors are reported; missing ones fail only when strict; wrong sizes always fail.
        let extra = dir.appendingPathComponent("extra.safetensors")
        try SafeTensors.write(["weight": source.weight.value, "pooler.dense.weight": Tensor(zeros: [1])], to: extra)
        XCTAssertThrowsError(try target.loadWeights(from: extra)) { e in
            XCTAssertEqual(e as? EngineError, .invalidFile(extra.path, "missing tensor 'bias'"))
        }
        XCTAssertEqual(try target.loadWeights(from: extra, strict: false), ["pooler.dense.weight"])
        try SafeTensors.write(["weight": Tensor(zeros: [5]), "bias": Tensor(zeros: [2])], to: extra)
        XCTAssertThrowsError(try target.loadWeights(from: extra)) { e in
            XCTAssertTrue("\(e)".hasPrefix(extra.path + ": tensor 'weight' has shape [5]"), "\(e)")
        }
        // A transposed weight has the right number of elements and still fails: shapes are compared whole.
        let shape = source.weight.value.shape, transposed = Array(shape.reversed())
        XCTAssertNotEqual(shape, transposed)
        try SafeTensors.write(["weight": Tensor(zeros: transposed), "bias": source.bias!.value], to: extra)
        XCTAssertThrowsError(try target.loadWeights(from: extra)) { e in
            XCTAssertTrue("\(e)".contains("tensor 'weight' has shape \(transposed), the model needs \(shape)"), "\(e)")
        }
    }
}
