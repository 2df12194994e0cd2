import Foundation
import TransferEngine

/// Results on stdout (a table, or exactly one JSON object) and the artefacts of a run directory.
enum Output {
    /// The stable JSON shape documented in the README (later keys are additive: `eval_set`, `label_free`,
    /// `chosen`, `default_model`, `unfreeze`, `diagnosis`, `source_neighbour_agreement`).
    static func json(app: String, command: String, results: [StrategyResult],
                     defaultModel: (identifier: String, reason: String)? = nil, diagnosis: RunOutcome.Diagnosis? = nil,
                     neighbourAgreement: Double? = nil) -> String {
        encode(object(app: app, command: command, results: results, defaultModel: defaultModel, diagnosis: diagnosis,
                      neighbourAgreement: neighbourAgreement))
    }

    /// The object `json` prints, for files that hold it with more keys (metrics.json): built once, encoded once,
    /// so their numbers are the printed ones to the last digit.
    static func object(app: String, command: String, results: [StrategyResult],
                       defaultModel: (identifier: String, reason: String)? = nil, diagnosis: RunOutcome.Diagnosis? = nil,
                       neighbourAgreement: Double? = nil) -> [String: Any] {
        let rows: [[String: Any]] = results.map { r in
            var row: [String: Any] = [
                "strategy": r.name,
                "level": r.level.map { $0.rawValue as Any } ?? NSNull(),
                "eval": r.eval,
                "eval_set": r.evaluatedOn.rawValue,
                "labels_per_class": r.labelsPerClass.map { $0 as Any } ?? NSNull(),
                "accuracy": r.accuracy.map { $0 as Any } ?? NSNull(),
                "macro_f1": r.macroF1.map { $0 as Any } ?? NSNull(),
                "train_seconds": (r.trainSeconds * 1000).rounded() / 1000,
            ]
            if let scores = r.labelFree { row["label_free"] = jsonObject(scores) }
            if let chosen = r.chosen { row["chosen"] = chosen }
            if let search = r.depthSearch { row["unfreeze"] = jsonObject(search) }
            if let check = r.heldOutNeighbours { row["held_out_neighbours"] = jsonObject(check) }
            return row
        }
        var object: [String: Any] = ["app": app, "command": command, "results": rows]
        if let (id, reason) = defaultModel { object["default_model"] = ["id": id, "reason": reason] }
        if let neighbourAgreement { object["source_neighbour_agreement"] = neighbourAgreement }
        if let diagnosis, var d = jsonObject(diagnosis.measured) as? [String: Any] {
            // As `diagnose --json` prints it, with the two sets it compared.
            d["source"] = diagnosis.source
            d["target"] = diagnosis.target
            object["diagnosis"] = d
        }
        return object
    }

    /// An Encodable value as a JSON object (snake_case keys unless told), for embedding in hand-built JSON; non-finite
    /// numbers become the strings "nan", "inf", "-inf".
    static func jsonObject<T: Encodable>(_ value: T, snakeCase: Bool = true) -> Any {
        let encoder = JSONEncoder()
        if snakeCase { encoder.keyEncodingStrategy = .convertToSnakeCase }
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        guard let data = try? encoder.encode(value), let object = try? JSONSerialization.jsonObject(with: data) else { return NSNull() }
        return object
    }

    /// One JSON object; a number that JSON cannot hold (NaN, infinity) becomes null rather than a crash.
    /// RFC 4180 CSV: fields with a comma, quote or line break are quoted (quotes doubled); lines end in "\n".
    static func csv(_ rows: [[String]]) -> String {
        rows.map { row in
            row.map { f in
                f.contains { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" } ? "\"" + f.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : f
            }.joined(separator: ",")
        }.joined(separator: "\n") + "\n"
    }

    static func encode(_ object: [String: Any]) -> String {
        func finite(_ value: Any) -> Any {
            switch value {
            case let d as Double: return d.isFinite ? d : NSNull()
            case let f as Float: return f.isFinite ? Double(f) : NSNull()
            case let a as [Any]: return a.map(finite)
            case let o as [String: Any]: return o.mapValues(finite)
            default: return value
            }
        }
        guard let data = try? JSONSerialization.data(withJSONObject: finite(object), options: [.sortedKeys]) else {
            return #"{"error": "the result could not be written as JSON"}"#
        }
        return String(decoding: data, as: UTF8.self)
    }

    static func table(_ results: [StrategyResult]) -> String {
        let scored = results.contains { $0.labelFree != nil }
        var rows: [[String]] = [["strategy", "level", "eval", "labels/class", "accuracy", "macro-F1", "train s"]
                                + (scored ? ["ensemble", "reverse-val", "IM", "agree"] : [])]
        for r in results {
            var row = [r.strategy == .auto ? "auto (\(r.chosen ?? "?"))" : r.name, r.level?.rawValue ?? "-", r.eval, "all", "-", "-",
                       String(format: "%.1f", r.trainSeconds)]
            if scored {
                let s = r.strategy == .auto ? nil : r.labelFree
                row += [s?.ensembleAgreement.map { String(format: "%.3f", $0) } ?? "-",
                        s.map { String(format: "%.3f", $0.reverseValidation) } ?? "-",
                        s.map { String(format: "%.3f", $0.informationMaximisation) } ?? "-",
                        s?.agreementWithSourceOnly.map { String(format: "%.3f", $0) } ?? "-"]
            }
            if let k = r.labelsPerClass { row[3] = String(k) }
            if let report = r.report {
                row[4] = String(format: "%.4f", report.accuracy)
                row[5] = String(format: "%.4f", report.macroF1)
            }
            rows.append(row)
        }
        return alignedColumns(rows, ruleAfterFirst: true)
    }

    /// Left-aligned columns separated by two spaces, optionally with a dashed rule under the first row.
    static func alignedColumns(_ rows: [[String]], ruleAfterFirst: Bool) -> String {
        var widths = [Int](repeating: 0, count: rows.first?.count ?? 0)
        let rows = rows.map { $0.map(\.printable) }
        for row in rows { for i in row.indices { widths[i] = max(widths[i], row[i].count) } }
        var lines: [String] = []
        for (n, row) in rows.enumerated() {
            var cells: [String] = []
            for i in row.indices { cells.append(row[i].padding(toLength: widths[i], withPad: " ", startingAt: 0)) }
            lines.append(cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
            if n == 0 && ruleAfterFirst {
                lines.append(widths.map { String(repeating: "-", count: $0) }.joined(separator: "  "))
            }
        }
        return lines.joined(separator: "\n")
    }

    /// Prints results as a table (plus notes) or as JSON.
    static func print(app: String, command: String, results: [StrategyResult],
                      defaultModel: (identifier: String, reason: String)? = nil, diagnosis: RunOutcome.Diagnosis? = nil,
                      neighbourAgreement: Double? = nil, json: Bool, notes: [String] = []) {
        if json {
            Swift.print(Output.json(app: app, command: command, results: results, defaultModel: defaultModel,
                                    diagnosis: diagnosis, neighbourAgreement: neighbourAgreement))
        } else {
            Swift.print(table(results))
            for n in notes { Swift.print(n.printable) }
        }
    }

    /// Writes metrics, models, report.html and its figures as plots/*.svg into the run directory.
    static func save(_ outcome: RunOutcome, app: String, command: String, to run: RunDirectory,
                     record: inout RunDirectory.Record) throws {
        let results = outcome.results
        var detailed: [[String: Any]] = []
        for r in results {
            let id = r.identifier
            if let model = r.model {
                try run.saveModel(model, name: id, app: app)
                if !record.models.contains(id) { record.models.append(id) }
            }
            var entry: [String: Any] = ["id": id, "strategy": r.name, "eval": r.eval, "eval_set": r.evaluatedOn.rawValue,
                                        "train_seconds": r.trainSeconds]
            if let scores = r.labelFree { entry["label_free"] = jsonObject(scores) }
            if let check = r.heldOutNeighbours { entry["held_out_neighbours"] = jsonObject(check) }
            if let chosen = r.chosen { entry["chosen"] = chosen }
            if let report = r.report {
                let data = try JSONEncoder().encode(report)
                entry["report"] = try JSONSerialization.jsonObject(with: data)
            }
            entry["history"] = jsonObject(r.history, snakeCase: false)
            detailed.append(entry)
        }
        // The default model for evaluate/predict: the command's choice, made without test labels.
        record.defaultModel = outcome.defaultModel?.identifier
        record.defaultReason = outcome.defaultModel?.reason
        record.unfreeze = results.compactMap(\.depthSearch).first
        var metrics = Output.object(app: app, command: command, results: results, defaultModel: outcome.defaultModel,
                                    diagnosis: outcome.diagnosis, neighbourAgreement: outcome.neighbourAgreement)
        metrics["details"] = detailed
        try run.write(Data(encode(metrics).utf8), to: "metrics.json")
        let losses = try outcome.topLosses.map { ($0.model, $0.set, try $0.compute()) }
        let page = HTMLReport(app: app, command: command, record: record, outcome: outcome, topLosses: losses).render()
        for (name, svg) in page.plots { try run.write(Data(svg.utf8), to: "plots/\(name).svg") }
        try run.write(Data(page.html.utf8), to: "report.html")
        try run.writeRecord(record)
    }
}
