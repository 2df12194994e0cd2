import Foundation
import XCTest
@testable import TransferEngine

/// The engine's thread pool (`Parallel.run` on CKernels' pool.c): every task runs exactly once, on at most the
/// thread count's threads, through many back-to-back regions (a lost wake-up would hang: each test runs its work
/// on another thread and fails after a deadline instead), nested regions and several callers at once.
final class ParallelTests: XCTestCase {
    var savedThreads = 0

    override func setUp() { savedThreads = Runtime.threads }
    override func tearDown() { Runtime.setThreads(savedThreads) }

    /// Runs `body` on a thread of its own and fails if it has not returned within `seconds`.
    func finishes(within seconds: Double, _ what: String, _ body: @escaping @Sendable () -> Void) {
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread { body(); done.signal() }
        XCTAssertEqual(done.wait(timeout: .now() + seconds), .success, "\(what) did not finish in \(seconds) s")
    }

    /// Counts of how often each index ran, and the most threads seen inside one region at once.
    final class Tally: @unchecked Sendable {
        let lock = NSLock()
        var runs: [Int]
        var inside = 0, most = 0
        init(_ n: Int) { runs = Array(repeating: 0, count: n) }
        func enter(_ i: Int) { lock.lock(); runs[i] += 1; inside += 1; most = max(most, inside); lock.unlock() }
        func leave() { lock.lock(); inside -= 1; lock.unlock() }
        func add(_ i: Int) { lock.lock(); runs[i] += 1; lock.unlock() }
    }

    func testEveryTaskRunsOnceOnAtMostTheThreadCount() {
        finishes(within: 60, "regions of 2 ms tasks") { Self.everyTaskRunsOnce() }
    }

    static func everyTaskRunsOnce() {
        for threads in [1, 2, 3, 5] {
            Runtime.setThreads(threads)
            for count in [0, 1, 2, 3, 7] {
                let tally = Tally(count)
                Parallel.run(count) { i in
                    tally.enter(i)
                    usleep(2000)  // long enough for every thread to arrive while the others still work
                    tally.leave()
                }
                XCTAssertEqual(tally.runs, Array(repeating: 1, count: count), "\(count) tasks on \(threads) threads")
                XCTAssertLessThanOrEqual(tally.most, threads, "\(count) tasks on \(threads) threads")
            }
        }
        // Fewer threads after more: the workers started for 5 must not join a region of 2.
        Runtime.setThreads(2)
        let tally = Tally(6)
        Parallel.run(6) { i in tally.enter(i); usleep(2000); tally.leave() }
        XCTAssertLessThanOrEqual(tally.most, 2)
    }

    func testTwoThreadsWork() {
        Runtime.setThreads(2)
        let tally = Tally(2)
        // Each task waits for the other to start: they can only finish if two threads run them at once.
        let started = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        finishes(within: 20, "two tasks that wait for each other") {
            Parallel.run(2) { i in
                tally.enter(i)
                started[i].signal()
                started[1 - i].wait()
                tally.leave()
            }
        }
        XCTAssertEqual(tally.most, 2)
    }

    func testManyShortRegionsInARow() {
        Runtime.setThreads(2)
        finishes(within: 60, "200000 short regions") {
            var sums = [Int](repeating: 0, count: 2)
            var total = 0
            for r in 0..<200_000 {
                sums.withUnsafeMutableBufferPointer { s in
                    let s = UncheckedSendable(s)
                    Parallel.forEach(2) { range in for i in range { s.value[i] = r + i } }
                }
                total += sums[0] + sums[1]
                // Now and then a pause longer than the workers' polling, so they also go to sleep and are woken.
                if r % 20_000 == 0 { usleep(2000) }
            }
            XCTAssertEqual(total, (0..<200_000).reduce(0) { $0 + 2 * $1 + 1 })
        }
    }

    func testNestedAndConcurrentRegionsRunInline() {
        Runtime.setThreads(2)
        finishes(within: 60, "nested and concurrent regions") {
            // Four callers at once, each with nested regions: one of them owns the pool, the others run inline.
            let results = Tally(4 * 3 * 3)
            DispatchQueue.concurrentPerform(iterations: 4) { caller in
                for _ in 0..<200 {
                    Parallel.run(3) { outer in
                        Parallel.run(3) { inner in results.add((caller * 3 + outer) * 3 + inner) }
                    }
                }
            }
            XCTAssertEqual(results.runs, Array(repeating: 200, count: 36))
        }
    }
}

/// A value handed to tasks that write disjoint parts of it.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
