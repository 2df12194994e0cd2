import Foundation

/// Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay, with PyTorch's
/// exact semantics (torch.optim.SGD):
///
///     d = g + wd * p
///     buf = d                                  (first update of this parameter)
///     buf = momentum * buf + (1 - dampening) * d  (later updates)
///     d = nesterov ? d + momentum * buf : buf
///     p -= lr * d
///
/// Momentum and dampening are Double because PyTorch takes them as Python floats: `1 - dampening` and the
/// like are formed in double precision, then rounded once to Float for the update. PyTorch's CPU kernels fuse
/// each `a + s * b` into one FMA; here they stay two operations (a portable x86-64 build calls libm's fmaf per
/// element: 1.6x slower for AdamW, 4x for SGD), so results differ from PyTorch's by an ulp now and then.
public final class SGD: Optimizer {
    public var groups: [ParameterGroup]
    public var learningRate: Float
    public let momentum: Double
    public let dampening: Double
    public let nesterov: Bool
    /// Default for groups whose `weightDecay` is nil.
    public let weightDecay: Float
    public private(set) var stepCount = 0

    private var buffers: [ObjectIdentifier: ParameterSlot<Tensor>] = [:]

    public init(groups: [ParameterGroup], learningRate: Float, momentum: Double = 0, dampening: Double = 0,
                nesterov: Bool = false, weightDecay: Float = 0) {
        precondition(learningRate >= 0, "SGD: learning rate \(learningRate) is negative")
        precondition(momentum >= 0 && dampening >= 0, "SGD: momentum \(momentum) and dampening \(dampening) must be >= 0")
        precondition(!nesterov || (momentum > 0 && dampening == 0), "SGD: Nesterov momentum needs momentum > 0 and no dampening")
        self.groups = groups
        self.learningRate = learningRate
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
        self.weightDecay = weightDecay
        _ = OptimizerSupport.names(groups, kind: "SGD")
    }

    public convenience init(parameters: [Variable], learningRate: Float, momentum: Double = 0, dampening: Double = 0,
                            nesterov: Bool = false, weightDecay: Float = 0) {
        self.init(groups: [ParameterGroup(parameters: parameters)], learningRate: learningRate, momentum: momentum,
                  dampening: dampening, nesterov: nesterov, weightDecay: weightDecay)
    }

    /// Number of parameters holding a momentum buffer (those updated at least once).
    public var stateCount: Int { buffers.count }

    public func step() {
        stepCount += 1
        let m = Float(momentum), keep = Float(1 - dampening)
        for item in OptimizerSupport.items(groups, learningRate: learningRate, weightDecay: weightDecay, kind: "SGD") {
            let v = item.variable, key = ObjectIdentifier(v)
            let wd = item.weightDecay, negLR = -item.learningRate
            let n = v.value.count
            let p = v.value.mutablePointer, g = item.gradient.pointer
            if momentum == 0 {
                OptimizerSupport.forChunks(n) { r in for i in r { p[i] = p[i] + negLR * (g[i] + wd * p[i]) } }
                continue
            }
            let fresh = buffers[key] == nil
            if fresh { buffers[key] = ParameterSlot(variable: v, state: Tensor(uninitializedShape: v.value.shape)) }
            let b = buffers[key]!.state.mutablePointer
            let nesterov = self.nesterov
            OptimizerSupport.forChunks(n) { r in
                for i in r {
                    let d = wd == 0 ? g[i] : g[i] + wd * p[i]
                    let buf = fresh ? d : m * b[i] + keep * d
                    b[i] = buf
                    p[i] = p[i] + negLR * (nesterov ? d + m * buf : buf)
                }
            }
        }
    }

    public func stateDict() -> [String: Tensor] {
        var out: [String: Tensor] = ["sgd.step": Tensor(Float(stepCount))]
        for (name, v) in OptimizerSupport.names(groups, kind: "SGD") {
            if let slot = buffers[ObjectIdentifier(v)] { out["sgd.momentum." + name] = slot.state }
        }
        return out
    }

    public func loadStateDict(_ state: [String: Tensor], source: String) throws {
        let steps = try OptimizerSupport.counter(state, "sgd.step", source: source)
        var byName: [String: Variable] = [:]
        for (name, v) in OptimizerSupport.names(groups, kind: "SGD") { byName[name] = v }
        var loaded: [ObjectIdentifier: ParameterSlot<Tensor>] = [:]
        for (key, t) in state where key != "sgd.step" {
            guard key.hasPrefix("sgd.momentum."), let v = byName[String(key.dropFirst("sgd.momentum.".count))] else {
                throw EngineError.invalidFile(source, "unknown SGD state '\(key)'")
            }
            loaded[ObjectIdentifier(v)] = ParameterSlot(variable: v, state: try OptimizerSupport.buffer(t, key: key, fits: v, source: source))
        }
        buffers = loaded
        stepCount = steps
    }
}
