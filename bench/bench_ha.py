#!/usr/bin/env python3
"""Failover and switchover times of the HA databases, five trials each (min, median, max):

- failover: the primary's host is killed (`podman kill`, systemd and all) while a writer inserts
  a row every 50 ms through the router's read-write address; the figure is the time from the
  kill until the first write through that same address succeeds again. The killed host is
  started again and waits until it follows as a replica before the next trial.
- switchover: Patroni's `POST /switchover` to a healthy replica while the writer runs; the figure
  is the longest time between two acknowledged writes around it. Each trial also checks that no
  acknowledged row is missing.

It uses the environment of tests/e2e/test_ha.py (three podman db hosts and a router host, built
with the toolkit's playbooks) with that inventory's Patroni timing (ttl 15 s, loop_wait 3 s,
retry_timeout 5 s; the role's defaults are 30/10/10) and prints the figures beside the seed's
rollback target (2 minutes) and CloudNativePG's documented failover behaviour. Writes
bench/results/ha.json. Not part of `make test` (no timing is asserted).

    python bench/bench_ha.py [--trials 5] [--keep] [--reuse FILE]

--reuse FILE measures on the hosts a test_ha run left up (OPENPOLICY_E2E_HA_KEEP=FILE names the
file it writes its environment's folder to), without provisioning them again.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results_file import write_results  # noqa: E402
from tests.e2e import test_ha as ha  # noqa: E402  (the e2e test's environment and helpers)

ROLLBACK_TARGET_SECONDS = 120
# CloudNativePG's documentation (cloudnative-pg.io/docs, "Automated failover" and "Instance
# manager"): failover starts once the primary's readiness probe has failed for longer than
# .spec.failoverDelay (0 s by default); the probes fail after three checks 10 s apart in the
# older releases; .spec.switchoverDelay (3600 s by default) bounds how long a primary may take
# to shut down in a switchover. A lost Kubernetes node adds the node's own failure detection.
CLOUDNATIVEPG = {
    "failover_delay_default_seconds": 0,
    "readiness_probe_failure_seconds": 30,
    "switchover_delay_default_seconds": 3600,
    "source": "https://cloudnative-pg.io/docs/1.29/failover and /documentation/1.21/instance_manager",
}


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def member_number(name: str) -> int:
    return ha.DB_HOSTS.index(name) + 1


def wait_replica(n: int) -> None:
    def running_replica() -> bool:
        status, body = ha.rest(n, "/patroni")
        return status == 200 and body.get("role") == "replica" and body.get("state") == "running"

    assert ha.wait_for(running_replica, 300, 2), f"db{n} did not come back as a replica"


def failover_trial(env: ha.HaEnv, trial: int) -> float:
    leader = ha.leader()
    db = ha.Database(env.owner_password)
    with ha.Writer(db, f"bench_failover_{trial}") as writer:
        assert ha.wait_for(lambda: len(writer.acknowledged) >= 10, 30)
        killed = time.monotonic()
        ha.podman("kill", leader, check=True)
        assert ha.wait_for(lambda: writer.acknowledged_since(killed + 0.5), 180, 0.1)
        seconds = writer.last_ok - killed
    assert writer.missing() == [], "acknowledged rows lost"
    ha.podman("start", leader, check=True)
    wait_replica(member_number(leader))
    return seconds


def switchover_trial(env: ha.HaEnv, trial: int) -> float:
    leader = ha.leader()
    # The inventory asks for synchronous mode: Patroni hands over only to the synchronous standby.
    candidate = ha.wait_for(lambda: ha.named("sync_standby"), 60)
    assert candidate, ha.members()
    db = ha.Database(env.owner_password)
    with ha.Writer(db, f"bench_switchover_{trial}") as writer:
        assert ha.wait_for(lambda: len(writer.acknowledged) >= 10, 30)
        body = json.dumps({"leader": leader, "candidate": candidate}).encode()
        auth = base64.b64encode(f"patroni:{env.secrets['patroni_restapi_password']}".encode()).decode()
        port = ha.ports(member_number(leader))["patroni_restapi_port"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/switchover", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=120).read()
        assert ha.wait_for(lambda: ha.leader() == candidate, 120)
        switched = time.monotonic()
        assert ha.wait_for(lambda: writer.acknowledged_since(switched), 120, 0.1)
    assert writer.missing() == [], "acknowledged rows lost"
    wait_replica(member_number(leader))
    return writer.longest_gap


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="leave the podman hosts running")
    parser.add_argument("--reuse", type=Path, help="file naming the environment a test_ha run left up")
    args = parser.parse_args(argv)
    provision = None
    if args.reuse:
        env = ha.HaEnv(Path(args.reuse.read_text().strip()), create=False)
    else:
        ha.remove_hosts()
        env = ha.HaEnv(Path(tempfile.mkdtemp(prefix="bench-ha-")))
    try:
        if not args.reuse:
            started = time.monotonic()
            result = env.play(*ha.PLAYBOOKS, timeout=ha.PROVISION_TIMEOUT)
            assert result.returncode == 0, ha.output(result)
            provision = round(time.monotonic() - started, 1)
        values = env.vault_values()
        env.owner_password = values["vault_postgresql_passwords"]["openpolicy_owner"]
        failovers = [failover_trial(env, n) for n in range(args.trials)]
        switchovers = [switchover_trial(env, n) for n in range(args.trials)]
    finally:
        if not args.keep:
            ha.remove_hosts()
    results = {
        "trials": args.trials,
        "patroni_timing": ha.PATRONI_TIMING,
        "router_check": "HAProxy, inter 1s fall 2 rise 2",
        # None: measured on the hosts a test_ha run provisioned (--reuse).
        "provision_seconds": provision,
        "failover_seconds": summary(failovers),
        "switchover_write_pause_seconds": summary(switchovers),
        "failover_vs_rollback_target": round(statistics.median(failovers) / ROLLBACK_TARGET_SECONDS, 2),
        "rollback_target_seconds": ROLLBACK_TARGET_SECONDS,
        "cloudnativepg_documented": CLOUDNATIVEPG,
        "raw": {"failover": [round(v, 2) for v in failovers], "switchover": [round(v, 2) for v in switchovers]},
    }
    for name in ("failover_seconds", "switchover_write_pause_seconds"):
        figures = results[name]
        print(f"{name:34} min {figures['min']:6.1f}  median {figures['median']:6.1f}  max {figures['max']:6.1f}")
    print(f"failover median / rollback target (120 s): {results['failover_vs_rollback_target']}")
    print(
        "CloudNativePG (documented, not measured here): failoverDelay 0 s by default, after the readiness probe fails;"
    )
    print("  switchoverDelay 3600 s by default bounds a primary's shutdown in a switchover")
    write_results("ha", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
