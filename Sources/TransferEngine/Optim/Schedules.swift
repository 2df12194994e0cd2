import Foundation

/// A learning rate as a function of training progress.
///
/// `step` counts optimizer steps from 0; `totalSteps` is the length of the run. Set it on the optimizer before
/// each update: `optimizer.step(lr: schedule.learningRate(step: t, totalSteps: T))`. Schedules compute in
/// Double and round once, so their values match PyTorch's schedulers to Float precision.
public protocol LearningRateSchedule {
    func learningRate(step: Int, totalSteps: Int) -> Float
}

/// The same rate throughout.
public struct ConstantSchedule: LearningRateSchedule {
    public var baseLR: Float
    public init(_ baseLR: Float) { self.baseLR = baseLR }
    public func learningRate(step: Int, totalSteps: Int) -> Float { baseLR }
}

/// baseLR * gamma^(step / every), as PyTorch's StepLR.
public struct StepDecaySchedule: LearningRateSchedule {
    public var baseLR: Float
    public var every: Int
    public var gamma: Float

    public init(baseLR: Float, every: Int, gamma: Float = 0.1) {
        precondition(every > 0, "StepDecaySchedule: every must be positive, got \(every)")
        self.baseLR = baseLR
        self.every = every
        self.gamma = gamma
    }

    public func learningRate(step: Int, totalSteps: Int) -> Float {
        Float(Double(baseLR) * pow(Double(gamma), Double(max(0, step) / every)))
    }
}

/// Linear warmup from baseLR/warmupSteps to baseLR over `warmupSteps` steps, then a half cosine from baseLR
/// down to `floor`, reached on the last step.
///
/// Warmup starts at one warmup step's worth rather than at zero, so no step is wasted with a zero rate.
public struct WarmupCosineSchedule: LearningRateSchedule {
    public var baseLR: Float
    public var warmupSteps: Int
    public var floor: Float

    public init(baseLR: Float, warmupSteps: Int, floor: Float = 0) {
        precondition(warmupSteps >= 0, "WarmupCosineSchedule: warmupSteps \(warmupSteps) is negative")
        self.baseLR = baseLR
        self.warmupSteps = warmupSteps
        self.floor = floor
    }

    public func learningRate(step: Int, totalSteps: Int) -> Float {
        let lr = Double(baseLR), low = Double(floor)
        if step < warmupSteps { return Float(lr * Double(step + 1) / Double(warmupSteps)) }
        let span = max(1, totalSteps - 1 - warmupSteps)
        let progress = min(1, max(0, Double(step - warmupSteps) / Double(span)))
        return Float(low + (lr - low) * 0.5 * (1 + cos(Double.pi * progress)))
    }
}

/// PyTorch's OneCycleLR (two phases, cosine annealing): from maxLR/divFactor up to maxLR over the first
/// `pctStart` of the run, then down to maxLR/(divFactor*finalDivFactor) on the last step.
/// (Momentum is not cycled: the optimizers here keep their betas fixed.)
public struct OneCycleSchedule: LearningRateSchedule {
    public var maxLR: Float
    public var pctStart: Double
    public var divFactor: Double
    public var finalDivFactor: Double

    public init(maxLR: Float, pctStart: Double = 0.3, divFactor: Double = 25, finalDivFactor: Double = 1e4) {
        precondition(pctStart > 0 && pctStart < 1, "OneCycleSchedule: pctStart \(pctStart) must be in (0, 1)")
        self.maxLR = maxLR
        self.pctStart = pctStart
        self.divFactor = divFactor
        self.finalDivFactor = finalDivFactor
    }

    /// Cosine from `start` (pct 0) to `end` (pct 1).
    private static func anneal(_ start: Double, _ end: Double, _ pct: Double) -> Double {
        end + (start - end) / 2 * (cos(Double.pi * pct) + 1)
    }

    public func learningRate(step: Int, totalSteps: Int) -> Float {
        let peak = Double(maxLR), initial = peak / divFactor, minimum = initial / finalDivFactor
        let t = Double(min(max(0, step), max(0, totalSteps - 1)))
        // Same phase boundaries as PyTorch: the peak is at step pctStart*T - 1, the end at step T - 1.
        let peakStep = pctStart * Double(totalSteps) - 1, endStep = Double(totalSteps - 1)
        if t <= peakStep {
            return Float(Self.anneal(initial, peak, peakStep > 0 ? t / peakStep : 1))
        }
        let span = endStep - peakStep
        return Float(Self.anneal(peak, minimum, span > 0 ? (t - peakStep) / span : 1))
    }
}

/// lr0 * (1 + alpha*p)^(-beta) with p = step / (totalSteps - 1) in [0, 1]: the annealing of Ganin et al.'s DANN
/// (alpha 10, beta 0.75).
public struct InverseDecaySchedule: LearningRateSchedule {
    public var baseLR: Float
    public var alpha: Double
    public var beta: Double

    public init(baseLR: Float, alpha: Double = 10, beta: Double = 0.75) {
        self.baseLR = baseLR
        self.alpha = alpha
        self.beta = beta
    }

    public func learningRate(step: Int, totalSteps: Int) -> Float {
        let p = min(1, max(0, Double(step) / Double(max(1, totalSteps - 1))))
        return Float(Double(baseLR) * pow(1 + alpha * p, -beta))
    }
}
