import Foundation
import TransferEngine

/// Speech commands from audio files: libsndfile reading and resampling to 16 kHz, openWakeWord's log-mel
/// front-end, Google's speech_embedding as the pretrained backbone (windows pooled per clip), and a small
/// log-mel CNN as the from-scratch baseline.
///
/// Sample = a file URL. `batch` decodes the clips (kept decoded in memory for the run), fits them to
/// `clipSeconds` (`--clip-seconds`), optionally augments the waveform, computes the log-mel, optionally applies SpecAugment
/// masks, and cuts the 76-frame windows: `[B, W, 76, 32]` for the embedding, `[B, 1, frames, 32]` (the whole
/// clip) for the scratch CNN. The front-end has no trainable parameters, so it lives here, before block 0,
/// and the feature cache covers it.
public struct SpeechDomain: TransferDomain {
    public typealias Sample = URL
    public typealias Input = Tensor

    public static let name = "speech"

    /// The domain's settings, with their defaults (the command line's flags: Sources/SpeechCLI). Errors name the
    /// command-line flag of a setting.
    public struct Configuration: Equatable, Sendable {
        /// Clip length in seconds, in (0, 60]: shorter clips are zero-padded (centred), longer ones cropped to their
        /// loudest stretch.
        public var clipSeconds: Double
        /// Hop between the 76-frame embedding windows, in 10 ms frames (at least 1).
        public var windowHop: Int
        /// Pooling of a clip's window embeddings.
        public var pooling: WindowPooling
        /// Augmentation: largest time shift either way, seconds.
        public var shiftSeconds: Double
        /// Augmentation: gain uniform in +-this many dB.
        public var gainDb: Float
        /// Augmentation: probability of adding white noise.
        public var noiseProbability: Float
        /// Augmentation: SNR range of the added noise in dB, "LOW,HIGH" or one value (relative to the clip's mean power).
        public var noiseSnr: String
        /// Augmentation (SpecAugment): time masks per clip.
        public var timeMasks: Int
        /// Augmentation (SpecAugment): longest time mask, frames.
        public var timeMaskFrames: Int
        /// Augmentation (SpecAugment): frequency masks per clip.
        public var freqMasks: Int
        /// Augmentation (SpecAugment): widest frequency mask, mel bands (of 32).
        public var freqMaskBands: Int

        public init(clipSeconds: Double = 1.0, windowHop: Int = 8, pooling: WindowPooling = .mean, shiftSeconds: Double = 0.1,
                    gainDb: Float = 6, noiseProbability: Float = 0.5, noiseSnr: String = "10,30", timeMasks: Int = 1,
                    timeMaskFrames: Int = 10, freqMasks: Int = 1, freqMaskBands: Int = 4) {
            self.clipSeconds = clipSeconds
            self.windowHop = windowHop
            self.pooling = pooling
            self.shiftSeconds = shiftSeconds
            self.gainDb = gainDb
            self.noiseProbability = noiseProbability
            self.noiseSnr = noiseSnr
            self.timeMasks = timeMasks
            self.timeMaskFrames = timeMaskFrames
            self.freqMasks = freqMasks
            self.freqMaskBands = freqMaskBands
        }

        /// `noiseSnr` as a range.
        public func snrRange() throws -> ClosedRange<Float> {
            let parts = noiseSnr.split(separator: ",").map { Float($0.trimmingCharacters(in: .whitespaces)) }
            guard (1...2).contains(parts.count), let lo = parts.first!, let hi = parts.last!, lo <= hi else {
                throw EngineError.invalidArgument("--noise-snr must be LOW,HIGH in dB with LOW <= HIGH (or one value), got '\(noiseSnr)'")
            }
            return lo...hi
        }

        public func validate() throws {
            let shortest = Double(ClipFrontEnd.minimumSamples) / Double(MelSpectrogram.sampleRate)
            guard clipSeconds >= shortest, clipSeconds <= 60 else {
                throw EngineError.invalidArgument("--clip-seconds must be from \(shortest) (one window of the backbone) to 60, got \(clipSeconds)")
            }
            guard windowHop >= 1 else { throw EngineError.invalidArgument("--window-hop must be at least 1 frame") }
            guard shiftSeconds >= 0, gainDb >= 0 else { throw EngineError.invalidArgument("--shift-seconds and --gain-db must be >= 0") }
            guard (0...1).contains(noiseProbability) else { throw EngineError.invalidArgument("--noise-probability must be in [0, 1]") }
            _ = try snrRange()
            guard timeMasks >= 0, timeMaskFrames >= 0, freqMasks >= 0, freqMaskBands >= 0 else {
                throw EngineError.invalidArgument("SpecAugment mask counts and sizes must be >= 0")
            }
        }
    }

    public let frontEnd: ClipFrontEnd
    public let pooling: WindowPooling
    public let augmentation: SpeechAugmentation
    let store = DecodedAudio()

    public init(configuration: Configuration) throws {
        try configuration.validate()
        frontEnd = ClipFrontEnd(clipSeconds: configuration.clipSeconds, hop: configuration.windowHop)
        pooling = configuration.pooling
        var a = SpeechAugmentation()
        a.maximumShift = configuration.shiftSeconds
        a.maximumGainDecibels = configuration.gainDb
        a.noiseProbability = configuration.noiseProbability
        a.snrDecibels = try configuration.snrRange()
        a.timeMasks = configuration.timeMasks
        a.timeMaskFrames = configuration.timeMaskFrames
        a.frequencyMasks = configuration.freqMasks
        a.frequencyMaskBands = configuration.freqMaskBands
        augmentation = a
    }

    /// Defaults: 1 s clips, hop 8, mean pooling, the augmentation above.
    public init() { try! self.init(configuration: Configuration()) }

    // MARK: Data

    public func labelled(at url: URL) throws -> LabelledSet<URL> { try AudioDataset.labelled(at: url) }

    public func unlabelled(at url: URL) throws -> [URL] { try AudioDataset.unlabelled(at: url) }

    public func predictionSamples(_ url: URL) throws -> [URL] { try AudioDataset.unlabelled(at: url) }

    public func cacheKey(_ sample: URL) -> String { InputFile.contentKey(sample) }

    /// v2: recordings longer than the clip are cropped centred on the loudest stretch's energy (v1 took the first
    /// loudest stretch as it was, which put a short word at its edge); features cached or stored by v1 are not reused.
    public var preprocessingKey: String {
        "speech-v2 samples=\(frontEnd.clipSamples) hop=\(frontEnd.hop) pooling=\(pooling.rawValue) mel=openWakeWord"
    }

    public func describe(_ sample: URL) -> String { sample.path }

    public var optionsSummary: [String: String] {
        ["clip_samples": String(frontEnd.clipSamples), "window_hop": String(frontEnd.hop), "windows": String(frontEnd.windowCount),
         "pooling": pooling.rawValue,
         "adabn": "re-estimates bn0 only: speech_embedding's other 18 BatchNorms are folded into their convolutions"]
    }

    // MARK: Models

    public func pretrainedBackbone() throws -> any Backbone<Tensor> { try SpeechEmbedding.pretrained(pooling: pooling) }

    public func scratchBackbone(rng: inout RNG) -> any Backbone<Tensor> { ScratchCNN(rng: &rng) }

    /// Inference batches of 128 clips (384 windows: enough to keep both threads busy); no early stopping for
    /// fine-tuning and the from-scratch CNN. With 1-2 validation clips per word the validation loss is too noisy
    /// to stop on: it stopped the scratch CNN at 5 labels per word after 9 epochs, at chance level (0.10), where
    /// the full schedule reaches 0.43. The weights of the best validation epoch are still restored.
    public func adjust(_ options: inout WorkflowOptions) {
        options.inferenceBatchSize = 128
        options.fineTuning.patience = nil
    }

    // MARK: Batches

    public func batch(_ samples: [URL], augment: Bool, scratch: Bool, rng: inout RNG) throws -> Tensor {
        var clips = try samples.map { try store.clip($0, frontEnd) }
        if augment { clips = clips.map { augmentation.waveform($0, rng: &rng) } }
        var mel = frontEnd.logMel(clips)
        if augment {
            let t = mel.shape[1], b = mel.shape[2]
            mel.withUnsafeMutableBufferPointer { p in
                for i in 0..<samples.count { augmentation.mask(p.baseAddress! + i * t * b, frames: t, bands: b, rng: &rng) }
            }
        }
        return scratch ? mel.reshaped([samples.count, 1, mel.shape[1], mel.shape[2]]) : frontEnd.windows(mel)
    }
}

/// Decoded clips (16 kHz, int16 scale, fitted to the clip length) kept for the run, so augmented epochs do not
/// decode files again. Holds at most `limitSamples` (256 MB); beyond that clips are decoded on every use.
/// Recordings longer than `streamingSeconds` are never loaded whole: their loudest stretch is found by
/// streaming (`AudioFile.loudestStretch`), the same stretch `ClipFrontEnd.fit` would crop.
final class DecodedAudio: @unchecked Sendable {
    private var clips: [String: [Float]] = [:]
    private var held = 0
    private let lock = NSLock()
    let limitSamples = 64 << 20
    let streamingSeconds: Double

    init(streamingSeconds: Double = 60) { self.streamingSeconds = streamingSeconds }

    func clip(_ url: URL, _ frontEnd: ClipFrontEnd) throws -> [Float] {
        let key = url.path
        lock.lock()
        if let c = clips[key] { lock.unlock(); return c }
        lock.unlock()
        let c: [Float]
        if try AudioFile.info(url).duration > streamingSeconds {
            c = frontEnd.fit(try AudioFile.loudestStretch(url, count: frontEnd.clipSamples))
        } else {
            c = frontEnd.fit(try AudioFile.read(url))
        }
        lock.lock()
        if held + c.count <= limitSamples {
            clips[key] = c
            held += c.count
        }
        lock.unlock()
        return c
    }
}

extension SpeechDomain {
    public func pretrainedFiles() throws -> [(file: URL, storedAs: String)] {
        [(try ModelStore.file(SpeechEmbedding.modelPath), SpeechEmbedding.modelPath)]
    }
}
