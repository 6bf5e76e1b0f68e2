"""site.yml with the real inventories/staging on a production-shaped topology, over SSH.

Five podman hosts (a PostgreSQL primary, a streaming replica, the pgBackRest repository host,
a scratch host for restore drills and the monitoring host), each with systemd and sshd on its
own loopback port (the servers on ports of their own: they share this machine's network),
reached as `deploy` with become through tests/e2e/topology.py's overlay; the cluster is the
session's kwok cluster, reached as provider `existing`.

The tests of this module build on each other in file order: bad inventories first (they must
change nothing on the fresh hosts), then the converge, what it made, and a second run.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.topology import Topology, running
from tests.e2e.unproven import not_yet_proven
from tests.helpers import failure_messages

pytestmark = [pytest.mark.cluster, not_yet_proven(11, "site.yml on the staging topology over SSH")]

ENV = "staging"
NAMESPACE = f"openpolicy-{ENV}"
PRIMARY, REPLICA, REPOSITORY, SCRATCH = (f"openpolicy-{ENV}-{h}" for h in ("db1", "db2", "backup1", "restore1"))


@pytest.fixture(scope="module")
def topo(kube, tmp_path_factory: pytest.TempPathFactory):
    with running(ENV, kube, tmp_path_factory.mktemp(ENV)) as topology:
        yield topology


# --- bad inventories: one line naming the setting, nothing changed ---------------------------


def drop_group_hosts(group: str):
    def change(hosts: dict) -> None:
        hosts["all"]["children"]["ssh_hosts"]["children"][group]["hosts"] = {}

    return change


def set_host_var(group: str, host: str, name: str, value):
    def change(hosts: dict) -> None:
        hosts["all"]["children"]["ssh_hosts"]["children"][group]["hosts"][host][name] = value

    return change


BAD = {
    "no repository host": (drop_group_hosts("backup"), {}, "pgbackrest_repo_group"),
    "replica of a primary not in the inventory": (
        set_host_var("db", REPLICA, "postgresql_replica_of", f"openpolicy-{ENV}-db9"),
        {},
        f"postgresql_replica_of of {REPLICA}",
    ),
    "pg_hba networks leave out the cluster's nodes": (
        set_host_var("db", PRIMARY, "postgresql_hba_networks", ["10.30.8.0/21"]),
        {},
        f"postgresql_hba_networks of {PRIMARY}",
    ),
    "unreachable host": (None, {REPLICA: {"ansible_port": 1}}, f"ansible_host/ansible_port of {REPLICA}"),
    "empty host group": (drop_group_hosts("db"), {}, "postgresql_hosts_group"),
}


def nothing_changed(topo: Topology, vault: Path, vault_before: bytes) -> None:
    assert vault.read_bytes() == vault_before, "the secrets role stored a generated secret"
    assert topo.kube.run("get", "namespace", NAMESPACE, check=False).returncode != 0, "the namespace was created"
    for host in (PRIMARY, REPLICA):
        assert topo.ssh(host, "test -e /etc/postgresql/15/main", check=False).returncode == 1, f"{host} was changed"
    assert topo.ssh(REPOSITORY, "test -e /etc/pgbackrest/pgbackrest.conf", check=False).returncode == 1


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inventory_fails_in_one_line_and_changes_nothing(topo: Topology, case: str, tmp_path) -> None:
    change_hosts, change_overlay, setting = BAD[case]
    inventory = tmp_path / ENV
    shutil.copytree(topo.inventory, inventory)
    if change_hosts:
        hosts = yaml.safe_load((inventory / "hosts.yml").read_text())
        change_hosts(hosts)
        (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    overlay = topo.write_overlay(tmp_path / "overlay", **change_overlay)
    vault = inventory / "group_vars/all/vault.yml"
    vault_before = vault.read_bytes()
    result = topo.playbook("site.yml", inventory=inventory, overlay=overlay)
    assert result.returncode != 0, result.stdout[-3000:]
    messages = [m for m in failure_messages(result) if m.startswith(("preflight:", setting))]
    assert messages, result.stdout[-3000:]
    assert setting in messages[-1], messages[-1]
    assert "\n" not in messages[-1]
    nothing_changed(topo, vault, vault_before)


# --- the converge ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converged(topo: Topology):
    """The one cold site.yml run of the module: every test below looks at what it made."""
    started = time.monotonic()
    result = topo.playbook("site.yml")
    print(f"site.yml cold on {ENV}: {time.monotonic() - started:.1f} s")
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


def test_replica_streams_from_the_primary_over_tls(topo: Topology, converged) -> None:
    query = "select r.application_name, r.state, s.ssl from pg_stat_replication r join pg_stat_ssl s on s.pid = r.pid"
    slot = REPLICA.replace("-", "_")
    assert topo.sql(PRIMARY, query) == f"{slot}|streaming|t"
    assert topo.sql(REPLICA, "select pg_is_in_recovery()") == "t"
    # The replica is on a host of its own: its own systemd unit, the primary's data.
    assert topo.ssh(REPLICA, "systemctl is-active postgresql@15-main").stdout.strip() == "active"


def test_wal_archived_and_a_full_backup_on_the_repository_host(topo: Topology, converged) -> None:
    archived = topo.sql(PRIMARY, "select archived_count from pg_stat_archiver")
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
        assert re.search(r"deploy : .*USER=root ; COMMAND=/bin/sh -c echo BECOME-SUCCESS", journal), host
        refused = topo.ssh(host, "true", check=False, user="root")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr, host
        listening = topo.ssh(host, "ss -Hltn 2>/dev/null || cat /proc/net/tcp").stdout
        assert f"127.0.0.1:{port}" in listening or f"0100007F:{port:04X}" in listening, host


def test_second_run_changes_nothing(topo: Topology, converged) -> None:
    started = time.monotonic()
    result = topo.playbook("site.yml")
    print(f"site.yml no-op on {ENV}: {time.monotonic() - started:.1f} s")
    assert result.returncode == 0, result.stdout[-4000:]
    changed = {host: n for host, n in topo.changed(result).items() if n}
    assert not changed, f"changed on a second run: {changed}\n{result.stdout[-4000:]}"
