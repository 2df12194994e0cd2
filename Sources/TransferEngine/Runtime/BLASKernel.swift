import CBLAS
import Foundation

/// Choosing OpenBLAS's compute kernel.
///
/// Debian's OpenBLAS 0.3.21 does not recognise recent AVX-512 CPUs and falls back to its "Prescott" (SSE3)
/// kernels, about 7x slower than the CPU allows. The core type can only be forced through the
/// `OPENBLAS_CORETYPE` environment variable, read when the library loads, so a process that finds a weaker
/// kernel than its CPU supports re-executes itself once with the variable set (`Runtime.prepare`).
/// A user-set OPENBLAS_CORETYPE always wins; a kernel the CPU lacks is never chosen.
///
/// On every AVX-512 CPU the engine runs SkylakeX. OpenBLAS picks Cooperlake on CPUs with bfloat16 (AMD Zen 4,
/// Intel Cooper Lake): SkylakeX's kernels plus bfloat16 routines the engine never calls, at the same speed here,
/// but its single-precision products round differently, so a head trained with the same seed came out different
/// on a Zen 4 host than on a Xeon; with SkylakeX on both, the development shifts' vision runs are the same to the
/// digit on both (README, "Reproducible").
public enum BLASKernel {
    /// The instruction-set features that decide which kernels can run.
    public struct CPUFeatures: Equatable, Sendable {
        public var avx = false, avx2 = false, fma = false
        public var avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false, avx512cd = false

        public init(flags: Set<String>) {
            avx = flags.contains("avx"); avx2 = flags.contains("avx2"); fma = flags.contains("fma")
            avx512f = flags.contains("avx512f"); avx512bw = flags.contains("avx512bw")
            avx512vl = flags.contains("avx512vl"); avx512dq = flags.contains("avx512dq")
            avx512cd = flags.contains("avx512cd")
        }

        /// Flags of this machine from /proc/cpuinfo (Linux lists only what the kernel has enabled).
        public static func current() -> CPUFeatures {
            guard let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
                  let line = text.split(separator: "\n").first(where: { $0.hasPrefix("flags") }),
                  let colon = line.firstIndex(of: ":") else { return CPUFeatures(flags: []) }
            return CPUFeatures(flags: Set(line[line.index(after: colon)...].split(separator: " ").map(String.init)))
        }
    }

    /// Capability tier of an OpenBLAS x86-64 core name: 3 AVX-512, 2 AVX2, 1 AVX, 0 older or unknown.
    public static func tier(ofCore name: String) -> Int {
        switch name.lowercased() {
        case "skylakex", "cooperlake", "sapphirerapids": return 3
        case "haswell", "zen": return 2
        case "sandybridge", "bulldozer", "piledriver", "steamroller", "excavator": return 1
        default: return 0
        }
    }

    /// The best core type this CPU can run, or nil when nothing beats OpenBLAS's own choice.
    public static func bestCore(for cpu: CPUFeatures) -> String? {
        if cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512dq && cpu.avx512cd { return "SkylakeX" }
        if cpu.avx2 && cpu.fma { return "Haswell" }
        if cpu.avx { return "Sandybridge" }
        return nil
    }

    public enum Decision: Equatable, Sendable {
        /// The loaded kernel is right (or the user chose it).
        case keep
        /// Re-execute with OPENBLAS_CORETYPE set to this core (nil: unset it).
        case reexecute(coreType: String?)
    }

    /// What to do, given the environment, the kernel OpenBLAS loaded and the CPU's features.
    /// `alreadyReexecuted` (our marker variable is set) stops any loop.
    public static func decide(userCoreType: String?, loadedCore: String, cpu: CPUFeatures,
                              alreadyReexecuted: Bool) -> Decision {
        if alreadyReexecuted { return .keep }
        if let user = userCoreType, !user.isEmpty { return .keep }
        let best = bestCore(for: cpu)
        if userCoreType != nil {
            // Set but empty: OpenBLAS 0.3.21 then picks Cooperlake whatever the CPU. Never run that blind.
            return .reexecute(coreType: best)
        }
        guard let best else { return .keep }
        if tier(ofCore: loadedCore) < tier(ofCore: best) { return .reexecute(coreType: best) }
        if best == "SkylakeX", loadedCore.lowercased() == "cooperlake" { return .reexecute(coreType: best) }
        return .keep
    }

    /// The kernel OpenBLAS is running in this process.
    public static var loadedCore: String { String(cString: openblas_get_corename()) }

    /// OpenBLAS's build configuration string (version, options).
    public static var configuration: String {
        String(cString: openblas_get_config()).trimmingCharacters(in: .whitespaces)
    }
}
