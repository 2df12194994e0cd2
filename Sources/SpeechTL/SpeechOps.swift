import Foundation
import TransferEngine

// Two small ops the speech backbones need, each a forward/backward pair on the tape: the embedding's
// activation (LeakyReLU then a floor, fused into one pass) and pooling over a clip's windows.

extension Variable {
    /// `max(leakyRelu(x, slope), floor)` in one pass: speech_embedding's activation after every convolution
    /// (LeakyReLU(0.2), then `tf.math.maximum(x, -0.4)`). The gradient is 1 for x > 0, `slope` where the
    /// leaky part is above the floor, and 0 where the floor holds (as the two ops composed give it).
    public func leakyReluFloor(slope: Float = 0.2, floor: Float = -0.4) -> Variable {
        let x = self
        var y = Tensor(uninitializedShape: x.shape)
        let n = y.count
        x.value.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { yb in
                let px = xb.baseAddress!, py = yb.baseAddress!
                Parallel.forEach(n, minimumChunk: 1 << 16) { range in
                    // Selects, not max(): Swift's max/pointwiseMax handle NaN and do not vectorise.
                    let s = SIMD8<Float>(repeating: slope), f = SIMD8<Float>(repeating: floor), zero = SIMD8<Float>()
                    var i = range.lowerBound
                    while i + 8 <= range.upperBound {
                        let v = UnsafeRawPointer(px + i).loadUnaligned(as: SIMD8<Float>.self)
                        let leaky = v.replacing(with: v * s, where: v .< zero)
                        UnsafeMutableRawPointer(py + i).storeBytes(of: leaky.replacing(with: f, where: leaky .< f), as: SIMD8<Float>.self)
                        i += 8
                    }
                    while i < range.upperBound {
                        let v = px[i], leaky = v > 0 ? v : v * slope
                        py[i] = leaky > floor ? leaky : floor
                        i += 1
                    }
                }
            }
        }
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(uninitializedShape: x.shape)
            x.value.withUnsafeBufferPointer { xb in
                g.withUnsafeBufferPointer { gb in
                    dx.withUnsafeMutableBufferPointer { db in
                        for i in 0..<n {
                            let v = xb[i]
                            db[i] = v > 0 ? gb[i] : (v * slope > floor ? gb[i] * slope : 0)
                        }
                    }
                }
            }
            x.accumulate(dx)
        }
    }

    /// Pools `windows` consecutive rows of `[B·windows, D]` into `[B, D]` (mean) or `[B, 2D]` (mean, then max).
    /// The max's gradient goes to the first window holding the maximum.
    public func poolWindows(_ windows: Int, includeMax: Bool) -> Variable {
        let x = self
        let rows = x.shape[0]
        precondition(windows > 0 && rows % windows == 0, "poolWindows: \(rows) rows do not split into windows of \(windows)")
        let b = rows / windows, d = x.value.count / max(rows, 1)
        let width = includeMax ? 2 * d : d
        var y = Tensor(zeros: [b, width])
        var argmax = [Int32](repeating: 0, count: includeMax ? b * d : 0)
        let scale = 1 / Float(windows)
        x.value.withUnsafeBufferPointer { xb in
            y.withUnsafeMutableBufferPointer { yb in
                for i in 0..<b {
                    let out = yb.baseAddress! + i * width
                    for w in 0..<windows {
                        let row = xb.baseAddress! + (i * windows + w) * d
                        for j in 0..<d { out[j] += row[j] * scale }
                        if includeMax {
                            for j in 0..<d where w == 0 || row[j] > out[d + j] {
                                out[d + j] = row[j]
                                argmax[i * d + j] = Int32(w)
                            }
                        }
                    }
                }
            }
        }
        return Autograd.result(y, [x], record: Autograd.needsGrad(x)) { g in
            var dx = Tensor(zeros: x.shape)
            g.withUnsafeBufferPointer { gb in
                dx.withUnsafeMutableBufferPointer { db in
                    for i in 0..<b {
                        let gr = gb.baseAddress! + i * width
                        for w in 0..<windows {
                            let row = db.baseAddress! + (i * windows + w) * d
                            for j in 0..<d { row[j] = gr[j] * scale }
                        }
                        if includeMax {
                            for j in 0..<d { db[(i * windows + Int(argmax[i * d + j])) * d + j] += gr[d + j] }
                        }
                    }
                }
            }
            x.accumulate(dx)
        }
    }
}
