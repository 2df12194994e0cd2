import Foundation
import TransferEngine
import TransferReport

/// `report.html` of a run directory: one self-contained page (inline SVG, no script, no external file) with the
/// command, the data, the results with the baselines, and per model its per-class scores, confusion matrix,
/// learning curves (loss and accuracy in separate panels, the best epoch marked, the learning rate) and, for
/// adaptation, the label-free scores and the source/target features before and after.
struct HTMLReport {
    let app: String
    let command: String
    let record: RunDirectory.Record
    let outcome: RunOutcome
    var topLosses: (model: String, set: String, rows: [TopLoss])? = nil

    /// The page, and its figures as standalone SVG files (name without extension -> file contents).
    func render() -> (html: String, plots: [(name: String, svg: String)]) {
        var plots: [(name: String, svg: String)] = []
        var body = ["<h1>\(esc(app)) \(esc(command))</h1>",
                    "<p class=meta>\(esc(app)) \(esc(record.version)), \(esc(record.created)); seed \(record.seed)</p>",
                    "<pre>\(esc(([app, command] + record.arguments).joined(separator: " ")))</pre>"]
        if let id = record.defaultModel {
            body.append("<p>Default model for <code>evaluate</code> and <code>predict</code>: <b>\(esc(id))</b> (\(esc(record.defaultReason ?? "")))</p>")
        }
        if let data = record.data, !data.isEmpty {
            body.append("<h2>Data</h2>" + table(["set", "path", "samples", "per class"], data.sorted { $0.key < $1.key }.map { role, e in
                [role, e.path, String(e.samples), e.classes.map { $0.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") } ?? "unlabelled"]
            }))
        }
        body.append("<h2>Results</h2>" + Self.resultsTable(outcome.results))
        if let (model, set, rows) = topLosses, !rows.isEmpty {
            body.append("<h2 id=\"top-losses\">Top losses</h2><p>The \(rows.count) samples of \(esc(set)) with the highest loss under the default model (<a href=\"#model-\(esc(model))\">\(esc(model))</a>), highest first\(rows.contains { $0.truth == $0.predicted } ? " (the highest losses, not only the errors: some are predicted correctly)" : "").</p>"
                        + Self.lossTable(rows))
        }
        if let (source, target) = outcome.before {
            let panels = alignment(source, target)
            plots.append(("alignment-before", Self.svgFile(panels)))
            body.append("<h2>Source and target features before adaptation</h2><div class=row>" + panels.joined() + "</div>")
        }
        for r in outcome.results where r.strategy != .auto {
            var section = ["<h2 id=\"model-\(esc(r.identifier))\">\(esc(r.identifier))</h2>"]
            if let report = r.report {
                section.append("<p>On \(esc(r.eval)) (\(r.evaluatedOn.rawValue) set): accuracy \(fmt(report.accuracy)), macro-F1 \(fmt(report.macroF1))</p>")
                let confusion = Self.confusion(report)
                plots.append(("confusion-\(r.identifier)", Self.svgFile([confusion])))
                section.append("<div class=row>" + perClass(report) + confusion + "</div>")
            }
            if let d = r.depthSearch {
                section.append("<p>--unfreeze auto: \(d.chosen) top blocks trained. Each depth was fine-tuned on four fifths of the labelled training data and scored on the fifth held out (never the test set); the default depth (\(d.defaultBlocks)) stays unless the most accurate held-out depth (\(d.best)) beats it by more than chance (McNemar p &lt; \(DepthSearch.significance)\(d.pValue.map { String(format: "; here p = %.3g", $0) } ?? "")). The model was then trained at that depth on all of the data.</p>"
                               + table(["top blocks trained", "held-out accuracy", "held-out loss", "test accuracy (of the four-fifths model; reported only)"],
                                       d.curve.map { ["\($0.blocks)" + ($0.blocks == d.chosen ? " (chosen)" : ""), fmt($0.validationAccuracy), fmt($0.validationLoss),
                                                      $0.testAccuracy.map(fmt) ?? "-"] }))
            }
            if let s = r.labelFree {
                section.append("<p>Without target labels: ensemble agreement \(s.ensembleAgreement.map(fmt) ?? "-"), reverse validation \(fmt(s.reverseValidation)), information maximisation \(fmt(s.informationMaximisation)), agreement with source-only \(s.agreementWithSourceOnly.map(fmt) ?? "-"); predicted target proportions \(s.predictedProportions.map { String(format: "%.2f", $0) }.joined(separator: " "))</p>")
            }
            if !r.history.isEmpty {
                let panels = Self.curves(r.history)
                plots.append(("learning-\(r.identifier)", Self.svgFile(panels)))
                section.append("<div class=row>" + panels.joined() + "</div>")
            }
            if let (source, target) = r.alignment {
                let panels = alignment(source, target)
                plots.append(("alignment-\(r.identifier)", Self.svgFile(panels)))
                section.append("<h3>Source and target through this model</h3><div class=row>" + panels.joined() + "</div>")
            }
            body.append(section.joined(separator: "\n"))
        }
        let html = """
        <!DOCTYPE html>
        <html lang="en"><head><meta charset="utf-8"><title>\(esc(app)) \(esc(command))</title>
        <style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}table{border-collapse:collapse;margin:.5em 0}\
        td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}th{background:#f3f3f3}.num{text-align:right}\
        pre{background:#f6f6f6;padding:.5em;white-space:pre-wrap}.row{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}\
        .meta{color:#666}.text{max-width:60em;white-space:pre-wrap}td img{display:block}svg text{font-size:11px;font-family:system-ui,sans-serif}</style></head><body>
        \(body.joined(separator: "\n"))
        </body></html>

        """
        return (html, plots)
    }

    // MARK: Tables

    static func resultsTable(_ results: [StrategyResult]) -> String {
        // The label-free column only where there are label-free scores (adapt), as in the printed table.
        let scored = results.contains { $0.labelFree != nil }
        var rows: [[String]] = []
        for r in results {
            let name = r.strategy == .auto ? "auto (\(r.chosen ?? "?"))" : r.identifier
            let accuracy = r.report.map { fmt($0.accuracy) } ?? "-", macroF1 = r.report.map { fmt($0.macroF1) } ?? "-"
            rows.append([name, r.level?.rawValue ?? "-", r.eval, r.evaluatedOn.rawValue, r.labelsPerClass.map(String.init) ?? "all",
                         accuracy, macroF1, String(format: "%.1f", r.trainSeconds)]
                        + (scored ? [r.labelFree?.ensembleAgreement.map(fmt) ?? "-"] : []))
        }
        return table(["strategy", "level", "eval", "eval set", "labels/class", "accuracy", "macro-F1", "train s"]
                     + (scored ? ["ensemble agreement"] : []), rows)
    }

    static func lossTable(_ rows: [TopLoss]) -> String {
        var html = "<table><tr><th>sample</th><th>true</th><th>predicted</th><th>probability</th><th>loss</th></tr>"
        for r in rows {
            var sample = "<code>\(esc(r.input))</code>"
            switch r.preview {
            case let .png(bytes)?:
                sample = "<img alt=\"\(esc(r.input))\" src=\"data:image/png;base64,\(Data(bytes).base64EncodedString())\"><br>" + sample
            case let .text(text)?:
                let shown = text.count > 400 ? String(text.prefix(399)) + "…" : text
                sample = "<div class=text>\(esc(shown))</div>" + sample
            case nil: break
            }
            html += "<tr><td>\(sample)</td><td>\(esc(r.truth))</td><td>\(esc(r.predicted))</td><td class=num>\(fmt(r.probability))</td><td class=num>\(fmt(r.loss))</td></tr>"
        }
        return html + "</table>"
    }

    func perClass(_ report: ClassificationReport) -> String {
        table(["class", "precision", "recall", "F1", "support"], report.classNames.indices.map { i in
            [report.classNames[i], fmt(report.precision[i]), fmt(report.recall[i]), fmt(report.f1[i]), String(report.support[i])]
        })
    }

    // MARK: SVG

    /// Rows true class, columns predicted, shade by share of the true class, counts written in.
    static func confusion(_ report: ClassificationReport) -> String {
        let k = report.classNames.count, cell = max(14, min(36, 360 / max(k, 1))), left = 110, top = 20
        // Class names left of the rows and, slanted so that long names do not overlap, below the columns.
        let names = report.classNames.map(short), bottom = top + k * cell
        let labelHeight = Int(Double(names.map(\.count).max() ?? 0) * 6.5 * 0.71) + 20
        var svg = ["<svg width=\"\(max(left + k * cell + 10, 290))\" height=\"\(bottom + labelHeight)\" role=\"img\" aria-label=\"confusion matrix\">"]
        for (t, row) in report.confusion.enumerated() {
            let total = max(row.reduce(0, +), 1)
            svg.append("<text x=\"\(left - 4)\" y=\"\(top + t * cell + cell / 2 + 4)\" text-anchor=\"end\">\(esc(names[t]))</text>")
            for (p, n) in row.enumerated() {
                let share = Double(n) / Double(total)
                let shade = Int(255 - 200 * share)
                svg.append("<rect x=\"\(left + p * cell)\" y=\"\(top + t * cell)\" width=\"\(cell)\" height=\"\(cell)\" fill=\"rgb(\(shade),\(shade),255)\" stroke=\"#fff\"><title>\(esc(report.classNames[t])) as \(esc(report.classNames[p])): \(n)</title></rect>")
                if n > 0 && cell >= 18 {
                    svg.append("<text x=\"\(left + p * cell + cell / 2)\" y=\"\(top + t * cell + cell / 2 + 4)\" text-anchor=\"middle\" fill=\"\(share > 0.6 ? "#fff" : "#000")\">\(n)</text>")
                }
            }
        }
        for (p, name) in names.enumerated() {
            let x = left + p * cell + cell / 2 + 4, y = bottom + 8
            svg.append("<text x=\"\(x)\" y=\"\(y)\" text-anchor=\"end\" transform=\"rotate(-45 \(x) \(y))\">\(esc(name))</text>")
        }
        svg.append("<text x=\"\(left)\" y=\"12\">predicted →</text><text x=\"4\" y=\"12\">true ↓</text></svg>")
        return svg.joined()
    }

    /// Loss, accuracy and learning rate per epoch in three panels (a fourth with the adaptation term for adaptation
    /// methods); the best epoch (lowest validation loss) marked.
    /// Epochs are counted across the phases of a model (fine-tuning's linear probe, then the unfrozen blocks).
    static func curves(_ history: [EpochLog]) -> [String] {
        let epochs = history.indices.map { Double($0 + 1) }
        let best = history.indices.filter { history[$0].validationLoss != nil }
            .min { history[$0].validationLoss! < history[$1].validationLoss! }.map { $0 + 1 }
        return [lineChart("loss", epochs, [("train", "#1f77b4", history.map(\.trainLoss)),
                                           ("validation", "#d62728", history.map { $0.validationLoss ?? .nan })], best: best),
                lineChart("accuracy", epochs, [("train", "#1f77b4", history.map(\.trainAccuracy)),
                                               ("validation", "#d62728", history.map { $0.validationAccuracy ?? .nan })], best: best),
                lineChart("learning rate", epochs, [("", "#555", history.map(\.learningRate))], best: nil)]
            + (history.contains { $0.adaptationLoss != nil }
                ? [lineChart("adaptation loss", epochs, [("", "#9467bd", history.map { $0.adaptationLoss ?? .nan })], best: nil)] : [])
    }

    static func lineChart(_ title: String, _ x: [Double], _ series: [(name: String, color: String, values: [Double])], best: Int?) -> String {
        let w = 300.0, h = 180.0, l = 48.0, b = 24.0, t = 18.0
        let ys = series.flatMap(\.values).filter(\.isFinite)
        guard let x0 = x.first, let x1 = x.last, let lo = ys.min(), let hi = ys.max() else { return "" }
        let span = hi > lo ? hi - lo : 1, xs = x1 > x0 ? x1 - x0 : 1
        func px(_ v: Double) -> Double { l + (v - x0) / xs * (w - l - 8) }
        func py(_ v: Double) -> Double { h - b - (v - lo) / span * (h - b - t) }
        var svg = ["<svg width=\"\(Int(w))\" height=\"\(Int(h))\" role=\"img\" aria-label=\"\(title)\"><text x=\"\(l)\" y=\"12\">\(title)</text>",
                   "<line x1=\"\(l)\" y1=\"\(h - b)\" x2=\"\(w - 8)\" y2=\"\(h - b)\" stroke=\"#999\"/><line x1=\"\(l)\" y1=\"\(t)\" x2=\"\(l)\" y2=\"\(h - b)\" stroke=\"#999\"/>",
                   "<text x=\"\(l - 4)\" y=\"\(t + 4)\" text-anchor=\"end\">\(tick(hi))</text><text x=\"\(l - 4)\" y=\"\(h - b)\" text-anchor=\"end\">\(tick(lo))</text>",
                   "<text x=\"\(l)\" y=\"\(h - 8)\">\(Int(x0))</text><text x=\"\(w - 8)\" y=\"\(h - 8)\" text-anchor=\"end\">epoch \(Int(x1))</text>"]
        if let best {
            svg.append("<line x1=\"\(px(Double(best)))\" y1=\"\(t)\" x2=\"\(px(Double(best)))\" y2=\"\(h - b)\" stroke=\"#2ca02c\" stroke-dasharray=\"4 3\"><title>best epoch \(best)</title></line>")
        }
        for (i, s) in series.enumerated() {
            let points = zip(x, s.values).filter { $0.1.isFinite }.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }
            if points.isEmpty { continue }
            svg.append("<polyline fill=\"none\" stroke=\"\(s.color)\" stroke-width=\"1.5\" points=\"\(points.joined(separator: " "))\"/>")
            if !s.name.isEmpty { svg.append("<text x=\"\(w - 8)\" y=\"\(t + 12 * Double(i))\" text-anchor=\"end\" fill=\"\(s.color)\">\(s.name)</text>") }
        }
        return (svg + ["</svg>"]).joined()
    }

    /// PCA of both sets (fitted on both): coloured by domain, and the source coloured by class (target grey), with
    /// its legend; one SVG per panel.
    func alignment(_ source: Tensor, _ target: Tensor) -> [String] {
        let pca = PCA.fit(Tensor.concatenateRows([source, target]), components: 2)
        func points(_ t: Tensor) -> [(Double, Double)] {
            let p = pca.transform(t), n = p.shape[0], step = max(1, n / 1500)
            return stride(from: 0, to: n, by: step).map { (Double(p[flat: 2 * $0]), Double(p[flat: 2 * $0 + 1])) }
        }
        let s = points(source), tg = points(target)
        var panels = [scatter("by domain: source blue, target orange", [(s, Array(repeating: 0, count: s.count)), (tg, Array(repeating: 1, count: tg.count))],
                              colors: ["#1f77b4", "#ff7f0e"])]
        if let (labels, names) = outcome.sourceLabels, labels.count == source.shape[0] {
            let step = max(1, labels.count / 1500)
            let classOf = stride(from: 0, to: labels.count, by: step).map { labels[$0] + 1 }
            panels.append(scatter("source by class, target grey", [(tg, Array(repeating: 0, count: tg.count)), (s, classOf)],
                                  colors: Self.palette))
            var legend = ["<svg width=\"180\" height=\"\(20 + 16 * names.count)\" role=\"img\" aria-label=\"classes\">"]
            for (i, name) in names.enumerated() {
                legend.append("<circle cx=\"10\" cy=\"\(16 + 16 * i)\" r=\"5\" fill=\"\(Self.palette[(i + 1) % Self.palette.count])\"/><text x=\"20\" y=\"\(20 + 16 * i)\">\(esc(short(name)))</text>")
            }
            panels.append((legend + ["</svg>"]).joined())
        }
        return panels
    }

    static let palette = ["#bbbbbb", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939"]

    func scatter(_ title: String, _ groups: [(points: [(Double, Double)], colors: [Int])], colors: [String]) -> String {
        let all = groups.flatMap(\.points)
        guard let x0 = all.map(\.0).min(), let x1 = all.map(\.0).max(), let y0 = all.map(\.1).min(), let y1 = all.map(\.1).max() else { return "" }
        let size = 320.0
        func p(_ v: (Double, Double)) -> String {
            String(format: "%.1f\" cy=\"%.1f", 10 + (v.0 - x0) / max(x1 - x0, 1e-12) * (size - 20), 30 + (y1 - v.1) / max(y1 - y0, 1e-12) * (size - 40))
        }
        var svg = ["<svg width=\"\(Int(size))\" height=\"\(Int(size))\" role=\"img\" aria-label=\"PCA scatter\"><text x=\"4\" y=\"12\">\(esc(title))</text>"]
        for g in groups {
            for (pt, c) in zip(g.points, g.colors) {
                svg.append("<circle cx=\"\(p(pt))\" r=\"1.6\" fill=\"\(colors[c % colors.count])\" fill-opacity=\"0.6\"/>")
            }
        }
        return (svg + ["</svg>"]).joined()
    }
}

extension HTMLReport {
    /// Panels (each a whole `<svg>` as the functions above make them, inline-HTML style without a namespace, which
    /// the root's declares for all of them) side by side in one standalone SVG file,
    /// for plots/*.svg: the report's figures as files a user can open or put in a paper.
    static func svgFile(_ panels: [String]) -> String {
        var x = 0.0, height = 0.0, body: [String] = []
        for panel in panels {
            func attribute(_ name: String) -> Double {
                guard let open = panel.range(of: ">")?.lowerBound, let r = panel[..<open].range(of: " \(name)=\"") else { return 0 }
                return Double(panel[r.upperBound...].prefix { $0 != "\"" }) ?? 0
            }
            body.append(panel.replacingOccurrences(of: "<svg ", with: "<svg x=\"\(Int(x))\" ", options: .anchored))
            x += attribute("width") + 16
            height = max(height, attribute("height"))
        }
        return """
        <?xml version="1.0" encoding="UTF-8"?>
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(max(x - 16, 0)))" height="\(Int(height))"><style>text{font-size:11px;font-family:sans-serif}</style>\
        <rect width="100%" height="100%" fill="#fff"/>\(body.joined())</svg>

        """
    }
}

private func table(_ header: [String], _ rows: [[String]]) -> String {
    "<table><tr>" + header.map { "<th>\(esc($0))</th>" }.joined() + "</tr>"
        + rows.map { "<tr>" + $0.map { "<td>\(esc($0))</td>" }.joined() + "</tr>" }.joined() + "</table>"
}

private func esc(_ s: String) -> String {
    var out = ""
    for c in s.unicodeScalars {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        default: out.unicodeScalars.append(c.value < 0x20 && c != "\n" && c != "\t" ? "\u{FFFD}" : c)
        }
    }
    return out
}

private func fmt(_ x: Double) -> String { String(format: "%.3f", x) }
private func tick(_ x: Double) -> String { abs(x) >= 0.01 || x == 0 ? String(format: "%.3g", x) : String(format: "%.1e", x) }
private func short(_ s: String) -> String { s.count > 16 ? String(s.prefix(15)) + "…" : s }
