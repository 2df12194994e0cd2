import Foundation

extension TransferWorkflows {
    // MARK: Feature extraction

    /// Frozen backbone, cached features, new head. Without a test set, the validation split held out from the
    /// training data reports (it also chose the epoch, so it flatters a little; the result says which it was).
    public func extract(train: LabelledSet<D.Sample>, test: LabelledSet<D.Sample>?, labelsPerClass: Int? = nil,
                        evalName: String) throws -> (result: StrategyResult, head: ClassifierHead) {
        let set = trainingSet(train, labelsPerClass: labelsPerClass)
        let fTrain = try features(set.samples, name: "train")
        let fTest = try test.map { try features($0.samples, name: evalName) }
        return try extract(features: fTrain, labels: set.labels, classNames: set.classNames,
                           test: test.map { (fTest!, $0.labels) }, labelsPerClass: labelsPerClass, evalName: evalName)
    }

    /// Feature extraction on features already computed (e.g. read from a features folder): `labels` index
    /// `classNames`, `features` rows are the training samples (already reduced to `labelsPerClass`, which is
    /// recorded), `test` labels index `classNames` too. The same numbers as computing the features here.
    public func extract(features fTrain: Tensor, labels: [Int], classNames: [String], test: (features: Tensor, labels: [Int])?,
                        labelsPerClass: Int?, evalName: String) throws -> (result: StrategyResult, head: ClassifierHead) {
        var rng = RNG(seed: options.seed)
        let start = Date()
        let (head, history, validation) = try trainHead(features: fTrain, labels: labels, classes: classNames.count,
                                                        kind: options.head, name: "extract-\(labelsPerClass ?? 0)", rng: &rng)
        let seconds = Date().timeIntervalSince(start)
        func score(_ f: Tensor, _ y: [Int]) -> ClassificationReport {
            ClassificationReport(predictions: probabilities(head, f).argmaxRows(), labels: y, classNames: classNames)
        }
        let report = test.map { score($0.features, $0.labels) }
            ?? (validation.isEmpty ? nil : score(fTrain.gatherRows(validation), validation.map { labels[$0] }))
        return (StrategyResult(strategy: .extract, level: nil, eval: test == nil ? "validation" : evalName,
                               evaluatedOn: test == nil ? .validation : .test, labelsPerClass: labelsPerClass,
                               report: report, trainSeconds: seconds, history: history,
                               model: SavedModel(kind: .head, head: head, classNames: classNames)), head)
    }

    /// The identity features of this domain's pretrained backbone carry (loads the weights; runs nothing).
    public func featureIdentity() throws -> FeatureShards.Identity {
        _ = try pretrainedBackbone()
        return FeatureShards.Identity(domain: D.name, backbone: backboneHash, preprocessingKey: domain.preprocessingKey)
    }

    /// Computes shard `k` of `n` of `set`'s (or unlabelled `samples`') backbone features into `dir`, one file per
    /// chunk of batches (memory stays that of one chunk). False: the shard was already done (nothing written).
    public func writeFeatureShard(to dir: URL, shard k: Int, of n: Int, samples: [D.Sample], labels: [Int]?,
                                  classNames: [String]?, name: String, chunkBatches: Int = 16) throws -> Bool {
        let identity = try featureIdentity()
        let bb = try pretrainedBackbone()
        let ids = samples.map(domain.cacheKey)
        return try FeatureShards.write(to: dir, shard: k, of: n, ids: ids, names: samples.map(domain.describe),
                                       labels: labels, classNames: classNames,
                                       identity: identity, width: bb.featureCount,
                                       chunkRows: options.inferenceBatchSize * chunkBatches) { rows in
            let part = rows.map { samples[$0] }
            let f = try pooled(part, name: "features of \(name), shard \(k)/\(n)", width: bb.featureCount) { bb.features($0) }
            if let bad = f.withUnsafeBufferPointer({ $0.firstIndex { !$0.isFinite } }) {
                throw EngineError.invalidFile(domain.describe(part[bad / bb.featureCount]), "its features are not finite numbers (NaN or infinity)")
            }
            return f
        }
    }
}
