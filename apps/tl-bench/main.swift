import ArgumentParser
import CBLAS
import Foundation
import TransferEngine

/// tl-bench: the engine's workloads timed the way the peers are (warm-up, median of repetitions), in a
/// release build. `scripts/bench-peers` runs the same workloads on PyTorch / onnxruntime / Pillow.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tl-bench", abstract: "Benchmark the engine's workloads with the real pretrained weights (see README: Benchmarks).",
        version: "tl-bench \(TransferEngineVersion.string)")

    @Option(help: "Comma-separated workload ids to run, e.g. W1 (default: all).")
    var only: String?
    @Option(help: "Threads for OpenBLAS and the engine.")
    var threads: Int = 2
    @Option(help: "Timed repetitions per workload (median reported); one warm-up run comes first.")
    var repetitions: Int = 7
    @Flag(help: "Print one JSON object instead of a table.")
    var json = false

    func validate() throws {
        if repetitions < 5 { throw ValidationError("--repetitions must be at least 5") }
        if threads < 1 { throw ValidationError("--threads must be at least 1") }
    }

    func run() throws {
        Runtime.setThreads(threads)
        let wanted = only.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces).uppercased() }) }
        var results: [BenchResult] = []
        let all = workloads()
        for w in all where wanted == nil || wanted!.contains(w.group) {
            results.append(try measure(w))
            if !json { FileHandle.standardError.write("done \(w.id)\n".data(using: .utf8)!) }
        }
        // Efficiency: the FLOP rate of a network workload over raw sgemm's in the same run (the machine's
        // attainable rate, whatever the host's load), so that progress shows on a noisy machine.
        var sgemm: BenchResult?
        if results.contains(where: { $0.gigaflopPerUnit != nil }) {
            sgemm = try results.first { $0.id == Self.sgemmReference } ?? measure(all.first { $0.id == Self.sgemmReference }!)
            for i in results.indices {
                if let g = results[i].gigaflopPerUnit { results[i].efficiency = results[i].median * g / sgemm!.median }
            }
        }
        report(results, sgemm: sgemm)
    }

    /// The workload whose median is the efficiency's denominator.
    static let sgemmReference = "W1-1024-raw"

    func measure(_ w: Workload) throws -> BenchResult {
        let body = try w.setup()
        _ = try body()  // warm-up
        var rates: [Double] = []
        for _ in 0..<repetitions {
            let start = DispatchTime.now().uptimeNanoseconds
            let units = try body()
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            rates.append(units / seconds)
        }
        rates.sort()
        return BenchResult(id: w.id, description: w.description, unit: w.unit,
                           min: rates.first!, median: rates[rates.count / 2], max: rates.last!,
                           gigaflopPerUnit: try w.gigaflopPerUnit?())
    }

    func report(_ results: [BenchResult], sgemm: BenchResult?) {
        if json {
            var obj: [String: Any] = [
                "kernel": BLASKernel.loadedCore, "engine_kernels": Runtime.engineKernels, "threads": Runtime.threads,
                "workloads": results.map { r -> [String: Any] in
                    var entry: [String: Any] = ["id": r.id, "throughput": r.median, "unit": r.unit, "min": r.min, "max": r.max]
                    if let g = r.gigaflopPerUnit { entry["gflop_per_unit"] = g }
                    if let e = r.efficiency { entry["efficiency"] = e }
                    return entry
                },
            ]
            if let sgemm { obj["sgemm_gflops"] = sgemm.median }
            let data = try! JSONSerialization.data(withJSONObject: obj, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print("OpenBLAS kernel \(BLASKernel.loadedCore), engine kernels \(Runtime.engineKernels), \(Runtime.threads) threads, median of \(repetitions) after a warm-up")
        print("id           workload                                      median        unit        min        max")
        for r in results {
            print(r.id.padding(toLength: 13, withPad: " ", startingAt: 0)
                  + r.description.padding(toLength: 44, withPad: " ", startingAt: 0)
                  + String(format: "%10.1f  %-10@ %9.1f  %9.1f", r.median, r.unit as NSString, r.min, r.max))
        }
        if let sgemm {
            for r in results {
                guard let g = r.gigaflopPerUnit, let e = r.efficiency else { continue }
                print(String(format: "efficiency %@: %.2f = %.1f %@ x %.3f GFLOP / %.1f GFLOPS (raw sgemm 1024^3, this run)",
                             r.id as NSString, e, r.median, r.unit as NSString, g, sgemm.median))
            }
        }
    }
}

struct BenchResult {
    var id, description, unit: String
    var min, median, max: Double
    var gigaflopPerUnit: Double?
    var efficiency: Double? = nil
}

/// A workload: `setup` prepares inputs once and returns the timed body, which returns the units of work done.
/// A network's workload also counts its FLOPs per unit (2 x multiply-adds, from the architecture).
struct Workload {
    var id: String, group: String, description: String, unit: String
    var gigaflopPerUnit: (() throws -> Double)? = nil
    var setup: () throws -> () throws -> Double
}

/// Every workload, in id order. Each domain's workloads live in their own file.
func workloads() -> [Workload] {
    engineWorkloads() + visionWorkloads() + speechWorkloads() + textWorkloads()
}

Runtime.prepare()
Bench.main()
