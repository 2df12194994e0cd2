/// What a trained model needs from the inputs it is applied to: the domain's settings that decide what the
/// network sees (image size, clip length, pooling, sequence length, encoder...), the width of the features the
/// head expects, and the identity of the pretrained weights. Written to run.json and to each saved model's
/// metadata; `evaluate`, `predict` and `info` apply the run's settings, and a model refuses inputs made otherwise.
public struct RunContract: Codable, Equatable, Sendable {
    /// The domain's name ("vision").
    public var domain: String
    /// Settings by name, as strings (e.g. "image_size": "96").
    public var settings: [String: String]
    /// Width of the pooled backbone features the head was trained on.
    public var featureWidth: Int
    /// Hash of the pretrained backbone's weights.
    public var backbone: String

    public init(domain: String, settings: [String: String], featureWidth: Int, backbone: String) {
        self.domain = domain
        self.settings = settings
        self.featureWidth = featureWidth
        self.backbone = backbone
    }

    /// Checks a backbone against the contract: one line naming what differs.
    public func check(featureWidth width: Int, backbone hash: String, source: String) throws {
        guard width == featureWidth else {
            throw EngineError.invalidFile(source, "the model expects \(featureWidth) features, the backbone with these settings gives \(width) (the run's settings: \(describedSettings))")
        }
        guard hash == backbone else {
            throw EngineError.invalidFile(source, "the pretrained weights differ from those the model was trained on (hash \(hash), expected \(backbone)); fetch them again with scripts/fetch-models")
        }
    }

    public var describedSettings: String {
        settings.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }
}
