import CBLAS
import CKernels

/// Thin wrapper over `cblas_sgemm` (row-major). Every matrix product and convolution in the engine ends here.
enum BLAS {
    /// C[m,n] = alpha * op(A)[m,k] * op(B)[k,n] + beta * C. `lda`/`ldb`/`ldc` are row strides as stored.
    @inline(__always)
    static func sgemm(transA: Bool = false, transB: Bool = false, m: Int, n: Int, k: Int,
                      alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                      b: UnsafePointer<Float>, ldb: Int,
                      beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            if beta == 0 { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            else if beta != 1 { for i in 0..<m { for j in 0..<n { c[i * ldc + j] *= beta } } }
            return
        }
        // OpenBLAS 0.3.21 splits a product over its own threads above m·n·k = 4 · 65536; our pool's workers, if
        // still polling for the next region, would take their cores from it.
        if m * n * k > 262_144 && Parallel.threadCount > 1 { ck_pool_park() }
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Runs `body` over `0..<count` in one contiguous range per thread (`Parallel.forEach`), with OpenBLAS
    /// single-threaded meanwhile: many small products, each on the thread that needs it, instead of each product
    /// split over OpenBLAS's own threads (which would oversubscribe the cores and spin between calls).
    static func perThread(_ count: Int, _ body: (Range<Int>) -> Void) {
        guard count > 1 && Parallel.threadCount > 1 else { return body(0..<count) }
        singleThreaded { Parallel.forEach(count, body) }
    }

    /// Runs `body` with OpenBLAS single-threaded, then restores the engine's thread count.
    static func singleThreaded(_ body: () -> Void) {
        openblas_set_num_threads(1)
        defer { openblas_set_num_threads(Int32(Parallel.threadCount)) }
        body()
    }
}
