import Foundation
import TransferEngine

/// One text to classify, with where it came from.
public struct TextExample: Equatable, Sendable {
    public var text: String
    /// nil when read as unlabelled.
    public var label: String?
    /// "path:line" of the row (its first line, for a CSV record spanning lines), or the path of a .txt file.
    public var source: String

    public init(text: String, label: String? = nil, source: String = "") {
        self.text = text
        self.label = label
        self.source = source
    }
}

/// A column of a table, by header name or by 0-based position. Literals work: `"label"`, `0`.
public enum TextColumn: Equatable, Sendable, CustomStringConvertible, ExpressibleByStringLiteral, ExpressibleByIntegerLiteral {
    case name(String)
    case index(Int)

    public init(stringLiteral value: String) { self = .name(value) }
    public init(integerLiteral value: Int) { self = .index(value) }

    /// "3" (a whole number) is an index, anything else a name: for command-line options.
    public init(parsing text: String) { self = Int(text).map { .index($0) } ?? .name(text) }

    public var description: String {
        switch self {
        case let .name(n): return "'\(n)'"
        case let .index(i): return "#\(i)"
        }
    }
}

/// Readers for text datasets. Layouts (chosen by `Format.detect`):
/// - `.csv`: RFC 4180 (fields quoted with ", "" inside quotes, quoted fields may hold the delimiter and line
///   breaks; an unquoted " is kept literally). A header row names the columns.
/// - `.tsv` / `.tab`: IANA tab-separated values: fields end at a tab or line end, " is an ordinary character
///   (so a text may start with a quote), fields cannot hold tabs or line breaks. For a TSV written with CSV
///   quoting (pandas, Excel), read it as `.csv(delimiter: "\t")`.
/// - `.jsonl` / `.ndjson`: one JSON object per line, columns are keys (`{"text": "...", "label": "pos"}`);
///   a number or boolean label is used as its text.
/// - a folder: labelled = one sub-folder per label holding .txt files (UTF-8, a whole file is one example;
///   other files and top-level files are ignored); unlabelled = every .txt file below the folder.
/// In all layouts: LF or CRLF line ends, a UTF-8 byte order mark is skipped, blank lines are skipped.
/// Every problem is an `EngineError.invalidFile("path:line", problem)`: invalid UTF-8 (the line of the first
/// bad byte), a missing column (the available ones listed), an empty text or label, an unterminated quote
/// (the line where it opened), a row with the wrong number of fields.
public enum TextTable {
    public enum Format: Equatable, Sendable {
        case csv(delimiter: UInt8)
        case tsv
        case jsonLines
        case folder

        /// By the path: a directory is a folder of .txt files; otherwise by extension.
        public static func detect(_ url: URL) throws -> Format {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
                throw EngineError.invalidFile(url.path, "no such file or folder")
            }
            if isDirectory.boolValue { return .folder }
            switch url.pathExtension.lowercased() {
            case "csv": return .csv(delimiter: UInt8(ascii: ","))
            case "tsv", "tab": return .tsv
            case "jsonl", "ndjson": return .jsonLines
            default:
                throw EngineError.invalidFile(url.path, "unknown table format '.\(url.pathExtension)' (use .csv, .tsv, .jsonl, or a folder of .txt files)")
            }
        }
    }

    /// Reads examples. `labelColumn` nil reads unlabelled (any label column is ignored). For CSV and TSV,
    /// `hasHeader: false` means every row is data and columns must be chosen by index.
    public static func read(_ url: URL, labelColumn: TextColumn? = "label", textColumn: TextColumn = "text",
                            hasHeader: Bool = true, format: Format? = nil) throws -> [TextExample] {
        let format = try format ?? Format.detect(url)
        switch format {
        case .folder:
            return try readFolder(url, labelled: labelColumn != nil)
        case .jsonLines:
            return try readJSONLines(url, labelColumn: labelColumn, textColumn: textColumn)
        case .tsv, .csv:
            let bytes = try contents(of: url)
            let rows = format == .tsv ? tsvRows(bytes) : try csvRows(bytes, delimiter: csvDelimiter(format), path: url.path)
            return try examples(from: rows, path: url.path, labelColumn: labelColumn, textColumn: textColumn, hasHeader: hasHeader)
        }
    }

    private static func csvDelimiter(_ format: Format) -> UInt8 {
        if case let .csv(delimiter) = format { return delimiter }
        return UInt8(ascii: ",")
    }

    // MARK: - Files and UTF-8

    /// Largest table read (1 GiB; a table is read whole).
    public static let maxFileBytes = 1 << 30

    /// The file's bytes without a UTF-8 BOM, checked to be valid UTF-8.
    static func contents(of url: URL) throws -> [UInt8] {
        let data = try InputFile.read(url, limit: maxFileBytes, what: "a text table")
        var bytes = [UInt8](data)
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { bytes.removeFirst(3) }
        if let nul = bytes.firstIndex(of: 0) {
            // Valid UTF-8, but no text table holds NUL bytes: UTF-16 without a byte-order mark has one in every
            // other byte of ASCII text (read as UTF-8, its header would be "l\0a\0b\0e\0l\0").
            let line = bytes[..<nul].reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }
            throw EngineError.invalidFile("\(url.path):\(line)", "holds a NUL byte (offset \(nul)): UTF-16 or a binary file? save the file as UTF-8")
        }
        if let bad = firstInvalidUTF8(bytes) {
            let line = bytes[..<bad].reduce(1) { $1 == 0x0A ? $0 + 1 : $0 }
            throw EngineError.invalidFile("\(url.path):\(line)", String(format: "invalid UTF-8 (byte 0x%02X at offset %d); save the file as UTF-8", bytes[bad], bad))
        }
        return bytes
    }

    /// Offset of the first byte that does not start a well-formed UTF-8 sequence (no overlongs, surrogates,
    /// or values past U+10FFFF), or nil.
    static func firstInvalidUTF8(_ b: [UInt8]) -> Int? {
        var i = 0
        let n = b.count
        while i < n {
            let c = b[i]
            if c < 0x80 { i += 1; continue }
            var need = 0, low: UInt8 = 0x80, high: UInt8 = 0xBF
            switch c {
            case 0xC2...0xDF: need = 1
            case 0xE0: need = 2; low = 0xA0
            case 0xE1...0xEC, 0xEE...0xEF: need = 2
            case 0xED: need = 2; high = 0x9F
            case 0xF0: need = 3; low = 0x90
            case 0xF1...0xF3: need = 3
            case 0xF4: need = 3; high = 0x8F
            default: return i
            }
            guard i + need < n, b[i + 1] >= low, b[i + 1] <= high else { return i }
            var k = 2
            while k <= need {
                guard b[i + k] & 0xC0 == 0x80 else { return i }
                k += 1
            }
            i += need + 1
        }
        return nil
    }

    // MARK: - Delimited tables

    /// A parsed row: its fields and the line it starts on.
    struct Row {
        var fields: [String]
        var line: Int
    }

    /// Tab-separated, no quoting.
    static func tsvRows(_ bytes: [UInt8]) -> [Row] {
        var rows: [Row] = []
        var line = 0
        for raw in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
            line += 1
            var record = raw
            if record.last == 0x0D { record = record.dropLast() }
            if record.isEmpty { continue }
            rows.append(Row(fields: record.split(separator: 0x09, omittingEmptySubsequences: false)
                                .map { String(decoding: $0, as: UTF8.self) }, line: line))
        }
        return rows
    }

    /// RFC 4180 records.
    static func csvRows(_ b: [UInt8], delimiter: UInt8, path: String) throws -> [Row] {
        let quote = UInt8(ascii: "\""), lf: UInt8 = 0x0A, cr: UInt8 = 0x0D
        var rows: [Row] = []
        var i = 0, line = 1
        let n = b.count
        while i < n {
            // Blank line between records.
            if b[i] == lf { i += 1; line += 1; continue }
            if b[i] == cr && i + 1 < n && b[i + 1] == lf { i += 2; line += 1; continue }
            let start = line
            var fields: [String] = []
            var field: [UInt8] = []
            var endOfRecord = false
            while !endOfRecord {
                field.removeAll(keepingCapacity: true)
                if i < n && b[i] == quote {
                    let opened = line
                    i += 1
                    while true {
                        guard i < n else {
                            throw EngineError.invalidFile("\(path):\(opened)", "unterminated quote: the quoted field opened here never closes")
                        }
                        let c = b[i]
                        if c == quote {
                            if i + 1 < n && b[i + 1] == quote { field.append(quote); i += 2; continue }
                            i += 1
                            break
                        }
                        if c == lf { line += 1 }
                        field.append(c)
                        i += 1
                    }
                    if i < n && b[i] != delimiter && b[i] != lf && !(b[i] == cr && (i + 1 == n || b[i + 1] == lf)) {
                        throw EngineError.invalidFile("\(path):\(line)", "text after the closing quote of field \(fields.count + 1) (inside a quoted field write a quote as \"\")")
                    }
                } else {
                    while i < n && b[i] != delimiter && b[i] != lf && !(b[i] == cr && (i + 1 == n || b[i + 1] == lf)) {
                        field.append(b[i])
                        i += 1
                    }
                }
                fields.append(String(decoding: field, as: UTF8.self))
                if i >= n {
                    endOfRecord = true
                } else if b[i] == delimiter {
                    i += 1
                } else {
                    i += b[i] == cr ? 2 : 1
                    line += 1
                    endOfRecord = true
                }
            }
            rows.append(Row(fields: fields, line: start))
        }
        return rows
    }

    /// Resolves columns against the header and builds examples.
    static func examples(from rows: [Row], path: String, labelColumn: TextColumn?, textColumn: TextColumn,
                         hasHeader: Bool) throws -> [TextExample] {
        guard let first = rows.first else { throw EngineError.invalidFile(path, "the file has no rows") }
        let header: [String]? = hasHeader ? first.fields : nil
        let width = first.fields.count
        func resolve(_ column: TextColumn) throws -> Int {
            switch column {
            case let .index(k):
                guard k >= 0 && k < width else {
                    throw EngineError.invalidFile("\(path):\(first.line)", "no column \(column): the rows have \(width) (0-based indices 0...\(width - 1))")
                }
                return k
            case let .name(name):
                guard let header else {
                    throw EngineError.invalidArgument("\(path): column \(column) needs a header row; without one choose columns by 0-based index")
                }
                let trimmed = header.map { $0.trimmingCharacters(in: .whitespaces) }
                if let k = trimmed.firstIndex(of: name) { return k }
                if let k = trimmed.firstIndex(where: { $0.caseInsensitiveCompare(name) == .orderedSame }) { return k }
                throw EngineError.invalidFile("\(path):\(first.line)", "no column '\(name)' (columns: \(header.joined(separator: ", ")))")
            }
        }
        let textIndex = try resolve(textColumn)
        let labelIndex = try labelColumn.map(resolve)
        let names = header.map { h in { (k: Int) in "'\(h[k])'" } } ?? { (k: Int) in "#\(k)" }
        var result: [TextExample] = []
        result.reserveCapacity(rows.count)
        for row in rows.dropFirst(hasHeader ? 1 : 0) {
            let source = "\(path):\(row.line)"
            guard row.fields.count == width else {
                throw EngineError.invalidFile(source, "\(row.fields.count) fields, expected \(width) like the \(hasHeader ? "header" : "first row") (a stray or missing delimiter?)")
            }
            let text = row.fields[textIndex]
            guard !isBlank(text) else { throw EngineError.invalidFile(source, "empty text in column \(names(textIndex))") }
            var label: String?
            if let labelIndex {
                let value = row.fields[labelIndex].trimmingCharacters(in: .whitespaces)
                guard !value.isEmpty else { throw EngineError.invalidFile(source, "empty label in column \(names(labelIndex))") }
                label = value
            }
            result.append(TextExample(text: text, label: label, source: source))
        }
        return result
    }

    static func isBlank(_ text: String) -> Bool {
        text.unicodeScalars.allSatisfy { $0.properties.isWhitespace || $0.value < 0x20 }
    }

    // MARK: - JSON Lines

    static func readJSONLines(_ url: URL, labelColumn: TextColumn?, textColumn: TextColumn) throws -> [TextExample] {
        func key(_ column: TextColumn) throws -> String {
            guard case let .name(name) = column else {
                throw EngineError.invalidArgument("\(url.path): JSON Lines columns are keys; choose them by name, not \(column)")
            }
            return name
        }
        let textKey = try key(textColumn)
        let labelKey = try labelColumn.map(key)
        let bytes = try contents(of: url)
        var result: [TextExample] = []
        var lineNumber = 0
        for raw in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
            lineNumber += 1
            let source = "\(url.path):\(lineNumber)"
            guard raw.contains(where: { $0 != 0x20 && $0 != 0x09 && $0 != 0x0D }) else { continue }
            let object: Any
            do { object = try JSONSerialization.jsonObject(with: Data(raw), options: [.fragmentsAllowed]) } catch {
                throw EngineError.invalidFile(source, "not valid JSON (each line must be one JSON object)")
            }
            guard let record = object as? [String: Any] else {
                throw EngineError.invalidFile(source, "expected a JSON object like {\"\(textKey)\": \"...\"}")
            }
            let keys = record.keys.sorted().joined(separator: ", ")
            guard let value = record[textKey] else {
                throw EngineError.invalidFile(source, "no key '\(textKey)' (keys: \(keys))")
            }
            guard let text = value as? String else {
                throw EngineError.invalidFile(source, "'\(textKey)' must be a string")
            }
            guard !isBlank(text) else { throw EngineError.invalidFile(source, "empty text in '\(textKey)'") }
            var label: String?
            if let labelKey {
                guard let value = record[labelKey] else {
                    throw EngineError.invalidFile(source, "no key '\(labelKey)' (keys: \(keys))")
                }
                guard !(value is NSNull) else { throw EngineError.invalidFile(source, "'\(labelKey)' is null: every record needs a label") }
                let string: String
                if let s = value as? String {
                    string = s.trimmingCharacters(in: .whitespaces)
                } else if let number = value as? NSNumber {
                    // JSON's true and false arrive as NSNumbers of type "c" (whose stringValue is "1" and "0").
                    string = String(cString: number.objCType) == "c" ? (number.boolValue ? "true" : "false") : number.stringValue
                } else {
                    throw EngineError.invalidFile(source, "'\(labelKey)' must be a string, a number or true/false")
                }
                guard !string.isEmpty else { throw EngineError.invalidFile(source, "empty label in '\(labelKey)'") }
                label = string
            }
            result.append(TextExample(text: text, label: label, source: source))
        }
        guard !result.isEmpty else { throw EngineError.invalidFile(url.path, "the file has no records") }
        return result
    }

    // MARK: - Folders of .txt files

    static func readFolder(_ url: URL, labelled: Bool) throws -> [TextExample] {
        func isText(_ u: URL) -> Bool { u.pathExtension.lowercased() == "txt" }
        func example(_ file: URL, label: String?) throws -> TextExample {
            let text = String(decoding: try contents(of: file), as: UTF8.self)
            guard !isBlank(text) else { throw EngineError.invalidFile("\(file.path):1", "empty text") }
            return TextExample(text: text, label: label, source: file.path)
        }
        if labelled {
            let found = try DatasetFolders.classFolders(url, where: isText)
            guard !found.samples.isEmpty else {
                throw EngineError.invalidFile(url.path, "no labelled texts: expected one sub-folder per label holding .txt files")
            }
            return try zip(found.samples, found.labels).map { try example($0, label: found.classNames[$1]) }
        }
        let files = try DatasetFolders.files(in: url, where: isText)
        guard !files.isEmpty else { throw EngineError.invalidFile(url.path, "no .txt files in the folder") }
        return try files.map { try example($0, label: nil) }
    }
}
