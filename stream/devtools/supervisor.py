"""Runs ``xdrec worker`` (or ``xdrec trainer``) as a child process: the quick start, the
streaming evaluation and the tests all drive real processes the way production runs them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from stream.procfs import is_zombie, stat_fields
from stream.settings import Settings, settings_env

READY_LINE = "worker ready"
ASSIGNED_LINE = "partitions assigned"
TRAINER_READY_LINE = "trainer waiting for requests"


class WorkerProcess:
    """One worker child, configured through XDREC_* variables, logging to ``log_file``."""

    def __init__(
        self,
        settings: Settings,
        log_file: Path,
        cwd: Path | None = None,
        command: tuple[str, ...] = ("worker",),
        ready_line: str = READY_LINE,
    ) -> None:
        self.settings = settings
        self.log_file = log_file
        self.cwd = cwd
        self.command = command
        self.ready_line = ready_line
        self.process: subprocess.Popen | None = None
        self._log_start = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _log_text(self) -> str:
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")[self._log_start :]

    def start(self, timeout: float = 300.0, wait_for_assignment: bool = True) -> WorkerProcess:
        """Start and block until the worker is ready (and owns partitions, by default)."""
        env = {**os.environ, **settings_env(self.settings)}
        env.pop("XDREC_CONFIG", None)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = (
            len(self.log_file.read_text(errors="replace")) if self.log_file.exists() else 0
        )
        with self.log_file.open("a") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", *self.command],
                env=env,
                cwd=self.cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the parent, which stops us in order
            )
        needles = [self.ready_line] + ([ASSIGNED_LINE] if wait_for_assignment else [])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._log_text()
            if all(needle in text for needle in needles):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        tail = "\n".join(self._log_text().splitlines()[-30:])
        self.stop()
        raise RuntimeError(f"{self.command[0]} did not become ready (see {self.log_file}):\n{tail}")

    def process_tree(self) -> list[int]:
        """The worker's pid and its descendants' (its runtime process, ...), for memory
        figures and checks that nothing outlives it."""
        return process_tree(self.pid) if self.pid is not None else []

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def metrics_port(self) -> int:
        """The /metrics port the worker logged at start."""
        ports = re.findall(r"metrics served address=\S+ port=(\d+)", self._log_text())
        if not ports:
            raise RuntimeError(f"worker logged no metrics port; see {self.log_file}")
        return int(ports[-1])

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushes — a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def process_tree(pid: int) -> list[int]:
    """``pid`` and its live descendants (Linux /proc); an exited process has none."""
    tree, index = [pid], 0
    while index < len(tree):
        for children in Path(f"/proc/{tree[index]}/task").glob("*/children"):
            try:
                tree.extend(int(child) for child in children.read_text().split())
            except OSError:  # the task exited meanwhile
                continue
        index += 1
    return [member for member in tree if process_running(member)]


def process_running(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie waiting to be reaped."""
    fields = stat_fields(pid)
    return fields is not None and not is_zombie(fields)
