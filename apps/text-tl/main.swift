import TextCLI
import TextTL
import TransferCLI

TransferCLI.main(TextDomain.self)
