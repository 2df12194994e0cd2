import Foundation

/// Backbone features of a dataset stored in a folder, computed in N shards that may run in any order, on any
/// machine sharing the folder (one task of a Slurm job array or a Kubernetes indexed Job each).
///
/// Layout of the folder, shard K of N (1-based):
/// - `shard-000K-of-000N-00000.safetensors`, `...-00001...`: feature rows [rows, width] (tensor `features`),
///   written per chunk of batches as they are computed, so memory does not grow with the dataset;
/// - `shard-000K-of-000N.json`: the manifest, written last (atomically): its presence means the shard is done.
///
/// The split is by sample identity (the domain's content key): samples sorted by a hash of it (ties by dataset
/// order), then dealt round-robin, so shards differ by at most one sample and do not depend on file names or
/// listing order. Each manifest records the dataset index of every row it holds; merging puts row `index` of
/// the dataset at `index`, so N shards merge to exactly the rows (and bytes) of one.
public enum FeatureShards {
    public static let formatVersion = 1

    /// What the features depend on: a shard computed under another identity cannot be merged or used.
    public struct Identity: Codable, Equatable, Sendable {
        public var domain: String
        /// Hash of the pretrained weights.
        public var backbone: String
        /// The domain's preprocessing key (input size, normalisation, pooling...).
        public var preprocessing: String

        public init(domain: String, backbone: String, preprocessingKey preprocessing: String) {
            self.domain = domain
            self.backbone = backbone
            self.preprocessing = preprocessing
        }
    }

    public struct Chunk: Codable, Equatable, Sendable {
        public var file: String
        public var rows: Int
        /// Hash of the chunk's feature values (`FeatureCache.checksum`): a chunk swapped with another or altered
        /// is refused. Manifests written before it have none.
        public var checksum: String?
    }

    /// One shard's manifest.
    public struct Manifest: Codable, Equatable, Sendable {
        public var format: Int
        public var identity: Identity
        /// Hash of every sample identity and label in dataset order: shards of other data are refused.
        public var dataset: String
        /// Samples in the whole dataset (every shard).
        public var total: Int
        public var shard: Int
        public var shards: Int
        public var featureWidth: Int
        /// Class names (labelled data), indexed by `labels`.
        public var classNames: [String]?
        /// Per row of this shard, in file order: its index in the dataset, its identity and (labelled) class index.
        public var indices: [Int]
        public var ids: [String]
        /// How the domain shows each sample (its file name...), for error analyses.
        public var names: [String]
        public var labels: [Int]?
        public var chunks: [Chunk]
    }

    /// Merged features of every shard, in dataset order.
    public struct Stored {
        public var features: Tensor
        public var ids: [String]
        public var names: [String]
        public var labels: [Int]?
        public var classNames: [String]?
        public var identity: Identity
        /// The dataset fingerprint the manifests record.
        public var fingerprint: String
    }

    /// Parses "K/N" (1-based K). One line naming the option on a bad value.
    public static func parse(_ text: String, option: String = "--shard") throws -> (k: Int, n: Int) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]) else {
            throw EngineError.invalidArgument("\(option) expects K/N (shard K of N, K from 1 to N), got '\(text)'")
        }
        guard n >= 1, n <= 99_999 else { throw EngineError.invalidArgument("\(option) \(text): N must be from 1 to 99999, got \(n)") }
        guard k >= 1, k <= n else { throw EngineError.invalidArgument("\(option) \(text): K must be from 1 to N (\(n)), got \(k) (shards are numbered from 1)") }
        return (k, n)
    }

    static func name(_ k: Int, _ n: Int) -> String { String(format: "shard-%04d-of-%04d", k, n) }
    static func manifestURL(_ dir: URL, _ k: Int, _ n: Int) -> URL { dir.appendingPathComponent(name(k, n) + ".json") }

    /// The dataset indices of shard `k` of `n` (ascending), from the samples' identities.
    public static func assignment(ids: [String], shard k: Int, of n: Int) -> [Int] {
        let hashes = ids.map { id -> UInt64 in var h = FNV64(); h.add(id); return h.value }
        let order = ids.indices.sorted { hashes[$0] != hashes[$1] ? hashes[$0] < hashes[$1] : $0 < $1 }
        return order.enumerated().filter { $0.offset % n == k - 1 }.map(\.element).sorted()
    }

    /// The dataset fingerprint recorded in every manifest.
    public static func fingerprint(ids: [String], labels: [Int]?, classNames: [String]?) -> String {
        var h = FNV64()
        h.add("\(ids.count)")
        for id in ids { h.add(id) }
        if let labels, let classNames { for y in labels { h.add(classNames[y]) } }
        return h.hex
    }

    /// Whether `url` is a features folder (holds at least one shard manifest).
    public static func isFeatureFolder(_ url: URL) -> Bool {
        guard DatasetFolders.isDirectory(url), let names = try? FileManager.default.contentsOfDirectory(atPath: url.path) else { return false }
        return names.contains { $0.hasPrefix("shard-") && $0.hasSuffix(".json") }
    }

    static func readManifest(_ url: URL) throws -> Manifest {
        let data = try InputFile.read(url, limit: 1 << 30, what: "a feature shard manifest")
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        guard let m = try? decoder.decode(Manifest.self, from: data) else {
            throw EngineError.invalidFile(url.path, "not a feature shard manifest of this suite (damaged or another format)")
        }
        guard m.format == formatVersion else {
            throw EngineError.invalidFile(url.path, "feature shard format \(m.format), this version reads \(formatVersion)")
        }
        let rows = m.indices.count
        guard m.shards >= 1, m.shard >= 1, m.shard <= m.shards, m.total >= 0, m.featureWidth >= 1, m.featureWidth <= 1 << 20,
              m.ids.count == rows, m.names.count == rows, m.labels.map({ $0.count == rows }) ?? true,
              m.indices.allSatisfy({ (0..<m.total).contains($0) }),
              m.labels.map({ ls in ls.allSatisfy { (0..<(m.classNames?.count ?? 0)).contains($0) } }) ?? true,
              m.chunks.allSatisfy({ $0.rows >= 0 && !$0.file.contains("/") && $0.file.hasPrefix("shard-") }),
              m.chunks.reduce(0, { $0 + $1.rows }) == rows else {
            throw EngineError.invalidFile(url.path, "the feature shard manifest is inconsistent (counts, indices or files out of range)")
        }
        return m
    }

    static func writeManifest(_ m: Manifest, to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        try AtomicFile.write(try encoder.encode(m), to: url)
    }

    /// Manifests already in `dir` that were made under another identity, of other data or with another N:
    /// this shard cannot join them.
    static func checkCompatible(_ dir: URL, identity: Identity, dataset: String, n: Int) throws {
        guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir.path) else { return }
        for file in names.sorted() where file.hasPrefix("shard-") && file.hasSuffix(".json") {
            let m = try readManifest(dir.appendingPathComponent(file))
            let path = dir.appendingPathComponent(file).path
            guard m.identity == identity else {
                throw EngineError.invalidFile(path, "was computed with another backbone or preprocessing (backbone \(m.identity.backbone), \(m.identity.preprocessing); now backbone \(identity.backbone), \(identity.preprocessing)); use another --out")
            }
            guard m.dataset == dataset else { throw EngineError.invalidFile(path, "holds features of other data (another sample list or labels); use another --out") }
            guard m.shards == n else { throw EngineError.invalidFile(path, "belongs to a split into \(counted(m.shards, "shards")), not \(n); use the same N for every shard, or another --out") }
        }
    }

    /// Computes and writes shard `k` of `n` into `dir`, `chunkRows` samples per file; `compute` returns the
    /// features [count, width] of the given dataset indices. Returns false (writing nothing) when the shard is
    /// already done.
    public static func write(to dir: URL, shard k: Int, of n: Int, ids: [String], names: [String], labels: [Int]?, classNames: [String]?,
                             identity: Identity, width: Int, chunkRows: Int,
                             compute: ([Int]) throws -> Tensor) throws -> Bool {
        if FileManager.default.fileExists(atPath: dir.path) {
            guard DatasetFolders.isDirectory(dir) else { throw EngineError.invalidFile(dir.path, "exists and is not a folder (given as --out)") }
        }
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let dataset = fingerprint(ids: ids, labels: labels, classNames: classNames)
        try checkCompatible(dir, identity: identity, dataset: dataset, n: n)
        if FileManager.default.fileExists(atPath: manifestURL(dir, k, n).path) { return false }   // checked above: same data
        let mine = assignment(ids: ids, shard: k, of: n)
        // Chunks are written under pending names and put in place with the manifest, under the folder's lock,
        // after the check is made again: two processes writing other data into one folder at once both passed
        // the check above, and both reported success.
        var chunks: [Chunk] = [], pending: [URL] = []
        defer { for url in pending { try? FileManager.default.removeItem(at: url) } }
        for (c, start) in stride(from: 0, to: mine.count, by: max(1, chunkRows)).enumerated() {
            let part = Array(mine[start..<min(mine.count, start + max(1, chunkRows))])
            let f = try compute(part)
            guard f.shape == [part.count, width] else {
                throw EngineError.invalidArgument("features of shape \(f.shape), expected [\(part.count), \(width)]")
            }
            let file = name(k, n) + String(format: "-%05d.safetensors", c)
            let url = dir.appendingPathComponent(".\(file).pending-\(getpid())")
            pending.append(url)
            try SafeTensors.write(["features": f], to: url)
            chunks.append(Chunk(file: file, rows: part.count, checksum: FeatureCache.checksum(["features": f])))
        }
        let m = Manifest(format: formatVersion, identity: identity, dataset: dataset, total: ids.count, shard: k, shards: n,
                         featureWidth: width, classNames: classNames, indices: mine, ids: mine.map { ids[$0] }, names: mine.map { names[$0] },
                         labels: labels.map { ls in mine.map { ls[$0] } }, chunks: chunks)
        return try locked(dir) {
            try checkCompatible(dir, identity: identity, dataset: dataset, n: n)
            if FileManager.default.fileExists(atPath: manifestURL(dir, k, n).path) { return false }   // done meanwhile
            for (url, chunk) in zip(pending, chunks) {
                guard rename(url.path, dir.appendingPathComponent(chunk.file).path) == 0 else {
                    throw EngineError.invalidFile(dir.appendingPathComponent(chunk.file).path, "cannot be put in place (\(String(cString: strerror(errno))))")
                }
            }
            pending = []
            try writeManifest(m, to: manifestURL(dir, k, n))
            return true
        }
    }

    /// Runs `body` holding an exclusive lock on `dir` (waiting for another process that holds it). Best effort:
    /// on a file system without locks (some network mounts) `body` runs unlocked, as it did before the lock.
    static func locked<T>(_ dir: URL, _ body: () throws -> T) throws -> T {
        let fd = open(dir.appendingPathComponent(".lock").path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { return try body() }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0, errno == EINTR {}
        return try body()
    }

    /// Ascending numbers as runs: [1, 2, 3, 5] -> ["1-3", "5"] (a long list of missing shards stays one short line).
    static func ranges(_ numbers: [Int]) -> [String] {
        var out: [String] = [], i = 0
        while i < numbers.count {
            var j = i
            while j + 1 < numbers.count, numbers[j + 1] == numbers[j] + 1 { j += 1 }
            out.append(j == i ? "\(numbers[i])" : "\(numbers[i])-\(numbers[j])")
            i = j + 1
        }
        return out
    }

    /// Merges every shard of `dir` into dataset order, refusing an incomplete set (naming the missing shards),
    /// shards that disagree, and features made under another identity than `expected` (nil: any).
    public static func load(_ dir: URL, expecting expected: Identity?) throws -> Stored {
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        let manifests = try files.sorted().filter { $0.hasPrefix("shard-") && $0.hasSuffix(".json") }
            .map { try (readManifest(dir.appendingPathComponent($0)), dir.appendingPathComponent($0).path) }
        guard let (first, firstPath) = manifests.first else {
            throw EngineError.invalidFile(dir.path, "no feature shard manifest (shard-K-of-N.json) in this folder")
        }
        guard expected == nil || first.identity == expected else {
            throw EngineError.invalidFile(firstPath, "features computed with another backbone or preprocessing (backbone \(first.identity.backbone), \(first.identity.preprocessing); this model: backbone \(expected!.backbone), \(expected!.preprocessing)); compute them again with `features`")
        }
        var byShard: [Int: Manifest] = [:]
        for (m, path) in manifests {
            guard m.identity == first.identity, m.dataset == first.dataset, m.shards == first.shards, m.total == first.total,
                  m.featureWidth == first.featureWidth, m.classNames == first.classNames else {
                throw EngineError.invalidFile(path, "does not belong with \(firstPath) (other data, backbone, preprocessing or number of shards)")
            }
            byShard[m.shard] = m
        }
        let missing = (1...first.shards).filter { byShard[$0] == nil }
        guard missing.isEmpty else {
            throw EngineError.invalidFile(dir.path, "incomplete: \(missing.count) of \(first.shards) shards missing (\(ranges(missing).map { "\($0)/\(first.shards)" }.joined(separator: ", "))); run `features --shard K/\(first.shards)` for each")
        }
        // Before allocating [total, width]: the shards must hold exactly `total` rows between them (a damaged or
        // forged manifest must not size the allocation).
        let stored = byShard.values.reduce(0) { $0 + $1.indices.count }
        guard stored == first.total else {
            throw EngineError.invalidFile(firstPath, "the shards hold \(stored) samples between them, the manifests say the dataset has \(first.total)")
        }
        let width = first.featureWidth
        var out = Tensor(zeros: [first.total, width])
        var ids = [String](repeating: "", count: first.total), names = ids
        var labels = first.labels == nil ? nil : [Int](repeating: 0, count: first.total)
        var seen = [Bool](repeating: false, count: first.total)
        let o = out.mutablePointer
        for k in 1...first.shards {
            let m = byShard[k]!
            var row = 0
            for chunk in m.chunks {
                let url = dir.appendingPathComponent(chunk.file)
                let f = try SafeTensors.read(url).tensor(named: "features")
                guard f.shape == [chunk.rows, width] else {
                    throw EngineError.invalidFile(url.path, "holds features of shape \(f.shape), its manifest says [\(chunk.rows), \(width)]")
                }
                if let bad = f.withUnsafeBufferPointer({ $0.firstIndex { !$0.isFinite } }) {
                    throw EngineError.invalidFile(url.path, "row \(bad / width) holds a value that is not a finite number")
                }
                if let expected = chunk.checksum, FeatureCache.checksum(["features": f]) != expected {
                    throw EngineError.invalidFile(url.path, "its features are not those its manifest recorded (the chunk was altered or swapped); compute the shard again")
                }
                for r in 0..<chunk.rows {
                    let i = m.indices[row + r]
                    guard !seen[i] else { throw EngineError.invalidFile(url.path, "sample \(i) appears in two shards") }
                    seen[i] = true
                    (o + i * width).update(from: f.pointer + r * width, count: width)
                    ids[i] = m.ids[row + r]
                    names[i] = m.names[row + r]
                    if let l = m.labels { labels![i] = l[row + r] }
                }
                row += chunk.rows
            }
        }
        guard let gap = seen.firstIndex(of: false) else {
            guard fingerprint(ids: ids, labels: labels, classNames: first.classNames) == first.dataset else {
                throw EngineError.invalidFile(dir.path, "the shards' samples do not add up to the dataset their manifests name")
            }
            return Stored(features: out, ids: ids, names: names, labels: labels, classNames: first.classNames, identity: first.identity,
                          fingerprint: first.dataset)
        }
        throw EngineError.invalidFile(dir.path, "no shard holds sample \(gap) of \(first.total)")
    }
}
