"""Faults survived with nothing acknowledged lost (issue 16), on podman db and backup hosts of the
module's own (sshd 52231/52232, PostgreSQL 59532, Redis 59479, pgBackRest TLS 59540/59541, scratch 59533: a
`make up` environment is left alone) and no cluster: the services are their database roles and
Redis users, logging in with the passwords of the environment's vault.

The tests of this module build on each other in file order: killed backup, drill without its
manifest, restore.yml onto the scratch host and onto the db host to a time, then a hard crash
of the db host under a stream of inserts, the host lost with its disk and rebuilt by the
documented path (docs/runbooks/restore.md), then Redis.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.e2e.test_secrets import SecretsEnv, output, vault_env
from tests.helpers import REPO, WAL_NOT_PUSHED

pytestmark = pytest.mark.podman

ENVIRONMENT = "e2e-faults"
DB_HOST = "openpolicy-e2e-faults-db1"
BACKUP_HOST = "openpolicy-e2e-faults-backup1"
PG_PORT = 59532
REDIS_PORT = 59479
# sshd of the two hosts: a `make up` environment keeps 52201-52202.
SSH_PORTS = {"52201": "52231", "52202": "52232"}
# Short, so that a crash test needs seconds, not minutes; the RPO is reported against it.
ARCHIVE_TIMEOUT = 10
STANZA = "openpolicy"
TEXTFILE = "/var/lib/node_exporter/textfile_collector"
# The PostgreSQL major of the hosts: role postgresql's default (inventories/local sets none).
PG_VERSION = str(yaml.safe_load((REPO / "roles/postgresql/defaults/main.yml").read_text())["postgresql_version"])
PLAYBOOKS = ("provision_hosts.yml", "playbooks/provision_databases.yml", "playbooks/provision_backups.yml")


class FaultsEnv(SecretsEnv):
    """inventories/local copied with the module's host names; the settings that differ are extra-vars."""

    # One run provisions both hosts from nothing (and rebuilds the db host): 15 minutes were seen
    # to pass under a load of 18 on 2 cores.
    playbook_timeout = 2400

    def __init__(self, root: Path):
        super().__init__(root, kube=None, cluster_vars={})  # type: ignore[arg-type]
        hosts = self.inventory / "hosts.yml"
        text = hosts.read_text().replace("openpolicy-local-db1", DB_HOST)
        text = text.replace("openpolicy-local-backup1", BACKUP_HOST)
        for local, own in SSH_PORTS.items():
            text = text.replace(f"ansible_port: {local}", f"ansible_port: {own}")
        # No monitoring host (a copied one would be started under the local environment's name
        # and port, and left running), nor its group: roles fall back to their defaults.
        inventory = yaml.safe_load(text)
        del inventory["all"]["children"]["ssh_hosts"]["children"]["monitoring"]
        hosts.write_text(yaml.safe_dump(inventory, sort_keys=False))
        self.host_vars = {
            "podman_hosts_environment": ENVIRONMENT,
            "postgresql_port": PG_PORT,
            "redis_port": REDIS_PORT,
            "pgbackrest_tls_server_port": f"{{{{ 59541 if inventory_hostname == '{BACKUP_HOST}' else 59540 }}}}",
            "pgbackrest_scratch_port": 59533,
            "pgbackrest_archive_timeout": ARCHIVE_TIMEOUT,
            "pgbackrest_job_retry_after_kill": 0,
        }

    def play(self, *playbooks: str, **extra) -> subprocess.CompletedProcess:
        """A run of the playbooks; `said` is its stdout with white space folded (the YAML callback
        wraps long messages)."""
        first, *more = playbooks
        result = self.run(first, *(p if p.startswith("playbooks/") else f"playbooks/{p}" for p in more),
                        **{**self.host_vars, **extra})  # fmt: skip
        result.said = " ".join(result.stdout.split())  # type: ignore[attr-defined]
        return result

    def sql(self, role: str, statement: str) -> subprocess.CompletedProcess:
        """A statement as a login role over TLS, as the services connect."""
        values = self.values()
        passwords = {**values["vault_postgresql_passwords"]}
        passwords.update({name.split("-")[0]: pw for name, pw in values["vault_database_passwords"].items()})
        conninfo = f"host=127.0.0.1 port={PG_PORT} dbname=openpolicy user={role} sslmode=require connect_timeout=5"
        return subprocess.run(
            ["psql", "-X", "-w", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", statement],
            env={**os.environ, "PGPASSWORD": passwords[role]}, text=True, capture_output=True, timeout=60, check=False,
        )  # fmt: skip

    def redis_ping(self, user: str, password: str) -> str:
        return subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT), "--user", user, "--no-auth-warning", "PING"],
            env={**os.environ, "REDISCLI_AUTH": password}, text=True, capture_output=True, timeout=30, check=False,
        ).stdout.strip()  # fmt: skip


def remove_hosts() -> None:
    """Every container of the module's environment, whatever its name: the db host may be gone already."""
    listed = subprocess.run(
        ["podman", "ps", "--all", "--quiet", "--filter", f"label=openpolicy.dev/environment={ENVIRONMENT}"],
        env=vault_env(), text=True, capture_output=True, check=False,
    )  # fmt: skip
    names = [DB_HOST, BACKUP_HOST, *listed.stdout.split()]
    subprocess.run(["podman", "rm", "--force", "--ignore", "--time", "5", *names], env=vault_env(), capture_output=True,
                   check=False)  # fmt: skip


def on(host: str, *command: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", "exec", host, *command], env=vault_env(), text=True, capture_output=True,
                            timeout=timeout, check=False)  # fmt: skip
    assert not check or result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return result


def stanza() -> dict:
    info = on(
        BACKUP_HOST, "runuser", "-u", "pgbackrest", "--", "pgbackrest", f"--stanza={STANZA}", "--output=json", "info"
    )
    return json.loads(info.stdout)[0]


def backup_metrics() -> dict[str, float]:
    text = on(BACKUP_HOST, "cat", f"{TEXTFILE}/openpolicy_backup_{STANZA}.prom").stdout
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] not in ("#", "")
    }


class InsertStream(threading.Thread):
    """Timestamped inserts as auth-service until stopped: the ids PostgreSQL acknowledged, with
    their commit times (one psql per row, TLS, as a service's request would)."""

    def __init__(self, env: FaultsEnv):
        super().__init__(daemon=True)
        self.env = env
        self.acknowledged: list[tuple[int, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        insert = "insert into auth.fault_probe default values returning id, extract(epoch from at)"
        while not self.stop.is_set():
            result = self.env.sql("auth", insert)
            if result.returncode == 0:
                row, at = result.stdout.split()[0].split("|")
                self.acknowledged.append((int(row), float(at)))
            time.sleep(0.05)


PROBE_TABLE = (
    "create table auth.fault_probe (id bigserial primary key, at timestamptz not null default clock_timestamp())"
)


def crash_and_lose_the_db_host(env: FaultsEnv, stream_seconds: float) -> tuple[list[tuple[int, float]], float]:
    """Inserts for stream_seconds, then SIGKILL of the db host's container (a hard crash, not a
    clean stop) and its removal with the disk; returns what the stream had acknowledged and
    the monotonic time of the kill."""
    stream = InsertStream(env)
    stream.start()
    time.sleep(stream_seconds)
    subprocess.run(["podman", "kill", "--signal", "KILL", DB_HOST], env=vault_env(), check=True, capture_output=True)
    killed = time.monotonic()
    stream.stop.set()
    stream.join()
    subprocess.run(["podman", "rm", "--force", DB_HOST], env=vault_env(), check=True, capture_output=True)
    return stream.acknowledged, killed


def data_loss(env: FaultsEnv, acknowledged: list[tuple[int, float]]) -> tuple[list[int], float, int]:
    """Acknowledged rows missing before the newest restored one, the RPO (last acknowledged
    commit minus newest restored commit, seconds) and the number of restored rows."""
    restored = env.sql("auth", "select id, extract(epoch from at) from auth.fault_probe order by id")
    assert restored.returncode == 0, restored.stderr
    rows = {int(i): float(at) for i, at in (line.split("|") for line in restored.stdout.split())}
    acked = dict(acknowledged)
    newest = max(rows)
    missing = [row for row in acked if row <= newest and row not in rows]
    return missing, max(acked.values()) - rows[newest], len(rows)


def as_auth(env: FaultsEnv, statement: str) -> str:
    """A statement as auth-service's role that must succeed; its output, stripped."""
    result = env.sql("auth", statement)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    faults = FaultsEnv(tmp_path_factory.mktemp("faults-env"))
    yield faults
    remove_hosts()


@pytest.fixture(scope="module")
def provisioned(env: FaultsEnv) -> FaultsEnv:
    result = env.play(*PLAYBOOKS)
    assert result.returncode == 0, output(result)
    assert stanza()["backup"], "the converge takes a first full backup"
    return env


def test_the_reporting_role_reads_tables_the_owner_role_creates(provisioned: FaultsEnv):
    made = provisioned.sql(
        "openpolicy_owner", "create table auth.owner_made (id int); insert into auth.owner_made values (1)"
    )
    assert made.returncode == 0, made.stderr
    read = provisioned.sql("openpolicy_reporting", "select count(*) from auth.owner_made")
    assert read.returncode == 0 and read.stdout.strip() == "1", read.stderr


def test_a_killed_backup_is_published_and_the_next_scheduled_run_succeeds(provisioned: FaultsEnv):
    # Enough data that pgBackRest is still copying when it is killed.
    ballast = "create table auth.ballast as select i, md5(i::text) as m from generate_series(1, 1500000) as i"
    assert provisioned.sql("auth", ballast).returncode == 0
    unit = "openpolicy-backup-full.service"
    on(BACKUP_HOST, "systemctl", "start", "--no-block", unit)
    deadline, killed = time.monotonic() + 60, False
    while not killed and time.monotonic() < deadline:
        found = on(
            BACKUP_HOST, "pgrep", "-o", "-u", "pgbackrest", "-f", "pgbackrest .*--type=full.* backup", check=False
        )
        if found.stdout.strip():
            killed = on(BACKUP_HOST, "kill", "-KILL", found.stdout.split()[0], check=False).returncode == 0
    assert killed, "pgBackRest's backup never ran"
    deadline = time.monotonic() + 300
    while on(BACKUP_HOST, "systemctl", "is-active", unit, check=False).stdout.strip() in ("active", "activating"):
        assert time.monotonic() < deadline, "the backup unit did not end"
        time.sleep(1)
    # The module runs without the job's own retry after a kill (tests/unit cover it), so the
    # failure stands until the next run: published, with the signal named.
    labels = f'stanza="{STANZA}",type="full"'
    samples = backup_metrics()
    assert samples[f"openpolicy_backup_last_run_success{{{labels}}}"] == 0
    assert samples[f"openpolicy_backup_last_run_exit_code{{{labels}}}"] == 137
    failed, succeeded = (
        samples[f'openpolicy_backup_runs_total{{{labels},result="{r}"}}'] for r in ("failed", "success")
    )
    # The next run, started as its timer (still scheduled) starts it: a start job of the unit.
    assert on(BACKUP_HOST, "systemctl", "is-active", unit.replace(".service", ".timer")).stdout.strip() == "active"
    on(BACKUP_HOST, "systemctl", "start", unit, timeout=900)
    assert on(BACKUP_HOST, "systemctl", "is-failed", unit, check=False).stdout.strip() == "inactive"
    log = on(BACKUP_HOST, "journalctl", "-u", unit, "-o", "cat", "--no-pager").stdout
    runs = re.findall(r"result=(\w+)", log)
    assert runs[-2:] == ["failed", "success"], log[-2000:]
    assert 'error="pgbackrest killed by SIGKILL"' in log, log[-2000:]
    samples = backup_metrics()
    assert samples[f'openpolicy_backup_runs_total{{{labels},result="failed"}}'] == failed >= 1
    assert samples[f'openpolicy_backup_runs_total{{{labels},result="success"}}'] == succeeded + 1
    assert samples[f"openpolicy_backup_last_run_success{{{labels}}}"] == 1
    assert samples[f"openpolicy_backup_last_run_exit_code{{{labels}}}"] == 0


def test_a_drill_without_its_manifest_fails_and_is_recorded(provisioned: FaultsEnv):
    label = stanza()["backup"][-1]["label"]
    manifest = f"/var/lib/openpolicy/backup/manifests/{STANZA}/{label}.json"
    on(BACKUP_HOST, "mv", manifest, manifest + ".moved")
    try:
        result = provisioned.play("restore_drill.yml")
    finally:
        on(BACKUP_HOST, "mv", manifest + ".moved", manifest)
    assert result.returncode != 0
    assert f"no row-count manifest for backup {label}" in result.said, output(result)
    drill = on(BACKUP_HOST, "cat", f"{TEXTFILE}/openpolicy_restore_drill_{STANZA}.prom").stdout
    assert f'openpolicy_restore_drill_last_run_success{{stanza="{STANZA}"}} 0' in drill


def test_restore_yml_onto_the_scratch_host_over_ssh_brings_back_the_last_rows(provisioned: FaultsEnv):
    """restore.yml end to end over SSH: the plan asks the db host for its primary with one raw
    psql under a terminal (where psql once paged its one line to `more`, which waited for ever),
    pushes the primary's current WAL, and the copy on the scratch host has the rows committed
    just before the run."""
    as_auth(provisioned, "create table auth.scratch_probe as select generate_series(1, 321) id")
    scratch_port = str(provisioned.host_vars["pgbackrest_scratch_port"])
    try:
        result = provisioned.play("restore.yml", restore_host=BACKUP_HOST)
        assert result.returncode == 0, output(result)
        assert WAL_NOT_PUSHED not in result.said, output(result)
        count = on(BACKUP_HOST, "runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-p", scratch_port,
                   "-d", "openpolicy", "-c", "select count(*) from auth.scratch_probe")  # fmt: skip
        assert count.stdout.strip() == "321"
    finally:
        on(BACKUP_HOST, "pg_dropcluster", "--stop", PG_VERSION, "restore", check=False)
        provisioned.sql("auth", "drop table if exists auth.scratch_probe")


def test_restore_yml_in_place_over_ssh_returns_the_db_host_to_a_point_in_time(provisioned: FaultsEnv):
    """restore.yml onto the db host itself over SSH, to a time: the server is stopped, restored
    with --delta and started under raw's terminal, and comes back as the primary with exactly
    the rows committed before that time. A full backup follows, as the runbook says after a
    restore (the crash tests below restore from the newest)."""
    as_auth(provisioned, "create table auth.in_place_probe (id int primary key)")
    as_auth(provisioned, "insert into auth.in_place_probe select generate_series(1, 100)")
    time.sleep(1.5)
    now = "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS')"
    target = as_auth(provisioned, now) + "+00"
    time.sleep(1.5)
    as_auth(provisioned, "insert into auth.in_place_probe select generate_series(101, 150)")
    result = provisioned.play("restore.yml", target_time=target)
    assert result.returncode == 0, output(result)
    assert WAL_NOT_PUSHED not in result.said, output(result)
    assert as_auth(provisioned, "select count(*), max(id) from auth.in_place_probe") == "100|100"
    assert as_auth(provisioned, "select pg_is_in_recovery()") == "f"
    backup = provisioned.play("backup.yml", type="full")
    assert backup.returncode == 0, output(backup)
    as_auth(provisioned, "drop table auth.in_place_probe")


@pytest.fixture(scope="module")
def crashed(provisioned: FaultsEnv) -> dict:
    """A hard crash of the db host (SIGKILL of the container) under a stream of inserts, then the
    host lost with its disk: what the stream had acknowledged and the stanza as it was."""
    assert provisioned.sql("auth", PROBE_TABLE).returncode == 0
    before = stanza()
    acknowledged, _ = crash_and_lose_the_db_host(provisioned, 3 * ARCHIVE_TIMEOUT)
    # Its rows span several archive timeouts, however slow each insert is on a loaded machine.
    span = acknowledged[-1][1] - acknowledged[0][1] if acknowledged else 0
    assert span > 2 * ARCHIVE_TIMEOUT, f"the stream ran {span:.0f} s: {len(acknowledged)} rows"
    return {"acknowledged": acknowledged, "stanza": before}


def test_restore_onto_a_lost_host_fails_in_seconds_naming_the_step(provisioned: FaultsEnv, crashed: dict):
    started = time.monotonic()
    result = provisioned.play("restore.yml")
    took = time.monotonic() - started
    assert result.returncode != 0
    assert f"restore_host: {DB_HOST} is unreachable; bring it back first with" in result.said, output(result)
    assert "playbooks/provision_hosts.yml" in result.said
    # It gives up at the ping, before the minutes `pgbackrest check` spent waiting on a lost host
    # (a time bound here would be a performance target in a timed test: bench/ has those).
    assert "Push the current WAL of the primary" not in result.stdout, output(result)
    print(f"\nrestore.yml gave up on the lost host after {took:.0f} s")


def test_a_rebuilt_host_is_not_started_as_an_empty_database(provisioned: FaultsEnv, crashed: dict):
    result = provisioned.play("provision_hosts.yml", "playbooks/provision_databases.yml")
    assert result.returncode == 0, output(result)
    assert "this cluster is not that database" in result.said and "left stopped, not initialised" in result.said
    refused = provisioned.sql("auth", "select count(*) from auth.fault_probe")
    assert refused.returncode != 0, "an empty database answered on the rebuilt host"
    after = stanza()
    assert after["db"] == crashed["stanza"]["db"], "the stanza took another cluster"
    assert [b["label"] for b in after["backup"]] == [b["label"] for b in crashed["stanza"]["backup"]]


def test_the_documented_recovery_brings_back_every_archived_row(provisioned: FaultsEnv, crashed: dict):
    result = provisioned.play("provision_backups.yml")
    assert result.returncode == 0, output(result)
    assert re.search(r"restored stanza openpolicy \(latest backup and archived WAL\) in [0-9.]+ s", result.said), (
        output(result)
    )
    # Nothing acknowledged before the last row that reached the archive is missing.
    missing, rpo, restored = data_loss(provisioned, crashed["acknowledged"])
    assert missing == [], f"{len(missing)} acknowledged rows lost before the restored end, e.g. {missing[:5]}"
    print(f"\nhard crash: {len(crashed['acknowledged'])} rows acknowledged, {restored} restored, "
          f"RPO {rpo:.1f} s against archive_timeout {ARCHIVE_TIMEOUT} s")  # fmt: skip
    assert rpo <= ARCHIVE_TIMEOUT + 10
    after = stanza()
    assert after["db"] == crashed["stanza"]["db"], "WAL of another cluster reached the stanza"
    # Archiving works again from the restored cluster, on its new timeline, and the repository
    # holds that timeline's history file: without it the next restore would stop at this
    # recovery's end (a second crash then loses everything since the first).
    on(BACKUP_HOST, "runuser", "-u", "pgbackrest", "--", "pgbackrest", f"--stanza={STANZA}", "check")
    archiver = "select pg_walfile_name(pg_current_wal_lsn()), last_archived_wal, failed_count from pg_stat_archiver"
    current, archived, failed = (
        on(DB_HOST, "runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-p", str(PG_PORT), "-c", archiver)
        .stdout.strip()
        .split("|")
    )
    timeline = current[:8]
    assert timeline != "00000001" and archived[:8] == timeline, f"{current=} {archived=} {failed=}"
    archive = on(BACKUP_HOST, "runuser", "-u", "pgbackrest", "--", "pgbackrest", f"--stanza={STANZA}", "repo-ls",
                 f"archive/{STANZA}/{after['archive'][-1]['id']}").stdout.split()  # fmt: skip
    assert f"{timeline}.history" in archive, archive


def test_the_services_redis_users_work_on_the_rebuilt_host(provisioned: FaultsEnv, crashed: dict):
    values = provisioned.values()
    for service, password in values["vault_redis_passwords"].items():
        assert provisioned.redis_ping(service.replace("-", "_"), password) == "PONG", service
