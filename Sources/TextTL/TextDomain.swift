import Foundation
import TransferEngine

/// Text classification: tables (TSV, CSV, JSON Lines) or folders of .txt files, BERT WordPiece tokens and a
/// pretrained BERT sentence encoder (all-MiniLM-L6-v2 by default; any BERT encoder folder in the Hugging Face
/// layout with config.json, model.safetensors and vocab.txt loads too, see `Configuration.encoder`).
public struct TextDomain: TransferDomain {
    public typealias Sample = TextExample
    public typealias Input = TokenBatch

    public static let name = "text"

    /// The domain's settings, with their defaults (the command line's flags: Sources/TextCLI). Errors name the
    /// command-line flag of a setting.
    public struct Configuration: Equatable, Sendable {
        /// Label column of a table: a header name or a 0-based index (JSON Lines: a key).
        public var labelColumn: String
        /// Text column of a table: a header name or a 0-based index (JSON Lines: a key).
        public var textColumn: String
        /// TSV/CSV tables have no header row (columns are chosen by 0-based index).
        public var noHeader: Bool
        /// Maximum tokens per text, counting [CLS] and [SEP] (at least 2); longer texts are truncated.
        public var maxLength: Int
        /// Pretrained BERT encoder: a folder under the models folder, or a path (containing "/"), holding
        /// config.json, model.safetensors and vocab.txt.
        public var encoder: String
        /// L2-normalise the mean-pooled sentence embedding (as sentence-transformers does).
        public var normalize: Bool

        public init(labelColumn: String = "label", textColumn: String = "text", noHeader: Bool = false, maxLength: Int = 128,
                    encoder: String = "all-MiniLM-L6-v2", normalize: Bool = true) {
            self.labelColumn = labelColumn
            self.textColumn = textColumn
            self.noHeader = noHeader
            self.maxLength = maxLength
            self.encoder = encoder
            self.normalize = normalize
        }

        public func validate() throws {
            guard maxLength >= 2 else { throw EngineError.invalidArgument("--max-length must be at least 2 ([CLS] and [SEP])") }
            guard labelColumn != textColumn else {
                throw EngineError.invalidArgument("--label-column and --text-column are the same column ('\(labelColumn)'): the labels would be the texts")
            }
        }
    }

    public let maxLength: Int
    public let normalize: Bool
    let labelColumn: TextColumn, textColumn: TextColumn, hasHeader: Bool
    let encoderFolder: URL
    /// Loaded once; an error (missing model files) is reported by the first command that needs tokens.
    let tokenizer: Result<WordPieceTokenizer, Error>

    public init(configuration: Configuration = Configuration()) throws {
        try configuration.validate()
        maxLength = configuration.maxLength
        normalize = configuration.normalize
        labelColumn = TextColumn(parsing: configuration.labelColumn)
        textColumn = TextColumn(parsing: configuration.textColumn)
        hasHeader = !configuration.noHeader
        let given = URL(fileURLWithPath: configuration.encoder)
        encoderFolder = configuration.encoder.contains("/") ? given : ModelStore.directory.appendingPathComponent(configuration.encoder)
        let vocabulary = encoderFolder.appendingPathComponent("vocab.txt")
        tokenizer = Result {
            guard FileManager.default.fileExists(atPath: vocabulary.path) else {
                throw EngineError.invalidFile(vocabulary.path, "vocabulary not found; fetch the pretrained models with: scripts/fetch-models (or set TL_MODELS_DIR)")
            }
            return try WordPieceTokenizer(vocabulary: vocabulary)
        }
    }

    // MARK: Data

    public func labelled(at url: URL) throws -> LabelledSet<TextExample> {
        let examples = try TextTable.read(url, labelColumn: labelColumn, textColumn: textColumn, hasHeader: hasHeader)
        guard !examples.isEmpty else { throw EngineError.invalidFile(url.path, "no examples") }
        // Classes in sorted order, so every file with the same classes agrees.
        let names = Set(examples.map { $0.label! }).sorted()
        let index = Dictionary(uniqueKeysWithValues: names.enumerated().map { ($1, $0) })
        return LabelledSet(samples: examples, labels: examples.map { index[$0.label!]! }, classNames: names, source: url.path)
    }

    public func unlabelled(at url: URL) throws -> [TextExample] {
        let examples = try TextTable.read(url, labelColumn: nil, textColumn: textColumn, hasHeader: hasHeader)
        guard !examples.isEmpty else { throw EngineError.invalidFile(url.path, "no examples") }
        return examples
    }

    /// A .txt file is one text; a table or folder gives its texts (labels, if any, are ignored).
    public func predictionSamples(_ url: URL) throws -> [TextExample] {
        if url.pathExtension.lowercased() == "txt" {
            let bytes = try TextTable.contents(of: url)
            let text = String(decoding: bytes, as: UTF8.self)
            guard !TextTable.isBlank(text) else { throw EngineError.invalidFile("\(url.path):1", "empty text") }
            return [TextExample(text: text, source: url.path)]
        }
        return try unlabelled(at: url)
    }

    // MARK: Models

    public func pretrainedBackbone() throws -> any Backbone<TokenBatch> {
        let encoder = try BERTEncoder.load(folder: encoderFolder, normalizesFeatures: normalize)
        let t = try tokenizer.get()
        guard t.vocabularySize <= encoder.configuration.vocabularySize else {
            throw EngineError.invalidFile(encoderFolder.path, "vocab.txt has \(t.vocabularySize) tokens, the model only \(encoder.configuration.vocabularySize)")
        }
        guard maxLength <= encoder.configuration.maxPositions else {
            throw EngineError.invalidArgument("--max-length \(maxLength) exceeds the encoder's \(encoder.configuration.maxPositions) positions")
        }
        return encoder
    }

    public func scratchBackbone(rng: inout RNG) -> any Backbone<TokenBatch> {
        let size = (try? tokenizer.get().vocabularySize) ?? 30522
        return BagOfPiecesBackbone(vocabularySize: size, rng: &rng)
    }

    /// Tokens of a batch. The pretrained encoder gets [CLS] pieces [SEP] (cut to `maxLength`); the from-scratch
    /// bag gets the pieces and their hashed bigrams. Augmentation (when asked for) drops each word piece with
    /// probability 0.1, keeping at least one.
    public func batch(_ samples: [TextExample], augment: Bool, scratch: Bool, rng: inout RNG) throws -> TokenBatch {
        let t = try tokenizer.get()
        var sequences: [[Int]]
        if scratch {
            let limit = max(1, maxLength - 2)
            sequences = t.encode(samples.map(\.text), maxLength: nil).map { ids in
                Array(ids.dropFirst().dropLast().prefix(limit))
            }
            if augment { sequences = sequences.map { dropPieces($0, keepFirst: 0, keepLast: 0, rng: &rng) } }
            sequences = sequences.map { BagOfPiecesBackbone.bag(pieces: $0, vocabularySize: t.vocabularySize, unknownID: t.unknownID) }
        } else {
            sequences = t.encode(samples.map(\.text), maxLength: maxLength)
            if augment { sequences = sequences.map { dropPieces($0, keepFirst: 1, keepLast: 1, rng: &rng) } }
        }
        return TokenBatch(sequences)
    }

    func dropPieces(_ ids: [Int], keepFirst: Int, keepLast: Int, rng: inout RNG) -> [Int] {
        let body = ids.count - keepFirst - keepLast
        guard body > 1 else { return ids }
        var kept = Array(ids.prefix(keepFirst))
        for id in ids[keepFirst..<ids.count - keepLast] where rng.int(below: 10) != 0 { kept.append(id) }
        if kept.count == keepFirst { kept.append(ids[keepFirst]) }
        kept += ids.suffix(keepLast)
        return kept
    }

    public func cacheKey(_ sample: TextExample) -> String {
        var h = FNV64()
        h.add(sample.text)
        return h.hex
    }

    public var preprocessingKey: String {
        "text-v1 wordpiece max-length \(maxLength) mean-pool\(normalize ? " l2" : "") \(encoderFolder.lastPathComponent)"
    }

    /// The source and the text's start on one line: line breaks and tabs become single spaces, and more than 60
    /// scalars are cut to 57 and "...". Only the start is read, scalar by scalar (comparing `Character`s would
    /// normalise the whole of a grapheme cluster, in time quadratic in its length: 'a' with 400,000 marks).
    public func describe(_ sample: TextExample) -> String {
        var shown: [Unicode.Scalar] = [], space = false
        for s in sample.text.unicodeScalars {
            switch s.value {
            case 0x09...0x0D, 0x85, 0x2028, 0x2029: space = !shown.isEmpty; continue   // line breaks and tabs
            default: break
            }
            if space { shown.append(" "); space = false }
            shown.append(s)
            if shown.count > 60 { break }
        }
        if shown.count > 60 { shown = Array(shown.prefix(57)) + Array("...".unicodeScalars) }
        var line = String.UnicodeScalarView()
        line.append(contentsOf: shown)
        return "\(sample.source) \"\(String(line))\""
    }

    // MARK: Workflows

    /// BERT fine-tuning recipes train for a few epochs only (Devlin et al.: 2-4); heads keep the defaults.
    public func adjust(_ options: inout WorkflowOptions) {
        options.fineTuning.epochs = 3
    }

    public var optionsSummary: [String: String] {
        ["max_length": String(maxLength), "normalize": String(normalize), "encoder": encoderFolder.path,
         "label_column": labelColumn.description, "text_column": textColumn.description, "header": String(hasHeader)]
    }
}

extension TextDomain {
    /// Every file of the encoder's folder (weights, configuration, vocabulary), under the folder's name.
    public func pretrainedFiles() throws -> [(file: URL, storedAs: String)] {
        let names = try FileManager.default.contentsOfDirectory(atPath: encoderFolder.path).filter { !$0.hasPrefix(".") }.sorted()
        return names.map { (encoderFolder.appendingPathComponent($0), encoderFolder.lastPathComponent + "/" + $0) }
    }

    /// An encoder given as a path is exported under its folder's name.
    public func exported(_ contract: RunContract) -> RunContract {
        var c = contract
        if let e = c.settings["encoder"], e.contains("/") { c.settings["encoder"] = URL(fileURLWithPath: e).lastPathComponent }
        return c
    }

    /// How many of the texts `maxLength` cuts, or nil when the vocabulary cannot be read.
    public func truncatedCount(_ samples: [TextExample]) -> Int? {
        guard let t = try? tokenizer.get() else { return nil }
        return samples.filter { t.pieces($0.text, limit: maxLength - 1).count > maxLength - 2 }.count
    }
}
