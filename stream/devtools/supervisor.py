"""Child processes: ``xdrec worker`` (or ``xdrec trainer``) the way production runs it, for the
quick start, the streaming evaluation, the tests and the benchmarks, and any other command a
benchmark runs beside it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from stream.procfs import is_zombie, stat_fields
from stream.settings import Settings, settings_env

READY_LINE = "worker ready"
ASSIGNED_LINE = "partitions assigned"
TRAINER_READY_LINE = "trainer waiting for requests"


class ChildProcess:
    """A child process in its own session (Ctrl-C reaches the parent, which stops it in order),
    appending its output to ``log_file``; stopped with SIGTERM, then SIGKILL."""

    def __init__(
        self,
        argv: Sequence[str],
        log_file: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.log_file = log_file
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.process: subprocess.Popen | None = None
        self._log_start = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def _log_text(self) -> str:
        """The log written since this start (an earlier run's lines are not this run's)."""
        if not self.log_file.exists():
            return ""
        return self.log_file.read_text(errors="replace")[self._log_start :]

    def start(self) -> ChildProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._log_start = (
            len(self.log_file.read_text(errors="replace")) if self.log_file.exists() else 0
        )
        with self.log_file.open("a") as output:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def process_tree(self) -> list[int]:
        """The child's pid and its descendants' (a worker's runtime process, ...), for memory
        figures and checks that nothing outlives it."""
        return process_tree(self.pid) if self.pid is not None else []

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushes — a crash."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(30)

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(30)

    def tail(self, lines: int = 15) -> str:
        """The last ``lines`` of this run's log, for error messages."""
        text = self._log_text().strip().splitlines()
        return "\n".join(text[-lines:]) or "(empty log)"


class WorkerProcess(ChildProcess):
    """``xdrec worker`` (or another command, e.g. ``trainer``) as a child, configured through
    XDREC_* variables."""

    def __init__(
        self,
        settings: Settings,
        log_file: Path,
        cwd: Path | None = None,
        command: tuple[str, ...] = ("worker",),
        ready_line: str = READY_LINE,
    ) -> None:
        super().__init__([sys.executable, "-m", "stream.cli", *command], log_file, None, cwd)
        self.settings = settings
        self.command = command
        self.ready_line = ready_line

    def start(self, timeout: float = 300.0, wait_for_assignment: bool = True) -> WorkerProcess:
        """Start and block until the worker is ready (and owns partitions, by default). The
        child sees this process's environment as it is now (a benchmark may set faust's
        variables for one run), plus the settings as XDREC_* variables."""
        self.env = {**os.environ, **settings_env(self.settings)}
        self.env.pop("XDREC_CONFIG", None)
        super().start()
        assert self.process is not None
        needles = [self.ready_line] + ([ASSIGNED_LINE] if wait_for_assignment else [])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._log_text()
            if all(needle in text for needle in needles):
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        tail = self.tail(30)
        self.stop()
        raise RuntimeError(f"{self.command[0]} did not become ready (see {self.log_file}):\n{tail}")

    def metrics_port(self) -> int:
        """The /metrics port the worker logged at start."""
        ports = re.findall(r"metrics served address=\S+ port=(\d+)", self._log_text())
        if not ports:
            raise RuntimeError(f"worker logged no metrics port; see {self.log_file}")
        return int(ports[-1])


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
