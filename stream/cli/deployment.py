"""Commands that run or change a deployment: its topics, a worker, a user's data."""

from __future__ import annotations

import argparse
from pathlib import Path

from stream.cli.flags import settings_of


def add_commands(commands: argparse._SubParsersAction) -> None:
    topics = commands.add_parser("topics", help="create the configured topics")
    topics.add_argument("action", choices=["create", "list"])
    topics.set_defaults(handler=_topics)

    worker = commands.add_parser("worker", help="run a stream worker until Ctrl-C")
    worker.add_argument("--name", help="worker name: its state folder (default worker-0)")
    worker.add_argument("--state-dir", type=Path, help="parent folder of worker state")
    worker.set_defaults(handler=_worker)

    user = commands.add_parser("user", help="act on one user's data")
    user.add_argument("action", choices=["forget"])
    user.add_argument("user_id")
    user.set_defaults(handler=_user)


def _topics(args: argparse.Namespace) -> int:
    from stream.kafka.topics import create_topics, topic_specs

    settings = settings_of(args)
    if args.action == "create":
        for name, outcome in create_topics(settings).items():
            print(f"{outcome:8} {name}")
    else:
        for spec in topic_specs(settings):
            print(f"{spec.name} partitions={spec.partitions} {spec.config or ''}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from stream.kafka.transport import check_reachable
    from stream.worker.app import run_worker

    settings = settings_of(args)
    check_reachable(settings)
    run_worker(settings, loglevel=args.log_level)
    return 0


def _user(args: argparse.Namespace) -> int:
    from stream.worker.erasure import request_erasure

    settings = settings_of(args)
    request_erasure(settings, args.user_id)
    print(f"erasure requested topic={settings.topics.erasure()}")
    return 0
