import CBLAS
import CKernels
import Foundation

/// Process-wide setup: the OpenBLAS kernel and the thread count.
public enum Runtime {
    /// Marker that this process is the re-executed one (prevents a loop).
    static let reexecMarker = "TL_OPENBLAS_REEXEC"

    /// Call first thing in `main`. If OpenBLAS loaded a weaker kernel than this CPU supports (and the user did
    /// not choose one), re-executes the program with OPENBLAS_CORETYPE set; otherwise returns.
    public static func prepare() {
        let env = ProcessInfo.processInfo.environment
        let decision = BLASKernel.decide(userCoreType: env["OPENBLAS_CORETYPE"], loadedCore: BLASKernel.loadedCore,
                                         cpu: .current(), alreadyReexecuted: env[reexecMarker] != nil)
        guard case let .reexecute(core) = decision else { return }
        if let core { setenv("OPENBLAS_CORETYPE", core, 1) } else { unsetenv("OPENBLAS_CORETYPE") }
        setenv(reexecMarker, "1", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
        // exec failed (e.g. no /proc): carry on with the slower kernel, results are the same.
        unsetenv(reexecMarker)
    }

    /// Threads for OpenBLAS and our own loops (default: every core).
    public static func setThreads(_ count: Int?) {
        let n = max(1, count ?? ProcessInfo.processInfo.activeProcessorCount)
        Parallel.threadCount = n
        openblas_set_num_threads(Int32(n))
    }

    public static var threads: Int { Parallel.threadCount }

    /// The engine's own kernels' instruction-set variant: "avx512", "avx2" or "sse2" (the best this CPU runs,
    /// lowered to $TL_KERNEL_ISA when that names a lower one: tests run every variant on one machine).
    public static var engineKernels: String { String(cString: ck_isa()) }

    /// One line for `--version` / `info`: engine version, OpenBLAS kernel, the engine's kernels and threads.
    public static var summary: String {
        "TransferEngine \(TransferEngineVersion.string), OpenBLAS kernel \(BLASKernel.loadedCore)"
            + (ProcessInfo.processInfo.environment["OPENBLAS_CORETYPE"].map { " (OPENBLAS_CORETYPE=\($0))" } ?? "")
            + ", engine kernels \(engineKernels), \(threads) threads"
    }
}

public enum TransferEngineVersion {
    public static let string = "0.1.0"
}
