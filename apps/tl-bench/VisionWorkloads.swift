import TransferEngine

/// The vision domain's workloads (added with its backbone).
func visionWorkloads() -> [Workload] { [] }
