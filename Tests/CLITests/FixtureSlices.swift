import Foundation

/// Small slices of an app's fixtures, made in the test's work folder (links to the fixture files, or a shorter
/// table), for tests that exercise commands rather than accuracy.
extension ReleaseApp {
    func classFolders(_ path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: fixture(path))) ?? []).filter { !$0.hasPrefix(".") }.sorted()
    }

    func firstFile(_ path: String) -> String {
        fixture(path) + "/" + (classFolders(path).first ?? "")
    }

    /// The first `perClass` files of the first `classes` class folders, linked into a new folder.
    func folderSlice(_ path: String, classes: Int, perClass: Int) throws -> String {
        let dest = work.appendingPathComponent("slices/" + path)
        for c in classFolders(path).prefix(classes) {
            let folder = dest.appendingPathComponent(c)
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            for f in classFolders(path + "/" + c).prefix(perClass) {
                try? FileManager.default.createSymbolicLink(atPath: folder.appendingPathComponent(f).path,
                                                            withDestinationPath: fixture(path + "/" + c + "/" + f))
            }
        }
        return dest.path
    }

    /// The first `count` files of a flat folder, linked into a new folder.
    func flatSlice(_ path: String, count: Int) throws -> String {
        let dest = work.appendingPathComponent("slices/" + path)
        try FileManager.default.createDirectory(at: dest, withIntermediateDirectories: true)
        for f in classFolders(path).filter({ !$0.hasSuffix(".csv") && !$0.hasSuffix(".txt") }).prefix(count) {
            try? FileManager.default.createSymbolicLink(atPath: dest.appendingPathComponent(f).path, withDestinationPath: fixture(path + "/" + f))
        }
        return dest.path
    }

    /// The header and the first `perLabel` rows of each label (every row up to 2 x perLabel when unlabelled) of a TSV.
    func tableSlice(_ path: String, perLabel: Int) throws -> String {
        let lines = try String(contentsOfFile: fixture(path), encoding: .utf8).split(separator: "\n", omittingEmptySubsequences: true)
        let header = lines[0]
        var kept = [header], counts: [Substring: Int] = [:]
        let labelled = header.split(separator: "\t").first == "label"
        for line in lines.dropFirst() {
            let key = labelled ? line.split(separator: "\t").first ?? "" : ""
            let limit = labelled ? perLabel : 2 * perLabel
            if counts[key, default: 0] < limit { kept.append(line); counts[key, default: 0] += 1 }
        }
        let dest = work.appendingPathComponent("slices/" + path)
        try FileManager.default.createDirectory(at: dest.deletingLastPathComponent(), withIntermediateDirectories: true)
        try (kept.joined(separator: "\n") + "\n").write(to: dest, atomically: true, encoding: .utf8)
        return dest.path
    }
}
