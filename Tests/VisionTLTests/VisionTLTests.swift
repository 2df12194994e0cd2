import XCTest
@testable import VisionTL
