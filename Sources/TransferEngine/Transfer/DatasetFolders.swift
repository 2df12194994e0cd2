import Foundation

/// The one folder rule of every domain: a labelled set is `<root>/<class>/...` with each class folder read
/// recursively (as Keras' `image_dataset_from_directory` and torchvision's `ImageFolder` do); an unlabelled set is
/// every matching file below a folder. Hidden files and folders are skipped, files are sorted by path, and a
/// symbolic link that leads back into a folder being walked is refused (it would never end).
public enum DatasetFolders {
    /// Whether `url` is a directory (following symbolic links).
    public static func isDirectory(_ url: URL) -> Bool {
        var d: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &d) && d.boolValue
    }

    /// Every file under `folder` (recursively) that `keep` accepts, sorted by path.
    public static func files(in folder: URL, where keep: (URL) -> Bool) throws -> [URL] {
        var out: [URL] = []
        var walking: [String] = []
        func walk(_ dir: URL) throws {
            let real = dir.resolvingSymlinksInPath().path
            guard !walking.contains(real) else {
                throw EngineError.invalidFile(dir.path, "a symbolic link here leads back into \(real): a folder cycle")
            }
            walking.append(real)
            defer { walking.removeLast() }
            for entry in try visibleContents(dir) {
                if isDirectory(entry) { try walk(entry) } else if keep(entry) { out.append(entry) }
            }
        }
        try walk(folder)
        return out
    }

    /// `<root>/<class>/**`: classes are the visible subfolders of `root` in sorted order; each class's files are
    /// found recursively. Files directly in `root` are not part of any class.
    public static func classFolders(_ root: URL, where keep: (URL) -> Bool) throws
        -> (samples: [URL], labels: [Int], classNames: [String]) {
        let folders = try visibleContents(root).filter(isDirectory)
        var samples: [URL] = [], labels: [Int] = []
        for (label, folder) in folders.enumerated() {
            let files = try self.files(in: folder, where: keep)
            samples += files
            labels += [Int](repeating: label, count: files.count)
        }
        return (samples, labels, folders.map(\.lastPathComponent))
    }

    /// The visible entries of a folder, sorted by name.
    static func visibleContents(_ url: URL) throws -> [URL] {
        do {
            return try FileManager.default.contentsOfDirectory(atPath: url.path).filter { !$0.hasPrefix(".") }.sorted()
                .map { url.appendingPathComponent($0) }
        } catch {
            throw EngineError.invalidFile(url.path, "cannot list the folder (\(error.localizedDescription))")
        }
    }
}
