import Foundation

/// An RGB canvas for report plots: anti-aliased lines and markers, rectangles, and text in a built-in 5x7
/// bitmap font (ASCII; anything else draws as '?'), scaled by whole pixels. Coordinates are pixels with the
/// origin at the top-left; pixel (x, y) covers the square [x, x+1) x [y, y+1), so its centre is (x+0.5, y+0.5).
public struct Raster: Sendable {
    public struct Color: Equatable, Sendable {
        public var r, g, b: UInt8
        public init(_ r: UInt8, _ g: UInt8, _ b: UInt8) { self.r = r; self.g = g; self.b = b }

        public static let white = Color(255, 255, 255)
        public static let black = Color(0, 0, 0)
        public static let grey = Color(128, 128, 128)
        public static let lightGrey = Color(225, 225, 225)

        /// Ten well-separated series colours (matplotlib's "tab10" order); wraps around.
        public static func series(_ i: Int) -> Color { palette[((i % palette.count) + palette.count) % palette.count] }
        static let palette: [Color] = [
            Color(31, 119, 180), Color(255, 127, 14), Color(44, 160, 44), Color(214, 39, 40), Color(148, 103, 189),
            Color(140, 86, 75), Color(227, 119, 194), Color(127, 127, 127), Color(188, 189, 34), Color(23, 190, 207),
        ]

        /// Linear mix: `t` = 0 gives `self`, 1 gives `other`.
        public func mixed(with other: Color, _ t: Double) -> Color {
            let t = min(1, max(0, t))
            func m(_ a: UInt8, _ b: UInt8) -> UInt8 { UInt8((Double(a) * (1 - t) + Double(b) * t).rounded()) }
            return Color(m(r, other.r), m(g, other.g), m(b, other.b))
        }

        /// Perceived brightness in 0...1 (Rec. 601 weights), to pick readable text over a fill.
        public var luminance: Double { (0.299 * Double(r) + 0.587 * Double(g) + 0.114 * Double(b)) / 255 }
    }

    public enum Marker: CaseIterable, Sendable { case disc, square, triangle, diamond }

    public let width: Int
    public let height: Int
    /// Interleaved RGB bytes, rows top to bottom (`width * height * 3`).
    public private(set) var pixels: [UInt8]

    public init(width: Int, height: Int, background: Color = .white) {
        precondition(width > 0 && height > 0, "Raster: size \(width)x\(height) must be positive")
        self.width = width
        self.height = height
        pixels = [UInt8](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            pixels[3 * i] = background.r
            pixels[3 * i + 1] = background.g
            pixels[3 * i + 2] = background.b
        }
    }

    public subscript(x x: Int, y y: Int) -> Color {
        get {
            precondition(x >= 0 && x < width && y >= 0 && y < height, "Raster: pixel (\(x), \(y)) outside \(width)x\(height)")
            let o = 3 * (y * width + x)
            return Color(pixels[o], pixels[o + 1], pixels[o + 2])
        }
        set { blend(x, y, newValue, 1) }
    }

    /// Mixes `color` into pixel (x, y) with opacity `alpha`; pixels outside the canvas are ignored.
    public mutating func blend(_ x: Int, _ y: Int, _ color: Color, _ alpha: Double) {
        guard x >= 0 && x < width && y >= 0 && y < height && alpha > 0 else { return }
        let o = 3 * (y * width + x)
        if alpha >= 1 {
            pixels[o] = color.r; pixels[o + 1] = color.g; pixels[o + 2] = color.b
            return
        }
        func m(_ old: UInt8, _ new: UInt8) -> UInt8 { UInt8((Double(old) * (1 - alpha) + Double(new) * alpha).rounded()) }
        pixels[o] = m(pixels[o], color.r)
        pixels[o + 1] = m(pixels[o + 1], color.g)
        pixels[o + 2] = m(pixels[o + 2], color.b)
    }

    /// Fills the pixels x..<x+w, y..<y+h (clipped).
    public mutating func fillRect(x: Int, y: Int, width w: Int, height h: Int, color: Color, alpha: Double = 1) {
        for yy in max(0, y)..<max(max(0, y), min(height, y + h)) {
            for xx in max(0, x)..<max(max(0, x), min(width, x + w)) { blend(xx, yy, color, alpha) }
        }
    }

    /// One-pixel outline of the rectangle x..<x+w, y..<y+h.
    public mutating func strokeRect(x: Int, y: Int, width w: Int, height h: Int, color: Color) {
        fillRect(x: x, y: y, width: w, height: 1, color: color)
        fillRect(x: x, y: y + h - 1, width: w, height: 1, color: color)
        fillRect(x: x, y: y, width: 1, height: h, color: color)
        fillRect(x: x + w - 1, y: y, width: 1, height: h, color: color)
    }

    /// An anti-aliased line of the given thickness between two points (pixel coordinates, round caps).
    /// Each pixel's coverage comes from its centre's distance to the segment, so any slope looks the same.
    public mutating func line(from p0: (x: Double, y: Double), to p1: (x: Double, y: Double),
                              color: Color, thickness: Double = 1) {
        guard p0.x.isFinite && p0.y.isFinite && p1.x.isFinite && p1.y.isFinite else { return }
        let r = max(0.5, thickness / 2)
        let dx = p1.x - p0.x, dy = p1.y - p0.y
        let lengthSquared = dx * dx + dy * dy
        func coverage(_ px: Int, _ py: Int) -> Double {
            let cx = Double(px) + 0.5, cy = Double(py) + 0.5
            var t = lengthSquared > 0 ? ((cx - p0.x) * dx + (cy - p0.y) * dy) / lengthSquared : 0
            t = min(1, max(0, t))
            let ex = p0.x + t * dx - cx, ey = p0.y + t * dy - cy
            return min(1, max(0, r + 0.5 - (ex * ex + ey * ey).squareRoot()))
        }
        // Walk the major axis and visit only a band around the line, so long lines stay cheap.
        let steep = abs(dy) > abs(dx)
        let (a0, a1) = steep ? (min(p0.y, p1.y), max(p0.y, p1.y)) : (min(p0.x, p1.x), max(p0.x, p1.x))
        let slope = steep ? (dy == 0 ? 0 : dx / dy) : (dx == 0 ? 0 : dy / dx)
        let band = (r + 1.5) * (1 + slope * slope).squareRoot()
        let limit = steep ? height : width
        let first = max(0, Int(max(-1e9, a0 - r - 1).rounded(.down)))
        let last = min(limit - 1, Int(min(1e9, a1 + r + 1).rounded(.up)))
        guard first <= last else { return }
        for major in first...last {
            let m = min(a1, max(a0, Double(major) + 0.5))
            let centre = steep ? p0.x + (m - p0.y) * slope : p0.y + (m - p0.x) * slope
            let lo = max(0, Int(max(-1e9, centre - band).rounded(.down)))
            let hi = min((steep ? width : height) - 1, Int(min(1e9, centre + band).rounded(.up)))
            guard lo <= hi else { continue }
            for minor in lo...hi {
                let (x, y) = steep ? (minor, major) : (major, minor)
                blend(x, y, color, coverage(x, y))
            }
        }
    }

    /// A filled, anti-aliased marker centred at (cx, cy) with "radius" r (half the width), drawn with opacity `alpha`.
    public mutating func marker(_ shape: Marker, at c: (x: Double, y: Double), radius r: Double, color: Color, alpha: Double = 1) {
        func inside(_ x: Double, _ y: Double) -> Bool {
            let u = x - c.x, v = y - c.y
            switch shape {
            case .disc: return u * u + v * v <= r * r
            case .square: return abs(u) <= r * 0.85 && abs(v) <= r * 0.85
            case .diamond: return abs(u) + abs(v) <= r * 1.2
            case .triangle:
                // Apex up; the centroid sits on the centre.
                let top = -r * 1.1, bottom = r * 0.75
                return v <= bottom && v >= top && abs(u) <= (v - top) / (bottom - top) * r * 1.1
            }
        }
        guard c.x.isFinite && c.y.isFinite && abs(c.x) < 1e7 && abs(c.y) < 1e7 else { return }
        let e = Int(r * 1.3) + 2
        let ix = Int(c.x.rounded(.down)), iy = Int(c.y.rounded(.down))
        for y in (iy - e)...(iy + e) {
            for x in (ix - e)...(ix + e) {
                // 4x4 supersampling gives the coverage.
                var hits = 0
                for sy in 0..<4 {
                    for sx in 0..<4 where inside(Double(x) + (Double(sx) + 0.5) / 4, Double(y) + (Double(sy) + 0.5) / 4) { hits += 1 }
                }
                if hits > 0 { blend(x, y, color, alpha * Double(hits) / 16) }
            }
        }
    }

    // MARK: Text

    /// Width and height in pixels of `text` drawn at `scale` (6 x 8 pixel cells per character at scale 1).
    /// The height is the cap height; descenders reach one scaled pixel below it.
    public static func textSize(_ text: String, scale: Int = 1) -> (width: Int, height: Int) {
        let n = text.count
        return (n == 0 ? 0 : (n * 6 - 1) * scale, 7 * scale)
    }

    /// Draws `text` with its top-left corner at (x, y). With `vertical`, the text runs bottom to top (rotated
    /// 90 degrees counter-clockwise) and (x, y) is the top-left of its bounding box.
    public mutating func text(_ text: String, x: Int, y: Int, color: Color = .black, scale: Int = 1, vertical: Bool = false) {
        let length = Raster.textSize(text, scale: scale).width
        for (i, ch) in text.enumerated() {
            let glyph = Raster.glyph(ch)
            for col in 0..<5 {
                let bits = glyph[col]
                for row in 0..<8 where bits >> row & 1 != 0 {
                    let gx = (i * 6 + col) * scale, gy = row * scale
                    // Rotated: glyph x runs up from the bottom of the box, glyph y runs right.
                    let (px, py) = vertical ? (x + gy, y + length - gx - scale) : (x + gx, y + gy)
                    fillRect(x: px, y: py, width: scale, height: scale, color: color)
                }
            }
        }
    }

    /// `text` shortened to at most `maxCharacters`, marking the cut with "..".
    public static func truncate(_ text: String, toCharacters maxCharacters: Int) -> String {
        if text.count <= maxCharacters { return text }
        if maxCharacters <= 2 { return String(text.prefix(max(0, maxCharacters))) }
        return String(text.prefix(maxCharacters - 2)) + ".."
    }

    /// PNG bytes of the canvas.
    public func png() -> [UInt8] { PNGWriter.encode(width: width, height: height, channels: 3, pixels: pixels) }

    /// Writes the canvas as a PNG file, atomically.
    public func writePNG(to url: URL) throws {
        try PNGWriter.write(width: width, height: height, channels: 3, pixels: pixels, to: url)
    }

    static func glyph(_ ch: Character) -> [UInt8] {
        var code = 63   // '?'
        if let a = ch.asciiValue, a >= 32, a <= 126 { code = Int(a) }
        let o = (code - 32) * 5
        return Array(font[o..<(o + 5)])
    }

    /// The classic public-domain 5x7 LCD font, ASCII 32...126: five column bytes per glyph, bit 0 = top row.
    /// g, j, p, q and y are redrawn with a one-row descender (bit 7), so they no longer sit on the baseline.
    static let font: [UInt8] = [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5F, 0x00, 0x00, 0x00, 0x07, 0x00, 0x07, 0x00,  //   ! "
        0x14, 0x7F, 0x14, 0x7F, 0x14, 0x24, 0x2A, 0x7F, 0x2A, 0x12, 0x23, 0x13, 0x08, 0x64, 0x62,  // # $ %
        0x36, 0x49, 0x55, 0x22, 0x50, 0x00, 0x05, 0x03, 0x00, 0x00, 0x00, 0x1C, 0x22, 0x41, 0x00,  // & ' (
        0x00, 0x41, 0x22, 0x1C, 0x00, 0x14, 0x08, 0x3E, 0x08, 0x14, 0x08, 0x08, 0x3E, 0x08, 0x08,  // ) * +
        0x00, 0x50, 0x30, 0x00, 0x00, 0x08, 0x08, 0x08, 0x08, 0x08, 0x00, 0x60, 0x60, 0x00, 0x00,  // , - .
        0x20, 0x10, 0x08, 0x04, 0x02, 0x3E, 0x51, 0x49, 0x45, 0x3E, 0x00, 0x42, 0x7F, 0x40, 0x00,  // / 0 1
        0x42, 0x61, 0x51, 0x49, 0x46, 0x21, 0x41, 0x45, 0x4B, 0x31, 0x18, 0x14, 0x12, 0x7F, 0x10,  // 2 3 4
        0x27, 0x45, 0x45, 0x45, 0x39, 0x3C, 0x4A, 0x49, 0x49, 0x30, 0x01, 0x71, 0x09, 0x05, 0x03,  // 5 6 7
        0x36, 0x49, 0x49, 0x49, 0x36, 0x06, 0x49, 0x49, 0x29, 0x1E, 0x00, 0x36, 0x36, 0x00, 0x00,  // 8 9 :
        0x00, 0x56, 0x36, 0x00, 0x00, 0x08, 0x14, 0x22, 0x41, 0x00, 0x14, 0x14, 0x14, 0x14, 0x14,  // ; < =
        0x00, 0x41, 0x22, 0x14, 0x08, 0x02, 0x01, 0x51, 0x09, 0x06, 0x32, 0x49, 0x79, 0x41, 0x3E,  // > ? @
        0x7E, 0x11, 0x11, 0x11, 0x7E, 0x7F, 0x49, 0x49, 0x49, 0x36, 0x3E, 0x41, 0x41, 0x41, 0x22,  // A B C
        0x7F, 0x41, 0x41, 0x22, 0x1C, 0x7F, 0x49, 0x49, 0x49, 0x41, 0x7F, 0x09, 0x09, 0x09, 0x01,  // D E F
        0x3E, 0x41, 0x49, 0x49, 0x7A, 0x7F, 0x08, 0x08, 0x08, 0x7F, 0x00, 0x41, 0x7F, 0x41, 0x00,  // G H I
        0x20, 0x40, 0x41, 0x3F, 0x01, 0x7F, 0x08, 0x14, 0x22, 0x41, 0x7F, 0x40, 0x40, 0x40, 0x40,  // J K L
        0x7F, 0x02, 0x0C, 0x02, 0x7F, 0x7F, 0x04, 0x08, 0x10, 0x7F, 0x3E, 0x41, 0x41, 0x41, 0x3E,  // M N O
        0x7F, 0x09, 0x09, 0x09, 0x06, 0x3E, 0x41, 0x51, 0x21, 0x5E, 0x7F, 0x09, 0x19, 0x29, 0x46,  // P Q R
        0x46, 0x49, 0x49, 0x49, 0x31, 0x01, 0x01, 0x7F, 0x01, 0x01, 0x3F, 0x40, 0x40, 0x40, 0x3F,  // S T U
        0x1F, 0x20, 0x40, 0x20, 0x1F, 0x3F, 0x40, 0x38, 0x40, 0x3F, 0x63, 0x14, 0x08, 0x14, 0x63,  // V W X
        0x07, 0x08, 0x70, 0x08, 0x07, 0x61, 0x51, 0x49, 0x45, 0x43, 0x00, 0x7F, 0x41, 0x41, 0x00,  // Y Z [
        0x02, 0x04, 0x08, 0x10, 0x20, 0x00, 0x41, 0x41, 0x7F, 0x00, 0x04, 0x02, 0x01, 0x02, 0x04,  // \ ] ^
        0x40, 0x40, 0x40, 0x40, 0x40, 0x00, 0x01, 0x02, 0x04, 0x00, 0x20, 0x54, 0x54, 0x54, 0x78,  // _ ` a
        0x7F, 0x48, 0x44, 0x44, 0x38, 0x38, 0x44, 0x44, 0x44, 0x20, 0x38, 0x44, 0x44, 0x48, 0x7F,  // b c d
        0x38, 0x54, 0x54, 0x54, 0x18, 0x08, 0x7E, 0x09, 0x01, 0x02, 0x18, 0xA4, 0xA4, 0xA4, 0x7C,  // e f g
        0x7F, 0x08, 0x04, 0x04, 0x78, 0x00, 0x44, 0x7D, 0x40, 0x00, 0x40, 0x80, 0x80, 0x84, 0x7D,  // h i j
        0x7F, 0x10, 0x28, 0x44, 0x00, 0x00, 0x41, 0x7F, 0x40, 0x00, 0x7C, 0x04, 0x18, 0x04, 0x78,  // k l m
        0x7C, 0x08, 0x04, 0x04, 0x78, 0x38, 0x44, 0x44, 0x44, 0x38, 0xFC, 0x24, 0x24, 0x24, 0x18,  // n o p
        0x18, 0x24, 0x24, 0x24, 0xFC, 0x7C, 0x08, 0x04, 0x04, 0x08, 0x48, 0x54, 0x54, 0x54, 0x20,  // q r s
        0x04, 0x3F, 0x44, 0x40, 0x20, 0x3C, 0x40, 0x40, 0x20, 0x7C, 0x1C, 0x20, 0x40, 0x20, 0x1C,  // t u v
        0x3C, 0x40, 0x30, 0x40, 0x3C, 0x44, 0x28, 0x10, 0x28, 0x44, 0x1C, 0xA0, 0xA0, 0xA0, 0x7C,  // w x y
        0x44, 0x64, 0x54, 0x4C, 0x44, 0x00, 0x08, 0x36, 0x41, 0x00, 0x00, 0x00, 0x7F, 0x00, 0x00,  // z { |
        0x00, 0x41, 0x36, 0x08, 0x00, 0x08, 0x04, 0x08, 0x10, 0x08,                                // } ~
    ]
}
