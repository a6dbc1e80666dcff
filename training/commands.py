"""The training commands of ``xdrec`` (evaluate, model, trainer), plugged into the command line.

The command line (``stream.cli``) finds them through the ``xdrec.commands`` entry point, so
the worker's package never imports the training package: training builds on ``stream``,
not the other way round.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from stream.cli.flags import settings_of

log = logging.getLogger("xdrec")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add the training commands' parsers; each names its handler."""
    evaluate = commands.add_parser("evaluate", help="offline evaluation over a dataset folder")
    evaluate.set_defaults(handler=_evaluate)
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
        help="baselines beside the trained model; sasrec is trained unless --train-epochs 0",
    )
    evaluate.add_argument("--max-users", type=int, help="evaluate the first N users only")
    evaluate.add_argument("--negatives", type=int, default=999)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--cache-dir", type=Path, default=Path(".xdrec/cache/item-embeddings"))
    evaluate.add_argument(
        "--train-epochs",
        type=int,
        help="train the transfer model (and sasrec) for at most N epochs, stopping early on "
        "validation users, and evaluate it as 'trained' (default: trainer.epochs, as the trainer "
        "job trains; 0: the baselines alone)",
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
    model.set_defaults(handler=_model)
    model.add_argument("action", choices=["list", "rollback", "experiment", "end-experiment"])
    model.add_argument("--store", help="model store path or file:// URI (default: models.store)")
    model.add_argument(
        "--to",
        help="rollback: target version (default: the serving version's parent; v0 works); "
        "experiment: the candidate version served to experiment.share of users",
    )

    trainer = commands.add_parser("trainer", help="the trainer service: retrains on request")
    trainer.set_defaults(handler=_trainer)
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


def _model(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    from stream.model.artifacts import load_version
    from stream.model.store import ModelStore
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


def _trainer(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    import signal
    import threading

    from stream.kafka.transport import check_reachable
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
    if args.online:
        from training.evaluation.online import evaluate_online, write_online_report

        result = evaluate_online(settings_of(args), since=args.since)
        for path in write_online_report(result, args.out):
            print(path)
        print(json.dumps(result["versions"], indent=2))
        return 0
    if args.dataset is None:
        raise ValueError("--dataset is required (except with --online)")
    if args.train_epochs is not None and args.train_epochs < 0:
        raise ValueError("--train-epochs must be 0 (no training) or more")
    from stream.data.dataset import Dataset
    from training.evaluation.offline import evaluate_offline
    from training.evaluation.report import write_report
    from training.train import TrainConfig

    domains = sorted({item.domain for item in Dataset(args.dataset).items()})
    settings = settings_of(args, domains=domains)  # routes: every other domain
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
        train=None
        if args.train_epochs == 0
        else TrainConfig.of_trainer(
            settings.trainer, epochs=args.train_epochs or settings.trainer.epochs
        ),
        priors=priors,
    )
    if args.streaming:
        from stream.kafka.transport import check_reachable
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
