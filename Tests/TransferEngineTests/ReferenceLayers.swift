import Foundation
@testable import TransferEngine

// Layers only the tests use, checked against PyTorch: padded multi-head attention (op and self-attention
// module) and a dropout module (the apps use BERT's packed attention and the heads' own dropout op).

/// Inverted dropout, active only in training mode. The caller passes the run's generator, so one seed drives
/// every mask.
final class Dropout: Module {
    var rate: Float

    init(rate: Float) {
        precondition(rate >= 0 && rate <= 1, "Dropout: rate \(rate) is not in [0, 1]")
        self.rate = rate
        super.init()
    }

    func callAsFunction(_ x: Variable, rng: inout RNG) -> Variable {
        x.dropout(rate: rate, rng: &rng, training: isTraining)
    }
}

/// Multi-head self-attention: out(attention(query(x), key(x), value(x))) with optional key padding.
/// Input [B, T, dimension]; output [B, T, dimension]. Children `query`, `key`, `value`, `out` are Linear layers.
final class MultiHeadSelfAttention: Module {
    let query: Linear
    let key: Linear
    let value: Linear
    let out: Linear
    let heads: Int

    init(dimension: Int, heads: Int, rng: inout RNG) {
        precondition(heads > 0 && dimension % heads == 0, "MultiHeadSelfAttention: \(dimension) does not split into \(heads) heads")
        self.heads = heads
        query = Linear(inputs: dimension, outputs: dimension, rng: &rng)
        key = Linear(inputs: dimension, outputs: dimension, rng: &rng)
        value = Linear(inputs: dimension, outputs: dimension, rng: &rng)
        out = Linear(inputs: dimension, outputs: dimension, rng: &rng)
        super.init()
        child("query", query)
        child("key", key)
        child("value", value)
        child("out", out)
    }

    /// `validKeys`: optional [B, T] flags, 1 = token, 0 = padding (BERT's attention_mask).
    func callAsFunction(_ x: Variable, validKeys: Tensor? = nil) -> Variable {
        let a = Variable.scaledDotProductAttention(query: query(x), key: key(x), value: value(x), heads: heads,
                                                   validKeys: validKeys)
        return out(a)
    }
}

extension Variable {
    /// Key-padding score added before the softmax (BERT's "-inf-like" additive mask).
    static let maskedScore: Float = -1e9

    /// softmax(Q Kᵀ / √D + mask) V for every (batch, head), heads concatenated along the last axis.
    ///
    /// - query: [B, Tq, H*D]; key, value: [B, Tk, H*D] (self-attention: Tq == Tk); `heads` = H.
    /// - validKeys: optional [B, Tk] flags, 1 = attend, 0 = padding (BERT's attention_mask); padded keys get
    ///   `maskedScore` added, so they receive no weight unless every key of a row is padded.
    /// - Returns: [B, Tq, H*D].
    static func scaledDotProductAttention(query: Variable, key: Variable, value: Variable, heads: Int,
                                          validKeys: Tensor? = nil) -> Variable {
        let q = query, k = key, v = value
        precondition(q.rank == 3 && k.rank == 3 && v.rank == 3 && k.shape == v.shape
                     && q.shape[0] == k.shape[0] && q.shape[2] == k.shape[2],
                     "attention: shapes \(q.shape), \(k.shape) and \(v.shape) clash (need [B, Tq, H*D], [B, Tk, H*D] twice)")
        let batch = q.shape[0], tq = q.shape[1], tk = k.shape[1], width = q.shape[2]
        precondition(heads > 0 && width % heads == 0, "attention: width \(width) of \(q.shape) does not split into \(heads) heads")
        if let validKeys {
            precondition(validKeys.count == batch * tk, "attention: shapes \(k.shape) and mask \(validKeys.shape) clash (need [B, Tk])")
        }
        let d = width / heads, scale = 1 / Float(d).squareRoot()
        let pairs = batch * heads, block = tq * tk

        // Scores, then probabilities in place: [B, H, Tq, Tk].
        var probabilities = Tensor(uninitializedShape: [batch, heads, tq, tk])
        let pp = probabilities.mutablePointer, pq = q.value.pointer, pk = k.value.pointer, pv = v.value.pointer
        for pair in 0..<pairs {
            let b = pair / heads, h = pair % heads
            BLAS.sgemm(transB: true, m: tq, n: tk, k: d, alpha: scale, a: pq + b * tq * width + h * d, lda: width,
                       b: pk + b * tk * width + h * d, ldb: width, c: pp + pair * block, ldc: tk)
        }
        let mask = validKeys.map { $0.pointer }
        Parallel.forEach(pairs * tq, minimumChunk: max(1, 4096 / max(tk, 1))) { range in
            for row in range {
                let r = pp + row * tk
                if let mask {
                    let m = mask + (row / (heads * tq)) * tk
                    for j in 0..<tk where m[j] == 0 { r[j] += maskedScore }
                }
                softmaxLine(r, r, tk)
            }
        }
        var y = Tensor(uninitializedShape: [batch, tq, width])
        let py = y.mutablePointer
        for pair in 0..<pairs {
            let b = pair / heads, h = pair % heads
            BLAS.sgemm(m: tq, n: d, k: tk, a: pp + pair * block, lda: tk, b: pv + b * tk * width + h * d, ldb: width,
                       c: py + b * tq * width + h * d, ldc: width)
        }
        let p = probabilities
        return Autograd.result(y, [q, k, v], record: Autograd.needsGrad(q, k, v)) { g in
            let pg = g.pointer, pp = p.pointer
            let pq = q.value.pointer, pk = k.value.pointer, pv = v.value.pointer
            // Every (batch, head) block of dQ, dK, dV is written whole, so they need no zeroing.
            var dq = Tensor(uninitializedShape: q.requiresGrad ? q.shape : [0])
            var dk = Tensor(uninitializedShape: k.requiresGrad ? k.shape : [0])
            var dv = Tensor(uninitializedShape: v.requiresGrad ? v.shape : [0])
            let odq = dq.mutablePointer, odk = dk.mutablePointer, odv = dv.mutablePointer
            // dP = dY·Vᵀ becomes dS = P ⊙ (dP - Σ dP⊙P) in place (the softmax backward, row by row).
            var ds = Tensor(uninitializedShape: p.shape)
            let pds = ds.mutablePointer
            for pair in 0..<pairs {
                let b = pair / heads, h = pair % heads
                let gy = pg + b * tq * width + h * d
                BLAS.sgemm(transB: true, m: tq, n: tk, k: d, a: gy, lda: width, b: pv + b * tk * width + h * d,
                           ldb: width, c: pds + pair * block, ldc: tk)
                if v.requiresGrad {
                    // dV = Pᵀ·dY
                    BLAS.sgemm(transA: true, m: tk, n: d, k: tq, a: pp + pair * block, lda: tk, b: gy, ldb: width,
                               c: odv + b * tk * width + h * d, ldc: width)
                }
            }
            if q.requiresGrad || k.requiresGrad {
                Parallel.forEach(pairs * tq, minimumChunk: max(1, 4096 / max(tk, 1))) { range in
                    for row in range {
                        let pr = pp + row * tk, dr = pds + row * tk
                        var dot: Float = 0
                        for j in 0..<tk { dot += dr[j] * pr[j] }
                        for j in 0..<tk { dr[j] = pr[j] * (dr[j] - dot) }
                    }
                }
                for pair in 0..<pairs {
                    let b = pair / heads, h = pair % heads
                    if q.requiresGrad {
                        // dQ = scale · dS·K
                        BLAS.sgemm(m: tq, n: d, k: tk, alpha: scale, a: pds + pair * block, lda: tk,
                                   b: pk + b * tk * width + h * d, ldb: width, c: odq + b * tq * width + h * d, ldc: width)
                    }
                    if k.requiresGrad {
                        // dK = scale · dSᵀ·Q
                        BLAS.sgemm(transA: true, m: tk, n: d, k: tq, alpha: scale, a: pds + pair * block, lda: tk,
                                   b: pq + b * tq * width + h * d, ldb: width, c: odk + b * tk * width + h * d, ldc: width)
                    }
                }
            }
            if q.requiresGrad { q.accumulate(dq) }
            if k.requiresGrad { k.accumulate(dk) }
            if v.requiresGrad { v.accumulate(dv) }
        }
    }
}
