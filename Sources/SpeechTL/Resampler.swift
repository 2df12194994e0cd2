import Foundation

/// Band-limited sample-rate conversion by a rational factor L/M (polyphase windowed sinc, Kaiser window).
///
/// The prototype low-pass has its passband edge at 0.9 and its stopband edge at 1.0 times the lower of the
/// two Nyquist frequencies, designed for 80 dB stopband attenuation (Kaiser's formulas). So nothing above the
/// new Nyquist can alias into the output when downsampling, and no spectral image survives when upsampling;
/// the price is a roll-off in the top 10 % below the lower Nyquist (7.2-8 kHz at 16 kHz, far above the 3.8 kHz
/// where the mel front-end stops). `ResamplerTests` measures both on tones.
///
/// Streaming: `process` may be called with blocks of any size and `finish` flushes the tail; the output is
/// the same as converting the whole signal at once. The signal is taken as zero before its first and after
/// its last sample, and a signal of `n` input samples gives `ceil(n * L / M)` output samples, the first at the
/// same instant as the first input sample.
public final class Resampler {
    public let inputRate: Int
    public let outputRate: Int
    /// Up- and down-sampling factors after cancelling the common divisor (`outputRate / inputRate == up / down`).
    public let up: Int, down: Int

    /// Designed stopband attenuation (dB) and band edges as fractions of the lower Nyquist frequency.
    public static let attenuation = 80.0
    public static let passbandEdge = 0.9
    public static let stopbandEdge = 1.0

    /// Taps per phase (2 * reach + 1) and the phase bank, `up` rows of `taps` coefficients.
    let reach: Int
    let taps: Int
    let bank: [Float]

    /// Input not yet fully consumed; `buffer[0]` is input sample `bufferStart`.
    var buffer: [Float] = []
    var bufferStart = 0
    var inputCount = 0
    var outputCount = 0
    var finished = false

    /// `inputRate` and `outputRate` in Hz (any positive integers).
    public init(from inputRate: Int, to outputRate: Int) {
        precondition(inputRate > 0 && outputRate > 0, "Resampler: rates must be positive, got \(inputRate) -> \(outputRate)")
        self.inputRate = inputRate
        self.outputRate = outputRate
        let g = Resampler.gcd(inputRate, outputRate)
        up = outputRate / g
        down = inputRate / g
        if up == down {
            reach = 0; taps = 1; bank = [1]
            return
        }
        // Band edges in cycles per input sample.
        let lowerNyquist = 0.5 * Double(min(inputRate, outputRate)) / Double(inputRate)
        let pass = Resampler.passbandEdge * lowerNyquist, stop = Resampler.stopbandEdge * lowerNyquist
        let cutoff = 0.5 * (pass + stop)
        // Kaiser: length N = (A - 7.95) / (2.285 * 2 pi * transition) samples, beta from A.
        let a = Resampler.attenuation
        let length = (a - 7.95) / (2.285 * 2 * Double.pi * (stop - pass))
        let halfWidth = length / 2
        let beta = a > 50 ? 0.1102 * (a - 8.7) : a >= 21 ? 0.5842 * pow(a - 21, 0.4) + 0.07886 * (a - 21) : 0
        let i0Beta = Resampler.besselI0(beta)
        reach = Int(halfWidth.rounded(.up))
        taps = 2 * reach + 1
        // Phase p (output instant p/up of an input sample after input i0) weights input i0 + d, d in -reach...reach,
        // by g(p/up - d), g the continuous windowed sinc with unit DC gain.
        var bank = [Float](repeating: 0, count: up * taps)
        var phase = [Double](repeating: 0, count: taps)
        for p in 0..<up {
            var sum = 0.0
            for j in 0..<taps {
                let t = Double(p) / Double(up) - Double(j - reach)
                let r = t / halfWidth
                if abs(r) >= 1 { phase[j] = 0; continue }
                let x = 2 * cutoff * t
                let sinc = x == 0 ? 1 : sin(Double.pi * x) / (Double.pi * x)
                phase[j] = 2 * cutoff * sinc * Resampler.besselI0(beta * (1 - r * r).squareRoot()) / i0Beta
                sum += phase[j]
            }
            // Unit DC gain in every phase: no ripple at DC from the finite filter.
            for j in 0..<taps { bank[p * taps + j] = Float(phase[j] / sum) }
        }
        self.bank = bank
        buffer.reserveCapacity(1 << 16)
        buffer.append(contentsOf: repeatElement(0, count: reach))  // zeros before the first sample
        bufferStart = -reach
    }

    /// Converts `input` in one go.
    public static func resample(_ input: [Float], from inputRate: Int, to outputRate: Int) -> [Float] {
        if inputRate == outputRate { return input }
        let r = Resampler(from: inputRate, to: outputRate)
        var out = r.process(input)
        out += r.finish()
        return out
    }

    /// Number of output samples for `inputCount` input samples.
    public func outputLength(forInput inputCount: Int) -> Int {
        (inputCount * up + down - 1) / down
    }

    /// Feeds the next block and returns every output sample that no longer depends on future input.
    public func process(_ input: [Float]) -> [Float] {
        precondition(!finished, "Resampler.process: called after finish()")
        if up == down { inputCount += input.count; outputCount += input.count; return input }
        buffer.append(contentsOf: input)
        inputCount += input.count
        return drain(final: false)
    }

    /// Flushes the samples that depend on the (zero) signal after the end. The resampler is then spent.
    public func finish() -> [Float] {
        precondition(!finished, "Resampler.finish: called twice")
        finished = true
        if up == down { return [] }
        buffer.append(contentsOf: repeatElement(0, count: reach + 1))
        return drain(final: true)
    }

    private func drain(final: Bool) -> [Float] {
        let total = outputLength(forInput: inputCount)
        let available = bufferStart + buffer.count  // input index one past the last buffered sample
        // Output m needs inputs up to i0 + reach, i0 = floor(m * down / up).
        var end = final ? total : min(total, ((available - reach) * up + down - 1) / down)
        end = max(end, outputCount)
        let count = end - outputCount
        var out = [Float](repeating: 0, count: count)
        if count > 0 {
            let first = outputCount, up = self.up, down = self.down, taps = self.taps, reach = self.reach
            let start = bufferStart
            buffer.withUnsafeBufferPointer { x in
                bank.withUnsafeBufferPointer { h in
                    out.withUnsafeMutableBufferPointer { y in
                        for k in 0..<count {
                            let u = (first + k) * down
                            let i0 = u / up, p = u - i0 * up
                            let xs = x.baseAddress! + (i0 - reach - start), hs = h.baseAddress! + p * taps
                            y[k] = Resampler.dot(hs, xs, taps)
                        }
                    }
                }
            }
            outputCount = end
        }
        // Keep only what later outputs can still reach.
        let nextI0 = outputCount * down / up
        let drop = min(buffer.count, max(0, nextI0 - reach - bufferStart))
        if drop > 0 {
            buffer.removeFirst(drop)
            bufferStart += drop
        }
        return out
    }

    /// Dot product with eight partial sums (a single running sum cannot vectorise under strict FP order).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD8<Float>(repeating: 0)
        var j = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while j + 8 <= n {
            acc += ra.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
                * rb.loadUnaligned(fromByteOffset: j * 4, as: SIMD8<Float>.self)
            j += 8
        }
        var s = acc.sum()
        while j < n { s += a[j] * b[j]; j += 1 }
        return s
    }

    static func gcd(_ a: Int, _ b: Int) -> Int {
        var (a, b) = (a, b)
        while b != 0 { (a, b) = (b, a % b) }
        return a
    }

    /// Modified Bessel function of the first kind, order 0 (power series; converges fast for the betas used).
    static func besselI0(_ x: Double) -> Double {
        var sum = 1.0, term = 1.0, k = 1.0
        let q = x * x / 4
        repeat {
            term *= q / (k * k)
            sum += term
            k += 1
        } while term > sum * 1e-17
        return sum
    }
}
