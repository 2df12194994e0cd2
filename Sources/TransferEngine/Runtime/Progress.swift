import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Progress of a long loop, reported on stderr so that stdout keeps only results.
///
/// On a terminal: one line redrawn in place (`\r`) with a bar, done/total, rate and ETA, at most ten times a
/// second. Otherwise (a log file, a pipe, CI): a plain line at most every `plainInterval` seconds and one at
/// the end. Nothing at all when quiet. Safe to advance from several threads.
/// Named ProgressReporter, not Progress, because Foundation.Progress would make the name ambiguous in every
/// file that imports both modules.
public final class ProgressReporter: @unchecked Sendable {
    public enum Mode: Sendable {
        /// Bar on a terminal, plain lines otherwise, silent when `ProgressReporter.quiet` is set.
        case auto
        /// Never prints.
        case quiet
    }

    /// Where reports go; injectable for tests.
    public struct Output: Sendable {
        public var isTerminal: Bool
        public var write: @Sendable (String) -> Void
        public init(isTerminal: Bool, write: @escaping @Sendable (String) -> Void) {
            self.isTerminal = isTerminal
            self.write = write
        }

        public static var standardError: Output {
            Output(isTerminal: isatty(2) == 1) { text in
                var bytes = Array(text.utf8)
                _ = bytes.withUnsafeMutableBytes { fwrite($0.baseAddress, 1, $0.count, stderr) }
                fflush(stderr)
            }
        }
    }

    /// Process-wide silence (the `--quiet` flag): set once at startup, before any progress is created.
    public nonisolated(unsafe) static var quiet = false
    /// Where new progress reports and notes go (tests replace it).
    public nonisolated(unsafe) static var defaultOutput = Output.standardError
    /// Seconds between plain lines when stderr is not a terminal.
    public static let plainInterval = 5.0

    /// Whether a bar is currently drawn on the terminal line, so a note must clear it first.
    nonisolated(unsafe) static var barShowing = false
    static let lock = NSLock()

    public let label: String
    public let total: Int?
    public let unit: String
    let output: Output
    let silent: Bool
    let clock: @Sendable () -> Double
    let start: Double
    var done = 0
    var lastReport: Double
    var finished = false
    /// Shown after the counts (e.g. the last epoch's loss and validation accuracy).
    var detail: String?

    /// - Parameters:
    ///   - total: number of items, or nil when unknown (then no bar and no ETA).
    ///   - unit: plural name of the items ("images", "batches").
    ///   - clock: seconds from any fixed origin (tests inject a fake one).
    public init(label: String, total: Int?, unit: String = "items", mode: Mode = .auto, output: Output? = nil,
                clock: @escaping @Sendable () -> Double = { ProgressReporter.monotonicSeconds() }) {
        self.label = label
        self.total = total
        self.unit = unit
        self.output = output ?? ProgressReporter.defaultOutput
        self.silent = mode == .quiet || ProgressReporter.quiet
        self.clock = clock
        start = clock()
        lastReport = start
    }

    /// Prints a plain status line (clearing a bar being drawn); nothing when quiet.
    public static func note(_ line: String, output: Output? = nil) {
        guard !quiet else { return }
        let out = output ?? defaultOutput
        lock.lock()
        defer { lock.unlock() }
        out.write((barShowing && out.isTerminal ? "\r\u{1B}[K" : "") + line.printable + "\n")
        barShowing = false
    }

    /// Records `n` more items done and reports if it is time to.
    public func advance(by n: Int = 1, detail: String? = nil) {
        ProgressReporter.lock.lock()
        defer { ProgressReporter.lock.unlock() }
        guard !finished else { return }
        done += n
        if let detail { self.detail = detail }
        guard !silent else { return }
        let now = clock()
        if output.isTerminal {
            if now - lastReport >= 0.1 || done == total {
                lastReport = now
                output.write("\r" + barLine(now: now) + "\u{1B}[K")
                ProgressReporter.barShowing = true
            }
        } else if now - lastReport >= ProgressReporter.plainInterval {
            lastReport = now
            output.write(plainLine(now: now) + "\n")
        }
    }

    /// Reports the final count, rate and elapsed time; later calls (and advances) do nothing.
    public func finish() {
        ProgressReporter.lock.lock()
        defer { ProgressReporter.lock.unlock() }
        guard !finished else { return }
        finished = true
        guard !silent else { return }
        let now = clock()
        let line = finalLine(now: now)
        if output.isTerminal {
            output.write("\r" + line + "\u{1B}[K\n")
            ProgressReporter.barShowing = false
        } else {
            output.write(line + "\n")
        }
    }

    // MARK: Formatting

    /// "extract [########------------]  120/1000 images  45.2 images/s  ETA 19s"
    func barLine(now: Double) -> String {
        var parts = [label]
        if let total, total > 0 {
            let width = 24
            let filled = min(width, done * width / total)
            parts.append("[" + String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled) + "]")
            parts.append("\(done)/\(total) \(units(total))")
        } else {
            parts.append("\(done) \(units(done))")
        }
        let elapsed = now - start
        if elapsed > 0 && done > 0 {
            parts.append(ProgressReporter.rate(Double(done) / elapsed, unit: unit))
            if let total, total > done { parts.append("ETA " + ProgressReporter.duration(Double(total - done) * elapsed / Double(done))) }
        }
        if let detail { parts.append(detail) }
        return parts.joined(separator: "  ")
    }

    /// "extract: 120/1000 images (12%), 45.2 images/s, ETA 19s"
    func plainLine(now: Double) -> String {
        var line = "\(label): "
        if let total, total > 0 {
            line += "\(done)/\(total) \(units(total)) (\(done * 100 / total)%)"
        } else {
            line += "\(done) \(units(done))"
        }
        let elapsed = now - start
        if elapsed > 0 && done > 0 {
            line += ", " + ProgressReporter.rate(Double(done) / elapsed, unit: unit)
            if let total, total > done { line += ", ETA " + ProgressReporter.duration(Double(total - done) * elapsed / Double(done)) }
        }
        if let detail { line += "; " + detail }
        return line
    }

    /// "extract: 1000 images in 22s (45.5 images/s)"
    func finalLine(now: Double) -> String {
        let elapsed = now - start
        var line = "\(label): \(done) \(units(done)) in \(ProgressReporter.duration(elapsed))"
        if elapsed > 0 && done > 0 { line += " (" + ProgressReporter.rate(Double(done) / elapsed, unit: unit) + ")" }
        if let detail { line += "; " + detail }
        return line
    }

    static func rate(_ perSecond: Double, unit: String) -> String {
        if perSecond >= 100 { return String(format: "%.0f", perSecond) + " \(unit)/s" }
        if perSecond >= 1 { return String(format: "%.1f", perSecond) + " \(unit)/s" }
        return String(format: "%.1f", 1 / perSecond) + " s/" + singular(unit)
    }

    /// The unit for a count: "1 sample", "2 samples".
    func units(_ count: Int) -> String { count == 1 ? Self.singular(unit) : unit }

    static func singular(_ unit: String) -> String {
        unit.hasSuffix("es") && unit.count > 3 && ["ch", "sh", "ss", "x"].contains(where: { unit.dropLast(2).hasSuffix($0) })
            ? String(unit.dropLast(2)) : unit.hasSuffix("s") && unit.count > 1 ? String(unit.dropLast()) : unit
    }

    /// "0.4s", "19s", "3m05s", "1h02m".
    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "?" }
        if seconds < 10 { return String(format: "%.1fs", max(0, seconds)) }
        let s = Int(seconds.rounded())
        if s < 60 { return "\(s)s" }
        if s < 3600 { return String(format: "%dm%02ds", s / 60, s % 60) }
        return String(format: "%dh%02dm", s / 3600, s % 3600 / 60)
    }

    public static func monotonicSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
    }
}
