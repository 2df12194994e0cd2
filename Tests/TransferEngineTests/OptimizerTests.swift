import XCTest
@testable import TransferEngine

/// Optimizers, schedules and clipping against PyTorch 1.13 through Golden/optim.json (made by
/// Golden/make_optim_golden.py), plus state export/import and the trainable-only rules.
final class OptimizerTests: XCTestCase {
    // MARK: Golden file

    struct Named: Decodable { let shape: [Int]; let values: [Float] }
    struct Run: Decodable { let steps: [[String: [Double]]]; let state: [String: [Double]] }
    struct Schedule: Decodable { let total: Int; let lrs: [Double] }
    struct Clip: Decodable {
        let max_norm: Float; let grads: [String: [Float]]; let norm: Double; let clipped: [String: [Double]]
    }
    struct Golden: Decodable {
        let `init`: [String: Named]
        let grads: [[String: [Float]]]
        let lr: Float
        let sgd_nesterov: Run, sgd_dampened: Run, adamw: Run
        let onecycle: Schedule, onecycle_short: Schedule, steplr: Schedule
        let clip: Clip
    }

    static let golden: Golden = {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/optim.json")
        return try! JSONDecoder().decode(Golden.self, from: Data(contentsOf: url))
    }()

    /// Worst relative difference so far, printed by each golden test.
    var worst = 0.0

    /// Relative comparison, elementwise or (`normwise`) relative to the largest expected magnitude: a parameter
    /// that an update brings near zero keeps the rounding error of the larger terms that cancelled.
    func assertClose(_ actual: [Float], _ expected: [Double], _ what: String, tolerance: Double = 1e-6,
                     normwise: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.count, expected.count, "\(what): count", file: file, line: line)
        let scale = expected.map(abs).max() ?? 0
        for (a, e) in zip(actual, expected) {
            let rel = abs(Double(a) - e) / max(normwise ? scale : abs(e), 1e-30)
            worst = max(worst, rel)
            if rel > tolerance {
                XCTFail("\(what): \(a) vs PyTorch \(e) (relative \(rel))", file: file, line: line)
                return
            }
        }
    }

    /// Parameters w, b (trainable) and frozen (never a gradient), from the golden initial values.
    func goldenParameters() -> [String: Variable] {
        var out: [String: Variable] = [:]
        for (k, v) in Self.golden.`init` {
            out[k] = Variable(Tensor(shape: v.shape, scalars: v.values), requiresGrad: k != "frozen")
        }
        return out
    }

    /// The golden groups: [w, frozen] at the base rate, [b] at a tenth.
    func goldenGroups(_ p: [String: Variable]) -> [ParameterGroup] {
        [ParameterGroup(named: [("w", p["w"]!), ("frozen", p["frozen"]!)]),
         ParameterGroup(named: [("b", p["b"]!)], lrMultiplier: 0.1)]
    }

    func setGradients(_ p: [String: Variable], step: Int) {
        for (k, g) in Self.golden.grads[step] { p[k]!.grad = Tensor(shape: p[k]!.shape, scalars: g) }
    }

    func check(_ optimizer: Optimizer, _ p: [String: Variable], against run: Run, stateKeys: [String: String]) {
        worst = 0
        let frozen = p["frozen"]!.value
        for (t, expected) in run.steps.enumerated() {
            optimizer.zeroGrad()
            setGradients(p, step: t)
            optimizer.step()
            for (k, values) in expected { assertClose(p[k]!.value.scalars, values, "step \(t + 1) parameter \(k)", normwise: true) }
        }
        XCTAssertEqual(p["frozen"]!.value, frozen, "a parameter without gradient must not move")
        let state = optimizer.stateDict()
        for (ours, theirs) in stateKeys {
            for k in ["w", "b"] {
                guard let t = state[ours + k] else { XCTFail("no state '\(ours + k)'"); continue }
                assertClose(t.scalars, run.state[theirs + "." + k]!, "state \(ours + k)", normwise: true)
            }
        }
        XCTAssertNil(state.keys.first { $0.hasSuffix("frozen") }, "no state for a parameter that never had a gradient")
        print("\(type(of: optimizer)) vs PyTorch: worst relative difference \(worst)")
    }

    func testSGDNesterovWithWeightDecayMatchesPyTorch() {
        let p = goldenParameters()
        let sgd = SGD(groups: goldenGroups(p), learningRate: Self.golden.lr, momentum: 0.9, nesterov: true, weightDecay: 1e-2)
        check(sgd, p, against: Self.golden.sgd_nesterov, stateKeys: ["sgd.momentum.": "momentum_buffer"])
        XCTAssertEqual(sgd.stateCount, 2)
        XCTAssertEqual(sgd.stateDict()["sgd.step"]?.scalar, 4)
    }

    func testSGDDampenedMomentumMatchesPyTorch() {
        let p = goldenParameters()
        let sgd = SGD(groups: goldenGroups(p), learningRate: Self.golden.lr, momentum: 0.9, dampening: 0.1)
        check(sgd, p, against: Self.golden.sgd_dampened, stateKeys: ["sgd.momentum.": "momentum_buffer"])
    }

    func testAdamWMatchesPyTorch() {
        let p = goldenParameters()
        let adam = AdamW(groups: goldenGroups(p), learningRate: Self.golden.lr, weightDecay: 0.01)
        check(adam, p, against: Self.golden.adamw, stateKeys: ["adam.m.": "exp_avg", "adam.v.": "exp_avg_sq", "adam.t.": "step"])
        XCTAssertEqual(adam.stateCount, 2)
    }

    // MARK: Schedules and clipping

    func testOneCycleAndStepDecayMatchPyTorch() {
        worst = 0
        for (golden, maxLR) in [(Self.golden.onecycle, Float(0.1)), (Self.golden.onecycle_short, Float(2))] {
            let s = OneCycleSchedule(maxLR: maxLR)
            assertClose((0..<golden.total).map { s.learningRate(step: $0, totalSteps: golden.total) }, golden.lrs,
                        "OneCycle over \(golden.total) steps")
        }
        let step = StepDecaySchedule(baseLR: 1, every: 3, gamma: 0.5)
        let g = Self.golden.steplr
        assertClose((0..<g.total).map { step.learningRate(step: $0, totalSteps: g.total) }, g.lrs, "StepDecay")
        print("schedules vs PyTorch: worst relative difference \(worst)")
    }

    func testWarmupCosineInverseDecayAndConstant() {
        let s = WarmupCosineSchedule(baseLR: 1, warmupSteps: 4, floor: 0.1)
        let lrs = (0..<14).map { s.learningRate(step: $0, totalSteps: 14) }
        XCTAssertEqual(Array(lrs[0..<4]), [0.25, 0.5, 0.75, 1])
        XCTAssertEqual(lrs[4], 1, accuracy: 1e-7)
        XCTAssertEqual(lrs[13], 0.1, accuracy: 1e-7, "the floor is reached on the last step")
        // Steps 4...13 are a half cosine: the midpoint (step 8.5) sits halfway between 1 and the floor.
        XCTAssertEqual((lrs[8] + lrs[9]) / 2, 0.55, accuracy: 0.02)
        XCTAssertEqual(lrs[6] - 0.55, 0.55 - lrs[11], accuracy: 1e-6, "symmetric around the midpoint")
        for i in 4..<13 { XCTAssertGreaterThan(lrs[i], lrs[i + 1]) }

        let d = InverseDecaySchedule(baseLR: 0.01)
        XCTAssertEqual(d.learningRate(step: 0, totalSteps: 101), 0.01)
        XCTAssertEqual(d.learningRate(step: 50, totalSteps: 101), Float(0.01 * pow(6.0, -0.75)), accuracy: 1e-9)
        XCTAssertEqual(d.learningRate(step: 100, totalSteps: 101), Float(0.01 * pow(11.0, -0.75)), accuracy: 1e-9)
        XCTAssertEqual(ConstantSchedule(0.3).learningRate(step: 99, totalSteps: 100), 0.3)
    }

    func testClipGradientNormMatchesPyTorch() {
        worst = 0
        let c = Self.golden.clip
        let w = Variable(Tensor(zeros: [3, 4]), requiresGrad: true), b = Variable(Tensor(zeros: [4]), requiresGrad: true)
        let none = Variable(Tensor(zeros: [5]), requiresGrad: true)
        w.grad = Tensor(shape: [3, 4], scalars: c.grads["w"]!)
        b.grad = Tensor(shape: [4], scalars: c.grads["b"]!)
        let norm = clipGradientNorm([w, b, none], maxNorm: c.max_norm)
        assertClose([norm], [c.norm], "norm")
        assertClose(w.grad!.scalars, c.clipped["w"]!, "clipped w")
        assertClose(b.grad!.scalars, c.clipped["b"]!, "clipped b")
        XCTAssertNil(none.grad)
        // Under the limit: untouched.
        let before = w.grad!
        XCTAssertEqual(clipGradientNorm([w], maxNorm: 100), Float((before.scalars.map { Double($0 * $0) }.reduce(0, +)).squareRoot()),
                       accuracy: 1e-5)
        XCTAssertEqual(w.grad!, before)
        print("clipping vs PyTorch: worst relative difference \(worst)")
    }

    // MARK: Trainable-only updates and lazy state

    func testOnlyTrainableParametersWithGradientsAreUpdated() {
        var rng = RNG(seed: 3)
        let a = Variable(rng.normalTensor([4]), requiresGrad: true)
        let frozen = Variable(rng.normalTensor([4]), requiresGrad: true)
        let noGrad = Variable(rng.normalTensor([4]), requiresGrad: true)
        for optimizer in [AdamW(parameters: [a, frozen, noGrad], learningRate: 0.1) as Optimizer,
                          SGD(parameters: [a, frozen, noGrad], learningRate: 0.1, momentum: 0.9)] {
            frozen.requiresGrad = false
            let (a0, f0, n0) = (a.value, frozen.value, noGrad.value)
            a.grad = Tensor(shape: [4], repeating: 1)
            frozen.grad = Tensor(shape: [4], repeating: 1)  // stale gradient from before freezing
            noGrad.grad = nil
            optimizer.step()
            XCTAssertNotEqual(a.value, a0)
            XCTAssertEqual(frozen.value, f0)
            XCTAssertEqual(noGrad.value, n0)
            XCTAssertEqual(optimizer.stateDict().count, optimizer is AdamW ? 4 : 2, "state only for the updated parameter")

            // Unfreezing later allocates its state then; AdamW's bias correction starts at t = 1 for it.
            frozen.requiresGrad = true
            optimizer.step()
            XCTAssertNotEqual(frozen.value, f0)
            if optimizer is AdamW {
                XCTAssertEqual(optimizer.stateDict()["adam.t.group0.1"]?.scalar, 1)
                XCTAssertEqual(optimizer.stateDict()["adam.t.group0.0"]?.scalar, 2)
            }
            optimizer.zeroGrad()
            XCTAssertNil(a.grad)
            XCTAssertNil(frozen.grad)
        }
    }

    /// backbone.{weight,bias}, head.{weight,bias}.
    final class TwoPart: Module {
        let backbone: Linear, head: Linear
        init(rng: inout RNG) {
            backbone = Linear(inputs: 3, outputs: 4, rng: &rng)
            head = Linear(inputs: 4, outputs: 2, rng: &rng)
            super.init()
            child("backbone", backbone)
            child("head", head)
        }
        func callAsFunction(_ x: Variable) -> Variable { head(backbone(x).tanh()) }
    }

    func testParameterGroupsFromModuleUseTheirMultipliers() {
        var rng = RNG(seed: 5)
        let net = TwoPart(rng: &rng)
        let backbone = ParameterGroup(module: net, excluding: ["head"], lrMultiplier: 0.1)
        let head = ParameterGroup(module: net, prefixes: ["head"], weightDecay: 0)
        XCTAssertEqual(backbone.names, ["backbone.weight", "backbone.bias"])
        XCTAssertEqual(head.names, ["head.weight", "head.bias"])
        let sgd = SGD(groups: [backbone, head], learningRate: 0.5)
        let before = net.stateDict()
        for p in net.parameters { p.grad = Tensor(shape: p.shape, repeating: 1) }
        sgd.step()
        let after = net.stateDict()
        XCTAssertEqual(after["backbone.bias"]!.scalars, before["backbone.bias"]!.scalars.map { $0 - 0.05 })
        XCTAssertEqual(after["head.bias"]!.scalars, before["head.bias"]!.scalars.map { $0 - 0.5 })
        XCTAssertEqual(sgd.stateDict().keys.sorted(), ["sgd.step"], "no momentum, no buffers")
    }

    // MARK: Resuming

    /// Runs steps `steps` (of a 6-step run) on a fixed batch, with clipping and a schedule.
    func train(_ net: TwoPart, _ optimizer: Optimizer, steps: Range<Int>, schedule: LearningRateSchedule) {
        var rng = RNG(seed: 11)
        let x = Variable(rng.normalTensor([5, 3])), y = Variable(rng.normalTensor([5, 2]))
        for t in steps {
            optimizer.zeroGrad()
            ((net(x) - y).square()).mean().backward()
            clipGradientNorm(net.parameters, maxNorm: 0.5)
            optimizer.step(lr: schedule.learningRate(step: t, totalSteps: 6))
        }
    }

    func testResumeFromSavedStateIsBitIdentical() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("optim-resume-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let makers: [(TwoPart) -> Optimizer] = [
            { AdamW(groups: [ParameterGroup(module: $0, lrMultiplier: 0.5)], learningRate: 0.01) },
            { SGD(groups: [ParameterGroup(module: $0)], learningRate: 0.1, momentum: 0.9, nesterov: true, weightDecay: 1e-3) },
        ]
        let schedule = OneCycleSchedule(maxLR: 0.05)
        for make in makers {
            var rng = RNG(seed: 2)
            let straight = TwoPart(rng: &rng)
            train(straight, make(straight), steps: 0..<6, schedule: schedule)

            rng = RNG(seed: 2)
            let first = TwoPart(rng: &rng)
            let optimizer = make(first)
            train(first, optimizer, steps: 0..<3, schedule: schedule)
            let weights = dir.appendingPathComponent("model.safetensors"), state = dir.appendingPathComponent("optim.safetensors")
            try first.save(to: weights)
            try SafeTensors.write(optimizer.stateDict(), metadata: ["kind": "\(type(of: optimizer))"], to: state)

            // A fresh process would build everything anew from the seed-independent files.
            var other = RNG(seed: 99)
            let resumed = TwoPart(rng: &other)
            try resumed.loadWeights(from: weights)
            let again = make(resumed)
            try again.loadStateDict(SafeTensors.read(state).tensors(), source: state.path)
            XCTAssertEqual(again.stepCount, 3)
            train(resumed, again, steps: 3..<6, schedule: schedule)
            XCTAssertEqual(resumed.stateDict(), straight.stateDict(), "\(type(of: again)): resumed run differs")
        }
    }

    func testLoadStateDictRejectsForeignState() {
        let w = Variable(Tensor(zeros: [2, 2]), requiresGrad: true)
        let adam = AdamW(groups: [ParameterGroup(named: [("w", w)])])
        let good: [String: Tensor] = ["adam.step": Tensor(1), "adam.m.w": Tensor(zeros: [2, 2]),
                                      "adam.v.w": Tensor(zeros: [2, 2]), "adam.t.w": Tensor(1)]
        XCTAssertNoThrow(try adam.loadStateDict(good))
        func expect(_ state: [String: Tensor], _ problem: String, line: UInt = #line) {
            XCTAssertThrowsError(try adam.loadStateDict(state, source: "run/optim.safetensors"), line: line) { e in
                let text = "\(e)"
                XCTAssertTrue(text.hasPrefix("run/optim.safetensors: ") && text.contains(problem), text, line: line)
            }
        }
        var s = good; s["adam.m.x"] = Tensor(zeros: [2, 2]); expect(s, "unknown AdamW state 'adam.m.x'")
        s = good; s["adam.m.w"] = Tensor(zeros: [3]); expect(s, "has shape [3]")
        s = good; s["adam.step"] = nil; expect(s, "missing 'adam.step'")
        s = good; s["adam.t.w"] = Tensor(1.5); expect(s, "whole number")
        s = good; s["adam.v.w"] = nil; expect(s, "missing 'adam.v.w'")
        s = good; s["adam.m.w"] = nil; expect(s, "missing 'adam.m.w'")
        s = good; s["sgd.step"] = Tensor(1); expect(s, "unknown AdamW state 'sgd.step'")
        XCTAssertEqual(adam.stepCount, 1, "a failed load keeps the previous state")

        let sgd = SGD(groups: [ParameterGroup(named: [("w", w)])], learningRate: 0.1, momentum: 0.9)
        XCTAssertThrowsError(try sgd.loadStateDict(["sgd.step": Tensor(1), "sgd.momentum.v": Tensor(zeros: [4])]))
        XCTAssertNoThrow(try sgd.loadStateDict(["sgd.step": Tensor(2), "sgd.momentum.w": Tensor(zeros: [4])]))
        XCTAssertEqual(sgd.stateCount, 1)
    }
}
