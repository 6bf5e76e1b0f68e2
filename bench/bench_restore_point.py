#!/usr/bin/env python3
"""The safety net's cost and its way back, on a throwaway cluster with real db and backup hosts:

- deploy.yml upgrading one service with a migration hook, with the restore point (an incr
  pgBackRest backup first) and without it (service_releases_restore_point=false): the cost
  of the safety net, as a ratio;
- rollback.yml -e restore_database=true after that migration, on a database of about 1 GB
  (pgbench tables, a full backup under the restore point): the time until the previous
  release set serves again, against the plain `pgbackrest restore` inside it.

The environment is the one tests/e2e/test_restore_point.py makes (inventories/local, podman
db and backup hosts), with names and ports of its own. Prints one line per figure and writes
bench/results/restore_point.json. Not part of `make test` (no timing is asserted). Heavy: run
it under the machine's lock.

    python bench/bench_restore_point.py [--scale 68] [--keep]   # pgbench scale 68 is ~1 GB
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results_file import write_results  # noqa: E402
from tests.e2e.test_restore_point import RestorePointEnv  # noqa: E402
from tests.helpers import Kube, toolchain_env  # noqa: E402

CLUSTER = "openpolicy-bench-rp"
RESTORED = re.compile(r"restored stanza \S+ onto \S+ cluster \S+ \(port \d+\) in ([0-9.]+) s")


class BenchEnv(RestorePointEnv):
    namespace = "openpolicy-bench-restore-point"
    hosts: ClassVar[dict[str, str]] = {
        "openpolicy-local-db1": "openpolicy-bench-rp-db1",
        "openpolicy-local-backup1": "openpolicy-bench-rp-backup1",
    }
    ssh_ports: ClassVar[dict[str, str]] = {"52201": "52223", "52202": "52224"}
    ports = (59462, 59409, 58470, 58471, 59463)
    playbook_timeout = 3600


def timed(env: BenchEnv, playbook: str, *args: str, **extra) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = env.play(playbook, *args, **extra)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{playbook}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-1000:]}")
    return elapsed, result


def cluster(action: str, state: Path) -> tuple[Kube, dict]:
    """The bench's own kwok cluster (scripts/local_cluster.py up or down) and its variables."""
    paths = {"k8s_cluster_workdir": str(state / "cluster"), "k8s_cluster_kubeconfig": str(state / "kubeconfig")}
    argv = [sys.executable, str(REPO / "scripts" / "local_cluster.py"), action, "--name", CLUSTER]
    argv += ["--workdir", paths["k8s_cluster_workdir"], "--kubeconfig", paths["k8s_cluster_kubeconfig"]]
    started = time.monotonic()
    argv += ["--nodes", "3"] if action == "up" else []
    result = subprocess.run(argv, env=toolchain_env(), text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"local_cluster.py {action} failed: {result.stderr.strip()[-1000:]}")
    print(f"bench cluster {action}: {time.monotonic() - started:.1f} s ({os.cpu_count()} cores)")
    return Kube(state / "kubeconfig", f"kwok-{CLUSTER}"), {"k8s_cluster_name": CLUSTER, **paths}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=68, help="pgbench scale of the loaded data (68: ~1 GB)")
    parser.add_argument("--keep", action="store_true", help="leave the cluster and the hosts up")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-restore-point-"))
    kube, cluster_vars = cluster("up", state)
    env = BenchEnv(state / "env", kube, cluster_vars)
    try:
        provision, _ = timed(
            env, "provision_hosts.yml", "playbooks/provision_databases.yml", "playbooks/provision_backups.yml",
            "--limit", f"localhost,{env.db},{env.backup}",
        )  # fmt: skip
        first, _ = timed(env, "deploy.yml")
        print(f"hosts, PostgreSQL, pgBackRest: {provision:6.1f} s; first deploy.yml: {first:6.1f} s")

        loaded = time.monotonic()
        env.podman(env.db, "runuser", "-u", "postgres", "--", "pgbench", "-i", "-q", "-s", str(args.scale),
                   "-p", str(env.pg_port), "openpolicy")  # fmt: skip
        size = int(env.sql("select pg_database_size('openpolicy')"))
        print(f"pgbench -i -s {args.scale}: {size / 2**30:.2f} GiB in {time.monotonic() - loaded:6.1f} s")
        full, _ = timed(env, "backup.yml", type="full", backup_reason="bench-base")
        print(f"full backup under the restore point (backup.yml): {full:6.1f} s")

        without, _ = timed(
            env, "deploy.yml", services="search-service", version="1.5.0", service_releases_restore_point=False
        )
        with_rp, deployed = timed(env, "deploy.yml", services="policy-service", version="1.5.0")
        label = env.deploy_env.release_sets()[-1]["services"]["policy-service"]["backup_label"]
        assert label, deployed.stdout[-3000:]
        ratio = with_rp / without
        print(f"deploy.yml, one migrating service, no restore point:   {without:6.1f} s")
        print(f"deploy.yml, one migrating service, with restore point: {with_rp:6.1f} s (ratio {ratio:.2f})")

        # The migration's part (kwok runs no Job containers): a schema change and rewritten rows.
        env.sql("alter table pgbench_branches add column region text default 'ca'")
        env.sql("update pgbench_tellers set tbalance = tbalance + 1")
        rollback, result = timed(env, "rollback.yml", restore_database="true")
        restored = RESTORED.search(" ".join(result.stdout.split()))
        restore_s = float(restored[1]) if restored else float("nan")
        ready = env.deploy_env.ready()
        assert all(have == want >= 1 for have, want in ready.values()), ready
        assert env.deploy_env.image_tag("policy-service") == "1.4.2"
        columns = env.sql("select count(*) from information_schema.columns where table_name = 'pgbench_branches'")
        assert columns == "3", columns
        print(
            f"rollback.yml -e restore_database=true, {size / 2**30:.2f} GiB: {rollback:6.1f} s until the previous set "
            f"serves (pgbackrest restore inside: {restore_s:.1f} s; rollback / restore = {rollback / restore_s:.2f})"
        )
        write_results(
            "restore_point",
            {
                "database_bytes": size,
                "pgbench_scale": args.scale,
                "full_backup_s": round(full, 1),
                "deploy_one_migrating_service_without_restore_point_s": round(without, 1),
                "deploy_one_migrating_service_with_restore_point_s": round(with_rp, 1),
                "with_over_without_restore_point": round(ratio, 2),
                "rollback_with_restore_until_previous_set_serves_s": round(rollback, 1),
                "pgbackrest_restore_inside_s": round(restore_s, 1),
                "rollback_over_plain_restore": round(rollback / restore_s, 2),
            },
            notes="kwok cluster (no Job containers: the test plays the migration); db and backup hosts are "
            "podman containers on the same 2-core machine, so backup and restore share its disk and CPU; the "
            "restore is pgBackRest's --delta in place (only files changed since the restore point are copied); "
            "most of the rollback is roles/pgbackrest scaling the eight database services down and up one by one",
        )
    finally:
        if args.keep:
            print(f"kept: KUBECONFIG={state / 'kubeconfig'}, hosts {', '.join(env.hosts.values())}")
        else:
            env.remove()
            cluster("down", state)


if __name__ == "__main__":
    main()
