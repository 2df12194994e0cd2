import ToyCLI
import ToyTL
import TransferCLI

TransferCLI.main(ToyDomain.self)
