// swift-tools-version:6.0
import PackageDescription

// Fuzz targets (scripts/fuzz) exist only when TL_FUZZ is set, so normal builds are unchanged.
let fuzzing = Context.environment["TL_FUZZ"] != nil

// Release builds drop overflow/bounds checks in the numeric kernels (they are checked in debug test builds).
// Fuzz builds keep them (-O), so a failed check is found as the crash it is rather than as silent UB.
let fast: [SwiftSetting] = fuzzing ? [] : [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

// libFuzzer harnesses: thin `LLVMFuzzerTestOneInput` wrappers around the checks in FuzzChecks (see scripts/fuzz).
let fuzzHarnesses = ["png", "jpeg", "audio", "safetensors", "text-table", "wordpiece"]

let package = Package(
    name: "TransferSuite",
    products: [
        .library(name: "TransferEngine", targets: ["TransferEngine"]),
        .library(name: "TransferCLI", targets: ["TransferCLI"]),
        .executable(name: "vision-tl", targets: ["vision-tl"]),
        .executable(name: "speech-tl", targets: ["speech-tl"]),
        .executable(name: "text-tl", targets: ["text-tl"]),
        .executable(name: "toy-tl", targets: ["toy-tl"]),
        .executable(name: "tl-bench", targets: ["tl-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // System libraries (Debian: libopenblas-dev, libpng-dev, libsndfile1-dev; libjpeg62-turbo-dev for CJPEGShim).
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG"),
        .systemLibrary(name: "CSndFile", path: "Sources/CSndFile"),

        // libpng's setjmp/longjmp error handling stays in C.
        .target(name: "CPNGShim", dependencies: ["CPNG"], path: "Sources/CPNGShim",
                cSettings: [.unsafeFlags(["-O2"])]),
        // libjpeg's error_exit/setjmp likewise (Debian: libjpeg62-turbo-dev).
        .target(name: "CJPEGShim", path: "Sources/CJPEGShim", cSettings: [.unsafeFlags(["-O2"])],
                linkerSettings: [.linkedLibrary("jpeg")]),

        // Vectorised C loops (multiversioned for AVX-512 / AVX2 / baseline) behind a few engine ops.
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: [.unsafeFlags(["-O3"])]),

        // The engine: knows nothing about images, audio or text.
        .target(name: "TransferEngine", dependencies: ["CBLAS", "CKernels"], swiftSettings: fast),

        // Reports: PCA of features and a PNG writer, outside the engine (which knows no images or plots).
        .target(name: "TransferReport", dependencies: ["TransferEngine"], swiftSettings: fast),

        // One module per domain, usable without the command line.
        .target(name: "VisionTL", dependencies: ["TransferEngine", "TransferReport", "CPNGShim", "CJPEGShim"], swiftSettings: fast),
        .target(name: "SpeechTL", dependencies: ["TransferEngine", "CSndFile"], swiftSettings: fast),
        .target(name: "TextTL", dependencies: ["TransferEngine"], swiftSettings: fast),
        // The smallest complete domain (numeric vectors from CSV): the worked example and the workflows' test bed.
        .target(name: "ToyTL", dependencies: ["TransferEngine"], swiftSettings: fast),

        // Shared command line, generic over a domain.
        .target(name: "TransferCLI", dependencies: [
            "TransferEngine", "TransferReport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Each domain on the command line: its flags, demo, run contract and check-data/report views.
        .target(name: "VisionCLI", dependencies: [
            "VisionTL", "TransferCLI", "TransferEngine", "TransferReport", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "SpeechCLI", dependencies: [
            "SpeechTL", "TransferCLI", "TransferEngine", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "TextCLI", dependencies: [
            "TextTL", "TransferCLI", "TransferEngine", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "ToyCLI", dependencies: [
            "ToyTL", "TransferCLI", "TransferEngine", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        // Thin apps.
        .executableTarget(name: "vision-tl", dependencies: ["TransferCLI", "VisionTL", "VisionCLI"], path: "apps/vision-tl"),
        .executableTarget(name: "speech-tl", dependencies: ["TransferCLI", "SpeechTL", "SpeechCLI"], path: "apps/speech-tl"),
        .executableTarget(name: "text-tl", dependencies: ["TransferCLI", "TextTL", "TextCLI"], path: "apps/text-tl"),
        .executableTarget(name: "toy-tl", dependencies: ["TransferCLI", "ToyTL", "ToyCLI"], path: "apps/toy-tl"),
        .executableTarget(name: "tl-bench", dependencies: [
            "TransferEngine", "TransferReport", "CBLAS", "VisionTL", "SpeechTL", "TextTL", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "apps/tl-bench", swiftSettings: fast),

        // The properties the fuzz harnesses check, shared with the corpus replay tests.
        .target(name: "FuzzChecks", dependencies: ["TransferEngine", "TransferReport", "VisionTL", "SpeechTL", "TextTL"], path: "Fuzz/FuzzChecks"),
        .testTarget(name: "FuzzReplayTests", dependencies: ["FuzzChecks", "SpeechTL"]),

        .testTarget(name: "TransferEngineTests", dependencies: ["TransferEngine"], exclude: ["Golden"]),
        .testTarget(name: "TransferReportTests", dependencies: ["TransferReport"]),
        .testTarget(name: "VisionTLTests", dependencies: ["VisionTL", "TransferReport"], exclude: ["Golden"]),
        .testTarget(name: "SpeechTLTests", dependencies: ["SpeechTL"], exclude: ["Golden"]),
        .testTarget(name: "TextTLTests", dependencies: ["TextTL"], exclude: ["Golden"]),
        // Runs the built apps as a user would.
        // Test support: a JPEG encoder to build JPEG copies of the PNG fixtures.
        .target(name: "CJPEGEncoder", path: "Tests/CJPEGEncoder", linkerSettings: [.linkedLibrary("jpeg")]),
        .testTarget(name: "CLITests", dependencies: ["vision-tl", "speech-tl", "text-tl", "toy-tl", "ToyTL", "VisionTL", "SpeechTL", "CJPEGEncoder"],
                    exclude: ["Inputs"]),
    ],
    swiftLanguageModes: [.v5]
)

if fuzzing {
    for name in fuzzHarnesses {
        package.products.append(.executable(name: "fuzz-\(name)", targets: ["fuzz-\(name)"]))
        package.targets.append(.executableTarget(name: "fuzz-\(name)", dependencies: ["FuzzChecks"], path: "Fuzz/fuzz-\(name)"))
    }
}
