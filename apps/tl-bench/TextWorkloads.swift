import TransferEngine

/// The text domain's workloads (added with its backbone).
func textWorkloads() -> [Workload] { [] }
