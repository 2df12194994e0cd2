import Foundation

/// Adam with decoupled weight decay, with PyTorch's exact semantics (torch.optim.AdamW):
///
///     p *= 1 - lr * wd
///     m = beta1 * m + (1 - beta1) * g
///     v = beta2 * v + (1 - beta2) * g * g
///     p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
///
/// `t` counts the updates of each parameter, so a parameter unfrozen late gets its own bias correction.
/// Betas and epsilon are Double because PyTorch takes them as Python floats, and `1 - 0.999` in Float is off by
/// 1e-5 relative; the per-step scalars are formed in Double and rounded once, as PyTorch does. Results agree
/// with PyTorch's to about an ulp (it fuses `a + s * b` into FMAs, see `SGD`, and its learning rate is a double).
public final class AdamW: Optimizer {
    public var groups: [ParameterGroup]
    public var learningRate: Float
    public let beta1: Double
    public let beta2: Double
    public let epsilon: Double
    /// Default for groups whose `weightDecay` is nil (PyTorch's AdamW default is 0.01).
    public let weightDecay: Float
    public private(set) var stepCount = 0

    struct Moments {
        var m: Tensor
        var v: Tensor
        var t: Int
    }

    private var moments: [ObjectIdentifier: ParameterSlot<Moments>] = [:]

    public init(groups: [ParameterGroup], learningRate: Float = 1e-3, beta1: Double = 0.9, beta2: Double = 0.999,
                epsilon: Double = 1e-8, weightDecay: Float = 0.01) {
        precondition(learningRate >= 0, "AdamW: learning rate \(learningRate) is negative")
        precondition((0..<1).contains(beta1) && (0..<1).contains(beta2), "AdamW: betas \(beta1), \(beta2) must be in [0, 1)")
        precondition(epsilon >= 0, "AdamW: epsilon \(epsilon) is negative")
        self.groups = groups
        self.learningRate = learningRate
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.weightDecay = weightDecay
        _ = OptimizerSupport.names(groups, kind: "AdamW")
    }

    public convenience init(parameters: [Variable], learningRate: Float = 1e-3, beta1: Double = 0.9,
                            beta2: Double = 0.999, epsilon: Double = 1e-8, weightDecay: Float = 0.01) {
        self.init(groups: [ParameterGroup(parameters: parameters)], learningRate: learningRate, beta1: beta1,
                  beta2: beta2, epsilon: epsilon, weightDecay: weightDecay)
    }

    /// Number of parameters holding moments (those updated at least once).
    public var stateCount: Int { moments.count }

    public func step() {
        stepCount += 1
        let b1 = Float(beta1), b2 = Float(beta2), oneMinusB1 = Float(1 - beta1), oneMinusB2 = Float(1 - beta2)
        let eps = Float(epsilon)
        for item in OptimizerSupport.items(groups, learningRate: learningRate, weightDecay: weightDecay, kind: "AdamW") {
            let v = item.variable, key = ObjectIdentifier(v)
            if moments[key] == nil {
                moments[key] = ParameterSlot(variable: v, state: Moments(m: Tensor(zeros: v.value.shape),
                                                                        v: Tensor(zeros: v.value.shape), t: 0))
            }
            moments[key]!.state.t += 1
            let t = Double(moments[key]!.state.t)
            let lr = Double(item.learningRate)
            let decay = Float(1 - lr * Double(item.weightDecay))
            let stepSize = Float(lr / (1 - pow(beta1, t)))
            let correction2 = Float((1 - pow(beta2, t)).squareRoot())
            let m = moments[key]!.state.m.mutablePointer, s = moments[key]!.state.v.mutablePointer
            let p = v.value.mutablePointer, g = item.gradient.pointer
            OptimizerSupport.forChunks(v.value.count) { r in
                for i in r {
                    let gi = g[i]
                    let mi = b1 * m[i] + oneMinusB1 * gi
                    let si = b2 * s[i] + oneMinusB2 * gi * gi
                    m[i] = mi
                    s[i] = si
                    p[i] = p[i] * decay - stepSize * (mi / (si.squareRoot() / correction2 + eps))
                }
            }
        }
    }

    public func stateDict() -> [String: Tensor] {
        var out: [String: Tensor] = ["adam.step": Tensor(Float(stepCount))]
        for (name, v) in OptimizerSupport.names(groups, kind: "AdamW") {
            guard let slot = moments[ObjectIdentifier(v)] else { continue }
            out["adam.m." + name] = slot.state.m
            out["adam.v." + name] = slot.state.v
            out["adam.t." + name] = Tensor(Float(slot.state.t))
        }
        return out
    }

    public func loadStateDict(_ state: [String: Tensor], source: String) throws {
        let steps = try OptimizerSupport.counter(state, "adam.step", source: source)
        var byName: [String: Variable] = [:]
        for (name, v) in OptimizerSupport.names(groups, kind: "AdamW") { byName[name] = v }
        var loaded: [ObjectIdentifier: ParameterSlot<Moments>] = [:]
        for key in state.keys.sorted() where key != "adam.step" {
            let name: String
            if key.hasPrefix("adam.m.") { name = String(key.dropFirst("adam.m.".count)) }
            else if key.hasPrefix("adam.v.") || key.hasPrefix("adam.t.") { continue }
            else { throw EngineError.invalidFile(source, "unknown AdamW state '\(key)'") }
            guard let v = byName[name] else { throw EngineError.invalidFile(source, "unknown AdamW state '\(key)'") }
            guard let second = state["adam.v." + name] else { throw EngineError.invalidFile(source, "missing 'adam.v.\(name)'") }
            let m = try OptimizerSupport.buffer(state[key]!, key: key, fits: v, source: source)
            let s = try OptimizerSupport.buffer(second, key: "adam.v." + name, fits: v, source: source)
            let t = try OptimizerSupport.counter(state, "adam.t." + name, source: source)
            loaded[ObjectIdentifier(v)] = ParameterSlot(variable: v, state: Moments(m: m, v: s, t: t))
        }
        // Second moments or counters without a first moment belong to nothing.
        for key in state.keys where key.hasPrefix("adam.v.") || key.hasPrefix("adam.t.") {
            let name = String(key.dropFirst(7))
            guard let v = byName[name], loaded[ObjectIdentifier(v)] != nil else {
                throw EngineError.invalidFile(source, state["adam.m." + name] == nil && byName[name] != nil
                                              ? "missing 'adam.m.\(name)'" : "unknown AdamW state '\(key)'")
            }
        }
        moments = loaded
        stepCount = steps
    }
}
