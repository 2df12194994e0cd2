import Foundation

/// Parameters that share a learning-rate multiplier and a weight decay (PyTorch's param_groups).
///
/// Discriminative fine-tuning puts the pretrained layers in a group with a small multiplier and the new head in
/// one with multiplier 1. A group may hold frozen parameters: they are skipped until unfrozen, so gradual
/// unfreezing needs no new optimizer. State is exported under each parameter's name, so give groups the full
/// dotted names (`init(named:)`, `init(module:)`); unnamed parameters fall back to "group<g>.<i>".
public struct ParameterGroup {
    public var parameters: [Variable]
    /// Full names for state export, parallel to `parameters`; nil: positional names.
    public var names: [String]?
    /// The group's learning rate is the optimizer's `learningRate` times this.
    public var lrMultiplier: Float
    /// nil: the optimizer's weight decay.
    public var weightDecay: Float?

    public init(parameters: [Variable], lrMultiplier: Float = 1, weightDecay: Float? = nil) {
        self.parameters = parameters
        self.names = nil
        self.lrMultiplier = lrMultiplier
        self.weightDecay = weightDecay
    }

    public init(named: [(name: String, variable: Variable)], lrMultiplier: Float = 1, weightDecay: Float? = nil) {
        self.parameters = named.map(\.variable)
        self.names = named.map(\.name)
        self.lrMultiplier = lrMultiplier
        self.weightDecay = weightDecay
    }

    /// The parameters of `module` whose names start with one of `prefixes` (all if empty) and with none of
    /// `excluding`, named by their full dotted path (plus `namePrefix`, e.g. when the module is a child).
    public init(module: Module, prefixes: [String] = [], excluding: [String] = [], namePrefix: String = "",
                lrMultiplier: Float = 1, weightDecay: Float? = nil) {
        let chosen = module.namedParameters(prefix: namePrefix).filter { p in
            let local = String(p.name.dropFirst(namePrefix.count))
            return (prefixes.isEmpty || prefixes.contains { Module.matches(local, $0) })
                && !excluding.contains { Module.matches(local, $0) }
        }
        self.init(named: chosen, lrMultiplier: lrMultiplier, weightDecay: weightDecay)
    }
}

/// A first-order optimizer over parameter groups.
///
/// Usage per batch: `zeroGrad()`, forward, `loss.backward()`, optionally `clipGradientNorm`, then `step()`
/// (or `step(lr:)` with a schedule's value). Only parameters with `requiresGrad` and a gradient are updated;
/// their state is allocated on their first update. `stateDict()` / `loadStateDict(_:)` export and restore
/// the state as named tensors so a killed run resumes with bit-identical updates.
public protocol Optimizer: AnyObject {
    var groups: [ParameterGroup] { get set }
    /// Base learning rate; each group uses `learningRate * lrMultiplier`. Schedules set it every step.
    var learningRate: Float { get set }
    /// Number of `step()` calls so far (restored by `loadStateDict`).
    var stepCount: Int { get }
    /// Applies one update with the current `learningRate`.
    func step()
    /// The state as named tensors: per-parameter buffers keyed "<kind>.<buffer>.<parameter name>", plus
    /// "<kind>.step" (a scalar; counters are Float32, exact up to 2^24 steps).
    func stateDict() -> [String: Tensor]
    /// Replaces the state with `state` (as made by `stateDict()`). Unknown names, missing buffers or wrong
    /// shapes throw `EngineError.invalidFile(source, ...)`.
    func loadStateDict(_ state: [String: Tensor], source: String) throws
}

extension Optimizer {
    /// Sets `learningRate` and steps.
    public func step(lr: Float) {
        learningRate = lr
        step()
    }

    /// Every parameter of every group.
    public var parameters: [Variable] { groups.flatMap(\.parameters) }

    /// Clears the gradient of every parameter in the groups.
    public func zeroGrad() { for p in parameters { p.grad = nil } }

    public func loadStateDict(_ state: [String: Tensor]) throws {
        try loadStateDict(state, source: "optimizer state")
    }
}

/// Per-parameter state shared by the optimizers: keyed by object identity, holding the variable strongly so
/// that its identifier cannot be reused by another object while the state lives.
struct ParameterSlot<State> {
    let variable: Variable
    var state: State
}

/// What one step needs to know about a parameter.
struct StepItem {
    let variable: Variable
    let gradient: Tensor
    let learningRate: Float
    let weightDecay: Float
}

enum OptimizerSupport {
    /// Names of every parameter, group by group (explicit names, else "group<g>.<i>"). Duplicates are a
    /// programming error: two parameters would share one state entry.
    static func names(_ groups: [ParameterGroup], kind: String) -> [(name: String, variable: Variable)] {
        var out: [(String, Variable)] = []
        var seenNames = Set<String>(), seenObjects = Set<ObjectIdentifier>()
        for (g, group) in groups.enumerated() {
            if let names = group.names {
                precondition(names.count == group.parameters.count,
                             "\(kind): group \(g) has \(group.parameters.count) parameters but \(names.count) names")
            }
            for (i, v) in group.parameters.enumerated() {
                let name = group.names?[i] ?? "group\(g).\(i)"
                precondition(seenNames.insert(name).inserted, "\(kind): two parameters are named '\(name)'")
                precondition(seenObjects.insert(ObjectIdentifier(v)).inserted,
                             "\(kind): parameter '\(name)' appears twice in the groups")
                out.append((name, v))
            }
        }
        return out
    }

    /// The parameters to update now: trainable, with a gradient of the right size.
    static func items(_ groups: [ParameterGroup], learningRate: Float, weightDecay: Float, kind: String) -> [StepItem] {
        var out: [StepItem] = []
        for group in groups {
            let lr = learningRate * group.lrMultiplier
            let wd = group.weightDecay ?? weightDecay
            for v in group.parameters where v.requiresGrad {
                guard let g = v.grad else { continue }
                precondition(g.count == v.value.count,
                             "\(kind): gradient of shape \(g.shape) does not fit parameter of shape \(v.value.shape)")
                out.append(StepItem(variable: v, gradient: g, learningRate: lr, weightDecay: wd))
            }
        }
        return out
    }

    /// Runs `body` over `0..<count` in parallel chunks for big parameters (embedding tables, big matrices).
    @inline(__always)
    static func forChunks(_ count: Int, _ body: (Range<Int>) -> Void) {
        Parallel.forEach(count, minimumChunk: 1 << 16, body)
    }

    /// Reads a scalar step counter: a non-negative whole number.
    static func counter(_ state: [String: Tensor], _ key: String, source: String) throws -> Int {
        guard let t = state[key] else { throw EngineError.invalidFile(source, "missing '\(key)'") }
        guard t.count == 1, t.scalar >= 0, t.scalar == t.scalar.rounded(), t.scalar < 16_777_216 else {
            throw EngineError.invalidFile(source, "'\(key)' must be one non-negative whole number, got \(t)")
        }
        return Int(t.scalar)
    }

    /// Checks that a state buffer fits its parameter.
    static func buffer(_ t: Tensor, key: String, fits v: Variable, source: String) throws -> Tensor {
        guard t.count == v.value.count else {
            throw EngineError.invalidFile(source, "'\(key)' has shape \(t.shape), the parameter has \(v.value.shape)")
        }
        return t.reshaped(v.value.shape)
    }
}
