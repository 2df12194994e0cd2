import Foundation

/// Base class of every layer and network.
///
/// A module registers its parameters, buffers (e.g. BatchNorm running statistics) and children under the names
/// used by the pretrained files, so `_blocks.7._depthwise_conv.weight` or
/// `encoder.layer.3.attention.self.query.weight` is a dotted path through the module tree: loading and saving
/// are a 1:1 map, and freezing is by name prefix.
open class Module {
    public private(set) var ownParameters: [(name: String, variable: Variable)] = []
    public private(set) var ownBuffers: [(name: String, variable: Variable)] = []
    public private(set) var children: [(name: String, module: Module)] = []

    /// Training mode (dropout active, BatchNorm uses batch statistics). Set recursively with `train(_:)`.
    public private(set) var isTraining = true

    public init() {}

    /// Registers `variable` as a trainable parameter named `name` (its last path component).
    @discardableResult
    public func register(parameter name: String, _ variable: Variable) -> Variable {
        variable.name = name
        variable.requiresGrad = true
        ownParameters.append((name, variable))
        return variable
    }

    /// Registers a non-trainable tensor (e.g. running statistics) saved and loaded with the parameters.
    @discardableResult
    public func register(buffer name: String, _ variable: Variable) -> Variable {
        variable.name = name
        variable.requiresGrad = false
        ownBuffers.append((name, variable))
        return variable
    }

    @discardableResult
    public func child<M: Module>(_ name: String, _ module: M) -> M {
        children.append((name, module))
        return module
    }

    /// Every parameter with its full dotted name, in registration order.
    public func namedParameters(prefix: String = "") -> [(name: String, variable: Variable)] {
        var out = ownParameters.map { (prefix + $0.name, $0.variable) }
        for c in children { out += c.module.namedParameters(prefix: prefix + c.name + ".") }
        return out
    }

    public func namedBuffers(prefix: String = "") -> [(name: String, variable: Variable)] {
        var out = ownBuffers.map { (prefix + $0.name, $0.variable) }
        for c in children { out += c.module.namedBuffers(prefix: prefix + c.name + ".") }
        return out
    }

    /// Every module in the tree with its dotted name ("" for self), parents before children.
    public func namedModules(prefix: String = "") -> [(name: String, module: Module)] {
        var out: [(String, Module)] = [(prefix.hasSuffix(".") ? String(prefix.dropLast()) : prefix, self)]
        for c in children { out += c.module.namedModules(prefix: prefix + c.name + ".") }
        return out
    }

    public var parameters: [Variable] { namedParameters().map(\.variable) }
    public var trainableParameters: [Variable] { parameters.filter(\.requiresGrad) }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    /// Sets training mode on the whole tree.
    open func train(_ on: Bool = true) {
        isTraining = on
        for c in children { c.module.train(on) }
    }

    /// Freezes (no gradient) every parameter whose dotted name starts with one of `prefixes` (all if empty).
    public func freeze(_ prefixes: [String] = []) { setTrainable(false, prefixes) }

    /// Unfreezes every parameter whose dotted name starts with one of `prefixes` (all if empty).
    public func unfreeze(_ prefixes: [String] = []) { setTrainable(true, prefixes) }

    private func setTrainable(_ on: Bool, _ prefixes: [String]) {
        for (name, v) in namedParameters() where prefixes.isEmpty || prefixes.contains(where: { Module.matches(name, $0) }) {
            v.requiresGrad = on
            if !on { v.grad = nil }
        }
    }

    /// A name matches a prefix at a dot boundary: "_blocks.1" matches "_blocks.1.x" but not "_blocks.10.x".
    public static func matches(_ name: String, _ prefix: String) -> Bool {
        prefix.isEmpty || name == prefix || name.hasPrefix(prefix.hasSuffix(".") ? prefix : prefix + ".")
    }

    public func zeroGrad() { for p in parameters { p.grad = nil } }

    /// Parameters and buffers by full name.
    public func stateDict() -> [String: Tensor] {
        var d: [String: Tensor] = [:]
        for (n, v) in namedParameters() + namedBuffers() { d[n] = v.value }
        return d
    }

    /// Loads tensors by full name. Shapes must match; with `strict`, every parameter and buffer must be present.
    /// Returns the keys of `state` that the module does not use.
    @discardableResult
    public func load(_ state: [String: Tensor], strict: Bool = true, source: String = "state") throws -> [String] {
        var used = Set<String>()
        for (n, v) in namedParameters() + namedBuffers() {
            guard let t = state[n] else {
                if strict { throw EngineError.invalidFile(source, "missing tensor '\(n)'") }
                continue
            }
            guard t.shape == v.value.shape else {
                throw EngineError.invalidFile(source, "tensor '\(n)' has shape \(t.shape), the model needs \(v.value.shape)")
            }
            v.value = t
            used.insert(n)
        }
        return state.keys.filter { !used.contains($0) }.sorted()
    }
}

/// Errors the engine reports to users: one line naming the file or thing and the problem.
public enum EngineError: Error, CustomStringConvertible, Equatable {
    case invalidFile(String, String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case let .invalidFile(file, problem): return "\(file): \(problem)".printable
        case let .invalidArgument(problem): return problem.printable
        }
    }

    /// The reason of a Foundation file error in plain words ("Permission denied", "Not a directory"): the POSIX
    /// error beneath it when there is one. Foundation's own text is `Error Domain=NSCocoaErrorDomain Code=516 ...`.
    public static func reason(of error: Error) -> String {
        let ns = error as NSError
        let posix = (ns.userInfo[NSUnderlyingErrorKey] as? Error).map { $0 as NSError } ?? ns
        if posix.domain == NSPOSIXErrorDomain { return String(cString: strerror(Int32(posix.code))) }
        return ns.domain == NSCocoaErrorDomain ? ns.localizedDescription : "\(error)"
    }

    /// A Foundation file error that names its file as one `invalidFile` line (path: reason); other errors as they are.
    public static func plain(_ error: Error) -> Error {
        let ns = error as NSError
        guard !(error is EngineError), ns.domain == NSCocoaErrorDomain,
              let path = ns.userInfo[NSFilePathErrorKey] as? String ?? (ns.userInfo[NSURLErrorKey] as? URL)?.path else { return error }
        return EngineError.invalidFile(path, reason(of: error))
    }
}

/// A module that only holds named children, each a segment of its parameters' dotted names (PyTorch's
/// ModuleDict; `list:` names them "0", "1", ... as ModuleList does).
public final class ModuleGroup: Module {
    public init(_ parts: [(String, Module)]) {
        super.init()
        for (name, m) in parts { child(name, m) }
    }

    public convenience init(list: [Module]) {
        self.init(list.enumerated().map { (String($0.offset), $0.element) })
    }
}
