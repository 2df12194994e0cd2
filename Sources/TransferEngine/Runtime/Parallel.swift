import CKernels
import Foundation

/// Thread count for our own loops and for OpenBLAS (set through `Runtime.setThreads`).
public enum Parallel {
    /// Number of worker threads used by `forEach`. Defaults to every core.
    public internal(set) static var threadCount = max(1, ProcessInfo.processInfo.activeProcessorCount)

    /// How many partial sums a parallel reduction (a convolution's weight gradient, column sums for biases and
    /// normalisation) splits its rows into, whatever the thread count. The order of a float sum decides its last
    /// bits: a split that followed `--threads` made results depend on it (the speech demo's from-scratch baseline
    /// scored 0.43 on 2 threads and 0.44 on 1) and a run resumed with another `--threads` did not end as the
    /// uninterrupted run. Fixed at 2, the split the README's figures were measured with (2-core machines); on more
    /// cores these sums use two of them, everything else all.
    public static let reductionParts = 2

    /// Runs `body` over `0..<count` split into contiguous chunks, one per thread, when the work is large
    /// enough (`count >= 2 * minimumChunk`); otherwise inline.
    public static func forEach(_ count: Int, minimumChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        guard count > 0 else { return }
        let chunks = min(threadCount, max(1, count / max(1, minimumChunk)))
        if chunks <= 1 {
            body(0..<count)
            return
        }
        run(chunks) { c in
            let lo = count * c / chunks, hi = count * (c + 1) / chunks
            if lo < hi { body(lo..<hi) }
        }
    }

    /// Runs `task(i)` for every i in `0..<count` on up to `threadCount` threads (the calling one and the workers
    /// of `ck_pool_run`, which poll for the next region for a moment before they sleep: libdispatch's
    /// `concurrentPerform` took ~30 us to wake a worker, as long as a small region's work). Inline when called
    /// from inside a task or while another thread's region runs.
    static func run(_ count: Int, _ task: (Int) -> Void) {
        withoutActuallyEscaping(task) { task in
            var context = task
            withUnsafeMutablePointer(to: &context) { pointer in
                ck_pool_run(count, Int32(clamping: threadCount), { ctx, index in
                    ctx!.assumingMemoryBound(to: ((Int) -> Void).self).pointee(index)
                }, pointer)
            }
        }
    }
}
