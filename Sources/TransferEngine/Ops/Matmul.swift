// Matrix products on the tape, all through cblas_sgemm; transposes are BLAS flags, never copies.

extension Tensor {
    /// op(A) x op(B) for 2-D tensors, or batched over a shared leading dimension for 3-D tensors.
    /// A 2-D `other` with a 3-D `self` multiplies every batch row block by the same matrix (a plain GEMM).
    public func matmul(_ other: Tensor, transposeSelf: Bool = false, transposeOther: Bool = false) -> Tensor {
        let a = self, b = other
        if a.rank >= 2 && b.rank == 2 && !transposeSelf {
            // Fold the leading dimensions of A into its rows.
            let k = a.dim(-1), m = a.shape.dropLast().reduce(1, *)
            let (kb, n) = transposeOther ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
            require(k == kb, "matmul: shapes \(a.shape) and \(b.shape)\(transposeOther ? "ᵀ" : "") clash (inner dimensions \(k) vs \(kb))")
            var out = Tensor(uninitializedShape: Array(a.shape.dropLast()) + [n])
            BLAS.sgemm(transB: transposeOther, m: m, n: n, k: k, a: a.pointer, lda: k,
                       b: b.pointer, ldb: b.shape[1], c: out.mutablePointer, ldc: n)
            return out
        }
        if a.rank == 2 && b.rank == 2 {
            let (m, k) = transposeSelf ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
            let (kb, n) = transposeOther ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
            require(k == kb, "matmul: shapes \(a.shape)\(transposeSelf ? "ᵀ" : "") and \(b.shape)\(transposeOther ? "ᵀ" : "") clash (inner dimensions \(k) vs \(kb))")
            var out = Tensor(uninitializedShape: [m, n])
            BLAS.sgemm(transA: transposeSelf, transB: transposeOther, m: m, n: n, k: k, a: a.pointer, lda: a.shape[1],
                       b: b.pointer, ldb: b.shape[1], c: out.mutablePointer, ldc: n)
            return out
        }
        require(a.rank == 3 && b.rank == 3 && a.shape[0] == b.shape[0],
                     "matmul: shapes \(a.shape) and \(b.shape) clash (need 2-D x 2-D, N-D x 2-D or batched 3-D x 3-D)")
        let batch = a.shape[0]
        let (m, k) = transposeSelf ? (a.shape[2], a.shape[1]) : (a.shape[1], a.shape[2])
        let (kb, n) = transposeOther ? (b.shape[2], b.shape[1]) : (b.shape[1], b.shape[2])
        require(k == kb, "batched matmul: shapes \(a.shape) and \(b.shape) clash (inner dimensions \(k) vs \(kb))")
        var out = Tensor(uninitializedShape: [batch, m, n])
        let pa = a.pointer, pb = b.pointer, po = out.mutablePointer
        let sa = a.shape[1] * a.shape[2], sb = b.shape[1] * b.shape[2]
        for i in 0..<batch {
            BLAS.sgemm(transA: transposeSelf, transB: transposeOther, m: m, n: n, k: k, a: pa + i * sa, lda: a.shape[2],
                       b: pb + i * sb, ldb: b.shape[2], c: po + i * m * n, ldc: n)
        }
        return out
    }
}

extension Variable {
    /// Matrix product (see `Tensor.matmul` for the accepted shapes).
    public func matmul(_ other: Variable, transposeSelf: Bool = false, transposeOther: Bool = false) -> Variable {
        let a = self, b = other
        let y = a.value.matmul(b.value, transposeSelf: transposeSelf, transposeOther: transposeOther)
        return Autograd.result(y, [a, b], record: Autograd.needsGrad(a, b)) { g in
            if a.requiresGrad {
                // dA = g·op(B)ᵀ, or its transpose when A was used transposed.
                let da = transposeSelf
                    ? b.value.matmul(g, transposeSelf: transposeOther, transposeOther: true)
                    : g.matmul(b.value, transposeOther: !transposeOther)
                a.accumulate(da)
            }
            if b.requiresGrad {
                let db: Tensor
                if a.rank > 2 && b.rank == 2 {
                    let k = a.value.dim(-1), n = g.dim(-1)
                    let a2 = a.value.reshaped([-1, k]), g2 = g.reshaped([-1, n])
                    db = transposeOther ? g2.matmul(a2, transposeSelf: true) : a2.matmul(g2, transposeSelf: true)
                } else {
                    db = transposeOther
                        ? g.matmul(a.value, transposeSelf: true, transposeOther: transposeSelf)
                        : a.value.matmul(g, transposeSelf: !transposeSelf)
                }
                b.accumulate(db)
            }
        }
    }

    /// x·Wᵀ + b with W stored [out, in] (PyTorch's layout, as in the pretrained files).
    public func linear(weight: Variable, bias: Variable?) -> Variable {
        let y = matmul(weight, transposeOther: true)
        guard let bias else { return y }
        return y + bias
    }
}
