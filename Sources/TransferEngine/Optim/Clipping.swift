import Foundation

/// Scales the gradients of `params` so that their global L2 norm is at most `maxNorm` (PyTorch's
/// clip_grad_norm_: coefficient maxNorm / (norm + 1e-6), clamped to 1). Parameters without a gradient are
/// ignored. Returns the norm before clipping.
///
/// The norm is accumulated in Double, so it does not overflow or lose small gradients on large models. A
/// non-finite norm leaves the gradients untouched (PyTorch would scale them all to NaN); the caller sees it
/// in the returned value and can skip the step.
@discardableResult
public func clipGradientNorm(_ params: [Variable], maxNorm: Float) -> Float {
    precondition(maxNorm > 0, "clipGradientNorm: maxNorm \(maxNorm) must be positive")
    var seen = Set<ObjectIdentifier>()
    let withGradient = params.filter { $0.grad != nil && seen.insert(ObjectIdentifier($0)).inserted }
    var total = 0.0
    for v in withGradient {
        v.grad!.withUnsafeBufferPointer { g in
            var s = 0.0
            for x in g { s += Double(x) * Double(x) }
            total += s
        }
    }
    let norm = total.squareRoot()
    guard norm.isFinite else { return Float(norm) }
    let coefficient = Float(Double(maxNorm) / (norm + 1e-6))
    if coefficient < 1 {
        for v in withGradient { v.grad!.scaleInPlace(coefficient) }
    }
    return Float(norm)
}
