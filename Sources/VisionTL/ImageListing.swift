import Foundation
import TransferEngine

/// Finding images: class folders, flat folders and CSV lists. Errors name the folder or file (and CSV line).
enum ImageListing {
    static func isDirectory(_ url: URL) throws -> Bool {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            throw EngineError.invalidFile(url.path, "no such file or directory")
        }
        return isDirectory.boolValue
    }

    /// The PNG and JPEG files under `folder` (subfolders included), sorted by path; hidden files skipped.
    static func imageFiles(in folder: URL, required: Bool) throws -> [URL] {
        let files = try DatasetFolders.files(in: folder, where: ImageFile.isImage)
        if required && files.isEmpty {
            throw EngineError.invalidFile(folder.path, "no .png or .jpg files in this folder")
        }
        return files
    }

    /// `<root>/<label>/**/*.{png,jpg,jpeg}`: classes are the subfolders in sorted order, read recursively.
    static func classFolders(_ root: URL) throws -> (samples: [URL], labels: [Int], classNames: [String]) {
        let found = try DatasetFolders.classFolders(root, where: ImageFile.isImage)
        guard !found.classNames.isEmpty else {
            let hasImages = !((try? imageFiles(in: root, required: false)) ?? []).isEmpty
            throw EngineError.invalidFile(root.path, hasImages
                ? "has images but no class folders; a labelled set is <root>/<label>/*.png (or .jpg) or a CSV of path,label"
                : "no class folders; a labelled set is <root>/<label>/*.png (or .jpg) or a CSV of path,label")
        }
        guard !found.samples.isEmpty else { throw EngineError.invalidFile(root.path, "the class folders hold no .png or .jpg files") }
        return found
    }

    struct Row { var path: URL; var label: String? }

    /// A CSV list: `path,label` rows (labelled) or `path[,...]` rows (unlabelled), an optional header whose first
    /// field is `path`, paths relative to the CSV's folder (or absolute). Simple CSV: fields may be quoted with
    /// double quotes (a doubled quote inside is a quote).
    static func csv(_ url: URL, labelled: Bool) throws -> [Row] {
        guard let text = String(data: try InputFile.read(url, limit: 1 << 30, what: "a CSV file"), encoding: .utf8) else {
            throw EngineError.invalidFile(url.path, "cannot be read as UTF-8 text")
        }
        let base = url.deletingLastPathComponent()
        var rows: [Row] = []
        // Character.isNewline covers "\n", "\r" and "\r\n" (one Character in Swift, so splitting on "\n" misses it).
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            if line.trimmingCharacters(in: .whitespaces).isEmpty { continue }
            let fields = try splitCSV(String(line), url: url, line: index + 1)
            if rows.isEmpty && index == 0 && fields.first?.lowercased() == "path" { continue }  // header
            if labelled {
                guard fields.count >= 2, !fields[1].isEmpty else {
                    throw EngineError.invalidFile("\(url.path):\(index + 1)", "expected path,label")
                }
            }
            guard let first = fields.first, !first.isEmpty else {
                throw EngineError.invalidFile("\(url.path):\(index + 1)", "empty path")
            }
            let path = first.hasPrefix("/") ? URL(fileURLWithPath: first) : base.appendingPathComponent(first)
            guard FileManager.default.fileExists(atPath: path.path) else {
                throw EngineError.invalidFile("\(url.path):\(index + 1)", "no such file '\(first)'")
            }
            rows.append(Row(path: path, label: labelled ? fields[1] : nil))
        }
        guard !rows.isEmpty else { throw EngineError.invalidFile(url.path, "no rows") }
        return rows
    }

    static func splitCSV(_ line: String, url: URL, line number: Int) throws -> [String] {
        var fields: [String] = [], field = "", quoted = false, wasQuoted = false
        var chars = Array(line)[...]
        while let ch = chars.popFirst() {
            if quoted {
                if ch == "\"" {
                    if chars.first == "\"" { field.append("\""); chars.removeFirst() } else { quoted = false }
                } else {
                    field.append(ch)
                }
            } else if ch == "\"" && field.isEmpty && !wasQuoted {
                quoted = true
                wasQuoted = true
            } else if ch == "," {
                fields.append(wasQuoted ? field : field.trimmingCharacters(in: .whitespaces))
                field = ""
                wasQuoted = false
            } else {
                field.append(ch)
            }
        }
        if quoted { throw EngineError.invalidFile("\(url.path):\(number)", "unterminated quoted field") }
        fields.append(wasQuoted ? field : field.trimmingCharacters(in: .whitespaces))
        return fields
    }
}
