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
///   through memory.
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

    /// Runs the blocks on a batch [N, H, W, C].
    public func run(_ input: Tensor, scratch: ScratchPool) -> Tensor {
        let (n, h0, w0, c0) = (input.shape[0], input.shape[1], input.shape[2], input.shape[3])
        // Shapes along the way, to size the output and the scratch buffers.
        var (h, w, c) = (h0, w0, c0)
        var largest = h * w * c
        for (i, block) in blocks.enumerated() {
            for conv in block.convs {
                precondition(conv.inputs == c, "InferencePlan: block \(i) expects \(conv.inputs) channels, got \(c)")
                (h, w) = (conv.geometry(h).out, conv.geometry(w).out)
                c = conv.outputs
                largest = max(largest, h * w * c)
            }
        }
        var output = Tensor(uninitializedShape: [n, h, w, c])
        let inSize = h0 * w0 * c0, outSize = h * w * c
        input.withUnsafeBufferPointer { src in
            output.withUnsafeMutableBufferPointer { dst in
                let srcBase = src.baseAddress!, dstBase = dst.baseAddress!
                Parallel.forEach(n, minimumChunk: 1) { part in
                    let buffers = scratch.take(count: 3, size: largest)
                    defer { scratch.give(buffers) }
                    for image in part {
                        runImage(srcBase + image * inSize, h: h0, w: w0, buffers: buffers, output: dstBase + image * outSize)
                    }
                }
            }
        }
        return output
    }

    /// One image through the blocks, ping-ponging between three scratch buffers; the last result is copied out.
    private func runImage(_ x: UnsafePointer<Float>, h: Int, w: Int, buffers: ScratchPool.Set,
                          output: UnsafeMutablePointer<Float>) {
        var current = x, (ch, cw) = (h, w), channels = 0
        var currentBuffer = -1  // index of the buffer holding `current` (-1: the input tensor)
        for block in blocks {
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
        }
        output.update(from: current, count: ch * cw * channels)
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
