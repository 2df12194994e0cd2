import Foundation
import XCTest
import TransferEngine
@testable import SpeechTL

/// Data layouts (class folders, unlabelled folders, CSV tables), clip fitting and windows, batches, the seeded
/// augmentation and the scratch CNN.
final class SpeechDomainTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let fixtures = root.appendingPathComponent("Fixtures/speech")

    var temp: URL!

    override func setUpWithError() throws {
        temp = FileManager.default.temporaryDirectory.appendingPathComponent("speech-domain-\(getpid())-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(at: temp) }

    func testClassFoldersAndUnlabelledFolders() throws {
        let d = SpeechDomain()
        let train = try d.labelled(at: Self.fixtures.appendingPathComponent("source/train"))
        XCTAssertEqual(train.classNames, ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes"])
        XCTAssertEqual(train.classCounts, [Int](repeating: 30, count: 10))
        XCTAssertTrue(train.samples.allSatisfy { $0.pathExtension == "flac" })
        let unlabelled = try d.unlabelled(at: Self.fixtures.appendingPathComponent("target/unlabelled"))
        XCTAssertEqual(unlabelled.count, 180)
        // A labelled tree read as unlabelled: every file under it.
        XCTAssertEqual(try d.unlabelled(at: Self.fixtures.appendingPathComponent("target/test")).count, 120)
        XCTAssertThrowsError(try d.labelled(at: Self.fixtures.appendingPathComponent("target/unlabelled"))) { e in
            XCTAssertTrue("\(e)".contains("has no class folders"), "\(e)")
        }
        XCTAssertThrowsError(try d.unlabelled(at: temp)) { e in XCTAssertTrue("\(e)".contains("holds no audio files"), "\(e)") }
    }

    func testCSVTables() throws {
        let src = Self.fixtures.appendingPathComponent("source/test")
        let a = src.appendingPathComponent("yes/0001.flac").path, b = src.appendingPathComponent("no/0002.flac").path
        // Relative paths resolve against the table's folder.
        try FileManager.default.createDirectory(at: temp.appendingPathComponent("clips"), withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: a, toPath: temp.appendingPathComponent("clips/one, two.flac").path)
        let labelled = temp.appendingPathComponent("set.csv")
        try "path,label\n\(a),yes\r\n\"clips/one, two.flac\",yes\n\n\(b) , no\n".write(to: labelled, atomically: true, encoding: .utf8)
        let set = try SpeechDomain().labelled(at: labelled)
        XCTAssertEqual(set.classNames, ["no", "yes"])
        XCTAssertEqual(set.labels, [1, 1, 0])
        XCTAssertEqual(set.samples[1].lastPathComponent, "one, two.flac")
        let unlabelled = temp.appendingPathComponent("u.csv")
        try "\(a)\n\(b),ignored\n".write(to: unlabelled, atomically: true, encoding: .utf8)
        XCTAssertEqual(try SpeechDomain().unlabelled(at: unlabelled).count, 2)
        let bad: [(String, String)] = [
            ("path,label\n\(a)\n", "set.csv:2: expected 'path,label'"),
            ("path,label\nmissing.wav,yes\n", "set.csv:2: no such audio file 'missing.wav'"),
            ("path,label\n\"\(a),yes\n", "set.csv:2: unterminated quote"),
            ("path,label\n", "lists no audio files"),
        ]
        for (text, message) in bad {
            try text.write(to: labelled, atomically: true, encoding: .utf8)
            XCTAssertThrowsError(try SpeechDomain().labelled(at: labelled)) { e in XCTAssertTrue("\(e)".contains(message), "\(e)") }
        }
    }

    func testClipFittingAndWindows() {
        let f = ClipFrontEnd()
        XCTAssertEqual(f.clipSamples, 16000)
        XCTAssertEqual(f.windowStarts, [0, 8, 16])
        // Short: centred zero padding.
        let short = [Float](repeating: 1, count: 10000)
        let padded = f.fit(short)
        XCTAssertEqual(padded.count, 16000)
        XCTAssertEqual(padded[2999], 0)
        XCTAssertEqual(padded[3000], 1)
        XCTAssertEqual(padded[12999], 1)
        XCTAssertEqual(padded[13000], 0)
        // Long: the loudest 1 s stretch.
        var long = [Float](repeating: 0, count: 40000)
        for i in 20000..<30000 { long[i] = 100 }
        let cropped = f.fit(long)
        XCTAssertEqual(cropped.count, 16000)
        XCTAssertEqual(cropped.filter { $0 == 100 }.count, 10000)
        // A word shorter than the clip, anywhere in a longer recording of silence (every 1 s stretch holding it is
        // as loud as the next): the crop has it in the middle, as a 1 s clip has it, not at an edge.
        for (offset, length) in [(0, 6000), (20000, 6000), (33000, 7000), (44000, 3001)] {
            var recording = [Float](repeating: 0, count: 48000)
            for i in offset..<(offset + length) { recording[i] = i % 2 == 0 ? 3000 : -3000 }
            let clip = f.fit(recording)
            let before = clip.firstIndex { $0 != 0 }!, after = clip.count - 1 - clip.lastIndex { $0 != 0 }!
            XCTAssertEqual(clip.count - before - after, length, "\(offset): the whole word")
            if offset > 5000 && offset + length < 43000 {
                XCTAssertLessThanOrEqual(abs(before - after), 1, "\(offset): centred")
            }
        }
        // Windows are copies of the mel frames.
        var rng = RNG(seed: 1)
        let mel = rng.uniformTensor([2, 97, 32], 0, 10)
        let w = f.windows(mel)
        XCTAssertEqual(w.shape, [2, 3, 76, 32])
        XCTAssertEqual(w[flat: ((1 * 3 + 2) * 76 + 5) * 32 + 7], mel[flat: (1 * 97 + 16 + 5) * 32 + 7])
        // Clips shorter than a window's 0.78 s still give one window.
        let tiny = ClipFrontEnd(clipSeconds: 0.5, hop: 8)
        XCTAssertEqual(tiny.clipSamples, ClipFrontEnd.minimumSamples)
        XCTAssertEqual(tiny.windowStarts, [0])
        // Longer clips give more windows.
        XCTAssertEqual(ClipFrontEnd(clipSeconds: 2, hop: 8).windowCount, 16)
    }

    func testBatchesAndSeededAugmentation() throws {
        let d = SpeechDomain()
        let files = Array(try d.labelled(at: Self.fixtures.appendingPathComponent("source/test")).samples.prefix(4))
        var rng = RNG(seed: 3)
        let plain = try d.batch(files, augment: false, scratch: false, rng: &rng)
        XCTAssertEqual(plain.shape, [4, 3, 76, 32])
        XCTAssertEqual(rng, RNG(seed: 3), "no augmentation draws nothing")
        XCTAssertEqual(try d.batch(files, augment: false, scratch: true, rng: &rng).shape, [4, 1, 97, 32])
        var r1 = RNG(seed: 9), r2 = RNG(seed: 9), r3 = RNG(seed: 10)
        let a1 = try d.batch(files, augment: true, scratch: false, rng: &r1)
        let a2 = try d.batch(files, augment: true, scratch: false, rng: &r2)
        let a3 = try d.batch(files, augment: true, scratch: false, rng: &r3)
        XCTAssertEqual(a1, a2, "same seed, same augmentation")
        XCTAssertNotEqual(a1, a3)
        XCTAssertNotEqual(a1, plain)
    }

    func testWaveformAugmentation() {
        var a = SpeechAugmentation()
        a.maximumShift = 0
        a.maximumGainDecibels = 0
        a.noiseProbability = 1
        a.snrDecibels = 10...10
        var rng = RNG(seed: 4)
        let clip = (0..<16000).map { Float(3000 * sin(Double($0) * 0.05)) }
        let noisy = a.waveform(clip, rng: &rng)
        let signal = clip.reduce(0.0) { $0 + Double($1 * $1) }
        let noise = zip(noisy, clip).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
        let snr = 10 * log10(signal / noise)
        XCTAssertEqual(snr, 10, accuracy: 0.2, "measured SNR \(snr) dB")
        // Shift only: the clip moves, zeros fill in.
        a.noiseProbability = 0
        a.maximumShift = 0.1
        let impulse = (0..<16000).map { $0 == 8000 ? Float(1000) : 0 }
        var found = Set<Int>()
        for _ in 0..<50 { found.insert(a.waveform(impulse, rng: &rng).firstIndex(of: 1000)!) }
        XCTAssertTrue(found.allSatisfy { abs($0 - 8000) <= 1600 })
        XCTAssertGreaterThan(found.count, 40)
        // Gain only: a constant factor within +-6 dB.
        a.maximumShift = 0
        a.maximumGainDecibels = 6
        let g = a.waveform(clip, rng: &rng)[100] / clip[100]
        XCTAssertTrue(g >= 0.5 && g <= 2.0 && g != 1, "gain \(g)")
    }

    func testSpecAugmentMasks() {
        var a = SpeechAugmentation()
        a.timeMasks = 1; a.timeMaskFrames = 10
        a.frequencyMasks = 2; a.frequencyMaskBands = 4
        var rng = RNG(seed: 5)
        let mel = (0..<(97 * 32)).map { Float($0 % 7) }
        let mean = mel.reduce(0, +) / Float(mel.count)
        var maskedSomething = false
        for _ in 0..<20 {
            var m = mel
            m.withUnsafeMutableBufferPointer { a.mask($0.baseAddress!, frames: 97, bands: 32, rng: &rng) }
            let changed = zip(m, mel).enumerated().filter { $1.0 != $1.1 }
            XCTAssertTrue(changed.allSatisfy { $0.element.0 == mean })
            // Masked frames and bands are whole rows / columns.
            let rows = Set(changed.map { $0.offset / 32 }), cols = Set(changed.map { $0.offset % 32 })
            XCTAssertTrue(rows.count <= 10 || rows.count == 97)
            XCTAssertTrue(cols.count <= 8 || cols.count == 32)
            if !changed.isEmpty { maskedSomething = true }
        }
        XCTAssertTrue(maskedSomething)
    }

    func testBadAudioIsOneLineNamingTheFile() throws {
        let bad = temp.appendingPathComponent("broken.wav")
        try Data("RIFF....WAVEfmt garbage".utf8).write(to: bad)
        var rng = RNG(seed: 0)
        XCTAssertThrowsError(try SpeechDomain().batch([bad], augment: false, scratch: false, rng: &rng)) { e in
            XCTAssertTrue("\(e)".hasPrefix(bad.path + ": "), "\(e)")
            XCTAssertFalse("\(e)".contains("\n"))
        }
    }

    func testScratchCNNShapesAndBlocks() {
        var rng = RNG(seed: 2)
        let net = ScratchCNN(rng: &rng)
        let x = rng.uniformTensor([3, 1, 97, 32], 0, 10)
        let f = net.features(x)
        XCTAssertEqual(f.shape, [3, 64])
        XCTAssertEqual(net.blocks.count, 3)
        XCTAssertLessThan(net.parameterCount, 30_000)
        let split = net.forward(net.forward(x, through: 1), from: 1)
        XCTAssertEqual(split.value, f.value)
    }
}
