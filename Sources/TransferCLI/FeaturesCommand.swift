import ArgumentParser
import Foundation
import TransferEngine

/// `features`: the backbone features of one shard of a dataset, written to a features folder that `extract`
/// (and `evaluate`) accept in place of the dataset. One task of a Slurm job array or Kubernetes indexed Job each.
struct FeaturesCommand<D: CommandLineDomain>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "features",
            abstract: "Compute the backbone features of a dataset (or of shard K of N of it) into a features folder.",
            discussion: """
            The split is by sample identity (a hash of each sample's contents), round-robin, so shards differ by at \
            most one sample. Shards may run in any order, on any machine sharing --out; features are written per \
            chunk of batches (memory does not grow with the dataset) and a shard's manifest \
            (shard-K-of-N.json) is written last: a shard that is done is not computed again. With N larger than the \
            number of samples, the extra shards hold no samples (they still write their manifest). `extract --train \
            DIR`, `evaluate --data DIR` and feature-level `adapt --source/--target/--target-test DIR` take the \
            folder once every shard is done.
            """)
    }

    @Option(help: "Data: a folder per class, or a table with a label column (with --unlabelled: a folder of files or a table without labels).")
    var data: String
    @Option(help: "Features folder to write (created if needed; shared by every shard).")
    var out: String
    @Option(help: "Shard K of N, K from 1 to N (Slurm: --shard $SLURM_ARRAY_TASK_ID/N with --array=1-N; Kubernetes: K = $JOB_COMPLETION_INDEX + 1).")
    var shard: String = "1/1"
    @Flag(help: "The data has no labels.")
    var unlabelled = false
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    func run() throws {
        common.apply()
        let (k, n) = try FeatureShards.parse(shard)
        let w = try makeWorkflows(D.self, domainOptions, common)
        let url = try requirePath(data, "--data")
        try checkNotInput(out, option: "--out", inputs: [data])
        var samples: [D.Sample], labels: [Int]?, classNames: [String]?
        if unlabelled {
            samples = try w.domain.unlabelled(at: url)
        } else {
            let set = try w.domain.labelled(at: url)
            (samples, labels, classNames) = (set.samples, set.labels, set.classNames)
        }
        guard !samples.isEmpty else { throw EngineError.invalidFile(data, "no samples") }
        let dir = URL(fileURLWithPath: out, isDirectory: true)
        let wrote = try w.writeFeatureShard(to: dir, shard: k, of: n, samples: samples, labels: labels, classNames: classNames,
                                            name: datasetName(data))
        let rows = FeatureShards.assignment(ids: samples.map(w.domain.cacheKey), shard: k, of: n).count
        if common.json {
            print(Output.encode(["app": D.appName, "command": "features", "shard": k, "shards": n, "samples": rows,
                                 "total": samples.count, "out": out, "computed": wrote]))
        } else {
            print(wrote ? "shard \(k)/\(n) of \(datasetName(data)) done: \(rows) of \(samples.count) samples in \(out)".printable
                        : "shard \(k)/\(n) of \(datasetName(data)) already done in \(out): nothing to do".printable)
        }
    }
}

/// A labelled set read from a features folder (every shard done, same backbone and preprocessing as now): `set`'s
/// samples are row indices into `features`, so the labelled-set checks and relabelling apply as they are.
struct StoredFeatureSet {
    var features: Tensor
    var set: LabelledSet<Int>
    var fingerprint: String
    /// Each sample as the domain shows it (its file name...).
    var names: [String]

    init<D: TransferDomain>(_ w: TransferWorkflows<D>, path: String) throws {
        let stored = try FeatureShards.load(URL(fileURLWithPath: path, isDirectory: true), expecting: try w.featureIdentity())
        guard let labels = stored.labels, let classNames = stored.classNames else {
            throw EngineError.invalidFile(path, "holds features of unlabelled data; labelled data is needed here")
        }
        features = stored.features
        set = LabelledSet(samples: Array(labels.indices), labels: labels, classNames: classNames, source: path)
        fingerprint = stored.fingerprint
        names = stored.names
    }
}
