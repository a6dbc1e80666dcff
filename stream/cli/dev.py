"""Commands for a machine of one's own: the development broker and the demo."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.cli.flags import DEFAULT_BROKER_DIR, settings_of


def add_commands(commands: argparse._SubParsersAction) -> None:
    broker = commands.add_parser("broker", help="a local Kafka broker (KRaft) for development")
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.add_argument("--data-dir", type=Path, default=DEFAULT_BROKER_DIR)
    broker.add_argument("--port", type=int, help="listener port (default: a free one)")
    broker.set_defaults(handler=_broker)

    demo = commands.add_parser("demo", help="broker + worker + sample replay, recs printed")
    demo.add_argument("--workdir", type=Path, default=Path(".xdrec/demo"))
    demo.add_argument("--rate", type=float, help="events per second (default: as fast as possible)")
    demo.add_argument(
        "--exit-when-done", action="store_true", help="stop once the sample is processed"
    )
    demo.set_defaults(handler=_demo)


def _broker(args: argparse.Namespace) -> int:
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


def _demo(args: argparse.Namespace) -> int:
    from stream.devtools.demo import run_demo

    settings = settings_of(args)
    return run_demo(settings, args.workdir, rate=args.rate, exit_when_done=args.exit_when_done)
