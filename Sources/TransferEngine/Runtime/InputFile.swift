import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reading the files a user points the suite at, with limits. Only regular files are read: a FIFO blocks
/// forever and a device such as /dev/zero never ends, so both are refused before any read. A file larger than
/// the reader's limit is refused from its size, before it is read.
public enum InputFile {
    /// The bytes of `url`, at most `limit` of them; `what` names the kind of file in errors ("a PNG file").
    public static func read(_ url: URL, limit: Int, what: String) throws -> Data {
        let fd = try open(url, what: what)
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw failure(url, "cannot be read") }
        let size = Int(info.st_size)
        guard size <= limit else {
            throw EngineError.invalidFile(url.path, "is \(megabytes(size)), over the \(megabytes(limit)) limit for \(what)")
        }
        // Read to the end, not just `size` bytes (the file may grow while read), but never past the limit.
        var data = Data(count: size)
        var filled = 0
        while true {
            if filled == data.count {
                guard data.count < limit + 1 else { break }
                data.count = min(limit + 1, max(data.count * 2, 4096))
            }
            let n = data.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if n < 0 {
                if errno == EINTR { continue }
                throw failure(url, "cannot be read")
            }
            if n == 0 { break }
            filled += n
        }
        guard filled <= limit else {
            throw EngineError.invalidFile(url.path, "grew over the \(megabytes(limit)) limit for \(what) while being read")
        }
        data.count = filled
        return data
    }

    /// Checks that `url` is a readable regular file (for readers that open files themselves, such as libsndfile).
    public static func requireRegular(_ url: URL, what: String) throws {
        close(try open(url, what: what))
    }

    /// Identifies a file by its size and contents (not its name or modification time, which `cp -p`, `rsync -a`
    /// or tar keep when they replace a file): for cache keys. An unreadable file gets a key of its path, so
    /// nothing can be cached for it (its reader reports the error).
    public static func contentKey(_ url: URL) -> String {
        guard let fd = try? open(url, what: "a file") else { return "unreadable|" + url.path }
        defer { close(fd) }
        var hash = FNV64()
        var size = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress!, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return "unreadable|" + url.path }
            if n == 0 { break }
            buffer.withUnsafeBytes { hash.add(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            size += n
        }
        return "\(size)|\(hash.hex)"
    }

    /// Opens a regular file for reading, without blocking on a FIFO.
    private static func open(_ url: URL, what: String) throws -> Int32 {
        let fd = Glibc.open(url.path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        guard fd >= 0 else {
            switch errno {
            case ENOENT: throw EngineError.invalidFile(url.path, "no such file")
            case EISDIR: throw EngineError.invalidFile(url.path, "is a directory, not \(what)")
            default: throw failure(url, "cannot be read")
            }
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else { close(fd); throw failure(url, "cannot be read") }
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            return fd
        case S_IFDIR:
            close(fd)
            throw EngineError.invalidFile(url.path, "is a directory, not \(what)")
        default:
            close(fd)
            throw EngineError.invalidFile(url.path, "is not a regular file (a FIFO, device or socket)")
        }
    }

    private static func failure(_ url: URL, _ what: String) -> EngineError {
        EngineError.invalidFile(url.path, "\(what) (\(String(cString: strerror(errno))))")
    }

    private static func megabytes(_ bytes: Int) -> String {
        bytes >= 1 << 20 ? "\(bytes >> 20) MiB" : "\(bytes) bytes"
    }
}
