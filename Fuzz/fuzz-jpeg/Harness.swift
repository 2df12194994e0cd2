// libFuzzer harness (built only with TL_FUZZ set; see scripts/fuzz). libFuzzer provides main; this file is
// compiled as a library (not main.swift), so it has no top-level code.
import FuzzChecks

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ bytes: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    FuzzChecks.fuzz(FuzzChecks.jpeg, bytes, size)
    return 0
}
