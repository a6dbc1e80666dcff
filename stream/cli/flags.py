"""The flags every command takes and the settings they make."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.settings import Settings, load_settings

DEFAULT_BROKER_DIR = Path(".xdrec/broker")


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file (also XDREC_CONFIG)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers host:port[,...]")
    parser.add_argument("--topic-prefix", help="prefix of every topic name")
    parser.add_argument("--log-level", help="debug, info, warning, ... (also XDREC_LOG_LEVEL)")


def settings_of(args: argparse.Namespace, **sections: object) -> Settings:
    """The settings a command runs with: file and environment, then the global flags, then
    what the command itself sets (``sections``, e.g. the domains of a dataset). Without a
    bootstrap address from any of those, the broker ``xdrec broker start`` left running."""
    overrides: dict = dict(sections)
    if args.bootstrap_servers:
        overrides["kafka"] = {"bootstrap_servers": args.bootstrap_servers}
    if args.topic_prefix is not None:
        overrides["topics"] = {"prefix": args.topic_prefix}
    worker: dict = {}
    if getattr(args, "name", None):
        worker["name"] = args.name
    if getattr(args, "state_dir", None):
        worker["state_dir"] = args.state_dir
    if worker:
        overrides["worker"] = worker
    settings = load_settings(args.config, **overrides)
    if "bootstrap_servers" not in settings.kafka.model_fields_set:
        local = local_broker()
        if local is not None:
            overrides["kafka"] = {"bootstrap_servers": local}
            settings = load_settings(args.config, **overrides)
    return settings


def local_broker() -> str | None:
    """The bootstrap address of the broker ``xdrec broker start`` left running, if any."""
    from stream.devtools.broker import broker_status

    info = broker_status(DEFAULT_BROKER_DIR)
    return info.bootstrap_servers if info else None
