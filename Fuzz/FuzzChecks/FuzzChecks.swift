import Foundation
import SpeechTL
import TextTL
import TransferEngine
import TransferReport
import VisionTL

/// A property a harness checks did not hold (the fuzz harnesses turn it into a crash, the replay tests into a
/// failure).
public struct PropertyViolation: Error, CustomStringConvertible {
    public let harness: String
    public let problem: String
    public var description: String { "fuzz-\(harness): property violated: \(problem)" }
}

/// The properties the fuzz harnesses check, one function per harness. Each takes arbitrary bytes and throws
/// `PropertyViolation` only when a property fails. The properties, for every harness:
/// - no trap and no sanitizer report (the fuzz build has ASan; a trap is a crash in either build);
/// - bad input is an `EngineError.invalidFile` whose location names the input (and whose message is one line);
/// - accepted input gives sane output (finite values, consistent shapes) and round trips where one exists.
public enum FuzzChecks {
    /// Every harness by name (as in `fuzz-<name>` and `Tests/FuzzCorpus/<name>`).
    public static let all: [(name: String, check: (Data) throws -> Void)] = [
        ("png", png), ("jpeg", jpeg), ("audio", audio), ("safetensors", safeTensors), ("text-table", textTable), ("wordpiece", wordPiece),
    ]

    /// The libFuzzer entry point's body: runs `check` and crashes on a violated property.
    public static func fuzz(_ check: (Data) throws -> Void, _ bytes: UnsafePointer<UInt8>?, _ size: Int) {
        let data = bytes.map { Data(bytes: $0, count: size) } ?? Data()
        do { try check(data) } catch { fatalError("\(error)") }
    }

    // MARK: - Shared

    /// `error` must be the project's one clear error for input `name`: `EngineError.invalidFile` whose location
    /// starts with `name` and a non-empty problem (which may quote the input, line breaks included).
    static func expectInvalidFile(_ error: Error, name: String, harness: String) throws {
        guard let e = error as? EngineError, case let .invalidFile(location, problem) = e else {
            throw PropertyViolation(harness: harness, problem: "bad input gave \(type(of: error)) '\(error)', not EngineError.invalidFile")
        }
        guard location.hasPrefix(name) else {
            throw PropertyViolation(harness: harness, problem: "error '\(e)' does not name the input \(name)")
        }
        guard !problem.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw PropertyViolation(harness: harness, problem: "error '\(e)' has an empty problem")
        }
    }

    static func require(_ condition: Bool, _ harness: String, _ problem: @autoclosure () -> String) throws {
        if !condition { throw PropertyViolation(harness: harness, problem: problem()) }
    }

    /// A scratch file for readers that take URLs (one per process; harnesses run inputs one at a time).
    static func scratchFile(_ ext: String) -> URL {
        let folder = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
        return URL(fileURLWithPath: folder).appendingPathComponent("tl-fuzz-\(getpid())-\(ext.hashValue & 0xffff).\(ext)")
    }

    // MARK: - PNG

    /// Small enough that a decompression bomb in a fuzz input stays fast.
    static let pngMaxPixels = 1 << 20

    /// PNG decode (both alpha modes) and the evaluation preprocessing; an accepted image round trips through
    /// the engine's `PNGWriter`.
    /// The bytes as they are and, when that changes them, with every chunk's CRC rewritten to match (so that
    /// mutated inputs get past the CRC check into libpng's decoding).
    public static func png(_ data: Data) throws {
        try decodePNG(data)
        let fixed = fixingCRCs(data)
        if fixed != data { try decodePNG(fixed) }
    }

    static func fixingCRCs(_ data: Data) -> Data {
        var d = [UInt8](data)
        var pos = 8
        while pos + 12 <= d.count {
            let length = Int(d[pos]) << 24 | Int(d[pos + 1]) << 16 | Int(d[pos + 2]) << 8 | Int(d[pos + 3])
            guard length <= d.count - pos - 12 else { break }
            let crc = PNGWriter.crc32(d[(pos + 4)..<(pos + 8 + length)])
            for k in 0..<4 { d[pos + 8 + length + k] = UInt8(truncatingIfNeeded: crc >> (24 - 8 * k)) }
            if d[(pos + 4)..<(pos + 8)].elementsEqual("IEND".utf8) { break }
            pos += 12 + length
        }
        return Data(d)
    }

    /// A decoded image within the size limit, RGB, its samples finite and in 0...255.
    static func checkDecoded(_ image: Image, harness h: String) throws {
        try require(image.width > 0 && image.height > 0 && image.width * image.height <= pngMaxPixels, h,
                    "decoded size \(image.width)x\(image.height)")
        try require(image.channels == 3 && image.pixels.count == image.width * image.height * 3, h,
                    "decoded \(image.pixels.count) samples for \(image.width)x\(image.height)x\(image.channels)")
        try require(image.pixels.allSatisfy { $0.isFinite && $0 >= 0 && $0 <= 255 }, h, "decoded samples outside 0...255")
    }

    static func decodePNG(_ data: Data) throws {
        let h = "png", name = "fuzz-input.png"
        for alpha in [PNGDecoder.AlphaHandling.drop, .compositeOverBlack] {
            let image: Image
            do { image = try PNGDecoder.decode(data, name: name, maxPixels: pngMaxPixels, alpha: alpha) } catch {
                try expectInvalidFile(error, name: name, harness: h)
                continue
            }
            try checkDecoded(image, harness: h)

            let size = 8
            let evaluation = ImagePreprocessing.evaluationImage(image, size: size)
            try require(evaluation.width == size && evaluation.height == size && evaluation.pixels.count == size * size * 3, h,
                        "evaluation image \(evaluation.width)x\(evaluation.height) with \(evaluation.pixels.count) samples")
            try require(evaluation.pixels.allSatisfy(\.isFinite), h, "evaluation image has non-finite samples")
            let batch = ImagePreprocessing.evaluationBatch([image], size: size)
            try require(batch.shape == [1, size, size, 3], h, "evaluation batch shape \(batch.shape)")
            try require(batch.scalars.allSatisfy(\.isFinite), h, "evaluation batch has non-finite values")

            // Round trip: 8-bit RGB samples -> PNGWriter -> decode gives the same samples.
            if alpha == .drop && image.width * image.height <= 1 << 14 {
                let bytes = image.pixels.map { UInt8(min(max($0.rounded(), 0), 255)) }
                let png = PNGWriter.encode(width: image.width, height: image.height, channels: 3, pixels: bytes)
                let again = try PNGDecoder.decode(Data(png), name: "round trip of \(name)")
                try require(again.width == image.width && again.height == image.height
                            && again.pixels == bytes.map(Float.init), h, "PNGWriter round trip changed the image")
            }
        }
    }

    // MARK: - JPEG

    /// JPEG decode through the format dispatch and the evaluation preprocessing.
    public static func jpeg(_ data: Data) throws {
        let h = "jpeg", name = "fuzz-input.jpg"
        let image: Image
        do { image = try ImageFile.decode(data, name: name, maxPixels: pngMaxPixels) } catch {
            try expectInvalidFile(error, name: name, harness: h)
            return
        }
        try checkDecoded(image, harness: h)
        try require(image.pixels.allSatisfy { $0 == $0.rounded() }, h, "decoded JPEG samples are not whole numbers")
        let batch = ImagePreprocessing.evaluationBatch([image], size: 8)
        try require(batch.shape == [1, 8, 8, 3] && batch.scalars.allSatisfy(\.isFinite), h, "evaluation batch \(batch.shape)")
    }

    // MARK: - Audio

    static let frontEnd = ClipFrontEnd()

    /// Audio bytes through libsndfile (`sf_open_virtual`), the resampler to 16 kHz, `fit` and the log-mel front end.
    public static func audio(_ data: Data) throws {
        let h = "audio", name = "fuzz-input.audio"
        let samples: [Float]
        do { samples = try AudioFile.read(data: data, name: name, maximumDuration: 30) } catch {
            try expectInvalidFile(error, name: name, harness: h)
            return
        }
        try require(!samples.isEmpty, h, "read returned no samples without an error")
        try require(samples.allSatisfy(\.isFinite), h, "read returned non-finite samples")
        let front = frontEnd
        let clip = front.fit(samples)
        try require(clip.count == front.clipSamples, h, "fit gave \(clip.count) samples, not \(front.clipSamples)")
        let mel = front.logMel([clip])
        try require(mel.shape == [1, front.frames, MelSpectrogram.melBands], h, "log-mel shape \(mel.shape)")
        try require(mel.scalars.allSatisfy(\.isFinite), h, "log-mel has non-finite values")
    }

    // MARK: - safetensors

    /// Header validation and conversion of every tensor; an accepted file round trips through `SafeTensors.write`.
    public static func safeTensors(_ data: Data) throws {
        let h = "safetensors"
        let url = scratchFile("safetensors"), back = scratchFile("back.safetensors")
        defer { try? FileManager.default.removeItem(at: url); try? FileManager.default.removeItem(at: back) }
        try data.write(to: url)
        let file: SafeTensorsFile
        do { file = try SafeTensors.read(url) } catch {
            try expectInvalidFile(error, name: url.path, harness: h)
            return
        }
        var tensors: [String: Tensor] = [:]
        for n in file.names {
            let entry = file.entries[n]!
            do {
                let t = try file.tensor(named: n)
                try require(t.shape == entry.shape, h, "tensor '\(n)' has shape \(t.shape), header says \(entry.shape)")
                tensors[n] = t
            } catch let error as PropertyViolation {
                throw error
            } catch {
                try expectInvalidFile(error, name: url.path, harness: h)
                try require(entry.dtype == .F8_E4M3 || entry.dtype == .F8_E5M2, h, "readable tensor '\(n)' failed: \(error)")
            }
            if entry.dtype.isInteger {
                let ints = try file.int64(named: n)
                try require(ints.count == entry.shape.reduce(1, *), h, "int64 of '\(n)' gave \(ints.count) values")
            }
        }
        // Round trip: what was read, written as F32 and read again, is the same bit for bit.
        try SafeTensors.write(tensors, metadata: file.metadata, to: back)
        let again = try SafeTensors.read(back)
        try require(again.names == tensors.keys.sorted() && again.metadata == file.metadata, h, "round trip changed names or metadata")
        for (n, t) in tensors {
            let u = try again.tensor(named: n)
            try require(u.shape == t.shape && u.scalars.map(\.bitPattern) == t.scalars.map(\.bitPattern), h,
                        "round trip changed tensor '\(n)'")
        }
    }

    // MARK: - Text tables

    /// The same bytes read as TSV, CSV (with a header) and JSON Lines, labelled and unlabelled.
    public static func textTable(_ data: Data) throws {
        let h = "text-table"
        for ext in ["tsv", "csv", "jsonl"] {
            let url = scratchFile(ext)
            defer { try? FileManager.default.removeItem(at: url) }
            try data.write(to: url)
            for labelled in [true, false] {
                let examples: [TextExample]
                do { examples = try TextTable.read(url, labelColumn: labelled ? "label" : nil) } catch {
                    try expectInvalidFile(error, name: url.path, harness: h)
                    continue
                }
                for e in examples {
                    try require(!isBlank(e.text), h, "\(ext): accepted a blank text at \(e.source)")
                    try require(e.source.hasPrefix(url.path + ":"), h, "\(ext): source '\(e.source)' does not name the file")
                    if labelled {
                        try require(e.label.map { !$0.isEmpty } ?? false, h, "\(ext): missing or empty label at \(e.source)")
                    } else {
                        try require(e.label == nil, h, "\(ext): unlabelled read gave a label at \(e.source)")
                    }
                }
            }
        }
    }

    /// TextTable's rule for an empty text: nothing but whitespace and control characters.
    static func isBlank(_ text: String) -> Bool {
        text.unicodeScalars.allSatisfy { $0.properties.isWhitespace || $0.value < 0x20 }
    }

    // MARK: - WordPiece

    /// A small BERT-style vocabulary (specials, words, "##" continuations, accented and CJK entries).
    public static let vocabulary: [String] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        + ["!", "\"", "#", "'", ",", "-", ".", "?", "a", "b", "c", "d", "e", "f", "i", "n", "o", "s", "t", "u", "x"]
        + ["the", "un", "##able", "##s", "##ing", "##ed", "play", "token", "##izer", "##ize", "cafe", "naive", "word",
           "piece", "##piece", "hello", "world", "##a", "##b", "##c", "##e", "##n", "##o", "##t", "中", "国", "日", "本",
           "の", "##の", "é", "ß", "σ", "straße", "1", "2", "##1", "##2", "100"]

    static let tokenizer = try! WordPieceTokenizer(tokens: vocabulary, source: "fuzz vocabulary")

    /// The bytes as a text (lossy UTF-8) through normalisation, `pieces` and `encode`; and as a vocabulary
    /// (one token per line), which either builds a tokenizer or names its source in the error.
    public static func wordPiece(_ data: Data) throws {
        let h = "wordpiece"
        let text = String(decoding: data, as: UTF8.self)
        try checkTokenizer(tokenizer, text: text, harness: h)

        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        if lines.last == "" { lines.removeLast() }
        do {
            let own = try WordPieceTokenizer(tokens: lines, source: "fuzz-input.vocab")
            try require(own.vocabularySize == lines.count, h, "vocabulary of \(lines.count) lines has size \(own.vocabularySize)")
            try checkTokenizer(own, text: text, harness: h)
            try checkTokenizer(own, text: "Hello, world! [CLS] naïve 中国 tokenizer", harness: h)
        } catch let error as PropertyViolation {
            throw error
        } catch {
            try expectInvalidFile(error, name: "fuzz-input.vocab", harness: h)
        }
    }

    static func checkTokenizer(_ t: WordPieceTokenizer, text: String, harness h: String) throws {
        _ = t.normalize(text)
        let pieces = t.pieces(text)
        try require(pieces.allSatisfy { (0..<t.vocabularySize).contains($0) }, h, "a piece id is outside the vocabulary")
        try require(pieces == t.pieces(text), h, "pieces are not deterministic")
        try require(t.encode(text, maxLength: nil) == [t.classID] + pieces + [t.separatorID], h, "encode is not [CLS] pieces [SEP]")
        let short = t.encode(text, maxLength: 8)
        try require(short.count <= 8 && short.first == t.classID && short.last == t.separatorID
                    && Array(short.dropFirst().dropLast()) == Array(pieces.prefix(6)), h, "encode(maxLength: 8) is wrong")
    }
}

extension FuzzChecks {
    /// Always throws a `PropertyViolation` (lets the replay tests show that a violation fails).
    public static func requireForTesting() throws { try require(false, "self-test", "a false property") }
}
