import Foundation

// Raw (non-autograd) elementwise kernels with broadcasting. Ops in Ops/ build on these.

extension Tensor {
    /// numpy broadcasting of two shapes; a clash names both shapes.
    public static func broadcastShape(_ a: [Int], _ b: [Int], op: String = "broadcast") -> [Int] {
        let r = max(a.count, b.count)
        var out = [Int](repeating: 1, count: r)
        for i in 0..<r {
            let da = i < r - a.count ? 1 : a[i - (r - a.count)]
            let db = i < r - b.count ? 1 : b[i - (r - b.count)]
            require(da == db || da == 1 || db == 1, "\(op): shapes \(a) and \(b) clash (dimension \(i): \(da) vs \(db))")
            out[i] = da == 1 ? db : da   // numpy: 1 broadcasts to anything, 0 included
        }
        return out
    }

    /// Row-major strides of `shape` seen as broadcast into `target` (0 where broadcast).
    static func broadcastStrides(_ shape: [Int], to target: [Int]) -> [Int] {
        let r = target.count, off = r - shape.count
        var strides = [Int](repeating: 0, count: r)
        var s = 1
        for i in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[i + off] = shape[i] == 1 ? 0 : s
            s *= shape[i]
        }
        return strides
    }

    /// out = f(a, b) with broadcasting. Fast paths: equal shapes, scalar operand, trailing-suffix broadcast.
    @inline(__always)
    static func zipBroadcast(_ a: Tensor, _ b: Tensor, op: String, _ f: (Float, Float) -> Float) -> Tensor {
        if a.shape == b.shape {
            var out = Tensor(uninitializedShape: a.shape)
            let o = out.mutablePointer, pa = a.pointer, pb = b.pointer
            for i in 0..<a.count { o[i] = f(pa[i], pb[i]) }
            return out
        }
        let shape = broadcastShape(a.shape, b.shape, op: op)
        var out = Tensor(uninitializedShape: shape)
        let o = out.mutablePointer, pa = a.pointer, pb = b.pointer
        let n = out.count
        if b.count == 1 {
            let s = pb[0]
            if a.count == n { for i in 0..<n { o[i] = f(pa[i], s) }; return out }
        }
        if a.count == 1 {
            let s = pa[0]
            if b.count == n { for i in 0..<n { o[i] = f(s, pb[i]) }; return out }
        }
        if a.count == n, b.count > 0, Array(shape.suffix(b.rank)) == b.shape {
            // b repeats every b.count elements of a.
            let m = b.count
            for r in 0..<(n / m) { let base = r * m; for j in 0..<m { o[base + j] = f(pa[base + j], pb[j]) } }
            return out
        }
        // General case: walk the output index with per-operand strides.
        let sa = broadcastStrides(a.shape, to: shape), sb = broadcastStrides(b.shape, to: shape)
        var idx = [Int](repeating: 0, count: shape.count)
        var ia = 0, ib = 0
        for i in 0..<n {
            o[i] = f(pa[ia], pb[ib])
            var d = shape.count - 1
            while d >= 0 {
                idx[d] += 1; ia += sa[d]; ib += sb[d]
                if idx[d] < shape[d] { break }
                ia -= sa[d] * shape[d]; ib -= sb[d] * shape[d]; idx[d] = 0
                d -= 1
            }
        }
        return out
    }

    /// Sums `self` (a broadcast result) back down to `shape`: the gradient of broadcasting.
    public func sumToShape(_ target: [Int]) -> Tensor {
        if shape == target { return self }
        let n = Tensor.elementCount(target)
        if n == count { return reshaped(target) }
        var out = Tensor(zeros: target)
        let o = out.mutablePointer, p = pointer
        if n == 1 {
            var s: Float = 0
            for i in 0..<count { s += p[i] }
            o[0] = s
            return out
        }
        if Array(shape.suffix(target.count)) == target {
            for r in 0..<(count / n) { let base = r * n; for j in 0..<n { o[j] += p[base + j] } }
            return out
        }
        let st = Tensor.broadcastStrides(target, to: shape)
        var idx = [Int](repeating: 0, count: shape.count)
        var it = 0
        for i in 0..<count {
            o[it] += p[i]
            var d = shape.count - 1
            while d >= 0 {
                idx[d] += 1; it += st[d]
                if idx[d] < shape[d] { break }
                it -= st[d] * shape[d]; idx[d] = 0
                d -= 1
            }
        }
        return out
    }

    @inline(__always)
    public func map(_ f: (Float) -> Float) -> Tensor {
        var out = Tensor(uninitializedShape: shape)
        let o = out.mutablePointer, p = pointer
        for i in 0..<count { o[i] = f(p[i]) }
        return out
    }

    /// self += other (same element count).
    public mutating func addInPlace(_ other: Tensor, scale: Float = 1) {
        require(other.count == count, "addInPlace: shapes \(shape) and \(other.shape) clash")
        let o = mutablePointer, p = other.pointer
        if scale == 1 { for i in 0..<count { o[i] += p[i] } } else { for i in 0..<count { o[i] += scale * p[i] } }
    }

    public mutating func scaleInPlace(_ s: Float) {
        let o = mutablePointer
        for i in 0..<count { o[i] *= s }
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor { zipBroadcast(a, b, op: "add") { $0 + $1 } }
    public static func - (a: Tensor, b: Tensor) -> Tensor { zipBroadcast(a, b, op: "subtract") { $0 - $1 } }
    public static func * (a: Tensor, b: Tensor) -> Tensor { zipBroadcast(a, b, op: "multiply") { $0 * $1 } }
    public static func / (a: Tensor, b: Tensor) -> Tensor { zipBroadcast(a, b, op: "divide") { $0 / $1 } }
    public static func * (a: Tensor, s: Float) -> Tensor { a.map { $0 * s } }
    public static func + (a: Tensor, s: Float) -> Tensor { a.map { $0 + s } }
    public static prefix func - (a: Tensor) -> Tensor { a.map { -$0 } }

    public func sum() -> Float {
        var s: Double = 0
        let p = pointer
        for i in 0..<count { s += Double(p[i]) }
        return Float(s)
    }

    public func mean() -> Float { count == 0 ? 0 : sum() / Float(count) }

    public func maxValue() -> Float { scalars.max() ?? -.infinity }

    /// Index of the largest value in each row of a [rows, columns] tensor.
    public func argmaxRows() -> [Int] {
        require(rank == 2, "argmaxRows needs a 2-D tensor, got \(shape)")
        let cols = shape[1], p = pointer
        require(cols > 0 || shape[0] == 0, "argmaxRows: rows of \(shape) have no columns")
        return (0..<shape[0]).map { r in
            var best = 0
            for c in stride(from: 1, to: cols, by: 1) where p[r * cols + c] > p[r * cols + best] { best = c }
            return best
        }
    }

    /// Largest absolute elementwise difference (for tests and golden comparisons).
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(count == other.count, "maxAbsDifference: shapes \(shape) and \(other.shape) clash")
        var m: Float = 0
        let a = pointer, b = other.pointer
        for i in 0..<count { m = Swift.max(m, abs(a[i] - b[i])) }
        return m
    }
}
