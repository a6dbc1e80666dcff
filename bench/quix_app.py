"""Child process of the quix row: a no-op quix-streams Application forwarding every event.

It imports only the standard library and quixstreams, because quixstreams pins an older
confluent-kafka than xdrec and so runs from its own virtual environment (bench/requirements.txt).
Values are JSON-decoded and re-encoded by quix's serializers, like the ceiling's ``json.loads``.
"""

from __future__ import annotations

import argparse
import logging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()

    from quixstreams import Application

    app = Application(
        broker_address=args.bootstrap_servers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel=logging.WARNING,
        auto_create_topics=False,
        use_changelog_topics=False,
    )
    source = app.topic(args.source, key_deserializer="bytes", value_deserializer="json")
    output = app.topic(args.output, key_serializer="bytes", value_serializer="json")
    app.dataframe(source).to_topic(output)
    app.run()  # until SIGTERM


if __name__ == "__main__":
    main()
