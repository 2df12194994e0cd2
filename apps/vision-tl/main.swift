import TransferCLI
import VisionCLI
import VisionTL

TransferCLI.main(VisionDomain.self)
