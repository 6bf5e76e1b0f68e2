"""Where a benchmark leaves its figures: bench/results/<name>.json, with the machine and date.

The latest file of each benchmark is committed, so that a reader sees where the project stands
without running anything. Not a benchmark itself (`make bench` runs bench/bench_*.py only).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


# The same machine ran the same deploy code 10.0 s cold one evening and 11.7 s five hours later,
# the sequential helm loop 20.3 and 21.8 s: the CPU-bound deploy slowed more than the loop, which
# mostly waits. A fixed pure-Python loop, timed when the figures are written, tells a reader
# how fast one core was then (lower is faster).
CALIBRATION_ITERATIONS = 10_000_000


def single_core_seconds() -> float:
    """Seconds one core takes to sum CALIBRATION_ITERATIONS integers in a Python loop."""
    started = time.perf_counter()
    total = 0
    for number in range(CALIBRATION_ITERATIONS):
        total += number
    return round(time.perf_counter() - started, 3)


def machine() -> dict:
    """What the figures depend on: cores, memory, the load and one core's speed when written."""
    with open("/proc/meminfo") as handle:
        total_kib = int(handle.readline().split()[1])
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(total_kib / 1024 / 1024, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "single_core_loop_s": single_core_seconds(),
        "system": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


def write_results(name: str, figures: dict, notes: str = "") -> Path:
    """Write bench/results/<name>.json (figures in seconds unless their key says otherwise)."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "figures": figures,
    }
    if notes:
        document["notes"] = notes
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"results: {path.relative_to(RESULTS.parent.parent)}")
    return path
