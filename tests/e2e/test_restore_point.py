"""The restore point before a migration, end to end: a copy of inventories/local with its db and
backup hosts as podman hosts (PostgreSQL 15 and pgBackRest, real), the nine services deployed on
the session's cluster.

Deploy v2 of a service with a migration hook: deploy.yml takes a backup first, its label is in
the release set, the summary and `pgbackrest info`; the test then plays the migration's part
(kwok runs no Job containers). A plain rollback names the restore point and changes nothing
under --check; rollback.yml -e restore_database=true brings the schema and rows back as they
were before v2, the releases back to v1 and the services back up. Deploy v2 of the gateway (no
migration): no backup. Bad input fails in one line and changes nothing. The tests build on each
other in file order.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import ClassVar

import pytest

from tests.e2e.deploy_env import DeployEnv, failure_messages, shown
from tests.e2e.test_secrets import SecretsEnv, output, vault_env
from tests.helpers import Kube

pytestmark = pytest.mark.cluster

NAMESPACE = "openpolicy-e2e-restore-point"
# The summary's line when deploy.yml took a restore point (roles/release_set, summary).
TAKEN = "taken before the migrations (pgbackrest info"


class RestorePointEnv(SecretsEnv):
    """inventories/local with its db and backup hosts as podman hosts of their own names and ports
    (a `make up` environment and the other modules keep theirs); a subclass with other names
    and ports makes another beside it (a benchmark's)."""

    namespace = NAMESPACE
    hosts: ClassVar[dict[str, str]] = {
        "openpolicy-local-db1": "openpolicy-e2e-rp-db1",
        "openpolicy-local-backup1": "openpolicy-e2e-rp-backup1",
    }
    ssh_ports: ClassVar[dict[str, str]] = {"52201": "52213", "52202": "52214"}
    # postgresql, redis, pgBackRest TLS on the db and the backup host, the scratch cluster.
    ports = (59452, 59399, 58460, 58461, 59453)
    # Provisioning two hosts (PostgreSQL, pgBackRest, a first full backup) in one run takes
    # over 15 minutes on the 2-core machine when the other modules run beside it.
    playbook_timeout = 1800

    def __init__(self, root: Path, kube: Kube, cluster_vars: dict):
        super().__init__(root, kube, cluster_vars)
        hosts = self.inventory / "hosts.yml"
        text = hosts.read_text()
        for old, new in [*self.hosts.items(), *self.ssh_ports.items()]:
            text = text.replace(old, new)
        hosts.write_text(text)
        self.db, self.backup = self.hosts.values()
        self.pg_port, redis_port, db_tls, repo_tls, scratch_port = self.ports
        # Helm history, release sets and Deployments of the namespace: deploy_env's readers.
        self.deploy_env = DeployEnv(kube, cluster_vars, self.namespace, root / "credentials")
        self.host_vars = {
            "postgresql_port": self.pg_port,
            "redis_port": redis_port,
            "pgbackrest_tls_server_port": f"{{{{ {repo_tls} if inventory_hostname in groups.backup else {db_tls} }}}}",
            "pgbackrest_scratch_port": scratch_port,
            "podman_hosts_groups": ["db", "backup"],
            "podman_hosts_environment": self.namespace.removeprefix("openpolicy-"),
            "openpolicy_namespace": self.namespace,
        }

    # One ansible-playbook run: hosts, PostgreSQL and Redis, pgBackRest (a first full backup), then
    # v1 of the nine services (one preflight instead of two). The inventory's monitoring host is
    # not started here; the release hosts deploy.yml adds at run time match the pattern.
    PROVISION_AND_DEPLOY = (
        "provision_hosts.yml", "playbooks/provision_databases.yml", "playbooks/provision_backups.yml",
        "playbooks/deploy.yml", "--limit", "all:!monitoring",
    )  # fmt: skip

    def remove(self) -> None:
        subprocess.run(["podman", "rm", "--force", "--time", "5", *self.hosts.values()], env=vault_env(), check=False)
        self.deploy_env.remove()

    def play(self, playbook: str, *args: str, **extra) -> subprocess.CompletedProcess:
        return self.run(playbook, *args, **{**self.host_vars, **extra})

    def podman(self, host: str, *argv: str) -> str:
        result = subprocess.run(
            ["podman", "exec", host, *argv], env=vault_env(), text=True, capture_output=True, check=True
        )
        return result.stdout.strip()

    def sql(self, query: str) -> str:
        return self.podman(self.db, "runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-p", str(self.pg_port),
                           "-d", "openpolicy", "-c", query)  # fmt: skip

    def backups(self, *options: str) -> list[dict]:
        info = self.podman(self.backup, "runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=openpolicy",
                           "info", "--output=json", *options)  # fmt: skip
        return json.loads(info)[0]["backup"]

    def restore_points(self) -> dict[str, dict]:
        """The backups deploy.yml took before migrations (their pgBackRest annotation says so), by
        label: the scheduled jobs may add others meanwhile. `info --set` shows a set's annotation."""
        found = {}
        for backup in self.backups():
            detail = self.backups(f"--set={backup['label']}")[0]
            if (detail.get("annotation") or {}).get("reason", "").startswith("before-migrations"):
                found[backup["label"]] = detail
        return found

    def schema(self) -> str:
        """The database's schema as pg_dump writes it, and the row count of every table."""
        dump = self.podman(self.db, "runuser", "-u", "postgres", "--", "pg_dump", "--schema-only",
                           "-p", str(self.pg_port), "openpolicy")  # fmt: skip
        counts = self.sql(
            "select string_agg(format('%s.%s %s', schemaname, relname, n), ' ' order by schemaname, relname) from ("
            " select schemaname, relname, (xpath('/row/c/text()', query_to_xml(format("
            "'select count(*) as c from %I.%I', schemaname, relname), false, true, '')))[1]::text::int as n"
            " from pg_stat_user_tables) t"
        )
        # pg_dump since 15.14 fences its output with \restrict and \unrestrict lines of a random key.
        lines = [line for line in dump.splitlines() if not line.startswith(("\\restrict ", "\\unrestrict "))]
        return "\n".join([*lines, counts])

    def state(self) -> tuple:
        """What a run that fails before it starts may not change: Helm's revisions, the release
        sets, the database (schema, rows, and the postmaster's start: no restart)."""
        return (
            self.deploy_env.history(),
            self.deploy_env.release_sets(),
            self.schema(),
            self.sql("select pg_postmaster_start_time()"),
        )


@pytest.fixture(scope="module")
def rp(kube: Kube, cluster_vars: dict, tmp_path_factory: pytest.TempPathFactory):
    env = RestorePointEnv(tmp_path_factory.mktemp("restore-point-env"), kube, cluster_vars)
    yield env
    env.remove()


@pytest.fixture(scope="module")
def platform(rp: RestorePointEnv):
    result = rp.play(*rp.PROVISION_AND_DEPLOY)
    assert result.returncode == 0, output(result)
    assert TAKEN not in shown(result), "a first install needs no restore point"
    return rp


def test_a_restore_point_is_taken_before_a_migration(platform: RestorePointEnv):
    rp = platform
    rp.sql("create table policy.rules (id int primary key, body text)")
    rp.sql("insert into policy.rules select g, 'v1' from generate_series(1, 100) g")
    rp.before_v2 = rp.schema()
    assert rp.restore_points() == {}

    result = rp.play("deploy.yml", services="policy-service", version="1.5.0")
    assert result.returncode == 0, output(result)
    taken = rp.restore_points()
    assert len(taken) == 1, taken
    label, backup = next(iter(taken.items()))
    assert backup["type"] == "incr" and backup["annotation"]["reason"] == "before-migrations-of-policy-service", backup
    services = rp.deploy_env.release_sets()[-1]["services"]
    assert services["policy-service"]["backup_label"] == label and services["auth-service"]["backup_label"] == ""
    assert f"restore point {label} {TAKEN}" in shown(result), output(result)
    assert f"playbooks/restore.yml -e backup_set={label}" in shown(result)
    rp.label = label

    # What the migration of v2 would do (kwok runs no Job containers): change the schema and rows.
    rp.sql("alter table policy.rules add column weight int default 1")
    rp.sql("update policy.rules set body = 'v2'")
    rp.sql("insert into policy.rules select g, 'v2' from generate_series(101, 150) g")


def test_a_plain_rollback_names_the_restore_point(platform: RestorePointEnv):
    before = platform.state()
    result = platform.play("rollback.yml", "--check")
    assert result.returncode == 0, output(result)
    assert (
        f"set 2 ran migrations after restore point {platform.label}; this rollback returns the releases only. "
        "To return the database too: playbooks/rollback.yml -e restore_database=true"
    ) in shown(result), output(result)
    assert platform.state() == before


def test_rollback_with_restore_database_returns_the_data_and_the_releases(platform: RestorePointEnv):
    rp = platform
    result = rp.play("rollback.yml", restore_database="true")
    assert result.returncode == 0, output(result)
    assert rp.schema() == rp.before_v2
    assert f"database returned to restore point {rp.label}" in shown(result), output(result)
    sets = rp.deploy_env.release_sets()
    assert sets[-1]["reason"] == "rollback to set 1", sets[-1]
    assert {n: s["app_version"] for n, s in sets[-1]["services"].items()} == {
        n: s["app_version"] for n, s in sets[0]["services"].items()
    }
    assert rp.deploy_env.image_tag("policy-service") == "1.4.2"
    ready = rp.deploy_env.ready()
    assert all(have == want >= 1 for have, want in ready.values()), ready


def test_no_backup_is_taken_without_a_migration(platform: RestorePointEnv):
    before = platform.restore_points()
    result = platform.play("deploy.yml", services="api-gateway", version="1.5.0")
    assert result.returncode == 0, output(result)
    assert platform.restore_points() == before
    assert TAKEN not in shown(result)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("maybe", "preflight: restore_database: expected true or false"),
        # Set 4 (the gateway's 1.5.0) ran no migration since set 3: nothing to return the database to.
        ("true", "preflight: restore_database: no restore point is recorded after set 3 (no migration ran since)"),
    ],
    ids=["not-a-bool", "no-restore-point"],
)
def test_bad_restore_database_fails_in_one_line(platform: RestorePointEnv, value: str, expected: str):
    before = platform.state()
    result = platform.play("rollback.yml", restore_database=value)
    assert result.returncode != 0
    messages = failure_messages(result)
    assert len(messages) == 1 and messages[0].startswith(expected), output(result)
    assert platform.state() == before


def test_without_a_backup_host_a_migrating_deploy_stops_before_any_release(platform: RestorePointEnv):
    before = platform.kube.json("get", "deployment", "auth-service", "-n", NAMESPACE)["metadata"]["resourceVersion"]
    result = platform.play(
        "deploy.yml", services="auth-service", version="1.5.0", service_releases_restore_point_hosts=[]
    )
    assert result.returncode != 0
    message = failure_messages(result)[-1]
    assert message.startswith("service_releases_restore_point: auth-service run a migration"), output(result)
    after = platform.kube.json("get", "deployment", "auth-service", "-n", NAMESPACE)["metadata"]["resourceVersion"]
    assert after == before
