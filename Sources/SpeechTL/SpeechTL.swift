import TransferEngine

/// Speech commands from audio files (log-mel front-end + Google's speech_embedding).
public enum SpeechTL {
    public static let appName = "speech-tl"
    public static let summary = "Transfer learning for speech commands from WAV/FLAC/OGG files (Google speech_embedding)."
}
