"""The benchmark suite's bookkeeping, without a broker: rows name real peers, the GPU rows
report a missing device as such, and the parsing and data helpers behind the new rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bench import encoder_speed, misrouting, recovery, scale_out, training_speed
from bench.__main__ import MODULES, merge_gpu_rows
from bench.harness import NO_CUDA, Outcome
from bench.latency import Latencies, outcomes
from bench.report import markdown, rows_json, write_json
from stream.core.state import UserState
from stream.kafka.topics import key_partition
from stream.kafka.transport import OutgoingMessage
from stream.settings import Settings


def test_every_peer_is_a_row_of_the_suite() -> None:
    specs = [spec for module in MODULES for spec in module.ROWS]
    names = [spec.name for spec in specs]
    assert len(names) == len(set(names))
    assert all(spec.peer in names for spec in specs if spec.peer is not None)


def test_a_missing_gpu_is_not_a_failure_worth_keeping_logs_for() -> None:
    specs = list(training_speed.ROWS)
    results = {
        training_speed.CPU: Outcome(10.0),
        training_speed.PLAIN: Outcome(5.0),
        training_speed.GPU: Outcome.no_gpu(),
        training_speed.PLAIN_GPU: Outcome.no_gpu(),
    }
    rows = rows_json(specs, results)
    assert rows[training_speed.GPU]["error"] == NO_CUDA
    assert rows[training_speed.CPU]["ratio"] == 2.0
    assert not results[training_speed.GPU].broken
    assert Outcome.failed("boom").broken
    text = markdown(specs, rows, results, {"cores": 2}, "now", "quick", "{cores} cores")
    assert "| `training_seconds_per_epoch_gpu` | no GPU |" in text
    assert "Rows that failed" not in text


def test_latency_rows_are_percentiles_of_every_sample() -> None:
    latencies = Latencies(np.arange(1, 101, dtype=float), expected=100, produced_s=1.0)
    rows = outcomes(latencies, "p50", "p99", rate=100.0)
    assert rows["p50"].value == 50.5
    assert rows["p99"].value is not None and 99.0 <= rows["p99"].value <= 100.0
    failed = outcomes(RuntimeError("no rate"), "p50", "p99", rate=0.0)
    assert failed["p99"].error == "RuntimeError: no rate"


def test_owned_events_reads_the_latest_assignment(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    log.write_text(
        "[INFO] partitions assigned count=3 partitions=['a-__assignor-__leader:0', "
        "'p.events.books:0', 'p.events.books:1']\n"
        "[INFO] partitions assigned count=1 partitions=['p.events.books:1']\n"
    )
    assert scale_out.owned_events(log, {"p.events.books"}) == {"p.events.books:1"}
    assert scale_out.owned_events(tmp_path / "missing.log", {"p.events.books"}) == set()


def test_changelog_states_are_real_user_states_on_their_partition() -> None:
    settings = Settings(app_id="b", domains=["books", "music", "movies"])
    items = {d: [f"{d}-{n}" for n in range(20)] for d in ("books", "music", "movies")}
    shapes = recovery.templates(settings, items, 8)
    messages = list(recovery.state_messages(settings, shapes, 10))
    assert [m.partition for m in messages[:5]] == [0, 1, 2, 3, 0]
    state = UserState.from_bytes(messages[7].value or b"")
    assert state.user_id == recovery.user_id(7) == (messages[7].key or b"").decode()
    assert state.interests and state.shown["movies"][0] == "v0"


def test_synthetic_training_data_has_enough_examples() -> None:
    space, sequences = training_speed.synthetic_data(1_000)
    assert set(space.domains) == {"food", "kitchen"}
    assert sum(len(s) - 1 for s in sequences) >= 1_000


def test_gpu_rows_say_there_is_no_gpu_on_a_cpu_machine() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    rows = encoder_speed.gpu_rows()
    assert set(rows) == set(encoder_speed.GPU_ROWS)
    assert all(outcome.error == NO_CUDA for outcome in rows.values())


def test_gpu_rows_from_another_machine_fill_only_the_no_gpu_rows(tmp_path: Path) -> None:
    specs = list(training_speed.ROWS)
    measured = {
        training_speed.CPU: Outcome(80.0, detail="their CPU"),
        training_speed.PLAIN: Outcome(70.0),
        training_speed.GPU: Outcome(2.0, detail="50,000 examples"),
        training_speed.PLAIN_GPU: Outcome(1.0),
    }
    gpu_file = tmp_path / "gpu.json"
    info = {"gpu": "NVIDIA H200", "cores": 16, "cpu_model": "some CPU"}
    write_json(gpu_file, rows_json(specs, measured), info, "2026-01-01T00:00:00+00:00")
    here = {
        training_speed.CPU: Outcome(10.0),
        training_speed.PLAIN: Outcome(5.0),
        training_speed.GPU: Outcome.no_gpu(),
        training_speed.PLAIN_GPU: Outcome.no_gpu(),
    }
    where = merge_gpu_rows(here, gpu_file)
    assert "NVIDIA H200" in where and "2026-01-01" in where
    assert here[training_speed.CPU].value == 10.0  # this machine's own figure stays
    assert here[training_speed.GPU].value == 2.0
    assert "50,000 examples; measured on NVIDIA H200" in here[training_speed.GPU].detail
    assert rows_json(specs, here)[training_speed.GPU]["ratio"] == 2.0


def test_the_misrouting_row_moves_every_event_of_a_quarter_of_the_users() -> None:
    events = [
        OutgoingMessage("p.events.books", f"user-{n % 200}".encode(), b"{}") for n in range(2_000)
    ]
    placed, moved = misrouting.misplace(events, 4)
    wrong = [m for m in placed if m.partition is not None]
    assert len(wrong) == moved and 0.15 < moved / len(events) < 0.35
    assert all(m.partition != key_partition(m.key or b"", 4) for m in wrong)
    users = {m.key for m in wrong}
    assert all(m.partition is not None for m in placed if m.key in users)
