"""The ``lfgen`` command line: a thin click layer over the library, one module per command family.

Each command parses its options, calls one library function and prints the result: data on stdout,
messages on stderr. Rich tables live in this package and nowhere else; the library never prints.
"""

from lfgen.cli.app import cli, main

__all__ = ["cli", "main"]
