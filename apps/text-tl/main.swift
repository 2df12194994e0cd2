import TransferCLI
import TextTL

TransferCLI.main(AppInfo(name: TextTL.appName, summary: TextTL.summary))
