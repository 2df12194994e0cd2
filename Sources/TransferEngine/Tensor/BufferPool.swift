import Foundation

/// Recycles tensor buffers by exact element count.
///
/// Training and inference repeat the same shapes every batch, so a freed activation buffer is almost always
/// taken again a moment later. Keeping it avoids the mmap + page-fault cost that glibc pays for every fresh
/// allocation of more than a few hundred KiB. The pool holds at most `limitBytes`; beyond that buffers are freed.
final class BufferPool: @unchecked Sendable {
    static let shared = BufferPool()

    private var free: [Int: [UnsafeMutablePointer<Float>]] = [:]
    private var heldBytes = 0
    private let lock = NSLock()
    /// Small buffers are cheap for malloc; pooling them would only add locking.
    private let minimumCount = 4096
    var limitBytes = 1 << 31

    func take(_ count: Int) -> UnsafeMutablePointer<Float> {
        if count >= minimumCount {
            lock.lock()
            if var list = free[count], let p = list.popLast() {
                free[count] = list
                heldBytes -= count * 4
                lock.unlock()
                return p
            }
            lock.unlock()
        }
        var raw: UnsafeMutableRawPointer?
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        guard posix_memalign(&raw, 64, bytes) == 0, let raw else {
            fatalError("out of memory allocating \(bytes) bytes for a tensor")
        }
        return raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    func give(_ pointer: UnsafeMutablePointer<Float>, count: Int) {
        if count >= minimumCount {
            lock.lock()
            if heldBytes + count * 4 <= limitBytes {
                free[count, default: []].append(pointer)
                heldBytes += count * 4
                lock.unlock()
                return
            }
            lock.unlock()
        }
        Foundation.free(pointer)
    }

    /// Returns every pooled buffer to the system.
    func drain() {
        lock.lock()
        for (_, list) in free { for p in list { Foundation.free(p) } }
        free = [:]
        heldBytes = 0
        lock.unlock()
    }
}
