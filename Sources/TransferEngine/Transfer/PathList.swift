import Foundation

/// A CSV list of sample files, for the domains whose samples are files (images, audio): `path,label` rows
/// (labelled) or `path[,...]` rows (unlabelled). An optional first row naming the columns holds `path` (and, for
/// a labelled list, `label`) in any order; further columns are ignored. Fields may be double-quoted (`""` inside
/// is a quote); unquoted fields are trimmed. Relative paths are relative to the list's folder. Lines end with LF,
/// CRLF or CR; blank lines are skipped; the text is read by bytes and scalars, so no line costs more than its length.
/// Problems are one `EngineError.invalidFile("path:line", problem)`.
public enum PathList {
    public struct Row: Equatable {
        public var url: URL
        public var label: String?
    }

    /// The rows of the list at `url`; `kind` names a sample in messages ("audio file": "no such audio file 'x'").
    public static func read(_ url: URL, labelled: Bool, kind: String) throws -> [Row] {
        let data = try InputFile.read(url, limit: 1 << 30, what: "a CSV file")
        guard let text = String(data: data, encoding: .utf8) else { throw EngineError.invalidFile(url.path, "is not UTF-8 text") }
        let base = url.deletingLastPathComponent()
        var rows: [Row] = []
        var columns: (path: Int, label: Int) = (0, 1), first = true
        for (number, line) in lines(text) {
            let location = "\(url.path):\(number)"
            if line.unicodeScalars.allSatisfy({ $0 == " " || $0 == "\t" }) { continue }
            let fields = try split(line, location: location)
            if first {
                first = false
                let names = fields.map { $0.lowercased() }
                if let p = names.firstIndex(of: "path") {
                    guard !labelled || names.contains("label") else {
                        throw EngineError.invalidFile(location, "a labelled list needs the columns path and label, got '\(line)'")
                    }
                    columns = (p, names.firstIndex(of: "label") ?? -1)
                    continue
                }
            }
            guard fields.count > max(columns.path, labelled ? columns.label : 0), !fields[columns.path].isEmpty else {
                throw EngineError.invalidFile(location, labelled ? "expected 'path,label', got '\(line)'" : "expected a path, got '\(line)'")
            }
            let label = labelled ? fields[columns.label] : nil
            if label == "" { throw EngineError.invalidFile(location, "empty label") }
            let path = fields[columns.path]
            let file = path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
            guard FileManager.default.fileExists(atPath: file.path), !DatasetFolders.isDirectory(file) else {
                throw EngineError.invalidFile(location, "no such \(kind) '\(path)'")
            }
            rows.append(Row(url: file, label: label))
        }
        guard !rows.isEmpty else { throw EngineError.invalidFile(url.path, "lists no \(kind)s") }
        return rows
    }

    /// A labelled set from a `path,label` list; classes are the labels in sorted order.
    public static func labelledSet(_ url: URL, kind: String) throws -> LabelledSet<URL> {
        let rows = try read(url, labelled: true, kind: kind)
        let names = Array(Set(rows.map { $0.label! })).sorted()
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        return LabelledSet(samples: rows.map(\.url), labels: rows.map { index[$0.label!]! }, classNames: names, source: url.path)
    }

    /// The lines of `text` with their 1-based numbers; LF, CRLF and a lone CR each end one line.
    static func lines(_ text: String) -> [(Int, Substring)] {
        var out: [(Int, Substring)] = []
        let utf8 = text.utf8
        var start = utf8.startIndex, i = start
        while i < utf8.endIndex {
            let b = utf8[i]
            guard b == 0x0A || b == 0x0D else { i = utf8.index(after: i); continue }
            out.append((out.count + 1, text[start..<i]))
            i = utf8.index(after: i)
            if b == 0x0D, i < utf8.endIndex, utf8[i] == 0x0A { i = utf8.index(after: i) }
            start = i
        }
        if start < utf8.endIndex { out.append((out.count + 1, text[start...])) }
        return out
    }

    /// One line's fields: double-quoted fields may hold commas (`""` is a quote); unquoted fields are trimmed.
    static func split(_ line: Substring, location: String) throws -> [String] {
        var fields: [String] = [], field = String.UnicodeScalarView(), quoted = false, wasQuoted = false, blank = true
        func finish() {
            let s = String(field)
            fields.append(wasQuoted ? s : s.trimmingCharacters(in: .whitespaces))
            field = String.UnicodeScalarView(); wasQuoted = false; blank = true
        }
        var scalars = line.unicodeScalars.makeIterator()
        while let c = scalars.next() {
            if quoted {
                guard c == "\"" else { field.append(c); continue }
                var lookahead = scalars
                if lookahead.next() == "\"" { field.append(c); scalars = lookahead } else { quoted = false }
            } else if c == "\"" && !wasQuoted && blank {
                quoted = true; wasQuoted = true; field = String.UnicodeScalarView()
            } else if c == "," {
                finish()
            } else {
                field.append(c)
                if c != " " && c != "\t" { blank = false }
            }
        }
        if quoted { throw EngineError.invalidFile(location, "unterminated quote") }
        finish()
        return fields
    }
}
