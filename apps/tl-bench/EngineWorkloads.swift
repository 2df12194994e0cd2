import CBLAS
import TransferEngine

/// W1: sgemm through the engine's matmul and raw cblas_sgemm.
func engineWorkloads() -> [Workload] {
    var list: [Workload] = []
    for n in [1024, 256] {
        let flops = 2 * Double(n) * Double(n) * Double(n)
        list.append(Workload(id: "W1-\(n)", group: "W1", description: "sgemm \(n)^3, engine matmul", unit: "GFLOPS") {
            var rng = RNG(seed: 1)
            let a = rng.uniformTensor([n, n], -1, 1), b = rng.uniformTensor([n, n], -1, 1)
            let reps = n >= 1024 ? 1 : 16
            return { for _ in 0..<reps { _ = a.matmul(b) }; return flops * Double(reps) / 1e9 }
        })
        list.append(Workload(id: "W1-\(n)-raw", group: "W1", description: "sgemm \(n)^3, raw cblas_sgemm", unit: "GFLOPS") {
            var rng = RNG(seed: 1)
            let a = rng.uniformTensor([n, n], -1, 1).scalars, b = rng.uniformTensor([n, n], -1, 1).scalars
            var c = [Float](repeating: 0, count: n * n)
            let reps = n >= 1024 ? 1 : 16
            return {
                for _ in 0..<reps {
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(n), Int32(n), Int32(n), 1, a, Int32(n),
                                b, Int32(n), 0, &c, Int32(n))
                }
                return flops * Double(reps) / 1e9
            }
        })
    }
    return list
}

