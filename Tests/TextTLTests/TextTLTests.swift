import XCTest
@testable import TextTL
