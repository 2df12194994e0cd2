import ArgumentParser
import Foundation
import TransferEngine

/// A domain's options that decide what its network sees and what a head expects (image size, clip length,
/// pooling, sequence length, encoder...). A run records them (`RunContract.settings`); `evaluate`, `predict` and
/// `info` take them from the run, and refuse a flag given on their command line that says otherwise.
public protocol ContractOptions: ParsableArguments {
    /// The settings, by name (as in run.json).
    var contract: [String: String] { get }
    /// The command-line flags that set each setting (to tell whether one was given, and to name it).
    static var contractFlags: [String: [String]] { get }
    /// Takes the settings of a run.
    mutating func adopt(_ contract: [String: String]) throws
}

extension ContractOptions {
    /// These options with a run's settings applied. A setting's flag given in `arguments` with another value is
    /// refused, naming both values; flags that change only speed (threads, batch size) are not settings.
    func applying(_ run: RunContract, runPath: String, arguments: [String] = TransferCLI.arguments) throws -> Self {
        let mine = contract
        for (key, value) in run.settings.sorted(by: { $0.key < $1.key }) {
            guard let flags = Self.contractFlags[key], let given = mine[key], given != value else { continue }
            if let flag = flags.first(where: { f in arguments.contains { $0 == f || $0.hasPrefix(f + "=") } }) {
                throw EngineError.invalidArgument("\(flag) asks for \(key) \(given), but the run \(runPath) was made with \(key) \(value); leave \(flag) out and the run's value is used")
            }
        }
        var out = self
        try out.adopt(run.settings)
        return out
    }
}

/// Reads a setting of a run back, with one clear line when run.json holds something unusable.
public func setting<T: LosslessStringConvertible>(_ contract: [String: String], _ key: String) throws -> T? {
    guard let text = contract[key] else { return nil }
    guard let value = T(text) else { throw ValidationError("run.json: setting \(key) has the unusable value '\(text)'") }
    return value
}

/// Runs a domain's configuration check (`Configuration.validate()`, `init(configuration:)`) for the command line:
/// a refused setting (`EngineError.invalidArgument`, whose message names the flag) is reported as a flag check's
/// `ValidationError` (the message with a usage line, exit code 64).
public func validatingOptions<T>(_ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let EngineError.invalidArgument(message) {
        throw ValidationError(message)
    }
}
