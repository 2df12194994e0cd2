import Foundation

/// A convolution, the BatchNorm after it and an activation, with the names both carry in the pretrained file.
public struct ConvBNStep {
    public let convName: String
    public let conv: Conv2d
    public let batchNormName: String
    public let batchNorm: BatchNorm
    public let activation: FoldedConvolution.Activation

    public init(_ convName: String, _ conv: Conv2d, _ batchNormName: String, _ batchNorm: BatchNorm,
                activation: FoldedConvolution.Activation) {
        self.convName = convName
        self.conv = conv
        self.batchNormName = batchNormName
        self.batchNorm = batchNorm
        self.activation = activation
    }
}

/// A backbone block declared once: its convolution + BatchNorm + activation steps in order, and whether the block
/// input is added to the last step's output (before its activation, as the kernels do). Every way of running the
/// block is built from this list:
/// - `callAsFunction`: on the tape (engine ops), for gradients and BatchNorm batch statistics;
/// - `batchStatistics`: no gradient but BatchNorm in training mode (AdaBN re-estimating statistics);
/// - `InferencePlan`: BatchNorm folded into `FoldedConvolution`s (running statistics, no gradient).
public final class ConvBNSequence {
    public let steps: [ConvBNStep]
    public let residual: Bool

    public init(_ steps: [ConvBNStep], residual: Bool = false) {
        self.steps = steps
        self.residual = residual
    }

    /// Registers every step's convolution and BatchNorm as children of `module`, under the steps' names.
    public func register(in module: Module) {
        for s in steps {
            module.child(s.convName, s.conv)
            module.child(s.batchNormName, s.batchNorm)
        }
    }

    public var parameters: [Variable] { steps.flatMap { $0.conv.parameters + $0.batchNorm.parameters } }

    /// Multiply-adds of the steps' convolutions on one image, and the output's size (BatchNorm, activation and
    /// residual are not counted).
    public func multiplyAdds(height: Int, width: Int) -> (count: Int, height: Int, width: Int) {
        var (total, h, w) = (0, height, width)
        for s in steps {
            let step = s.conv.multiplyAdds(height: h, width: w)
            (total, h, w) = (total + step.count, step.height, step.width)
        }
        return (total, h, w)
    }

    /// True when a forward pass would normalise with (and update) batch statistics.
    public var usesBatchStatistics: Bool { steps.contains { $0.batchNorm.usesBatchStatistics } }

    /// On the tape.
    public func callAsFunction(_ x: Variable) -> Variable {
        var h = x
        for (k, s) in steps.enumerated() {
            // ReLU6 fused into BatchNorm, except after a residual sum (which comes between them).
            let beforeSum = residual && k == steps.count - 1
            h = s.batchNorm(s.conv(h), activation: s.activation == .relu6 && !beforeSum ? .relu6 : nil)
            if beforeSum {
                h = h + x
                if s.activation == .relu6 { h = h.relu6() }
            }
        }
        return h
    }

    /// Without gradient, with each BatchNorm as it is (in training mode: batch statistics, running-statistics
    /// update): the convolutions run on the C kernels over the whole batch, each BatchNorm is the engine's, so the
    /// result is the tape's.
    public func batchStatistics(_ x: Tensor) -> Tensor {
        Autograd.noGrad {
            var h = x
            for (k, s) in steps.enumerated() {
                h = s.batchNorm(Variable(FoldedConvolution(s.conv, activation: .none).applyBatch(h))).value
                if residual && k == steps.count - 1 { h.addInPlace(x) }
                if s.activation == .relu6 {
                    h.withUnsafeMutableBufferPointer { p in for i in p.indices { p[i] = min(max(p[i], 0), 6) } }
                }
            }
            return h
        }
    }
}

/// Blocks run for inference: the same function as their tape path, computed faster.
///
/// - Every BatchNorm (running statistics) is folded into the convolution before it (`FoldedConvolution`). Folding
///   happens for every plan (a few milliseconds next to a batch), so fine-tuned weights and AdaBN's re-estimated
///   statistics are always the ones used.
/// - Bias, activation and the residual are applied inside the convolution kernels' store, not as extra passes.
/// - Images are processed one at a time per thread, through all the blocks, in per-thread scratch buffers that
///   are reused across calls: an image's activations (EfficientNet-Lite0 at 224: at most 112 x 112 x 96 floats,
///   4.8 MB) stay in the caches, where a layer-by-layer pass over a batch of 32 would stream ~150 MB per layer
///   through memory. Once the images are small (`groupedPixels`), a few at a time, so that weights are reused.
public struct InferencePlan {
    struct Block {
        var convs: [FoldedConvolution]
        var residual: Bool
    }

    let blocks: [Block]

    public init<Blocks: Sequence<ConvBNSequence>>(_ blocks: Blocks) {
        self.blocks = blocks.map { b in
            Block(convs: b.steps.map { FoldedConvolution($0.conv, $0.batchNorm, activation: $0.activation) },
                  residual: b.residual)
        }
    }

    /// Blocks whose input has at most `groupedPixels` pixels (EfficientNet-Lite0 at 224: the 14 x 14 and 7 x 7
    /// ones) run on groups of `groupSize` images of a thread's share of the batch, layer by layer, instead of
    /// image by image. There the weights are large next to an image's activations (0.9 MB per pointwise layer at
    /// 7 x 7 for 49 pixels), and image by image every layer's weights came from memory again for each image (those
    /// layers ran 1.4-1.6x slower in the network than alone); a pointwise layer over the group as one matrix reads
    /// them once per group. Earlier blocks stay image by image: there an image's activations are what must stay
    /// in the caches. Each output value is computed the same way either way (bit-identical features). Chosen on
    /// W2 (tl-bench, 2 threads, 6 alternating rounds): image by image 190 images/s (median); 196 pixels in groups
    /// of 4, 212; of 2, 208; 49 pixels in groups of 4, 206, of 8, 205.
    static let groupedPixels = 196
    static let groupSize = 4

    /// Runs the blocks on a batch [N, H, W, C].
    public func run(_ input: Tensor, scratch: ScratchPool) -> Tensor {
        let (n, h0, w0, c0) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        // Shapes along the way, to size the output and the scratch buffers; `split`: the first block run on groups.
        var (h, w, c) = (h0, w0, c0)
        var split = blocks.count, largest = h * w * c, largestGrouped = 0
        for (i, block) in blocks.enumerated() {
            if split == blocks.count && h * w <= Self.groupedPixels { split = i }
            if split < blocks.count { largestGrouped = max(largestGrouped, h * w * c) }
            for conv in block.convs {
                precondition(conv.inputs == c, "InferencePlan: block \(i) expects \(conv.inputs) channels, got \(c)")
                (h, w) = (conv.geometry(h).out, conv.geometry(w).out)
                c = conv.outputs
                if split < blocks.count { largestGrouped = max(largestGrouped, h * w * c) } else { largest = max(largest, h * w * c) }
            }
        }
        let grouped = split < blocks.count, groupSize = Self.groupSize
        var output = Tensor(uninitializedShape: [n, h, w, c])
        let inSize = h0 * w0 * c0, outSize = h * w * c
        input.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                let srcBase = src.baseAddress!, dstBase = dst.baseAddress!
                Parallel.forEach(n, minimumChunk: 1) { part in
                    // Buffers 0-2: ping-pong for the layers; 3: a group's input to the grouped blocks.
                    let buffers = scratch.take(count: grouped ? 4 : 3, size: max(largest, grouped ? groupSize * largestGrouped : 0))
                    defer { scratch.give(buffers) }
                    for first in stride(from: part.lowerBound, to: part.upperBound, by: grouped ? groupSize : 1) {
                        guard grouped else {
                            let r = runBlocks(0..<blocks.count, srcBase + first * inSize, count: 1, (h0, w0, c0), buffers, inputBuffer: -1)
                            (dstBase + first * outSize).update(from: r.result, count: outSize)
                            continue
                        }
                        let count = min(groupSize, part.upperBound - first)
                        var groupInput = srcBase + first * inSize, inputBuffer = -1, shape = (h: h0, w: w0, c: c0)
                        if split > 0 {
                            for i in 0..<count {
                                let r = runBlocks(0..<split, srcBase + (first + i) * inSize, count: 1, (h0, w0, c0), buffers, inputBuffer: -1)
                                shape = r.shape
                                let size = shape.h * shape.w * shape.c
                                buffers[3].advanced(by: i * size).update(from: r.result, count: size)
                            }
                            (groupInput, inputBuffer) = (UnsafePointer(buffers[3]), 3)
                        }
                        let r = runBlocks(split..<blocks.count, groupInput, count: count, shape, buffers, inputBuffer: inputBuffer)
                        (dstBase + first * outSize).update(from: r.result, count: count * outSize)
                    }
                }
            }
        }
        return output
    }

    /// `count` consecutive images [count, h, w, c] through `range` of the blocks, ping-ponging between buffers 0-2
    /// (`inputBuffer`: the one holding `x`, or -1); returns where the result is and its shape.
    private func runBlocks(_ range: Range<Int>, _ x: UnsafePointer<Float>, count: Int, _ shape: (h: Int, w: Int, c: Int),
                           _ buffers: ScratchPool.Set, inputBuffer: Int) -> (result: UnsafePointer<Float>, shape: (h: Int, w: Int, c: Int)) {
        var current = x, shape = shape, currentBuffer = inputBuffer
        for block in blocks[range] {
            let blockInput = current, blockInputBuffer = currentBuffer
            for (k, conv) in block.convs.enumerated() {
                // Any buffer holding neither the current tensor nor the block input (needed by the residual).
                let target = (0..<3).first { $0 != currentBuffer && $0 != blockInputBuffer }!
                let isLast = k == block.convs.count - 1
                let (oh, ow) = conv.apply(current, count: count, h: shape.h, w: shape.w,
                                          residual: isLast && block.residual ? blockInput : nil, into: buffers[target])
                shape = (oh, ow, conv.outputs)
                current = UnsafePointer(buffers[target])
                currentBuffer = target
            }
        }
        return (current, shape)
    }
}

/// Scratch buffers reused across calls (fresh multi-megabyte allocations would be mmapped and page-faulted anew
/// every batch). Thread-safe; each taker gets its own set of `count` buffers of at least `size` floats.
public final class ScratchPool: @unchecked Sendable {
    struct Set {
        var size: Int
        var pointers: [UnsafeMutablePointer<Float>]
        subscript(i: Int) -> UnsafeMutablePointer<Float> { pointers[i] }
    }

    private var free: [Set] = []
    private let lock = NSLock()

    public init() {}

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
