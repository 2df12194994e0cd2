import XCTest
@testable import SpeechTL
