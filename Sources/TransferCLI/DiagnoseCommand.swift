import ArgumentParser
import Foundation
import TransferEngine

/// `<app> diagnose --source A --target B`: how far apart two datasets are on the backbone's features, and what to do.
struct DiagnoseCommand<D: CommandLineDomain>: ParsableCommand {
    static var configuration: CommandConfiguration {
        CommandConfiguration(
            commandName: "diagnose",
            abstract: "Measure how different a target dataset is from a labelled source, and recommend a technique.",
            discussion: """
            On the pretrained backbone's features (cached like extract's): the proxy A-distance (a linear \
            classifier telling the sets apart, trained on half of equal-sized samples of both and scored on the \
            other half: 0 = indistinguishable, 2 = perfectly separable), the squared MMD with a Gaussian kernel, and \
            the target's class proportions as a head trained on the source predicts them. Target labels, if the \
            target has them, are not used.
            """)
    }

    @Option(help: "Labelled source data: a folder per class, or a table with a label column.")
    var source: String?
    @Option(help: "Target data: unlabelled (a folder of files, or a table), or labelled (its labels are ignored).")
    var target: String?
    @OptionGroup var common: CommonOptions
    @OptionGroup var domainOptions: D.Options

    func run() throws {
        common.apply()
        let w = try makeWorkflows(D.self, domainOptions, common)
        let sourceSet = try w.domain.labelled(at: try requirePath(source, "--source"))
        let targetURL = try requirePath(target, "--target")
        // A labelled layout (e.g. class folders) is read as such and its labels dropped.
        let targetSamples: [D.Sample]
        do { targetSamples = try w.domain.unlabelled(at: targetURL) } catch {
            guard let labelled = try? w.domain.labelled(at: targetURL) else { throw error }
            targetSamples = labelled.samples
        }
        let d = try w.diagnose(source: sourceSet, target: targetSamples)
        if common.json {
            var object = Output.jsonObject(d) as! [String: Any]
            object["app"] = D.appName
            object["command"] = "diagnose"
            print(Output.encode(object))
            return
        }
        let mix = { (p: [Double]) in zip(d.classNames, p).map { "\($0) \(String(format: "%.2f", $1))" }.joined(separator: ", ") }
        printRows([
            ("source", "\(datasetName(source!)): \(d.sourceSamples) samples"),
            ("target", "\(datasetName(target!)): \(d.targetSamples) samples"),
            ("proxy A-distance", String(format: "%.3f (domain classifier error %.3f; 0 = alike, 2 = separable)", d.proxyADistance, d.domainClassifierError)),
            ("MMD²", String(format: "%.4f (Gaussian kernel, standardised features)", abs(d.mmd) < 5e-5 ? 0 : d.mmd)),  // not "-0.0000"
            ("source classes", mix(d.sourceProportions)),
            ("target, predicted", mix(d.predictedTargetProportions) + String(format: " (total variation %.2f)", d.proportionShift)),
            ("source neighbours", d.sourceNeighbourAgreement.map {
                String(format: "%.2f (nearest neighbour of the same class, chance-corrected; below %.2f adapt tries end to end or keeps source-only)", $0,
                       AdaptationSelection.minimumNeighbourAgreement) } ?? "not measured"),
            ("recommendation", d.recommendation),
        ])
    }
}
