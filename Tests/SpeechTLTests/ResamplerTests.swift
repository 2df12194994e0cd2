import Foundation
import XCTest
import TransferEngine
@testable import SpeechTL

/// The band-limited resampler: aliasing, imaging and passband flatness measured on tones, a sweep above the
/// new Nyquist, and streaming equivalence. Stated bounds: >= 60 dB attenuation of everything above the lower
/// Nyquist (the design is 80 dB), passband within +-0.01 dB up to 0.9 x the lower Nyquist.
final class ResamplerTests: XCTestCase {
    static func tone(_ f: Double, rate: Int, seconds: Double, amplitude: Double = 1) -> [Float] {
        (0..<Int(Double(rate) * seconds)).map { Float(amplitude * sin(2 * Double.pi * f * Double($0) / Double(rate))) }
    }

    static func rms(_ x: ArraySlice<Float>) -> Double {
        (x.reduce(0.0) { $0 + Double($1) * Double($1) } / Double(max(1, x.count))).squareRoot()
    }

    /// Output samples far enough from both ends that the zero padding outside the signal plays no part.
    static func middle(_ y: [Float], _ r: Resampler) -> ArraySlice<Float> {
        let margin = (r.reach * r.up + r.down - 1) / r.down + 2
        return y[margin..<(y.count - margin)]
    }

    func testTonesAboveTheNewNyquistAreRemoved() {
        var worst = -Double.infinity, worstCase = ""
        for inputRate in [44100, 48000, 22050] {
            let r = Resampler(from: inputRate, to: 16000)
            for f in [8000.0, 8100, 9000, 10000, 12000, 15000, 20000] where f < Double(inputRate) / 2 {
                let x = Self.tone(f, rate: inputRate, seconds: 0.1)
                let y = Resampler.resample(x, from: inputRate, to: 16000)
                let db = 20 * log10(Self.rms(Self.middle(y, r)) / Self.rms(x[...]))
                if db > worst { (worst, worstCase) = (db, "\(Int(f)) Hz at \(inputRate) Hz") }
                XCTAssertLessThan(db, -60, "\(f) Hz from \(inputRate) Hz aliases at \(db) dB")
            }
        }
        print(String(format: "ResamplerTests: worst aliased tone %.1f dB (%@)", worst, worstCase))
    }

    func testSweepAboveTheNewNyquistIsRemoved() {
        // Linear chirp 8.05 -> 22 kHz at 44.1 kHz: every frequency that would fold into 0-8 kHz.
        let rate = 44100.0, seconds = 0.2, f0 = 8050.0, f1 = 22000.0
        let x = (0..<Int(rate * seconds)).map { i -> Float in
            let t = Double(i) / rate
            return Float(sin(2 * Double.pi * (f0 * t + (f1 - f0) * t * t / (2 * seconds))))
        }
        let r = Resampler(from: 44100, to: 16000)
        let y = Resampler.resample(x, from: 44100, to: 16000)
        let db = 20 * log10(Self.rms(Self.middle(y, r)) / Self.rms(x[...]))
        print(String(format: "ResamplerTests: sweep 8.05-22 kHz at 44.1 kHz -> 16 kHz: %.1f dB", db))
        XCTAssertLessThan(db, -60)
    }

    func testPassbandIsFlat() {
        var worst = 0.0
        for (inputRate, outputRate) in [(44100, 16000), (48000, 16000), (8000, 16000)] {
            let lowerNyquist = Double(min(inputRate, outputRate)) / 2
            let r = Resampler(from: inputRate, to: outputRate)
            for fraction in [0.0125, 0.1, 0.3, 0.5, 0.7, 0.85, 0.9] {
                let f = fraction * lowerNyquist
                let y = Resampler.resample(Self.tone(f, rate: inputRate, seconds: 0.1), from: inputRate, to: outputRate)
                let m = Self.middle(y, r)
                // Fit sin/cos at f on the output grid, starting at the slice's first sample.
                let start = m.startIndex
                let fit = AudioFileTests.fitTone(m, frequency: f, rate: Double(outputRate))
                let gainDB = 20 * log10(fit.amplitude)
                worst = max(worst, abs(gainDB))
                XCTAssertEqual(gainDB, 0, accuracy: 0.01, "\(f) Hz, \(inputRate) -> \(outputRate) (from \(start))")
                // Whatever is not the tone (distortion, images) is far down.
                XCTAssertLessThan(20 * log10(fit.residual * 2.squareRoot()), -60, "\(f) Hz residual")
            }
        }
        print(String(format: "ResamplerTests: worst passband deviation %.4f dB (up to 0.9 x lower Nyquist)", worst))
    }

    func testUpsamplingLeavesNoImage() {
        // 3 kHz at 8 kHz: the zero-stuffed signal has an image at 5 kHz, which must be gone at 16 kHz.
        let r = Resampler(from: 8000, to: 16000)
        let y = Resampler.resample(Self.tone(3000, rate: 8000, seconds: 0.1), from: 8000, to: 16000)
        let fit = AudioFileTests.fitTone(Self.middle(y, r), frequency: 3000, rate: 16000)
        let imageDB = 20 * log10(fit.residual * 2.squareRoot() / fit.amplitude)
        print(String(format: "ResamplerTests: 8 -> 16 kHz image of a 3 kHz tone: %.1f dB", imageDB))
        XCTAssertLessThan(imageDB, -60)
    }

    func testStreamingInBlocksEqualsOneCall() {
        var rng = RNG(seed: 5)
        let x = (0..<5000).map { _ in rng.uniform(-1, 1) }
        for (a, b) in [(44100, 16000), (8000, 16000), (22050, 16000), (16000, 16000), (11025, 16000)] {
            let whole = Resampler.resample(x, from: a, to: b)
            let r = Resampler(from: a, to: b)
            XCTAssertEqual(whole.count, r.outputLength(forInput: x.count))
            XCTAssertEqual(whole.count, Int((Double(x.count) * Double(b) / Double(a)).rounded(.up)))
            var streamed: [Float] = [], i = 0
            for size in [1, 7, 0, 300, 2, 1000, 64] + Array(repeating: 997, count: 10) where i < x.count {
                let j = min(x.count, i + size)
                streamed += r.process(Array(x[i..<j]))
                i = j
            }
            streamed += r.finish()
            XCTAssertEqual(streamed, whole, "\(a) -> \(b)")
        }
    }

    func testRatiosAndUnitDCGain() {
        let r = Resampler(from: 44100, to: 16000)
        XCTAssertEqual([r.up, r.down], [160, 441])
        XCTAssertEqual([Resampler(from: 22050, to: 16000).up, Resampler(from: 22050, to: 16000).down], [320, 441])
        let y = Resampler.resample([Float](repeating: 1, count: 2000), from: 44100, to: 16000)
        for v in Self.middle(y, r) { XCTAssertEqual(v, 1, accuracy: 1e-5) }
        XCTAssertEqual(Resampler.resample([1, 2, 3], from: 16000, to: 16000), [1, 2, 3])
        XCTAssertEqual(Resampler.resample([], from: 44100, to: 16000), [])
    }
}
