"""`python -m pyrs ...`: the same as the `pyrs` command."""

from pyrs import main

main()
