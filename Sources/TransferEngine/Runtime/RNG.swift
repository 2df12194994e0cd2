/// The one seeded random generator behind every random choice (initialisation, shuffling, augmentation,
/// splits, dropout). xoshiro256** seeded through SplitMix64; its state is four words, saved in checkpoints so a
/// resumed run continues the same stream.
public struct RNG: RandomNumberGenerator, Sendable, Equatable {
    public private(set) var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var s = seed
        func splitmix() -> UInt64 {
            s &+= 0x9E37_79B9_7F4A_7C15
            var z = s
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    /// Restores a generator from `stateWords` (as saved from `stateWords`).
    public init(stateWords w: [UInt64]) {
        precondition(w.count == 4, "RNG state needs 4 words")
        state = (w[0], w[1], w[2], w[3])
    }

    public var stateWords: [UInt64] { [state.0, state.1, state.2, state.3] }

    public static func == (a: RNG, b: RNG) -> Bool { a.stateWords == b.stateWords }

    public mutating func next() -> UInt64 {
        let result = rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotl(state.3, 45)
        return result
    }

    private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in [0, 1).
    public mutating func uniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform in [low, high).
    public mutating func uniform(_ low: Float, _ high: Float) -> Float { low + (high - low) * Float(uniform()) }

    /// Standard normal (Box-Muller; one draw per call so the stream does not depend on call parity).
    public mutating func normal() -> Float {
        var u1 = uniform()
        while u1 <= 1e-300 { u1 = uniform() }
        let u2 = uniform()
        return Float((-2 * _log(u1)).squareRoot() * _cos(2 * Double.pi * u2))
    }

    /// Uniform integer in 0..<bound.
    public mutating func int(below bound: Int) -> Int {
        precondition(bound > 0, "RNG.int(below:) needs a positive bound")
        return Int(next(upperBound: UInt64(bound)))
    }

    /// A seeded Fisher-Yates permutation of 0..<n.
    public mutating func permutation(_ n: Int) -> [Int] {
        var p = Array(0..<n)
        shuffle(&p)
        return p
    }

    public mutating func shuffle<T>(_ a: inout [T]) {
        guard a.count > 1 else { return }
        for i in stride(from: a.count - 1, to: 0, by: -1) {
            a.swapAt(i, int(below: i + 1))
        }
    }

    /// A tensor of normal values with the given standard deviation.
    public mutating func normalTensor(_ shape: [Int], std: Float = 1) -> Tensor {
        var t = Tensor(uninitializedShape: shape)
        let p = t.mutablePointer
        for i in 0..<t.count { p[i] = normal() * std }
        return t
    }

    /// A tensor of values uniform in [low, high).
    public mutating func uniformTensor(_ shape: [Int], _ low: Float, _ high: Float) -> Tensor {
        var t = Tensor(uninitializedShape: shape)
        let p = t.mutablePointer
        for i in 0..<t.count { p[i] = uniform(low, high) }
        return t
    }
}

import Foundation
@inline(__always) private func _log(_ x: Double) -> Double { Foundation.log(x) }
@inline(__always) private func _cos(_ x: Double) -> Double { Foundation.cos(x) }
