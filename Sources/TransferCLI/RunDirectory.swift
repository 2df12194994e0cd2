import Foundation
import TransferEngine

/// A run directory. Work happens in `RUN.partial/` and is renamed to `RUN/` only when the run completes, so an
/// interrupted or failed run never looks finished. A killed run keeps `RUN.partial/` with its checkpoints
/// for `--resume RUN`; a run that fails on bad input removes it. The process working in `RUN.partial/` holds a
/// lock on it (released by the kernel when the process dies), so a second run with the same `--out`, or a
/// `--resume` of a run still going, is refused instead of sharing it. `--overwrite` replaces a finished run only
/// when the new one finishes: a new run that fails leaves the old one in place.
final class RunDirectory: TrainingCheckpointer {
    let final: URL
    let partial: URL
    /// The lock on `partial` (open for the life of the process).
    private var lock: Int32 = -1

    struct Record: Codable {
        var app: String
        var version: String
        var command: String
        /// The command-line arguments after the subcommand (replayed by --resume).
        var arguments: [String]
        var seed: UInt64
        var options: [String: String]
        /// The settings every model of the run needs from its inputs (nil in runs made before contracts).
        var contract: RunContract?
        /// The datasets the run read: path, samples, samples per class.
        var data: [String: DataLog.Entry]?
        /// The working directory the command was started in: `--resume` replays its relative paths from there.
        var directory: String?
        var models: [String]
        var defaultModel: String?
        /// Why `defaultModel` was chosen (never a test accuracy).
        var defaultReason: String?
        /// With `--unfreeze auto`: the depths tried, their validation accuracy and the depth chosen.
        var unfreeze: DepthSearch?
        var created: String
    }

    private init(final: URL) {
        self.final = final
        partial = URL(fileURLWithPath: final.path + ".partial", isDirectory: true)
    }

    /// Starts a new run at `path`: neither `path` nor `path.partial` may exist, unless `overwrite` (then an existing
    /// run there is removed; a folder that is not a run is never removed).
    static func create(_ path: String, record: Record, overwrite: Bool = false) throws -> RunDirectory {
        let dir = RunDirectory(final: URL(fileURLWithPath: path, isDirectory: true))
        let fm = FileManager.default
        if dir.isStillborn {
            // Killed while being created, before its record was written: there is nothing to resume.
            try dir.acquireLock()
            try fm.removeItem(at: dir.partial)
            dir.releaseLock()
        }
        if overwrite {
            for folder in [dir.final, dir.partial] where fm.fileExists(atPath: folder.path) {
                guard fm.fileExists(atPath: folder.appendingPathComponent("run.json").path) else {
                    throw EngineError.invalidFile(folder.path, "is not a run directory (no run.json); not removing it")
                }
            }
            if fm.fileExists(atPath: dir.partial.path) {
                try dir.acquireLock()   // never remove a run another process is writing
                try fm.removeItem(at: dir.partial)
                dir.releaseLock()
            }
        } else if fm.fileExists(atPath: dir.final.path) {
            throw EngineError.invalidFile(path, "already exists; choose another --out, remove it, or replace it with --overwrite")
        }
        // mkdir fails if the folder exists: of two runs started together with the same --out, one gets it.
        try fm.createDirectory(at: dir.partial.deletingLastPathComponent(), withIntermediateDirectories: true)
        guard mkdir(dir.partial.path, 0o777) == 0 else {
            if errno == EEXIST {
                try dir.acquireLock()   // says so when another process is working on it
                dir.releaseLock()
                throw EngineError.invalidFile(dir.partial.path, "an unfinished run is there; continue it with --resume \(path), or start again with --overwrite")
            }
            throw EngineError.invalidFile(dir.partial.path, "cannot be created (\(String(cString: strerror(errno))))")
        }
        try dir.acquireLock()
        try fm.createDirectory(at: dir.partial.appendingPathComponent("checkpoints"), withIntermediateDirectories: true)
        try dir.writeRecord(record)
        return dir
    }

    /// `RUN.partial` holds only what `create` makes before the record (a lock, no checkpoint): a run killed while
    /// being created. Anything else there, even without run.json, is not removed.
    private var isStillborn: Bool {
        let fm = FileManager.default
        guard let top = try? fm.contentsOfDirectory(atPath: partial.path), !top.contains("run.json") else { return false }
        let checkpoints = (try? fm.contentsOfDirectory(atPath: partial.appendingPathComponent("checkpoints").path)) ?? []
        return Set(top).isSubset(of: [".lock", "checkpoints"]) && checkpoints.isEmpty
    }

    private var lockPath: String { partial.appendingPathComponent(".lock").path }

    private func acquireLock() throws {
        let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw EngineError.invalidFile(partial.path, "cannot be locked (\(String(cString: strerror(errno))))") }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            close(fd)
            throw EngineError.invalidFile(final.path, "another process is working on this run right now; wait for it to end or stop it first")
        }
        lock = fd
    }

    private func releaseLock() {
        if lock >= 0 { close(lock) }
        lock = -1
    }

    /// Reopens the unfinished run at `path` for `--resume`.
    static func resume(_ given: String, app: String, command: String) throws -> (RunDirectory, Record) {
        // RUN.partial, the folder a user sees after a kill, names the run RUN.
        let trimmed = given.hasSuffix("/") ? String(given.dropLast()) : given
        let path = trimmed.hasSuffix(".partial") ? String(trimmed.dropLast(".partial".count)) : given
        let dir = RunDirectory(final: URL(fileURLWithPath: path, isDirectory: true))
        let fm = FileManager.default
        guard fm.fileExists(atPath: dir.partial.path) else {
            if fm.fileExists(atPath: dir.final.path) { throw EngineError.invalidFile(path, "this run already finished; nothing to resume") }
            throw EngineError.invalidFile(path, "no unfinished run here (expected \(dir.partial.lastPathComponent))")
        }
        guard fm.fileExists(atPath: dir.partial.appendingPathComponent("run.json").path) else {
            throw EngineError.invalidFile(path, "this run was stopped before it started; run the command again")
        }
        let record = try readRecord(dir.partial, path: path)
        try dir.acquireLock()
        guard record.app == app else { throw EngineError.invalidFile(path, "this run was made by \(record.app), not \(app)") }
        guard record.command == command else {
            throw EngineError.invalidFile(path, "this run is a '\(record.command)' run; resume it with \(app) \(record.command) --resume \(path)")
        }
        return (dir, record)
    }

    static func readRecord(_ folder: URL, path: String) throws -> Record {
        let url = folder.appendingPathComponent("run.json")
        guard FileManager.default.fileExists(atPath: url.path) else {
            throw EngineError.invalidFile(path, "not a run directory (no run.json)")
        }
        let data = try InputFile.read(url, limit: 64 << 20, what: "a run.json file")
        do { return try JSONDecoder().decode(Record.self, from: data) } catch {
            throw EngineError.invalidFile(url.path, "run.json is damaged")
        }
    }

    func writeRecord(_ record: Record) throws {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try enc.encode(record), to: partial.appendingPathComponent("run.json"))
    }

    func write(_ data: Data, to relative: String) throws {
        let url = partial.appendingPathComponent(relative)
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try AtomicFile.write(data, to: url)
    }

    func saveModel(_ model: SavedModel, name: String, app: String) throws {
        var meta = model.metadata
        meta["app"] = app
        let url = partial.appendingPathComponent("models/\(name).safetensors")
        try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try SafeTensors.write(model.tensors, metadata: meta, to: url)
    }

    /// Completes the run: checkpoints and the temporary files of writes killed before a resume are dropped, and
    /// `RUN.partial` becomes `RUN` (replacing a finished run there, for --overwrite).
    func finish() throws {
        let fm = FileManager.default
        try? fm.removeItem(at: partial.appendingPathComponent("checkpoints"))
        if let files = fm.enumerator(atPath: partial.path)?.allObjects as? [String] {
            for file in files where AtomicFile.isTemporary(URL(fileURLWithPath: file).lastPathComponent) {
                try? fm.removeItem(at: partial.appendingPathComponent(file))
            }
        }
        unlink(lockPath)
        if fm.fileExists(atPath: final.path) {
            let replaced = URL(fileURLWithPath: final.path + ".replaced-\(getpid())")
            try fm.moveItem(at: final, to: replaced)
            try fm.moveItem(at: partial, to: final)
            try? fm.removeItem(at: replaced)
        } else {
            try fm.moveItem(at: partial, to: final)
        }
        releaseLock()
    }

    /// Removes the unfinished run (after an error that resuming would only repeat).
    func discard() {
        try? FileManager.default.removeItem(at: partial)
        releaseLock()
    }

    /// Leaves the unfinished run as it is, for a later --resume or --overwrite.
    func release() { releaseLock() }

    // MARK: TrainingCheckpointer

    func checkpointURL(_ name: String) -> URL { partial.appendingPathComponent("checkpoints/\(name).safetensors") }

    func save(_ name: String, tensors: [String: Tensor], info: [String: String]) throws {
        try SafeTensors.write(tensors, metadata: info, to: checkpointURL(name))
        savedCheckpoints += 1
        // Test hook: die like a killed process right after the N-th checkpoint (tests of --resume).
        if let n = ProcessInfo.processInfo.environment["TL_TEST_KILL_AFTER_CHECKPOINTS"].flatMap(Int.init), savedCheckpoints == n {
            kill(getpid(), SIGKILL)
        }
    }

    private var savedCheckpoints = 0

    /// `history/<name>.csv`, rewritten after every epoch.
    func record(history: [EpochLog], of name: String) throws {
        let file = name.map { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" ? $0 : "-" }
        let text = ([EpochLog.csvHeader] + history.map(\.csvRow)).joined(separator: "\n") + "\n"
        try write(Data(text.utf8), to: "history/\(String(file)).csv")
    }

    func load(_ name: String) throws -> (tensors: [String: Tensor], info: [String: String])? {
        let url = checkpointURL(name)
        guard FileManager.default.fileExists(atPath: url.path) else { return nil }
        let file = try SafeTensors.read(url)
        return (try file.tensors(), file.metadata)
    }
}

/// A finished run, for `evaluate`, `predict` and `info --model`.
struct SavedRun {
    let record: RunDirectory.Record
    let folder: URL

    init(_ path: String, app: String) throws {
        folder = URL(fileURLWithPath: path, isDirectory: true)
        guard FileManager.default.fileExists(atPath: folder.path) else {
            if FileManager.default.fileExists(atPath: path + ".partial") {
                throw EngineError.invalidFile(path, "this run did not finish; continue it with --resume \(path)")
            }
            throw EngineError.invalidFile(path, "no such run directory")
        }
        record = try RunDirectory.readRecord(folder, path: path)
        // An exported model brings its own pretrained files.
        let own = folder.appendingPathComponent("Models", isDirectory: true)
        if DatasetFolders.isDirectory(own) { ModelStore.override = own }
        guard record.app == app else { throw EngineError.invalidFile(path, "this run was made by \(record.app), not \(app)") }
    }

    /// `given` (the domain options of this command line) with the run's settings applied: what the models were
    /// trained with. A flag that contradicts the run is refused, naming both values.
    func options<O: ContractOptions>(_ given: O, model: SavedModel) throws -> O {
        guard let contract = model.contract ?? record.contract else { return given }
        return try given.applying(contract, runPath: folder.path)
    }

    /// The model `name` (default: the run's default model).
    func model(_ name: String?) throws -> SavedModel {
        guard let id = name ?? record.defaultModel else {
            throw EngineError.invalidFile(folder.path, "this run saved no model")
        }
        guard record.models.contains(id) else {
            throw EngineError.invalidFile(folder.path, "no model '\(id)'; this run has: \(record.models.joined(separator: ", "))")
        }
        let url = folder.appendingPathComponent("models/\(id).safetensors")
        let file = try SafeTensors.read(url)
        return try SavedModel(tensors: try file.tensors(), metadata: file.metadata, source: url.path)
    }
}
