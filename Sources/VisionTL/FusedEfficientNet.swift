import Foundation
import TransferEngine

/// EfficientNet-Lite0's inference path: the same function as the tape, computed faster.
///
/// - Every BatchNorm (running statistics) is folded into the convolution before it: w' = w * gamma / sqrt(var + eps),
///   b' = beta - mean * gamma / sqrt(var + eps). Folding happens at every call (a few milliseconds next to a
///   batch), so fine-tuned weights and AdaBN's re-estimated statistics are always the ones used.
/// - Bias, ReLU6 and the residual are applied inside the convolution kernels' store, not as extra passes.
/// - Images are processed one at a time per thread, through all the blocks asked for, in per-thread scratch
///   buffers that are reused across calls: an image's activations (at most 112 x 112 x 96 floats, 4.8 MB) stay in
///   the caches, where a layer-by-layer pass over a batch of 32 would stream ~150 MB per layer through memory.
/// - The convolutions are the engine's `FoldedConvolution`s (AVX-512 / AVX2 / SSE2 kernels picked for the CPU).
final class FusedEfficientNet {
    /// One backbone block: its convolutions in order, and whether the block input is added to the last one.
    struct FoldedBlock {
        var convs: [FoldedConvolution]
        var residual: Bool
    }

    let blocks: [Int: FoldedBlock]
    let scratch: ScratchPool

    init(_ net: EfficientNetLite0, blocks range: Range<Int>, scratch: ScratchPool) {
        var out: [Int: FoldedBlock] = [:]
        for i in range {
            if i == 0 {
                out[i] = FoldedBlock(convs: [FoldedConvolution(net.convStem, net.bn0, activation: .relu6)], residual: false)
            } else if i <= net.mbBlocks.count {
                let b = net.mbBlocks[i - 1]
                var convs: [FoldedConvolution] = []
                if let e = b.expandConv, let bn = b.bn0 { convs.append(FoldedConvolution(e, bn, activation: .relu6)) }
                convs.append(FoldedConvolution(b.depthwiseConv, b.bn1, activation: .relu6))
                convs.append(FoldedConvolution(b.projectConv, b.bn2, activation: .none))
                out[i] = FoldedBlock(convs: convs, residual: b.configuration.hasResidual)
            } else {
                out[i] = FoldedBlock(convs: [FoldedConvolution(net.convHead, net.bn1, activation: .relu6)], residual: false)
            }
        }
        blocks = out
        self.scratch = scratch
        self.range = range
        var prints: [Int: Fingerprint] = [:]
        for i in range {
            var h = Fingerprint()
            for conv in out[i]!.convs {
                h.add([conv.inputs, conv.outputs, conv.kernel, conv.stride])
                h.add(conv.weight)
                h.add(conv.bias)
            }
            prints[i] = h
        }
        blockPrints = prints
    }

    let range: Range<Int>
    /// A hash of each block's folded weights.
    private let blockPrints: [Int: Fingerprint]

    /// Identifies the folded weights of blocks `range` (and the range): equal fingerprints compute equal functions.
    func fingerprint(of range: Range<Int>) -> Fingerprint {
        var h = Fingerprint()
        h.add([range.lowerBound, range.upperBound])
        for i in range { h.add(blockPrints[i]!) }
        return h
    }

    /// Runs blocks `range` on a batch [N, H, W, C] (the output of the block before `range`). With a memo,
    /// images whose output is already known (same input values, same folded weights) are copied, not recomputed;
    /// the outputs one and two blocks before the end are kept too, since fine-tuning the top one or two blocks
    /// asks for exactly those after the features were extracted.
    func run(_ input: Tensor, blocks range: Range<Int>, memo: ActivationMemo? = nil) -> Tensor {
        precondition(range.lowerBound >= self.range.lowerBound && range.upperBound <= self.range.upperBound)
        let (n, h0, w0, c0) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        // Shapes along the way, to size the output and the scratch buffers; the output size after every block.
        var (h, w, c) = (h0, w0, c0)
        var largest = h * w * c
        var sizeAfter: [Int: Int] = [:]
        for i in range {
            for conv in blocks[i]!.convs {
                precondition(conv.inputs == c, "FusedEfficientNet: block \(i) expects \(conv.inputs) channels, got \(c)")
                (h, w) = (conv.geometry(h).out, conv.geometry(w).out)
                c = conv.outputs
                largest = max(largest, h * w * c)
            }
            sizeAfter[i + 1] = h * w * c
        }
        var output = Tensor(uninitializedShape: [n, h, w, c])
        let inSize = h0 * w0 * c0, outSize = h * w * c
        // Memo entries: the whole range, and (taps) the ranges ending one and two blocks earlier.
        var ends = [range.upperBound]
        if let memo {
            ends += [range.upperBound - 1, range.upperBound - 2].filter { $0 > range.lowerBound && memo.accepts(outputCount: sizeAfter[$0]!) }
        }
        let memo = memo.flatMap { $0.accepts(outputCount: outSize) || ends.count > 1 ? $0 : nil }
        let prints = ends.map { fingerprint(of: range.lowerBound..<$0) }
        input.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                let srcBase = src.baseAddress!, dstBase = dst.baseAddress!
                // Memo lookups first (one key per image: its input values and these weights).
                var todo = Array(0..<n)
                var keys: [[ActivationMemo.Key]] = []
                if let memo {
                    keys = (0..<n).map { i in
                        var k = Fingerprint()
                        k.add(UnsafeBufferPointer(start: srcBase + i * inSize, count: inSize))
                        k.add([h0, w0, c0])
                        return prints.map { ActivationMemo.Key($0, k) }
                    }
                    todo = (0..<n).filter { !memo.copy(keys[$0][0], to: dstBase + $0 * outSize, count: outSize) }
                }
                let taps = Array(ends.dropFirst())
                Parallel.forEach(todo.count, minimumChunk: 1) { part in
                    let buffers = scratch.take(count: 3, size: largest)
                    defer { scratch.give(buffers) }
                    for t in part {
                        let image = todo[t]
                        runImage(srcBase + image * inSize, h: h0, w: w0, blocks: range, buffers: buffers,
                                 output: dstBase + image * outSize) { end, values in
                            if let memo, let j = taps.firstIndex(of: end) { memo.store(keys[image][j + 1], values) }
                        }
                        if let memo, memo.accepts(outputCount: outSize) {
                            memo.store(keys[image][0], UnsafeBufferPointer(start: dstBase + image * outSize, count: outSize))
                        }
                    }
                }
            }
        }
        return output
    }

    /// One image through the blocks, ping-ponging between three scratch buffers; the last result is copied out.
    /// `after(end, values)` sees the output after each block (`end` = index of the next block).
    private func runImage(_ x: UnsafePointer<Float>, h: Int, w: Int, blocks range: Range<Int>, buffers: ScratchPool.Set,
                          output: UnsafeMutablePointer<Float>, after: (Int, UnsafeBufferPointer<Float>) -> Void) {
        var current = x, (ch, cw) = (h, w), channels = 0
        var currentBuffer = -1  // index of the buffer holding `current` (-1: the input tensor)
        for i in range {
            let block = blocks[i]!
            let blockInput = current, blockInputBuffer = currentBuffer
            for (k, conv) in block.convs.enumerated() {
                // Any buffer holding neither the current tensor nor the block input (needed by the residual).
                let target = (0..<3).first { $0 != currentBuffer && $0 != blockInputBuffer }!
                let isLast = k == block.convs.count - 1
                (ch, cw) = conv.apply(current, h: ch, w: cw, residual: isLast && block.residual ? blockInput : nil,
                                      into: buffers[target])
                current = UnsafePointer(buffers[target])
                currentBuffer = target
                channels = conv.outputs
            }
            if i + 1 < range.upperBound { after(i + 1, UnsafeBufferPointer(start: current, count: ch * cw * channels)) }
        }
        output.update(from: current, count: ch * cw * channels)
    }
}

/// Scratch buffers reused across calls (fresh multi-megabyte allocations would be mmapped and page-faulted anew
/// every batch). Thread-safe; each taker gets its own set of `count` buffers of at least `size` floats.
final class ScratchPool: @unchecked Sendable {
    struct Set {
        var size: Int
        var pointers: [UnsafeMutablePointer<Float>]
        subscript(i: Int) -> UnsafeMutablePointer<Float> { pointers[i] }
    }

    private var free: [Set] = []
    private let lock = NSLock()

    func take(count: Int, size: Int) -> Set {
        lock.lock()
        if let i = free.firstIndex(where: { $0.size >= size && $0.pointers.count == count }) {
            let set = free.remove(at: i)
            lock.unlock()
            return set
        }
        lock.unlock()
        return Set(size: size, pointers: (0..<count).map { _ in
            var raw: UnsafeMutableRawPointer?
            guard posix_memalign(&raw, 64, max(size, 1) * 4) == 0, let raw else { fatalError("out of memory for scratch buffers") }
            return raw.bindMemory(to: Float.self, capacity: max(size, 1))
        })
    }

    func give(_ set: Set) {
        lock.lock()
        free.append(set)
        // Keep at most a few sets (one per thread is the steady state); free the smallest beyond that.
        if free.count > 4 {
            free.sort { $0.size > $1.size }
            for p in free.removeLast().pointers { Foundation.free(p) }
        }
        lock.unlock()
    }

    deinit {
        for set in free { for p in set.pointers { Foundation.free(p) } }
    }
}

/// A 128-bit hash (two independent 64-bit multiply-xorshift lanes) of integers and Float bit patterns.
struct Fingerprint: Hashable {
    private(set) var a: UInt64 = 0x9E37_79B9_7F4A_7C15
    private(set) var b: UInt64 = 0xC2B2_AE3D_27D4_EB4F

    @inline(__always)
    private mutating func mix(_ v: UInt64) {
        a = (a ^ v) &* 0xFF51_AFD7_ED55_8CCD
        a ^= a >> 29
        b = (b &+ v) &* 0xC4CE_B9FE_1A85_EC53
        b ^= b >> 31
    }

    mutating func add(_ v: Int) { mix(UInt64(bitPattern: Int64(v))) }
    mutating func add(_ other: Fingerprint) { mix(other.a); mix(other.b) }
    mutating func add(_ vs: [Int]) { for v in vs { add(v) } }
    mutating func add(_ values: [Float]) { values.withUnsafeBufferPointer { add($0) } }

    mutating func add(_ values: UnsafeBufferPointer<Float>) {
        mix(UInt64(values.count))
        let raw = UnsafeRawPointer(values.baseAddress!)
        let words = values.count / 2
        for i in 0..<words { mix(raw.loadUnaligned(fromByteOffset: i * 8, as: UInt64.self)) }
        if values.count % 2 == 1 { mix(UInt64(values[values.count - 1].bitPattern)) }
    }
}

/// Outputs of the fused path per image, so that the frozen part of the backbone is not recomputed for images it
/// has already seen with the same weights: fine-tuning evaluates the test set through the frozen blocks after
/// every run, and every end-to-end adaptation method runs the same source images through them. A pure
/// function's memo: the copy is bit-identical to recomputing. Least recently stored entries go first beyond
/// `limitBytes`; outputs larger than `maximumEntryCount` floats per image are not kept (the full feature map
/// before pooling is 62,720 floats at 224; the features themselves are cached on disk by the workflows).
final class ActivationMemo: @unchecked Sendable {
    /// The weights and range (first) and the input image (second).
    struct Key: Hashable {
        let weights: Fingerprint
        let input: Fingerprint
        init(_ weights: Fingerprint, _ input: Fingerprint) {
            self.weights = weights
            self.input = input
        }
    }

    let limitBytes: Int
    let maximumEntryCount: Int
    private var entries: [Key: [Float]] = [:]
    private var order: [Key] = []
    private var head = 0
    private var bytes = 0
    private let lock = NSLock()
    private(set) var hits = 0

    init(limitBytes: Int = 1 << 30, maximumEntryCount: Int = 32768) {
        self.limitBytes = limitBytes
        self.maximumEntryCount = maximumEntryCount
    }

    func accepts(outputCount: Int) -> Bool { outputCount <= maximumEntryCount && outputCount * 4 <= limitBytes }

    /// Copies the entry for `key` into `destination` and returns true, or returns false.
    func copy(_ key: Key, to destination: UnsafeMutablePointer<Float>, count: Int) -> Bool {
        lock.lock()
        defer { lock.unlock() }
        guard let values = entries[key], values.count == count else { return false }
        values.withUnsafeBufferPointer { destination.update(from: $0.baseAddress!, count: count) }
        hits += 1
        return true
    }

    func store(_ key: Key, _ values: UnsafeBufferPointer<Float>) {
        lock.lock()
        defer { lock.unlock() }
        if entries[key] != nil { return }
        entries[key] = Array(values)
        order.append(key)
        bytes += values.count * 4
        while bytes > limitBytes && head < order.count {
            if let old = entries.removeValue(forKey: order[head]) { bytes -= old.count * 4 }
            head += 1
        }
        if head > 4096 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
    }

    func removeAll() {
        lock.lock()
        entries = [:]
        order = []
        head = 0
        bytes = 0
        lock.unlock()
    }
}
