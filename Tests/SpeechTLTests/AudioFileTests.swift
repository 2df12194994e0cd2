import Foundation
import XCTest
import TransferEngine
@testable import SpeechTL

/// Reading the small corpus in Golden/audio (made by Golden/make_audio_corpus.py): exact sample values for
/// lossless files, levels and rates for lossy or resampled ones, one clear error for each broken file.
final class AudioFileTests: XCTestCase {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Golden/audio")
    func file(_ name: String) -> URL { Self.corpus.appendingPathComponent(name) }

    /// The corpus script's sequence: a head of extreme values, then a 32-bit LCG; B-bit samples.
    static func signal(bits: Int, seed: UInt32 = 1, count: Int = 400) -> [Int64] {
        let top = Int64(1) << (bits - 1)
        var out: [Int64] = [0, 1, -1, top - 1, -top, top / 2, -(top / 2), 3]
        var x = seed
        while out.count < count {
            x = 1664525 &* x &+ 1013904223
            out.append(Int64(x >> UInt32(32 - bits)) - top)
        }
        return out
    }

    /// Amplitude of the `frequency` component of `x` (least squares on sin and cos) and the RMS of the rest.
    static func fitTone(_ x: ArraySlice<Float>, frequency: Double, rate: Double) -> (amplitude: Double, residual: Double) {
        var ss = 0.0, cc = 0.0, sc = 0.0, xs = 0.0, xc = 0.0
        for (i, v) in x.enumerated() {
            let w = 2 * Double.pi * frequency * Double(i) / rate
            let s = sin(w), c = cos(w)
            ss += s * s; cc += c * c; sc += s * c; xs += Double(v) * s; xc += Double(v) * c
        }
        let det = ss * cc - sc * sc
        let a = (xs * cc - xc * sc) / det, b = (xc * ss - xs * sc) / det
        var r = 0.0
        for (i, v) in x.enumerated() {
            let w = 2 * Double.pi * frequency * Double(i) / rate
            let e = Double(v) - a * sin(w) - b * cos(w)
            r += e * e
        }
        return ((a * a + b * b).squareRoot(), (r / Double(x.count)).squareRoot())
    }

    func testLosslessFilesGiveExactInt16ScaleSamples() throws {
        let s16 = Self.signal(bits: 16).map { Float($0) }
        let cases: [(String, [Float], String)] = [
            ("pcm8.wav", Self.signal(bits: 8).map { Float($0 * 256) }, "Unsigned 8 bit PCM"),
            ("pcm16.wav", s16, "Signed 16 bit PCM"),
            ("pcm24.wav", Self.signal(bits: 24).map { Float(Double($0) / 256) }, "Signed 24 bit PCM"),
            ("float32.wav", s16, "32 bit float"),
            ("pcm16.flac", s16, "FLAC"),
        ]
        for (name, expected, format) in cases {
            let info = try AudioFile.info(file(name))
            XCTAssertEqual(info.sampleRate, 16000, name)
            XCTAssertEqual(info.channels, 1, name)
            XCTAssertEqual(info.frames, 400, name)
            XCTAssertTrue(info.format.contains(format), "\(name): format '\(info.format)' should mention '\(format)'")
            let x = try AudioFile.read(file(name))
            XCTAssertEqual(x, expected, "\(name): samples at int16 scale")
        }
        // 32-bit PCM: libsndfile converts to Float (24-bit mantissa), so compare relatively.
        let x32 = try AudioFile.read(file("pcm32.wav"))
        let e32 = Self.signal(bits: 32).map { Double($0) / 65536 }
        XCTAssertEqual(x32.count, 400)
        for (a, b) in zip(x32, e32) { XCTAssertEqual(Double(a), b, accuracy: max(1e-6, abs(b) * 2e-7)) }
    }

    func testChannelsAreMixedByTheirMean() throws {
        let l = Self.signal(bits: 16, seed: 1), r = Self.signal(bits: 16, seed: 2), c = Self.signal(bits: 16, seed: 3)
        XCTAssertEqual(try AudioFile.info(file("stereo16.wav")).channels, 2)
        XCTAssertEqual(try AudioFile.read(file("stereo16.wav")), zip(l, r).map { Float($0 + $1) / 2 })
        let three = try AudioFile.read(file("three_channels.wav"))
        XCTAssertEqual(try AudioFile.info(file("three_channels.wav")).channels, 3)
        for i in 0..<400 { XCTAssertEqual(three[i], Float(l[i] + r[i] + c[i]) / 3, accuracy: 2e-3) }
    }

    func testCompandedFilesStayWithinG711Error() throws {
        let s16 = Self.signal(bits: 16).map { Double($0) }
        for (name, rate) in [("ulaw8k.wav", 8000), ("alaw.wav", 16000)] {
            let info = try AudioFile.info(file(name))
            XCTAssertEqual(info.sampleRate, rate, name)
            XCTAssertEqual(info.frames, 400, name)
            // At the native rate the values are the codec's reconstruction: within half a segment step
            // (at most 1/32 of the magnitude, plus the finest step near zero).
            let x = try AudioFile.read(file(name), sampleRate: rate)
            XCTAssertEqual(x.count, 400)
            var worst = 0.0
            for (a, b) in zip(x, s16) {
                let err = abs(Double(a) - b)
                worst = max(worst, err / (abs(b) + 256))
                XCTAssertLessThanOrEqual(err, abs(b) / 32 + 64, "\(name): \(a) decoded for \(b)")
            }
            print("AudioFileTests: \(name) worst error relative to |v| + 256: \(worst)")
        }
        // The 8 kHz file is brought to 16 kHz by default.
        XCTAssertEqual(try AudioFile.read(file("ulaw8k.wav")).count, 800)
    }

    func testOggVorbisKeepsLengthAndTone() throws {
        let info = try AudioFile.info(file("tone440.ogg"))
        XCTAssertEqual(info.sampleRate, 16000)
        XCTAssertEqual(info.frames, 8000)
        XCTAssertTrue(info.format.contains("OGG"), info.format)
        let x = try AudioFile.read(file("tone440.ogg"))
        XCTAssertEqual(x.count, 8000)
        let fit = Self.fitTone(x[2000..<6000], frequency: 440, rate: 16000)
        XCTAssertEqual(20 * log10(fit.amplitude / 8000), 0, accuracy: 0.5, "440 Hz level after Vorbis")
        XCTAssertLessThan(fit.residual / (fit.amplitude / 2.squareRoot()), 0.05, "Vorbis residual")
    }

    /// MP3 (LAME) and Opus (opusenc) through the installed libsndfile: the tone's frequency and level survive, the
    /// length is the encoded half second within the codecs' padding, and both are listed as audio files.
    func testMP3AndOpusKeepLengthAndTone() throws {
        for (name, format) in [("tone440.mp3", "MPEG"), ("tone440.opus", "OGG")] {
            let info = try AudioFile.info(file(name))
            XCTAssertTrue(info.format.contains(format), "\(name): \(info.format)")
            let x = try AudioFile.read(file(name))
            XCTAssertEqual(Double(x.count) / 16000, 0.5, accuracy: 0.1, name)
            let fit = Self.fitTone(x[2000..<6000], frequency: 440, rate: 16000)
            XCTAssertEqual(20 * log10(fit.amplitude / 8000), 0, accuracy: 1, "\(name): 440 Hz level")
            XCTAssertLessThan(fit.residual / (fit.amplitude / 2.squareRoot()), 0.1, "\(name): residual")
            XCTAssertTrue(AudioDataset.isAudio(file(name)), name)
            print(String(format: "AudioFileTests: %@ (%@): %d samples, 440 Hz level %.0f (8000 encoded)", name, info.format, x.count, fit.amplitude))
        }
        for ext in ["wav", "flac", "ogg", "opus", "mp3", "aiff", "caf"] { XCTAssertTrue(AudioDataset.extensions.contains(ext), ext) }
        XCTAssertFalse(AudioDataset.isAudio(URL(fileURLWithPath: "notes.txt")))
    }

    func testStereo44kIsMixedAndResampledTo16k() throws {
        let info = try AudioFile.info(file("stereo44k.wav"))
        XCTAssertEqual([info.sampleRate, info.channels, info.frames], [44100, 2, 4410])
        XCTAssertEqual(info.duration, 0.1, accuracy: 1e-12)
        let x = try AudioFile.read(file("stereo44k.wav"))
        XCTAssertEqual(x.count, 1600)  // ceil(4410 * 160 / 441)
        // Left 8000 and right 4000 at 1 kHz: the mono mean is 6000; skip the filter's edges.
        let fit = Self.fitTone(x[200..<1400], frequency: 1000, rate: 16000)
        XCTAssertEqual(fit.amplitude, 6000, accuracy: 6000 * 1e-3)
        let residualDB = 20 * log10(fit.residual / (fit.amplitude / 2.squareRoot()))
        XCTAssertLessThan(residualDB, -60)
        print(String(format: "AudioFileTests: 44.1 kHz stereo -> 16 kHz mono: 1 kHz level %.2f (6000 expected), residual %.1f dB", fit.amplitude, residualDB))
    }

    func testWindowsConcatenateToTheWholeRead() throws {
        for name in ["stereo44k.wav", "pcm16.flac", "ulaw8k.wav"] {
            let whole = try AudioFile.read(file(name))
            let reader = try AudioFile.windows(file(name), seconds: 0.013)
            XCTAssertEqual(reader.windowLength, 208)
            var joined: [Float] = [], starts: [Double] = []
            try reader.forEach { w in
                XCTAssertEqual(w.index, starts.count)
                starts.append(w.start)
                joined += w.samples
            }
            XCTAssertEqual(joined, whole, "\(name): windows joined == read")
            XCTAssertEqual(starts.count, (whole.count + 207) / 208)
            XCTAssertEqual(starts.last!, Double((starts.count - 1) * 208) / 16000, accuracy: 1e-12)
            XCTAssertNil(try reader.next(), "\(name): stays at the end")
        }
        XCTAssertThrowsError(try AudioFile.windows(file("pcm16.wav"), seconds: 0))
    }

    /// Streaming two passes over small blocks crops what a search over the whole file crops (brute force here:
    /// every start's energy summed afresh, the first loudest, then moved to centre its energy), across block
    /// boundaries; short files come back whole.
    func testLoudestStretchStreamsTheSameStretchAsTheWholeFile() throws {
        for name in ["stereo44k.wav", "pcm16.flac", "ulaw8k.wav"] {
            let whole = try AudioFile.read(file(name))
            for count in [1, 37, 100, 333, whole.count - 1, whole.count, whole.count + 5] {
                let got = try AudioFile.loudestStretch(file(name), count: count, blockSeconds: 0.013)
                if count >= whole.count { XCTAssertEqual(got, whole, "\(name), \(count)"); continue }
                let energies = (0...(whole.count - count)).map { s in whole[s..<(s + count)].reduce(0.0) { $0 + Double($1 * $1) } }
                let loudest = energies.firstIndex(of: energies.max()!)!
                let stretch = whole[loudest..<(loudest + count)].map { Double($0 * $0) }
                let centroid = zip(stretch.indices, stretch).reduce(0.0) { $0 + Double($1.0) * $1.1 } / stretch.reduce(0, +)
                let start = min(max(loudest + Int((centroid - Double(count - 1) / 2).rounded()), 0), whole.count - count)
                XCTAssertEqual(got, Array(whole[start..<(start + count)]), "\(name), \(count)")
            }
        }
    }

    /// The speech apps never load a long recording whole: past `streamingSeconds` the clip comes from
    /// `loudestStretch`, and it is the clip `ClipFrontEnd.fit` crops from the whole file.
    func testLongRecordingsAreCroppedByStreaming() throws {
        // 3 s of quiet noise at 16 kHz with a loud 0.4 s burst at 2.1 s, as 16-bit PCM WAV.
        var rng = RNG(seed: 9)
        let pcm: [Int16] = (0..<48000).map { i in
            let loud = (33600..<40000).contains(i)
            return Int16(rng.uniform(-1, 1) * (loud ? 20000 : 300))
        }
        var wav = Data("RIFF".utf8)
        func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { wav.append(contentsOf: $0) } }
        le(UInt32(36 + pcm.count * 2)); wav.append(contentsOf: Data("WAVEfmt ".utf8))
        le(UInt32(16)); le(UInt16(1)); le(UInt16(1)); le(UInt32(16000)); le(UInt32(32000)); le(UInt16(2)); le(UInt16(16))
        wav.append(contentsOf: Data("data".utf8)); le(UInt32(pcm.count * 2))
        for v in pcm { le(v) }
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("long-\(getpid()).wav")
        try wav.write(to: url)
        defer { try? FileManager.default.removeItem(at: url) }
        let frontEnd = ClipFrontEnd()
        let expected = frontEnd.fit(try AudioFile.read(url))
        let streamed = try DecodedAudio(streamingSeconds: 1).clip(url, frontEnd)
        XCTAssertEqual(streamed, expected)
        XCTAssertEqual(try DecodedAudio().clip(url, frontEnd), expected)
        // The loud burst is inside the crop.
        XCTAssertGreaterThan(streamed.map { abs($0) }.max()!, 10000)
    }

    func testReadRefusesFilesOverTheDurationCap() throws {
        XCTAssertThrowsError(try AudioFile.read(file("pcm16.wav"), maximumDuration: 0.01)) { error in
            guard case let EngineError.invalidFile(path, problem) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(path, self.file("pcm16.wav").path)
            XCTAssertTrue(problem.contains("AudioFile.windows"), problem)
        }
        XCTAssertEqual(try AudioFile.read(file("pcm16.wav"), maximumDuration: 0.025).count, 400)
    }

    func testBrokenFilesThrowOneClearError() throws {
        let broken: [(String, String)] = [
            ("empty.wav", "is empty"),
            ("truncated_header.wav", "cannot be read as audio"),
            ("garbage.wav", "cannot be read as audio"),
            ("not_audio.flac", "cannot be read as audio"),
            ("zero_frames.wav", "no audio samples"),
            ("truncated.flac", "is corrupt or truncated: flac decoder lost sync"),
            // The header promises 400 frames, the file holds 150 (libsndfile would read those and say nothing).
            ("truncated_data.wav", "is truncated: its header declares 800 bytes of audio, the file holds 300"),
            ("corrupt.ogg", "malformed"),
            ("missing.wav", "no such file"),
        ]
        for (name, phrase) in broken {
            XCTAssertThrowsError(try AudioFile.read(file(name)), name) { error in
                guard case let EngineError.invalidFile(path, problem) = error else { return XCTFail("\(name): \(error)") }
                XCTAssertEqual(path, self.file(name).path)
                XCTAssertTrue(problem.contains(phrase), "\(name): '\(problem)' should contain '\(phrase)'")
                print("AudioFileTests: \(error)")
            }
        }
        XCTAssertThrowsError(try AudioFile.read(Self.corpus)) { error in
            XCTAssertTrue("\(error)".contains("is a directory"), "\(error)")
        }
        // A recording still being written declares an unknown length (0xFFFFFFFF): read as far as it goes.
        var streamed = try Data(contentsOf: file("pcm16.wav"))
        let data = streamed.range(of: Data("data".utf8))!.upperBound
        streamed.replaceSubrange(data..<(data + 4), with: [0xFF, 0xFF, 0xFF, 0xFF])
        XCTAssertEqual(try AudioFile.read(data: streamed, name: "streamed.wav"), try AudioFile.read(file("pcm16.wav")))
    }
}
