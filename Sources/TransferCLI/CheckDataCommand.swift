import ArgumentParser
import Foundation
import TransferEngine

/// `check-data`: whether a labelled set can be trained on, and what in it deserves a look, before any training.
struct CheckDataCommand<D: CommandLineDomain>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "check-data",
            abstract: "Check a labelled set before training: classes, unreadable files, duplicates, sizes, imbalance.",
            discussion: """
            Every sample is read and preprocessed as training would (each unreadable one is listed, not just the \
            first). Problems (exit status 1): fewer than 2 classes, an empty class, unreadable samples, identical \
            samples with different labels. Warnings (exit status 0): exact duplicates, duplicates shared with \
            --test (they inflate test accuracy), classes more than 10 times apart in size, files in a data folder \
            that are not samples (another type, or outside a class folder: training skips them).
            """)
    }

    @Argument(help: "Labelled data: a folder per class, or a table with a label column.")
    var path: String
    @Option(help: "A labelled test set to check too, and against the data for shared samples.")
    var test: String?
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    func run() throws {
        common.apply()
        let domain = try D(options: domainOptions)
        var report = DataCheck(app: D.appName)
        let train = try report.check(domain, path, role: "data")
        if let test, let (testKeys, testClasses) = try report.check(domain, test, role: "test"), let (keys, classes) = train {
            let unknown = testClasses.filter { !classes.contains($0) }
            if !unknown.isEmpty {
                report.problem("\(test): classes not in the data: \(unknown.joined(separator: ", "))")
            }
            let shared = testKeys.keys.filter { keys[$0] != nil }.sorted()
            if !shared.isEmpty {
                let count = shared.reduce(0) { $0 + testKeys[$1]!.count }
                report.warn("\(counted(count, "test samples")) \(count == 1 ? "is" : "are") identical to samples of the data (e.g. \(testKeys[shared[0]]![0]) = \(keys[shared[0]]![0])): they inflate test accuracy",
                            list: "shared_with_test", shared.flatMap { testKeys[$0]! })
            }
        }
        if common.json {
            print(Output.encode(report.json))
        } else {
            for line in report.lines { print(line.printable) }
            print(report.problems.isEmpty ? "usable: yes" : "usable: no (\(counted(report.problems.count, "problems")))")
        }
        if !report.problems.isEmpty { throw ExitCode.failure }
    }
}

/// What `check-data` found.
struct DataCheck {
    let app: String
    private(set) var lines: [String] = []
    private(set) var problems: [String] = []
    private(set) var warnings: [String] = []
    private var sets: [[String: Any]] = []
    private var lists: [String: [String]] = [:]

    init(app: String) { self.app = app }

    mutating func problem(_ text: String) { problems.append(text); lines.append("problem: " + text) }

    mutating func warn(_ text: String, list name: String? = nil, _ items: [String] = []) {
        warnings.append(text)
        lines.append("warning: " + text)
        if let name { lists[name, default: []] += items }
    }

    /// Checks one labelled set; returns its samples' content keys (key -> descriptions) and its classes, unless it
    /// could not be read.
    mutating func check<D: CommandLineDomain>(_ domain: D, _ path: String, role: String) throws
        -> (keys: [String: [String]], classes: [String])? {
        let set: LabelledSet<D.Sample>
        do {
            set = try domain.labelled(at: try requirePath(path, role == "test" ? "--test" : "PATH"))
        } catch {
            problem("\(error)")
            return nil
        }
        var entry: [String: Any] = ["role": role, "path": path, "samples": set.count,
                                    "classes": Dictionary(uniqueKeysWithValues: zip(set.classNames, set.classCounts))]
        lines.append("\(role) \(datasetName(path)): \(set.count) samples, \(set.classNames.count) classes ("
                     + zip(set.classNames, set.classCounts).map { "\($0) \($1)" }.joined(separator: ", ") + ")")
        if role != "test" {   // a test set may hold some of the classes only
            do { try set.validateForTraining() } catch { problem("\(error)") }
        }

        // Every sample through the same loading and preprocessing as training, one at a time.
        let progress = ProgressReporter(label: "reading \(datasetName(path))", total: set.count, unit: "samples")
        let unreadable = domain.unreadable(set.samples, progress: progress)
            .map { ["input": domain.describe(set.samples[$0.index]), "problem": $0.problem] }
        progress.finish()
        if !unreadable.isEmpty {
            // The problem names the first (the JSON lists them all under "unreadable"); the text lists them all.
            problem("\(unreadable.count) of \(counted(set.count, "samples")) cannot be read, e.g. " + unreadable[0]["problem"]!)
            for u in unreadable.dropFirst() { lines.append("  " + u["problem"]!) }
        }
        entry["unreadable"] = unreadable

        // Exact duplicates by content: within a class (a warning), across classes (a problem: same input, two labels).
        var byKey: [String: [Int]] = [:]
        for (i, s) in set.samples.enumerated() { byKey[domain.cacheKey(s), default: []].append(i) }
        let groups = byKey.values.filter { $0.count > 1 }.sorted { $0[0] < $1[0] }
        let conflicting = groups.filter { Set($0.map { set.labels[$0] }).count > 1 }
        func names(_ g: [Int]) -> [String] { g.map { "\(domain.describe(set.samples[$0])) (\(set.classNames[set.labels[$0]]))" } }
        if !conflicting.isEmpty {
            problem("\(counted(conflicting.count, "groups")) of identical samples carry different labels, e.g. " + names(conflicting[0]).joined(separator: " = "))
        }
        // Those under one label only: identical samples under two labels are the problem above, not said twice.
        let sameLabel = groups.filter { Set($0.map { set.labels[$0] }).count == 1 }
        let duplicates = sameLabel.reduce(0) { $0 + $1.count - 1 }
        if duplicates > 0 {
            warn((duplicates == 1 ? "1 sample is an exact duplicate" : "\(duplicates) samples are exact duplicates")
                 + " of another in \(datasetName(path)), e.g. " + names(sameLabel[0]).joined(separator: " = "))
        }
        skippedFiles(path, samples: set.samples)
        entry["duplicate_groups"] = groups.map(names)

        // Class names that look like one class typed two ways ("Pos" and "pos", "bag" and "bag ").
        let alike = Dictionary(grouping: set.classNames) { $0.trimmingCharacters(in: .whitespaces).lowercased() }
            .values.filter { $0.count > 1 }.map { $0.sorted() }.sorted { $0[0] < $1[0] }
        if let first = alike.first {
            warn("class names that differ only in case or surrounding spaces (\(counted(alike.count, "groups"))), e.g. "
                 + first.map { "'\($0)'" }.joined(separator: " and ") + ": one class each, as given")
        }

        // Class balance.
        let counts = set.classCounts.filter { $0 > 0 }
        if let lo = counts.min(), let hi = counts.max(), lo * 10 < hi {
            warn(String(format: "classes are imbalanced (%d to %d samples, %.0fx); consider --class-weights auto", lo, hi, Double(hi) / Double(lo)))
        }
        if let sizes = domain.sizeSummary(set.samples) {
            lines.append("\(role) sizes: \(sizes)")
            entry["sizes"] = sizes
        }
        sets.append(entry)
        var keys: [String: [String]] = [:]
        for (key, g) in byKey { keys[key] = g.map { domain.describe(set.samples[$0]) } }
        return (keys, set.classNames)
    }

    /// Files in a data folder that are not samples (a type the domain does not read, or outside a class folder):
    /// training skips them without a word, so check-data names them. Domains whose samples are files only.
    mutating func skippedFiles(_ path: String, samples: [some Any]) {
        let folder = URL(fileURLWithPath: path)
        guard let files = samples as? [URL], DatasetFolders.isDirectory(folder),
              let all = try? DatasetFolders.files(in: folder, where: { _ in true }) else { return }
        let read = Set(files.map(\.standardizedFileURL.path))
        let skipped = all.filter { !read.contains($0.standardizedFileURL.path) }
        guard let first = skipped.first else { return }
        let kinds = Dictionary(grouping: skipped) { $0.pathExtension.isEmpty ? "no extension" : "." + $0.pathExtension.lowercased() }
            .map { ($0.key, $0.value.count) }.sorted { $0.1 != $1.1 ? $0.1 > $1.1 : $0.0 < $1.0 }
        warn("\(skipped.count) \(skipped.count == 1 ? "file" : "files") in \(datasetName(path)) \(skipped.count == 1 ? "is" : "are") not read as samples "
             + "(a type this app does not read, or outside a class folder): " + kinds.map { "\($0.0) \($0.1)" }.joined(separator: ", ")
             + ", e.g. \(first.path)", list: "skipped_files", skipped.map(\.path))
    }

    var json: [String: Any] {
        var object: [String: Any] = ["app": app, "command": "check-data", "usable": problems.isEmpty, "sets": sets,
                                     "problems": problems, "warnings": warnings]
        for (name, items) in lists { object[name] = items }
        return object
    }
}
