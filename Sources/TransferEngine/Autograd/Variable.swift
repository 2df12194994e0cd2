import Foundation

/// A node of the autograd tape: a tensor value, its gradient, and how to send a gradient to its parents.
///
/// Every op is one function that computes its forward value and, only when some input needs a gradient and
/// recording is on, records a backward closure that accumulates into its parents (micrograd's pattern).
/// Nodes are numbered in creation order, so reverse numbering is a valid reverse topological order: that
/// numbering is the tape. Values that need no gradient record nothing, so a frozen backbone under
/// `Autograd.noGrad` runs at inference speed.
public final class Variable {
    public var value: Tensor
    /// Accumulated gradient (same shape as `value`), nil until a backward pass reaches this node.
    public var grad: Tensor?
    /// Leaves (parameters) set this; op results inherit it from their inputs.
    public var requiresGrad: Bool
    /// Optional name (parameters carry their file key here).
    public var name: String?

    let id: Int
    var parents: [Variable]
    var backwardFunction: ((Tensor) -> Void)?

    private static var counter = 0
    private static let counterLock = NSLock()
    private static func nextID() -> Int {
        counterLock.lock(); defer { counterLock.unlock() }
        counter += 1
        return counter
    }

    /// A leaf (an input or a parameter).
    public init(_ value: Tensor, requiresGrad: Bool = false, name: String? = nil) {
        self.value = value
        self.requiresGrad = requiresGrad
        self.name = name
        self.id = Variable.nextID()
        self.parents = []
    }

    init(value: Tensor, parents: [Variable], backward: @escaping (Tensor) -> Void) {
        self.value = value
        self.requiresGrad = true
        self.id = Variable.nextID()
        self.parents = parents
        self.backwardFunction = backward
    }

    public var shape: [Int] { value.shape }
    public var rank: Int { value.rank }

    /// Adds `g` into this node's gradient (gradients accumulate across uses and backward calls).
    public func accumulate(_ g: Tensor) {
        precondition(g.shape == value.shape || g.count == value.count,
                     "gradient of shape \(g.shape) does not fit value of shape \(value.shape)")
        if grad == nil {
            grad = g.shape == value.shape ? g : g.reshaped(value.shape)
        } else {
            grad!.addInPlace(g)
        }
    }

    public func zeroGrad() { grad = nil }

    /// Reverse-mode pass from this node. `seed` defaults to ones (so a scalar loss gets d loss/d loss = 1).
    /// Gradients of intermediate nodes are released afterwards; leaves keep theirs.
    public func backward(seed: Tensor? = nil) {
        precondition(requiresGrad, "backward: this value does not depend on anything that requires a gradient")
        var order: [Variable] = []
        var seen = Set<Int>()
        var stack: [Variable] = [self]
        while let node = stack.popLast() {
            guard node.requiresGrad, seen.insert(node.id).inserted else { continue }
            order.append(node)
            for p in node.parents where p.requiresGrad { stack.append(p) }
        }
        order.sort { $0.id > $1.id }
        accumulate(seed ?? Tensor(shape: value.shape, repeating: 1))
        for node in order {
            guard let fn = node.backwardFunction, let g = node.grad else { continue }
            fn(g)
            // Intermediate results: free the gradient and the recorded closure (and what it captured).
            node.grad = nil
            node.backwardFunction = nil
            node.parents = []
        }
    }

    /// Same value, cut from the tape.
    public func detached() -> Variable { Variable(value) }
}

/// Global recording switch.
public enum Autograd {
    public private(set) static var isRecording = true

    /// Runs `body` without recording any op (inference, frozen feature extraction).
    public static func noGrad<R>(_ body: () throws -> R) rethrows -> R {
        let previous = isRecording
        isRecording = false
        defer { isRecording = previous }
        return try body()
    }

    /// True when an op on `inputs` must record a backward closure.
    @inline(__always)
    public static func needsGrad(_ inputs: Variable...) -> Bool {
        guard isRecording else { return false }
        for v in inputs where v.requiresGrad { return true }
        return false
    }

    @inline(__always)
    public static func needsGrad(_ inputs: [Variable]) -> Bool {
        guard isRecording else { return false }
        for v in inputs where v.requiresGrad { return true }
        return false
    }

    /// Wraps an op's result: records `backward` only when `needsGrad` said so.
    @inline(__always)
    public static func result(_ value: Tensor, _ parents: [Variable], record: Bool,
                              backward: @escaping (Tensor) -> Void) -> Variable {
        record ? Variable(value: value, parents: parents, backward: backward) : Variable(value)
    }
}
