"""site.yml with the real inventories/staging on a production-shaped topology over SSH, and the
databases surviving the loss of a host there.

Seven podman hosts, one per host of the inventory (tests/e2e/topology.py): three db hosts
(PostgreSQL under Patroni with etcd, Redis with Sentinel), the router host (HAProxy: one address
for the primary, one for the replicas, one for the Redis master), the pgBackRest repository host,
the scratch host of the restore drills and the monitoring host (Prometheus, Alertmanager). Each
has systemd and sshd on its own loopback port (its servers on ports of their own: they share this
machine's network) and is reached as `deploy` with become through topology.py's overlay, which
changes only how hosts are reached, the servers' ports and provider `existing` (the session's
kwok cluster). Everything else is staging's own: Patroni's timing, the scrape interval, the
Sentinels' and the backups' settings (the cases wait as long as those take).

Lean for `make test`: the topology is made once and converged by one cold site.yml; every case
after that looks at what it made or runs the narrow playbook it is about (backup.yml,
restore_drill.yml, rotate_secrets.yml, switchover.yml); the one second site.yml run is the one
after the lost primary's host returned, and proves both that the old primary is whole again
without a change and that a second run changes nothing after a failover. The bad inventories
that stop in the preflight on the control host are tests/unit/test_environment_inventories.py's
(no host can change there); on the fresh hosts runs the case that needs them: one host
unreachable.

The tests build on each other in file order. OPENPOLICY_E2E_ENV_KEEP=FILE leaves the topology up
(FILE names its folder); OPENPOLICY_E2E_ENV_REUSE=FILE runs cases again on it (-k) while one is
being fixed, and bench/bench_ha.py --reuse FILE measures failovers on it.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.e2e.staging_env import (
    DB_HOSTS,
    ENV,
    NAMESPACE,
    REPOSITORY,
    ROUTER,
    Database,
    Staging,
    Writer,
    output,
    podman,
    vault_values,
    wait_for,
)
from tests.e2e.topology import Topology, running
from tests.helpers import WAL_NOT_PUSHED, failure_messages

pytestmark = [pytest.mark.cluster]


@pytest.fixture(scope="module")
def topo(kube, tmp_path_factory: pytest.TempPathFactory):
    with running(ENV, kube, tmp_path_factory.mktemp(ENV)) as topology:
        yield topology


@pytest.fixture(scope="module")
def staging(topo: Topology) -> Staging:
    return Staging(topo)


# --- a bad inventory on the fresh hosts: one line naming the setting, nothing changed ----------


def nothing_changed(topo: Topology, vault: Path, vault_before: bytes) -> None:
    assert vault.read_bytes() == vault_before, "the secrets role stored a generated secret"
    assert topo.kube.run("get", "namespace", NAMESPACE, check=False).returncode != 0, "the namespace was created"
    for host in DB_HOSTS:
        # /etc/patroni itself comes with Debian's package (the ha image); config.yml is the role's.
        for path in ("/etc/postgresql/15/main", "/etc/patroni/config.yml", "/var/lib/etcd/member"):
            assert topo.ssh(host, f"test -e {path}", check=False).returncode == 1, f"{host}: {path} was made"
    assert topo.ssh(REPOSITORY, "test -e /etc/pgbackrest/pgbackrest.conf", check=False).returncode == 1
    assert topo.ssh(ROUTER, "test -e /etc/haproxy/haproxy.cfg && grep -q openpolicy /etc/haproxy/haproxy.cfg",
                    check=False).returncode != 0  # fmt: skip


def test_an_unreachable_host_stops_site_before_anything_changes(topo: Topology, tmp_path: Path) -> None:
    """One db host on a port nothing listens on, the six others up and reachable: site.yml stops
    in its preflight in one line naming the host's address and port, and nothing changed on the
    hosts, in the cluster or in the vault."""
    if not topo.create:
        pytest.skip("the reused topology was converged before: nothing to compare with")
    inventory = tmp_path / ENV
    shutil.copytree(topo.inventory, inventory)
    overlay = topo.write_overlay(tmp_path / "overlay", **{DB_HOSTS[1]: {"ansible_port": 1}})
    vault = inventory / "group_vars/all/vault.yml"
    before = vault.read_bytes()
    result = topo.playbook("site.yml", inventory=inventory, overlay=overlay)
    assert result.returncode != 0, result.stdout[-3000:]
    setting = f"ansible_host/ansible_port of {DB_HOSTS[1]}"
    messages = failure_messages(result)
    assert any(setting in m and "\n" not in m for m in messages), (messages, result.stdout[-3000:])
    nothing_changed(topo, vault, before)


# --- the converge ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converged(topo: Topology):
    """The one cold site.yml run of the module (none on a reused topology: it was converged)."""
    if not topo.create:
        return None
    started = time.monotonic()
    result = topo.playbook("site.yml")
    took = time.monotonic() - started
    print(f"site.yml cold on {ENV}: {took:.1f} s")
    topo.record(cold_s=round(took, 1), cold_ok=result.returncode == 0)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def ha(topo: Topology, converged) -> dict:
    """The logins the cases use (from the vault the converge completed), and what cases hand on."""
    values = vault_values(topo)
    return {
        "owner_password": values["vault_postgresql_passwords"]["openpolicy_owner"],
        "redis_user": "auth_service",
        "redis_password": values["vault_redis_passwords"]["auth-service"],
        "sentinel_password": values["vault_ha_passwords"]["redis_sentinel"],
    }


def test_site_converges_over_ssh(topo: Topology, converged) -> None:
    if converged is None:
        pytest.skip("the reused topology was converged before")
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
    for urls, port in ((databases, "openpolicy_db_router_port"), (caches, "openpolicy_db_router_redis_port")):
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


def test_patroni_has_one_leader_and_replicas_streaming_over_tls(topo: Topology, staging: Staging, converged) -> None:
    # Synchronous mode (ha.yml): one replica confirms every commit, the other streams.
    roles = wait_for(lambda: sorted(m["role"] for m in staging.members()) == ["leader", "replica", "sync_standby"], 60)
    members = {m["name"]: m for m in staging.members()}
    assert roles and set(members) == set(DB_HOSTS), members
    assert all(m["state"] in ("running", "streaming") for m in members.values()), members
    leader = next(name for name, m in members.items() if m["role"] == "leader")
    # The first db host bootstraps the cluster.
    assert leader == DB_HOSTS[0], members
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


def test_the_router_follows_the_leader_and_the_redis_master(topo: Topology, staging: Staging, ha: dict) -> None:
    router = topo.shared_ports
    db = Database(router["openpolicy_db_router_port"], ha["owner_password"])
    assert db.sql("select 1").stdout.strip() == "1"
    readonly = Database(router["openpolicy_db_router_replica_port"], ha["owner_password"]).sql(
        "select pg_is_in_recovery()"
    )
    assert readonly.stdout.strip() == "t", readonly.stderr
    assert staging.redis(ha["redis_user"], ha["redis_password"], "SET", "auth_service:before", "1") == "OK"
    assert staging.redis_master(ha["sentinel_password"]) == DB_HOSTS[0]
    # HAProxy's own exporter: one server up behind the read-write listener (the alert's series).
    servers = staging.router_active_servers()
    assert (servers.get("postgresql_primary"), servers.get("postgresql_replicas")) == (1, 2), servers


def test_wal_archived_and_a_full_backup_on_the_repository_host(topo: Topology, staging: Staging, converged) -> None:
    """provision_backups.yml after the HA stage: the stanza was created through whichever db host
    is primary and its WAL reached the repository, and a first full backup with its row-count
    manifest was taken, before the primary is lost."""
    leader = staging.leader()
    archived = topo.sql(leader, "select archived_count from pg_stat_archiver")
    assert int(archived) > 0
    info = staging.stanza()
    assert info["status"]["code"] == 0, info["status"]
    backups = [b for b in info["backup"] if b["type"] == "full"]
    assert backups, info["backup"]
    assert info["archive"] and info["archive"][0]["max"], info["archive"]
    assert "recorded_at" in staging.manifest(backups[-1]["label"]), "the first backup has no row-count manifest"
    timers = topo.ssh(REPOSITORY, "systemctl list-timers --all --no-legend 'openpolicy-backup-*'").stdout
    assert {"full", "diff", "incr"} <= set(re.findall(r"openpolicy-backup-(\w+)\.timer", timers)), timers


def test_every_host_is_reached_as_deploy_with_become(topo: Topology, converged) -> None:
    known = topo.known_hosts.read_text()
    for host in topo.hosts:
        port = topo.ports[host]["ansible_port"]
        assert f"[127.0.0.1]:{port} ssh-ed25519 " in known, host
        journal = topo.ssh(host, "sudo journalctl --no-pager -o cat _COMM=sshd _COMM=sudo").stdout
        assert "Accepted publickey for deploy from 127.0.0.1" in journal, host
        # Ansible's own strategies become per task (sh -c 'echo BECOME-SUCCESS-...'); Mitogen's once
        # per run, starting its Python under sudo. Either way: deploy, through sudo, to root.
        assert re.search(
            r"deploy : .*USER=root ; COMMAND=(/bin/sh -c '?echo BECOME-SUCCESS|/usr/bin/python3 -c '?import sys.*zlib)",
            journal,
        ), host
        refused = topo.ssh(host, "true", check=False, user="root")
        assert refused.returncode == 255 and "Permission denied" in refused.stderr, host
        listening = topo.ssh(host, "ss -Hltn 2>/dev/null || cat /proc/net/tcp").stdout
        assert f"127.0.0.1:{port}" in listening or f"0100007F:{port:04X}" in listening, host


# --- Prometheus on the monitoring host ---------------------------------------------------------

# The series monitoring/rules/ha.yml reads, as Debian's Patroni and etcd name them.
HA_SERIES = (
    "patroni_cluster_unlocked",
    "patroni_master",
    "patroni_replica",
    "patroni_postgres_timeline",
    "patroni_xlog_location",
    "patroni_xlog_replayed_location",
    'etcd_server_has_leader{job="etcd"}',
)
# What Prometheus saw is read after staging's scrape and evaluation intervals (30 s each) and an
# alert's `for`: the waits below allow several of them.
SCRAPES = 180


def test_prometheus_scrapes_patroni_and_etcd_on_every_db_host(staging: Staging, ha: dict) -> None:
    """The `patroni` and `etcd` jobs come from the inventory (postgresql_ha: patroni): every member
    is a target that answers, the series the HA alerts read are there, and no alert of theirs fires."""
    every = set(DB_HOSTS)
    for job in ("patroni", "etcd"):
        up = wait_for(lambda job=job: set(staging.prometheus(f'up{{job="{job}"}} == 1')) == every, SCRAPES, 5)
        assert up, (job, staging.prometheus(f'up{{job="{job}"}}'))
    for series in HA_SERIES:
        present = wait_for(lambda series=series: set(staging.prometheus(series)) == every, SCRAPES, 5)
        assert present, (series, staging.prometheus(series))
    assert staging.prometheus('max(patroni_master{job="patroni"})') == {"": 1.0}
    assert staging.prometheus("ALERTS{alertname=~'OpenPolicy(DatabaseNoLeader|EtcdMemberDown)'}") == {}
    ha["timeline_before"] = staging.prometheus("max(patroni_postgres_timeline)")[""]


# --- losing the primary's host -----------------------------------------------------------------


def lose_host_under_writes(db: Database, staging: Staging, table: str, host: str) -> tuple[Writer, float]:
    """Kill a host while rows are written through the router into `table`: the writer, stopped
    2 s after writes came back, and the seconds from the kill to the first write after it."""
    with Writer(db, table) as writer:
        assert wait_for(lambda: len(writer.acknowledged) >= 20, 30)
        killed = time.monotonic()
        podman("kill", host, check=True)
        # Staging's Patroni timing (ttl 30 s, loop_wait 10 s): a new leader after about ttl.
        resumed = wait_for(lambda: writer.acknowledged_since(killed + 1), 240, 0.2)
        assert resumed, f"no write succeeded after killing {host}: {staging.members()}"
        gap = writer.last_ok - killed
        time.sleep(2)
    return writer, gap


def test_losing_the_primary_host_keeps_every_acknowledged_write(topo: Topology, staging: Staging, ha: dict) -> None:
    old = staging.leader()
    assert old == DB_HOSTS[0], staging.members()
    db = Database(topo.shared_ports["openpolicy_db_router_port"], ha["owner_password"])
    writer, gap = lose_host_under_writes(db, staging, "ha_failover", old)
    new_leader = staging.leader()
    assert new_leader in DB_HOSTS[1:], new_leader
    assert writer.missing() == [], "acknowledged rows lost"
    print(f"failover: writes through the router resumed {writer.longest_gap:.1f} s after the last one before the kill "
          f"(first success {gap:.1f} s after it); {len(writer.acknowledged)} rows acknowledged, "
          f"{len(writer.failed)} refused; new primary {new_leader}")  # fmt: skip
    # Redis lost its master with the host too: Sentinel promotes a replica, the address stays.
    assert wait_for(lambda: staging.redis_master(ha["sentinel_password"]) in DB_HOSTS[1:], 120)
    after = wait_for(
        lambda: staging.redis(ha["redis_user"], ha["redis_password"], "SET", "auth_service:after", "1") == "OK", 60
    )
    assert after
    assert staging.redis(ha["redis_user"], ha["redis_password"], "GET", "auth_service:before") == "1"


def test_prometheus_saw_the_failover_and_the_lost_etcd_member(staging: Staging, ha: dict) -> None:
    """After the primary's host was lost: the new primary's timeline is one higher in Prometheus
    (what OpenPolicyDatabaseFailoverHappened compares), and the lost host's etcd member is down
    long enough for OpenPolicyEtcdMemberDown (for: 1m) to fire for it."""
    before = ha.get("timeline_before", 1.0)
    grew = wait_for(lambda: staging.prometheus("max(patroni_postgres_timeline)").get("", 0) > before, SCRAPES, 5)
    assert grew, (before, staging.prometheus("patroni_postgres_timeline"))
    firing = 'ALERTS{alertname="OpenPolicyEtcdMemberDown", alertstate="firing"}'
    fired = wait_for(lambda: set(staging.prometheus(firing)) == {DB_HOSTS[0]}, 60 + 2 * SCRAPES, 5)
    assert fired, staging.prometheus("ALERTS")


def test_old_primary_returns_as_a_replica_and_a_second_site_run_changes_nothing(
    topo: Topology, staging: Staging, ha: dict
) -> None:
    """The lost host starts again: its PostgreSQL comes back as a replica (pg_rewind or a re-clone),
    its etcd member is one of three again, and the module's second site.yml run, on every host,
    changes nothing: what an operator runs after a failover, and the idempotence of the converge.
    Sentinel moved the Redis master too, and its CONFIG REWRITE rewrote redis.conf on every db
    host: roles/redis keeps that file (settings compared, not layout) and restarts nothing."""
    podman("start", DB_HOSTS[0], check=True)
    # After pg_rewind the returning member is consistent only once it has replayed WAL past the
    # point the rewind copied up to: on an idle primary that waits for archive_timeout (60 s in
    # staging). A live database writes; so does this loop (a row through the router per poll).
    db = Database(topo.shared_ports["openpolicy_db_router_port"], ha["owner_password"])
    db.sql("create table if not exists ha_rejoin (at timestamptz default now())")

    def replica_again() -> bool:
        db.sql("insert into ha_rejoin default values", timeout=5)
        status, body = staging.rest(DB_HOSTS[0], "/patroni")
        return status == 200 and body.get("role") == "replica" and body.get("state") == "running"

    def on_the_leaders_timeline() -> bool:
        members = staging.members()
        return len(members) == 3 and staging.on_one_timeline(members)

    assert wait_for(replica_again, 300, 2), staging.rest(DB_HOSTS[0], "/patroni")
    assert wait_for(on_the_leaders_timeline, 60, 2), staging.members()
    # Its etcd member is one of three again: without it, losing one more host ends the quorum.
    assert wait_for(lambda: set(staging.etcd_health().values()) == {"true"}, 180, 2), staging.etcd_health()
    assert wait_for(lambda: staging.redis_master(ha["sentinel_password"]) in DB_HOSTS[1:], 10)
    by_sentinel = [h for h in DB_HOSTS if "CONFIG REWRITE" in topo.ssh(h, "sudo cat /etc/redis/redis.conf").stdout]
    assert by_sentinel, "Sentinel rewrote no redis.conf: the case would not prove the role keeps it"
    # Redis's files as the failover left them, for a look after a failure (KEEP): the run's log
    # names no_log tasks only. Copies stay root's on the host.
    redis_files = "/etc/redis/redis.conf /etc/redis/users.acl"
    kept = "/var/tmp/before-second-run"
    for host in DB_HOSTS:
        topo.ssh(host, f"sudo install -d -m 0700 {kept} && sudo cp -p {redis_files} {kept}/")

    def digests() -> dict[str, set[str]]:
        return {host: set(topo.ssh(host, f"sudo sha256sum {redis_files}").stdout.splitlines()) for host in DB_HOSTS}

    before = digests()
    started = time.monotonic()
    result = topo.playbook("site.yml")
    took = time.monotonic() - started
    print(f"site.yml second run on {ENV} (after the failover): {took:.1f} s")
    assert result.returncode == 0, output(result)
    changed = {host: n for host, n in topo.changed(result).items() if n}
    topo.record(noop_s=round(took, 1), noop_changed=sum(changed.values()))
    after = digests()
    rewritten = {host: sorted(line.split()[-1] for line in before[host] - after[host]) for host in DB_HOSTS}
    assert not changed, f"changed on a second run: {changed}; Redis files written: {rewritten}\n{output(result)}"
    # Redis kept its master: the file Sentinel rewrote is still Redis's own.
    assert wait_for(lambda: staging.redis_master(ha["sentinel_password"]) in DB_HOSTS[1:], 10)


def test_replicas_restore_no_wal_of_the_old_timeline_past_the_fork(topo: Topology, staging: Staging, ha: dict) -> None:
    """The old primary archives the WAL it still has when it returns (Patroni, before pg_rewind):
    the old timeline past the point the new primary forked. A replica that replayed it could not
    follow the new primary any more (seen in bench_ha: no leader at the next failover). Replicas
    restore through roles/patroni's command, which refuses the segment holding the fork and
    passes history files."""
    leader = staging.leader()
    timeline = staging.rest(leader, "/patroni")[1]["timeline"]
    history_file = f"{timeline:08X}.history"
    history = topo.ssh(leader, f"sudo cat /var/lib/postgresql/15/main/pg_wal/{history_file}").stdout
    # Its last line: the timeline it left and where (PostgreSQL's "parent<TAB>X/Y<TAB>reason").
    parent, switchpoint = [line for line in history.splitlines() if line.strip()][-1].split()[:2]
    high, low = (int(half, 16) for half in switchpoint.split("/"))
    segment = f"{int(parent):08X}{high:08X}{low // (16 * 1024 * 1024):08X}"
    replica = next(host for host in DB_HOSTS if host != leader)

    def restore(wal_file: str) -> subprocess.CompletedProcess:
        return topo.ssh(
            replica,
            f"cd /tmp && sudo -u postgres /usr/local/bin/openpolicy-patroni-restore-wal --stanza=openpolicy "
            f"{wal_file} /tmp/restore-check-{wal_file}; status=$?; sudo rm -f /tmp/restore-check-{wal_file}; "
            "exit $status",
            check=False,
        )

    refused = restore(segment)
    assert refused.returncode == 1, (segment, refused.stdout, refused.stderr)
    assert f"timeline {timeline} left timeline {parent} at {switchpoint}" in refused.stderr, refused.stderr
    passed = restore(history_file)
    assert passed.returncode == 0, passed.stderr


# --- operations after the failover -------------------------------------------------------------


def rotate(topo: Topology, kind: str) -> tuple[str, str]:
    """auth-service's password of a kind (database, redis) rotated: (the old one, the new one)."""
    key = f"vault_{kind}_passwords"
    before = vault_values(topo)[key]["auth-service"]
    extra = {"kind": f"{kind}_password", "service": "auth-service"}
    result = topo.playbook("rotate_secrets.yml", "--skip-tags", "deliver", extra_vars=extra)
    assert result.returncode == 0, output(result)
    after = vault_values(topo)[key]["auth-service"]
    assert after != before
    return before, after


def test_a_password_rotation_after_the_failover_sets_it_on_the_new_primary(topo: Topology, ha: dict) -> None:
    """db1, the first db host, is a replica now: rotate_secrets.yml sets the new password on the
    primary Patroni elected, on that server's own port. `--skip-tags deliver` (the services'
    Secrets are test_secrets_rotation's subject); the rotation's own check logs in through the
    router (secrets_database_port: the router's) with the new password and is refused with the
    old one."""
    before, after = rotate(topo, "database")
    port = topo.shared_ports["openpolicy_db_router_port"]
    assert Database(port, after, user="auth").sql("select pg_is_in_recovery()").stdout.strip() == "f"
    assert Database(port, before, user="auth").sql("select 1").returncode != 0


def test_a_redis_password_rotation_after_the_failover_sets_it_on_the_new_master(
    topo: Topology, staging: Staging, ha: dict
) -> None:
    """Sentinel promoted db2 or db3, db1 came back as a replica: rotate_secrets.yml asks the
    Sentinels for the master and sets the new password there (ACL changes are not replicated)
    and on the replicas. The service user logs in through the router with the new password, the
    old one is refused there and on every Redis host, and the new one works on each of them."""
    master = staging.redis_master(ha["sentinel_password"])
    assert master in DB_HOSTS[1:], master
    before, after = rotate(topo, "redis")
    user = ha["redis_user"]
    assert staging.redis(user, after, "SET", "auth_service:rotated", "1") == "OK"
    assert staging.redis(user, before, "PING") != "PONG"
    for host in DB_HOSTS:
        port = topo.ports[host]["redis_port"]
        assert staging.redis(user, after, "PING", port=port) == "PONG", host
        assert staging.redis(user, before, "PING", port=port) != "PONG", host
    ha["redis_password"] = after


def test_a_backup_taken_after_the_failover_restores(topo: Topology, staging: Staging, ha: dict) -> None:
    """The new primary archives (a full backup waits for its WAL), the files come from a standby,
    the row-count manifest reads through the router's read-only address (the failover's table
    too: the owner role made it in public), and the restore drill restores that backup on the
    scratch host (restore1), to the moment of the manifest, and checks its row counts."""
    backup = topo.playbook("backup.yml", extra_vars={"type": "full", "backup_reason": "after-failover"})
    latest = staging.stanza()["backup"][-1]
    counted = staging.manifest(latest["label"])
    assert backup.returncode == 0, output(backup)
    assert counted.get("schemas", {}).get("public", 0) >= 20, counted
    # Recovery to the manifest's moment stops at the first commit after it: a live database
    # makes one; here the test writes it and waits until its WAL is archived (archive_timeout).
    wrote = Database(topo.shared_ports["openpolicy_db_router_port"], ha["owner_password"]).sql(
        "insert into ha_failover (id) values (1000000) returning pg_walfile_name(pg_current_wal_lsn())"
    )
    assert wrote.returncode == 0, wrote.stderr
    segment = wrote.stdout.split()[0]
    archived = wait_for(lambda: staging.stanza()["archive"][-1].get("max", "") >= segment, 240, 5)
    assert archived, (segment, staging.stanza()["archive"])
    drill = topo.playbook("restore_drill.yml")
    assert drill.returncode == 0, f"manifest of {latest['label']}: {counted}\n{output(drill)}"
    # The plan pushed the new primary's WAL from it over SSH (a warning otherwise, the drill goes on).
    assert WAL_NOT_PUSHED not in drill.stdout, output(drill)


def test_planned_switchover_loses_no_acknowledged_write(topo: Topology, staging: Staging, ha: dict) -> None:
    before = staging.leader()
    candidate = wait_for(lambda: staging.named("sync_standby"), 60)
    assert candidate, staging.members()
    db = Database(topo.shared_ports["openpolicy_db_router_port"], ha["owner_password"])
    with Writer(db, "ha_switchover") as writer:
        assert wait_for(lambda: len(writer.acknowledged) >= 20, 30)
        started = time.monotonic()
        result = topo.playbook("switchover.yml", extra_vars={"candidate": candidate})
        assert result.returncode == 0, output(result)
        done = time.monotonic()
        assert wait_for(lambda: writer.acknowledged_since(done), 60, 0.2)
        took = time.monotonic() - started
    assert staging.leader() == candidate != before
    assert writer.missing() == [], "acknowledged rows lost"
    assert f"switchover: {before} -> {candidate}" in result.stdout
    print(f"switchover {before} -> {candidate}: playbook and first write after it {took:.1f} s, "
          f"longest write gap {writer.longest_gap:.1f} s")  # fmt: skip


def test_switchover_refuses_a_candidate_that_is_not_a_healthy_replica(topo: Topology, staging: Staging) -> None:
    current = staging.leader()
    result = topo.playbook("switchover.yml", extra_vars={"candidate": current})
    assert result.returncode != 0
    messages = failure_messages(result)
    assert any(m.startswith("candidate: expected a running replica") for m in messages), output(result)
    assert staging.leader() == current


def test_losing_the_next_primary_host_too_keeps_every_acknowledged_write(
    topo: Topology, staging: Staging, ha: dict
) -> None:
    """After the failover, the old primary's return and the switchover, every member is back:
    losing the primary's host once more elects a leader again and no acknowledged row is lost.
    Last in the module: it leaves one host down."""
    assert wait_for(lambda: set(staging.etcd_health().values()) == {"true"}, 180, 2), staging.etcd_health()
    # Synchronous mode: only the synchronous standby is promoted, and the switchover's primary
    # names one a Patroni loop or two after taking over.
    assert wait_for(lambda: staging.named("sync_standby"), 60, 2), staging.members()
    leader = staging.leader()
    db = Database(topo.shared_ports["openpolicy_db_router_port"], ha["owner_password"])
    writer, _ = lose_host_under_writes(db, staging, "ha_second_failover", leader)
    assert staging.leader() not in ("", leader), staging.members()
    assert writer.missing() == [], "acknowledged rows lost"
