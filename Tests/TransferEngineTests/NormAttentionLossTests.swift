import XCTest
@testable import TransferEngine

/// Softmax, LayerNorm, BatchNorm, attention, embedding, dropout and losses: gradient checks, plus comparisons with
/// PyTorch 1.13 through Golden/norm_attention.json (made by Golden/make_norm_attention_golden.py).
final class NormAttentionLossTests: XCTestCase {
    var rng = RNG(seed: 11)

    // MARK: Golden file

    static let golden: [String: Any] = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Golden/norm_attention.json")
        guard let data = try? Data(contentsOf: url),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            fatalError("cannot read \(url.path); run make_norm_attention_golden.py")
        }
        return object
    }()

    func section(_ path: String...) -> [String: Any] {
        var d = Self.golden
        for key in path { d = d[key] as! [String: Any] }
        return d
    }

    func tensor(_ d: [String: Any], _ key: String) -> Tensor {
        let e = d[key] as! [String: Any]
        return Tensor(shape: (e["shape"] as! [NSNumber]).map(\.intValue),
                      scalars: (e["values"] as! [NSNumber]).map(\.floatValue))
    }

    func number(_ d: [String: Any], _ key: String) -> Float { (d[key] as! NSNumber).floatValue }

    /// Asserts |a - b| <= tolerance elementwise; prints and returns the worst difference.
    @discardableResult
    func expectClose(_ a: Tensor, _ b: Tensor, _ tolerance: Float, _ what: String,
                     file: StaticString = #filePath, line: UInt = #line) -> Float {
        XCTAssertEqual(a.count, b.count, "\(what): element count", file: file, line: line)
        guard a.count == b.count else { return .infinity }
        let worst = a.maxAbsDifference(b)
        print("golden \(what): worst difference \(worst) (tolerance \(tolerance))")
        XCTAssertLessThanOrEqual(worst, tolerance, what, file: file, line: line)
        return worst
    }

    func report(_ what: String, _ worst: Double) { print("gradcheck \(what): worst relative error \(worst)") }

    // MARK: Softmax

    func testSoftmaxGradients() {
        let x = randomInput([3, 5], &rng, scale: 2)
        report("softmax", checkGradients([x]) { x.softmax() })
        report("logSoftmax", checkGradients([x]) { x.logSoftmax() })
        let x3 = randomInput([2, 4, 3], &rng)
        report("softmax axis 1", checkGradients([x3]) { x3.softmax(axis: 1) })
        report("logSoftmax axis 1", checkGradients([x3]) { x3.logSoftmax(axis: 1) })
    }

    func testSoftmaxMatchesTorch() {
        let g = section("softmax")
        let x = Variable(tensor(g, "x")), x3 = Variable(tensor(g, "x3"))
        expectClose(x.softmax().value, tensor(g, "softmax"), 1e-6, "softmax (logits ~30)")
        expectClose(x.logSoftmax().value, tensor(g, "log_softmax"), 2e-5, "logSoftmax (logits ~30)")
        expectClose(x3.softmax(axis: 1).value, tensor(g, "softmax_axis1"), 1e-6, "softmax axis 1")
        expectClose(x3.logSoftmax(axis: 1).value, tensor(g, "log_softmax_axis1"), 1e-5, "logSoftmax axis 1")
        XCTAssertFalse(x.logSoftmax().value.scalars.contains { !$0.isFinite })
    }

    // MARK: LayerNorm

    func testLayerNormGradients() {
        let x = randomInput([3, 2, 5], &rng, scale: 1.5), w = randomInput([5], &rng), b = randomInput([5], &rng)
        report("layerNorm", checkGradients([x, w, b]) { x.layerNorm(weight: w, bias: b, eps: 1e-5) })
        report("layerNorm without affine", checkGradients([x]) { x.layerNorm(weight: nil, bias: nil) })
    }

    func testLayerNormMatchesTorch() throws {
        let g = section("layer_norm")
        let norm = LayerNorm(dimension: 8, eps: number(g, "eps"))
        try norm.load(["weight": tensor(g, "weight"), "bias": tensor(g, "bias")])
        let x = Variable(tensor(g, "x"), requiresGrad: true)
        let y = norm(x)
        expectClose(y.value, tensor(g, "y"), 1e-5, "layerNorm y")
        (y * Variable(tensor(g, "upstream"))).sum().backward()
        expectClose(x.grad!, tensor(g, "dx"), 1e-4, "layerNorm dx")
        expectClose(norm.weight.grad!, tensor(g, "dweight"), 1e-4, "layerNorm dweight")
        expectClose(norm.bias.grad!, tensor(g, "dbias"), 1e-4, "layerNorm dbias")
    }

    // MARK: BatchNorm

    func testBatchNormTrainingGradients() {
        let x = randomInput([2, 2, 3, 4], &rng, scale: 1.5), w = randomInput([4], &rng), b = randomInput([4], &rng)
        let rm = Variable(Tensor(zeros: [4])), rv = Variable(Tensor(shape: [4], repeating: 1))
        report("batchNorm training", checkGradients([x, w, b]) {
            x.batchNorm(weight: w, bias: b, runningMean: rm, runningVariance: rv, useBatchStatistics: true)
        })
        let x2 = randomInput([6, 3], &rng)
        report("batchNorm training [N, C], no affine", checkGradients([x2]) {
            x2.batchNorm(weight: nil, bias: nil, runningMean: rm.rows(0..<3), runningVariance: rv.rows(0..<3),
                         useBatchStatistics: true)
        })
    }

    func testBatchNormEvalGradients() {
        let x = randomInput([2, 2, 2, 3], &rng), w = randomInput([3], &rng), b = randomInput([3], &rng)
        let rm = Variable(rng.normalTensor([3])), rv = Variable(rng.uniformTensor([3], 0.5, 2))
        report("batchNorm eval", checkGradients([x, w, b]) {
            x.batchNorm(weight: w, bias: b, runningMean: rm, runningVariance: rv, useBatchStatistics: false)
        })
    }

    /// A training batch with one value per channel (one sample, no spatial axes) is normalised with the running
    /// statistics and updates none: its unbiased variance is 0/0 (it made the running variance, then every
    /// prediction, NaN).
    func testBatchNormOfOneSampleInTrainingUsesTheRunningStatistics() {
        let x = randomInput([1, 3], &rng), w = randomInput([3], &rng), b = randomInput([3], &rng)
        let rm = Variable(rng.normalTensor([3])), rv = Variable(rng.uniformTensor([3], 0.5, 2))
        let before = (rm.value.scalars, rv.value.scalars)
        let trained = x.batchNorm(weight: w, bias: b, runningMean: rm, runningVariance: rv, useBatchStatistics: true, updateFactor: 0.1)
        let evaluated = x.batchNorm(weight: w, bias: b, runningMean: rm, runningVariance: rv, useBatchStatistics: false)
        XCTAssertTrue(trained.value.scalars.allSatisfy(\.isFinite))
        XCTAssertEqual(trained.value.scalars, evaluated.value.scalars)
        XCTAssertEqual(rm.value.scalars, before.0)
        XCTAssertEqual(rv.value.scalars, before.1)
    }

    func testBatchNormMatchesTorch() throws {
        let g = section("batch_norm")
        let state = ["weight": tensor(g, "weight"), "bias": tensor(g, "bias"),
                     "running_mean": tensor(g, "running_mean"), "running_var": tensor(g, "running_var")]
        let upstream = Variable(tensor(g, "upstream"))
        for key in ["m0_1", "m0_01"] {
            let step = section("batch_norm", key)
            let bn = BatchNorm(channels: 4, eps: number(g, "eps"), momentum: number(step, "momentum"))
            try bn.load(state)
            let x = Variable(tensor(g, "x"), requiresGrad: true)
            let y = bn(x)
            expectClose(y.value, tensor(step, "y"), 1e-5, "batchNorm train \(key) y")
            expectClose(bn.runningMean.value, tensor(step, "running_mean"), 1e-6, "batchNorm \(key) running_mean")
            expectClose(bn.runningVariance.value, tensor(step, "running_var"), 1e-5, "batchNorm \(key) running_var")
            guard key == "m0_1" else { continue }
            (y * upstream).sum().backward()
            expectClose(x.grad!, tensor(step, "dx"), 1e-4, "batchNorm train dx")
            expectClose(bn.weight.grad!, tensor(step, "dweight"), 1e-4, "batchNorm train dweight")
            expectClose(bn.bias.grad!, tensor(step, "dbias"), 1e-4, "batchNorm train dbias")

            let ev = section("batch_norm", "eval")
            bn.train(false)
            bn.zeroGrad(); x.zeroGrad()
            let trained = bn.stateDict()
            let ye = bn(x)
            expectClose(ye.value, tensor(ev, "y"), 1e-5, "batchNorm eval y")
            (ye * upstream).sum().backward()
            expectClose(x.grad!, tensor(ev, "dx"), 1e-4, "batchNorm eval dx")
            expectClose(bn.weight.grad!, tensor(ev, "dweight"), 1e-4, "batchNorm eval dweight")
            expectClose(bn.bias.grad!, tensor(ev, "dbias"), 1e-4, "batchNorm eval dbias")
            XCTAssertEqual(bn.stateDict(), trained, "eval leaves the running statistics alone")
        }
        // AdaBN-style re-estimation: reset, cumulative average over two batches.
        let cumulative = section("batch_norm", "cumulative")
        let bn = BatchNorm(channels: 4, momentum: nil)
        try bn.load(state)
        bn.resetRunningStatistics()
        Autograd.noGrad {
            _ = bn(Variable(tensor(g, "x")))
            _ = bn(Variable(tensor(cumulative, "x2")))
        }
        XCTAssertEqual(bn.batchesTracked, 2)
        expectClose(bn.runningMean.value, tensor(cumulative, "running_mean"), 1e-6, "batchNorm cumulative running_mean")
        expectClose(bn.runningVariance.value, tensor(cumulative, "running_var"), 1e-5, "batchNorm cumulative running_var")
    }

    /// Big enough for the threaded column sums and row loops: compared with plain Double loops.
    func testBatchNormThreadedPathsMatchNaiveSums() {
        let c = 32, rows = 8 * 16 * 16
        let x = Variable(rng.normalTensor([8, 16, 16, c], std: 2) + 1, requiresGrad: true)
        let w = Variable(rng.normalTensor([c]), requiresGrad: true), b = Variable(rng.normalTensor([c]), requiresGrad: true)
        let g = rng.normalTensor(x.shape)
        let y = x.batchNorm(weight: w, bias: b, runningMean: Variable(Tensor(zeros: [c])),
                            runningVariance: Variable(Tensor(shape: [c], repeating: 1)), useBatchStatistics: true)
        y.backward(seed: g)
        var worst: Double = 0
        for j in 0..<c {
            var m = 0.0, v = 0.0, sg = 0.0, sgx = 0.0
            for r in 0..<rows { m += Double(x.value[flat: r * c + j]) }
            m /= Double(rows)
            for r in 0..<rows { let d = Double(x.value[flat: r * c + j]) - m; v += d * d }
            let rstd = 1 / (v / Double(rows) + 1e-5).squareRoot()
            for r in 0..<rows {
                let xh = (Double(x.value[flat: r * c + j]) - m) * rstd
                worst = max(worst, abs(xh * Double(w.value[flat: j]) + Double(b.value[flat: j]) - Double(y.value[flat: r * c + j])))
                sg += Double(g[flat: r * c + j]); sgx += Double(g[flat: r * c + j]) * xh
            }
            worst = max(worst, abs(sg - Double(b.grad![flat: j])) / max(1, abs(sg)), abs(sgx - Double(w.grad![flat: j])) / max(1, abs(sgx)))
            for r in stride(from: j, to: rows, by: 97) {
                let xh = (Double(x.value[flat: r * c + j]) - m) * rstd
                let dx = Double(w.value[flat: j]) * rstd * (Double(g[flat: r * c + j]) - sg / Double(rows) - xh * sgx / Double(rows))
                worst = max(worst, abs(dx - Double(x.grad![flat: r * c + j])))
            }
        }
        print("threaded batchNorm vs naive: worst difference \(worst)")
        XCTAssertLessThan(worst, 1e-4)
    }

    func testFrozenBatchNormStatisticsStayPut() {
        let model = Module()
        let bn = model.child("block", BatchNorm(channels: 3))
        let other = model.child("head", BatchNorm(channels: 3))
        bn.runningMean.value = rng.normalTensor([3])
        bn.runningVariance.value = rng.uniformTensor([3], 0.5, 2)
        XCTAssertEqual(model.batchNormLayers().map(\.name), ["block", "head"])
        XCTAssertEqual(model.batchNormLayers(under: ["block"]).map(\.name), ["block"])
        for (_, layer) in model.batchNormLayers(under: ["block"]) { layer.frozenStatistics = true }
        XCTAssertTrue(model.isTraining)
        let x = Variable(rng.normalTensor([4, 2, 2, 3]))
        let before = bn.stateDict()
        let frozen = bn(x).value
        XCTAssertEqual(bn.stateDict(), before, "frozen statistics must not move")
        XCTAssertEqual(bn.batchesTracked, 0)
        bn.train(false)
        XCTAssertEqual(bn(x).value, frozen, "frozen = eval statistics")
        _ = other(x)
        XCTAssertNotEqual(other.runningMean.value, Tensor(zeros: [3]), "unfrozen BatchNorm still updates")
        bn.resetRunningStatistics()
        XCTAssertEqual(bn.runningMean.value, Tensor(zeros: [3]))
        XCTAssertEqual(bn.runningVariance.value, Tensor(shape: [3], repeating: 1))
    }

    // MARK: Embedding and dropout

    func testEmbeddingGradients() {
        let table = randomInput([5, 3], &rng)
        let ids = [4, 0, 2, 4, 1, 4]
        let y = Variable.embedding(ids: ids, table: table, shape: [2, 3])
        XCTAssertEqual(y.shape, [2, 3, 3])
        XCTAssertEqual(Array(y.value.scalars[0..<3]), Array(table.value.scalars[12..<15]))
        report("embedding", checkGradients([table]) { Variable.embedding(ids: ids, table: table, shape: [2, 3]) })
        var r = RNG(seed: 3)
        let layer = Embedding(count: 7, dimension: 4, rng: &r)
        XCTAssertEqual(layer([1, 2]).shape, [2, 4])
        XCTAssertEqual(layer.namedParameters().map(\.name), ["weight"])
    }

    func testDropout() {
        let x = randomInput([40, 50], &rng)
        var r = RNG(seed: 5)
        XCTAssertTrue(x.dropout(rate: 0.3, rng: &r, training: false) === x)
        XCTAssertEqual(r, RNG(seed: 5), "no draw in evaluation")
        let y = x.dropout(rate: 0.3, rng: &r, training: true)
        var zeros = 0
        for i in 0..<x.value.count {
            if y.value[flat: i] == 0 { zeros += 1 } else {
                XCTAssertEqual(y.value[flat: i], x.value[flat: i] / 0.7, accuracy: 1e-5)
            }
        }
        XCTAssertEqual(Double(zeros) / 2000, 0.3, accuracy: 0.04)
        var again = RNG(seed: 5)
        XCTAssertEqual(x.dropout(rate: 0.3, rng: &again, training: true).value, y.value, "same seed, same mask")
        let small = randomInput([4, 5], &rng)
        report("dropout", checkGradients([small]) {
            var fixed = RNG(seed: 9)  // the same mask on every evaluation
            return small.dropout(rate: 0.4, rng: &fixed, training: true)
        })
        let module = Dropout(rate: 0.5)
        module.train(false)
        XCTAssertTrue(module(x, rng: &r) === x)
    }

    // MARK: Attention

    func testAttentionGradients() {
        let q = randomInput([2, 4, 6], &rng), k = randomInput([2, 4, 6], &rng), v = randomInput([2, 4, 6], &rng)
        let valid = Tensor(shape: [2, 4], scalars: [1, 1, 0, 1, 1, 1, 1, 0])
        report("attention with padding", checkGradients([q, k, v]) {
            Variable.scaledDotProductAttention(query: q, key: k, value: v, heads: 2, validKeys: valid)
        })
        report("attention, 3 heads, no mask", checkGradients([q, k, v]) {
            Variable.scaledDotProductAttention(query: q, key: k, value: v, heads: 3)
        })
        let kc = randomInput([2, 3, 6], &rng), vc = randomInput([2, 3, 6], &rng)
        report("attention Tq != Tk", checkGradients([q, kc, vc]) {
            Variable.scaledDotProductAttention(query: q, key: kc, value: vc, heads: 2,
                                               validKeys: Tensor(shape: [2, 3], scalars: [1, 0, 1, 1, 1, 1]))
        })
        // Self-attention through the module: every Linear weight receives a gradient.
        var r = RNG(seed: 4)
        let attention = MultiHeadSelfAttention(dimension: 6, heads: 2, rng: &r)
        XCTAssertEqual(attention.namedParameters().map(\.name),
                       ["query.weight", "query.bias", "key.weight", "key.bias", "value.weight", "value.bias",
                        "out.weight", "out.bias"])
        let x = randomInput([2, 4, 6], &rng)
        report("self-attention module", checkGradients([x, attention.query.weight, attention.key.weight,
                                                        attention.value.bias!, attention.out.weight]) {
            attention(x, validKeys: valid)
        })
    }

    func testPaddedKeysGetNoWeight() {
        let q = rng.normalTensor([1, 3, 4]), k = rng.normalTensor([1, 3, 4])
        var v = rng.normalTensor([1, 3, 4])
        let valid = Tensor(shape: [1, 3], scalars: [1, 1, 0])
        func run() -> Tensor {
            Variable.scaledDotProductAttention(query: Variable(q), key: Variable(k), value: Variable(v), heads: 2,
                                               validKeys: valid).value
        }
        let before = run()
        for j in 8..<12 { v[flat: j] = 100 }  // the padded position's values
        XCTAssertEqual(run(), before)
    }

    func testPackedAttentionEqualsPaddedAttentionOnRealTokens() {
        let lengths = [3, 1, 5, 2], t = 5, width = 8, heads = 2
        let q = rng.normalTensor([4, t, width]), k = rng.normalTensor([4, t, width]), v = rng.normalTensor([4, t, width])
        var valid = Tensor(zeros: [4, t])
        for (b, l) in lengths.enumerated() { for j in 0..<l { valid[flat: b * t + j] = 1 } }
        let padded = Variable.scaledDotProductAttention(query: Variable(q), key: Variable(k), value: Variable(v),
                                                        heads: heads, validKeys: valid)
        /// The first `lengths[b]` positions of every sequence of [B, T, width], one after the other.
        func pack(_ x: Tensor) -> Tensor {
            let rows = x.reshaped([x.shape[0] * t, width])
            return Tensor.concatenateRows(lengths.enumerated().map { rows.rows($0 * t..<$0 * t + $1) })
        }
        let packed = Variable.packedSelfAttention(query: Variable(pack(q)), key: Variable(pack(k)),
                                                  value: Variable(pack(v)), heads: heads, lengths: lengths)
        let expected = pack(padded.value)
        XCTAssertEqual(packed.shape, [11, width])
        XCTAssertLessThan(packed.value.maxAbsDifference(expected), 1e-6)
        // Without recording (scratch memory) the result is identical.
        let inference = Autograd.noGrad {
            Variable.packedSelfAttention(query: Variable(q.reshaped([20, width]).rows(0..<11)), key: Variable(k.reshaped([20, width]).rows(0..<11)),
                                         value: Variable(v.reshaped([20, width]).rows(0..<11)), heads: heads, lengths: [3, 1, 5, 2])
        }
        let recorded = Variable.packedSelfAttention(query: Variable(q.reshaped([20, width]).rows(0..<11), requiresGrad: true),
                                                    key: Variable(k.reshaped([20, width]).rows(0..<11)),
                                                    value: Variable(v.reshaped([20, width]).rows(0..<11)), heads: heads,
                                                    lengths: [3, 1, 5, 2])
        XCTAssertEqual(inference.value, recorded.value)
    }

    func testAttentionMatchesTorch() throws {
        let g = section("attention")
        let heads = (g["heads"] as! NSNumber).intValue
        let y = Variable.scaledDotProductAttention(query: Variable(tensor(g, "q")), key: Variable(tensor(g, "k")),
                                                   value: Variable(tensor(g, "v")), heads: heads,
                                                   validKeys: tensor(g, "valid"))
        expectClose(y.value, tensor(g, "y"), 1e-5, "attention op")
        let m = section("attention", "module")
        var r = RNG(seed: 1)
        let attention = MultiHeadSelfAttention(dimension: 6, heads: heads, rng: &r)
        var state: [String: Tensor] = [:]
        for name in ["query", "key", "value", "out"] {
            for p in ["weight", "bias"] { state["\(name).\(p)"] = tensor(m, "\(name).\(p)") }
        }
        try attention.load(state)
        let ym = attention(Variable(tensor(m, "x")), validKeys: tensor(g, "valid"))
        expectClose(ym.value, tensor(m, "y"), 1e-5, "MultiHeadSelfAttention vs nn.MultiheadAttention")
    }

    // MARK: Losses

    func testLossGradients() {
        let logits = randomInput([5, 4], &rng, scale: 2)
        let labels = [2, 0, 3, 3, 1], weights: [Float] = [0.5, 2, 1, 1.5]
        report("crossEntropy", checkGradients([logits]) { Variable.crossEntropy(logits: logits, labels: labels) })
        report("crossEntropy smoothed", checkGradients([logits]) {
            Variable.crossEntropy(logits: logits, labels: labels, labelSmoothing: 0.1)
        })
        report("crossEntropy weighted + smoothed", checkGradients([logits]) {
            Variable.crossEntropy(logits: logits, labels: labels, labelSmoothing: 0.2, classWeights: weights)
        })
        let z = randomInput([4, 3], &rng, scale: 3)
        let t = rng.uniformTensor([4, 3], 0, 1)
        report("binaryCrossEntropy", checkGradients([z]) { Variable.binaryCrossEntropy(logits: z, targets: t) })
        let a = randomInput([3, 4], &rng), b = randomInput([3, 4], &rng)
        report("meanSquaredError", checkGradients([a, b]) { Variable.meanSquaredError(a, b) })
    }

    func testLossesMatchTorch() {
        let ce = section("cross_entropy")
        let labels = (ce["labels"] as! [NSNumber]).map(\.intValue)
        let weights = (ce["class_weights"] as! [NSNumber]).map(\.floatValue)
        for (key, smoothing, w) in [("plain", Float(0), nil), ("smooth", 0.1, nil), ("weighted", 0, weights),
                                    ("weighted_smooth", 0.1, weights)] as [(String, Float, [Float]?)] {
            let logits = Variable(tensor(ce, "logits"), requiresGrad: true)
            let loss = Variable.crossEntropy(logits: logits, labels: labels, labelSmoothing: smoothing, classWeights: w)
            XCTAssertEqual(loss.shape, [])
            let expected = section("cross_entropy", key)
            expectClose(loss.value, Tensor(number(expected, "loss")), 1e-5, "crossEntropy \(key) loss")
            loss.backward()
            expectClose(logits.grad!, tensor(expected, "dlogits"), 1e-6, "crossEntropy \(key) dlogits")
        }
        let bce = section("bce")
        let z = Variable(tensor(bce, "logits"), requiresGrad: true)
        let loss = Variable.binaryCrossEntropy(logits: z, targets: tensor(bce, "targets"))
        expectClose(loss.value, Tensor(number(bce, "loss")), 1e-5, "binaryCrossEntropy loss (logits up to ±40)")
        loss.backward()
        expectClose(z.grad!, tensor(bce, "dlogits"), 1e-6, "binaryCrossEntropy dlogits")
        let mse = section("mse")
        let a = Variable(tensor(mse, "a"), requiresGrad: true), b = Variable(tensor(mse, "b"), requiresGrad: true)
        let l = Variable.meanSquaredError(a, b)
        expectClose(l.value, Tensor(number(mse, "loss")), 1e-5, "meanSquaredError loss")
        l.backward()
        expectClose(a.grad!, tensor(mse, "da"), 1e-6, "meanSquaredError da")
        expectClose(b.grad!, tensor(mse, "db"), 1e-6, "meanSquaredError db")
    }
}
