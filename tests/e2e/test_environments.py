"""site.yml with the real inventories/staging on a production-shaped topology, over SSH.

Seven podman hosts, one per host of the inventory: three db hosts (PostgreSQL under Patroni
with etcd, Redis with Sentinel), the router host (HAProxy: one address for the primary, one for
the replicas, one for the Redis master), the pgBackRest repository host, a scratch host for
restore drills and the monitoring host. Each has systemd and sshd on its own loopback port (the
servers on ports of their own: they share this machine's network) and is reached as `deploy`
with become through tests/e2e/topology.py's overlay; the cluster is the session's kwok cluster,
reached as provider `existing`.

The tests of this module build on each other in file order: bad inventories first (they must
change nothing on the fresh hosts), then the converge, what it made, and a second run.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.e2e.topology import BAD_STAGING_INVENTORIES, Topology, running
from tests.e2e.unproven import not_yet_proven
from tests.helpers import failure_messages

pytestmark = [pytest.mark.cluster, not_yet_proven(11, "site.yml on the staging topology over SSH")]

ENV = "staging"
NAMESPACE = f"openpolicy-{ENV}"
DB_HOSTS = [f"openpolicy-{ENV}-db{n}" for n in (1, 2, 3)]
ROUTER, REPOSITORY, SCRATCH = (f"openpolicy-{ENV}-{h}" for h in ("router1", "backup1", "restore1"))


@pytest.fixture(scope="module")
def topo(kube, tmp_path_factory: pytest.TempPathFactory):
    with running(ENV, kube, tmp_path_factory.mktemp(ENV)) as topology:
        yield topology


# --- bad inventories: one line naming the setting, nothing changed ---------------------------


# case: (change of hosts.yml, change of the overlay, what the one line names): the control-host
# cases (topology.py) and one that needs the hosts.
BAD = {
    **{case: (change, {}, setting) for case, (change, setting) in BAD_STAGING_INVENTORIES.items()},
    "unreachable host": (None, {DB_HOSTS[1]: {"ansible_port": 1}}, f"ansible_host/ansible_port of {DB_HOSTS[1]}"),
}


def nothing_changed(topo: Topology, vault: Path, vault_before: bytes, case: str) -> None:
    assert vault.read_bytes() == vault_before, "the secrets role stored a generated secret"
    assert topo.kube.run("get", "namespace", NAMESPACE, check=False).returncode != 0, "the namespace was created"
    for host in DB_HOSTS:
        for path in ("/etc/postgresql/15/main", "/etc/patroni", "/var/lib/etcd/member"):
            assert topo.ssh(host, f"test -e {path}", check=False).returncode == 1, f"{host}: {path} was made"
    assert topo.ssh(REPOSITORY, "test -e /etc/pgbackrest/pgbackrest.conf", check=False).returncode == 1
    assert topo.ssh(ROUTER, "test -e /etc/haproxy/haproxy.cfg && grep -q openpolicy /etc/haproxy/haproxy.cfg",
                    check=False).returncode != 0  # fmt: skip


def test_bad_inventories_fail_in_one_line_and_change_nothing(topo: Topology, tmp_path: Path) -> None:
    if not topo.create:
        pytest.skip("the reused topology was converged before: nothing to compare with")

    def run(case: str) -> tuple[subprocess.CompletedProcess, Path, bytes]:
        change_hosts, change_overlay, _ = BAD[case]
        inventory = tmp_path / case.replace(" ", "-") / ENV
        shutil.copytree(topo.inventory, inventory)
        if change_hosts:
            hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
            change_hosts(hosts)
            (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
        overlay = topo.write_overlay(inventory.parent / "overlay", **change_overlay)
        vault = inventory / "group_vars/all/vault.yml"
        before = vault.read_bytes()
        return topo.playbook("site.yml", inventory=inventory, overlay=overlay), vault, before

    # Each run stops in the preflight on the control host: side by side, they cost about two.
    with ThreadPoolExecutor(3) as pool:
        results = dict(zip(BAD, pool.map(run, BAD), strict=True))
    for case, (result, vault, before) in results.items():
        setting = BAD[case][2]
        assert result.returncode != 0, f"{case}: {result.stdout[-3000:]}"
        messages = failure_messages(result)
        assert any(setting in m and "\n" not in m for m in messages), (case, messages, result.stdout[-3000:])
        nothing_changed(topo, vault, before, case)


# --- the converge ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converged(topo: Topology):
    """The one cold site.yml run of the module: every test below looks at what it made."""
    started = time.monotonic()
    result = topo.playbook("site.yml")
    took = time.monotonic() - started
    print(f"site.yml cold on {ENV}: {took:.1f} s")
    if topo.create:
        topo.record(cold_s=round(took, 1), cold_ok=result.returncode == 0)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return result


def test_site_converges_over_ssh(topo: Topology, converged) -> None:
    assert set(topo.hosts) <= set(topo.changed(converged)), "every host took part"


def test_services_ready_with_the_environments_sizes(topo: Topology, converged) -> None:
    settings = yaml.safe_load((topo.inventory / "group_vars/all/releases.yml").read_text())
    deployments = topo.kube.json("get", "deployments", "-n", NAMESPACE)["items"]
    assert len(deployments) == 9
    for d in deployments:
        assert d["status"].get("readyReplicas", 0) == d["spec"]["replicas"] >= 2, d["metadata"]["name"]
    hpas = {h["metadata"]["name"]: h["spec"] for h in topo.kube.json("get", "hpa", "-n", NAMESPACE)["items"]}
    for name, wanted in settings["service_releases_service_settings"].items():
        scaling = wanted["autoscaling"]
        assert (hpas[name]["minReplicas"], hpas[name]["maxReplicas"]) == (scaling["min"], scaling["max"]), name
    pdbs = {p["metadata"]["name"] for p in topo.kube.json("get", "pdb", "-n", NAMESPACE)["items"]}
    assert {d["metadata"]["name"] for d in deployments} <= pdbs


def secret_urls(topo: Topology, key: str) -> dict[str, str]:
    """{service: its Secret's value of key} for the services whose Secret has it."""
    items = topo.kube.json("get", "secrets", "-n", NAMESPACE)["items"]
    return {
        s["metadata"]["name"].removesuffix("-secrets"): base64.b64decode(s["data"][key]).decode()
        for s in items
        if key in (s.get("data") or {})
    }


def test_services_reach_the_databases_through_the_router(topo: Topology, converged) -> None:
    router = topo.shared_ports
    databases, caches = secret_urls(topo, "database_url"), secret_urls(topo, "redis_url")
    assert databases and caches
    for urls, port in ((databases, "postgresql_router_port"), (caches, "redis_sentinel_router_port")):
        for service, url in urls.items():
            assert (urlsplit(url).hostname, urlsplit(url).port) == ("127.0.0.1", router[port]), service
    # A service's own login through the router's read-write address reaches the leader, over TLS.
    service, url = sorted(databases.items())[0]
    query = "select pg_is_in_recovery(), ssl from pg_stat_ssl where pid = pg_backend_pid()"
    psql = subprocess.run(["psql", "-X", "-w", "-tA", url, "-c", query], text=True, capture_output=True,
                          timeout=30, check=False, env={**os.environ, "PGCONNECT_TIMEOUT": "10"})  # fmt: skip
    assert psql.stdout.strip() == "f|t", (service, psql.stderr)
    service, url = sorted(caches.items())[0]
    redis = subprocess.run(["redis-cli", "-u", url, "--no-auth-warning", "PING"], text=True, capture_output=True,
                           timeout=30, check=False)  # fmt: skip
    assert redis.stdout.strip() == "PONG", (service, redis.stdout, redis.stderr)


def patroni_members(topo: Topology) -> list[dict]:
    for host in DB_HOSTS:
        url = f"http://127.0.0.1:{topo.ports[host]['patroni_restapi_port']}/cluster"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())["members"]
        except (OSError, urllib.error.HTTPError):
            continue
    return []


def test_patroni_has_one_leader_and_replicas_streaming_over_tls(topo: Topology, converged) -> None:
    members = {m["name"]: m for m in patroni_members(topo)}
    assert set(members) == set(DB_HOSTS), members
    # Synchronous mode (ha.yml): one replica confirms every commit, the other streams.
    assert sorted(m["role"] for m in members.values()) == ["leader", "replica", "sync_standby"], members
    assert all(m["state"] in ("running", "streaming") for m in members.values()), members
    leader = next(name for name, m in members.items() if m["role"] == "leader")
    query = (
        "select r.application_name, r.state, s.ssl from pg_stat_replication r"
        " join pg_stat_ssl s on s.pid = r.pid order by 1"
    )
    rows = topo.sql(leader, query).splitlines()
    replicas = sorted(h for h in DB_HOSTS if h != leader)
    assert [row.split("|")[1:] for row in rows] == [["streaming", "t"]] * 2, rows
    assert len(rows) == len(replicas), rows
    for replica in replicas:
        assert topo.sql(replica, "select pg_is_in_recovery()") == "t", replica


def test_wal_archived_and_a_full_backup_on_the_repository_host(topo: Topology, converged) -> None:
    leader = next(m["name"] for m in patroni_members(topo) if m["role"] == "leader")
    archived = topo.sql(leader, "select archived_count from pg_stat_archiver")
    assert int(archived) > 0
    info = json.loads(
        topo.ssh(REPOSITORY, "sudo -u pgbackrest pgbackrest --stanza=openpolicy --output=json info").stdout
    )[0]
    assert info["status"]["code"] == 0, info["status"]
    assert any(b["type"] == "full" for b in info["backup"]), info["backup"]
    assert info["archive"] and info["archive"][0]["max"], info["archive"]
    timers = topo.ssh(REPOSITORY, "systemctl list-timers --all --no-legend 'openpolicy-backup-*'").stdout
    assert {"full", "diff", "incr"} <= set(re.findall(r"openpolicy-backup-(\w+)\.timer", timers)), timers


def test_every_host_is_reached_as_deploy_with_become(topo: Topology, converged) -> None:
    known = topo.known_hosts.read_text()
    for host in topo.hosts:
        port = topo.ports[host]["ansible_port"]
        assert f"[127.0.0.1]:{port} ssh-ed25519 " in known, host
        journal = topo.ssh(host, "sudo journalctl --no-pager -o cat _COMM=sshd _COMM=sudo").stdout
        assert "Accepted publickey for deploy from 127.0.0.1" in journal, host
        assert re.search(r"deploy : .*USER=root ; COMMAND=/bin/sh -c '?echo BECOME-SUCCESS", journal), host
        refused = topo.ssh(host, "true", check=False, user="root")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr, host
        listening = topo.ssh(host, "ss -Hltn 2>/dev/null || cat /proc/net/tcp").stdout
        assert f"127.0.0.1:{port}" in listening or f"0100007F:{port:04X}" in listening, host


def test_second_run_changes_nothing(topo: Topology, converged) -> None:
    started = time.monotonic()
    result = topo.playbook("site.yml")
    took = time.monotonic() - started
    print(f"site.yml no-op on {ENV}: {took:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:]
    changed = {host: n for host, n in topo.changed(result).items() if n}
    topo.record(noop_s=round(took, 1), noop_changed=sum(changed.values()))
    assert not changed, f"changed on a second run: {changed}\n{result.stdout[-4000:]}"
