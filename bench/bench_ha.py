#!/usr/bin/env python3
"""Failover and switchover times of the HA databases, five trials each (min, median, max):

- failover: the primary's host is killed (`podman kill`, systemd and all) while a writer inserts
  a row every 50 ms through the router's read-write address; the figure is the time from the
  kill until the first write through that same address succeeds again. The killed host is
  started again, and the time until it is a whole member again is recorded too.
- switchover: Patroni's `POST /switchover` to the synchronous standby while the writer runs; the
  figures are the time from the request until a write through the router reached the new
  primary, and the longest pause between two acknowledged writes around it.

Every trial starts from the same state: all three etcd members healthy, one Patroni leader, both
replicas streaming with a known lag, the router with one server behind its read-write listener
(it waits for that, up to 10 minutes, and prints etcd's, Patroni's and the router's view when a
trial fails). Each trial also checks that no acknowledged row is missing.

It measures on the staging topology a run of tests/e2e/test_staging.py left up (seven podman
hosts reached over SSH: three db hosts, the router host, the repository, scratch and monitoring
hosts, converged by site.yml with the real inventories/staging), with staging's own Patroni
timing (the role's defaults: ttl 30 s, loop_wait 10 s, retry_timeout 10 s), and prints the
figures beside the seed's rollback target (2 minutes) and CloudNativePG's documented failover
behaviour. Writes bench/results/ha.json. Not part of `make test` (no timing is asserted).

    OPENPOLICY_E2E_ENV_KEEP=/tmp/staging-keep pytest tests/e2e/test_staging.py
    python bench/bench_ha.py --reuse /tmp/staging-keep [--trials 5] [--remove]

--reuse FILE: the file that run wrote its topology's folder to (OPENPOLICY_E2E_ENV_KEEP).
--remove takes the kept hosts down after the trials.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from bench.results_file import write_results  # noqa: E402
from tests.e2e import staging_env as ha  # noqa: E402  (the e2e module's helpers)
from tests.e2e.topology import Topology  # noqa: E402
from tests.helpers import Kube  # noqa: E402

ROLLBACK_TARGET_SECONDS = 120
# CloudNativePG's documentation (looked up for this benchmark; not measured here):
# - "Automated failover" (https://cloudnative-pg.io/docs/1.29/failover): after unexpected errors on
#   the primary for longer than .spec.failoverDelay (0 s by default) the cluster goes into
#   failover: the primary's readiness probe fails, the controller's reconciliation loop notices,
#   marks the target primary pending, waits until every WAL receiver stopped, then promotes the
#   elected replica; the old primary's pod restarts as a replica.
# - "Postgres instance manager" (https://cloudnative-pg.io/documentation/1.21/instance_manager):
#   the probes report a failure after three failed checks 10 s apart (later releases make them
#   configurable under .spec.probes).
# - Release notes 1.20.3 (https://github.com/cloudnative-pg/cloudnative-pg/releases/tag/v1.20.3):
#   .spec.switchoverDelay, the time a primary gets to shut down in a switchover, defaults to 3600 s.
# A lost Kubernetes node adds the node's own failure detection before any of this starts.
CLOUDNATIVEPG = {
    "failover_delay_default_seconds": 0,
    "readiness_probe_failure_seconds": 30,
    "switchover_delay_default_seconds": 3600,
    "sources": [
        "https://cloudnative-pg.io/docs/1.29/failover",
        "https://cloudnative-pg.io/documentation/1.21/instance_manager",
        "https://github.com/cloudnative-pg/cloudnative-pg/releases/tag/v1.20.3",
    ],
}
# How long a restarted host may take to be a whole member again (etcd, Patroni, streaming).
WHOLE_TIMEOUT = 600


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 1), "median": round(statistics.median(values), 1), "max": round(max(values), 1)}


def patroni_timing() -> dict[str, int]:
    """Patroni's timing in staging: the role's defaults unless the inventory sets them."""
    defaults = yaml.safe_load((REPO / "roles/patroni/defaults/main.yml").read_text())
    chosen = yaml.safe_load((REPO / "inventories/staging/group_vars/all/ha.yml").read_text())
    names = ("patroni_ttl", "patroni_loop_wait", "patroni_retry_timeout")
    return {name: chosen.get(name, defaults[name]) for name in names}


class Bench:
    """The kept topology and what the trials log in with."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.staging = ha.Staging(topo)
        values = ha.vault_values(topo)
        self.owner_password = values["vault_postgresql_passwords"]["openpolicy_owner"]
        self.restapi_password = values["vault_ha_passwords"]["patroni_restapi"]

    def database(self) -> ha.Database:
        return ha.Database(self.topo.shared_ports["openpolicy_db_router_port"], self.owner_password)


def whole(env: Bench) -> bool:
    """Every etcd member healthy, one Patroni leader, both replicas following it (its timeline, a
    known lag), one of them its synchronous standby, and the router sending writes to one server:
    the state every trial starts from."""
    staging = env.staging
    if set(staging.etcd_health().values()) != {"true"}:
        return False
    members = staging.members()
    replicas = [m for m in members if m.get("role") in ("replica", "sync_standby")]
    return (
        len(members) == 3
        and sum(m.get("role") == "leader" for m in members) == 1
        and len(replicas) == 2
        # Staging's synchronous mode: Patroni promotes only the synchronous standby, and a new
        # primary names one about two Patroni loops after its promotion. A primary lost before
        # that is not replaced automatically (no replica is known to have every commit).
        and any(m.get("role") == "sync_standby" for m in replicas)
        and all(m.get("state") in ("running", "streaming") and isinstance(m.get("lag"), int) for m in replicas)
        and staging.on_one_timeline(members)
        and staging.router_active_servers().get("postgresql_primary") == 1
    )


def state(env: Bench) -> str:
    """What to look at when a trial fails: etcd, Patroni and the router, each in its own words."""
    staging = env.staging
    try:
        router = staging.router_active_servers()
    except OSError as error:
        router = {"error": str(error)}
    members = [{k: m.get(k) for k in ("name", "role", "state", "lag", "timeline")} for m in staging.members()]
    return json.dumps({"etcd": staging.etcd_health(), "patroni": members, "router_active_servers": router})


def wait_whole(env: Bench) -> float:
    started = time.monotonic()
    assert ha.wait_for(lambda: whole(env), WHOLE_TIMEOUT, 2), f"the cluster is not whole again: {state(env)}"
    return time.monotonic() - started


def failover_trial(env: Bench, trial: int) -> tuple[float, float]:
    """(seconds from the kill until a write through the router succeeds, seconds until the
    restarted host is a whole member again)."""
    wait_whole(env)
    leader = env.staging.leader()
    with ha.Writer(env.database(), f"bench_failover_{trial}") as writer:
        assert ha.wait_for(lambda: len(writer.acknowledged) >= 10, 30)
        killed = time.monotonic()
        ha.podman("kill", leader, check=True)
        resumed = ha.wait_for(lambda: writer.acknowledged_since(killed + 0.5), 180, 0.1)
        assert resumed, f"trial {trial}: no write through the router within 180 s of killing {leader}: {state(env)}"
        seconds = writer.last_ok - killed
    assert writer.missing() == [], "acknowledged rows lost"
    ha.podman("start", leader, check=True)
    rejoined = wait_whole(env)
    print(
        f"failover {trial + 1}: {leader} killed, writes back after {seconds:.1f} s; "
        f"whole again {rejoined:.0f} s after its start"
    )
    return seconds, rejoined


def switchover_trial(env: Bench, trial: int) -> tuple[float, float]:
    """(longest pause between two acknowledged writes, seconds from Patroni's POST /switchover
    until a write through the router reached the new primary)."""
    wait_whole(env)
    staging = env.staging
    leader = staging.leader()
    # The inventory asks for synchronous mode: Patroni hands over only to the synchronous standby.
    candidate = ha.wait_for(lambda: staging.named("sync_standby"), 60)
    assert candidate, staging.members()
    with ha.Writer(env.database(), f"bench_switchover_{trial}") as writer:
        assert ha.wait_for(lambda: len(writer.acknowledged) >= 10, 30)
        body = json.dumps({"leader": leader, "candidate": candidate}).encode()
        auth = base64.b64encode(f"patroni:{env.restapi_password}".encode()).decode()
        port = env.topo.ports[leader]["patroni_restapi_port"]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/switchover", data=body, method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Basic {auth}"},
        )  # fmt: skip
        asked = time.monotonic()
        urllib.request.urlopen(request, timeout=120).read()
        assert ha.wait_for(lambda: staging.leader() == candidate, 120), state(env)
        switched = time.monotonic()
        assert ha.wait_for(lambda: writer.acknowledged_since(switched), 120, 0.1), state(env)
        total = writer.last_ok - asked
    assert writer.missing() == [], "acknowledged rows lost"
    print(f"switchover {trial + 1}: {leader} -> {candidate}, longest write pause {writer.longest_gap:.1f} s, "
          f"a write on the new primary {total:.1f} s after the request")  # fmt: skip
    return writer.longest_gap, total


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument(
        "--reuse", type=Path, required=True, help="the OPENPOLICY_E2E_ENV_KEEP file of a test_staging run"
    )
    parser.add_argument("--remove", action="store_true", help="take the kept podman hosts down after the trials")
    args = parser.parse_args(argv)
    root = Path(args.reuse.read_text().strip())
    # The cluster is not used here (and the module's kwok cluster is gone with its session).
    topo = Topology("staging", root, Kube(root / "no-cluster", "none"), create=False)
    try:
        env = Bench(topo)
        failover_runs = [failover_trial(env, n) for n in range(args.trials)]
        switchover_runs = [switchover_trial(env, n) for n in range(args.trials)]
    finally:
        if args.remove:
            topo.stop_hosts()
    failovers = [f for f, _ in failover_runs]
    rejoins = [r for _, r in failover_runs]
    pauses = [p for p, _ in switchover_runs]
    switchovers = [t for _, t in switchover_runs]
    results = {
        "trials": args.trials,
        "patroni_timing": patroni_timing(),
        "topology": "tests/e2e/test_staging.py (inventories/staging over SSH, kept)",
        "router_check": "HAProxy, inter 1s fall 2 rise 2",
        "synchronous_mode": True,
        "failover_seconds": summary(failovers),
        "old_primary_whole_again_seconds": summary(rejoins),
        "switchover_seconds": summary(switchovers),
        "switchover_write_pause_seconds": summary(pauses),
        "failover_vs_rollback_target": round(statistics.median(failovers) / ROLLBACK_TARGET_SECONDS, 2),
        "switchover_vs_rollback_target": round(statistics.median(switchovers) / ROLLBACK_TARGET_SECONDS, 2),
        "rollback_target_seconds": ROLLBACK_TARGET_SECONDS,
        "cloudnativepg_documented": CLOUDNATIVEPG,
        "raw": {
            "failover": [round(v, 2) for v in failovers],
            "old_primary_whole_again": [round(v, 1) for v in rejoins],
            "switchover": [round(v, 2) for v in switchovers],
            "switchover_write_pause": [round(v, 2) for v in pauses],
        },
    }
    for name in (
        "failover_seconds",
        "old_primary_whole_again_seconds",
        "switchover_seconds",
        "switchover_write_pause_seconds",
    ):
        figures = results[name]
        print(f"{name:34} min {figures['min']:6.1f}  median {figures['median']:6.1f}  max {figures['max']:6.1f}")
    print(f"failover median / rollback target (120 s): {results['failover_vs_rollback_target']}")
    print(f"switchover median / rollback target (120 s): {results['switchover_vs_rollback_target']}")
    print("CloudNativePG (documented, not measured here): failover starts once the primary's readiness probe fails")
    print("  (three checks 10 s apart) and .spec.failoverDelay (0 s by default) has passed; a switchover gives the")
    print("  primary up to .spec.switchoverDelay (3600 s by default) to shut down. Sources:")
    for source in CLOUDNATIVEPG["sources"]:
        print(f"  {source}")
    write_results("ha", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
