import XCTest
@testable import TransferEngine

final class KernelSelectionTests: XCTestCase {
    let avx512 = BLASKernel.CPUFeatures(flags: ["avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"])
    let avx2 = BLASKernel.CPUFeatures(flags: ["avx", "avx2", "fma"])
    let sse = BLASKernel.CPUFeatures(flags: ["sse3", "ssse3"])

    func testBestCoreNeverExceedsTheCPU() {
        XCTAssertEqual(BLASKernel.bestCore(for: avx512), "SkylakeX")
        XCTAssertEqual(BLASKernel.bestCore(for: avx2), "Haswell")
        XCTAssertNil(BLASKernel.bestCore(for: sse))
        // AVX-512F alone (e.g. Knights Landing) is not SkylakeX's instruction set.
        XCTAssertEqual(BLASKernel.bestCore(for: .init(flags: ["avx", "avx2", "fma", "avx512f"])), "Haswell")
    }

    func testPrescottOnAnAVX512MachineIsFixed() {
        XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: "Prescott", cpu: avx512, alreadyReexecuted: false),
                       .reexecute(coreType: "SkylakeX"))
        XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: "Prescott", cpu: avx2, alreadyReexecuted: false),
                       .reexecute(coreType: "Haswell"))
    }

    func testRightKernelIsKept() {
        for core in ["SkylakeX", "SapphireRapids"] {
            XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: core, cpu: avx512, alreadyReexecuted: false), .keep)
        }
        XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: "Zen", cpu: avx2, alreadyReexecuted: false), .keep)
        XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: "Prescott", cpu: sse, alreadyReexecuted: false), .keep)
    }

    func testCooperlakeBecomesSkylakeXSoRunsMatchAcrossAVX512Hosts() {
        XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: "Cooperlake", cpu: avx512, alreadyReexecuted: false),
                       .reexecute(coreType: "SkylakeX"))
        XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: "COOPERLAKE", cpu: avx512, alreadyReexecuted: false),
                       .reexecute(coreType: "SkylakeX"))
        // A user's choice, and the re-executed process, stay as they are.
        XCTAssertEqual(BLASKernel.decide(userCoreType: "Cooperlake", loadedCore: "Cooperlake", cpu: avx512, alreadyReexecuted: false), .keep)
        XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: "Cooperlake", cpu: avx512, alreadyReexecuted: true), .keep)
    }

    func testUserChoiceWinsAndNoLoop() {
        XCTAssertEqual(BLASKernel.decide(userCoreType: "Prescott", loadedCore: "Prescott", cpu: avx512, alreadyReexecuted: false), .keep)
        XCTAssertEqual(BLASKernel.decide(userCoreType: nil, loadedCore: "Prescott", cpu: avx512, alreadyReexecuted: true), .keep)
    }

    func testEmptyVariableIsNotTrustedBlindly() {
        // 0.3.21 treats an empty OPENBLAS_CORETYPE as Cooperlake, which an AVX2-only CPU cannot run.
        XCTAssertEqual(BLASKernel.decide(userCoreType: "", loadedCore: "Cooperlake", cpu: avx2, alreadyReexecuted: false),
                       .reexecute(coreType: "Haswell"))
        XCTAssertEqual(BLASKernel.decide(userCoreType: "", loadedCore: "Cooperlake", cpu: sse, alreadyReexecuted: false),
                       .reexecute(coreType: nil))
    }

    func testThisMachineRunsTheBestKernelItCan() {
        // In the test process nothing re-executed; the decision for it must be consistent with the tiers.
        let cpu = BLASKernel.CPUFeatures.current()
        let loaded = BLASKernel.loadedCore
        XCTAssertFalse(loaded.isEmpty)
        if case let .reexecute(core?) = BLASKernel.decide(userCoreType: nil, loadedCore: loaded, cpu: cpu, alreadyReexecuted: false) {
            XCTAssertGreaterThanOrEqual(BLASKernel.tier(ofCore: core), BLASKernel.tier(ofCore: loaded))
            XCTAssertEqual(core, BLASKernel.bestCore(for: cpu))
        }
    }

    /// The engine's own kernels run the best variant the CPU has, or a lower one named by TL_KERNEL_ISA
    /// (scripts/test runs the kernel tests again with avx2 and sse2): never one the CPU lacks.
    func testEngineKernelsFollowTheCPUAndTLKernelISA() {
        let order = ["sse2", "avx2", "avx512"]
        let cpu = BLASKernel.CPUFeatures.current()
        let best = BLASKernel.bestCore(for: cpu) == "SkylakeX" ? 2 : BLASKernel.bestCore(for: cpu) == "Haswell" ? 1 : 0
        guard let running = order.firstIndex(of: Runtime.engineKernels) else {
            return XCTFail("unknown engine kernels \(Runtime.engineKernels)")
        }
        if let requested = ProcessInfo.processInfo.environment["TL_KERNEL_ISA"], let cap = order.firstIndex(of: requested) {
            XCTAssertEqual(running, min(cap, best), "TL_KERNEL_ISA=\(requested)")
        } else {
            XCTAssertEqual(running, best)
        }
    }
}
