"""The ``xdrec`` command line: parses flags, builds settings once, calls one module per command."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from stream.logs import configure_logging
from stream.settings import Settings, load_settings

log = logging.getLogger("xdrec")

DEFAULT_BROKER_DIR = Path(".xdrec/broker")


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

    evaluate = commands.add_parser("evaluate", help="offline evaluation over a dataset folder")
    evaluate.add_argument("--dataset", type=Path, help="dataset folder (offline and streaming)")
    evaluate.add_argument("--out", type=Path, required=True, help="folder for the report")
    evaluate.add_argument(
        "--splits",
        nargs="+",
        default=["test"],
        help="users to report on (default: test; valid users then pick the training epoch)",
    )
    evaluate.add_argument(
        "--methods",
        nargs="+",
        default=["popularity", "cooccurrence_knn", "zero_shot", "sasrec"],
        help="baselines beside the trained model; sasrec is trained only with --train-epochs",
    )
    evaluate.add_argument("--max-users", type=int, help="evaluate the first N users only")
    evaluate.add_argument("--negatives", type=int, default=999)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--cache-dir", type=Path, default=Path(".xdrec/cache/item-embeddings"))
    evaluate.add_argument(
        "--train-epochs",
        type=int,
        help="also train the transfer model (and sasrec) for at most N epochs, stopping early "
        "on validation users, and evaluate it as 'trained'",
    )
    evaluate.add_argument(
        "--online",
        action="store_true",
        help="compare the model versions a deployment emitted (online hit rates, 95%% CI)",
    )
    evaluate.add_argument("--since", type=float, help="with --online: count from this event time")
    evaluate.add_argument(
        "--streaming",
        action="store_true",
        help="also replay through the broker and score what a worker publishes",
    )

    model = commands.add_parser("model", help="model artifacts in the model store")
    model.add_argument("action", choices=["list", "rollback", "experiment", "end-experiment"])
    model.add_argument("--store", help="model store path or file:// URI (default: models.store)")
    model.add_argument(
        "--to",
        help="rollback: target version (default: the serving version's parent; v0 works); "
        "experiment: the candidate version served to experiment.share of users",
    )

    user = commands.add_parser("user", help="act on one user's data")
    user.add_argument("action", choices=["forget"])
    user.add_argument("user_id")

    trainer = commands.add_parser("trainer", help="the trainer service: retrains on request")
    trainer.add_argument("--once", action="store_true", help="run one job now, then exit")
    trainer.add_argument(
        "--request", action="store_true", help="ask the running trainer for a job, then exit"
    )
    trainer.add_argument("--max-jobs", type=int, help="exit after this many jobs")
    trainer.add_argument(
        "--candidate",
        action="store_true",
        help="with --once: store the model whatever the gate says and start an online "
        "comparison with it (experiment.share of users)",
    )
    trainer.add_argument(
        "--window-end", type=float, help="with --once: train on events up to this event time"
    )

    bench = commands.add_parser("bench", help="benchmarks that start their own broker")
    bench.add_argument("name", choices=["swap"])
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="options of that benchmark")

    schemas = commands.add_parser("schemas", help="write the JSON Schema files")
    schemas.add_argument("action", choices=["export"])
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict = {}
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
    from stream.broker import broker_status

    info = broker_status(DEFAULT_BROKER_DIR)
    return {"bootstrap_servers": info.bootstrap_servers} if info else {}


def _run(args: argparse.Namespace) -> int:
    if args.command == "broker":
        from stream.broker import broker_status, start_broker, stop_broker

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

    if args.command == "evaluate" and args.online:
        from training.evaluation.online import evaluate_online, write_online_report

        result = evaluate_online(_settings(args), since=args.since)
        for path in write_online_report(result, args.out):
            print(path)
        print(json.dumps(result["versions"], indent=2))
        return 0

    if args.command == "evaluate":
        if args.dataset is None:
            raise ValueError("--dataset is required (except with --online)")
        return _evaluate(args)

    if args.command == "bench":
        from bench.swap import main as swap_main

        return swap_main(args.rest)

    settings = _settings(args)
    if args.command == "model":
        return _model(args, settings)

    if args.command == "trainer":
        return _trainer(args, settings)

    if args.command == "user":
        from stream.erasure import request_erasure

        request_erasure(settings, args.user_id)
        print(f"erasure requested topic={settings.topics.erasure()}")
        return 0

    if args.command == "topics":
        from stream.topics import create_topics, topic_specs

        if args.action == "create":
            for name, outcome in create_topics(settings).items():
                print(f"{outcome:8} {name}")
        else:
            for spec in topic_specs(settings):
                print(f"{spec.name} partitions={spec.partitions} {spec.config or ''}")
        return 0

    if args.command == "worker":
        from stream.app import run_worker
        from stream.transport import check_reachable

        check_reachable(settings)
        run_worker(settings, loglevel=args.log_level)
        return 0

    if args.command == "replay":
        from stream.dataset import Dataset
        from stream.replay import replay_dataset

        if args.sample:
            import tempfile

            from stream.sample import write_sample_dataset

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
        from stream.consume import (
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
        from stream.demo import run_demo

        return run_demo(settings, args.workdir, rate=args.rate, exit_when_done=args.exit_when_done)
    raise AssertionError(f"unhandled command {args.command}")


def _model(args: argparse.Namespace, settings: Settings) -> int:
    from training.artifacts import load_version
    from training.model_store import ModelStore
    from training.publisher import (
        CANDIDATE_KEY,
        end_experiment,
        model_update_for,
        publish_update,
        rollback_update,
    )

    store = ModelStore(args.store or settings.models.store)
    if args.action == "list":
        for manifest in store.versions():
            metrics = ", ".join(
                f"{k}={v:.4f}" for k, v in sorted(manifest.get("metrics", {}).items())
            )
            kind = manifest.get("kind", "transfer_model")
            print(
                f"{manifest['version']} kind={kind} "
                f"parent={manifest.get('parent_version')} {metrics}"
            )
        return 0
    if args.action == "end-experiment":
        end_experiment(settings)
        print("experiment ended: every user is served the serving version")
        return 0
    if args.action == "experiment":
        if not args.to:
            raise ValueError("name the candidate version with --to (see `xdrec model list`)")
        folder = store.path_of(args.to)
        load_version(folder)  # refuse a bad artifact here, before any worker sees it
        publish_update(settings, model_update_for(folder), key=CANDIDATE_KEY)
        print(f"experiment started candidate={args.to} share={settings.experiment.share}")
        return 0
    update = rollback_update(settings, store, args.to)
    publish_update(settings, update)
    print(f"published rollback version={update.version} topic={settings.topics.model_updates()}")
    return 0


def _trainer(args: argparse.Namespace, settings: Settings) -> int:
    import signal
    import threading

    from stream.transport import check_reachable
    from training.trainer import TrainerService, manual_request, publish_request

    check_reachable(settings)
    if args.request:
        request = manual_request()
        publish_request(settings, request)
        print(f"training requested request_id={request.request_id}")
        return 0
    service = TrainerService(settings)
    if args.once:
        request = manual_request().model_copy(update={"window_end": args.window_end})
        result = service.run_requests([request], candidate=args.candidate)
        if result is None:
            return 1
        print(f"{result.outcome}: {result.reason}")
        return 0
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("trainer stopping signal=%d (after the running job)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    service.run(stop, max_jobs=args.max_jobs)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Offline evaluation: the dataset's domains become the configured domains."""
    from stream.dataset import Dataset
    from training.evaluation.offline import evaluate_offline
    from training.evaluation.report import write_report
    from training.train import TrainConfig

    domains = sorted({item.domain for item in Dataset(args.dataset).items()})
    overrides: dict = {"domains": domains}  # routes: every other domain
    if args.streaming:
        kafka = (
            {"bootstrap_servers": args.bootstrap_servers}
            if args.bootstrap_servers
            else _local_broker()
        )
        if kafka:
            overrides["kafka"] = kafka
    settings = load_settings(args.config, **overrides)
    priors: dict = {}  # version 0's popularity prior per group, served by --streaming too
    metrics = evaluate_offline(
        args.dataset,
        settings,
        splits=tuple(args.splits),
        methods=tuple(args.methods),
        max_users=args.max_users,
        negatives=args.negatives,
        seed=args.seed,
        cache_dir=args.cache_dir,
        train=TrainConfig.of_trainer(settings.trainer, epochs=args.train_epochs)
        if args.train_epochs
        else None,
        priors=priors,
    )
    if args.streaming:
        from stream.transport import check_reachable
        from training.evaluation.streaming import evaluate_streaming

        check_reachable(settings)
        streamed = evaluate_streaming(
            args.dataset,
            settings,
            args.out / "streaming-run",
            splits=tuple(args.splits),
            priors=priors,
        )
        metrics["streaming"] = {group: result["metrics"] for group, result in streamed.items()}
    for path in write_report(metrics, args.out):
        print(path)
    return 0


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
