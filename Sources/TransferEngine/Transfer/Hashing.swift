import Foundation

/// 64-bit FNV-1a, for cache keys (not for security).
public struct FNV64 {
    public private(set) var value: UInt64 = 0xCBF2_9CE4_8422_2325

    public init() {}

    public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        var h = value
        for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
        value = h
    }

    public mutating func add(_ string: String) {
        var s = string
        s.withUTF8 { add(UnsafeRawBufferPointer($0)) }
        add([0xFF])  // separator: "ab"+"c" differs from "a"+"bc"
    }

    public mutating func add(_ bytes: [UInt8]) { bytes.withUnsafeBytes { add($0) } }

    public mutating func add(_ tensor: Tensor) {
        add("\(tensor.shape)")
        tensor.withUnsafeBufferPointer { add(UnsafeRawBufferPointer($0)) }
    }

    public var hex: String { String(format: "%016llx", value) }
}

extension Module {
    /// Hash of every parameter and buffer (names, shapes, values): identifies the weights for caches.
    public func weightsHash() -> String { weightsHash { _ in true } }

    /// Hash of the parameters and buffers whose names pass `include`.
    func weightsHash(_ include: (String) -> Bool) -> String {
        var h = FNV64()
        for (name, t) in stateDict().sorted(by: { $0.key < $1.key }) where include(name) {
            h.add(name)
            h.add(t)
        }
        return h.hex
    }
}

extension Backbone {
    /// Hash of the parameters and buffers of blocks `range`: with the input, what their output depends on.
    func weightsHash(blocks range: Range<Int>) -> String {
        let prefixes = blocks[range].flatMap { $0 }
        return weightsHash { name in prefixes.contains { Module.matches(name, $0) } }
    }
}
