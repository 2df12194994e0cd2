/// A shape check that survives `-Ounchecked` (release builds delete `precondition`; a violated shape rule then
/// reads out of bounds or allocates from a garbage size instead of stopping). For the per-op checks of the
/// tensor core: cheap next to the work of the op. Input that a user controls is validated earlier, with
/// `guard ... throw`, at the boundary that reads it.
@inline(__always)
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
             file: StaticString = #fileID, line: UInt = #line) {
    if !condition() { fatalError(message(), file: file, line: line) }
}
