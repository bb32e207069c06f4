"""`python -m detres <verb> ...`, the same as the `detres` command (e.g. under `torchrun -m detres train ...`)."""

from detres.commands import main

if __name__ == "__main__":
    main()
