import ArgumentParser
import Foundation
import TransferCLI
import TransferEngine
import TransferReport
import VisionTL

/// vision-tl: the vision domain on the shared command line (its flags, its demo on the fixtures, its run
/// contract, the image sizes `check-data` shows and the thumbnails of report.html).
extension VisionDomain: CommandLineDomain {
    public static let appName = VisionTL.appName
    public static let summary = VisionTL.summary
    public static let demo = DemoPlan(
        task: .init(train: "vision/fashion/train", test: "vision/fashion/test", labelsPerClass: [10, nil]),
        // End to end (the top block at 224 x 224) a method costs about a minute on 2 cores, and all of them put the
        // demo at 11.4 minutes (682 s, over its 10). Left out end to end: AdaBN (it re-estimates all 49 BatchNorm
        // layers on both domains: 115 s), Deep CORAL (no gain in independent tables: SKADA-Bench, Lalou et al.
        // 2024) and SHOT (made for source-free adaptation). `adapt` runs them all.
        shift: .init(source: "vision/mnist/train", target: "vision/optdigits/unlabelled", targetTest: "vision/optdigits/test",
                     endToEndMethods: [.sourceOnly, .dann, .pseudo, .mcc, .bnm]))

    /// The flags of `Configuration`, with its defaults.
    public struct Options: ParsableArguments {
        @Option(help: "Side of the square image the pretrained network sees, in pixels. EfficientNet-Lite0 was trained at 224; smaller is faster (cost ~ side²) and less accurate: on the Fashion fixtures a linear probe reached 77.3/84.5 % (10 labels per class/all) at 224, 75.9/83.6 % at 160, 74.7/82.8 % at 112, 73.4/80.6 % at 96.")
        public var imageSize: Int = defaults.imageSize

        @Option(help: "Side of the square image the from-scratch CNN sees, in pixels.")
        public var scratchSize: Int = defaults.scratchSize

        @Flag(inversion: .prefixedNo, help: "Mirror training images left-right at random when augmenting. Off by default: a mirrored digit or letter is not the same class.")
        public var flip = defaults.flip

        @Option(help: "Augmentation: brightness and contrast jitter, factors uniform in 1 +- this (torchvision's ColorJitter); 0 turns it off.")
        public var jitter: Float = defaults.jitter

        @Flag(help: "Augment the from-scratch baseline's training images too. Off by default: with its 30-epoch budget the small CNN learns best from the plain images (Fashion fixtures: 71.5 % / 84.7 % at 10 labels per class / all, against 68.5 % / 83.1 % augmented).")
        public var scratchAugmentation = defaults.scratchAugmentation

        public init() {}

        public var configuration: VisionDomain.Configuration {
            .init(imageSize: imageSize, scratchSize: scratchSize, flip: flip, jitter: jitter, scratchAugmentation: scratchAugmentation)
        }

        public func validate() throws {
            try validatingOptions { try configuration.validate() }
        }
    }

    public init(options: Options) throws {
        self = try validatingOptions { try VisionDomain(configuration: options.configuration) }
    }

    /// A thumbnail whose longer side is 64 pixels, for report.html.
    public func preview(_ sample: URL) -> SamplePreview? {
        guard let image = try? ImageFile.read(sample) else { return nil }
        let scale = 64 / Double(max(image.width, image.height))
        let w = max(1, Int((Double(image.width) * scale).rounded())), h = max(1, Int((Double(image.height) * scale).rounded()))
        let small = ImagePreprocessing.resized(image, width: w, height: h)
        return .png(PNGWriter.encode(width: w, height: h, channels: 3, pixels: small.pixels.map { UInt8(min(max($0.rounded(), 0), 255)) }))
    }

    /// Image sizes from the file headers.
    public func sizeSummary(_ samples: [URL]) -> String? {
        let sizes = samples.compactMap { ImageFile.size($0) }.map { ($0.width, $0.height) }
        let byArea = sizes.sorted { $0.0 * $0.1 < $1.0 * $1.1 }
        guard let small = byArea.first, let large = byArea.last else { return nil }
        let median = byArea[byArea.count / 2]
        return "images \(small.0)x\(small.1) to \(large.0)x\(large.1) (median \(median.0)x\(median.1)); the backbone sees \(imageSize)x\(imageSize)"
    }
}

private let defaults = VisionDomain.Configuration()

extension VisionDomain.Options: ContractOptions {
    public var contract: [String: String] { ["image_size": String(imageSize), "scratch_size": String(scratchSize)] }
    public static let contractFlags = ["image_size": ["--image-size"], "scratch_size": ["--scratch-size"]]
    public mutating func adopt(_ contract: [String: String]) throws {
        if let v: Int = try setting(contract, "image_size") { imageSize = v }
        if let v: Int = try setting(contract, "scratch_size") { scratchSize = v }
        try validate()
    }
}
