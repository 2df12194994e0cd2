import ArgumentParser
import Foundation
import ToyTL
import TransferCLI
import TransferEngine

/// toy-tl: the toy domain on the shared command line (its flag, its demo on the fixtures, its run contract).
extension ToyDomain: CommandLineDomain {
    public static let appName = "toy-tl"
    public static let summary = "Transfer learning on numeric vectors from CSV files (the suite's toy domain)."
    public static let demo = DemoPlan(
        task: .init(train: "source-train.csv", test: "source-test.csv", labelsPerClass: [5, nil]),
        shift: .init(source: "source-train.csv", target: "target-unlabelled.csv", targetTest: "target-test.csv"))

    /// The flags of `Configuration`, with its defaults.
    public struct Options: ParsableArguments {
        @Option(help: "Standard deviation of the Gaussian noise added to training vectors when augmenting.")
        public var noise: Float = defaults.noise
        public init() {}

        public var configuration: ToyDomain.Configuration { .init(noise: noise) }
    }

    public init(options: Options) throws {
        self = try validatingOptions { try ToyDomain(configuration: options.configuration) }
    }
}

private let defaults = ToyDomain.Configuration()

extension ToyDomain.Options: ContractOptions {
    /// The toy's only option is augmentation noise: nothing decides its inputs.
    public var contract: [String: String] { [:] }
    public static let contractFlags: [String: [String]] = [:]
    public mutating func adopt(_ contract: [String: String]) throws {}
}
