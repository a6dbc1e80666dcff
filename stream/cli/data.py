"""Commands that move data in and out: publish a dataset, print an output topic, write the
event contracts' JSON Schemas."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from stream.cli.flags import settings_of


def add_commands(commands: argparse._SubParsersAction) -> None:
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
    replay.set_defaults(handler=_replay)

    consume = commands.add_parser("consume", help="print messages of an output topic")
    consume.add_argument("topic", help="e.g. recs.movies or events.dlq")
    consume.add_argument("--from-beginning", action="store_true")
    consume.add_argument("--max-messages", type=int)
    consume.add_argument("--idle-timeout", type=float, help="stop after this many quiet seconds")
    consume.add_argument("--json", action="store_true", help="raw JSON lines")
    consume.add_argument(
        "--explain", action="store_true", help="titles, and why each item was recommended"
    )
    consume.set_defaults(handler=_consume)

    catalog = commands.add_parser(
        "catalog", help="item embeddings computed elsewhere: import them, or make a synthetic set"
    )
    actions = catalog.add_subparsers(dest="action", required=True)
    imported = actions.add_parser(
        "import",
        help="write precomputed embeddings into a stopped worker's item store "
        "(row n of --vectors is the item on line n of --items)",
    )
    imported.add_argument("--items", type=Path, required=True, help="items.jsonl (dataset format)")
    imported.add_argument("--vectors", type=Path, required=True, help=".npy float32 matrix")
    imported.add_argument("--name", help="the worker's name (worker.name)")
    imported.add_argument("--state-dir", type=Path, help="the worker's worker.state_dir")
    imported.set_defaults(handler=_catalog_import)
    synthesize = actions.add_parser(
        "synthesize",
        help="a synthetic catalog for load tests: a dataset folder with no interactions, and "
        "vectors.npy to import (stream/data/synthetic.py)",
    )
    synthesize.add_argument("--items", type=int, required=True)
    synthesize.add_argument("--out", type=Path, required=True)
    synthesize.add_argument("--domain", action="append", help="repeat for several (default: all)")
    synthesize.add_argument("--seed", type=int, default=0)
    synthesize.set_defaults(handler=_catalog_synthesize)

    schemas = commands.add_parser("schemas", help="write the JSON Schema files")
    schemas.add_argument("action", choices=["export"])
    schemas.set_defaults(handler=_schemas)


def _replay(args: argparse.Namespace) -> int:
    from stream.data.dataset import Dataset
    from stream.data.replay import replay_dataset

    settings = settings_of(args)
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


def _consume(args: argparse.Namespace) -> int:
    from stream.devtools.consume import (
        catalog_titles,
        follow,
        format_explanation,
        format_recommendation,
        resolve_topic,
    )

    settings = settings_of(args)
    topic = resolve_topic(settings, args.topic)
    titles = catalog_titles(settings) if args.explain else {}
    messages = follow(
        settings, topic, from_beginning=args.from_beginning, idle_timeout=args.idle_timeout
    )
    for count, message in enumerate(messages, start=1):
        if args.json or "items" not in message:
            print(json.dumps(message), flush=True)
        elif args.explain:
            print("\n".join(format_explanation(message, titles)), flush=True)
        else:
            print(format_recommendation(message), flush=True)
        if args.max_messages and count >= args.max_messages:
            break
    return 0


def _schemas(args: argparse.Namespace) -> int:
    from schemas.export import export_schemas

    for path in export_schemas():
        print(path)
    return 0


def _catalog_import(args: argparse.Namespace) -> int:
    from stream.catalog.bulk import import_embeddings
    from stream.catalog.encoder import TextEncoder

    settings = settings_of(args)
    encoder = TextEncoder.from_settings(settings.encoder)  # its fingerprint and dimension
    store = settings.worker.state_dir / settings.worker.name / "items"
    stats = import_embeddings(
        store,
        encoder.fingerprint,
        encoder.dimension,
        args.items,
        args.vectors,
        set(settings.domains),
    )
    print(
        f"imported items={stats.items} domains={stats.domains} store={store} "
        f"fingerprint={encoder.fingerprint} seconds={stats.seconds:.1f}"
    )
    return 0


def _catalog_synthesize(args: argparse.Namespace) -> int:
    import numpy as np

    from stream.catalog.encoder import TextEncoder
    from stream.data.synthetic import synthetic_catalog, write_synthetic_dataset

    settings = settings_of(args)
    domains = tuple(args.domain or settings.domains)
    dimension = TextEncoder.from_settings(settings.encoder).dimension
    catalog = synthetic_catalog(args.items, domains, args.seed)
    write_synthetic_dataset(catalog, args.out)
    np.save(args.out / "vectors.npy", catalog.vectors(dimension, args.seed), allow_pickle=False)
    print(f"wrote {args.items} items of {', '.join(domains)} and vectors.npy to {args.out}")
    return 0
