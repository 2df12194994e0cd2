import Foundation
import TransferEngine

/// BERT WordPiece tokenizer for lower-casing models (all-MiniLM-L6-v2, bert-base-uncased, ...), matching
/// Hugging Face `tokenizers` id for id (golden test: TextTLTests/Golden/tokenizer.json).
///
/// Pipeline per text: special tokens written literally in the text ("[CLS]", "[SEP]", ...) become their ids
/// (as in `tokenizers`, where they are "added tokens" matched before normalisation); every other stretch is
/// normalised (see `BERTCharacters.normalize`), split on whitespace and punctuation, and each word is cut
/// greedily into the longest vocabulary pieces, continuations prefixed by "##". A word of more than
/// `maxInputCharsPerWord` Unicode scalars, or one with an uncoverable rest, becomes a single [UNK].
///
/// Vocabulary lookups compare UTF-8 bytes (not `String` equality, which is canonical equivalence and would
/// match a decomposed Hangul word against a precomposed vocabulary entry).
public struct WordPieceTokenizer: Sendable {
    public let padID: Int
    public let unknownID: Int
    public let classID: Int
    public let separatorID: Int
    /// Words longer than this (in Unicode scalars) become [UNK].
    public var maxInputCharsPerWord = 100
    /// Recognise special tokens typed in the text, as `tokenizers` does. Off: "[CLS]" is just "[", "cl", "##s", "]".
    public var matchesSpecialTokensInText = true

    private let tokens: [String]
    private let words: ByteVocabulary          // word-initial pieces: every vocabulary line
    private let continuations: ByteVocabulary  // "##x" lines, keyed by "x"
    private let specials: [(bytes: [UInt8], id: Int)]

    /// Loads `vocab.txt` (one token per line, id = line number; a repeated token keeps its last line).
    public init(vocabulary url: URL) throws {
        let data = try InputFile.read(url, limit: 64 << 20, what: "a vocabulary file")
        guard let text = String(data: data, encoding: .utf8) else {
            throw EngineError.invalidFile(url.path, "the vocabulary is not UTF-8")
        }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
            line.hasSuffix("\r") ? String(line.dropLast()) : String(line)
        }
        if lines.last == "" { lines.removeLast() }
        try self.init(tokens: lines, source: url.path)
    }

    /// `tokens[i]` has id i. Needs [PAD], [UNK], [CLS] and [SEP]; those and [MASK] are the special tokens.
    public init(tokens: [String], source: String = "vocabulary") throws {
        var words = ByteVocabulary(), continuations = ByteVocabulary()
        for (id, token) in tokens.enumerated() {
            let bytes = Array(token.utf8)
            words.insert(bytes[...], id: id)
            if bytes.count > 2 && bytes[0] == UInt8(ascii: "#") && bytes[1] == UInt8(ascii: "#") {
                continuations.insert(bytes[2...], id: id)
            }
        }
        func required(_ name: String) throws -> Int {
            guard let id = words.lookup(Array(name.utf8)) else {
                throw EngineError.invalidFile(source, "the vocabulary has no \(name) token (is this a BERT vocab.txt?)")
            }
            return id
        }
        padID = try required("[PAD]")
        unknownID = try required("[UNK]")
        classID = try required("[CLS]")
        separatorID = try required("[SEP]")
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].compactMap { name in
            words.lookup(Array(name.utf8)).map { (Array(name.utf8), $0) }
        }
        self.tokens = tokens
        self.words = words
        self.continuations = continuations
    }

    public var vocabularySize: Int { tokens.count }

    /// The id of a vocabulary entry (exact bytes), if any.
    public func id(of token: String) -> Int? { words.lookup(Array(token.utf8)) }

    /// The vocabulary entry of an id.
    public func token(of id: Int) -> String { tokens[id] }

    /// Text after BERT normalisation (cleaning, CJK spacing, accent stripping, lower-casing): for inspection.
    public func normalize(_ text: String) -> String {
        var scalars: [Unicode.Scalar] = []
        BERTCharacters.normalize(text[...], into: &scalars)
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    /// Word-piece ids of `text` without [CLS]/[SEP] and without truncation.
    public func pieces(_ text: String) -> [Int] {
        var ids: [Int] = []
        ids.reserveCapacity(text.utf8.count / 3 + 4)
        var work = Workspace()
        forEachSegment(of: text) { segment, special in
            if let special { ids.append(special) } else { appendPieces(of: segment, to: &ids, work: &work) }
        }
        return ids
    }

    /// The first `limit` word-piece ids of `text`: `pieces(text).prefix(limit)`, without tokenising all of a
    /// long text. A prefix ending in ASCII whitespace is tokenised first (whitespace separates words and nothing
    /// in normalisation crosses it, so its pieces begin the text's pieces), doubling it until it gives enough.
    public func pieces(_ text: String, limit: Int) -> [Int] {
        let utf8 = text.utf8
        var budget = max(4096, limit * 32)
        while budget < utf8.count {
            var cut = utf8.index(utf8.startIndex, offsetBy: budget)
            while cut > utf8.startIndex, !Self.isASCIIWhitespace(utf8[utf8.index(before: cut)]) { cut = utf8.index(before: cut) }
            if cut > utf8.startIndex {
                let ids = pieces(String(decoding: utf8[..<cut], as: UTF8.self))
                if ids.count >= limit { return Array(ids.prefix(limit)) }
            }
            budget *= 2
        }
        return Array(pieces(text).prefix(limit))
    }

    private static func isASCIIWhitespace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }

    /// [CLS] pieces [SEP]; with `maxLength` (counting the two specials, at least 2) the pieces are cut to fit.
    public func encode(_ text: String, maxLength: Int? = 128) -> [Int] {
        let body: [Int]
        if let maxLength {
            precondition(maxLength >= 2, "WordPieceTokenizer.encode: maxLength \(maxLength) leaves no room for [CLS] and [SEP]")
            body = pieces(text, limit: maxLength - 2)
        } else {
            body = pieces(text)
        }
        var ids = [classID]
        ids.reserveCapacity(body.count + 2)
        ids.append(contentsOf: body)
        ids.append(separatorID)
        return ids
    }

    /// `encode` for many texts, on all cores (order kept).
    public func encode(_ texts: [String], maxLength: Int? = 128) -> [[Int]] {
        var result = [[Int]](repeating: [], count: texts.count)
        result.withUnsafeMutableBufferPointer { out in
            let out = out
            Parallel.forEach(texts.count, minimumChunk: 64) { range in
                for i in range { out[i] = encode(texts[i], maxLength: maxLength) }
            }
        }
        return result
    }

    /// Encodes `texts` into one batch.
    public func batch(_ texts: [String], maxLength: Int? = 128) -> TokenBatch {
        TokenBatch(encode(texts, maxLength: maxLength))
    }

    // MARK: - Internals

    /// Splits `text` at special tokens typed in it (leftmost match first); calls `body` in order.
    private func forEachSegment(of text: String, _ body: (Substring, Int?) -> Void) {
        guard matchesSpecialTokensInText, !specials.isEmpty else { body(text[...], nil); return }
        let utf8 = text.utf8
        var segmentStart = utf8.startIndex, i = utf8.startIndex
        while i < utf8.endIndex {
            guard utf8[i] == UInt8(ascii: "[") else { i = utf8.index(after: i); continue }
            var matched: (length: Int, id: Int)?
            for special in specials where special.bytes.count > (matched?.length ?? 0) {
                if utf8[i...].starts(with: special.bytes) { matched = (special.bytes.count, special.id) }
            }
            guard let matched else { i = utf8.index(after: i); continue }
            if segmentStart < i { body(text[segmentStart..<i], nil) }
            body(text[i..<i], matched.id)
            i = utf8.index(i, offsetBy: matched.length)
            segmentStart = i
        }
        if segmentStart < utf8.endIndex { body(text[segmentStart...], nil) }
    }

    /// Buffers reused across the words of one call.
    private struct Workspace {
        var scalars: [Unicode.Scalar] = []
        var bytes: [UInt8] = []
        var starts: [Int] = []   // byte offset of each scalar of the current word, then the end
    }

    private func appendPieces(of segment: Substring, to ids: inout [Int], work: inout Workspace) {
        BERTCharacters.normalize(segment, into: &work.scalars)
        let scalars = work.scalars
        var wordStart = 0, i = 0
        while i < scalars.count {
            let s = scalars[i]
            if BERTCharacters.isWhitespace(s) {
                if wordStart < i { appendWord(scalars[wordStart..<i], to: &ids, work: &work) }
                wordStart = i + 1
            } else if BERTCharacters.isPunctuation(s) {
                if wordStart < i { appendWord(scalars[wordStart..<i], to: &ids, work: &work) }
                appendWord(scalars[i...i], to: &ids, work: &work)
                wordStart = i + 1
            }
            i += 1
        }
        if wordStart < scalars.count { appendWord(scalars[wordStart...], to: &ids, work: &work) }
    }

    /// Greedy longest-match-first over one word.
    private func appendWord(_ word: ArraySlice<Unicode.Scalar>, to ids: inout [Int], work: inout Workspace) {
        if word.count > maxInputCharsPerWord { ids.append(unknownID); return }
        work.bytes.removeAll(keepingCapacity: true)
        work.starts.removeAll(keepingCapacity: true)
        for s in word {
            work.starts.append(work.bytes.count)
            UTF8.encode(s) { work.bytes.append($0) }
        }
        work.starts.append(work.bytes.count)
        let n = word.count, before = ids.count
        let found = work.bytes.withUnsafeBufferPointer { bytes -> Bool in
            var start = 0
            while start < n {
                let table = start == 0 ? words : continuations
                // No vocabulary entry is longer than `longest` bytes: skip the ends that cannot match.
                var end = n
                while work.starts[end] - work.starts[start] > table.longest { end -= 1 }
                var id: Int?
                while end > start {
                    let from = work.starts[start]
                    id = table.lookup(UnsafeBufferPointer(rebasing: bytes[from..<work.starts[end]]))
                    if id != nil { break }
                    end -= 1
                }
                guard let id else { return false }
                ids.append(id)
                start = end
            }
            return true
        }
        if !found {
            ids.removeLast(ids.count - before)
            ids.append(unknownID)
        }
    }
}

/// A batch of token id sequences, packed: sequence after sequence, without padding.
public struct TokenBatch: Sendable {
    /// Every sequence's ids, one after the other (Σ lengths): what `Embedding` takes.
    public let ids: [Int]
    /// Tokens per sequence (including [CLS] and [SEP]).
    public let lengths: [Int]

    public init(_ sequences: [[Int]]) {
        ids = sequences.flatMap { $0 }
        lengths = sequences.map(\.count)
    }

    public var batchSize: Int { lengths.count }
}

/// Open-addressing hash map from UTF-8 bytes to ids: lookups hash a byte slice, no String is built.
struct ByteVocabulary: Sendable {
    private var storage: [UInt8] = []
    private var entries: [(offset: Int32, count: Int32, id: Int32)] = []
    private var slots = [Int32](repeating: -1, count: 1 << 16)
    /// Byte length of the longest key.
    private(set) var longest = 0

    private static func hash(_ bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325   // FNV-1a
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return Int(truncatingIfNeeded: h ^ (h >> 29))
    }

    /// Inserts or overwrites (a repeated key keeps the last id).
    mutating func insert(_ key: ArraySlice<UInt8>, id: Int) {
        if (entries.count + 1) * 2 > slots.count { grow() }
        let found = key.withUnsafeBufferPointer { slot(for: $0) }
        if slots[found] >= 0 {
            entries[Int(slots[found])].id = Int32(id)
            return
        }
        slots[found] = Int32(entries.count)
        entries.append((Int32(storage.count), Int32(key.count), Int32(id)))
        storage.append(contentsOf: key)
        longest = max(longest, key.count)
    }

    func lookup(_ key: [UInt8]) -> Int? { key.withUnsafeBufferPointer { lookup($0) } }

    func lookup(_ key: UnsafeBufferPointer<UInt8>) -> Int? {
        let s = slot(for: key)
        return slots[s] < 0 ? nil : Int(entries[Int(slots[s])].id)
    }

    /// The slot holding `key`, or the empty slot where it would go.
    private func slot(for key: UnsafeBufferPointer<UInt8>) -> Int {
        let mask = slots.count - 1
        var s = Self.hash(key) & mask
        return storage.withUnsafeBufferPointer { stored in
            while true {
                let e = slots[s]
                if e < 0 { return s }
                let entry = entries[Int(e)]
                if Int(entry.count) == key.count
                    && (key.count == 0 || memcmp(stored.baseAddress! + Int(entry.offset), key.baseAddress!, key.count) == 0) {
                    return s
                }
                s = (s + 1) & mask
            }
        }
    }

    private mutating func grow() {
        slots = [Int32](repeating: -1, count: slots.count * 2)
        let mask = slots.count - 1
        storage.withUnsafeBufferPointer { stored in
            for (i, entry) in entries.enumerated() {
                var s = Self.hash(UnsafeBufferPointer(rebasing: stored[Int(entry.offset)..<Int(entry.offset + entry.count)])) & mask
                while slots[s] >= 0 { s = (s + 1) & mask }
                slots[s] = Int32(i)
            }
        }
    }
}
