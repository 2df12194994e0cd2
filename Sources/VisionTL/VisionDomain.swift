import Foundation
import TransferEngine

/// Image classification from PNG and JPEG files with ImageNet EfficientNet-Lite0 as the pretrained backbone.
///
/// Data layouts (samples are file URLs; an image is decoded only when a batch needs it; `.png`, `.jpg` and `.jpeg`
/// files, mixed freely, told apart by their bytes):
/// - labelled: `<root>/<label>/*.png` (ImageFolder: one folder per class, classes in sorted order), or a CSV
///   file `path,label` (`PathList`: an optional header naming `path` and `label` in any order; paths relative to
///   the CSV file);
/// - unlabelled: a folder of images (that folder only, not its subfolders), or a CSV whose first column (or the
///   column a header names `path`) is a path; further columns are ignored.
///
/// Preprocessing for the pretrained network: shorter side resized to `imageSize` (`--image-size`) (Pillow-style bilinear,
/// antialiased when shrinking), centre crop, grey repeated into RGB, (x - 127) / 128. Training augmentation
/// (fine-tuning with --augment; the from-scratch baseline only with --scratch-augmentation): see
/// `augmentation(size:)`.
public struct VisionDomain: TransferDomain {
    public typealias Sample = URL
    public typealias Input = Tensor

    public static let name = "vision"

    /// Pretrained weights, relative to the models folder.
    public static let modelPath = "efficientnet-lite0/model.safetensors"

    /// The domain's settings, with their defaults (the command line's flags: Sources/VisionCLI). Errors name the
    /// command-line flag of a setting.
    public struct Configuration: Equatable, Sendable {
        /// Side of the square image the pretrained network sees, in pixels (32...1024).
        public var imageSize: Int
        /// Side of the square image the from-scratch CNN sees, in pixels (8...256).
        public var scratchSize: Int
        /// Mirror training images left-right at random when augmenting.
        public var flip: Bool
        /// Brightness and contrast jitter when augmenting, factors uniform in 1 +- this, in [0, 1); 0 turns it off.
        public var jitter: Float
        /// Augment the from-scratch baseline's training images too.
        public var scratchAugmentation: Bool

        public init(imageSize: Int = ImagePreprocessing.defaultSize, scratchSize: Int = ScratchCNN.defaultSize, flip: Bool = false,
                    jitter: Float = 0, scratchAugmentation: Bool = false) {
            self.imageSize = imageSize
            self.scratchSize = scratchSize
            self.flip = flip
            self.jitter = jitter
            self.scratchAugmentation = scratchAugmentation
        }

        public func validate() throws {
            guard jitter >= 0 && jitter < 1 else { throw EngineError.invalidArgument("--jitter must be in [0, 1), got \(jitter)") }
            guard (32...1024).contains(imageSize) else { throw EngineError.invalidArgument("--image-size must be between 32 and 1024, got \(imageSize)") }
            guard (8...256).contains(scratchSize) else { throw EngineError.invalidArgument("--scratch-size must be between 8 and 256, got \(scratchSize)") }
        }
    }

    public let imageSize: Int
    public let scratchSize: Int
    public let flip: Bool
    public let scratchAugmentation: Bool
    public let jitter: Float

    public init(configuration: Configuration) throws {
        try configuration.validate()
        self.init(imageSize: configuration.imageSize, scratchSize: configuration.scratchSize, flip: configuration.flip,
                  scratchAugmentation: configuration.scratchAugmentation, jitter: configuration.jitter)
    }

    /// Without the checks of `Configuration.validate()`.
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
        return try PathList.labelledSet(url, kind: "file")
    }

    public func unlabelled(at url: URL) throws -> [URL] {
        if try ImageListing.isDirectory(url) { return try ImageListing.imageFiles(in: url, required: true) }
        return try PathList.read(url, labelled: false, kind: "file").map(\.url)
    }

    public func predictionSamples(_ url: URL) throws -> [URL] {
        if try ImageListing.isDirectory(url) { return try ImageListing.imageFiles(in: url, required: true) }
        if url.pathExtension.lowercased() == "csv" { return try PathList.read(url, labelled: false, kind: "file").map(\.url) }
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
    /// degrees, a horizontal flip only with `flip` (--flip), brightness/contrast jitter only with `jitter` (--jitter). Milder than torchvision's ImageNet recipe (8-100 % crops),
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
}
