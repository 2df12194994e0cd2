import Foundation
#if canImport(Glibc)
import Glibc
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
import Darwin
private let systemWrite = Darwin.write
#endif

/// Writes a file so that readers see either the old contents or the complete new contents, never a part:
/// the bytes go to a temporary file in the same directory (same file system, so rename is atomic), which is
/// flushed to disk and then renamed over the target. On any failure the temporary file is removed and the
/// target is untouched. A killed process leaves at most a hidden ".<name>.tmp-*" file behind.
public enum AtomicFile {
    /// Sequential writer handed to `write(to:_:)`'s body.
    public struct Writer {
        let descriptor: Int32
        let path: String

        /// Writes all of `bytes` (retrying short writes and interrupted calls).
        public func write(_ bytes: UnsafeRawBufferPointer) throws {
            guard var p = bytes.baseAddress else { return }
            var left = bytes.count
            while left > 0 {
                let n = systemWrite(descriptor, p, left)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw AtomicFile.failure(path, "cannot write")
                }
                p += n
                left -= n
            }
        }

        public func write(_ data: Data) throws { try data.withUnsafeBytes { try write($0) } }
        public func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try write($0) } }
    }

    /// Writes `data` to `url` atomically.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { try $0.write(data) }
    }

    /// Runs `body` with a writer on a temporary file, then atomically replaces `url` with it. If `body` throws,
    /// the temporary file is removed and the error rethrown.
    public static func write(to url: URL, _ body: (Writer) throws -> Void) throws {
        let temporary = try temporaryFile(for: url, body)
        guard rename(temporary, url.path) == 0 else {
            let error = failure(url.path, "cannot replace")
            unlink(temporary)
            throw error
        }
        syncDirectory(of: url)
    }

    /// Writes several files that belong together (a report's files): each to a temporary file first, and only
    /// when all are written are they renamed into place, so a full disk leaves none of them rather than some.
    public static func write(_ files: [(data: Data, url: URL)]) throws {
        var temporaries: [String] = []
        do {
            for file in files { temporaries.append(try temporaryFile(for: file.url) { try $0.write(file.data) }) }
            for (temporary, file) in zip(temporaries, files) {
                guard rename(temporary, file.url.path) == 0 else { throw failure(file.url.path, "cannot replace") }
            }
        } catch {
            for temporary in temporaries { unlink(temporary) }   // those already renamed are gone: no-ops
            throw error
        }
        for file in files { syncDirectory(of: file.url) }
    }

    /// A temporary file next to `url` holding what `body` wrote, flushed to disk; removed if anything fails.
    private static func temporaryFile(for url: URL, _ body: (Writer) throws -> Void) throws -> String {
        let target = url.path
        let directory = url.deletingLastPathComponent().path
        var random = SystemRandomNumberGenerator()
        let temporary = url.deletingLastPathComponent()
            .appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(String(random.next(), radix: 36))").path
        // 0o666 before the umask, as for any file the user creates.
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666)
        guard fd >= 0 else { throw failure(target, "cannot create a temporary file in \(directory)") }
        var closed = false
        do {
            try body(Writer(descriptor: fd, path: target))
            guard fsync(fd) == 0 else { throw failure(target, "cannot flush to disk") }
            closed = true
            guard close(fd) == 0 else { throw failure(target, "cannot close") }
        } catch {
            if !closed { close(fd) }
            unlink(temporary)
            throw error
        }
        return temporary
    }

    /// Makes a rename in `url`'s folder durable; failing here cannot undo it, so it is best effort.
    private static func syncDirectory(of url: URL) {
        let directory = url.deletingLastPathComponent().path
        let dfd = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 {
            _ = fsync(dfd)
            close(dfd)
        }
    }

    /// Whether a file name is one of the temporary files above (left behind only by a killed write).
    public static func isTemporary(_ name: String) -> Bool { name.hasPrefix(".") && name.contains(".tmp-") }

    static func failure(_ path: String, _ what: String) -> EngineError {
        EngineError.invalidFile(path, "\(what): \(String(cString: strerror(errno)))")
    }
}
