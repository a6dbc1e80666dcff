"""Row 3: the same no-op forwarding in quix-streams, the other Python streaming framework.

Read against faust's ``take()`` row, it tells whether moving the worker off faust would pay.
quix-streams runs from its own interpreter (``--quix-python``), see bench/requirements.txt.
"""

from __future__ import annotations

import subprocess

from bench.faust_noop import TAKE
from bench.forwarding import NoopSource, measure_forwarder
from bench.harness import Context, Outcome, RowSpec
from stream.settings import Settings

NAME = "quix_noop_events_per_s"
NEEDS_BROKER = True
ROWS = (
    RowSpec(
        NAME,
        "events/s",
        TAKE,
        "no-op quix-streams `Application`: `app.dataframe(topic).to_topic(output)`, json "
        "serializers, in a child process; first to last output",
    ),
)


def quix_version(python: str) -> str:
    """The quixstreams version that ``python`` imports; raises with a fix when it has none."""
    probe = subprocess.run(
        [python, "-c", "import quixstreams; print(quixstreams.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(
            f"{python} cannot import quixstreams ({last}): create a venv and "
            "`pip install -r bench/requirements-quix.txt` into it, then pass --quix-python"
        )
    return probe.stdout.strip()


def run(ctx: Context) -> dict[str, Outcome]:
    try:
        version = quix_version(ctx.quix_python)
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        return {NAME: Outcome.failed(str(exc))}
    state_dir = str(ctx.scratch("quix") / "state")

    def command(source: NoopSource, settings: Settings, output: str) -> list[str]:
        return [
            ctx.quix_python,
            "-m",
            "bench.quix_app",
            "--bootstrap-servers",
            settings.kafka.bootstrap_servers,
            "--source",
            source.topic,
            "--output",
            output,
            "--group",
            settings.app_id,
            "--state-dir",
            state_dir,
        ]

    outcome = measure_forwarder(ctx, "quix", command)
    if outcome.value is not None:
        outcome = Outcome(outcome.value, detail=f"{outcome.detail}; quixstreams {version}")
    return {NAME: outcome}
