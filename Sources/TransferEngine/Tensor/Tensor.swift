import Foundation

/// Reference-counted, 64-byte aligned Float32 buffer behind `Tensor`.
///
/// Freed buffers go back to `BufferPool`, so the activations of the next batch reuse the same memory
/// instead of being mmapped and page-faulted anew (glibc serves large blocks with mmap).
final class TensorStorage {
    let count: Int
    let pointer: UnsafeMutablePointer<Float>

    init(count: Int) {
        self.count = count
        self.pointer = BufferPool.shared.take(count)
    }

    deinit { BufferPool.shared.give(pointer, count: count) }
}

/// A contiguous row-major Float32 tensor with value semantics (copy on write).
///
/// Shapes are `[Int]`; a scalar has shape `[]` and one element. Image tensors are NHWC (channels last) so that
/// 1x1 convolutions are plain matrix products and depthwise kernels vectorise over channels.
public struct Tensor: @unchecked Sendable {
    public private(set) var shape: [Int]
    var storage: TensorStorage

    /// Number of elements.
    public var count: Int { storage.count }
    public var rank: Int { shape.count }

    /// Uninitialised contents: only for kernels that overwrite every element.
    public init(uninitializedShape shape: [Int]) {
        let n = Tensor.elementCount(shape)
        self.shape = shape
        self.storage = TensorStorage(count: n)
    }

    public init(zeros shape: [Int]) {
        self.init(uninitializedShape: shape)
        storage.pointer.initialize(repeating: 0, count: count)
    }

    public init(shape: [Int], repeating value: Float) {
        self.init(uninitializedShape: shape)
        storage.pointer.initialize(repeating: value, count: count)
    }

    public init(shape: [Int], scalars: [Float]) {
        let n = Tensor.elementCount(shape)
        require(n == scalars.count, "Tensor: shape \(shape) needs \(n) values, got \(scalars.count)")
        self.init(uninitializedShape: shape)
        if n > 0 { scalars.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: n) } }
    }

    public init(_ scalar: Float) { self.init(shape: [], scalars: [scalar]) }

    /// [labels.count, classes]: row i is 1 at column labels[i] and 0 elsewhere (labels already checked to lie in 0..<classes).
    public init(oneHot labels: [Int], classes: Int) {
        self.init(zeros: [labels.count, classes])
        for (i, c) in labels.enumerated() { storage.pointer[i * classes + c] = 1 }
    }

    static func elementCount(_ shape: [Int]) -> Int {
        var n = 1
        for d in shape {
            require(d >= 0, "Tensor: negative dimension in shape \(shape)")
            n *= d
        }
        return n
    }

    public var scalars: [Float] { Array(UnsafeBufferPointer(start: storage.pointer, count: count)) }

    /// The single value of a one-element tensor.
    public var scalar: Float {
        require(count == 1, "Tensor.scalar: shape \(shape) has \(count) elements, not 1")
        return storage.pointer[0]
    }

    public subscript(flat index: Int) -> Float {
        get { storage.pointer[index] }
        set { makeUnique(); storage.pointer[index] = newValue }
    }

    mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) {
            let copy = TensorStorage(count: count)
            copy.pointer.update(from: storage.pointer, count: count)
            storage = copy
        }
    }

    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer, count: count))
    }

    public mutating func withUnsafeMutableBufferPointer<R>(_ body: (UnsafeMutableBufferPointer<Float>) throws -> R) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    /// Read-only base pointer, valid while `self` is alive. For kernels.
    var pointer: UnsafePointer<Float> { UnsafePointer(storage.pointer) }

    /// Writable base pointer after ensuring unique ownership. For kernels writing into fresh outputs.
    var mutablePointer: UnsafeMutablePointer<Float> { mutating get { makeUnique(); return storage.pointer } }

    /// Same data, new shape (no copy). One dimension may be -1.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let i = s.firstIndex(of: -1) {
            let known = s.enumerated().filter { $0.offset != i }.reduce(1) { $0 * $1.element }
            require(known > 0 && count % known == 0, "reshape: cannot infer -1 in \(newShape) from \(shape)")
            s[i] = count / known
        }
        require(Tensor.elementCount(s) == count, "reshape: \(shape) (\(count) elements) cannot become \(newShape)")
        var t = self
        t.shape = s
        return t
    }

    /// Size of dimension `axis` (negative counts from the end).
    public func dim(_ axis: Int) -> Int { shape[axis < 0 ? shape.count + axis : axis] }

    /// A copy of rows `range` along the first axis.
    public func rows(_ range: Range<Int>) -> Tensor {
        require(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "rows: \(range) out of bounds for shape \(shape)")
        let inner = shape[0] == 0 ? 0 : count / shape[0]
        let out = Tensor(uninitializedShape: [range.count] + shape.dropFirst())
        out.storage.pointer.update(from: storage.pointer + range.lowerBound * inner, count: range.count * inner)
        return out
    }

    /// Gathers rows (first axis) by index.
    public func gatherRows(_ indices: [Int]) -> Tensor {
        let inner = shape[0] == 0 ? 0 : count / shape[0]
        let out = Tensor(uninitializedShape: [indices.count] + shape.dropFirst())
        for (j, i) in indices.enumerated() {
            require(i >= 0 && i < shape[0], "gatherRows: index \(i) out of range for shape \(shape)")
            (out.storage.pointer + j * inner).update(from: storage.pointer + i * inner, count: inner)
        }
        return out
    }

    /// Concatenates along the first axis; the other dimensions must agree. `rowShape` (the shape of one row, e.g.
    /// `[featureCount]`) gives the result's shape when there are no parts or all are empty: concatenating no
    /// batches of [*, d] features is a [0, d] tensor, not an error.
    public static func concatenateRows(_ parts: [Tensor], rowShape: [Int]? = nil) -> Tensor {
        guard let tail = rowShape ?? parts.first.map({ Array($0.shape.dropFirst()) }) else {
            fatalError("concatenateRows: no tensors and no row shape to make an empty result from")
        }
        var rows = 0
        for p in parts {
            require(p.rank >= 1 && Array(p.shape.dropFirst()) == tail,
                    "concatenateRows: shapes \(p.shape) and \([0] + tail) clash beyond the first axis")
            rows += p.shape[0]
        }
        let out = Tensor(uninitializedShape: [rows] + tail)
        var offset = 0
        for p in parts {
            (out.storage.pointer + offset).update(from: p.storage.pointer, count: p.count)
            offset += p.count
        }
        return out
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let shown = scalars.prefix(8).map { String(format: "%.5g", $0) }.joined(separator: ", ")
        return "Tensor(\(shape): [\(shown)\(count > 8 ? ", ..." : "")])"
    }
}

extension Tensor: Equatable {
    public static func == (a: Tensor, b: Tensor) -> Bool {
        a.shape == b.shape && memcmp(a.storage.pointer, b.storage.pointer, a.count * 4) == 0
    }
}
