import Foundation

// Multi-head self-attention over packed variable-length sequences as one fused op. Heads are never split into
// separate tensors: head h of [N, H*D] is the strided block at column h*D, which sgemm reads directly through
// its leading dimension.

/// Runs `body(i)` for i in 0..<count on `Parallel.threadCount` threads, each taking the next index as it
/// finishes (work items of unequal cost stay balanced).
func dynamicForEach(_ count: Int, _ body: (Int) -> Void) {
    let threads = min(Parallel.threadCount, count)
    if threads <= 1 { for i in 0..<count { body(i) }; return }
    let lock = NSLock()
    var next = 0
    Parallel.forEach(threads) { range in
        for _ in range {
            while true {
                lock.lock()
                let i = next
                next += 1
                lock.unlock()
                if i >= count { break }
                body(i)
            }
        }
    }
}

/// Softmax of one row in place (scores minus their maximum are <= 0, the range of the vectorised exp).
/// Max and sum run on four independent accumulators (a serial chain of dependent adds would stall).
@inline(__always)
func softmaxRowInPlace(_ r: UnsafeMutablePointer<Float>, _ n: Int) {
    var m0 = -Float.infinity, m1 = m0, m2 = m0, m3 = m0
    var j = 0
    while j + 4 <= n {
        m0 = r[j] > m0 ? r[j] : m0; m1 = r[j + 1] > m1 ? r[j + 1] : m1
        m2 = r[j + 2] > m2 ? r[j + 2] : m2; m3 = r[j + 3] > m3 ? r[j + 3] : m3
        j += 4
    }
    while j < n { m0 = r[j] > m0 ? r[j] : m0; j += 1 }
    let m = max(max(m0, m1), max(m2, m3))
    for i in 0..<n {
        let u = r[i] - m
        r[i] = GELUKernel.expOfNonPositive(u < -80 ? -80 : u)
    }
    var s0: Float = 0, s1: Float = 0, s2: Float = 0, s3: Float = 0
    j = 0
    while j + 4 <= n { s0 += r[j]; s1 += r[j + 1]; s2 += r[j + 2]; s3 += r[j + 3]; j += 4 }
    while j < n { s0 += r[j]; j += 1 }
    let inv = 1 / ((s0 + s1) + (s2 + s3))
    for i in 0..<n { r[i] *= inv }
}

/// The geometry of packed sequences and how their attention splits into work items.
///
/// Every GEMM of an item has m·n·k <= 65536·4, the size below which OpenBLAS 0.3.21 computes on the calling
/// thread, so items run concurrently on our threads instead of each small GEMM being threaded by OpenBLAS.
/// Short sequences are one item per (sequence, head); long ones are cut into blocks of query rows (forward,
/// dQ) or key rows (dK, dV).
struct PackedAttentionLayout {
    let lengths: [Int], offsets: [Int], blocks: [Int]
    let heads: Int, d: Int
    /// (sequence, head, first row, end row)
    let items: [(s: Int, h: Int, r0: Int, r1: Int)]
    let probabilityCount: Int

    init(lengths: [Int], heads: Int, headWidth d: Int) {
        self.lengths = lengths
        self.heads = heads
        self.d = d
        var offsets = [Int](repeating: 0, count: lengths.count), blocks = offsets
        var rows = 0, probabilities = 0
        var items: [(Int, Int, Int, Int)] = []
        for (s, l) in lengths.enumerated() {
            offsets[s] = rows; blocks[s] = probabilities
            rows += l; probabilities += heads * l * l
            guard l > 0 else { continue }
            let chunk = max(1, min(l, 262_144 / max(1, l * d)))
            for h in 0..<heads {
                var r = 0
                while r < l { items.append((s, h, r, min(l, r + chunk))); r += chunk }
            }
        }
        // Longest work first, so the last items to finish are short ones.
        self.items = items.sorted { ($0.3 - $0.2) * lengths[$0.0] > ($1.3 - $1.2) * lengths[$1.0] }
        self.offsets = offsets
        self.blocks = blocks
        probabilityCount = probabilities
    }

    /// Probability block of (sequence, head): [L, L] row-major.
    func block(_ s: Int, _ h: Int) -> Int { blocks[s] + h * lengths[s] * lengths[s] }
}

extension Variable {
    /// softmax(Q Kᵀ / √D) V per sequence and head, on packed rows with leading dimensions `ld` (Q, K, V) and
    /// `ldy` (Y). `probabilities` (H·ΣL²) keeps every block when given; otherwise per-item scratch is used.
    static func packedAttentionForward(_ layout: PackedAttentionLayout, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                       v: UnsafePointer<Float>, ld: Int, y: UnsafeMutablePointer<Float>, ldy: Int,
                                       probabilities: UnsafeMutablePointer<Float>?) {
        let d = layout.d, scale = 1 / Float(d).squareRoot()
        let longest = layout.lengths.max() ?? 0
        dynamicForEach(layout.items.count) { i in
            let item = layout.items[i]
            let l = layout.lengths[item.s], rows = item.r1 - item.r0
            let base = layout.offsets[item.s], col = item.h * d
            var scratch: AttentionScratch?
            let p: UnsafeMutablePointer<Float>
            if let probabilities { p = probabilities + layout.block(item.s, item.h) + item.r0 * l } else {
                scratch = AttentionScratch.take(rows * longest)
                p = scratch!.buffer
            }
            BLAS.sgemm(transB: true, m: rows, n: l, k: d, alpha: scale, a: q + (base + item.r0) * ld + col, lda: ld,
                       b: k + base * ld + col, ldb: ld, c: p, ldc: l)
            for r in 0..<rows { softmaxRowInPlace(p + r * l, l) }
            BLAS.sgemm(m: rows, n: d, k: l, a: p, lda: l, b: v + base * ld + col, ldb: ld,
                       c: y + (base + item.r0) * ldy + col, ldc: ldy)
            if let scratch { AttentionScratch.give(scratch) }
        }
    }

    /// Gradients of `packedAttentionForward` given dY: writes dQ, dK, dV (each optional) with leading dimension
    /// `ld`; every (sequence, head) block of them is written whole.
    static func packedAttentionBackward(_ layout: PackedAttentionLayout, q: UnsafePointer<Float>, k: UnsafePointer<Float>,
                                        v: UnsafePointer<Float>, ld: Int, gy: UnsafePointer<Float>, ldy: Int,
                                        probabilities p: UnsafePointer<Float>, dq: UnsafeMutablePointer<Float>?,
                                        dk: UnsafeMutablePointer<Float>?, dv: UnsafeMutablePointer<Float>?) {
        let d = layout.d, scale = 1 / Float(d).squareRoot()
        var dsTensor = Tensor(uninitializedShape: [dq != nil || dk != nil ? layout.probabilityCount : 0])
        let ds = dsTensor.mutablePointer
        // Query-row blocks: dP = dY·Vᵀ, dS = P ⊙ (dP - Σ dP⊙P), dQ = scale · dS·K.
        if dq != nil || dk != nil {
            dynamicForEach(layout.items.count) { i in
                let item = layout.items[i]
                let l = layout.lengths[item.s], rows = item.r1 - item.r0
                let base = layout.offsets[item.s], col = item.h * d
                let at = layout.block(item.s, item.h) + item.r0 * l
                BLAS.sgemm(transB: true, m: rows, n: l, k: d, a: gy + (base + item.r0) * ldy + col, lda: ldy,
                           b: v + base * ld + col, ldb: ld, c: ds + at, ldc: l)
                for r in 0..<rows {
                    let pr = p + at + r * l, dr = ds + at + r * l
                    var dot: Float = 0
                    for j in 0..<l { dot += dr[j] * pr[j] }
                    for j in 0..<l { dr[j] = pr[j] * (dr[j] - dot) }
                }
                if let dq {
                    BLAS.sgemm(m: rows, n: d, k: l, alpha: scale, a: ds + at, lda: l, b: k + base * ld + col, ldb: ld,
                               c: dq + (base + item.r0) * ld + col, ldc: ld)
                }
            }
        }
        // Key-row blocks (the same cuts, read as key rows): dV = Pᵀ·dY, dK = scale · dSᵀ·Q.
        if dk != nil || dv != nil {
            dynamicForEach(layout.items.count) { i in
                let item = layout.items[i]
                let l = layout.lengths[item.s], rows = item.r1 - item.r0
                let base = layout.offsets[item.s], col = item.h * d
                let at = layout.block(item.s, item.h) + item.r0
                if let dv {
                    BLAS.sgemm(transA: true, m: rows, n: d, k: l, a: p + at, lda: l, b: gy + base * ldy + col, ldb: ldy,
                               c: dv + (base + item.r0) * ld + col, ldc: ld)
                }
                if let dk {
                    BLAS.sgemm(transA: true, m: rows, n: d, k: l, alpha: scale, a: UnsafePointer(ds) + at, lda: l,
                               b: q + base * ld + col, ldb: ld, c: dk + (base + item.r0) * ld + col, ldc: ld)
                }
            }
        }
        _ = dsTensor
    }

    /// Self-attention over packed sequences of different lengths: no padding is computed at all.
    ///
    /// - query, key, value: [N, H*D], the tokens of sequence 0, then of sequence 1, ... (`lengths` sum to N).
    ///   Each token attends to the tokens of its own sequence only.
    /// - Returns: [N, H*D], softmax(Q Kᵀ / √D) V per sequence and head, heads concatenated.
    ///
    /// Without recording, probabilities live in per-thread scratch memory; with recording, they are kept
    /// (H·ΣL² floats) for the backward pass.
    public static func packedSelfAttention(query: Variable, key: Variable, value: Variable, heads: Int,
                                           lengths: [Int]) -> Variable {
        let q = query, k = key, v = value
        precondition(q.rank == 2 && k.shape == q.shape && v.shape == q.shape,
                     "packedSelfAttention: shapes \(q.shape), \(k.shape) and \(v.shape) clash (need [N, H*D] three times)")
        let n = q.shape[0], width = q.shape[1]
        precondition(heads > 0 && width % heads == 0, "packedSelfAttention: width \(width) does not split into \(heads) heads")
        precondition(lengths.reduce(0, +) == n, "packedSelfAttention: lengths \(lengths.count) sequences summing to \(lengths.reduce(0, +)), but \(n) rows")
        let layout = PackedAttentionLayout(lengths: lengths, heads: heads, headWidth: width / heads)
        let record = Autograd.needsGrad(q, k, v)
        var probabilities = Tensor(uninitializedShape: [record ? layout.probabilityCount : 0])
        var y = Tensor(uninitializedShape: [n, width])
        packedAttentionForward(layout, q: q.value.pointer, k: k.value.pointer, v: v.value.pointer, ld: width,
                               y: y.mutablePointer, ldy: width, probabilities: record ? probabilities.mutablePointer : nil)
        let kept = probabilities
        return Autograd.result(y, [q, k, v], record: record) { g in
            var dq = Tensor(uninitializedShape: q.requiresGrad ? q.shape : [0])
            var dk = Tensor(uninitializedShape: k.requiresGrad ? k.shape : [0])
            var dv = Tensor(uninitializedShape: v.requiresGrad ? v.shape : [0])
            packedAttentionBackward(layout, q: q.value.pointer, k: k.value.pointer, v: v.value.pointer, ld: width,
                                    gy: g.pointer, ldy: width, probabilities: kept.pointer,
                                    dq: q.requiresGrad ? dq.mutablePointer : nil, dk: k.requiresGrad ? dk.mutablePointer : nil,
                                    dv: v.requiresGrad ? dv.mutablePointer : nil)
            if q.requiresGrad { q.accumulate(dq) }
            if k.requiresGrad { k.accumulate(dk) }
            if v.requiresGrad { v.accumulate(dv) }
        }
    }

    /// BERT's self-attention sublayer core with the three input projections fused: x [N, C] -> [N, C] =
    /// packedSelfAttention(x·Wqᵀ + bq, x·Wkᵀ + bk, x·Wvᵀ + bv). The projections are one GEMM against the stacked
    /// weights [3C, C] whose output starts as the biases (beta = 1), so no separate bias pass is made; attention
    /// reads Q, K and V in place from the [N, 3C] result.
    public static func packedSelfAttention(_ x: Variable, query: (weight: Variable, bias: Variable),
                                           key: (weight: Variable, bias: Variable), value: (weight: Variable, bias: Variable),
                                           heads: Int, lengths: [Int]) -> Variable {
        let projections = [query, key, value]
        precondition(x.rank == 2, "packedSelfAttention: input \(x.shape) is not [N, C]")
        let n = x.shape[0], c = x.shape[1]
        for p in projections {
            precondition(p.weight.shape == [c, c] && p.bias.shape == [c],
                         "packedSelfAttention: projection \(p.weight.shape) / \(p.bias.shape) clashes with input \(x.shape)")
        }
        precondition(heads > 0 && c % heads == 0, "packedSelfAttention: width \(c) does not split into \(heads) heads")
        precondition(lengths.reduce(0, +) == n, "packedSelfAttention: lengths sum to \(lengths.reduce(0, +)), but \(n) rows")
        let layout = PackedAttentionLayout(lengths: lengths, heads: heads, headWidth: c / heads)
        let w3 = 3 * c
        var stacked = Tensor(uninitializedShape: [w3, c])
        var biases = Tensor(uninitializedShape: [w3])
        let ps = stacked.mutablePointer, pb = biases.mutablePointer
        for (i, p) in projections.enumerated() {
            (ps + i * c * c).update(from: p.weight.value.pointer, count: c * c)
            (pb + i * c).update(from: p.bias.value.pointer, count: c)
        }
        var qkv = Tensor(uninitializedShape: [n, w3])
        let pqkv = qkv.mutablePointer
        fillRows(pqkv, rows: n, with: UnsafePointer(pb), width: w3)
        BLAS.sgemm(transB: true, m: n, n: w3, k: c, a: x.value.pointer, lda: c, b: stacked.pointer, ldb: c,
                   beta: 1, c: pqkv, ldc: w3)
        let parents = [x] + projections.flatMap { [$0.weight, $0.bias] }
        let record = Autograd.needsGrad(parents)
        var probabilities = Tensor(uninitializedShape: [record ? layout.probabilityCount : 0])
        var y = Tensor(uninitializedShape: [n, c])
        packedAttentionForward(layout, q: pqkv, k: pqkv + c, v: pqkv + 2 * c, ld: w3, y: y.mutablePointer, ldy: c,
                               probabilities: record ? probabilities.mutablePointer : nil)
        let kept = probabilities, projected = qkv, weights = stacked
        return Autograd.result(y, parents, record: record) { g in
            var dqkv = Tensor(uninitializedShape: [n, w3])
            let pd = dqkv.mutablePointer, pp = projected.pointer
            packedAttentionBackward(layout, q: pp, k: pp + c, v: pp + 2 * c, ld: w3, gy: g.pointer, ldy: c,
                                    probabilities: kept.pointer, dq: pd, dk: pd + c, dv: pd + 2 * c)
            if x.requiresGrad {
                var dx = Tensor(uninitializedShape: [n, c])
                BLAS.sgemm(m: n, n: c, k: w3, a: pd, lda: w3, b: weights.pointer, ldb: c, c: dx.mutablePointer, ldc: c)
                x.accumulate(dx)
            }
            if projections.contains(where: { $0.weight.requiresGrad }) {
                var dw = Tensor(uninitializedShape: [w3, c])
                BLAS.sgemm(transA: true, m: w3, n: c, k: n, a: pd, lda: w3, b: x.value.pointer, ldb: c,
                           c: dw.mutablePointer, ldc: c)
                for (i, p) in projections.enumerated() where p.weight.requiresGrad {
                    p.weight.accumulate(dw.rows(i * c..<(i + 1) * c))
                }
            }
            if projections.contains(where: { $0.bias.requiresGrad }) {
                let db = sumColumns(dqkv.pointer, rows: n, columns: w3)
                for (i, p) in projections.enumerated() where p.bias.requiresGrad {
                    p.bias.accumulate(Tensor(shape: [c], scalars: Array(db[i * c..<(i + 1) * c])))
                }
            }
        }
    }
}

/// Scratch memory for one work item of the packed attention, reused across calls (no allocation per item).
final class AttentionScratch: @unchecked Sendable {
    static let lock = NSLock()
    nonisolated(unsafe) static var pool: [AttentionScratch] = []
    var buffer: UnsafeMutablePointer<Float>
    var capacity: Int

    init(_ n: Int) { capacity = n; buffer = .allocate(capacity: max(n, 1)) }
    deinit { buffer.deallocate() }

    static func take(_ n: Int) -> AttentionScratch {
        lock.lock()
        let s = pool.popLast()
        lock.unlock()
        let scratch = s ?? AttentionScratch(n)
        if n > scratch.capacity {
            scratch.buffer.deallocate()
            scratch.buffer = .allocate(capacity: n)
            scratch.capacity = n
        }
        return scratch
    }

    static func give(_ s: AttentionScratch) {
        lock.lock()
        pool.append(s)
        lock.unlock()
    }
}
