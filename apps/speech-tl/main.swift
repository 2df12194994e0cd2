import TransferCLI
import SpeechTL

TransferCLI.main(AppInfo(name: SpeechTL.appName, summary: SpeechTL.summary))
