import TransferEngine

/// Image classification from PNG and JPEG files (EfficientNet-Lite0 backbone).
public enum VisionTL {
    public static let appName = "vision-tl"
    public static let summary = "Transfer learning for image classification from PNG and JPEG files (EfficientNet-Lite0, ImageNet)."
}
