"""The ``xdrec`` parser and its entry point."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from pydantic import ValidationError

from stream.cli import data, deployment, dev
from stream.cli.flags import add_global_flags
from stream.logs import configure_logging
from stream.settings import LocalSettings

log = logging.getLogger("xdrec")

# Packages that build on this one (the trainer) add their commands through this entry-point
# group: each entry is a function that adds parsers to the sub-commands, each parser naming
# its ``handler(args) -> int``.
COMMANDS_GROUP = "xdrec.commands"
GROUPS = (dev.add_commands, deployment.add_commands, data.add_commands)


def parser() -> argparse.ArgumentParser:
    """Every command's parser; each sets ``handler``, the function that runs it."""
    top = argparse.ArgumentParser(
        prog="xdrec", description="Streaming cross-domain recommender on Kafka."
    )
    add_global_flags(top)
    commands = top.add_subparsers(dest="command", required=True)
    for add_commands in GROUPS:
        add_commands(commands)
    for plugin in entry_points(group=COMMANDS_GROUP):
        plugin.load()(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.log_level = args.log_level or LocalSettings().log_level
        configure_logging(args.log_level)
        return args.handler(args)
    except ValidationError as exc:
        print(f"xdrec: invalid settings: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, ValueError, RuntimeError) as exc:
        print(f"xdrec: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
