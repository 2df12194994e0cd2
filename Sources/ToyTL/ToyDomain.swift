import Foundation
import TransferEngine

/// The smallest complete domain, and the suite's test bed: numeric vectors from CSV files, with a
/// "pretrained" two-block MLP read from `Models/toy/backbone.safetensors` (made by `ToyData.generate`).
///
/// It is also the worked example of adding a domain: one type conforming to the engine's `TransferDomain` (data
/// loading, batching, a pretrained backbone and a from-scratch one) with a plain `Configuration`; its command
/// line (flags, demo) is in Sources/ToyCLI, plus a four-line app.
public struct ToyDomain: TransferDomain {
    public typealias Sample = [Float]
    public typealias Input = Tensor

    public static let name = "toy"

    /// The domain's settings, with their defaults. Errors name the command-line flag of a setting.
    public struct Configuration: Equatable, Sendable {
        /// Standard deviation of the Gaussian noise added to training vectors when augmenting.
        public var noise: Float

        public init(noise: Float = 0.1) {
            self.noise = noise
        }

        public func validate() throws {
            guard noise >= 0 else { throw EngineError.invalidArgument("--noise must be >= 0") }
        }
    }

    let noise: Float

    public init(configuration: Configuration = Configuration()) throws {
        try configuration.validate()
        noise = configuration.noise
    }

    /// A CSV file: header `label,x0,x1,...`, one sample per row.
    public func labelled(at url: URL) throws -> LabelledSet<[Float]> {
        let (header, rows) = try ToyCSV.read(url)
        guard header.first == "label" else { throw EngineError.invalidFile(url.path, "the first column must be 'label'") }
        var names: [String] = [], index: [String: Int] = [:], labels: [Int] = [], samples: [[Float]] = []
        for (line, row) in rows {
            if index[row[0]] == nil { index[row[0]] = names.count; names.append(row[0]) }
            labels.append(index[row[0]]!)
            samples.append(try ToyCSV.numbers(row.dropFirst(), url: url, line: line))
        }
        // Classes in sorted order so every file of the same classes agrees.
        let sorted = names.sorted()
        let remap = names.map { sorted.firstIndex(of: $0)! }
        return LabelledSet(samples: samples, labels: labels.map { remap[$0] }, classNames: sorted, source: url.path)
    }

    /// A CSV file of vectors without a label column.
    public func unlabelled(at url: URL) throws -> [[Float]] {
        let (header, rows) = try ToyCSV.read(url)
        guard header.first != "label" else { throw EngineError.invalidFile(url.path, "an unlabelled set must not have a label column") }
        return try rows.map { try ToyCSV.numbers($0.1[...], url: url, line: $0.0) }
    }

    public func predictionSamples(_ url: URL) throws -> [[Float]] { try unlabelled(at: url) }

    static let modelPath = "toy/backbone.safetensors"

    public func pretrainedFiles() throws -> [(file: URL, storedAs: String)] { [(try ModelStore.file(Self.modelPath), Self.modelPath)] }

    public func pretrainedBackbone() throws -> any Backbone<Tensor> {
        let url = try ModelStore.file(Self.modelPath)
        let file = try SafeTensors.read(url)
        let inputs = try file.shape(of: "fc0.weight")[1]
        var rng = RNG(seed: 0)
        let b = ToyBackbone(inputs: inputs, rng: &rng)
        try b.load(try file.tensors(), source: url.path)
        return b
    }

    public func scratchBackbone(rng: inout RNG) -> any Backbone<Tensor> {
        ToyBackbone(inputs: ToyData.dimensions, rng: &rng)
    }

    public func batch(_ samples: [[Float]], augment: Bool, scratch: Bool, rng: inout RNG) throws -> Tensor {
        let d = samples.first?.count ?? 0
        var t = Tensor(shape: [samples.count, d], scalars: samples.flatMap { $0 })
        if augment && noise > 0 { t = t + rng.normalTensor(t.shape, std: noise) }
        return t
    }

    public func cacheKey(_ sample: [Float]) -> String {
        var h = FNV64()
        sample.withUnsafeBytes { h.add($0) }
        return h.hex
    }

    public var preprocessingKey: String { "toy-v1" }

    public func describe(_ sample: [Float]) -> String {
        "[" + sample.prefix(3).map { String(format: "%.2f", $0) }.joined(separator: ", ") + ", ...]"
    }
}

/// Two blocks of Linear + BatchNorm + ReLU; the second block's output is the feature vector.
public final class ToyBackbone: Module, StackedBackbone {
    public typealias Input = Tensor
    let fc0: Linear, bn0: BatchNorm, fc1: Linear, bn1: BatchNorm
    public let featureCount = 16

    public init(inputs: Int, rng: inout RNG) {
        fc0 = Linear(inputs: inputs, outputs: 16, rng: &rng)
        bn0 = BatchNorm(channels: 16)
        fc1 = Linear(inputs: 16, outputs: 16, rng: &rng)
        bn1 = BatchNorm(channels: 16)
        super.init()
        child("fc0", fc0); child("bn0", bn0); child("fc1", fc1); child("bn1", bn1)
    }

    public var blocks: [[String]] { [["fc0", "bn0"], ["fc1", "bn1"]] }
    public var blockNames: [String] { ["block 0 (fc0, bn0)", "block 1 (fc1, bn1)"] }
    public var activationsAreSequences: Bool { false }

    public func block(_ i: Int, _ x: Variable) -> Variable {
        i == 0 ? bn0(fc0(x), activation: .relu) : bn1(fc1(x), activation: .relu)
    }

    public func forward(_ activation: Activation, from start: Int) -> Variable {
        run(activation.value, blocks: start..<blocks.count)
    }
}
