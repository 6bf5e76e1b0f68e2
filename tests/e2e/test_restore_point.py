"""The restore point before a migration, end to end: a copy of inventories/local with its db and
backup hosts as podman hosts (PostgreSQL 15 and pgBackRest, real), the nine services deployed on
the session's cluster.

Deploy v2 of a service with a migration hook: deploy.yml takes a backup first, its label is in
the release set, the summary and `pgbackrest info`; the test then plays the migration's part
(kwok runs no Job containers) and restore.yml -e backup_set=LABEL brings the rows back as they
were before v2. Deploy v2 of the gateway (no migration): no backup. The tests build on each
other in file order.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.e2e.deploy_env import failure_messages, shown
from tests.e2e.test_secrets import SecretsEnv, output, vault_env
from tests.e2e.unproven import not_yet_proven
from tests.helpers import Kube

pytestmark = [pytest.mark.cluster, not_yet_proven(13, "restore point before a migration, restored with restore.yml")]

NAMESPACE = "openpolicy-e2e-restore-point"
HOSTS = {"openpolicy-local-db1": "openpolicy-e2e-rp-db1", "openpolicy-local-backup1": "openpolicy-e2e-rp-backup1"}
# Ports of this module alone (a `make up` environment and the other modules keep theirs).
SSH_PORTS = {"52201": "52213", "52202": "52214"}
PG_PORT = 59452
DB, BACKUP = HOSTS.values()
# The summary's line when deploy.yml took a restore point (roles/release_set, summary).
TAKEN = "taken before the migrations (pgbackrest info"


class RestorePointEnv(SecretsEnv):
    def __init__(self, root: Path, kube: Kube, cluster_vars: dict):
        super().__init__(root, kube, cluster_vars)
        hosts = self.inventory / "hosts.yml"
        text = hosts.read_text()
        for old, new in [*HOSTS.items(), *SSH_PORTS.items()]:
            text = text.replace(old, new)
        hosts.write_text(text)
        self.host_vars = {
            "postgresql_port": PG_PORT,
            "redis_port": 59399,
            "pgbackrest_tls_server_port": "{{ 58461 if inventory_hostname in groups['backup'] else 58460 }}",
            "pgbackrest_scratch_port": 59453,
            "podman_hosts_groups": ["db", "backup"],
            "podman_hosts_environment": "e2e-restore-point",
            "openpolicy_namespace": NAMESPACE,
        }

    def play(self, playbook: str, *args: str, **extra) -> subprocess.CompletedProcess:
        return self.run(playbook, *args, **{**self.host_vars, **extra})

    def podman(self, host: str, *argv: str) -> str:
        result = subprocess.run(
            ["podman", "exec", host, *argv], env=vault_env(), text=True, capture_output=True, check=True
        )
        return result.stdout.strip()

    def sql(self, query: str) -> str:
        return self.podman(DB, "runuser", "-u", "postgres", "--", "psql", "-X", "-At", "-p", str(PG_PORT),
                           "-d", "openpolicy", "-c", query)  # fmt: skip

    def backups(self, *options: str) -> list[dict]:
        info = self.podman(BACKUP, "runuser", "-u", "pgbackrest", "--", "pgbackrest", "--stanza=openpolicy",
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

    def release_sets(self) -> list[dict]:
        items = self.kube.json("get", "configmaps", "-n", NAMESPACE, "-l", "openpolicy.dev/release-set")["items"]
        return sorted(
            ({"number": int(i["data"]["set"]), "services": json.loads(i["data"]["services.json"])} for i in items),
            key=lambda s: s["number"],
        )


@pytest.fixture(scope="module")
def rp(kube: Kube, cluster_vars: dict, tmp_path_factory: pytest.TempPathFactory):
    env = RestorePointEnv(tmp_path_factory.mktemp("restore-point-env"), kube, cluster_vars)
    yield env
    subprocess.run(["podman", "rm", "--force", "--time", "5", *HOSTS.values()], env=vault_env(), check=False)
    subprocess.run(
        ["helm", "--kubeconfig", str(kube.kubeconfig), "--kube-context", kube.context, "uninstall",
         "openpolicy-platform-e2e-restore-point", "-n", "openpolicy-system", "--wait", "--timeout", "60s"],
        env=vault_env(), capture_output=True, check=False,
    )  # fmt: skip
    kube.run("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture(scope="module")
def platform(rp: RestorePointEnv):
    # One run: hosts, PostgreSQL and Redis, pgBackRest (a first full backup), then v1 everywhere.
    result = rp.play(
        "provision_hosts.yml", "playbooks/provision_databases.yml", "playbooks/provision_backups.yml",
        "--limit", f"localhost,{DB},{BACKUP}",
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    result = rp.play("deploy.yml")
    assert result.returncode == 0, output(result)
    assert TAKEN not in shown(result), "a first install needs no restore point"
    return rp


def test_a_restore_point_is_taken_before_a_migration_and_restores(platform: RestorePointEnv):
    rp = platform
    rp.sql("create table policy.rules (id int primary key, body text)")
    rp.sql("insert into policy.rules select g, 'v1' from generate_series(1, 100) g")
    before = rp.sql("select count(*), max(body) from policy.rules")
    assert rp.restore_points() == {}

    result = rp.play("deploy.yml", services="policy-service", version="1.5.0")
    assert result.returncode == 0, output(result)
    taken = rp.restore_points()
    assert len(taken) == 1, taken
    label, backup = next(iter(taken.items()))
    assert backup["type"] == "incr" and backup["annotation"]["reason"] == "before-migrations-of-policy-service", backup
    services = rp.release_sets()[-1]["services"]
    assert services["policy-service"]["backup_label"] == label and services["auth-service"]["backup_label"] == ""
    assert f"restore point {label} {TAKEN}" in shown(result), output(result)
    assert f"playbooks/restore.yml -e backup_set={label}" in shown(result)

    # What the migration of v2 would do (kwok runs no Job containers): change the schema and rows.
    rp.sql("alter table policy.rules add column weight int default 1")
    rp.sql("update policy.rules set body = 'v2'")
    rp.sql("insert into policy.rules select g, 'v2' from generate_series(101, 150) g")

    # An environment rollback names the restore point; the database goes back with restore.yml.
    rollback = rp.play("rollback.yml")
    assert rollback.returncode == 0, output(rollback)
    assert f"ran migrations after restore point {label}; this rollback returns the releases only" in shown(rollback), (
        output(rollback)
    )
    restored = rp.play(
        "restore.yml", backup_set=label,
        pgbackrest_restore_scale_down=[{"namespace": NAMESPACE, "name": "policy-service"}],
    )  # fmt: skip
    assert restored.returncode == 0, output(restored)
    assert rp.sql("select count(*), max(body) from policy.rules") == before
    columns = rp.sql("select column_name from information_schema.columns where table_name = 'rules' order by 1")
    assert columns.split() == ["body", "id"]
    ready = rp.kube.json("get", "deployment", "policy-service", "-n", NAMESPACE)["status"].get("readyReplicas", 0)
    assert ready >= 1


def test_no_backup_is_taken_without_a_migration(platform: RestorePointEnv):
    before = platform.restore_points()
    result = platform.play("deploy.yml", services="api-gateway", version="1.5.0")
    assert result.returncode == 0, output(result)
    assert platform.restore_points() == before
    assert TAKEN not in shown(result)


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
