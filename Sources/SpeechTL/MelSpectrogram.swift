import Foundation
import TransferEngine

/// openWakeWord's log-mel front-end (its `melspectrogram.onnx`, a torchlibrosa export), reproduced exactly.
///
/// Input: 16 kHz samples at int16 scale, `[B, S]`. Output: `[B, T, 32]` with `T = (S - 512) / 160 + 1`
/// (97 frames for one second; no padding, so a clip shorter than 512 samples has no frame). Per frame:
/// 1. STFT: a 512-point DFT of 512 samples, weighted by a periodic 400-point Hann window at taps 56..<456
///    (centred), hop 160. Done as one GEMM: the `[B*T, taps]` frame matrix times the `[taps, 2 * bins]`
///    cos | -sin matrix with the window baked in.
/// 2. Power re² + im², then the 257x32 mel matrix: librosa's Slaney mel filterbank, 60-3800 Hz, Slaney
///    area normalisation (the stored `1.melW` equals it to 1e-9).
/// 3. `10 * log10(max(power, 1e-10))`, then everything below `peak - 80 dB` is raised to `peak - 80`.
/// 4. openWakeWord then applies `x / 10 + 2` in Python before the embedding (`Scale.openWakeWord`).
///
/// The peak in step 3: the ONNX graph takes one ReduceMax over its whole input tensor, batch included.
/// openWakeWord on CPU runs the graph one clip at a time (`_get_melspectrogram_batch` maps clips over a thread
/// pool; streaming runs one chunk at a time), so the peak it sees is per clip: `PeakScope.clip`, the default.
/// `PeakScope.batch` reproduces a batched call of the raw graph.
///
/// Speed: the mel matrix is zero outside DFT bins 2...121 and the window is zero outside taps 57...455, so only
/// those bins and taps enter the GEMM (exactly the same sums, minus products that are zero): 400 x 240 instead
/// of the graph's 512 x 514.
public struct MelSpectrogram: Sendable {
    public static let sampleRate = 16000
    public static let fftSize = 512
    public static let windowLength = 400
    public static let hop = 160
    public static let bins = fftSize / 2 + 1
    public static let melBands = 32
    public static let minimumFrequency = 60.0
    public static let maximumFrequency = 3800.0
    /// Power floor before the logarithm, and the dynamic range kept below the peak.
    public static let floorPower: Float = 1e-10
    public static let topDecibels: Float = 80

    public enum Scale: Sendable {
        /// The graph's output, dB (10 log10 of mel power at int16 scale), floored at peak - 80.
        case decibels
        /// `decibels / 10 + 2`, what openWakeWord feeds the speech embedding.
        case openWakeWord
    }

    /// Over what the peak of step 3 is taken (see the type's documentation).
    public enum PeakScope: Sendable { case clip, batch }

    /// The full mel matrix `[257, 32]`, as stored in the model file.
    public let filterbank: Tensor
    /// Taps and bins that can contribute, and the compact DFT matrix `[tapCount, 2 * binCount]` (cos | -sin).
    let tapRange: Range<Int>
    let binRange: Range<Int>
    let dft: Tensor
    /// Rows `binRange` of `filterbank`: `[binCount, 32]`.
    let mel: Tensor

    /// Rows of the frame matrix per GEMM: bounds the workspace (about 6 MB) however long the batch.
    static let chunkRows = 4096

    /// Frames for a clip of `samples` samples (0 if shorter than one 512-sample window).
    public static func frameCount(samples: Int) -> Int {
        samples < fftSize ? 0 : (samples - fftSize) / hop + 1
    }

    /// The front-end from its closed form (no model file needed); equal to the stored weights to 1e-7.
    public init() {
        let (real, imag) = MelSpectrogram.analyticDFT()
        let mel = MelSpectrogram.slaneyFilterbank()
        self.init(real: real.map { Float($0) }, imag: imag.map { Float($0) }, melWeights: mel.map { Float($0) })
    }

    /// The front-end from `melspectrogram.safetensors` (tensors `0.stft.conv_real.weight`,
    /// `0.stft.conv_imag.weight` `[257, 1, 512]` and `1.melW` `[257, 32]`).
    public init(weightsAt url: URL) throws {
        let file = try SafeTensors.read(url)
        func load(_ name: String, _ shape: [Int]) throws -> [Float] {
            let t = try file.tensor(named: name)
            guard t.count == shape.reduce(1, *) else {
                throw EngineError.invalidFile(url.path, "'\(name)' has shape \(t.shape), expected \(shape)")
            }
            return t.scalars
        }
        let n = MelSpectrogram.fftSize, k = MelSpectrogram.bins
        self.init(real: try load("0.stft.conv_real.weight", [k, 1, n]), imag: try load("0.stft.conv_imag.weight", [k, 1, n]),
                  melWeights: try load("1.melW", [k, MelSpectrogram.melBands]))
    }

    /// `real`, `imag`: `[257, 512]` row-major (bin, tap); `melWeights`: `[257, 32]`.
    init(real: [Float], imag: [Float], melWeights: [Float]) {
        let n = MelSpectrogram.fftSize, k = MelSpectrogram.bins, m = MelSpectrogram.melBands
        precondition(real.count == k * n && imag.count == k * n && melWeights.count == k * m,
                     "MelSpectrogram: weights must be [\(k), \(n)] x2 and [\(k), \(m)]")
        filterbank = Tensor(shape: [k, m], scalars: melWeights)
        let usedBins = (0..<k).filter { b in (0..<m).contains { melWeights[b * m + $0] != 0 } }
        let lo = usedBins.first ?? 0, hi = (usedBins.last ?? -1) + 1
        let binRange = lo..<max(lo, hi)
        let usedTaps = (0..<n).filter { t in binRange.contains { real[$0 * n + t] != 0 || imag[$0 * n + t] != 0 } }
        let t0 = usedTaps.first ?? 0
        let tapRange = t0..<max(t0 + 1, (usedTaps.last ?? 0) + 1)
        let nb = binRange.count, nt = tapRange.count
        var d = [Float](repeating: 0, count: nt * 2 * nb)
        for j in 0..<nt {
            for i in 0..<nb {
                d[j * 2 * nb + i] = real[(binRange.lowerBound + i) * n + tapRange.lowerBound + j]
                d[j * 2 * nb + nb + i] = imag[(binRange.lowerBound + i) * n + tapRange.lowerBound + j]
            }
        }
        self.binRange = binRange
        self.tapRange = tapRange
        dft = Tensor(shape: [nt, 2 * nb], scalars: d)
        mel = Tensor(shape: [nb, m], scalars: Array(melWeights[(binRange.lowerBound * m)..<(binRange.upperBound * m)]))
    }

    /// One clip `[S]` -> `[T, 32]`.
    public func callAsFunction(_ clip: [Float], scale: Scale = .openWakeWord) -> Tensor {
        let out = self(Tensor(shape: [1, clip.count], scalars: clip), scale: scale)
        return out.reshaped([out.dim(1), MelSpectrogram.melBands])
    }

    /// `[B, S]` samples at int16 scale -> `[B, T, 32]`.
    public func callAsFunction(_ audio: Tensor, scale: Scale = .openWakeWord, peak: PeakScope = .clip) -> Tensor {
        precondition(audio.rank == 2, "MelSpectrogram: input shape \(audio.shape) must be [batch, samples]")
        let batch = audio.shape[0], samples = audio.shape[1], bands = MelSpectrogram.melBands
        let frames = MelSpectrogram.frameCount(samples: samples)
        var out = Tensor(uninitializedShape: [batch, frames, bands])
        let rows = batch * frames
        if rows == 0 { return out }
        let taps = tapRange.count, nb = binRange.count, tap0 = tapRange.lowerBound, hop = MelSpectrogram.hop
        let chunk = MelSpectrogram.chunkRows

        audio.withUnsafeBufferPointer { xb in
            out.withUnsafeMutableBufferPointer { ob in
                let x = xb.baseAddress!, o = ob.baseAddress!
                var start = 0
                while start < rows {
                    let r = min(chunk, rows - start)
                    // Frame matrix: row (b, t) = x[b, t*hop + tap0 ..< + taps].
                    var framesT = Tensor(uninitializedShape: [r, taps])
                    framesT.withUnsafeMutableBufferPointer { fb in
                        let f = fb.baseAddress!
                        Parallel.forEach(r, minimumChunk: 256) { range in
                            for i in range {
                                let row = start + i, b = row / frames, t = row - b * frames
                                (f + i * taps).update(from: x + b * samples + t * hop + tap0, count: taps)
                            }
                        }
                    }
                    let spectrum = framesT.matmul(dft)  // [r, 2 * nb]
                    var power = Tensor(uninitializedShape: [r, nb])
                    spectrum.withUnsafeBufferPointer { sb in
                        power.withUnsafeMutableBufferPointer { pb in
                            let s = sb.baseAddress!, p = pb.baseAddress!
                            Parallel.forEach(r, minimumChunk: 256) { range in
                                for i in range {
                                    let re = s + i * 2 * nb, im = re + nb, pi = p + i * nb
                                    for j in 0..<nb { pi[j] = re[j] * re[j] + im[j] * im[j] }
                                }
                            }
                        }
                    }
                    power.matmul(mel).withUnsafeBufferPointer { mb in
                        (o + start * bands).update(from: mb.baseAddress!, count: r * bands)
                    }
                    start += r
                }
                MelSpectrogram.toDecibels(o, clips: batch, perClip: frames * bands, scale: scale, peak: peak)
            }
        }
        return out
    }

    /// In place: power -> dB as the graph does it (ln(x) * 10 / ln 10, in Float), floor at peak - 80, then scale.
    static func toDecibels(_ o: UnsafeMutablePointer<Float>, clips: Int, perClip: Int, scale: Scale, peak: PeakScope) {
        let ln10: Float = 2.30258512, floor = floorPower
        var peaks = [Float](repeating: -.infinity, count: clips)
        peaks.withUnsafeMutableBufferPointer { pk in
            let pkp = pk.baseAddress!
            Parallel.forEach(clips, minimumChunk: 4) { range in
                for c in range {
                    let v = o + c * perClip
                    var m = -Float.infinity
                    for i in 0..<perClip {
                        let d = log(max(v[i], floor)) * 10 / ln10
                        v[i] = d
                        m = max(m, d)
                    }
                    pkp[c] = m
                }
            }
        }
        if peak == .batch, let m = peaks.max() { peaks = [Float](repeating: m, count: clips) }
        let (mul, add): (Float, Float) = scale == .openWakeWord ? (0.1, 2) : (1, 0)
        peaks.withUnsafeBufferPointer { pk in
            Parallel.forEach(clips, minimumChunk: 4) { range in
                for c in range {
                    let v = o + c * perClip, low = pk[c] - topDecibels
                    for i in 0..<perClip { v[i] = max(v[i], low) * mul + add }
                }
            }
        }
    }

    /// The graph's STFT weights in closed form, `[257, 512]` each (bin, tap): periodic Hann of length 400 at
    /// taps 56..<456, times cos(2 pi k n / 512) and -sin(2 pi k n / 512).
    public static func analyticDFT() -> (real: [Double], imag: [Double]) {
        let n = fftSize, k = bins, w = windowLength, offset = (fftSize - windowLength) / 2
        var real = [Double](repeating: 0, count: k * n), imag = real
        for t in offset..<(offset + w) {
            let hann = 0.5 - 0.5 * cos(2 * Double.pi * Double(t - offset) / Double(w))
            for b in 0..<k {
                // Reduce k*t mod n first so the angle stays small and exact.
                let angle = 2 * Double.pi * Double((b * t) % n) / Double(n)
                real[b * n + t] = hann * cos(angle)
                imag[b * n + t] = -hann * sin(angle)
            }
        }
        return (real, imag)
    }

    /// librosa's `filters.mel(sr, n_fft, n_mels, fmin, fmax)` with its defaults (Slaney mel scale, Slaney area
    /// normalisation), transposed to `[n_fft / 2 + 1, bands]` as torchlibrosa stores it.
    public static func slaneyFilterbank(sampleRate: Int = sampleRate, fftSize: Int = fftSize, bands: Int = melBands,
                                        minimumFrequency: Double = minimumFrequency,
                                        maximumFrequency: Double = maximumFrequency) -> [Double] {
        // Slaney: linear below 1 kHz (200/3 Hz per mel), logarithmic above (27 mels per factor 6.4).
        let step = 200.0 / 3, breakMel = 1000.0 / step, logStep = log(6.4) / 27
        func hzToMel(_ f: Double) -> Double { f >= 1000 ? breakMel + log(f / 1000) / logStep : f / step }
        func melToHz(_ m: Double) -> Double { m >= breakMel ? 1000 * exp(logStep * (m - breakMel)) : step * m }
        let nBins = fftSize / 2 + 1
        let lo = hzToMel(minimumFrequency), hi = hzToMel(maximumFrequency)
        let edges = (0..<(bands + 2)).map { melToHz(lo + (hi - lo) * Double($0) / Double(bands + 1)) }
        var out = [Double](repeating: 0, count: nBins * bands)
        for b in 0..<nBins {
            let f = Double(sampleRate) / 2 * Double(b) / Double(nBins - 1)
            for m in 0..<bands {
                let rising = (f - edges[m]) / (edges[m + 1] - edges[m])
                let falling = (edges[m + 2] - f) / (edges[m + 2] - edges[m + 1])
                out[b * bands + m] = max(0, min(rising, falling)) * 2 / (edges[m + 2] - edges[m])
            }
        }
        return out
    }
}
