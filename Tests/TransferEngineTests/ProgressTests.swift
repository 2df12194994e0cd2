import XCTest
@testable import TransferEngine

/// Progress output through a fake sink and clock.
final class ProgressTests: XCTestCase {
    // MARK: ProgressReporter

    final class Sink: @unchecked Sendable {
        var text = ""
        var seconds = 100.0
        func output(terminal: Bool) -> ProgressReporter.Output { ProgressReporter.Output(isTerminal: terminal) { self.text += $0 } }
    }

    func testProgressPlainLines() {
        let sink = Sink()
        let p = ProgressReporter(label: "extract", total: 1000, unit: "images", output: sink.output(terminal: false), clock: { sink.seconds })
        sink.seconds += 2; p.advance(by: 100)
        XCTAssertEqual(sink.text, "", "nothing before the first interval")
        sink.seconds += 3; p.advance(by: 100)
        XCTAssertEqual(sink.text, "extract: 200/1000 images (20%), 40.0 images/s, ETA 20s\n")
        sink.seconds += 1; p.advance(by: 50)
        XCTAssertEqual(sink.text.split(separator: "\n").count, 1, "at most one line per interval")
        sink.seconds += 19; p.advance(by: 750)
        p.finish()
        p.finish()
        XCTAssertEqual(sink.text.split(separator: "\n").map(String.init), [
            "extract: 200/1000 images (20%), 40.0 images/s, ETA 20s",
            "extract: 1000/1000 images (100%), 40.0 images/s",
            "extract: 1000 images in 25s (40.0 images/s)",
        ])
        let slow = ProgressReporter(label: "epoch", total: nil, unit: "batches", output: sink.output(terminal: false), clock: { sink.seconds })
        sink.seconds += 130; slow.advance(by: 2)
        XCTAssertTrue(sink.text.hasSuffix("epoch: 2 batches, 65.0 s/batch\n"), sink.text)
        slow.finish()
        XCTAssertTrue(sink.text.hasSuffix("epoch: 2 batches in 2m10s (65.0 s/batch)\n"), sink.text)
        // One of a unit is singular ("inputs: 1 samples" before).
        let one = ProgressReporter(label: "inputs", total: 1, unit: "samples", output: sink.output(terminal: false), clock: { sink.seconds })
        sink.seconds += 1; one.advance()
        one.finish()
        XCTAssertTrue(sink.text.hasSuffix("inputs: 1 sample in 1.0s (1.0 samples/s)\n"), sink.text)
    }

    func testProgressBarOnTerminalAndNotes() {
        let sink = Sink()
        let p = ProgressReporter(label: "train", total: 10, unit: "batches", output: sink.output(terminal: true), clock: { sink.seconds })
        sink.seconds += 1; p.advance(by: 4)
        XCTAssertEqual(sink.text, "\rtrain  [#########---------------]  4/10 batches  4.0 batches/s  ETA 1.5s\u{1B}[K")
        ProgressReporter.note("checkpoint saved", output: sink.output(terminal: true))
        XCTAssertTrue(sink.text.hasSuffix("\r\u{1B}[Kcheckpoint saved\n"), "a note clears the bar first")
        sink.seconds += 0.01; p.advance()
        XCTAssertFalse(sink.text.hasSuffix("\u{1B}[K"), "redraws throttled")
        sink.seconds += 1; p.advance(by: 5)
        p.finish()
        XCTAssertTrue(sink.text.hasSuffix("\rtrain: 10 batches in 2.0s (5.0 batches/s)\u{1B}[K\n"), sink.text)
    }

    /// Training shows the last epoch's loss and validation accuracy on its progress line.
    func testProgressDetailFollowsTheCounts() {
        let sink = Sink()
        let p = ProgressReporter(label: "training head", total: 4, unit: "epochs", output: sink.output(terminal: false), clock: { sink.seconds })
        sink.seconds += 5
        p.advance(detail: EpochLog(epoch: 1, trainLoss: 0.51234, trainAccuracy: 0.8, validationLoss: 0.6,
                                   validationAccuracy: 0.875, learningRate: 0.01).summary)
        XCTAssertEqual(sink.text, "training head: 1/4 epochs (25%), 5.0 s/epoch, ETA 15s; loss 0.5123, validation accuracy 0.875\n")
        sink.seconds += 5
        p.advance(detail: EpochLog(epoch: 2, trainLoss: 0.25, trainAccuracy: 0.9, validationLoss: nil,
                                   validationAccuracy: nil, learningRate: 0.01).summary)
        p.finish()
        XCTAssertTrue(sink.text.hasSuffix("training head: 2 epochs in 10s (5.0 s/epoch); loss 0.2500\n"), sink.text)
        XCTAssertEqual(EpochLog.csvHeader, "epoch,train_loss,train_accuracy,validation_loss,validation_accuracy,learning_rate,adaptation_loss")
        XCTAssertEqual(EpochLog(epoch: 2, trainLoss: 0.25, trainAccuracy: 0.9, validationLoss: nil, validationAccuracy: nil,
                                learningRate: 0.001).csvRow, "2,0.25,0.9,,,0.001,")
        let adapting = EpochLog(epoch: 3, trainLoss: 0.75, trainAccuracy: 0.5, validationLoss: 0.8, validationAccuracy: 0.5,
                                learningRate: 0.001, adaptationLoss: 0.6931)
        XCTAssertEqual(adapting.csvRow, "3,0.75,0.5,0.8,0.5,0.001,0.6931")
        XCTAssertEqual(adapting.summary, "loss 0.7500, validation accuracy 0.500, adaptation term 0.6931")
    }

    func testQuietProgressPrintsNothing() {
        let sink = Sink()
        for terminal in [false, true] {
            let p = ProgressReporter(label: "x", total: 5, mode: .quiet, output: sink.output(terminal: terminal), clock: { sink.seconds })
            sink.seconds += 10; p.advance(by: 5); p.finish()
        }
        let saved = ProgressReporter.quiet
        ProgressReporter.quiet = true
        defer { ProgressReporter.quiet = saved }
        let p = ProgressReporter(label: "x", total: 5, output: sink.output(terminal: false), clock: { sink.seconds })
        sink.seconds += 10; p.advance(by: 5); p.finish()
        ProgressReporter.note("hello", output: sink.output(terminal: false))
        XCTAssertEqual(sink.text, "")
    }

}
