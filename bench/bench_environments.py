#!/usr/bin/env python3
"""site.yml on the production-shaped topology over SSH, beside the same on the local one.

- staging: the real inventories/staging on seven podman hosts (three db hosts with Patroni,
  etcd, Redis and Sentinel, the router, the repository, the scratch host, the monitoring host),
  each with systemd and sshd on its own loopback port, reached as `deploy` with become through
  tests/e2e/topology.py's overlay; provider `existing` on a kwok cluster;
- local: a copy of inventories/local (db, backup and monitoring hosts, made by site.yml
  itself), hosts and ports renamed so that a `make up` environment is left alone.

Each cold (first run) and no-op (second run, changed=0), with the ratios. Prints one line per
figure and writes bench/results/environments.json. Not part of `make test`.

    python bench/bench_environments.py
    python bench/bench_environments.py --reuse FILE

With --reuse, the staging figures are those tests/e2e/test_staging.py measured on its own cold
and second site.yml run (OPENPOLICY_E2E_ENV_KEEP=FILE kept them in its topology's timings.json;
its second run comes after a failover and the old primary's return, and changes nothing): the
staging topology is not provisioned a second time, only the local side runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.results_file import write_results  # noqa: E402
from tests.e2e.topology import Topology, seed_vault  # noqa: E402
from tests.helpers import Kube, recap, toolchain_env  # noqa: E402

CLUSTER = "openpolicy-bench-env"
LOCAL_HOSTS = {
    "openpolicy-local-db1": "openpolicy-bench-local-db1",
    "openpolicy-local-backup1": "openpolicy-bench-local-backup1",
    "openpolicy-local-monitoring1": "openpolicy-bench-local-monitoring1",
}
# Ports of the local copy's hosts (they share this machine's network with a `make up`):
# SSH, pgBackRest TLS and node_exporter per host, then one port per server.
LOCAL_PORTS = {
    name: {"ansible_port": 52501 + i, "pgbackrest_tls_server_port": 52531 + i, "node_exporter_port": 52551 + i}
    for i, name in enumerate(LOCAL_HOSTS.values())
}
LOCAL_VARS = {
    "postgresql_port": 52511,
    "redis_port": 52521,
    "pgbackrest_scratch_port": 52541,
    "postgres_exporter_port": 52561,
    "redis_exporter_port": 52571,
    "prometheus_port": 52590,
    "alertmanager_port": 52591,
    "host_logs_collector_port": 52592,
}


def run(cmd: list[str]) -> str:
    result = subprocess.run(cmd, env=toolchain_env(), text=True, capture_output=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... failed: {result.stderr.strip()[-1000:]}")
    return result.stdout


def timed(what: str, call) -> tuple[float, subprocess.CompletedProcess]:
    started = time.monotonic()
    result = call()
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"{what}: exit {result.returncode}\n{result.stdout[-4000:]}")
    return elapsed, result


def changed_total(result: subprocess.CompletedProcess) -> int:
    return sum(counts["changed"] for counts in recap(result).values())


def local_copy(root: Path) -> Path:
    """inventories/local with its hosts renamed and their ports moved (a `make up` keeps its own)."""
    inventory = root / "inventories" / "local"
    ignore = shutil.ignore_patterns("credentials", "vault.yml")
    shutil.copytree(REPO / "inventories" / "local", inventory, ignore=ignore)
    text = (inventory / "hosts.yml").read_text()
    for old, new in LOCAL_HOSTS.items():
        text = text.replace(old, new)
    hosts = yaml.safe_load(text)
    groups = hosts["all"]["children"]["ssh_hosts"]["children"]
    for group in groups.values():
        for name, variables in group["hosts"].items():
            variables.update(LOCAL_PORTS[name])
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    return inventory


def local_playbook(inventory: Path, name: str, extra: dict) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", "-i", str(inventory), f"playbooks/{name}", "-e", json.dumps(extra)]
    return subprocess.run(cmd, cwd=REPO, env=toolchain_env(), text=True, capture_output=True, timeout=1800, check=False)


def staging_from_module(keep_file: Path) -> dict[str, float | int]:
    """The staging figures the module recorded in its kept topology (timings.json)."""
    root = Path(keep_file.read_text().strip())
    timings = json.loads((root / "timings.json").read_text())
    missing = {"cold_s", "noop_s", "noop_changed"} - set(timings)
    if missing or not timings.get("cold_ok"):
        raise SystemExit(f"{root}/timings.json: the module's run has no passing cold and no-op site.yml ({timings})")
    return {
        "staging_hosts": timings["hosts"],
        "staging_hosts_start_s": timings["hosts_start_s"],
        "staging_cold_s": timings["cold_s"],
        "staging_noop_s": timings["noop_s"],
        "staging_noop_changed": timings["noop_changed"],
        "staging_source": "tests/e2e/test_staging.py (kept topology)",
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reuse", type=Path, help="the OPENPOLICY_E2E_ENV_KEEP file of a module run")
    args = parser.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="bench-environments-"))
    cluster = ["--name", CLUSTER, "--workdir", str(state / "cluster"), "--kubeconfig", str(state / "kubeconfig")]
    started = time.monotonic()
    run([sys.executable, str(REPO / "scripts" / "local_cluster.py"), "up", *cluster, "--nodes", "3"])
    print(f"bench cluster up: {time.monotonic() - started:.1f} s ({os.cpu_count()} cores)")
    kube = Kube(state / "kubeconfig", f"kwok-{CLUSTER}")
    cluster_vars = {
        "k8s_cluster_name": CLUSTER,
        "k8s_cluster_workdir": str(state / "cluster"),
        "k8s_cluster_kubeconfig": str(state / "kubeconfig"),
    }
    local = local_copy(state / "local")
    local_extra = {**cluster_vars, **LOCAL_VARS, "podman_hosts_environment": "bench-local"}
    figures: dict[str, float | int | str] = staging_from_module(args.reuse) if args.reuse else {}
    topo = None if args.reuse else Topology("staging", state / "staging", kube)
    try:
        if topo:
            seed_vault(topo.inventory)
            topo.prepare_cluster()
            figures["staging_hosts"] = len(topo.hosts)
            figures["staging_hosts_start_s"], _ = timed("hosts", topo.start_hosts)
            figures["staging_cold_s"], _ = timed("staging cold", lambda: topo.playbook("site.yml"))
            figures["staging_noop_s"], again = timed("staging no-op", lambda: topo.playbook("site.yml"))
            figures["staging_noop_changed"] = changed_total(again)
            figures["staging_source"] = "this benchmark"
        figures["local_cold_s"], _ = timed("local cold", lambda: local_playbook(local, "site.yml", local_extra))
        figures["local_noop_s"], again = timed("local no-op", lambda: local_playbook(local, "site.yml", local_extra))
        figures["local_noop_changed"] = changed_total(again)
    finally:
        if topo:
            topo.remove_releases()
            topo.stop_hosts()
        local_playbook(local, "teardown_local.yml", local_extra)
        run([sys.executable, str(REPO / "scripts" / "local_cluster.py"), "down", *cluster])
    for name in ("staging_hosts_start_s", "staging_cold_s", "staging_noop_s", "local_cold_s", "local_noop_s"):
        figures[name] = round(figures[name], 1)
    figures["cold_ratio_staging_to_local"] = round(figures["staging_cold_s"] / figures["local_cold_s"], 2)
    figures["noop_ratio_staging_to_local"] = round(figures["staging_noop_s"] / figures["local_noop_s"], 2)
    hosts = figures["staging_hosts"]
    print(f"podman hosts of the staging topology ({hosts}, SSH): {figures['staging_hosts_start_s']:6.1f} s")
    print(f"site.yml staging topology ({hosts} hosts, SSH), cold: {figures['staging_cold_s']:6.1f} s")
    print(f"site.yml local (3 hosts, SSH), cold:            {figures['local_cold_s']:6.1f} s")
    print(f"  staging / local cold = {figures['cold_ratio_staging_to_local']:.2f}")
    noop, changed = figures["staging_noop_s"], figures["staging_noop_changed"]
    print(f"site.yml staging topology, no-op:               {noop:6.1f} s (changed={changed})")
    noop, changed = figures["local_noop_s"], figures["local_noop_changed"]
    print(f"site.yml local, no-op:                          {noop:6.1f} s (changed={changed})")
    print(f"  staging / local no-op = {figures['noop_ratio_staging_to_local']:.2f}")
    write_results("environments", figures)


if __name__ == "__main__":
    main()
