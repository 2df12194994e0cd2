import CKernels
import Foundation

// Pointwise nonlinearities on the tape. Each is forward + derivative in one place.

extension Variable {
    /// Shared shape of a pointwise op: y = f(x); dx = g * df(x, y).
    @inline(__always)
    func pointwise(_ f: (Float) -> Float, derivative: @escaping (_ x: Float, _ y: Float) -> Float) -> Variable {
        let x = self
        let y = x.value.map(f)
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(uninitializedShape: x.shape)
            let o = dx.mutablePointer, pg = g.pointer, px = x.value.pointer, py = y.pointer
            Parallel.forEach(dx.count, minimumChunk: 1 << 16) { r in
                for i in r { o[i] = pg[i] * derivative(px[i], py[i]) }
            }
            x.accumulate(dx)
        }
    }

    public func relu() -> Variable { clamped(.relu) }

    public func relu6() -> Variable { clamped(.relu6) }

    public func leakyRelu(slope: Float = 0.01) -> Variable {
        pointwise({ $0 > 0 ? $0 : slope * $0 }, derivative: { x, _ in x > 0 ? 1 : slope })
    }

    /// Clamp to [low, high]; the gradient passes only strictly inside.
    public func clamp(min low: Float = -.infinity, max high: Float = .infinity) -> Variable {
        clamped(ClampActivation(low: low, high: high, gradientBelowHigh: true))
    }

    /// min(max(x, low), high) in the C kernels' widest vectors (ReLU was a closure call per element, 13 % of a
    /// training step of the speech scratch CNN).
    func clamped(_ a: ClampActivation) -> Variable {
        let x = self
        var y = Tensor(uninitializedShape: x.shape)
        let px = x.value.pointer, py = y.mutablePointer
        Parallel.forEach(y.count, minimumChunk: 1 << 16) { r in ck_clamp(px + r.lowerBound, py + r.lowerBound, r.count, a.low, a.high) }
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in x.accumulate(a.maskedGradient(g, at: x.value)) }
    }

    /// Exact GELU, x·Φ(x) with the error function (BERT's), not the tanh approximation. Vectorised kernel:
    /// erf by Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7, the formula PyTorch's vectorised erf uses).
    public func gelu() -> Variable {
        let x = self
        var y = Tensor(uninitializedShape: x.shape)
        GELUKernel.forward(x.value.pointer, bias: nil, columns: 1024, y.mutablePointer, count: x.value.count)
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(uninitializedShape: x.shape)
            GELUKernel.backward(x.value.pointer, bias: nil, columns: 1024, g.pointer, dx.mutablePointer,
                                count: x.value.count)
            x.accumulate(dx)
        }
    }

    /// gelu(x + bias) in one pass (a Linear layer's bias fused with the activation): x [..., C], bias [C].
    public func biasGELU(_ bias: Variable) -> Variable {
        let x = self
        let c = x.value.dim(-1)
        precondition(bias.shape == [c], "biasGELU: shapes \(x.shape) and bias \(bias.shape) clash")
        var y = Tensor(uninitializedShape: x.shape)
        GELUKernel.forward(x.value.pointer, bias: bias.value.pointer, columns: c, y.mutablePointer, count: x.value.count)
        return Autograd.result(y, [x, bias], record: Autograd.needsGrad(x, bias)) { g in
            var dx = Tensor(uninitializedShape: x.shape)
            GELUKernel.backward(x.value.pointer, bias: bias.value.pointer, columns: c, g.pointer, dx.mutablePointer,
                                count: x.value.count)
            if bias.requiresGrad {
                let rows = x.value.count / max(c, 1)
                var db = Tensor(zeros: [c])
                let o = db.mutablePointer, pdx = dx.pointer
                for r in 0..<rows { let dr = pdx + r * c; for j in 0..<c { o[j] += dr[j] } }
                bias.accumulate(db)
            }
            if x.requiresGrad { x.accumulate(dx) }
        }
    }

    /// gelu(x·Wᵀ + b): a Linear layer (W [C, K] stored [out, in]) fused with the exact GELU. x [N, K] -> [N, C].
    /// The GEMM's output starts as the bias (beta = 1), and the activation runs over it in one pass.
    public func linearGELU(weight: Variable, bias: Variable) -> Variable {
        let x = self
        precondition(x.rank == 2 && weight.rank == 2 && weight.shape[1] == x.shape[1] && bias.shape == [weight.shape[0]],
                     "linearGELU: shapes \(x.shape), weight \(weight.shape) and bias \(bias.shape) clash")
        let n = x.shape[0], k = x.shape[1], c = weight.shape[0]
        var u = Tensor(uninitializedShape: [n, c])
        let pu = u.mutablePointer
        fillRows(pu, rows: n, with: bias.value.pointer, width: c)
        BLAS.sgemm(transB: true, m: n, n: c, k: k, a: x.value.pointer, lda: k, b: weight.value.pointer, ldb: k,
                   beta: 1, c: pu, ldc: c)
        var y = Tensor(uninitializedShape: [n, c])
        GELUKernel.forward(u.pointer, bias: nil, columns: c, y.mutablePointer, count: n * c)
        let pre = u
        return Autograd.result(y, [x, weight, bias], record: Autograd.needsGrad(x, weight, bias)) { g in
            var du = Tensor(uninitializedShape: [n, c])
            GELUKernel.backward(pre.pointer, bias: nil, columns: c, g.pointer, du.mutablePointer, count: n * c)
            linearBackward(du, x: x, weight: weight, bias: bias)
        }
    }

    public func tanh() -> Variable { pointwise({ tanhf($0) }, derivative: { _, y in 1 - y * y }) }

    public func sigmoid() -> Variable {
        pointwise({ x in x >= 0 ? 1 / (1 + expf(-x)) : expf(x) / (1 + expf(x)) }, derivative: { _, y in y * (1 - y) })
    }

    public func exp() -> Variable { pointwise({ expf($0) }, derivative: { _, y in y }) }

    public func log() -> Variable { pointwise({ logf($0) }, derivative: { x, _ in 1 / x }) }

    public func square() -> Variable { pointwise({ $0 * $0 }, derivative: { x, _ in 2 * x }) }

    public func sqrt() -> Variable { pointwise({ sqrtf($0) }, derivative: { _, y in 0.5 / y }) }
}

/// The exact GELU's value and derivative. Branch-free scalar code in plain loops, which the release build
/// vectorises (no calls, no rounding instructions: SSE2 suffices), and which stays tolerable in debug builds; the
/// forward pass runs the same formulas in CKernels' `ck_gelu`.
enum GELUKernel {
    /// (Φ(x), φ(x)): the normal CDF (through erf(x/√2), Abramowitz & Stegun 7.1.26) and density.
    @inline(__always)
    static func cdfAndDensity(_ x: Float) -> (Float, Float) {
        let z = Float(bitPattern: x.bitPattern & 0x7FFF_FFFF) * 0.70710678118654752
        let t = 1 / (1 + z * 0.3275911)
        var poly = t * 1.061405429 - 1.453152027
        poly = poly * t + 1.421413741
        poly = poly * t - 0.284496736
        poly = poly * t + 0.254829592
        poly = poly * t
        let u = -(z * z)
        let e = expOfNonPositive(u < -80 ? -80 : u)   // exp(-x²/2)
        let erfAbs = 1 - poly * e
        let erf = x < 0 ? -erfAbs : erfAbs
        return (erf * 0.5 + 0.5, e * 0.39894228040143268)
    }

    /// exp(u) for u in [-80, 0]: Cephes' polynomial after reduction by powers of two.
    @inline(__always)
    static func expOfNonPositive(_ u: Float) -> Float {
        // n = round(u / ln 2) by the 1.5·2²³ trick (no rounding instruction needed).
        let shifted = u * 1.44269504088896341 + 12582912
        let n = shifted - 12582912
        let r = (u - n * 0.693359375) + n * 2.12194440e-4
        var p: Float = 1.9875691500e-4
        p = p * r + 1.3981999507e-3
        p = p * r + 8.3334519073e-3
        p = p * r + 4.1665795894e-2
        p = p * r + 1.6666665459e-1
        p = p * r + 5.0000001201e-1
        let er = p * r * r + r + 1
        // 2^n from the integer sitting in the low mantissa bits of `shifted`.
        let k = Int32(bitPattern: shifted.bitPattern) &- 0x4B40_0000
        return er * Float(bitPattern: UInt32(bitPattern: (k &+ 127) &<< 23))
    }

    /// Walks `count` elements as rows of `columns` (the bias period) in parallel; `body(offset, column, n)`
    /// handles n consecutive elements starting at `offset`, whose first has column `column`.
    @inline(__always)
    static func rows(count: Int, columns: Int, _ body: (_ offset: Int, _ column: Int, _ n: Int) -> Void) {
        let rowCount = count / max(columns, 1)
        Parallel.forEach(rowCount, minimumChunk: max(1, 16384 / max(columns, 1))) { range in
            for r in range { body(r * columns, 0, columns) }
        }
        // A partial last row (only without a bias, where the column does not matter).
        if rowCount * columns < count { body(rowCount * columns, 0, count - rowCount * columns) }
    }

    /// y = u·Φ(u) with u = x (+ bias): the same formulas in the C kernels' widest vectors (AVX-512 or AVX2; the
    /// Swift loop above only gets SSE2), which take GELU from ~10 % of MiniLM's forward pass to ~3 %.
    static func forward(_ x: UnsafePointer<Float>, bias: UnsafePointer<Float>?, columns: Int,
                        _ y: UnsafeMutablePointer<Float>, count: Int) {
        rows(count: count, columns: columns) { offset, _, n in ck_gelu(x + offset, bias, y + offset, n) }
    }

    /// dx = g · (Φ(u) + u·φ(u)) with u = x (+ bias).
    static func backward(_ x: UnsafePointer<Float>, bias: UnsafePointer<Float>?, columns: Int,
                         _ g: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>, count: Int) {
        rows(count: count, columns: columns) { offset, _, n in
            let xr = x + offset, gr = g + offset, dr = dx + offset
            if let bias {
                for j in 0..<n {
                    let u = xr[j] + bias[j], (cdf, density) = cdfAndDensity(u)
                    dr[j] = gr[j] * (cdf + u * density)
                }
            } else {
                for j in 0..<n {
                    let u = xr[j], (cdf, density) = cdfAndDensity(u)
                    dr[j] = gr[j] * (cdf + u * density)
                }
            }
        }
    }
}

/// min(max(x, low), high) as an activation (ReLU, ReLU6, clamp), on its own or fused into `batchNorm`. Its gradient
/// passes where low < x (and x < high when `gradientBelowHigh`: ReLU's is 1 at +infinity too).
public struct ClampActivation: Sendable, Equatable {
    public let low: Float, high: Float, gradientBelowHigh: Bool

    public static let relu = ClampActivation(low: 0, high: .infinity, gradientBelowHigh: false)
    public static let relu6 = ClampActivation(low: 0, high: 6, gradientBelowHigh: true)

    /// g where the gradient passes at `values` (the clamp's input or its output: the same test), else 0.
    func maskedGradient(_ g: Tensor, at values: Tensor) -> Tensor {
        var dx = Tensor(uninitializedShape: g.shape)
        let o = dx.mutablePointer, pg = g.pointer, px = values.pointer
        Parallel.forEach(dx.count, minimumChunk: 1 << 16) { r in
            ck_clamp_backward(px + r.lowerBound, pg + r.lowerBound, o + r.lowerBound, r.count, low, high,
                              gradientBelowHigh ? 1 : 0)
        }
        return dx
    }
}

// MARK: - Helpers of the fused Linear ops (here, in Normalization.swift and in Attention.swift)

/// Copies `row` (`width` floats) into each of `rows` rows: a GEMM's starting value for its bias.
func fillRows(_ out: UnsafeMutablePointer<Float>, rows: Int, with row: UnsafePointer<Float>, width: Int) {
    Parallel.forEach(rows, minimumChunk: max(1, 32768 / max(width, 1))) { range in
        for r in range { (out + r * width).update(from: row, count: width) }
    }
}

/// Sums of the columns of a [rows, columns] matrix, in `Parallel.reductionParts` parallel partial sums.
func sumColumns(_ p: UnsafePointer<Float>, rows: Int, columns: Int) -> [Float] {
    let chunks = max(1, min(Parallel.reductionParts, rows * columns / 65536))
    var partial = [Float](repeating: 0, count: chunks * columns)
    partial.withUnsafeMutableBufferPointer { buffer in
        let out = buffer.baseAddress!
        Parallel.forEach(chunks) { range in
            for chunk in range {
                let acc = out + chunk * columns
                for r in rows * chunk / chunks..<rows * (chunk + 1) / chunks {
                    let src = p + r * columns
                    for j in 0..<columns { acc[j] += src[j] }
                }
            }
        }
    }
    var total = Array(partial[0..<columns])
    for chunk in 1..<chunks { for j in 0..<columns { total[j] += partial[chunk * columns + j] } }
    return total
}

/// Backward of y = x·Wᵀ + b given dy [N, C]: accumulates dx = dy·W, dW = dyᵀ·x and db = Σ dy where needed.
func linearBackward(_ dy: Tensor, x: Variable, weight: Variable, bias: Variable?) {
    let n = dy.shape[0], c = dy.shape[1], k = weight.shape[1]
    if x.requiresGrad {
        var dx = Tensor(uninitializedShape: [n, k])
        BLAS.sgemm(m: n, n: k, k: c, a: dy.pointer, lda: c, b: weight.value.pointer, ldb: k, c: dx.mutablePointer, ldc: k)
        x.accumulate(dx)
    }
    if weight.requiresGrad {
        var dw = Tensor(uninitializedShape: [c, k])
        BLAS.sgemm(transA: true, m: c, n: k, k: n, a: dy.pointer, lda: c, b: x.value.pointer, ldb: k,
                   c: dw.mutablePointer, ldc: k)
        weight.accumulate(dw)
    }
    if let bias, bias.requiresGrad {
        bias.accumulate(Tensor(shape: [c], scalars: sumColumns(dy.pointer, rows: n, columns: c)))
    }
}
