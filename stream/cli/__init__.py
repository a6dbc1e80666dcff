"""The ``xdrec`` command line: the parser in ``main``, the global flags in ``flags``, one module
per command group (``deployment``, ``data``, ``dev``); the training commands plug in through the
``xdrec.commands`` entry point."""

from stream.cli.flags import settings_of
from stream.cli.main import main, parser

__all__ = ["main", "parser", "settings_of"]
