"""The ``socbridge`` command line: :mod:`daemon.cli.main` parses, one module per command runs."""
