import TransferEngine

/// The speech domain's workloads (added with its backbone).
func speechWorkloads() -> [Workload] { [] }
