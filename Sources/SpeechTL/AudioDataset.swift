import Foundation
import TransferEngine

/// Reading speech datasets: a folder per class, a flat (or nested) folder of unlabelled clips, or a CSV table.
///
/// - Labelled folder: `<root>/<label>/**/*.{wav,flac,ogg,opus,mp3,aiff,...}` (`extensions`); classes are the sub-folders, in sorted order, each read
///   recursively (`DatasetFolders`).
/// - Unlabelled folder: every audio file under the folder (sub-folders included), sorted by path.
/// - CSV (`.csv`, `PathList`): `path,label` per line (labelled) or `path` (unlabelled; further columns are
///   ignored), an optional header naming the columns in any order, fields optionally double-quoted. Relative
///   paths are relative to the CSV file's folder.
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
            return try PathList.labelledSet(url, kind: "audio file")
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
        if isCSV(url) { return try PathList.read(url, labelled: false, kind: "audio file").map(\.url) }
        if !isDirectory(url) {
            guard FileManager.default.fileExists(atPath: url.path) else { throw EngineError.invalidFile(url.path, "no such file or folder") }
            guard isAudio(url) else { throw EngineError.invalidFile(url.path, "is not an audio file (\(extensionList)), a folder or a .csv table") }
            return [url]
        }
        let out = try DatasetFolders.files(in: url, where: isAudio)
        guard !out.isEmpty else { throw EngineError.invalidFile(url.path, "holds no audio files (\(extensionList))") }
        return out
    }
}
