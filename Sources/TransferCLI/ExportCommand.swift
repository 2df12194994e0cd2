import ArgumentParser
import Foundation
import TransferEngine

/// `export`: one of a run's models as a self-contained folder that `predict`, `evaluate` and `info` take as
/// `--model` on a machine without the models folder.
struct ExportCommand<D: CommandLineDomain>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "export",
            abstract: "Write a run's model as a self-contained folder (weights, labels, settings, a model card).",
            discussion: """
            The folder holds run.json and metrics.json of the run, models/<id>.safetensors (the new head and the \
            fine-tuned weights), Models/ (the pretrained weights and files the backbone needs, so no models folder \
            is needed where it is used) and README.md, a model card with the classes, the data, the settings and \
            the metrics. Use it as any run: <app> predict --model DIR FILE.
            """)
    }

    @Option(help: "Run directory made by extract, finetune, adapt or demo.")
    var model: String
    @Option(help: "Which of the run's models (default: the run's default model).")
    var strategy: String?
    @Option(help: "Folder to create (must not exist).")
    var out: String
    @OptionGroup var runtime: RuntimeThreads
    @OptionGroup var domainOptions: D.Options

    func run() throws {
        runtime.apply()
        let saved = try SavedRun(model, app: D.appName)
        var m = try saved.model(strategy)
        let id = strategy ?? saved.record.defaultModel!
        let domain = try D(options: try saved.options(domainOptions, model: m))
        try checkNotInput(out, option: "--out", inputs: [model])
        let final = URL(fileURLWithPath: out, isDirectory: true)
        let fm = FileManager.default
        guard !fm.fileExists(atPath: final.path) else {
            throw EngineError.invalidFile(out, "already exists; choose another --out or remove it")
        }
        let partial = URL(fileURLWithPath: final.path + ".partial", isDirectory: true)
        try? fm.removeItem(at: partial)
        do {
            for (file, storedAs) in try domain.pretrainedFiles() {
                let to = partial.appendingPathComponent("Models/" + storedAs)
                try fm.createDirectory(at: to.deletingLastPathComponent(), withIntermediateDirectories: true)
                try fm.copyItem(at: file, to: to)
            }
            m.contract = m.contract.map(domain.exported)
            var meta = m.metadata
            meta["app"] = D.appName
            try fm.createDirectory(at: partial.appendingPathComponent("models"), withIntermediateDirectories: true)
            try SafeTensors.write(m.tensors, metadata: meta, to: partial.appendingPathComponent("models/\(id).safetensors"))
            var record = saved.record
            record.models = [id]
            record.defaultModel = id
            record.defaultReason = "exported from \(saved.folder.path)" + (saved.record.defaultModel == id ? " (its default model: \(saved.record.defaultReason ?? "-"))" : "")
            record.contract = m.contract ?? record.contract
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try AtomicFile.write(try encoder.encode(record), to: partial.appendingPathComponent("run.json"))
            let metricsURL = saved.folder.appendingPathComponent("metrics.json")
            var metrics = try? JSONSerialization.jsonObject(with: InputFile.read(metricsURL, limit: 256 << 20, what: "a metrics file")) as? [String: Any]
            if metrics != nil {
                // Every row of the run stays (the comparison the model was chosen from); the default is the model exported.
                metrics!["default_model"] = ["id": id, "reason": record.defaultReason ?? ""]
                try AtomicFile.write(Data(Output.encode(metrics!).utf8), to: partial.appendingPathComponent("metrics.json"))
            } else if fm.fileExists(atPath: metricsURL.path) {
                try fm.copyItem(at: metricsURL, to: partial.appendingPathComponent("metrics.json"))
            }
            try AtomicFile.write(Data(modelCard(id: id, model: m, record: record, metrics: metrics).utf8),
                                 to: partial.appendingPathComponent("README.md"))
            try fm.moveItem(at: partial, to: final)
        } catch {
            try? fm.removeItem(at: partial)
            throw error
        }
        print("exported \(id) to \(final.path)".printable)
    }

    func modelCard(id: String, model m: SavedModel, record: RunDirectory.Record, metrics: [String: Any]?) -> String {
        var lines = ["# \(D.appName) model `\(id)`", "",
                     "Exported from the run `\(model)` (\(record.command), made \(record.created) by \(D.appName) \(record.version)).", "",
                     "- Classes (\(m.classNames.count)): " + m.classNames.joined(separator: ", "),
                     "- Model: \(m.kind.rawValue), a \(m.headKind.rawValue) head on \(m.headInputs) features"]
        if let c = m.contract {
            lines.append("- Settings: " + (c.settings.isEmpty ? "" : c.describedSettings + "; ") + "pretrained weights hash \(c.backbone)")
        }
        if let reason = record.defaultReason { lines.append("- Why this model: \(reason)") }
        lines += ["", "## Data the run read", ""]
        for (role, entry) in (record.data ?? [:]).sorted(by: { $0.key < $1.key }) {
            let classes = entry.classes.map { " (" + $0.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + ")" } ?? " (unlabelled)"
            lines.append("- \(role): `\(entry.path)`, \(entry.samples) samples\(classes)")
        }
        lines += ["", "## Metrics", ""]
        let details = metrics?["details"] as? [[String: Any]] ?? []
        if let row = details.first(where: { $0["id"] as? String == id }), let report = row["report"] as? [String: Any] {
            lines.append(String(format: "Accuracy %.4f, macro-F1 %.4f on %@ (%@ set); per class in metrics.json.",
                                report["accuracy"] as? Double ?? .nan, report["macro_f1"] as? Double ?? report["macroF1"] as? Double ?? .nan,
                                row["eval"] as? String ?? "?", row["eval_set"] as? String ?? "?"))
        } else {
            lines.append("Not measured: the run had no labelled set to report on for this model.")
        }
        lines += ["", "## Use", "", "```sh",
                  "\(D.appName) predict  --model THIS_FOLDER FILE...",
                  "\(D.appName) evaluate --model THIS_FOLDER --data LABELLED_DATA",
                  "```", "",
                  "`models/\(id).safetensors` holds the new head and the weights fine-tuning changed; `Models/` holds the pretrained",
                  "files the backbone reads (used instead of any models folder on the machine)."]
        return lines.joined(separator: "\n") + "\n"
    }
}
