import Foundation

/// Where fetched pretrained models live: `$TL_MODELS_DIR`, else `Models/` in the current directory
/// (what `scripts/fetch-models` writes by default when run from the repository root).
public enum ModelStore {
    /// Set when a command works with an exported model: its own `Models/` folder, used before any other.
    public nonisolated(unsafe) static var override: URL?

    public static var directory: URL {
        if let override { return override }
        if let dir = ProcessInfo.processInfo.environment["TL_MODELS_DIR"], !dir.isEmpty {
            return URL(fileURLWithPath: dir, isDirectory: true)
        }
        return URL(fileURLWithPath: FileManager.default.currentDirectoryPath, isDirectory: true)
            .appendingPathComponent("Models", isDirectory: true)
    }

    /// The file `relativePath` under the models folder, or an error saying which command fetches it.
    public static func file(_ relativePath: String) throws -> URL {
        let url = directory.appendingPathComponent(relativePath)
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw EngineError.invalidFile(url.path, "model file not found; fetch the pretrained models with: scripts/fetch-models (or set TL_MODELS_DIR)")
        }
        return url
    }
}
