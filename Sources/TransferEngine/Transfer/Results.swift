import Foundation

/// What produced a result row (its JSON `strategy`).
public enum Strategy: String, Codable, Sendable {
    case scratch, extract, finetune
    /// Adaptation methods (`AdaptationMethod`).
    case sourceOnly = "source-only", dann, coral, adabn, pseudo, mcc, shot, bnm, propagate
    /// The adaptation row the label-free rule chose (`chosen` names it).
    case auto
    /// Target-supervised cross-validation on the labelled target test set (reports only).
    case oracle
    /// Adaptation with a few target labels (`adapt --target-labelled`).
    case targetOnly = "target-only", supervised, semi
    /// A saved model scored again (`evaluate`; `modelName` says which).
    case savedModel = "model"

    public init(_ method: AdaptationMethod) {
        switch method {
        case .sourceOnly: self = .sourceOnly
        case .dann: self = .dann
        case .coral: self = .coral
        case .adabn: self = .adabn
        case .pseudo: self = .pseudo
        case .mcc: self = .mcc
        case .shot: self = .shot
        case .bnm: self = .bnm
        case .propagate: self = .propagate
        }
    }
}

/// The outcome of one strategy on one evaluation set (one row of a results table / the JSON `results`).
public struct StrategyResult: Codable {
    public var strategy: Strategy
    /// For adaptation rows; nil otherwise.
    public var level: AdaptationLevel?
    /// For `.savedModel` rows: the model's name in its run.
    public var modelName: String?
    /// Name of the evaluation set.
    public var eval: String
    /// What `report` was measured on: the test set given, the validation split held out from the training data
    /// (no test set given), or nothing (no labels to measure with).
    public var evaluatedOn: Evaluation = .test
    /// Scores of the model on the unlabelled target that need no target labels (adaptation rows).
    public var labelFree: LabelFreeScores?
    /// For the "auto" row: the identifier of the model the label-free rule chose.
    public var chosen: String?
    /// With `--unfreeze auto`: the depths tried and the one chosen.
    public var depthSearch: DepthSearch?
    /// End-to-end source-only rows: how well the source rows fine-tuning held out form class neighbourhoods in the
    /// fine-tuned features (the end-to-end stage's check, `AdaptationSelection.fineTunedChoice`).
    public var heldOutNeighbours: NeighbourCheck?
    /// Labelled training examples per class, nil when all were used.
    public var labelsPerClass: Int?
    /// nil when there was no labelled set to evaluate on.
    public var report: ClassificationReport?
    public var trainSeconds: Double
    public var history: [EpochLog]
    /// The trained model, to save in a run directory (not encoded with the result).
    public var model: SavedModel?
    /// Source and target representations after adaptation (for the PCA plot; not encoded).
    public var alignment: (source: Tensor, target: Tensor)?

    public var accuracy: Double? { report?.accuracy }
    public var macroF1: Double? { report?.macroF1 }

    enum CodingKeys: String, CodingKey {
        case strategy, level, modelName, eval, evaluatedOn, labelFree, chosen, depthSearch, heldOutNeighbours, labelsPerClass, report, trainSeconds, history
    }

    /// Where a result's accuracy comes from.
    public enum Evaluation: String, Codable, Sendable {
        case test, validation
        case notMeasured = "none"
    }

    public init(strategy: Strategy, level: AdaptationLevel?, eval: String, evaluatedOn: Evaluation = .test, labelsPerClass: Int?,
                report: ClassificationReport?, trainSeconds: Double, history: [EpochLog], model: SavedModel? = nil) {
        self.strategy = strategy
        self.level = level
        // No report where a validation split was meant: there was none (too few samples), so nothing is named.
        self.eval = report == nil && evaluatedOn == .validation ? "none" : eval
        self.evaluatedOn = report == nil ? .notMeasured : evaluatedOn
        self.labelsPerClass = labelsPerClass
        self.report = report
        self.trainSeconds = trainSeconds
        self.history = history
        self.model = model
    }

    /// The JSON `strategy`: the strategy, or a saved model's name.
    public var name: String { strategy == .savedModel ? modelName ?? strategy.rawValue : strategy.rawValue }

    /// A short identifier: strategy, level and labels per class ("finetune-10", "dann-end-to-end").
    public var identifier: String {
        [name, level?.rawValue, labelsPerClass.map { "\($0)" }].compactMap { $0 }.joined(separator: "-")
    }
}

/// A trained model as saved in a run: tensors under "head.", "backbone." (what differs from the pretrained
/// weights) or "net." (from-scratch network), and what is needed to rebuild it.
public struct SavedModel {
    public enum Kind: String, Codable, Sendable { case head, finetuned, scratch }
    public var kind: Kind
    public var headKind: ClassifierHead.Kind
    public var headInputs: Int
    public var headHidden: Int
    public var classNames: [String]
    public var tensors: [String: Tensor]
    /// What the model needs from its inputs (nil: saved before contracts were recorded, or not saved yet).
    public var contract: RunContract?

    public init(kind: Kind, head: ClassifierHead, classNames: [String], backbone: [String: Tensor] = [:],
                net: [String: Tensor] = [:]) {
        self.kind = kind
        headKind = head.kind
        headInputs = head.inputs
        headHidden = head.hidden
        self.classNames = classNames
        var t: [String: Tensor] = [:]
        for (k, v) in head.stateDict() { t["head." + k] = v }
        for (k, v) in backbone { t["backbone." + k] = v }
        for (k, v) in net { t["net." + k] = v }
        tensors = t
    }

    public var metadata: [String: String] {
        var m = ["kind": kind.rawValue, "head_kind": headKind.rawValue, "head_inputs": String(headInputs),
                 "head_hidden": String(headHidden),
                 "class_names": String(decoding: (try? JSONEncoder().encode(classNames)) ?? Data("[]".utf8), as: UTF8.self)]
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys   // the same model, the same bytes
        if let contract, let data = try? encoder.encode(contract) { m["contract"] = String(decoding: data, as: UTF8.self) }
        return m
    }

    public init(tensors: [String: Tensor], metadata: [String: String], source: String) throws {
        guard let kind = metadata["kind"].flatMap(Kind.init(rawValue:)),
              let headKind = metadata["head_kind"].flatMap(ClassifierHead.Kind.init(rawValue:)),
              let inputs = metadata["head_inputs"].flatMap(Int.init), let hidden = metadata["head_hidden"].flatMap(Int.init),
              let namesData = metadata["class_names"]?.data(using: .utf8),
              let names = try? JSONDecoder().decode([String].self, from: namesData) else {
            throw EngineError.invalidFile(source, "not a model saved by this suite (metadata missing or damaged)")
        }
        self.kind = kind
        self.headKind = headKind
        headInputs = inputs
        headHidden = hidden
        classNames = names
        self.tensors = tensors
        if let text = metadata["contract"] {
            guard let c = try? JSONDecoder().decode(RunContract.self, from: Data(text.utf8)) else {
                throw EngineError.invalidFile(source, "the model's contract metadata is damaged")
            }
            contract = c
        }
        guard names.count >= 2, inputs >= 1, hidden >= 1, inputs <= 1 << 20, hidden <= 1 << 20 else {
            throw EngineError.invalidFile(source, "not a model saved by this suite (metadata out of range)")
        }
        // The head is built from these numbers before its weights are loaded: they must describe the tensors the
        // file holds, so that metadata cannot make it allocate more than the file contains.
        let classes = names.count
        let expected = 2 * inputs   // standardisation: feature_mean, feature_scale
            + (headKind == .linear ? inputs * classes + classes : inputs * hidden + hidden + hidden * classes + classes)
        let stored = tensors.filter { $0.key.hasPrefix("head.") }.reduce(0) { $0 + $1.value.count }
        guard stored == expected else {
            throw EngineError.invalidFile(source, "the model's metadata (\(headKind.withArticle) head, \(inputs) features in, \(classes) classes) does not match its head weights (\(stored) numbers, expected \(expected))")
        }
    }

    /// Tensors under `prefix` with the prefix removed.
    public func part(_ prefix: String) -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: tensors.filter { $0.key.hasPrefix(prefix) }.map { (String($0.key.dropFirst(prefix.count)), $0.value) })
    }

    /// The head, rebuilt and loaded.
    public func makeHead() throws -> ClassifierHead {
        var rng = RNG(seed: 0)
        let head = ClassifierHead(kind: headKind, inputs: headInputs, classes: classNames.count, hidden: headHidden, rng: &rng)
        try head.load(part("head."), source: "saved head")
        return head
    }
}

