"""The jobs a command asks for, each built from the layers below: the matrix run, vet, bisect, nightly, the configuration and the boot shell."""
