// Elementwise arithmetic on the tape, with numpy broadcasting.

extension Variable {
    public static func + (a: Variable, b: Variable) -> Variable {
        let y = a.value + b.value
        return Autograd.result(y, [a, b], record: Autograd.needsGrad(a, b)) { g in
            if a.requiresGrad { a.accumulate(g.sumToShape(a.shape)) }
            if b.requiresGrad { b.accumulate(g.sumToShape(b.shape)) }
        }
    }

    public static func - (a: Variable, b: Variable) -> Variable {
        let y = a.value - b.value
        return Autograd.result(y, [a, b], record: Autograd.needsGrad(a, b)) { g in
            if a.requiresGrad { a.accumulate(g.sumToShape(a.shape)) }
            if b.requiresGrad { b.accumulate((-g).sumToShape(b.shape)) }
        }
    }

    public static func * (a: Variable, b: Variable) -> Variable {
        let y = a.value * b.value
        return Autograd.result(y, [a, b], record: Autograd.needsGrad(a, b)) { g in
            if a.requiresGrad { a.accumulate((g * b.value).sumToShape(a.shape)) }
            if b.requiresGrad { b.accumulate((g * a.value).sumToShape(b.shape)) }
        }
    }

    public static func / (a: Variable, b: Variable) -> Variable {
        let y = a.value / b.value
        return Autograd.result(y, [a, b], record: Autograd.needsGrad(a, b)) { g in
            if a.requiresGrad { a.accumulate((g / b.value).sumToShape(a.shape)) }
            if b.requiresGrad {
                b.accumulate(Tensor.zipBroadcast(g * y, b.value, op: "divide") { -$0 / $1 }.sumToShape(b.shape))
            }
        }
    }

    public static func * (a: Variable, s: Float) -> Variable {
        Autograd.result(a.value * s, [a], record: Autograd.needsGrad(a)) { g in a.accumulate(g * s) }
    }

    public static func + (a: Variable, s: Float) -> Variable {
        Autograd.result(a.value + s, [a], record: Autograd.needsGrad(a)) { g in a.accumulate(g) }
    }

    public static prefix func - (a: Variable) -> Variable { a * -1 }

    /// Identity forward, gradient multiplied by `-lambda` backward (DANN's gradient reversal layer).
    public func gradientReversal(lambda: Float) -> Variable {
        let a = self
        return Autograd.result(a.value, [a], record: Autograd.needsGrad(a)) { g in a.accumulate(g * -lambda) }
    }
}
