import XCTest
import TransferEngine
@testable import TextTL

/// The WordPiece tokenizer against Hugging Face `tokenizers` 0.23 (Golden/tokenizer.json, made by
/// Golden/make_tokenizer_golden.py): ids must be identical, no tolerance.
final class WordPieceTests: XCTestCase {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent()

    static let vocabulary = "all-MiniLM-L6-v2/vocab.txt"

    /// vocab.txt from $TL_MODELS_DIR, ./Models, or the repository's Models folder, loaded once.
    static let shared: Result<WordPieceTokenizer, Error>? = {
        let candidates = [ModelStore.directory.appendingPathComponent(vocabulary),
                          repository.appendingPathComponent("Models").appendingPathComponent(vocabulary)]
        return candidates.first(where: { FileManager.default.fileExists(atPath: $0.path) })
            .map { url in Result { try WordPieceTokenizer(vocabulary: url) } }
    }()

    func tokenizer() throws -> WordPieceTokenizer {
        guard let shared = Self.shared else {
            throw XCTSkip("Models/\(Self.vocabulary) not found: fetch the pretrained models with scripts/fetch-models (or set TL_MODELS_DIR)")
        }
        return try shared.get()
    }

    struct Golden: Decodable {
        struct Case: Decodable { let text: String; let ids: [Int] }
        struct Fixture: Decodable { let path: String; let fnv1a64: String; let count: Int; let ids: [String] }
        struct Block: Decodable { let first: UInt32; let last: UInt32; let count: Int; let fnv1a64: String }
        let adversarial: [Case]
        let fixtures: [Fixture]
        let codepoints: [Block]
    }

    static let golden: Golden = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/tokenizer.json")
        do { return try JSONDecoder().decode(Golden.self, from: Data(contentsOf: url)) } catch {
            fatalError("cannot read \(url.path) (\(error)); run Golden/make_tokenizer_golden.py")
        }
    }()

    static func fnv1a64<S: Sequence>(_ bytes: S) -> String where S.Element == UInt8 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return String(format: "%016llx", h)
    }

    func describe(_ ids: [Int], _ t: WordPieceTokenizer) -> String {
        "\(ids) \(ids.map { $0 < t.vocabularySize ? t.token(of: $0) : "?" })"
    }

    func testSanitySentence() throws {
        let t = try tokenizer()
        XCTAssertEqual(t.encode("This is an example sentence"), [101, 2023, 2003, 2019, 2742, 6251, 102])
        XCTAssertEqual(t.encode(""), [101, 102])
        XCTAssertEqual([t.padID, t.unknownID, t.classID, t.separatorID], [0, 100, 101, 102])
        XCTAssertEqual(t.vocabularySize, 30522)
    }

    func testAdversarialTextsMatchTokenizers() throws {
        let t = try tokenizer()
        var same = 0
        for c in Self.golden.adversarial {
            let ids = t.encode(c.text, maxLength: nil)
            if ids == c.ids { same += 1 } else {
                XCTFail("\(c.text.debugDescription):\n  swift \(describe(ids, t))\n  hf    \(describe(c.ids, t))")
            }
        }
        print("WordPieceTests: \(same)/\(Self.golden.adversarial.count) adversarial texts identical")
    }

    func testFixtureSentencesMatchTokenizers() throws {
        let t = try tokenizer()
        var compared = 0, same = 0
        for fixture in Self.golden.fixtures {
            let url = Self.repository.appendingPathComponent(fixture.path)
            guard let data = FileManager.default.contents(atPath: url.path) else {
                XCTFail("\(fixture.path) is missing"); continue
            }
            guard Self.fnv1a64(data) == fixture.fnv1a64 else {
                XCTFail("\(fixture.path) changed since the golden file was made: rerun Golden/make_tokenizer_golden.py"); continue
            }
            let texts = try TextTable.read(url, labelColumn: nil).map(\.text)
            XCTAssertEqual(texts.count, fixture.count, fixture.path)
            for (text, encoded) in zip(texts, fixture.ids) {
                let bytes = [UInt8](Data(base64Encoded: encoded)!)
                let expected = stride(from: 0, to: bytes.count, by: 2).map { Int(bytes[$0]) | Int(bytes[$0 + 1]) << 8 }
                let ids = t.encode(text, maxLength: nil)
                compared += 1
                if ids == expected { same += 1 } else if compared - same <= 10 {
                    XCTFail("\(fixture.path): \(text.debugDescription):\n  swift \(describe(ids, t))\n  hf    \(describe(expected, t))")
                }
            }
        }
        XCTAssertEqual(same, compared)
        XCTAssertGreaterThan(compared, 0)
        print("WordPieceTests: \(same)/\(compared) fixture sentences identical")
    }

    /// Every code point of planes 0-3 and 14, each between two letters, hashed per block of 256.
    func testEveryCodePointMatchesTokenizers() throws {
        let t = try tokenizer()
        var mismatched: [String] = []
        var points = 0
        for block in Self.golden.codepoints {
            var text = String.UnicodeScalarView()
            for v in block.first...block.last {
                guard let s = Unicode.Scalar(v) else { continue }
                if !text.isEmpty { text.append(" ") }
                text.append("a"); text.append(s); text.append("a")
                points += 1
            }
            let ids = t.encode(String(text), maxLength: nil)
            var bytes: [UInt8] = []
            bytes.reserveCapacity(ids.count * 4)
            for id in ids { withUnsafeBytes(of: UInt32(id).littleEndian) { bytes.append(contentsOf: $0) } }
            if ids.count != block.count || Self.fnv1a64(bytes) != block.fnv1a64 {
                mismatched.append(String(format: "U+%04X...U+%04X", block.first, block.last))
            }
        }
        XCTAssertEqual(mismatched, [], "blocks whose ids differ from tokenizers")
        print("WordPieceTests: \(points) code points in \(Self.golden.codepoints.count) blocks, \(mismatched.count) blocks differ")
    }

    func testTruncationKeepsSpecialTokens() throws {
        let t = try tokenizer()
        let long = String(repeating: "good movie ", count: 100)
        let ids = t.encode(long, maxLength: 16)
        XCTAssertEqual(ids.count, 16)
        XCTAssertEqual(ids.first, 101)
        XCTAssertEqual(ids.last, 102)
        XCTAssertEqual(Array(ids[1..<15]), Array(t.encode(long, maxLength: nil)[1..<15]))
        XCTAssertEqual(t.encode(long).count, 128, "default maximum length")
        XCTAssertEqual(t.encode("hi", maxLength: 2), [101, 102])
    }

    /// A long text is cut to its first pieces without being tokenised whole (issue 15), and the cut changes
    /// nothing: the pieces equal the first pieces of the whole text, whatever the text holds at the cut points
    /// (accents, CJK, punctuation, special tokens typed in, line breaks, a 5000-letter word).
    func testTruncatedEncodingEqualsThePrefixOfTheWholeText() throws {
        let t = try tokenizer()
        let parts = ["Crème brûlée ", "[SEP] ", "東京タワー ", "don't!! ", "\r\n", "e\u{301} ", "x y\tz ",
                     String(repeating: "ab", count: 2500) + " ", "unaffable ", "\u{1F600} "]
        for trial in 0..<20 {
            var rng = RNG(seed: UInt64(trial))
            var text = ""
            while text.utf8.count < 40_000 { text += parts[rng.int(below: parts.count)] }
            let whole = t.pieces(text)
            for limit in [1, 14, 126, 510, 5000] {
                XCTAssertEqual(t.pieces(text, limit: limit), Array(whole.prefix(limit)), "trial \(trial), limit \(limit)")
            }
            XCTAssertEqual(t.encode(text, maxLength: 128), [101] + whole.prefix(126) + [102])
        }
    }

    /// Normalisation decomposes (NFD) a long text in pieces, for time linear in its length; the result equals one NFD
    /// of the whole text (then marks dropped and lower-cased), whatever sits at the cuts: precomposed and decomposed
    /// letters, runs of marks in non-canonical order, Tibetan vowel signs that are starters decomposing into
    /// non-starters, Hangul, long runs without any ASCII.
    func testNormalisationInPiecesEqualsOneDecompositionOfTheWholeText() {
        let parts = ["é", "e\u{301}", "\u{316}\u{301}", "\u{301}\u{316}\u{35C}", "Ñ", "Å", "\u{F73}", "\u{F71}\u{F72}", "\u{F40}",
                     "한", "\u{1100}", "ǅ", "İ", "ﬁ", "\u{344}", "\u{1D165}", "\u{1D16D}", "ё", "x", "Ω"]
        // Random mixes, and a pattern that needs reordering across every position (shifted by 0-11 scalars).
        var texts: [String] = (0..<10).map { trial in
            var rng = RNG(seed: UInt64(trial))
            return (0..<3000).map { _ in parts[rng.int(below: parts.count)] }.joined()
        }
        // (Dropped marks hide their order; the musical symbols are spacing marks, kept: U+1D16D ccc 226, U+1D165 216.)
        texts += (0..<12).map { String(repeating: "é", count: $0) + String(repeating: "a\u{301}\u{1D16D}\u{1D165}\u{F73}ñ\u{35C}", count: 400) }
        for (trial, text) in texts.enumerated() {
            var got: [Unicode.Scalar] = []
            BERTCharacters.normalize(text[...], into: &got)
            var expected: [Unicode.Scalar] = []
            for s in text.decomposedStringWithCanonicalMapping.unicodeScalars where !BERTCharacters.isNonspacingMark(s) {
                expected += s.value < 0x80 ? [Unicode.Scalar(UInt8(s.value)).properties.lowercaseMapping.unicodeScalars.first!]
                                           : Array(s.properties.lowercaseMapping.unicodeScalars)
            }
            XCTAssertEqual(got, expected, "trial \(trial)")
        }
    }

    /// How a text is named in messages: its start on one line, line breaks and tabs as single spaces, cut after 57
    /// scalars when longer than 60; read from the start only, so a 100,000-mark grapheme cluster is no slower.
    func testDescribeShowsTheStartOfTheTextOnOneLine() throws {
        let domain = try TextDomain()
        func describe(_ text: String) -> String { domain.describe(TextExample(text: text, source: "t.tsv:2")) }
        XCTAssertEqual(describe("\n good\r\n\tfilm \u{2028}"), "t.tsv:2 \" good film \"")
        XCTAssertEqual(describe(String(repeating: "é", count: 60)), "t.tsv:2 \"" + String(repeating: "é", count: 60) + "\"")
        XCTAssertEqual(describe(String(repeating: "é", count: 61)), "t.tsv:2 \"" + String(repeating: "é", count: 57) + "...\"")
        XCTAssertEqual(describe("a" + String(repeating: "\u{301}\u{316}", count: 50_000)),
                       "t.tsv:2 \"a" + String(repeating: "\u{301}\u{316}", count: 28) + "...\"")
    }

    func testSpecialTokensInTextCanBeTurnedOff() throws {
        var t = try tokenizer()
        XCTAssertEqual(t.encode("[CLS] x"), [101, 101, t.id(of: "x")!, 102])
        t.matchesSpecialTokensInText = false
        XCTAssertEqual(t.encode("[CLS]").map(t.token(of:)), ["[CLS]", "[", "cl", "##s", "]", "[SEP]"])
    }

    func testBatchPacksSequences() throws {
        let t = try tokenizer()
        let batch = t.batch(["a good film", "bad", ""])
        XCTAssertEqual(batch.batchSize, 3)
        XCTAssertEqual(batch.lengths, [5, 3, 2])
        XCTAssertEqual(batch.ids.count, 10)
        XCTAssertEqual(Array(batch.ids[5..<8]), [101, t.id(of: "bad")!, 102])
        XCTAssertEqual(Array(batch.ids[8..<10]), [101, 102])
    }

    func testVocabularyFromTokens() throws {
        let t = try WordPieceTokenizer(tokens: ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "aff", "x", "x"])
        XCTAssertEqual(t.encode("unaffable"), [2, 4, 5, 6, 3])
        XCTAssertEqual(t.encode("unaffablez"), [2, 1, 3], "an uncoverable rest makes the whole word [UNK]")
        XCTAssertEqual(t.id(of: "x"), 9, "a repeated token keeps its last line")
        XCTAssertThrowsError(try WordPieceTokenizer(tokens: ["[PAD]", "[UNK]"]))
    }

    func testParallelEncodingKeepsOrder() throws {
        let t = try tokenizer()
        let texts = Self.golden.adversarial.map(\.text) + (0..<2000).map { "The movie number \($0) was surprisingly good, wasn't it? Café!" }
        let start = Date()
        let ids = t.encode(texts, maxLength: 64)
        let seconds = Date().timeIntervalSince(start)
        XCTAssertEqual(ids, texts.map { t.encode($0, maxLength: 64) })
        print(String(format: "WordPieceTests: %d texts, %d ids in %.3f s (debug build)", texts.count, ids.map(\.count).reduce(0, +), seconds))
    }
}
