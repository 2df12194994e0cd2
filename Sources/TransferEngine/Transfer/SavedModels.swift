import Foundation

extension TransferWorkflows {
    // MARK: Saved models

    /// Refuses a model whose contract (features it expects, the pretrained weights) the backbone does not meet.
    func checkContract(_ saved: SavedModel, name: String) throws {
        let width = try featureWidth()
        try saved.contract?.check(featureWidth: width, backbone: backboneHash, source: name)
        guard saved.headInputs == width else {
            throw EngineError.invalidFile(name, "the model's head takes \(saved.headInputs) features, the backbone gives \(width)")
        }
    }

    /// Class probabilities [N, K] of a saved head model on stored pretrained features (a features folder, checked
    /// against this backbone when it was read). Fine-tuned and from-scratch models need the samples themselves.
    public func probabilities(_ saved: SavedModel, features: Tensor, name: String, log: Bool = false) throws -> Tensor {
        guard saved.kind == .head else {
            throw EngineError.invalidFile(name, "holds the pretrained backbone's features, but this model (\(saved.kind == .finetuned ? "fine-tuned" : "from scratch")) needs the samples themselves: give the dataset")
        }
        try checkContract(saved, name: name)
        guard features.shape.count == 2, features.shape[1] == saved.headInputs else {
            throw EngineError.invalidFile(name, "holds \(features.shape.last ?? 0) features per sample, the model's head takes \(saved.headInputs)")
        }
        return probabilities(try saved.makeHead(), features, log: log)
    }

    /// The contract of models trained by these workflows with the domain's `settings`.
    public func contract(settings: [String: String]) throws -> RunContract {
        RunContract(domain: D.name, settings: settings, featureWidth: try featureWidth(), backbone: backboneHash)
    }

    /// Refuses `options.unfreeze` above the backbone's block count (`all` trains every block).
    public func checkUnfreeze() throws {
        let blocks = try pretrainedBackbone().blocks.count
        guard options.unfreeze == Int.max || options.unfreeze <= blocks else {
            throw EngineError.invalidArgument("--unfreeze \(options.unfreeze): the backbone has \(counted(blocks, "blocks")) (give 0-\(blocks), all or auto)")
        }
    }

    /// Width of the pretrained features (loads the backbone the first time).
    func featureWidth() throws -> Int { try pretrainedBackbone().featureCount }

    /// Class probabilities [N, K] of a saved model on samples. A model whose contract (features it expects, the
    /// pretrained weights) the backbone does not meet is refused before anything runs.
    public func probabilities(_ saved: SavedModel, samples: [D.Sample], name: String, log: Bool = false) throws -> Tensor {
        let head = try saved.makeHead()
        if saved.kind != .scratch { try checkContract(saved, name: name) }
        switch saved.kind {
        case .head:
            return probabilities(head, try features(samples, name: name), log: log)
        case .finetuned:
            let bb = try backboneCopy()
            try bb.load(saved.part("backbone."), strict: false, source: "saved backbone")
            return probabilities(head, try pooled(samples, name: name, width: bb.featureCount) { bb.features($0) }, log: log)
        case .scratch:
            var rng = RNG(seed: options.seed)
            let net = domain.scratchBackbone(rng: &rng)
            try net.load(saved.part("net."), source: "saved network")
            guard saved.headInputs == net.featureCount else {
                throw EngineError.invalidFile(name, "the model's head takes \(saved.headInputs) features, its network gives \(net.featureCount)")
            }
            net.train(false)
            return probabilities(head, try pooled(samples, name: name, width: net.featureCount, scratch: true) { net.features($0) }, log: log)
        }
    }
}
