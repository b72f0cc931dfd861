"""The machine a benchmark ran on, for the markdown reports (one place for every script)."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def info() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    return {"cpu": cpu_name(), "cores": cores, "python": platform.python_version(), "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_1min": load}


def markdown_line() -> str:
    m = info()
    load = f", load {m['load_1min']:.2f} at start" if m["load_1min"] is not None else ""
    return f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['platform']}; {m['date']}{load}."
