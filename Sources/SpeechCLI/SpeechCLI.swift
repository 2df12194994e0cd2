import ArgumentParser
import Foundation
import SpeechTL
import TransferCLI
import TransferEngine

extension WindowPooling: ExpressibleByArgument {}

/// speech-tl: the speech domain on the shared command line (its flags, its demo on the fixtures, its run
/// contract, the clip durations `check-data` shows).
extension SpeechDomain: CommandLineDomain {
    public static let appName = SpeechTL.appName
    public static let summary = SpeechTL.summary
    public static let demo = DemoPlan(
        task: .init(train: "speech/source/train", test: "speech/source/test", labelsPerClass: [5, nil]),
        shift: .init(source: "speech/source/train", target: "speech/target/unlabelled", targetTest: "speech/target/test"))

    /// The flags of `Configuration`, with its defaults.
    public struct Options: ParsableArguments {
        @Option(help: "Clip length in seconds, from 0.782 (one window of the backbone) to 60: shorter clips are zero-padded (centred), longer ones cropped to their loudest stretch.")
        public var clipSeconds: Double = defaults.clipSeconds
        @Option(help: "Hop between the 76-frame embedding windows, in 10 ms frames (1 s -> 97 frames -> 3 windows at hop 8).")
        public var windowHop: Int = defaults.windowHop
        @Option(help: "Pooling of a clip's window embeddings: mean (96 features) or mean-max (mean and max, 192).")
        public var pooling: WindowPooling = defaults.pooling
        @Option(help: "Augmentation: largest time shift either way, seconds.")
        public var shiftSeconds: Double = defaults.shiftSeconds
        @Option(help: "Augmentation: gain uniform in +-this many dB.")
        public var gainDb: Float = defaults.gainDb
        @Option(help: "Augmentation: probability of adding white noise.")
        public var noiseProbability: Float = defaults.noiseProbability
        @Option(help: "Augmentation: SNR range of the added noise in dB, LOW,HIGH (relative to the clip's mean power).")
        public var noiseSnr: String = defaults.noiseSnr
        @Option(help: "Augmentation (SpecAugment): time masks per clip.")
        public var timeMasks: Int = defaults.timeMasks
        @Option(help: "Augmentation (SpecAugment): longest time mask, frames.")
        public var timeMaskFrames: Int = defaults.timeMaskFrames
        @Option(help: "Augmentation (SpecAugment): frequency masks per clip.")
        public var freqMasks: Int = defaults.freqMasks
        @Option(help: "Augmentation (SpecAugment): widest frequency mask, mel bands (of 32).")
        public var freqMaskBands: Int = defaults.freqMaskBands

        public init() {}

        public var configuration: SpeechDomain.Configuration {
            .init(clipSeconds: clipSeconds, windowHop: windowHop, pooling: pooling, shiftSeconds: shiftSeconds, gainDb: gainDb,
                  noiseProbability: noiseProbability, noiseSnr: noiseSnr, timeMasks: timeMasks, timeMaskFrames: timeMaskFrames,
                  freqMasks: freqMasks, freqMaskBands: freqMaskBands)
        }

        public func validate() throws {
            try validatingOptions { try configuration.validate() }
        }
    }

    public init(options: Options) throws {
        self = try validatingOptions { try SpeechDomain(configuration: options.configuration) }
    }

    /// Clip durations from the files' headers.
    public func sizeSummary(_ samples: [URL]) -> String? {
        let seconds = samples.compactMap { try? AudioFile.info($0).duration }
        let clip = Double(frontEnd.clipSamples) / Double(AudioFile.sampleRate)
        let longer = seconds.filter { $0 > clip }.count
        return spread(seconds) { String(format: "%.2f s", $0) }.map {
            "durations \($0); \(longer) longer than the \(String(format: "%.2f", clip)) s clip (their loudest stretch is used)"
        }
    }
}

private let defaults = SpeechDomain.Configuration()

extension SpeechDomain.Options: ContractOptions {
    public var contract: [String: String] {
        ["clip_seconds": String(clipSeconds), "window_hop": String(windowHop), "pooling": pooling.rawValue]
    }
    public static let contractFlags = ["clip_seconds": ["--clip-seconds"], "window_hop": ["--window-hop"], "pooling": ["--pooling"]]
    public mutating func adopt(_ contract: [String: String]) throws {
        if let v: Double = try setting(contract, "clip_seconds") { clipSeconds = v }
        if let v: Int = try setting(contract, "window_hop") { windowHop = v }
        if let v = contract["pooling"] {
            guard let p = WindowPooling(rawValue: v) else { throw ValidationError("run.json: setting pooling has the unusable value '\(v)'") }
            pooling = p
        }
        try validate()
    }
}
