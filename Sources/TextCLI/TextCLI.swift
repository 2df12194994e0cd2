import ArgumentParser
import Foundation
import TextTL
import TransferCLI
import TransferEngine

/// text-tl: the text domain on the shared command line (its flags, its demo on the fixtures, its run contract,
/// the text lengths `check-data` shows and the texts in report.html).
extension TextDomain: CommandLineDomain {
    public static let appName = TextTL.appName
    public static let summary = TextTL.summary
    /// Movies at 10 and 100 labels per class and all; movies -> Amazon with every method on frozen features
    /// (adabn: MiniLM has LayerNorm only, so it re-estimates the head's feature standardisation on the target,
    /// i.e. per-domain standardisation). End-to-end adaptation fine-tunes the top two layers once per method over
    /// the 8k source texts (2-3 minutes each): `adapt`'s default `--level auto` does that on this shift, where the
    /// frozen features fail the neighbourhood check (about 14 minutes), which is beyond the demo's time, so the demo
    /// stays at the feature level and says so.
    public static let demo = DemoPlan(
        task: .init(train: "text/movies/train.tsv", test: "text/movies/test.tsv", labelsPerClass: [10, 100, nil]),
        shift: .init(source: "text/movies/train.tsv", target: "text/amazon/unlabelled.tsv",
                     targetTest: "text/amazon/test.tsv", methods: AdaptationMethod.allCases, levels: [.features]))

    /// The flags of `Configuration`, with its defaults.
    public struct Options: ParsableArguments {
        @Option(help: "Label column of a table: a header name or a 0-based index (JSON Lines: a key).")
        public var labelColumn = defaults.labelColumn
        @Option(help: "Text column of a table: a header name or a 0-based index (JSON Lines: a key).")
        public var textColumn = defaults.textColumn
        @Flag(help: "TSV/CSV tables have no header row (choose the columns by 0-based index).")
        public var noHeader = defaults.noHeader
        @Option(help: "Maximum tokens per text, counting [CLS] and [SEP]; longer texts are truncated.")
        public var maxLength = defaults.maxLength
        @Option(help: "Pretrained BERT encoder: a folder under the models folder, or a path, holding config.json, model.safetensors and vocab.txt.")
        public var encoder = defaults.encoder
        @Flag(inversion: .prefixedNo, help: "L2-normalise the mean-pooled sentence embedding (as sentence-transformers does).")
        public var normalize = defaults.normalize
        public init() {}

        public var configuration: TextDomain.Configuration {
            .init(labelColumn: labelColumn, textColumn: textColumn, noHeader: noHeader, maxLength: maxLength, encoder: encoder,
                  normalize: normalize)
        }
    }

    public init(options: Options) throws {
        self = try validatingOptions { try TextDomain(configuration: options.configuration) }
    }

    public func preview(_ sample: TextExample) -> SamplePreview? { .text(sample.text) }

    /// Text lengths in characters, and how many texts --max-length cuts.
    public func sizeSummary(_ samples: [TextExample]) -> String? {
        guard var summary = spread(samples.map { Double($0.text.count) }, { String(Int($0)) }).map({ "texts of \($0) characters" }) else { return nil }
        if let cut = truncatedCount(samples) {
            summary += "; \(cut) longer than --max-length \(maxLength) word pieces (cut)"
        }
        return summary
    }
}

private let defaults = TextDomain.Configuration()

extension TextDomain.Options: ContractOptions {
    /// The encoder as a name under the models folder, or an absolute path.
    public var contract: [String: String] {
        ["max_length": String(maxLength), "normalize": String(normalize),
         "encoder": encoder.contains("/") ? URL(fileURLWithPath: encoder).standardizedFileURL.path : encoder]
    }
    public static let contractFlags = ["max_length": ["--max-length"], "normalize": ["--normalize", "--no-normalize"],
                                       "encoder": ["--encoder"]]
    public mutating func adopt(_ contract: [String: String]) throws {
        if let v: Int = try setting(contract, "max_length") { maxLength = v }
        if let v: Bool = try setting(contract, "normalize") { normalize = v }
        if let v = contract["encoder"] { encoder = v }
    }
}
