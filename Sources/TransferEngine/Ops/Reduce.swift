// Reductions on the tape.

extension Tensor {
    /// Splits the shape around `axis` into (outer, length, inner) for strided loops.
    func around(_ axis: Int) -> (outer: Int, length: Int, inner: Int, axis: Int) {
        let ax = axis < 0 ? rank + axis : axis
        require(ax >= 0 && ax < rank, "axis \(axis) out of range for shape \(shape)")
        let outer = shape[..<ax].reduce(1, *), inner = shape[(ax + 1)...].reduce(1, *)
        return (outer, shape[ax], inner, ax)
    }

    /// Sum over one axis (kept as size 1 when `keepingDimension`).
    public func sum(axis: Int, keepingDimension: Bool = false) -> Tensor {
        let (outer, length, inner, ax) = around(axis)
        var s = shape
        if keepingDimension { s[ax] = 1 } else { s.remove(at: ax) }
        var out = Tensor(zeros: s)
        let o = out.mutablePointer, p = pointer
        for i in 0..<outer {
            for l in 0..<length {
                let src = p + (i * length + l) * inner, dst = o + i * inner
                for j in 0..<inner { dst[j] += src[j] }
            }
        }
        return out
    }
}

extension Variable {
    /// Sum of all elements, shape [].
    public func sum() -> Variable {
        let x = self
        return Autograd.result(Tensor(x.value.sum()), [x], record: Autograd.needsGrad(x)) { g in
            x.accumulate(Tensor(shape: x.shape, repeating: g.scalar))
        }
    }

    /// Mean of all elements, shape [].
    public func mean() -> Variable {
        require(value.count > 0, "mean of an empty tensor \(shape) is undefined")
        return sum() * (1 / Float(value.count))
    }

    /// Sum over one axis.
    public func sum(axis: Int, keepingDimension: Bool = false) -> Variable {
        let x = self
        let (outer, length, inner, ax) = x.value.around(axis)
        let y = x.value.sum(axis: ax, keepingDimension: keepingDimension)
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(uninitializedShape: x.shape)
            let o = dx.mutablePointer, pg = g.pointer
            for i in 0..<outer {
                for l in 0..<length {
                    (o + (i * length + l) * inner).update(from: pg + i * inner, count: inner)
                }
            }
            x.accumulate(dx)
        }
    }

    /// Mean over one axis.
    public func mean(axis: Int, keepingDimension: Bool = false) -> Variable {
        let length = value.dim(axis)
        require(length > 0, "mean over axis \(axis) of \(shape): the axis is empty, the mean is undefined")
        return sum(axis: axis, keepingDimension: keepingDimension) * (1 / Float(length))
    }
}
