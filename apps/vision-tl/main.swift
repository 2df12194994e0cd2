import TransferCLI
import VisionTL

TransferCLI.main(VisionDomain.self)
