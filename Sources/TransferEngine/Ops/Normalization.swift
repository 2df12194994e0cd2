import CKernels
import Foundation

// LayerNorm and BatchNorm on the tape. Both normalise per feature of the LAST axis, so they apply to [N, C],
// [B, T, C] and NHWC images alike; each is one fused forward/backward pair.

/// Per-column sums over the rows of a [rows, columns] layout, in Double, split by rows into
/// `Parallel.reductionParts` partials (the same split on any thread count).
/// `accumulate(rows, into)` adds its rows' contributions into a zeroed `columns`-long accumulator.
private func columnSums(rows: Int, columns: Int,
                        _ accumulate: (Range<Int>, UnsafeMutablePointer<Double>) -> Void) -> [Double] {
    let chunks = max(1, min(Parallel.reductionParts, rows * columns / 32768))
    let partial = UnsafeMutablePointer<Double>.allocate(capacity: chunks * columns)
    partial.initialize(repeating: 0, count: chunks * columns)
    defer { partial.deallocate() }
    Parallel.forEach(chunks) { range in
        for c in range { accumulate(rows * c / chunks..<rows * (c + 1) / chunks, partial + c * columns) }
    }
    var out = [Double](repeating: 0, count: columns)
    for c in 0..<chunks { for j in 0..<columns { out[j] += partial[c * columns + j] } }
    return out
}

extension Variable {
    /// Layer normalisation over the last axis: (x - mean) / sqrt(var + eps) * weight + bias, with the biased
    /// variance (as PyTorch and BERT). x: [..., C]; weight, bias: [C] (nil means 1 and 0). Same shape as x.
    public func layerNorm(weight: Variable?, bias: Variable?, eps: Float = 1e-5) -> Variable {
        let x = self
        let c = x.value.dim(-1), rows = x.value.count / max(c, 1)
        if let weight { precondition(weight.shape == [c], "layerNorm: shapes \(x.shape) and weight \(weight.shape) clash") }
        if let bias { precondition(bias.shape == [c], "layerNorm: shapes \(x.shape) and bias \(bias.shape) clash") }
        var rowMean = [Float](repeating: 0, count: rows), rowRstd = [Float](repeating: 0, count: rows)
        var y = Tensor(uninitializedShape: x.shape)
        let px = x.value.pointer, py = y.mutablePointer
        let pw = weight?.value.pointer, pb = bias?.value.pointer
        rowMean.withUnsafeMutableBufferPointer { pm in
            rowRstd.withUnsafeMutableBufferPointer { pr in
                Parallel.forEach(rows, minimumChunk: max(1, 16384 / max(c, 1))) { range in
                    for r in range {
                        let xr = px + r * c, yr = py + r * c
                        var s: Float = 0
                        for j in 0..<c { s += xr[j] }
                        let m = s / Float(c)
                        var v: Float = 0
                        for j in 0..<c { let d = xr[j] - m; v += d * d }
                        let inv = 1 / (v / Float(c) + eps).squareRoot()
                        pm[r] = m; pr[r] = inv
                        for j in 0..<c {
                            var t = (xr[j] - m) * inv
                            if let pw { t *= pw[j] }
                            if let pb { t += pb[j] }
                            yr[j] = t
                        }
                    }
                }
            }
        }
        let mean = rowMean, rstd = rowRstd
        var parents = [x]
        if let weight { parents.append(weight) }
        if let bias { parents.append(bias) }
        return Autograd.result(y, parents, record: Autograd.needsGrad(parents)) { g in
            let pg = g.pointer, px = x.value.pointer, pw = weight?.value.pointer
            if x.requiresGrad {
                // dx = rstd · (ĝ - mean(ĝ) - x̂ · mean(ĝ ⊙ x̂)) with ĝ = g ⊙ weight.
                var dx = Tensor(uninitializedShape: x.shape)
                let o = dx.mutablePointer
                Parallel.forEach(rows, minimumChunk: max(1, 16384 / max(c, 1))) { range in
                    for r in range {
                        let m = mean[r], inv = rstd[r], xr = px + r * c, gr = pg + r * c, dr = o + r * c
                        var a: Float = 0, b: Float = 0
                        for j in 0..<c {
                            let gh = pw.map { gr[j] * $0[j] } ?? gr[j]
                            a += gh
                            b += gh * (xr[j] - m) * inv
                        }
                        a /= Float(c); b /= Float(c)
                        for j in 0..<c {
                            let gh = pw.map { gr[j] * $0[j] } ?? gr[j]
                            dr[j] = inv * (gh - a - (xr[j] - m) * inv * b)
                        }
                    }
                }
                x.accumulate(dx)
            }
            if let weight, weight.requiresGrad {
                let s = columnSums(rows: rows, columns: c) { range, acc in
                    for r in range {
                        let m = mean[r], inv = rstd[r], xr = px + r * c, gr = pg + r * c
                        for j in 0..<c { acc[j] += Double(gr[j] * (xr[j] - m) * inv) }
                    }
                }
                weight.accumulate(Tensor(shape: [c], scalars: s.map { Float($0) }))
            }
            if let bias, bias.requiresGrad {
                let s = columnSums(rows: rows, columns: c) { range, acc in
                    for r in range { let gr = pg + r * c; for j in 0..<c { acc[j] += Double(gr[j]) } }
                }
                bias.accumulate(Tensor(shape: [c], scalars: s.map { Float($0) }))
            }
        }
    }

    /// LayerNorm(x·Wᵀ + b + residual): a Linear layer (W [C, K] stored [out, in]) whose output joins a residual
    /// stream and is normalised, as every sublayer of a post-LN transformer (BERT) ends. x [N, K], residual
    /// [N, C] -> [N, C]. The GEMM's output starts as residual + bias (beta = 1); normalisation is one more pass.
    public func linearResidualLayerNorm(weight: Variable, bias: Variable, residual: Variable, normWeight: Variable,
                                        normBias: Variable, eps: Float) -> Variable {
        let x = self
        precondition(x.rank == 2 && weight.rank == 2 && weight.shape[1] == x.shape[1], "linearResidualLayerNorm: shapes \(x.shape) and weight \(weight.shape) clash")
        let n = x.shape[0], k = x.shape[1], c = weight.shape[0]
        precondition(bias.shape == [c] && residual.shape == [n, c] && normWeight.shape == [c] && normBias.shape == [c],
                     "linearResidualLayerNorm: shapes bias \(bias.shape), residual \(residual.shape), norm \(normWeight.shape) / \(normBias.shape) clash with [\(n), \(c)]")
        var h = Tensor(uninitializedShape: [n, c])
        let ph = h.mutablePointer, pr = residual.value.pointer, pb = bias.value.pointer
        Parallel.forEach(n, minimumChunk: max(1, 16384 / max(c, 1))) { range in
            for r in range { for j in 0..<c { ph[r * c + j] = pr[r * c + j] + pb[j] } }
        }
        BLAS.sgemm(transB: true, m: n, n: c, k: k, a: x.value.pointer, lda: k, b: weight.value.pointer, ldb: k,
                   beta: 1, c: ph, ldc: c)
        var y = Tensor(uninitializedShape: [n, c])
        var rowMean = [Float](repeating: 0, count: n), rowRstd = [Float](repeating: 0, count: n)
        let py = y.mutablePointer, pw = normWeight.value.pointer, pnb = normBias.value.pointer
        rowMean.withUnsafeMutableBufferPointer { pm in
            rowRstd.withUnsafeMutableBufferPointer { prs in
                Parallel.forEach(n, minimumChunk: max(1, 16384 / max(c, 1))) { range in
                    for r in range {
                        let (m, inv) = normaliseRow(ph + r * c, py + r * c, c, weight: pw, bias: pnb, eps: eps)
                        pm[r] = m; prs[r] = inv
                    }
                }
            }
        }
        let mean = rowMean, rstd = rowRstd, summed = h
        let parents = [x, weight, bias, residual, normWeight, normBias]
        return Autograd.result(y, parents, record: Autograd.needsGrad(parents)) { g in
            let pg = g.pointer, ph = summed.pointer, pw = normWeight.value.pointer
            // dh = rstd · (ĝ - mean(ĝ) - ĥ · mean(ĝ ⊙ ĥ)) with ĝ = g ⊙ weight, ĥ the normalised h.
            var dh = Tensor(uninitializedShape: [n, c])
            let o = dh.mutablePointer
            Parallel.forEach(n, minimumChunk: max(1, 16384 / max(c, 1))) { range in
                for r in range {
                    let m = mean[r], inv = rstd[r], hr = ph + r * c, gr = pg + r * c, dr = o + r * c
                    var a: Float = 0, b: Float = 0
                    for j in 0..<c {
                        let gh = gr[j] * pw[j]
                        a += gh
                        b += gh * (hr[j] - m) * inv
                    }
                    a /= Float(c); b /= Float(c)
                    for j in 0..<c { dr[j] = inv * (gr[j] * pw[j] - a - (hr[j] - m) * inv * b) }
                }
            }
            if normWeight.requiresGrad || normBias.requiresGrad {
                let s = columnSums(rows: n, columns: 2 * c) { range, acc in
                    for r in range {
                        let m = mean[r], inv = rstd[r], hr = ph + r * c, gr = pg + r * c
                        for j in 0..<c {
                            acc[j] += Double(gr[j] * (hr[j] - m) * inv)
                            acc[c + j] += Double(gr[j])
                        }
                    }
                }
                if normWeight.requiresGrad { normWeight.accumulate(Tensor(shape: [c], scalars: s[..<c].map { Float($0) })) }
                if normBias.requiresGrad { normBias.accumulate(Tensor(shape: [c], scalars: s[c...].map { Float($0) })) }
            }
            if residual.requiresGrad { residual.accumulate(dh) }
            linearBackward(dh, x: x, weight: weight, bias: bias)
        }
    }

    /// Batch normalisation over every axis but the last (channels): x [..., C] (e.g. NHWC), weight/bias [C]
    /// (nil means 1 and 0), running statistics [C].
    ///
    /// With `useBatchStatistics` (training) and more than one value per channel, x is normalised with the batch
    /// mean and biased variance and, if `updateFactor` f is given, the running statistics are updated in place:
    /// running = (1 - f)·running + f·batch, with the unbiased variance for `runningVariance` (PyTorch's rule;
    /// f is the momentum, or 1/batches for a cumulative average). Otherwise (eval, frozen statistics, or one
    /// value per channel) the running statistics normalise and nothing is updated; gradients still flow to x,
    /// weight and bias.
    ///
    /// `activation` (ReLU, ReLU6) is applied to the result in the same pass, and its gradient in BatchNorm's
    /// backward passes: the bits of `batchNorm(...).relu()` with two passes over the tensor fewer.
    public func batchNorm(weight: Variable?, bias: Variable?, runningMean: Variable, runningVariance: Variable,
                          useBatchStatistics: Bool, updateFactor: Float? = nil, eps: Float = 1e-5,
                          activation: ClampActivation? = nil) -> Variable {
        let x = self
        let c = x.value.dim(-1), rows = x.value.count / max(c, 1)
        for (what, v) in [("weight", weight), ("bias", bias), ("running mean", runningMean),
                          ("running variance", runningVariance)] {
            if let v { precondition(v.value.count == c, "batchNorm: shapes \(x.shape) and \(what) \(v.shape) clash") }
        }
        var statMean = [Float](repeating: 0, count: c), statRstd = [Float](repeating: 0, count: c)
        let px = x.value.pointer
        // One value per channel (a batch of one sample with no spatial axes, e.g. the last batch of 33 samples
        // in batches of 32) has no variance to estimate: its unbiased variance is 0/0, which made the running
        // statistics and then the whole model NaN. Such a batch is normalised with the running statistics and
        // updates nothing (PyTorch refuses it).
        if useBatchStatistics && rows > 1 {
            let s = columnSums(rows: rows, columns: c) { range, acc in
                ck_channel_sums(px + range.lowerBound * c, range.count, c, nil, acc)
            }
            let m = s.map { $0 / Double(rows) }
            let ss = m.withUnsafeBufferPointer { pm in
                columnSums(rows: rows, columns: c) { range, acc in
                    ck_channel_sums(px + range.lowerBound * c, range.count, c, pm.baseAddress, acc)
                }
            }
            for j in 0..<c {
                statMean[j] = Float(m[j])
                statRstd[j] = Float(1 / (ss[j] / Double(rows) + Double(eps)).squareRoot())
            }
            if let f = updateFactor {
                runningMean.value.withUnsafeMutableBufferPointer { rm in
                    for j in 0..<c { rm[j] = (1 - f) * rm[j] + f * statMean[j] }
                }
                runningVariance.value.withUnsafeMutableBufferPointer { rv in
                    for j in 0..<c { rv[j] = (1 - f) * rv[j] + f * Float(ss[j] / Double(rows - 1)) }
                }
            }
        } else {
            let rm = runningMean.value.pointer, rv = runningVariance.value.pointer
            for j in 0..<c { statMean[j] = rm[j]; statRstd[j] = 1 / (rv[j] + eps).squareRoot() }
        }
        // y = x·scale + shift per channel.
        var channelScale = statRstd, channelShift = [Float](repeating: 0, count: c)
        if let w = weight?.value.pointer { for j in 0..<c { channelScale[j] *= w[j] } }
        for j in 0..<c { channelShift[j] = -statMean[j] * channelScale[j] }
        if let b = bias?.value.pointer { for j in 0..<c { channelShift[j] += b[j] } }
        // One buffer of four rows of c: scale, shift, mean, rstd.
        let constants = channelScale + channelShift + statMean + statRstd
        let (low, high) = activation.map { ($0.low, $0.high) } ?? (-.infinity, .infinity)
        var y = Tensor(uninitializedShape: x.shape)
        let py = y.mutablePointer
        constants.withUnsafeBufferPointer { k in
            let k = k.baseAddress!
            Parallel.forEach(rows, minimumChunk: max(1, 16384 / max(c, 1))) { range in
                ck_channel_affine(px + range.lowerBound * c, range.count, c, k, k + c, low, high, py + range.lowerBound * c)
            }
        }

        var parents = [x]
        if let weight { parents.append(weight) }
        if let bias { parents.append(bias) }
        return Autograd.result(y, parents, record: Autograd.needsGrad(parents)) { g in
            let px = x.value.pointer
            // The fused activation's gradient first: g where it passes, else 0 (from the output, in eval mode; the
            // kernels of the batch-statistics path mask g themselves).
            var g = g
            if let activation, !useBatchStatistics { g = activation.maskedGradient(g, at: y) }
            let pg = g.pointer
            let needSums = (weight?.requiresGrad ?? false) || (bias?.requiresGrad ?? false)
                || (x.requiresGrad && useBatchStatistics)
            let masked = activation != nil && useBatchStatistics
            // Σ g and Σ g·x̂ per channel: the bias and weight gradients, and the batch-statistics terms of dx.
            var sumG = [Double](repeating: 0, count: c), sumGX = [Double](repeating: 0, count: c)
            constants.withUnsafeBufferPointer { k in
                let k = k.baseAddress!
                var fused = ck_fused_clamp(scale: k, shift: k + c, lo: low, hi: high,
                                           upper: activation?.gradientBelowHigh == true ? 1 : 0)
                withUnsafePointer(to: &fused) { f in
                    let f = masked ? f : nil
                    if needSums {
                        let both = columnSums(rows: rows, columns: 2 * c) { range, acc in
                            ck_batchnorm_grad_sums(px + range.lowerBound * c, pg + range.lowerBound * c, range.count, c,
                                                   k + 2 * c, k + 3 * c, f, acc)
                        }
                        sumG = Array(both[..<c]); sumGX = Array(both[c...])
                    }
                    guard x.requiresGrad else { return }
                    var dx = Tensor(uninitializedShape: x.shape)
                    let o = dx.mutablePointer
                    if useBatchStatistics {
                        // dx = weight·rstd · (g - Σg/M - x̂ · Σ(g·x̂)/M): the batch mean and variance depend on x.
                        let ab = sumG.map { Float($0 / Double(rows)) } + sumGX.map { Float($0 / Double(rows)) }
                        ab.withUnsafeBufferPointer { ab in
                            let a = ab.baseAddress!
                            Parallel.forEach(rows, minimumChunk: max(1, 16384 / max(c, 1))) { range in
                                let at = range.lowerBound * c
                                ck_batchnorm_backward(px + at, pg + at, range.count, c, k, a, a + c, k + 2 * c, k + 3 * c,
                                                      f, o + at)
                            }
                        }
                    } else {
                        Parallel.forEach(rows, minimumChunk: max(1, 16384 / max(c, 1))) { range in
                            for r in range {
                                let gr = pg + r * c, dr = o + r * c
                                for j in 0..<c { dr[j] = gr[j] * k[j] }
                            }
                        }
                    }
                    x.accumulate(dx)
                }
            }
            if let weight, weight.requiresGrad {
                weight.accumulate(Tensor(shape: weight.shape, scalars: sumGX.map { Float($0) }))
            }
            if let bias, bias.requiresGrad {
                bias.accumulate(Tensor(shape: bias.shape, scalars: sumG.map { Float($0) }))
            }
        }
    }
}

/// LayerNorm of one row of `c` values: y = (x - mean) · rstd · weight + bias, eight lanes at a time. Returns
/// (mean, rstd).
@inline(__always)
func normaliseRow(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ c: Int,
                  weight: UnsafePointer<Float>, bias: UnsafePointer<Float>, eps: Float) -> (Float, Float) {
    typealias V = SIMD8<Float>
    let vectorEnd = c & ~7
    var sv = V(repeating: 0)
    var j = 0
    while j < vectorEnd { sv += UnsafeRawPointer(x + j).loadUnaligned(as: V.self); j += 8 }
    var s = sv.sum()
    while j < c { s += x[j]; j += 1 }
    let m = s / Float(c)
    var qv = V(repeating: 0)
    j = 0
    while j < vectorEnd { let d = UnsafeRawPointer(x + j).loadUnaligned(as: V.self) - m; qv += d * d; j += 8 }
    var q = qv.sum()
    while j < c { let d = x[j] - m; q += d * d; j += 1 }
    let inv = 1 / (q / Float(c) + eps).squareRoot()
    j = 0
    while j < vectorEnd {
        let v = (UnsafeRawPointer(x + j).loadUnaligned(as: V.self) - m) * inv
            * UnsafeRawPointer(weight + j).loadUnaligned(as: V.self) + UnsafeRawPointer(bias + j).loadUnaligned(as: V.self)
        UnsafeMutableRawPointer(y + j).storeBytes(of: v, as: V.self)
        j += 8
    }
    while j < c { y[j] = (x[j] - m) * inv * weight[j] + bias[j]; j += 1 }
    return (m, inv)
}
