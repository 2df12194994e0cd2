import Foundation

/// A labelled dataset: samples with class indices into `classNames`.
public struct LabelledSet<Sample> {
    public var samples: [Sample]
    public var labels: [Int]
    public var classNames: [String]
    /// Where it came from (a folder or table path), for messages and the dataset name in reports.
    public var source: String

    public init(samples: [Sample], labels: [Int], classNames: [String], source: String) {
        precondition(samples.count == labels.count, "LabelledSet: \(samples.count) samples but \(labels.count) labels")
        self.samples = samples
        self.labels = labels
        self.classNames = classNames
        self.source = source
    }

    public var count: Int { samples.count }

    /// Samples per class.
    public var classCounts: [Int] {
        var c = [Int](repeating: 0, count: classNames.count)
        for y in labels { c[y] += 1 }
        return c
    }

    public func subset(_ indices: [Int]) -> LabelledSet {
        LabelledSet(samples: indices.map { samples[$0] }, labels: indices.map { labels[$0] },
                    classNames: classNames, source: source)
    }

    /// Checks what training needs: at least two classes, none empty. One line naming the set on failure.
    public func validateForTraining() throws {
        guard classNames.count >= 2 else {
            throw EngineError.invalidFile(source, "needs at least 2 classes, found \(classNames.count)\(classNames.first.map { " ('\($0)')" } ?? "")")
        }
        for (name, n) in zip(classNames, classCounts) where n == 0 {
            throw EngineError.invalidFile(source, "class '\(name)' has no samples")
        }
    }

    /// Re-indexes labels to `names` (e.g. a test set onto the training classes). Unknown classes are an error.
    public func relabelled(to names: [String]) throws -> LabelledSet {
        if names == classNames { return self }
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        var out = [Int]()
        for y in labels {
            guard let j = index[classNames[y]] else {
                throw EngineError.invalidFile(source, "class '\(classNames[y])' is not one of the classes trained on (\(names.joined(separator: ", ")))")
            }
            out.append(j)
        }
        return LabelledSet(samples: samples, labels: out, classNames: names, source: source)
    }
}

/// What flows between backbone blocks: a batch of activations, possibly sequences of different lengths.
///
/// `value` is [B·rowsPerSample, ...]. Sequences are packed, sample after sample without padding: `value` is
/// [Σ lengths, ...] with `lengths` giving each sample's rows. Below a text network's first block the rows are
/// token ids, one per row in `ids` (`value` is then [Σ lengths, 0]). The per-sample split/join lets the
/// fine-tuning workflow cache the frozen part's output sample by sample and batch it again in any order.
public struct Activation {
    public var value: Variable
    public var lengths: [Int]?
    public var rowsPerSample: Int
    public var ids: [Int]?

    public init(_ value: Variable, lengths: [Int]? = nil, rowsPerSample: Int = 1) {
        self.value = value
        self.lengths = lengths
        self.rowsPerSample = rowsPerSample
    }

    /// Packed token ids of sequences of `lengths`.
    public init(ids: [Int], lengths: [Int]) {
        self.init(Variable(Tensor(zeros: [ids.count, 0])), lengths: lengths)
        self.ids = ids
    }

    public var batchSize: Int { lengths?.count ?? value.shape[0] / rowsPerSample }

    /// One sample's rows of a batch (with its token ids when the rows are ids).
    public struct Part {
        public let rows: Tensor
        public let ids: [Int]?
    }

    /// One part per sample.
    public func split() -> [Part] {
        var start = 0
        return (0..<batchSize).map { i in
            let range = start..<start + (lengths?[i] ?? rowsPerSample)
            start = range.upperBound
            return Part(rows: value.value.rows(range), ids: ids.map { Array($0[range]) })
        }
    }

    /// Batches parts from `split()` again: their rows one after the other.
    public static func join(_ parts: [Part], sequences: Bool, rowsPerSample: Int) -> Activation {
        var a = Activation(Variable(Tensor.concatenateRows(parts.map(\.rows))),
                           lengths: sequences ? parts.map { $0.rows.shape[0] } : nil, rowsPerSample: rowsPerSample)
        if parts.first?.ids != nil { a.ids = parts.flatMap { $0.ids! } }
        return a
    }
}

/// A pretrained (or from-scratch) network that turns inputs into a feature vector, as a stack of named blocks.
///
/// `blocks` are parameter-name prefixes bottom to top (e.g. `_conv_stem`+`_bn0`, `_blocks.0` ...
/// `_conv_head`+`_bn1`); "unfreeze the top k" means the last k of them. Block 0 consumes the raw input.
public protocol Backbone<Input>: Module {
    associatedtype Input
    /// Width of the pooled feature vector.
    var featureCount: Int { get }
    /// For each block, the parameter-name prefixes that belong to it, bottom to top.
    var blocks: [[String]] { get }
    /// Human-readable block names, parallel to `blocks`.
    var blockNames: [String] { get }
    /// Runs blocks 0..<end on the raw input.
    func forward(_ input: Input, through end: Int) -> Activation
    /// Runs blocks start..<blocks.count on an intermediate activation, then pools to [B, featureCount].
    func forward(_ activation: Activation, from start: Int) -> Variable
    /// Whether intermediate activations are sequences (split/join by length).
    var activationsAreSequences: Bool { get }
}

/// A backbone whose blocks are plain functions of one activation, applied one after the other (the small
/// from-scratch networks): it only says what block `i` does; `run` chains them.
public protocol StackedBackbone: Backbone {
    /// Block `i` applied to its input.
    func block(_ i: Int, _ x: Variable) -> Variable
}

extension StackedBackbone {
    /// Blocks `range`, bottom to top.
    public func run(_ x: Variable, blocks range: Range<Int>) -> Variable { range.reduce(x) { block($1, $0) } }
}

extension StackedBackbone where Input == Tensor {
    /// Blocks 0..<end on the raw input tensor.
    public func forward(_ input: Tensor, through end: Int) -> Activation { Activation(run(Variable(input), blocks: 0..<end)) }
}

extension Backbone {
    /// Pooled features [B, featureCount] of a batch.
    public func features(_ input: Input) -> Variable {
        forward(forward(input, through: blocks.count), from: blocks.count)
    }

    /// The first block trained when the top `k` are unfrozen (`blocks.count` for none): the frozen part is 0..<it.
    public func firstTrainableBlock(unfreezing k: Int) -> Int { blocks.count - min(max(k, 0), blocks.count) }

    /// Parameter prefixes of the top `k` blocks.
    public func topBlockPrefixes(_ k: Int) -> [String] { blocks.suffix(max(0, min(k, blocks.count))).flatMap { $0 } }

    /// Freezes everything, then unfreezes the top `k` blocks. BatchNorm layers outside them keep frozen statistics.
    public func setTrainableTop(_ k: Int) {
        freeze()
        let prefixes = topBlockPrefixes(k)
        if !prefixes.isEmpty { unfreeze(prefixes) }
        for (name, bn) in batchNormLayers() {
            bn.frozenStatistics = !prefixes.contains { Module.matches(name, $0) || name == $0 }
        }
    }
}

/// What the workflows need from a domain: reading data, building batches, the pretrained backbone and a
/// from-scratch baseline. Adding a domain is one type conforming to this plus a few-line app.
public protocol TransferDomain {
    /// One example as a reference (a file URL, a line of text): cheap to hold, loaded by `batch`.
    associatedtype Sample
    associatedtype Input

    /// Short name, e.g. "vision".
    static var name: String { get }
    /// Loads a labelled set: a folder per class, or a table with a label column.
    func labelled(at url: URL) throws -> LabelledSet<Sample>
    /// Loads unlabelled samples: a folder of files or a table without labels.
    func unlabelled(at url: URL) throws -> [Sample]
    /// The pretrained backbone, loaded from the models folder.
    func pretrainedBackbone() throws -> any Backbone<Input>
    /// A small randomly initialised network on the same kind of input, for the from-scratch baseline.
    func scratchBackbone(rng: inout RNG) -> any Backbone<Input>
    /// Loads and preprocesses samples into one batch. `augment` applies the domain's seeded augmentation;
    /// `scratch` selects the from-scratch network's preprocessing.
    func batch(_ samples: [Sample], augment: Bool, scratch: Bool, rng: inout RNG) throws -> Input
    /// Identity of a sample's contents for the feature cache and the run's data fingerprint (e.g. a hash of a
    /// file's bytes; never its name or modification time, which survive replacing a file with `cp -p`).
    func cacheKey(_ sample: Sample) -> String
    /// Everything about preprocessing that changes features (input size, normalisation...).
    var preprocessingKey: String { get }
    /// How to show a sample (file name) in predictions.
    func describe(_ sample: Sample) -> String
}
