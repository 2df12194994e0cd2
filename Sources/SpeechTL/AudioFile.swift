import CSndFile
import Foundation
import TransferEngine

/// What a file holds, as libsndfile reports it (before mixing and resampling).
public struct AudioInfo: Equatable, Sendable {
    public let path: String
    public let sampleRate: Int
    public let channels: Int
    /// Frames (samples per channel) in the file.
    public let frames: Int
    /// libsndfile's names for the container and the encoding, e.g. "WAV (Microsoft), Signed 16 bit PCM".
    public let format: String

    public var duration: Double { Double(frames) / Double(sampleRate) }
}

/// One stretch of a long file from `AudioFile.windows`.
public struct AudioWindow: Sendable {
    /// Position among the windows (0, 1, ...).
    public let index: Int
    /// Start time in seconds.
    public let start: Double
    /// Mono samples at int16 scale and the reader's sample rate; the last window may be shorter.
    public let samples: [Float]
}

/// Audio input through libsndfile: WAV (PCM 8/16/24/32-bit, float, u-law, A-law), FLAC, OGG/Vorbis and the
/// rest of what libsndfile reads, returned as mono Float samples at **int16 scale** (full scale = 32768),
/// resampled to 16 kHz by `Resampler`.
///
/// Why int16 scale: openWakeWord feeds int16 PCM values (cast to float) to the mel front-end, whose dB
/// values depend on the absolute level. Integer PCM read this way is exact (a 16-bit sample v gives v; 8-bit
/// gives v * 256; 24- and 32-bit keep their extra bits as a fraction). Channels are mixed by their mean.
///
/// Every failure (missing, empty, truncated, corrupt or unsupported file, no frames, too long) throws
/// `EngineError.invalidFile(path, problem)` with libsndfile's reason in words; nothing crashes.
public enum AudioFile {
    /// The rate the speech front-end expects.
    public static let sampleRate = 16000
    /// libsndfile reads PCM as [-1, 1); this brings it back to int16 values.
    public static let int16Scale: Float = 32768
    /// `read` refuses files longer than this by default (10 minutes = 38 MB of samples); use `windows`.
    public static let defaultMaximumDuration: Double = 600
    /// Frames per `sf_readf_float` call.
    static let blockFrames = 1 << 15

    /// Header information without reading the samples.
    public static func info(_ url: URL) throws -> AudioInfo {
        try SoundFile(url).info
    }

    /// The whole file as mono samples at int16 scale and `sampleRate` Hz.
    /// - Parameter maximumDuration: seconds; longer files throw and point to `windows`, which streams.
    public static func read(_ url: URL, sampleRate: Int = AudioFile.sampleRate,
                            maximumDuration: Double = AudioFile.defaultMaximumDuration) throws -> [Float] {
        try read(SoundFile(url), sampleRate: sampleRate, maximumDuration: maximumDuration)
    }

    /// `read` for a file's bytes held in memory (through `sf_open_virtual`); errors name `name`.
    public static func read(data: Data, name: String, sampleRate: Int = AudioFile.sampleRate,
                            maximumDuration: Double = AudioFile.defaultMaximumDuration) throws -> [Float] {
        try read(SoundFile(data: data, name: name), sampleRate: sampleRate, maximumDuration: maximumDuration)
    }

    static func read(_ file: SoundFile, sampleRate: Int, maximumDuration: Double) throws -> [Float] {
        let info = file.info
        func tooLong(_ seconds: Double) -> EngineError {
            .invalidFile(info.path, String(format: "is %.1f s long, over the %.0f s limit of AudioFile.read; "
                + "read long recordings in pieces with AudioFile.windows(url, seconds:)", seconds, maximumDuration))
        }
        if info.duration > maximumDuration { throw tooLong(info.duration) }
        let resampler = try resampler(info, to: sampleRate)
        var out: [Float] = []
        out.reserveCapacity(resampler?.outputLength(forInput: info.frames) ?? info.frames)
        var framesRead = 0
        while true {
            let block = try file.readMono(maxFrames: blockFrames)
            if block.isEmpty { break }
            framesRead += block.count
            // The header's frame count can understate (e.g. a streamed WAV); keep the promise anyway.
            if Double(framesRead) / Double(info.sampleRate) > maximumDuration {
                throw tooLong(Double(framesRead) / Double(info.sampleRate))
            }
            if let r = resampler { out += r.process(block) } else { out += block }
        }
        if framesRead == 0 { throw EngineError.invalidFile(info.path, "holds no audio samples (0 frames could be decoded)") }
        if let r = resampler { out += r.finish() }
        return out
    }

    /// Largest reduced term of the rate ratio `Resampler` is asked to convert: its phase bank holds about
    /// 100 * max(up, down) coefficients, so a rate coprime with the target (e.g. 720897 Hz -> 16 kHz) would
    /// take 576 MB and minutes to build (found by fuzz-audio). 11127 Hz -> 16 kHz (16000/11127) still passes.
    static let maximumRatioTerm = 20_000

    /// The converter from the file's rate to `rate`, nil when they are equal.
    static func resampler(_ info: AudioInfo, to rate: Int) throws -> Resampler? {
        if info.sampleRate == rate { return nil }
        let g = Resampler.gcd(info.sampleRate, rate)
        guard max(info.sampleRate / g, rate / g) <= maximumRatioTerm else {
            throw EngineError.invalidFile(info.path, "declares a sample rate of \(info.sampleRate) Hz, which cannot be "
                + "converted to \(rate) Hz with a filter of reasonable size (ratio \(rate / g)/\(info.sampleRate / g)); resample it first")
        }
        return Resampler(from: info.sampleRate, to: rate)
    }

    /// `count` samples of a file around its loudest stretch, centred on that stretch's energy (mono, int16 scale,
    /// `sampleRate` Hz; `LoudestStretch.centredStart`), or the whole file when it is shorter; the same samples
    /// `ClipFrontEnd.fit` crops from the whole file. Files of any length: two streaming passes (find the stretch,
    /// then copy the samples around it) hold about twice `count` samples plus one block.
    public static func loudestStretch(_ url: URL, count: Int, sampleRate: Int = AudioFile.sampleRate,
                                      blockSeconds: Double = 10) throws -> [Float] {
        var search = LoudestStretch(count: count)
        try windows(url, seconds: blockSeconds, sampleRate: sampleRate).forEach { search.add($0.samples) }
        if search.seen <= count { return search.recent }
        // Every start `centredStart` can return lies within half a stretch of the loudest one.
        let first = max(search.bestStart - count / 2 - 1, 0), end = min(search.bestStart + count + count / 2 + 1, search.seen)
        var region: [Float] = []
        region.reserveCapacity(end - first)
        var position = 0
        let reader = try windows(url, seconds: blockSeconds, sampleRate: sampleRate)
        while position < end, let w = try reader.next() {
            let lo = max(first - position, 0), hi = min(end - position, w.samples.count)
            if lo < hi { region += w.samples[lo..<hi] }
            position += w.samples.count
        }
        reader.close()
        guard region.count == end - first else {
            throw EngineError.invalidFile(url.path, "changed while it was read (\(position) samples on the second pass, \(search.seen) on the first)")
        }
        let start = LoudestStretch.centredStart(bestStart: search.bestStart, count: count, total: search.seen) { region[$0 - first] }
        return Array(region[(start - first)..<(start - first + count)])
    }

    /// Streams a file of any length as consecutive windows of `seconds` (the last one may be shorter), mono at
    /// int16 scale and `sampleRate` Hz. Only about one window is held in memory. The windows, concatenated, are
    /// exactly what `read` returns.
    public static func windows(_ url: URL, seconds: Double, sampleRate: Int = AudioFile.sampleRate) throws -> AudioWindowReader {
        guard seconds > 0, seconds.isFinite else {
            throw EngineError.invalidArgument("AudioFile.windows: window length must be positive seconds, got \(seconds)")
        }
        return try AudioWindowReader(file: SoundFile(url), seconds: seconds, sampleRate: sampleRate)
    }
}

/// Consecutive windows of one audio file (see `AudioFile.windows`). `next()` returns nil at the end; the file
/// is closed then, on any error, or by `close()`.
public final class AudioWindowReader {
    public let info: AudioInfo
    /// Output samples per window.
    public let windowLength: Int
    public let sampleRate: Int

    private var file: SoundFile?
    private let resampler: Resampler?
    private var pending: [Float] = []
    private var index = 0
    private var emitted = 0
    private var framesRead = 0

    init(file: SoundFile, seconds: Double, sampleRate: Int) throws {
        self.file = file
        info = file.info
        self.sampleRate = sampleRate
        windowLength = max(1, Int((seconds * Double(sampleRate)).rounded()))
        resampler = try AudioFile.resampler(info, to: sampleRate)
    }

    /// The next window, or nil after the last.
    public func next() throws -> AudioWindow? {
        while pending.count < windowLength, let f = file {
            let block: [Float]
            do { block = try f.readMono(maxFrames: max(AudioFile.blockFrames, windowLength)) } catch { close(); throw error }
            if block.isEmpty {
                close()
                if framesRead == 0 {
                    throw EngineError.invalidFile(info.path, "holds no audio samples (0 frames could be decoded)")
                }
                if let r = resampler { pending += r.finish() }
            } else {
                framesRead += block.count
                if let r = resampler { pending += r.process(block) } else { pending += block }
            }
        }
        if pending.isEmpty { return nil }
        let n = min(windowLength, pending.count)
        let w = AudioWindow(index: index, start: Double(emitted) / Double(sampleRate), samples: Array(pending[0..<n]))
        pending.removeFirst(n)
        index += 1
        emitted += n
        return w
    }

    /// Calls `body` with every remaining window.
    public func forEach(_ body: (AudioWindow) throws -> Void) throws {
        while let w = try next() { try body(w) }
    }

    public func close() { file = nil }
}

/// An open libsndfile handle; closed when released, so every exit path closes it.
final class SoundFile {
    let info: AudioInfo
    private let handle: OpaquePointer
    private let channels: Int
    private var interleaved: [Float] = []
    /// The bytes a virtual (in-memory) file reads from; they must outlive the handle.
    private let memory: MemoryFile?
    /// A WAV cut short (bytes its header declares, bytes it holds): an error once its samples are read, so that
    /// what the samples themselves show (not finite, absurd magnitudes) is reported first.
    private var truncation: (declared: Int, held: Int)? = nil

    convenience init(_ url: URL) throws {
        let path = url.path
        try InputFile.requireRegular(url, what: "an audio file")   // sf_open would block on a FIFO
        if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber, size.intValue == 0 {
            throw EngineError.invalidFile(path, "is empty (0 bytes)")
        }
        try self.init(path: path, memory: nil) { sf_open(path, Int32(SFM_READ), &$0) }
    }

    /// A file held in memory, read through `sf_open_virtual`; `name` is what errors report.
    convenience init(data: Data, name: String) throws {
        if data.isEmpty { throw EngineError.invalidFile(name, "is empty (0 bytes)") }
        let memory = MemoryFile(data)
        try self.init(path: name, memory: memory) { info in
            var io = MemoryFile.io
            return sf_open_virtual(&io, Int32(SFM_READ), &info, Unmanaged.passUnretained(memory).toOpaque())
        }
    }

    private init(path: String, memory: MemoryFile?, open: (inout SF_INFO) -> OpaquePointer?) throws {
        self.memory = memory
        var sfInfo = SF_INFO()
        guard let h = open(&sfInfo) else {
            throw EngineError.invalidFile(path, "cannot be read as audio: " + SoundFile.readable(sf_strerror(nil)))
        }
        handle = h
        channels = Int(sfInfo.channels)
        // From here on deinit closes the handle, whatever is thrown.
        info = AudioInfo(path: path, sampleRate: Int(sfInfo.samplerate), channels: Int(sfInfo.channels),
                         frames: sfInfo.frames == Int64.max ? 0 : Int(max(0, sfInfo.frames)),
                         format: SoundFile.formatName(sfInfo.format))
        // The resampler's filter grows with the rate ratio: an absurd rate would allocate without bound.
        guard (SoundFile.sampleRates).contains(Int(sfInfo.samplerate)) else {
            throw EngineError.invalidFile(path, "declares a sample rate of \(sfInfo.samplerate) Hz (readable: \(SoundFile.sampleRates.lowerBound)-\(SoundFile.sampleRates.upperBound) Hz)")
        }
        guard sfInfo.channels > 0 else { throw EngineError.invalidFile(path, "declares \(sfInfo.channels) channels") }
        if sfInfo.frames == 0 { throw EngineError.invalidFile(path, "holds no audio samples (0 frames)") }
        var log = [CChar](repeating: 0, count: 1 << 14)
        sf_command(h, Int32(SFC_GET_LOG_INFO), &log, Int32(log.count))
        truncation = SoundFile.truncatedData(String(cString: log))
    }

    /// A WAV whose data chunk is cut short: libsndfile reads what is there and notes "data : 32000 (should be
    /// 19956)" in its log (FLAC and Ogg cut short fail to decode instead). Declared sizes from 2^31 - 1 up are
    /// the "length unknown" of a recording still being written, and a missing pad byte is not a cut.
    static func truncatedData(_ log: String) -> (declared: Int, held: Int)? {
        for line in log.split(separator: "\n") where line.hasPrefix("data : ") {
            let numbers = line.split { !$0.isNumber }.compactMap { Int($0) }
            guard line.contains("(should be "), numbers.count == 2 else { continue }
            let (declared, held) = (numbers[0], numbers[1])
            if declared < 0x7FFF_FFFF, declared - held > 1 { return (declared, held) }
        }
        return nil
    }

    deinit { sf_close(handle) }

    /// Largest accepted sample magnitude at int16 scale (a million times full scale; float files only can exceed it).
    static let maximumMagnitude: Float = 1e6 * AudioFile.int16Scale

    /// Sample rates the reader accepts (telephone 1 kHz up to 768 kHz studio formats).
    static let sampleRates = 1000...768_000

    /// Up to `maxFrames` frames mixed to mono at int16 scale; empty at the end of the file.
    func readMono(maxFrames: Int) throws -> [Float] {
        let c = channels
        if interleaved.count < maxFrames * c { interleaved = [Float](repeating: 0, count: maxFrames * c) }
        let got = Int(interleaved.withUnsafeMutableBufferPointer { sf_readf_float(handle, $0.baseAddress, sf_count_t(maxFrames)) })
        let status = sf_error(handle)
        if status != 0 {
            throw EngineError.invalidFile(info.path, "is corrupt or truncated: " + SoundFile.readable(sf_strerror(handle)))
        }
        if got <= 0 {
            if let (declared, held) = truncation {
                throw EngineError.invalidFile(info.path, "is truncated: its header declares \(declared) bytes of audio, the file holds \(held)")
            }
            return []
        }
        var out = [Float](repeating: 0, count: got)
        let scale = AudioFile.int16Scale / Float(c)
        var finite = true, peak: Float = 0
        interleaved.withUnsafeBufferPointer { src in
            for i in 0..<got {
                var s: Float = 0
                for ch in 0..<c { s += src[i * c + ch] }
                out[i] = s * scale
                finite = finite && out[i].isFinite
                peak = max(peak, abs(out[i]))
            }
        }
        // A float file can hold NaN or infinity; features computed from them are garbage.
        guard finite else { throw EngineError.invalidFile(info.path, "holds samples that are not finite numbers (NaN or infinity)") }
        // So can absurd magnitudes: their power overflows Float in the mel front end (found by fuzzing).
        guard peak <= SoundFile.maximumMagnitude else {
            throw EngineError.invalidFile(info.path, String(format: "holds samples of magnitude %g, over %g times full scale (not audio)",
                                                            Double(peak / AudioFile.int16Scale), Double(SoundFile.maximumMagnitude / AudioFile.int16Scale)))
        }
        return out
    }

    /// libsndfile's message without the trailing full stop and with a lower-case start, to follow "file: ".
    static func readable(_ message: UnsafePointer<CChar>?) -> String {
        var text = message.map { String(cString: $0) }?.trimmingCharacters(in: .whitespacesAndNewlines) ?? ""
        if text.isEmpty { return "unknown libsndfile error" }
        text = text.replacingOccurrences(of: "\n", with: " ")
        // Decoder messages come as "Error : flac decoder lost sync."
        for prefix in ["Error : ", "error : ", "Error: "] where text.hasPrefix(prefix) { text.removeFirst(prefix.count) }
        if text.hasSuffix(".") { text.removeLast() }
        return text.prefix(1).lowercased() + text.dropFirst()
    }

    /// File extensions of the audio formats the installed libsndfile reads, from its own format tables: WAV
    /// (`wav`, `wave`), FLAC, Ogg Vorbis (`ogg`, `oga`), Opus (`opus`, when its Opus codec is built in), MP3
    /// (`mp3`, when its MPEG codec is), AIFF (`aif`, `aiff`, `aifc`), AU (`au`, `snd`), CAF, W64, RF64. Exotic
    /// formats libsndfile also opens (VOC, IRCAM, MAT, ...) are not listed by extension (their extensions name
    /// other things in a data folder) but are read when named in a CSV.
    static let readableExtensions: Set<String> = {
        func formats(count: Int32, get: Int32) -> [Int32] {
            var n: Int32 = 0
            sf_command(nil, count, &n, Int32(MemoryLayout<Int32>.size))
            return (0..<max(n, 0)).compactMap { i in
                var f = SF_FORMAT_INFO(format: i, name: nil, extension: nil)
                return sf_command(nil, get, &f, Int32(MemoryLayout<SF_FORMAT_INFO>.size)) == 0 ? f.format : nil
            }
        }
        let majors = Set(formats(count: Int32(SFC_GET_FORMAT_MAJOR_COUNT), get: Int32(SFC_GET_FORMAT_MAJOR)))
        let subtypes = Set(formats(count: Int32(SFC_GET_FORMAT_SUBTYPE_COUNT), get: Int32(SFC_GET_FORMAT_SUBTYPE)))
        let byMajor: [(Int32, [String])] = [
            (Int32(SF_FORMAT_WAV), ["wav", "wave"]), (Int32(SF_FORMAT_FLAC), ["flac"]), (Int32(SF_FORMAT_OGG), ["ogg", "oga"]),
            (Int32(SF_FORMAT_AIFF), ["aif", "aiff", "aifc"]), (Int32(SF_FORMAT_AU), ["au", "snd"]), (Int32(SF_FORMAT_CAF), ["caf"]),
            (Int32(SF_FORMAT_W64), ["w64"]), (Int32(SF_FORMAT_RF64), ["rf64"]), (Int32(SF_FORMAT_MPEG), ["mp3", "mp2"]),
        ]
        var out = Set(byMajor.filter { majors.contains($0.0) }.flatMap(\.1))
        if majors.contains(Int32(SF_FORMAT_OGG)) && subtypes.contains(Int32(SF_FORMAT_OPUS)) { out.insert("opus") }
        return out
    }()

    /// "Container, encoding" from libsndfile's own format tables.
    static func formatName(_ format: Int32) -> String {
        func name(_ code: Int32) -> String? {
            var f = SF_FORMAT_INFO(format: code, name: nil, extension: nil)
            guard sf_command(nil, Int32(SFC_GET_FORMAT_INFO), &f, Int32(MemoryLayout<SF_FORMAT_INFO>.size)) == 0, let n = f.name else { return nil }
            return String(cString: n)
        }
        let major = name(format & Int32(SF_FORMAT_TYPEMASK))
        let minor = name(format & Int32(SF_FORMAT_SUBMASK))
        return [major, minor].compactMap { $0 }.joined(separator: ", ")
    }
}

/// Bytes read by libsndfile through `SF_VIRTUAL_IO` (read-only: `write` writes nothing).
final class MemoryFile {
    let bytes: [UInt8]
    var position = 0

    init(_ data: Data) { bytes = [UInt8](data) }

    private static func file(_ user: UnsafeMutableRawPointer?) -> MemoryFile {
        Unmanaged<MemoryFile>.fromOpaque(user!).takeUnretainedValue()
    }

    static let io = SF_VIRTUAL_IO(
        get_filelen: { user in sf_count_t(file(user).bytes.count) },
        seek: { offset, whence, user in
            let f = file(user)
            let base: Int
            switch whence {
            case SEEK_CUR: base = f.position
            case SEEK_END: base = f.bytes.count
            default: base = 0
            }
            let (target, overflow) = base.addingReportingOverflow(Int(offset))
            guard !overflow, target >= 0 else { return -1 }
            f.position = target
            return sf_count_t(target)
        },
        read: { destination, count, user in
            let f = file(user)
            guard let destination, count > 0, f.position < f.bytes.count else { return 0 }
            let n = min(Int(count), f.bytes.count - f.position)
            f.bytes.withUnsafeBytes { destination.copyMemory(from: $0.baseAddress! + f.position, byteCount: n) }
            f.position += n
            return sf_count_t(n)
        },
        write: { _, _, _ in 0 },
        tell: { user in sf_count_t(file(user).position) })
}

/// The first `count`-sample stretch with the largest energy in a stream of samples (energy as a running sum in
/// Double; a later stretch must beat the best by more than 1e-9 to replace it).
struct LoudestStretch {
    let count: Int
    /// Samples seen so far.
    private(set) var seen = 0
    /// Start of the best stretch (0 until `count` samples were seen).
    private(set) var bestStart = 0
    private var ring: [Float]
    private var energy = 0.0
    private var best = 0.0

    init(count: Int) {
        precondition(count > 0, "LoudestStretch: count must be positive")
        self.count = count
        ring = [Float](repeating: 0, count: count)
    }

    mutating func add<C: Collection>(_ samples: C) where C.Element == Float {
        for x in samples {
            let slot = seen % count
            if seen < count {
                energy += Double(x * x)
            } else {
                let old = ring[slot]
                energy += Double(x * x) - Double(old * old)
            }
            ring[slot] = x
            seen += 1
            if seen == count {
                best = energy
            } else if seen > count && energy > best + 1e-9 {
                best = energy
                bestStart = seen - count
            }
        }
    }

    /// Where to crop `count` of `total` samples: the loudest stretch (at `bestStart`) moved so that the centre of
    /// its energy is in the middle, within the recording. Equally loud stretches (a word shorter than `count` in
    /// silence: every stretch holding the whole word) resolve to the first, which has the word at its right edge;
    /// centring puts the word where it is in a clip of exactly `count` samples. `sample(i)` is sample i of the
    /// recording, asked for i in the loudest stretch only.
    static func centredStart(bestStart: Int, count: Int, total: Int, sample: (Int) -> Float) -> Int {
        var energy = 0.0, moment = 0.0
        for i in 0..<count {
            let x = Double(sample(bestStart + i))
            energy += x * x
            moment += Double(i) * x * x
        }
        guard energy > 0 else { return bestStart }
        let shift = Int((moment / energy - Double(count - 1) / 2).rounded())
        return min(max(bestStart + shift, 0), total - count)
    }

    /// The last min(seen, count) samples, oldest first.
    var recent: [Float] {
        if seen <= count { return Array(ring[0..<seen]) }
        let slot = seen % count
        return Array(ring[slot...] + ring[..<slot])
    }
}
