"""A process's state, CPU time and command line from ``/proc/<pid>`` (Linux), read in one
place: the command name in ``stat`` may hold spaces and parentheses, so its fields are counted
after the last ``)``."""

from __future__ import annotations

import os
from pathlib import Path

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_fields(pid: int) -> list[str] | None:
    """The fields after the command name (``[0]`` state, ``[11]`` utime, ``[12]`` stime), or
    None when the process is gone or there is no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def is_zombie(fields: list[str]) -> bool:
    """Exited but not yet reaped by its parent: gone for every purpose but its pid."""
    return fields[0] == "Z"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds the process has used so far; None when it is gone."""
    fields = stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def command_line(pid: int) -> str | None:
    """The process's arguments joined by spaces; None when it is gone or there is no /proc."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
