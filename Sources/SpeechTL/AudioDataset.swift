import Foundation
import TransferEngine

/// Reading speech datasets: a folder per class, a flat (or nested) folder of unlabelled clips, or a CSV table.
///
/// - Labelled folder: `<root>/<label>/**/*.{wav,flac,ogg,opus,mp3,aiff,...}` (`extensions`); classes are the sub-folders, in sorted order, each read
///   recursively (`DatasetFolders`).
/// - Unlabelled folder: every audio file under the folder (sub-folders included), sorted by path.
/// - CSV (`.csv`): `path,label` per line (labelled) or `path` (unlabelled; further columns are ignored), an
///   optional header whose first field is `path`, fields optionally double-quoted. Relative paths are relative
///   to the CSV file's folder.
///
/// Problems are one line naming the file (and line): a missing folder or file, no audio files, a bad row.
public enum AudioDataset {
    /// Audio file extensions read from folders (the installed libsndfile's formats; see `SoundFile.readableExtensions`).
    public static var extensions: Set<String> { SoundFile.readableExtensions }

    static var extensionList: String { extensions.sorted().map { "." + $0 }.joined(separator: ", ") }

    static func isAudio(_ url: URL) -> Bool { extensions.contains(url.pathExtension.lowercased()) }

    static func isCSV(_ url: URL) -> Bool { url.pathExtension.lowercased() == "csv" }

    static func isDirectory(_ url: URL) -> Bool { DatasetFolders.isDirectory(url) }

    /// A labelled set from a class-per-folder tree or a `path,label` CSV.
    public static func labelled(at url: URL) throws -> LabelledSet<URL> {
        if isCSV(url) {
            let rows = try csvRows(url, columns: 2)
            let names = Array(Set(rows.map { $0.label! })).sorted()
            let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
            return LabelledSet(samples: rows.map(\.url), labels: rows.map { index[$0.label!]! }, classNames: names, source: url.path)
        }
        guard isDirectory(url) else {
            throw EngineError.invalidFile(url.path, "is neither a folder of class folders nor a .csv table")
        }
        let found = try DatasetFolders.classFolders(url, where: isAudio)
        guard !found.classNames.isEmpty else {
            throw EngineError.invalidFile(url.path, "has no class folders (expected <root>/<label>/<audio files>)")
        }
        guard !found.samples.isEmpty else {
            throw EngineError.invalidFile(url.path, "holds no audio files (\(extensionList)) in its class folders")
        }
        return LabelledSet(samples: found.samples, labels: found.labels, classNames: found.classNames, source: url.path)
    }

    /// Unlabelled clips: every audio file under a folder, a `path` CSV, or one audio file.
    public static func unlabelled(at url: URL) throws -> [URL] {
        if isCSV(url) { return try csvRows(url, columns: 1).map(\.url) }
        if !isDirectory(url) {
            guard FileManager.default.fileExists(atPath: url.path) else { throw EngineError.invalidFile(url.path, "no such file or folder") }
            guard isAudio(url) else { throw EngineError.invalidFile(url.path, "is not an audio file (\(extensionList)), a folder or a .csv table") }
            return [url]
        }
        let out = try DatasetFolders.files(in: url, where: isAudio)
        guard !out.isEmpty else { throw EngineError.invalidFile(url.path, "holds no audio files (\(extensionList))") }
        return out
    }

    struct Row { var url: URL; var label: String? }

    /// Rows of a CSV: `path` (columns 1) or `path,label` (columns 2).
    static func csvRows(_ url: URL, columns: Int) throws -> [Row] {
        guard let text = String(data: try InputFile.read(url, limit: 1 << 30, what: "a CSV file"), encoding: .utf8) else {
            throw EngineError.invalidFile(url.path, "is not UTF-8 text")
        }
        let base = url.deletingLastPathComponent()
        var rows: [Row] = []
        // "\r\n" is one Character in Swift: isNewline covers it, "\n" and "\r".
        for (n, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = String(rawLine)
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let where_ = "\(url.path):\(n + 1)"
            let fields = try splitCSV(line, where: where_)
            if n == 0 && fields.first?.lowercased() == "path" {
                if columns == 2 && (fields.count < 2 || fields[1].lowercased() != "label") {
                    throw EngineError.invalidFile(where_, "a labelled table needs the columns path,label")
                }
                continue
            }
            guard fields.count >= columns, !fields[0].isEmpty else {
                throw EngineError.invalidFile(where_, columns == 2 ? "expected 'path,label', got '\(line)'" : "expected a path, got '\(line)'")
            }
            if columns == 2 && fields[1].isEmpty { throw EngineError.invalidFile(where_, "empty label") }
            let path = fields[0]
            let file = path.hasPrefix("/") ? URL(fileURLWithPath: path) : base.appendingPathComponent(path)
            guard FileManager.default.fileExists(atPath: file.path), !isDirectory(file) else {
                throw EngineError.invalidFile(where_, "no such audio file '\(path)'")
            }
            rows.append(Row(url: file, label: columns == 2 ? fields[1] : nil))
        }
        guard !rows.isEmpty else { throw EngineError.invalidFile(url.path, "lists no audio files") }
        return rows
    }

    /// Splits one CSV line; fields may be double-quoted ("" inside quotes is a quote). Fields are trimmed.
    static func splitCSV(_ line: String, where location: String) throws -> [String] {
        var fields: [String] = [], field = "", quoted = false, wasQuoted = false
        var chars = line.makeIterator()
        while let c = chars.next() {
            if quoted {
                if c == "\"" {
                    // Either the closing quote or an escaped one.
                    var lookahead = chars
                    if lookahead.next() == "\"" { field.append("\""); chars = lookahead } else { quoted = false }
                } else {
                    field.append(c)
                }
            } else if c == "\"" && field.trimmingCharacters(in: .whitespaces).isEmpty {
                quoted = true; wasQuoted = true; field = ""
            } else if c == "," {
                fields.append(wasQuoted ? field : field.trimmingCharacters(in: .whitespaces))
                field = ""; wasQuoted = false
            } else {
                field.append(c)
            }
        }
        if quoted { throw EngineError.invalidFile(location, "unterminated quote") }
        fields.append(wasQuoted ? field : field.trimmingCharacters(in: .whitespaces))
        return fields
    }
}
