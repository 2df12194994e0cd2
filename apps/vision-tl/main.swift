import TransferCLI
import VisionTL

TransferCLI.main(AppInfo(name: VisionTL.appName, summary: VisionTL.summary))
