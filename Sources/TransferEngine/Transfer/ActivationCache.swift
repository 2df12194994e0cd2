import Foundation

/// Backbone outputs kept in memory by one `TransferWorkflows` (pooled features, and the activations of the frozen
/// blocks that fine-tuning and end-to-end adaptation train on top of), keyed as the disk cache is: the samples,
/// their preprocessing and the weights that produced the outputs. The same samples through the same weights give
/// the same values, so a hit is bit-identical to running the backbone again. The least recently used entries go
/// first beyond `limitBytes`; an entry larger than that is not kept.
final class ActivationCache {
    struct Entry {
        /// One part per sample (pooled features: one part, the whole set's rows).
        var parts: [Activation.Part]
        var rowsPerSample: Int
        var bytes: Int {
            parts.reduce(0) { $0 + $1.rows.count * MemoryLayout<Float>.size + ($1.ids?.count ?? 0) * MemoryLayout<Int>.size }
        }
    }

    let limitBytes: Int
    private var entries: [String: Entry] = [:]
    /// Keys, least recently used first.
    private var order: [String] = []
    private var bytes = 0

    init(limitBytes: Int) { self.limitBytes = limitBytes }

    subscript(key: String) -> Entry? {
        get {
            guard let entry = entries[key] else { return nil }
            order.removeAll { $0 == key }
            order.append(key)
            return entry
        }
        set {
            if let old = entries.removeValue(forKey: key) {
                bytes -= old.bytes
                order.removeAll { $0 == key }
            }
            guard let entry = newValue, entry.bytes <= limitBytes else { return }
            entries[key] = entry
            order.append(key)
            bytes += entry.bytes
            while bytes > limitBytes, let oldest = order.first {
                order.removeFirst()
                bytes -= entries.removeValue(forKey: oldest)?.bytes ?? 0
            }
        }
    }
}
