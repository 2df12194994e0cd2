import SpeechCLI
import SpeechTL
import TransferCLI

TransferCLI.main(SpeechDomain.self)
