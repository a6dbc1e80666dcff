"""The ``xdrec`` command line: parses flags, builds settings once, calls one module per command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from pydantic import ValidationError

from stream.logs import configure_logging
from stream.settings import Settings, load_settings

log = logging.getLogger("xdrec")

DEFAULT_BROKER_DIR = Path(".xdrec/broker")
# Packages that build on this one (the trainer) add their commands through this entry-point
# group: each entry is a function that adds parsers to the sub-commands, each parser naming
# its ``handler(args) -> int``.
COMMANDS_GROUP = "xdrec.commands"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xdrec", description="Streaming cross-domain recommender on Kafka."
    )
    parser.add_argument("--config", type=Path, help="TOML settings file (also XDREC_CONFIG)")
    parser.add_argument("--bootstrap-servers", help="Kafka bootstrap servers host:port[,...]")
    parser.add_argument("--topic-prefix", help="prefix of every topic name")
    parser.add_argument("--log-level", default=os.environ.get("XDREC_LOG_LEVEL", "info"))
    commands = parser.add_subparsers(dest="command", required=True)

    broker = commands.add_parser("broker", help="a local Kafka broker (KRaft) for development")
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument("--data-dir", type=Path, default=DEFAULT_BROKER_DIR)
    broker.add_argument("--port", type=int, help="listener port (default: a free one)")

    topics = commands.add_parser("topics", help="create the configured topics")
    topics.add_argument("action", choices=["create", "list"])

    worker = commands.add_parser("worker", help="run a stream worker until Ctrl-C")
    worker.add_argument("--name", help="worker name: its state folder (default worker-0)")
    worker.add_argument("--state-dir", type=Path, help="parent folder of worker state")

    replay = commands.add_parser("replay", help="publish a dataset folder to the topics")
    source = replay.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", type=Path, help="folder in the normalized dataset format")
    source.add_argument("--sample", action="store_true", help="the bundled three-domain sample")
    replay.add_argument(
        "--rate", type=float, help="events per second (default: as fast as possible)"
    )
    replay.add_argument("--speedup", type=float, help="replay at this multiple of event time")
    replay.add_argument("--limit", type=int, help="stop after this many interactions")
    replay.add_argument("--no-catalog", action="store_true")
    replay.add_argument("--no-events", action="store_true")

    consume = commands.add_parser("consume", help="print messages of an output topic")
    consume.add_argument("topic", help="e.g. recs.movies or events.dlq")
    consume.add_argument("--from-beginning", action="store_true")
    consume.add_argument("--max-messages", type=int)
    consume.add_argument("--idle-timeout", type=float, help="stop after this many quiet seconds")
    consume.add_argument("--json", action="store_true", help="raw JSON lines")
    consume.add_argument(
        "--explain", action="store_true", help="titles, and why each item was recommended"
    )

    demo = commands.add_parser("demo", help="broker + worker + sample replay, recs printed")
    demo.add_argument("--workdir", type=Path, default=Path(".xdrec/demo"))
    demo.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    demo.add_argument(
        "--exit-when-done", action="store_true", help="stop once the sample is processed"
    )

    user = commands.add_parser("user", help="act on one user's data")
    user.add_argument("action", choices=["forget"])
    user.add_argument("user_id")

    schemas = commands.add_parser("schemas", help="write the JSON Schema files")
    schemas.add_argument("action", choices=["export"])
    for plugin in entry_points(group=COMMANDS_GROUP):
        plugin.load()(commands)
    return parser


def settings_of(args: argparse.Namespace, **sections: object) -> Settings:
    """The settings a command runs with: file and environment, then the global flags, then
    what the command itself sets (``sections``, e.g. the domains of a dataset)."""
    overrides: dict = dict(sections)
    kafka: dict = {}
    if args.bootstrap_servers:
        kafka["bootstrap_servers"] = args.bootstrap_servers
    elif not os.environ.get("XDREC_KAFKA__BOOTSTRAP_SERVERS") and not os.environ.get("XDREC_KAFKA"):
        kafka.update(_local_broker())
    if kafka:
        overrides["kafka"] = kafka
    if args.topic_prefix is not None:
        overrides["topics"] = {"prefix": args.topic_prefix}
    worker: dict = {}
    if getattr(args, "name", None):
        worker["name"] = args.name
    if getattr(args, "state_dir", None):
        worker["state_dir"] = args.state_dir
    if worker:
        overrides["worker"] = worker
    return load_settings(args.config, **overrides)


def _local_broker() -> dict[str, str]:
    """Use the broker that ``xdrec broker start`` left running, when there is one."""
    from stream.devtools.broker import broker_status

    info = broker_status(DEFAULT_BROKER_DIR)
    return {"bootstrap_servers": info.bootstrap_servers} if info else {}


def _run(args: argparse.Namespace) -> int:
    handler = getattr(args, "handler", None)
    if handler is not None:
        return handler(args)
    if args.command == "broker":
        from stream.devtools.broker import broker_status, start_broker, stop_broker

        if args.action == "start":
            info = start_broker(args.data_dir, args.port)
            print(f"broker running bootstrap={info.bootstrap_servers} log={info.log_file}")
        elif args.action == "stop":
            print("broker stopped" if stop_broker(args.data_dir) else "no broker running")
        else:
            info = broker_status(args.data_dir)
            print(f"broker running bootstrap={info.bootstrap_servers}" if info else "not running")
            return 0 if info else 3
        return 0

    if args.command == "schemas":
        from schemas.export import export_schemas

        for path in export_schemas():
            print(path)
        return 0

    settings = settings_of(args)
    if args.command == "user":
        from stream.worker.erasure import request_erasure

        request_erasure(settings, args.user_id)
        print(f"erasure requested topic={settings.topics.erasure()}")
        return 0

    if args.command == "topics":
        from stream.kafka.topics import create_topics, topic_specs

        if args.action == "create":
            for name, outcome in create_topics(settings).items():
                print(f"{outcome:8} {name}")
        else:
            for spec in topic_specs(settings):
                print(f"{spec.name} partitions={spec.partitions} {spec.config or ''}")
        return 0

    if args.command == "worker":
        from stream.kafka.transport import check_reachable
        from stream.worker.app import run_worker

        check_reachable(settings)
        run_worker(settings, loglevel=args.log_level)
        return 0

    if args.command == "replay":
        from stream.data.dataset import Dataset
        from stream.data.replay import replay_dataset

        if args.sample:
            import tempfile

            from stream.data.sample import write_sample_dataset

            directory = write_sample_dataset(Path(tempfile.mkdtemp(prefix="xdrec-sample-")))
        else:
            directory = args.dataset
        stats = replay_dataset(
            settings,
            Dataset(directory),
            rate=args.rate,
            speedup=args.speedup,
            limit=args.limit,
            include_catalog=not args.no_catalog,
            include_events=not args.no_events,
        )
        print(
            f"replayed items={stats.items} events={stats.events} seconds={stats.seconds:.1f} "
            f"events_per_second={stats.events_per_second:.0f} skipped={dict(stats.skipped)}"
        )
        return 0

    if args.command == "consume":
        from stream.devtools.consume import (
            catalog_titles,
            follow,
            format_explanation,
            format_recommendation,
            resolve_topic,
        )

        topic = resolve_topic(settings, args.topic)
        titles = catalog_titles(settings) if args.explain else {}
        for count, message in enumerate(
            follow(
                settings, topic, from_beginning=args.from_beginning, idle_timeout=args.idle_timeout
            ),
            start=1,
        ):
            if args.json or "items" not in message:
                print(json.dumps(message), flush=True)
            elif args.explain:
                print("\n".join(format_explanation(message, titles)), flush=True)
            else:
                print(format_recommendation(message), flush=True)
            if args.max_messages and count >= args.max_messages:
                break
        return 0

    if args.command == "demo":
        from stream.devtools.demo import run_demo

        return run_demo(settings, args.workdir, rate=args.rate, exit_when_done=args.exit_when_done)
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    try:
        return _run(args)
    except ValidationError as exc:
        print(f"xdrec: invalid settings: {exc}", file=sys.stderr)
        return 2
    except (ConnectionError, ValueError, RuntimeError) as exc:
        print(f"xdrec: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
