import Foundation

/// Report plots as PNG bytes: learning curves, a confusion matrix and a 2-D scatter (e.g. PCA of source and
/// target features). Drawn with `Raster` at a size readable as is (640x480 by default); all text is ASCII.
public enum Plots {
    /// Lines (one per series, x = 1, 2, ... e.g. epochs) with a legend and numbered axes. Non-finite values
    /// break a line. A series of one value shows as a dot.
    public static func learningCurves(series: [(name: String, values: [Double])], xLabel: String = "epoch",
                                      yLabel: String = "", title: String,
                                      width: Int = 640, height: Int = 480) -> [UInt8] {
        drawLearningCurves(series: series, xLabel: xLabel, yLabel: yLabel, title: title, width: width, height: height).png()
    }

    /// Heatmap of `counts[true][predicted]`, coloured by the share of each true class (so small classes are as
    /// visible as big ones), counts printed in the cells, accuracy in the caption.
    public static func confusionMatrix(_ counts: [[Int]], classNames: [String], title: String,
                                       width: Int = 640, height: Int = 640) -> [UInt8] {
        drawConfusionMatrix(counts, classNames: classNames, title: title, width: width, height: height).png()
    }

    /// Points of each group in their own colour and marker shape, with a legend. Non-finite points are skipped.
    public static func scatter(groups: [(name: String, points: [(Double, Double)])], title: String,
                               xLabel: String = "PC1", yLabel: String = "PC2",
                               width: Int = 640, height: Int = 480) -> [UInt8] {
        drawScatter(groups: groups, title: title, xLabel: xLabel, yLabel: yLabel, width: width, height: height).png()
    }

    /// Writes PNG bytes (from the functions above) atomically.
    public static func write(_ png: [UInt8], to url: URL) throws {
        try AtomicFile.write(to: url) { try $0.write(png) }
    }

    // MARK: Drawing

    static let textScale = 2
    static let lineHeight = 7 * textScale

    static func drawLearningCurves(series: [(name: String, values: [Double])], xLabel: String, yLabel: String,
                                   title: String, width: Int, height: Int) -> Raster {
        var canvas = Raster(width: width, height: height)
        let finite = series.flatMap { $0.values.filter(\.isFinite) }
        let count = series.map(\.values.count).max() ?? 0
        let x = Axis(from: 1, to: Double(max(count, 2)), integer: true)
        let y = Axis(from: finite.min() ?? 0, to: finite.max() ?? 1, integer: false)
        let frame = Frame(canvas: &canvas, title: title, x: x, y: y, xLabel: xLabel, yLabel: yLabel)
        let showPoints = count <= 40
        for (k, s) in series.enumerated() {
            let color = Raster.Color.series(k)
            var previous: (x: Double, y: Double)?
            for (i, v) in s.values.enumerated() {
                guard v.isFinite else { previous = nil; continue }
                let p = frame.point(Double(i + 1), v)
                if let q = previous { canvas.line(from: q, to: p, color: color, thickness: 2) }
                let isolated = previous == nil && (i + 1 >= s.values.count || !s.values[i + 1].isFinite)
                if showPoints || isolated { canvas.marker(.disc, at: p, radius: showPoints ? 2.5 : 2, color: color) }
                previous = p
            }
        }
        let entries = series.enumerated().map { (name: $0.element.name, color: Raster.Color.series($0.offset), marker: Raster.Marker?.none) }
        if !(series.count == 1 && series[0].name.isEmpty) { drawLegend(entries, in: frame, on: &canvas) }
        return canvas
    }

    static func drawScatter(groups: [(name: String, points: [(Double, Double)])], title: String,
                            xLabel: String, yLabel: String, width: Int, height: Int) -> Raster {
        var canvas = Raster(width: width, height: height)
        let all = groups.flatMap { $0.points.filter { $0.0.isFinite && $0.1.isFinite } }
        let x = Axis(from: all.map(\.0).min() ?? 0, to: all.map(\.0).max() ?? 1, integer: false)
        let y = Axis(from: all.map(\.1).min() ?? 0, to: all.map(\.1).max() ?? 1, integer: false)
        let frame = Frame(canvas: &canvas, title: title, x: x, y: y, xLabel: xLabel, yLabel: yLabel)
        let markers = Raster.Marker.allCases
        let crowded = all.count > 600
        // Interleave the groups by relative position so that no group is painted entirely over another.
        var order: [(key: Double, group: Int, index: Int)] = []
        for (g, group) in groups.enumerated() {
            for i in group.points.indices { order.append(((Double(i) + 0.5) / Double(group.points.count), g, i)) }
        }
        order.sort { ($0.key, $0.group) < ($1.key, $1.group) }
        for item in order {
            let (px, py) = groups[item.group].points[item.index]
            guard px.isFinite && py.isFinite else { continue }
            canvas.marker(markers[item.group % markers.count], at: frame.point(px, py), radius: crowded ? 2.5 : 3.5,
                          color: .series(item.group), alpha: crowded ? 0.45 : 0.75)
        }
        let entries = groups.enumerated().map {
            (name: $0.element.name, color: Raster.Color.series($0.offset), marker: Optional(markers[$0.offset % markers.count]))
        }
        drawLegend(entries, in: frame, on: &canvas)
        return canvas
    }

    static func drawConfusionMatrix(_ counts: [[Int]], classNames: [String], title: String,
                                    width: Int, height: Int) -> Raster {
        let n = classNames.count
        precondition(n > 0 && counts.count == n && counts.allSatisfy { $0.count == n },
                     "confusionMatrix: counts of shape [\(counts.count), \(counts.first?.count ?? 0)] and \(n) class names clash")
        var canvas = Raster(width: width, height: height)
        let s = n <= 16 ? 2 : 1
        let cap = 14
        let names = classNames.map { Raster.truncate($0, toCharacters: cap) }
        let total = counts.reduce(0) { $0 + $1.reduce(0, +) }
        let correct = (0..<n).reduce(0) { $0 + counts[$1][$1] }

        let top = title.isEmpty ? 12 : 16 + lineHeight + 12
        let caption = 7 + 16
        let nameWidth = names.map { Raster.textSize($0, scale: s).width }.max() ?? 0
        let labelColumn = lineHeight + 10   // the rotated "true"
        let left = 12 + labelColumn + nameWidth + 6
        let right = 16
        // Capped so that two or three classes do not become giant tiles.
        func cell(bottom: Int) -> Int { max(1, min(120, (width - left - right) / n, (height - top - bottom) / n)) }
        var bottom = 6 + 7 * s + 10 + lineHeight + 10 + caption
        var size = cell(bottom: bottom)
        let vertical = names.contains { Raster.textSize($0, scale: s).width > size - 4 }
        if vertical {
            bottom = 6 + nameWidth + 10 + lineHeight + 10 + caption
            size = cell(bottom: bottom)
        }
        // Centre the whole block (axis label, row names, grid) horizontally.
        let block = labelColumn + nameWidth + 6 + size * n
        let x0 = max(12, (width - block) / 2)
        let gx = x0 + labelColumn + nameWidth + 6, gy = top

        if !title.isEmpty { centredText(title, x: width / 2, y: 16, on: &canvas) }
        let blues: [Raster.Color] = [Raster.Color(247, 251, 255), Raster.Color(198, 219, 239), Raster.Color(107, 174, 214),
                                     Raster.Color(33, 113, 181), Raster.Color(8, 48, 107)]
        for t in 0..<n {
            let rowTotal = counts[t].reduce(0, +)
            for p in 0..<n {
                let share = rowTotal > 0 ? Double(counts[t][p]) / Double(rowTotal) : 0
                let f = share * Double(blues.count - 1)
                let k = min(blues.count - 2, Int(f))
                let fill = blues[k].mixed(with: blues[k + 1], f - Double(k))
                canvas.fillRect(x: gx + p * size, y: gy + t * size, width: size, height: size, color: fill)
                let label = String(counts[t][p])
                let ink: Raster.Color = fill.luminance < 0.5 ? .white : .black
                for scale in [3, 2, 1] where scale <= s + 1 {
                    let (w, h) = Raster.textSize(label, scale: scale)
                    if w <= size - 4 && h <= size - 4 {
                        canvas.text(label, x: gx + p * size + (size - w) / 2, y: gy + t * size + (size - h + 1) / 2,
                                    color: ink, scale: scale)
                        break
                    }
                }
            }
        }
        canvas.strokeRect(x: gx - 1, y: gy - 1, width: size * n + 2, height: size * n + 2, color: .grey)
        // Row names right-aligned left of the grid, centred on their row.
        for (i, name) in names.enumerated() {
            let (w, h) = Raster.textSize(name, scale: s)
            canvas.text(name, x: gx - 6 - w, y: gy + i * size + (size - h + 1) / 2, scale: s)
            let columnWidth = vertical ? h : w
            canvas.text(name, x: gx + i * size + (size - columnWidth + 1) / 2, y: gy + n * size + 6,
                        scale: s, vertical: vertical)
        }
        let namesHeight = vertical ? nameWidth : 7 * s
        centredText("predicted", x: gx + size * n / 2, y: gy + n * size + 6 + namesHeight + 10, on: &canvas)
        let trueWidth = Raster.textSize("true", scale: textScale).width
        canvas.text("true", x: x0, y: gy + (size * n - trueWidth) / 2, scale: textScale, vertical: true)
        let accuracy = total > 0 ? String(format: "accuracy %.1f%% (%d of %d)", 100 * Double(correct) / Double(total), correct, total)
                                 : "no samples"
        let note = "\(accuracy); rows: true class; colour: share of the row"
        let noteWidth = Raster.textSize(note).width
        canvas.text(note, x: max(4, (width - noteWidth) / 2), y: height - 7 - 10, color: Raster.Color(90, 90, 90))
        return canvas
    }

    // MARK: Axes, frame, legend

    /// A linear axis over the data range plus a 4% margin (so no point sits on the frame), with ticks at "nice"
    /// values (1, 2, 2.5 or 5 times a power of ten; whole numbers on an integer axis).
    struct Axis {
        var lo: Double, hi: Double
        var ticks: [Double]
        var decimals: Int

        init(from a: Double, to b: Double, integer: Bool, targetTicks: Int = 6) {
            var a = a, b = b
            if !(b > a) {
                let pad = a == 0 ? 1 : abs(a) * 0.1
                a -= pad
                b += pad
            }
            let margin = 0.04 * (b - a)
            lo = a - margin
            hi = b + margin
            let raw = (hi - lo) / Double(targetTicks)
            let magnitude = pow(10, (log10(raw)).rounded(.down))
            let residual = raw / magnitude
            var step = magnitude * (residual <= 1 ? 1 : residual <= 2 ? 2 : residual <= 2.5 ? 2.5 : residual <= 5 ? 5 : 10)
            if integer { step = max(1, step.rounded()) }
            ticks = []
            var k = (lo / step).rounded(.up)
            while k * step <= hi {
                ticks.append(k == 0 ? 0 : k * step)
                k += 1
            }
            decimals = max(0, Int(-(log10(step)).rounded(.down)))
            if (step / pow(10, (log10(step)).rounded(.down))) == 2.5 { decimals += 1 }
        }

        func label(_ v: Double) -> String {
            let magnitude = max(abs(lo), abs(hi))
            if magnitude >= 1e6 || (magnitude < 1e-3 && magnitude > 0) { return String(format: "%.2g", v) }
            return String(format: "%.\(min(decimals, 6))f", v)
        }
    }

    /// Title, axes, grid and tick labels around a plot area; maps data to pixel coordinates.
    struct Frame {
        let x: Axis, y: Axis
        let left: Int, top: Int, width: Int, height: Int

        init(canvas: inout Raster, title: String, x: Axis, y: Axis, xLabel: String, yLabel: String) {
            self.x = x
            self.y = y
            let s = textScale
            let tickWidth = y.ticks.map { Raster.textSize(y.label($0), scale: s).width }.max() ?? 0
            left = 12 + (yLabel.isEmpty ? 0 : lineHeight + 10) + tickWidth + 8
            top = title.isEmpty ? 16 : 16 + lineHeight + 14
            let lastXLabel = Raster.textSize(x.label(x.hi), scale: s).width
            let right = max(20, lastXLabel / 2 + 8)
            let bottom = 8 + lineHeight + (xLabel.isEmpty ? 0 : 10 + lineHeight) + 12
            width = max(10, canvas.width - left - right)
            height = max(10, canvas.height - top - bottom)

            if !title.isEmpty { centredText(title, x: canvas.width / 2, y: 16, on: &canvas) }
            for t in x.ticks {
                let px = Int(point(t, y.lo).x.rounded(.down))
                canvas.fillRect(x: px, y: top, width: 1, height: height, color: .lightGrey)
                canvas.fillRect(x: px, y: top + height, width: 1, height: 5, color: .black)
                centredText(x.label(t), x: px, y: top + height + 8, on: &canvas)
            }
            for t in y.ticks {
                let py = Int(point(x.lo, t).y.rounded(.down))
                canvas.fillRect(x: left, y: py, width: width, height: 1, color: .lightGrey)
                canvas.fillRect(x: left - 5, y: py, width: 5, height: 1, color: .black)
                let (w, h) = Raster.textSize(y.label(t), scale: s)
                canvas.text(y.label(t), x: left - 8 - w, y: py - h / 2, scale: s)
            }
            canvas.strokeRect(x: left, y: top, width: width + 1, height: height + 1, color: .black)
            if !xLabel.isEmpty {
                centredText(xLabel, x: left + width / 2, y: top + height + 8 + lineHeight + 10, on: &canvas)
            }
            if !yLabel.isEmpty {
                let w = Raster.textSize(yLabel, scale: s).width
                canvas.text(yLabel, x: 12, y: top + (height - w) / 2, scale: s, vertical: true)
            }
        }

        /// Pixel coordinates of a data point (continuous; pixel centres at +0.5).
        func point(_ vx: Double, _ vy: Double) -> (x: Double, y: Double) {
            (Double(left) + 0.5 + (vx - x.lo) / (x.hi - x.lo) * Double(width),
             Double(top) + 0.5 + (1 - (vy - y.lo) / (y.hi - y.lo)) * Double(height))
        }
    }

    static func centredText(_ text: String, x: Int, y: Int, on canvas: inout Raster) {
        let w = Raster.textSize(text, scale: textScale).width
        canvas.text(text, x: x - w / 2, y: y, scale: textScale)
    }

    /// A boxed legend in the corner of the plot area that covers the least ink already drawn.
    static func drawLegend(_ entries: [(name: String, color: Raster.Color, marker: Raster.Marker?)], in frame: Frame,
                           on canvas: inout Raster) {
        guard !entries.isEmpty else { return }
        let s = textScale
        let names = entries.map { Raster.truncate($0.name, toCharacters: 28) }
        let rowHeight = lineHeight + 8
        let boxWidth = 10 + 24 + 8 + (names.map { Raster.textSize($0, scale: s).width }.max() ?? 0) + 10
        let boxHeight = 6 + rowHeight * entries.count
        let inset = 8
        let xs = [frame.left + frame.width - inset - boxWidth, frame.left + inset + 1]
        let ys = [frame.top + inset, frame.top + frame.height - inset - boxHeight]
        var best = (x: xs[0], y: ys[0]), bestInk = Int.max
        for y in ys {
            for x in xs {
                var ink = 0
                for yy in max(0, y)..<min(canvas.height, y + boxHeight) {
                    for xx in max(0, x)..<min(canvas.width, x + boxWidth) {
                        let c = canvas[x: xx, y: yy]
                        if c != .white && c != .lightGrey { ink += 1 }
                    }
                }
                if ink < bestInk { bestInk = ink; best = (x, y) }
            }
        }
        canvas.fillRect(x: best.x, y: best.y, width: boxWidth, height: boxHeight, color: .white, alpha: 0.88)
        canvas.strokeRect(x: best.x, y: best.y, width: boxWidth, height: boxHeight, color: .grey)
        for (i, entry) in entries.enumerated() {
            let cy = Double(best.y + 6 + i * rowHeight + lineHeight / 2)
            let sx = Double(best.x + 10)
            if let m = entry.marker {
                canvas.marker(m, at: (sx + 12, cy), radius: 5, color: entry.color)
            } else {
                canvas.line(from: (sx, cy), to: (sx + 24, cy), color: entry.color, thickness: 3)
            }
            canvas.text(names[i], x: best.x + 10 + 24 + 8, y: best.y + 6 + i * rowHeight, scale: s)
        }
    }
}
