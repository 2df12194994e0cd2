import TransferEngine

/// Sentiment and other text classification (WordPiece + all-MiniLM-L6-v2).
public enum TextTL {
    public static let appName = "text-tl"
    public static let summary = "Transfer learning for text classification from TSV/CSV/JSONL tables or text folders (all-MiniLM-L6-v2)."
}
