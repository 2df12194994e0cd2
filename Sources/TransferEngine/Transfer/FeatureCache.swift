import Foundation
import Synchronization

/// Backbone outputs cached on disk, keyed by weights hash + samples + preprocessing, so a second run or a
/// second head skips the backbone. One safetensors file per key; written atomically.
public struct FeatureCache {
    public let directory: URL

    public init(directory: URL) { self.directory = directory }

    /// `$TL_CACHE_DIR`, else `$XDG_CACHE_HOME/transfer-suite`, else `~/.cache/transfer-suite`.
    public static var defaultDirectory: URL {
        let env = ProcessInfo.processInfo.environment
        if let d = env["TL_CACHE_DIR"], !d.isEmpty { return URL(fileURLWithPath: d, isDirectory: true) }
        if let x = env["XDG_CACHE_HOME"], !x.isEmpty {
            return URL(fileURLWithPath: x, isDirectory: true).appendingPathComponent("transfer-suite")
        }
        return FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/transfer-suite")
    }

    /// The key for `parts` (weights hash, preprocessing, sample keys, ...).
    public static func key(_ parts: [String]) -> String {
        var h = FNV64()
        for p in parts { h.add(p) }
        // A second, differently salted hash makes accidental collisions of the 64-bit key irrelevant.
        var h2 = FNV64()
        h2.add("salt")
        for p in parts.reversed() { h2.add(p) }
        return h.hex + h2.hex
    }

    func url(_ key: String) -> URL { directory.appendingPathComponent("\(key).safetensors") }

    /// Cached tensors for `key`, or nil: a missing, damaged or altered cache file (its checksum of the tensors'
    /// names, shapes and values does not match) is ignored and recomputed.
    public func load(_ key: String) -> [String: Tensor]? {
        let u = url(key)
        guard FileManager.default.fileExists(atPath: u.path), let file = try? SafeTensors.read(u),
              let tensors = try? file.tensors(), file.metadata["checksum"] == Self.checksum(tensors) else { return nil }
        return tensors
    }

    /// Stores `tensors` under `key`. A cache that cannot be written (a file where its folder should be, no
    /// permission, a full disk) is no reason to fail a command whose features are in hand: one note per folder says
    /// why, and the command goes on without storing.
    public func store(_ key: String, _ tensors: [String: Tensor]) {
        do {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            removeAbandonedTemporaryFiles()
            try SafeTensors.write(tensors, metadata: ["checksum": Self.checksum(tensors)], to: url(key))
        } catch {
            let reason = EngineError.reason(of: error)
            Self.noted.withLock { noted in
                guard noted.insert(directory.path).inserted else { return }
                ProgressReporter.note("feature cache \(directory.path): cannot be written (\(reason)); features are not "
                                      + "cached (--cache DIR names another folder, --no-cache skips it)")
            }
        }
    }

    /// The cache folders already reported as unwritable in this process.
    private static let noted = Mutex<Set<String>>([])

    static func checksum(_ tensors: [String: Tensor]) -> String {
        var h = FNV64()
        for name in tensors.keys.sorted() {
            h.add(name)
            h.add(tensors[name]!)
        }
        return h.hex
    }

    /// A write killed midway leaves its hidden temporary file (see `AtomicFile`); those over an hour old are
    /// removed (a live write of one cache file takes seconds, and others may share the folder).
    func removeAbandonedTemporaryFiles(olderThan age: TimeInterval = 3600) {
        let fm = FileManager.default
        guard let names = try? fm.contentsOfDirectory(atPath: directory.path) else { return }
        for name in names where AtomicFile.isTemporary(name) {
            let path = directory.appendingPathComponent(name).path
            if let modified = (try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date,
               Date().timeIntervalSince(modified) > age {
                try? fm.removeItem(atPath: path)
            }
        }
    }
}
