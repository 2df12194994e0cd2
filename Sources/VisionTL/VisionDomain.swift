import ArgumentParser
import Foundation
import TransferCLI
import TransferEngine
import TransferReport

/// Image classification from PNG and JPEG files with ImageNet EfficientNet-Lite0 as the pretrained backbone.
///
/// Data layouts (samples are file URLs; an image is decoded only when a batch needs it; `.png`, `.jpg` and `.jpeg`
/// files, mixed freely, told apart by their bytes):
/// - labelled: `<root>/<label>/*.png` (ImageFolder: one folder per class, classes in sorted order), or a CSV
///   file `path,label` (an optional `path,label` header; paths relative to the CSV file);
/// - unlabelled: a folder of images (that folder only, not its subfolders), or a CSV whose first column is a path
///   (an optional `path` header; further columns are ignored).
///
/// Preprocessing for the pretrained network: shorter side resized to `--image-size` (Pillow-style bilinear,
/// antialiased when shrinking), centre crop, grey repeated into RGB, (x - 127) / 128. Training augmentation
/// (fine-tuning with --augment; the from-scratch baseline only with --scratch-augmentation): see
/// `augmentation(size:)`.
public struct VisionDomain: CommandLineDomain {
    public typealias Sample = URL
    public typealias Input = Tensor

    public static let name = "vision"
    public static let appName = VisionTL.appName
    public static let summary = VisionTL.summary
    public static let demo = DemoPlan(
        task: .init(train: "vision/fashion/train", test: "vision/fashion/test", labelsPerClass: [10, nil]),
        // End to end (the top block at 224 x 224) a method costs about a minute on 2 cores, and all of them put the
        // demo at 11.4 minutes (682 s, over its 10). Left out end to end: AdaBN (it re-estimates all 49 BatchNorm
        // layers on both domains: 115 s), Deep CORAL (no gain in independent tables, ADAPTATION.md) and SHOT (made
        // for source-free adaptation). `adapt` runs them all.
        shift: .init(source: "vision/mnist/train", target: "vision/optdigits/unlabelled", targetTest: "vision/optdigits/test",
                     endToEndMethods: [.sourceOnly, .dann, .pseudo, .mcc, .bnm]))

    /// Pretrained weights, relative to the models folder.
    public static let modelPath = "efficientnet-lite0/model.safetensors"

    public struct Options: ParsableArguments {
        @Option(help: "Side of the square image the pretrained network sees, in pixels. EfficientNet-Lite0 was trained at 224; smaller is faster (cost ~ side²) and less accurate: on the Fashion fixtures a linear probe reached 77.3/84.5 % (10 labels per class/all) at 224, 75.9/83.6 % at 160, 74.7/82.8 % at 112, 73.4/80.6 % at 96.")
        public var imageSize: Int = ImagePreprocessing.defaultSize

        @Option(help: "Side of the square image the from-scratch CNN sees, in pixels.")
        public var scratchSize: Int = ScratchCNN.defaultSize

        @Flag(inversion: .prefixedNo, help: "Mirror training images left-right at random when augmenting. Off by default: a mirrored digit or letter is not the same class.")
        public var flip = false

        @Option(help: "Augmentation: brightness and contrast jitter, factors uniform in 1 +- this (torchvision's ColorJitter); 0 turns it off.")
        public var jitter: Float = 0

        @Flag(help: "Augment the from-scratch baseline's training images too. Off by default: with its 30-epoch budget the small CNN learns best from the plain images (Fashion fixtures: 71.5 % / 84.7 % at 10 labels per class / all, against 68.5 % / 83.1 % augmented).")
        public var scratchAugmentation = false

        public init() {}

        public func validate() throws {
            guard jitter >= 0 && jitter < 1 else { throw ValidationError("--jitter must be in [0, 1), got \(jitter)") }
            guard (32...1024).contains(imageSize) else { throw ValidationError("--image-size must be between 32 and 1024, got \(imageSize)") }
            guard (8...256).contains(scratchSize) else { throw ValidationError("--scratch-size must be between 8 and 256, got \(scratchSize)") }
        }
    }

    public let imageSize: Int
    public let scratchSize: Int
    public let flip: Bool
    public let scratchAugmentation: Bool
    public let jitter: Float

    public init(options: Options) throws {
        try options.validate()
        imageSize = options.imageSize
        scratchSize = options.scratchSize
        flip = options.flip
        scratchAugmentation = options.scratchAugmentation
        jitter = options.jitter
    }

    public init(imageSize: Int = ImagePreprocessing.defaultSize, scratchSize: Int = ScratchCNN.defaultSize, flip: Bool = false,
                scratchAugmentation: Bool = false, jitter: Float = 0) {
        self.imageSize = imageSize
        self.scratchSize = scratchSize
        self.flip = flip
        self.scratchAugmentation = scratchAugmentation
        self.jitter = jitter
    }

    // MARK: Data

    public func labelled(at url: URL) throws -> LabelledSet<URL> {
        if try ImageListing.isDirectory(url) {
            let (samples, labels, names) = try ImageListing.classFolders(url)
            return LabelledSet(samples: samples, labels: labels, classNames: names, source: url.path)
        }
        let rows = try ImageListing.csv(url, labelled: true)
        let names = Array(Set(rows.map { $0.label! })).sorted()
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        return LabelledSet(samples: rows.map(\.path), labels: rows.map { index[$0.label!]! }, classNames: names, source: url.path)
    }

    public func unlabelled(at url: URL) throws -> [URL] {
        if try ImageListing.isDirectory(url) { return try ImageListing.imageFiles(in: url, required: true) }
        return try ImageListing.csv(url, labelled: false).map(\.path)
    }

    public func predictionSamples(_ url: URL) throws -> [URL] {
        if try ImageListing.isDirectory(url) { return try ImageListing.imageFiles(in: url, required: true) }
        if url.pathExtension.lowercased() == "csv" { return try ImageListing.csv(url, labelled: false).map(\.path) }
        return [url]
    }

    // MARK: Networks

    public func pretrainedBackbone() throws -> any Backbone<Tensor> {
        try EfficientNetLite0.pretrained(from: try ModelStore.file(Self.modelPath))
    }

    public func scratchBackbone(rng: inout RNG) -> any Backbone<Tensor> {
        ScratchCNN(inputSize: scratchSize, rng: &rng)
    }

    // MARK: Batches

    /// Each file is decoded and preprocessed by one worker at a time, so memory is bounded per thread, not per
    /// batch: 64 PNGs of 50 megapixels would need ~38 GB decoded side by side, here about 0.75 GB per thread.
    public func batch(_ samples: [URL], augment: Bool, scratch: Bool, rng: inout RNG) throws -> Tensor {
        let size = scratch ? scratchSize : imageSize
        if augment && (!scratch || scratchAugmentation) {
            return try Augmentation.trainingBatch(count: samples.count, options: augmentation(size: size), rng: &rng) {
                try ImageFile.read(samples[$0])
            }
        }
        return try ImagePreprocessing.batch(count: samples.count, size: size) {
            ImagePreprocessing.evaluationImage(try ImageFile.read(samples[$0]), size: size)
        }
    }

    /// Training augmentation: random resized crop of 80-100 % of the area (aspect 3/4-4/3), rotation up to 10
    /// degrees, a horizontal flip only with --flip, brightness/contrast jitter only with --jitter. Milder than torchvision's ImageNet recipe (8-100 % crops),
    /// which loses the object in 28 x 28 images: on the Fashion fixtures the from-scratch CNN reached 68.5 % / 83.1 %
    /// (10 labels per class / all) with this, 66.8 % / 76.9 % with 60-100 % crops and colour jitter, 61.5 % / 70.0 %
    /// with 35-100 % crops, rotation and jitter.
    public func augmentation(size: Int) -> AugmentationOptions {
        AugmentationOptions(size: size, scale: 0.8...1, horizontalFlip: flip, rotationDegrees: 10, brightness: jitter,
                            contrast: jitter)
    }

    public func cacheKey(_ sample: URL) -> String { InputFile.contentKey(sample) }

    public var preprocessingKey: String { "png-rgb-shorter-side-centre-crop-\(imageSize)-norm127/128-v1" }

    public func describe(_ sample: URL) -> String { sample.path }

    /// The demo trains only the top block (the 320 -> 1280 head convolution and its BatchNorm) when fine-tuning
    /// and in end-to-end adaptation: the block below it is 1152 channels wide and training both costs 3.4 times
    /// as much per step, which would put the demo over its 10 minutes on 2 cores. `finetune` and `adapt` always
    /// pass their --unfreeze (default 2), so this default only reaches runs without that option (the demo).
    public func adjust(_ options: inout WorkflowOptions) {
        options.unfreeze = 1
    }

    public var optionsSummary: [String: String] {
        ["image_size": String(imageSize), "scratch_size": String(scratchSize), "flip": String(flip),
         "scratch_augmentation": String(scratchAugmentation), "jitter": String(jitter)]
    }
}

extension VisionDomain {
    public func pretrainedFiles() throws -> [(file: URL, storedAs: String)] { [(try ModelStore.file(Self.modelPath), Self.modelPath)] }

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

extension VisionDomain.Options: ContractOptions {
    public var contract: [String: String] { ["image_size": String(imageSize), "scratch_size": String(scratchSize)] }
    public static let contractFlags = ["image_size": ["--image-size"], "scratch_size": ["--scratch-size"]]
    public mutating func adopt(_ contract: [String: String]) throws {
        if let v: Int = try setting(contract, "image_size") { imageSize = v }
        if let v: Int = try setting(contract, "scratch_size") { scratchSize = v }
        try validate()
    }
}
