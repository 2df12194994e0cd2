import Foundation
import TransferEngine

/// Reads the toy domain's CSV files.
enum ToyCSV {
    static func read(_ url: URL) throws -> (header: [String], rows: [(Int, [String])]) {
        let data = try InputFile.read(url, limit: 1 << 30, what: "a CSV file")
        guard let text = String(data: data, encoding: .utf8) else { throw EngineError.invalidFile(url.path, "not UTF-8 text") }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        guard let first = lines.first, !first.isEmpty else { throw EngineError.invalidFile(url.path, "empty file") }
        let header = first.split(separator: ",").map(String.init)
        var rows: [(Int, [String])] = []
        for (i, line) in lines.enumerated().dropFirst() where !line.isEmpty {
            let cells = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            guard cells.count == header.count else {
                throw EngineError.invalidFile("\(url.path):\(i + 1)", "\(cells.count) fields, the header has \(header.count)")
            }
            rows.append((i + 1, cells))
        }
        guard !rows.isEmpty else { throw EngineError.invalidFile(url.path, "no rows") }
        return (header, rows)
    }

    static func numbers(_ cells: ArraySlice<String>, url: URL, line: Int) throws -> [Float] {
        try cells.map {
            guard let v = Float($0), v.isFinite else { throw EngineError.invalidFile("\(url.path):\(line)", "'\($0)' is not a number") }
            return v
        }
    }
}

/// Synthetic data for the toy domain: Gaussian classes in a 6-d latent space embedded in 32 dimensions with
/// large nuisance noise in the other 26; the "pretrained" backbone projects onto the latent space (it knows
/// the structure, as a network pretrained on a large related dataset would). The target domain is the source
/// rotated and shifted in the latent space.
public enum ToyData {
    public static let dimensions = 32
    static let latent = 6
    static let classes = 5

    /// Writes source-train/source-test (labelled), target-unlabelled, target-test, target-labelled CSVs into `folder` and the
    /// backbone to `models/toy/backbone.safetensors`.
    public static func generate(into folder: URL, models: URL, seed: UInt64 = 1, trainPerClass: Int = 60,
                                testPerClass: Int = 60, targetPerClass: Int = 60) throws {
        var rng = RNG(seed: seed)
        let d = dimensions, l = latent
        // Orthonormal basis of R^d by Gram-Schmidt on random vectors; the first l span the signal.
        var basis: [[Double]] = []
        while basis.count < d {
            var v = (0..<d).map { _ in Double(rng.normal()) }
            for b in basis { let dot = zip(v, b).reduce(0) { $0 + $1.0 * $1.1 }; v = zip(v, b).map { $0 - dot * $1 } }
            let n = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
            if n > 1e-6 { basis.append(v.map { $0 / n }) }
        }
        let means = (0..<classes).map { _ in (0..<l).map { _ in Double(rng.normal()) * 1.6 } }
        func latentSample(_ c: Int, _ rng: inout RNG) -> [Double] { means[c].map { $0 + Double(rng.normal()) } }
        func embed(_ z: [Double], _ rng: inout RNG) -> [Float] {
            var x = [Double](repeating: 0, count: d)
            for i in 0..<l { for j in 0..<d { x[j] += z[i] * basis[i][j] } }
            for i in l..<d { let n = Double(rng.normal()) * 3; for j in 0..<d { x[j] += n * basis[i][j] } }
            return x.map(Float.init)
        }
        // Target shift: rotate the first two latent axes by 60 degrees, translate, and scale by 1.5.
        let angle = 0.0 * Double.pi / 180
        let shift = (0..<l).map { _ in Double(rng.normal()) * 1.2 }
        func toTarget(_ z: [Double]) -> [Double] {
            var t = z
            t[0] = cos(angle) * z[0] - sin(angle) * z[1]
            t[1] = sin(angle) * z[0] + cos(angle) * z[1]
            return zip(t, shift).map { ($0 + $1) * 1.5 }
        }
        func rows(perClass: Int, target: Bool, _ rng: inout RNG) -> [(Int, [Float])] {
            var out: [(Int, [Float])] = []
            for c in 0..<classes {
                for _ in 0..<perClass {
                    let z = latentSample(c, &rng)
                    out.append((c, embed(target ? toTarget(z) : z, &rng)))
                }
            }
            var order = rng.permutation(out.count)
            rng.shuffle(&order)
            return order.map { out[$0] }
        }
        func write(_ rows: [(Int, [Float])], labelled: Bool, to name: String) throws {
            var text = (labelled ? "label," : "") + (0..<d).map { "x\($0)" }.joined(separator: ",") + "\n"
            for (c, x) in rows {
                text += (labelled ? "c\(c)," : "") + x.map { String(format: "%.5f", $0) }.joined(separator: ",") + "\n"
            }
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            try AtomicFile.write(Data(text.utf8), to: folder.appendingPathComponent(name))
        }
        try write(rows(perClass: trainPerClass, target: false, &rng), labelled: true, to: "source-train.csv")
        try write(rows(perClass: testPerClass, target: false, &rng), labelled: true, to: "source-test.csv")
        try write(rows(perClass: targetPerClass, target: true, &rng), labelled: false, to: "target-unlabelled.csv")
        try write(rows(perClass: testPerClass, target: true, &rng), labelled: true, to: "target-test.csv")

        // The "pretrained" backbone: fc0 reads the latent coordinates (and mixtures of them), BatchNorm
        // statistics come from a large source sample, fc1 mixes randomly.
        var brng = RNG(seed: seed &+ 7)
        let net = ToyBackbone(inputs: d, rng: &brng)
        var w0 = [Float](repeating: 0, count: 16 * d)
        for o in 0..<16 {
            let mix = (0..<l).map { i in o < l ? (i == o ? 1.0 : 0.0) : Double(brng.normal()) / Double(l).squareRoot() }
            for j in 0..<d { w0[o * d + j] = Float((0..<l).reduce(0) { $0 + mix[$1] * basis[$1][j] }) }
        }
        net.fc0.weight.value = Tensor(shape: [16, d], scalars: w0)
        net.fc0.bias!.value = Tensor(zeros: [16])
        let big = rows(perClass: 400, target: false, &rng).map(\.1)
        let x = Variable(Tensor(shape: [big.count, d], scalars: big.flatMap { $0 }))
        for bn in [net.bn0, net.bn1] { bn.momentum = nil; bn.resetRunningStatistics() }
        net.train(true)
        _ = Autograd.noGrad { net.forward(net.forward(x.value, through: 2), from: 2) }
        net.train(false)
        try FileManager.default.createDirectory(at: models.appendingPathComponent("toy"), withIntermediateDirectories: true)
        try SafeTensors.write(net.stateDict(), to: models.appendingPathComponent("toy/backbone.safetensors"))
        // A labelled target pool for few-label adaptation (`adapt --target-labelled`), drawn last so that every
        // file above is the same with or without it.
        try write(rows(perClass: testPerClass, target: true, &rng), labelled: true, to: "target-labelled.csv")
    }
}
