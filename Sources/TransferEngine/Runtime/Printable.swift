extension String {
    /// The string as it is safe to print on a terminal: control characters (C0, DEL, C1: escape sequences, a
    /// carriage return that overwrites the line, a newline that splits a one-line error) and the bidirectional
    /// overrides that reorder what is shown become visible escapes such as `\u{1B}`; everything else is kept.
    /// For file names, class names and texts that come from the user's data.
    public var printable: String {
        guard unicodeScalars.contains(where: Self.hidden) else { return self }
        var out = ""
        for s in unicodeScalars {
            if Self.hidden(s) { out += "\\u{" + String(s.value, radix: 16, uppercase: true) + "}" } else { out.unicodeScalars.append(s) }
        }
        return out
    }

    private static func hidden(_ s: Unicode.Scalar) -> Bool {
        s.value < 0x20 || (0x7F...0x9F).contains(s.value) || (0x202A...0x202E).contains(s.value)
            || (0x2066...0x2069).contains(s.value)
    }
}

/// A count with its noun: "1 block", "2 blocks" (`plural` is the plural form).
public func counted(_ count: Int, _ plural: String) -> String {
    "\(count) " + (count == 1 ? ProgressReporter.singular(plural) : plural)
}
