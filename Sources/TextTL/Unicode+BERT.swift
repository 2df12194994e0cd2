import Foundation

/// Character classes of BERT's basic tokenizer exactly as Hugging Face `tokenizers` (BertNormalizer +
/// BertPreTokenizer) implements them, so ids match the reference the pretrained models were used with.
///
/// Where `tokenizers` differs from Google's Python BERT, we follow `tokenizers`:
/// - "control" (removed) and "punctuation" (split off) and "non-spacing mark" (dropped after NFD) come from
///   the Rust crate `unicode_categories`, whose tables are Unicode 8.0. A character assigned later counts as
///   unassigned there: it is kept as a letter even if it is now Cf, P* or Mn. Seven characters changed
///   category since 8.0; `unicode8Overrides` pins them. Unassigned (Cn) characters are kept, not removed.
/// - whitespace is Rust's `char::is_whitespace` (the White_Space property), not Python's Zs test.
/// - the CJK ranges omit U+2B820...U+2B91F (Python BERT includes them).
/// A sweep over every code point of planes 0-3 and 14 against `tokenizers` 0.23 checks all of this
/// (TextTLTests/Golden/tokenizer.json, "codepoints").
enum BERTCharacters {
    /// General categories that changed after Unicode 8.0, at their 8.0 value (found by the sweep).
    private static let unicode8Overrides: [UInt32: Unicode.GeneralCategory] = [
        0x166D: .otherPunctuation,   // CANADIAN SYLLABICS CHI SIGN, now So
        0x1734: .nonspacingMark,     // HANUNOO SIGN PAMUDPOD, now Mc
        0x1885: .otherLetter,        // MONGOLIAN LETTER ALI GALI BALUDA, now Mn
        0x1886: .otherLetter,        // MONGOLIAN LETTER ALI GALI THREE BALUDA, now Mn
        0xA9BD: .spacingMark,        // JAVANESE CONSONANT SIGN KERET, now Mn
        0x111C9: .otherPunctuation,  // SHARADA SANDHI MARK, now Mn
        0x1171E: .nonspacingMark,    // AHOM CONSONANT SIGN MEDIAL RA, now Mc
    ]

    /// The general category as the Unicode 8.0 tables of `unicode_categories` see it.
    static func legacyCategory(_ s: Unicode.Scalar) -> Unicode.GeneralCategory {
        if let pinned = unicode8Overrides[s.value] { return pinned }
        let p = s.properties
        guard let age = p.age, age.major < 8 || (age.major == 8 && age.minor == 0) else { return .unassigned }
        return p.generalCategory
    }

    /// Removed by text cleaning: NUL, U+FFFD and "other" characters (Cc, Cf, Co, Cs) except tab, LF and CR.
    static func isRemoved(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if v < 0x80 { return (v < 0x20 && v != 0x09 && v != 0x0A && v != 0x0D) || v == 0x7F }
        if v == 0xFFFD { return true }
        switch legacyCategory(s) {
        case .control, .format, .privateUse, .surrogate: return true
        default: return false
        }
    }

    /// Replaced by a space in cleaning and split on by the pre-tokenizer.
    static func isWhitespace(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if v < 0x80 { return v == 0x20 || (v >= 0x09 && v <= 0x0D) }
        return s.properties.isWhitespace
    }

    /// BERT's "Chinese character" ranges (CJK ideographs), which get spaces around them.
    static func isChinese(_ v: UInt32) -> Bool {
        (0x4E00...0x9FFF).contains(v) || (0x3400...0x4DBF).contains(v) || (0x20000...0x2A6DF).contains(v)
            || (0x2A700...0x2B73F).contains(v) || (0x2B740...0x2B81F).contains(v) || (0x2B920...0x2CEAF).contains(v)
            || (0xF900...0xFAFF).contains(v) || (0x2F800...0x2FA1F).contains(v)
    }

    /// Split off as its own word: ASCII punctuation (33-47, 58-64, 91-96, 123-126, so also $+<=>^`|~)
    /// or a Unicode 8.0 punctuation category (Pc, Pd, Ps, Pe, Pi, Pf, Po).
    static func isPunctuation(_ s: Unicode.Scalar) -> Bool {
        let v = s.value
        if v < 0x80 {
            return (33...47).contains(v) || (58...64).contains(v) || (91...96).contains(v) || (123...126).contains(v)
        }
        switch legacyCategory(s) {
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation: return true
        default: return false
        }
    }

    /// Dropped after canonical decomposition (accent stripping).
    static func isNonspacingMark(_ s: Unicode.Scalar) -> Bool {
        s.value >= 0x300 && legacyCategory(s) == .nonspacingMark
    }

    /// BertNormalizer on one piece of text (no special tokens inside): clean, pad CJK ideographs with spaces,
    /// NFD and drop non-spacing marks, lower-case (per scalar, full mapping: 'İ' has already lost its dot).
    /// ASCII-only text skips the Unicode machinery.
    static func normalize(_ text: Substring, into out: inout [Unicode.Scalar]) {
        out.removeAll(keepingCapacity: true)
        var ascii = true
        for s in text.unicodeScalars {
            let v = s.value
            if v < 0x80 {
                if v < 0x20 || v == 0x7F {
                    if v == 0x09 || v == 0x0A || v == 0x0D { out.append(" ") }
                } else if v >= 0x41 && v <= 0x5A {
                    out.append(Unicode.Scalar(UInt8(v + 32)))
                } else {
                    out.append(s)
                }
                continue
            }
            ascii = false
            if isRemoved(s) { continue }
            if isWhitespace(s) {
                out.append(" ")
            } else if isChinese(v) {
                out.append(" "); out.append(s); out.append(" ")
            } else {
                out.append(s)
            }
        }
        if ascii { return }
        // Decomposition reorders marks across scalar boundaries, so it runs on pieces of the cleaned text that end
        // where nothing can be reordered across (`isDecompositionBoundary`). One piece for the whole text would
        // cost time quadratic in its length: Foundation's NFD on Linux takes 3.6 s for 400,000 'é'.
        let cleaned = out
        out.removeAll(keepingCapacity: true)
        var start = 0
        while start < cleaned.count {
            var end = min(cleaned.count, start + decompositionPiece)
            while end < cleaned.count && end - start < 4 * decompositionPiece && !isDecompositionBoundary(cleaned[end]) { end += 1 }
            var piece = String.UnicodeScalarView()
            piece.append(contentsOf: cleaned[start..<end])
            for s in String(piece).decomposedStringWithCanonicalMapping.unicodeScalars {
                let v = s.value
                if v < 0x80 {
                    out.append(v >= 0x41 && v <= 0x5A ? Unicode.Scalar(UInt8(v + 32)) : s)
                } else if !isNonspacingMark(s) {
                    let lower = s.properties.lowercaseMapping.unicodeScalars
                    if lower.count == 1 && lower.first == s { out.append(s) } else { out.append(contentsOf: lower) }
                }
            }
            start = end
        }
    }

    /// Scalars per piece of NFD (see `normalize`).
    static let decompositionPiece = 256

    /// Whether NFD of a text splits before `s` without changing: `s` is a starter (canonical combining class 0)
    /// whose decomposition starts with a starter (not so for a few Tibetan vowel signs), so canonical reordering,
    /// which permutes runs of non-starters only, never crosses it. A piece grows to at most 4 x 256 scalars looking
    /// for one; only a run of that many non-starters in a row (no language writes them, an attack might) is cut
    /// elsewhere, where the order of its marks could differ from one NFD of the whole.
    static func isDecompositionBoundary(_ s: Unicode.Scalar) -> Bool {
        if s.value < 0x80 { return true }
        guard s.properties.canonicalCombiningClass == .notReordered else { return false }
        guard let first = String(s).decomposedStringWithCanonicalMapping.unicodeScalars.first else { return false }
        return first.properties.canonicalCombiningClass == .notReordered
    }
}
