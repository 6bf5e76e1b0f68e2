#!/usr/bin/env python3
"""RTO and RPO of losing the db host, by the documented path, over three trials.

Each trial: a stream of timestamped inserts as auth-service; the db host killed (SIGKILL of the
container, not a clean stop) and removed with its disk; then the path of
docs/runbooks/restore.md: provision_hosts.yml, provision_databases.yml and provision_backups.yml
in one run (what site.yml does for the hosts), which restores the latest backup and every
archived WAL segment onto the rebuilt host.

- RTO: host lost until auth-service reads its table again;
- RPO: the last acknowledged insert minus the newest restored one, against archive_timeout;
- the ratio of RTO to the pgBackRest restore inside it (the plain tool's share).

Uses the hosts of tests/e2e/test_faults.py (its own names and ports; removed at the end).
Prints one line per trial and writes bench/results/faults.json. Not part of `make test`.

    python bench/bench_faults.py [--trials 3] [--archive-timeout 10]
"""

from __future__ import annotations

import argparse
import fcntl
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results_file import write_results  # noqa: E402
from tests.e2e import test_faults as faults  # noqa: E402
from tests.e2e.test_secrets import output  # noqa: E402


def trial(env: faults.FaultsEnv, stream_seconds: float) -> dict[str, float]:
    acknowledged, lost = faults.crash_and_lose_the_db_host(env, stream_seconds)
    result = env.play(*faults.PLAYBOOKS)
    if result.returncode != 0:
        sys.exit(f"bench_faults: the recovery failed:\n{output(result)}")
    while env.sql("auth", "select count(*) from auth.fault_probe").returncode != 0:
        time.sleep(0.5)
    rto = time.monotonic() - lost
    missing, rpo, _ = faults.data_loss(env, acknowledged)
    found = re.search(r"restored stanza \S+ \(latest backup and archived WAL\) in ([0-9.]+) s", result.said)
    return {
        "rto_seconds": rto,
        "rpo_seconds": rpo,
        "restore_seconds": float(found.group(1)) if found else 0.0,
        "acknowledged_rows": len(acknowledged),
        "lost_before_restored_end": len(missing),
    }


def describe(number: int, figures: dict[str, float], archive_timeout: int) -> str:
    rto, restore, rpo = figures["rto_seconds"], figures["restore_seconds"], figures["rpo_seconds"]
    return (
        f"trial {number}: RTO {rto:6.1f} s (pgBackRest restore {restore:5.1f} s, x{rto / max(restore, 0.1):.1f}), "
        f"RPO {rpo:5.1f} s (archive_timeout {archive_timeout} s), {figures['acknowledged_rows']:.0f} rows acked, "
        f"{figures['lost_before_restored_end']:.0f} lost before the restored end"
    )


NOTES = (
    "RTO: db host SIGKILLed and removed with its disk until auth-service reads its table again, by "
    "docs/runbooks/restore.md's path; RPO: last acknowledged insert minus newest restored one"
)


def summarise(trials: list[dict[str, float]], archive_timeout: int) -> dict:
    return {
        "archive_timeout_seconds": archive_timeout,
        "trials_completed": len(trials),
        "trials": trials,
        "rto_seconds_median": statistics.median(t["rto_seconds"] for t in trials),
        "rpo_seconds_max": max(t["rpo_seconds"] for t in trials),
        "rto_to_restore_ratio_median": statistics.median(
            t["rto_seconds"] / max(t["restore_seconds"], 0.1) for t in trials
        ),
        "lost_before_restored_end_total": sum(t["lost_before_restored_end"] for t in trials),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--archive-timeout", type=int, default=faults.ARCHIVE_TIMEOUT)
    args = parser.parse_args()
    # The hosts and ports of tests/e2e/test_faults.py: wait for a run of that module to end first.
    lock = (Path(tempfile.gettempdir()) / "openpolicy-e2e-test_faults.lock").open("w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    env = faults.FaultsEnv(Path(tempfile.mkdtemp(prefix="bench-faults-")))
    env.host_vars["pgbackrest_archive_timeout"] = args.archive_timeout
    trials: list[dict[str, float]] = []
    try:
        result = env.play(*faults.PLAYBOOKS)
        if result.returncode != 0:
            sys.exit(f"bench_faults: provisioning failed:\n{output(result)}")
        env.sql("auth", faults.PROBE_TABLE)
        for number in range(1, args.trials + 1):
            figures = trial(env, 3 * args.archive_timeout)
            trials.append(figures)
            print(describe(number, figures, args.archive_timeout), flush=True)
            # After each trial, so that an interrupted run still leaves what it measured.
            summary = summarise(trials, args.archive_timeout)
            write_results("faults", summary, notes=NOTES)
    finally:
        faults.remove_hosts()
    print(f"RTO median {summary['rto_seconds_median']:.1f} s, RPO max {summary['rpo_seconds_max']:.1f} s "
          f"({summary['rpo_seconds_max'] / args.archive_timeout:.2f} x archive_timeout)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
