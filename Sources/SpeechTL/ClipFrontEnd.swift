import Foundation
import TransferEngine

/// From a clip of any length to a fixed-size input for the backbones:
///
/// 1. **Length**: the clip (16 kHz, int16 scale) is brought to `clipSeconds` (default 1.0 s = 16000 samples):
///    a shorter clip is padded with zeros on both sides (centred; the fixtures' silence is digital zero too),
///    a longer one is cropped to that length around the stretch with the most energy (where the word is),
///    centred on where that stretch's energy is, so a word keeps the place it has in a clip of that length. At least
///    12512 samples are kept, the 76 frames one embedding window needs.
/// 2. **Log-mel**: openWakeWord's front-end (`MelSpectrogram`, x/10 + 2 scale): 1 s gives 97 frames x 32.
/// 3. **Windows**: 76-frame windows (0.775 s) starting every `hop` frames while they fit: for 97 frames and the
///    default hop 8 that is frames 0-75, 8-83 and 16-91 (3 windows; the last 5 frames, 50 ms at the clip's
///    edge, are not covered). openWakeWord's streaming also steps the embedding by 8 frames.
///
/// The backbone embeds each window and pools the window embeddings per clip (mean, or mean and max).
public struct ClipFrontEnd: Sendable {
    public let clipSamples: Int
    public let hop: Int
    public let mel: MelSpectrogram

    /// Samples for 76 frames: 512 + 75 x 160.
    public static let minimumSamples = MelSpectrogram.fftSize + (SpeechEmbedding.frames - 1) * MelSpectrogram.hop

    public init(clipSeconds: Double = 1.0, hop: Int = 8, mel: MelSpectrogram = MelSpectrogram()) {
        precondition(clipSeconds > 0 && hop > 0, "ClipFrontEnd: clip length and hop must be positive")
        clipSamples = max(ClipFrontEnd.minimumSamples, Int((clipSeconds * Double(MelSpectrogram.sampleRate)).rounded()))
        self.hop = hop
        self.mel = mel
    }

    public var frames: Int { MelSpectrogram.frameCount(samples: clipSamples) }

    /// First frame of each window.
    public var windowStarts: [Int] { Array(stride(from: 0, through: frames - SpeechEmbedding.frames, by: hop)) }

    public var windowCount: Int { windowStarts.count }

    /// Pads (centred) or crops (centred on the loudest stretch's energy) a clip to `clipSamples`.
    public func fit(_ clip: [Float]) -> [Float] {
        let n = clipSamples
        if clip.count == n { return clip }
        if clip.count < n {
            var out = [Float](repeating: 0, count: n)
            let offset = (n - clip.count) / 2
            out.replaceSubrange(offset..<(offset + clip.count), with: clip)
            return out
        }
        var search = LoudestStretch(count: n)
        search.add(clip)
        let start = LoudestStretch.centredStart(bestStart: search.bestStart, count: n, total: clip.count) { clip[$0] }
        return Array(clip[start..<(start + n)])
    }

    /// Log-mel of fitted clips: `[B, clipSamples]` -> `[B, frames, 32]` (openWakeWord's scale).
    public func logMel(_ clips: [[Float]]) -> Tensor {
        var audio = Tensor(uninitializedShape: [clips.count, clipSamples])
        audio.withUnsafeMutableBufferPointer { b in
            for (i, c) in clips.enumerated() {
                precondition(c.count == clipSamples, "ClipFrontEnd.logMel: clip of \(c.count) samples, not \(clipSamples)")
                c.withUnsafeBufferPointer { (b.baseAddress! + i * clipSamples).update(from: $0.baseAddress!, count: clipSamples) }
            }
        }
        return mel(audio, scale: .openWakeWord, peak: .clip)
    }

    /// `[B, frames, 32]` -> `[B, W, 76, 32]`: the windows of every clip.
    public func windows(_ mel: Tensor) -> Tensor {
        let b = mel.shape[0], t = mel.shape[1], bands = mel.shape[2]
        precondition(t == frames && bands == SpeechEmbedding.bands, "ClipFrontEnd.windows: mel of shape \(mel.shape)")
        let starts = windowStarts, w = starts.count, f = SpeechEmbedding.frames
        var out = Tensor(uninitializedShape: [b, w, f, bands])
        mel.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<b {
                    for (k, s) in starts.enumerated() {
                        (dst.baseAddress! + ((i * w + k) * f) * bands)
                            .update(from: src.baseAddress! + (i * t + s) * bands, count: f * bands)
                    }
                }
            }
        }
        return out
    }
}

/// Seeded augmentation of speech clips: on the waveform a time shift, a gain and additive white noise at a
/// random SNR; on the log-mel, SpecAugment time and frequency masks (Park et al. 2019).
public struct SpeechAugmentation: Sendable {
    /// Largest shift either way, seconds (zeros fill the gap; nothing wraps around).
    public var maximumShift: Double = 0.1
    /// Gain uniform in ±this many dB (then clipped at int16 full scale, as a recorder would).
    public var maximumGainDecibels: Float = 6
    /// White Gaussian noise with this probability, at an SNR uniform in `snrDecibels` relative to the clip's
    /// mean power.
    public var noiseProbability: Float = 0.5
    public var snrDecibels: ClosedRange<Float> = 10...30
    /// SpecAugment: this many masks of 0...`timeMaskFrames` frames and of 0...`frequencyMaskBands` bands, each
    /// filled with the clip's mean log-mel value.
    public var timeMasks = 1, timeMaskFrames = 10
    public var frequencyMasks = 1, frequencyMaskBands = 4

    public init() {}

    /// Shift, gain and noise, in that order, on a clip at int16 scale (the length stays the same).
    public func waveform(_ clip: [Float], rng: inout RNG) -> [Float] {
        let n = clip.count
        var out = [Float](repeating: 0, count: n)
        let reach = Int(maximumShift * Double(MelSpectrogram.sampleRate))
        let shift = reach > 0 ? rng.int(below: 2 * reach + 1) - reach : 0
        let gain = maximumGainDecibels > 0 ? Float(pow(10, Double(rng.uniform(-maximumGainDecibels, maximumGainDecibels)) / 20)) : 1
        for i in 0..<n {
            let j = i - shift
            if j >= 0 && j < n { out[i] = clip[j] * gain }
        }
        if noiseProbability > 0 && rng.uniform() < Double(noiseProbability) {
            let snr = rng.uniform(snrDecibels.lowerBound, snrDecibels.upperBound)
            var power = 0.0
            for v in out { power += Double(v) * Double(v) }
            power /= Double(max(n, 1))
            if power > 0 {
                let std = Float((power / pow(10, Double(snr) / 10)).squareRoot())
                for i in 0..<n { out[i] += std * rng.normal() }
            }
        }
        for i in 0..<n { out[i] = min(max(out[i], -32768), 32767) }
        return out
    }

    /// SpecAugment masks on one clip's log-mel `[frames, bands]` stored at `mel` (in place).
    public func mask(_ mel: UnsafeMutablePointer<Float>, frames: Int, bands: Int, rng: inout RNG) {
        var mean: Float = 0
        for i in 0..<(frames * bands) { mean += mel[i] }
        mean /= Float(max(frames * bands, 1))
        for _ in 0..<timeMasks where timeMaskFrames > 0 {
            let width = rng.int(below: min(timeMaskFrames, frames) + 1)
            let start = rng.int(below: frames - width + 1)
            for t in start..<(start + width) { for b in 0..<bands { mel[t * bands + b] = mean } }
        }
        for _ in 0..<frequencyMasks where frequencyMaskBands > 0 {
            let width = rng.int(below: min(frequencyMaskBands, bands) + 1)
            let start = rng.int(below: bands - width + 1)
            for t in 0..<frames { for b in start..<(start + width) { mel[t * bands + b] = mean } }
        }
    }
}
