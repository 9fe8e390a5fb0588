"""Process helpers shared by the benchmarks and their doubles (standard library only, so that a
double started as its own process imports nothing more)."""

from __future__ import annotations

import os
import shutil
import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(*pids: int) -> float:
    """User + system CPU seconds used so far by these processes (Linux /proc); a process that
    is gone counts nothing."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def pin_prefix(core: int | None) -> list[str]:
    """`taskset -c <core>` where it can pin (the command exists, two cores or more)."""
    if core is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(core)]
