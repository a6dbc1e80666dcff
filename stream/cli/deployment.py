"""Commands that run, ask or change a deployment: its topics, a worker, a user's
recommendations, a user's data."""

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

    recommend = commands.add_parser(
        "recommend", help="ask a worker for a user's recommendations now (any worker forwards)"
    )
    recommend.add_argument("domain", help="target domain")
    recommend.add_argument("user_id")
    recommend.add_argument("--k", type=int, help="how many items (default recommendations.top_k)")
    recommend.add_argument("--explain", action="store_true", help="name why each item is there")
    recommend.add_argument(
        "--url", help="a worker's HTTP address (default: this configuration's, metrics.port)"
    )
    recommend.set_defaults(handler=_recommend)

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


def _recommend(args: argparse.Namespace) -> int:
    import json
    import sys
    import urllib.error

    from stream.worker.queries import RecommendationQuery, ask

    settings = settings_of(args)
    metrics = settings.metrics
    url = args.url or metrics.advertised_url() or f"http://127.0.0.1:{metrics.port}"
    query = RecommendationQuery(
        args.domain, args.user_id, args.k or settings.recommendations.top_k, args.explain
    )
    headers = {}
    if metrics.token is not None:
        headers["Authorization"] = f"Bearer {metrics.token.get_secret_value()}"
    try:
        status, _, body = ask(url, query, headers)
    except (urllib.error.URLError, OSError) as exc:
        print(f"no worker answered at {url}: {exc}; start one or pass --url", file=sys.stderr)
        return 2
    document = json.loads(body)
    if status != 200:
        print(f"{status} {document.get('reason')}: {document.get('detail')}", file=sys.stderr)
        return 1
    print(json.dumps(document, indent=2))
    return 0
