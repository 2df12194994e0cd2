import Foundation

/// Thread count for our own loops and for OpenBLAS (set through `Runtime.setThreads`).
public enum Parallel {
    /// Number of worker threads used by `forEach`. Defaults to every core.
    public internal(set) static var threadCount = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// Runs `body` over `0..<count` split into contiguous chunks, one per thread, when the work is large
    /// enough (`count >= 2 * minimumChunk`); otherwise inline.
    public static func forEach(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threadCount, max(1, count / max(1, minimumChunk)))
        if chunks <= 1 {
            body(0..<count)
            return
        }
        DispatchQueue.concurrentPerform(iterations: chunks) { c in
            let lo = count * c / chunks, hi = count * (c + 1) / chunks
            if lo < hi { body(lo..<hi) }
        }
    }
}
