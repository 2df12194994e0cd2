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
}
