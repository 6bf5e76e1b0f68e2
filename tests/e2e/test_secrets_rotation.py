"""playbooks/rotate_secrets.yml end to end: a podman db host of the module's own (roles/podman_hosts,
roles/postgresql, roles/redis on 59432/59379, so a `make up` environment on 5432/6379 is left
alone), the services deployed on the session's cluster, then each kind rotated while a watcher
checks the Deployments never have fewer available pods than the rolling update allows.

The tests of this module build on each other in file order.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.test_secrets import SecretsEnv, output, vault_env
from tests.helpers import Kube

pytestmark = pytest.mark.cluster

DB_HOST = "openpolicy-e2e-secrets-db1"
PG_PORT = 59432
REDIS_PORT = 59379
SSH_PORT = 52209
# Not test_secrets.py's namespace: that one may still be terminating when this module starts.
NAMESPACE = "openpolicy-e2e-rotation"


class RotationEnv(SecretsEnv):
    def __init__(self, root: Path, kube: Kube, cluster_vars: dict):
        super().__init__(root, kube, cluster_vars)
        hosts = self.inventory / "hosts.yml"
        # A host and SSH port of its own: a `make up` environment's db host keeps 52201.
        hosts.write_text(hosts.read_text().replace("openpolicy-local-db1", DB_HOST).replace("52201", str(SSH_PORT)))
        self.db_vars = {
            "postgresql_port": PG_PORT,
            "redis_port": REDIS_PORT,
            "podman_hosts_groups": ["db"],
            "podman_hosts_environment": "e2e-secrets",
            # No backup host here: nothing to ask before PostgreSQL starts (roles/postgresql guard.yml).
            "postgresql_backup_repo_host": "",
        }

    def play(self, playbook: str, *args: str, hosts_only: bool = False, **extra) -> subprocess.CompletedProcess:
        """A playbook run; hosts_only limits it to the control and db hosts (the inventory's
        backup host is not started here). Not for deploys: their release hosts are added at run time."""
        extra = {**self.db_vars, "openpolicy_namespace": NAMESPACE, **extra}
        limit = ["--limit", f"localhost,{DB_HOST}"] if hosts_only else []
        return self.run(playbook, *args, *limit, **extra)

    def psql_login(self, role: str, password: str) -> subprocess.CompletedProcess:
        conninfo = f"host=127.0.0.1 port={PG_PORT} dbname=openpolicy user={role} sslmode=require connect_timeout=10"
        return subprocess.run(
            ["psql", "-X", "-w", "-tA", conninfo, "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()"],
            env={**os.environ, "PGPASSWORD": password},
            text=True,
            capture_output=True,
            check=False,
        )

    def redis_ping(self, user: str, password: str) -> str:
        return subprocess.run(
            ["redis-cli", "-h", "127.0.0.1", "-p", str(REDIS_PORT), "--user", user, "--no-auth-warning", "PING"],
            env={**os.environ, "REDISCLI_AUTH": password},
            text=True,
            capture_output=True,
            check=False,
        ).stdout.strip()

    def revision(self, service: str) -> int:
        """The latest Helm revision of a release, from its release records."""
        records = self.kube.json("get", "secrets", "-n", NAMESPACE, "-l", f"owner=helm,name={service}")["items"]
        return max(int(r["metadata"]["labels"]["version"]) for r in records)

    def secret_data(self, service: str) -> dict[str, str]:
        secret = self.kube.json("get", "secret", f"{service}-secrets", "-n", NAMESPACE)
        return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


class Watcher:
    """Polls every Deployment of the namespace while a rotation runs: the fewest available pods
    seen per Deployment, against what its rolling update allows (replicas - maxUnavailable)."""

    def __init__(self, kube: Kube):
        self.kube = kube
        self.lowest: dict[str, int] = {}
        self.allowed: dict[str, int] = {}
        self.polls = 0
        # The most public keys auth-service's Secret offered at once (2 during a JWT overlap).
        self.most_public_keys = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            result = self.kube.run("get", "deployments", "-n", NAMESPACE, "-o", "json", check=False)
            if result.returncode == 0:
                for d in json.loads(result.stdout)["items"]:
                    name = d["metadata"]["name"]
                    replicas = d["spec"]["replicas"]
                    unavailable = d["spec"]["strategy"].get("rollingUpdate", {}).get("maxUnavailable", 0)
                    if isinstance(unavailable, str):
                        unavailable = int(replicas * int(unavailable.rstrip("%")) / 100)
                    self.allowed[name] = replicas - unavailable
                    available = d["status"].get("availableReplicas", 0)
                    self.lowest[name] = min(self.lowest.get(name, available), available)
                self.polls += 1
            secret = self.kube.run("get", "secret", "auth-service-secrets", "-n", NAMESPACE, "-o", "json", check=False)
            if secret.returncode == 0:
                keys = base64.b64decode(json.loads(secret.stdout)["data"]["jwt_public_keys"]).decode()
                self.most_public_keys = max(self.most_public_keys, keys.count("BEGIN PUBLIC KEY"))
            time.sleep(0.3)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def violations(self) -> dict[str, tuple[int, int]]:
        return {n: (low, self.allowed[n]) for n, low in self.lowest.items() if low < self.allowed[n]}


@pytest.fixture(scope="module")
def renv(kube: Kube, cluster_vars: dict, tmp_path_factory: pytest.TempPathFactory):
    env = RotationEnv(tmp_path_factory.mktemp("rotation-env"), kube, cluster_vars)
    yield env
    podman = ["podman", "rm", "--force", "--time", "5", DB_HOST]
    subprocess.run(podman, env=vault_env(), capture_output=True, check=False)
    subprocess.run(
        ["helm", "--kubeconfig", str(kube.kubeconfig), "--kube-context", kube.context, "uninstall",
         "openpolicy-platform-e2e-rotation", "-n", "openpolicy-system", "--wait", "--timeout", "60s"],
        env=vault_env(), capture_output=True, check=False,
    )  # fmt: skip
    kube.run("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture(scope="module")
def platform(renv: RotationEnv):
    # One ansible-playbook run of both playbooks: one start-up, one preflight.
    result = renv.play("provision_hosts.yml", "playbooks/provision_databases.yml", hosts_only=True)
    assert result.returncode == 0, output(result)
    result = renv.play("deploy.yml")
    assert result.returncode == 0, output(result)
    assert renv.revision("auth-service") == 1
    return renv


def rotate(renv: RotationEnv, kind: str, service: str) -> tuple[subprocess.CompletedProcess, Watcher, dict, dict]:
    before = renv.values()
    with Watcher(renv.kube) as watcher:
        result = renv.play("rotate_secrets.yml", kind=kind, service=service)
    assert result.returncode == 0, output(result)
    assert watcher.polls > 3
    assert len(watcher.lowest) == 9, f"the watcher saw {sorted(watcher.lowest)}"
    assert not watcher.violations(), f"pods unready beyond the rolling update: {watcher.violations()}"
    return result, watcher, before, renv.values()


def test_database_password_rotation(platform: RotationEnv):
    old_secret = platform.secret_data("auth-service")["database_url"]
    result, _, before, after = rotate(platform, "database_password", "auth-service")
    old, new = before["vault_database_passwords"]["auth-service"], after["vault_database_passwords"]["auth-service"]
    assert old != new
    assert {k: v for k, v in after["vault_database_passwords"].items() if k != "auth-service"} == {
        k: v for k, v in before["vault_database_passwords"].items() if k != "auth-service"
    }
    login = platform.psql_login("auth", new)
    assert login.returncode == 0 and login.stdout.strip() == "t", login.stderr
    refused = platform.psql_login("auth", old)
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr
    assert platform.psql_login("policy", after["vault_database_passwords"]["policy-service"]).returncode == 0
    database_url = platform.secret_data("auth-service")["database_url"]
    assert new in database_url and database_url != old_secret
    assert "new passwords log in over TLS, old ones are refused: auth" in result.stdout
    assert new not in result.stdout + result.stderr and old not in result.stdout + result.stderr


def test_redis_password_rotation_for_all(platform: RotationEnv):
    result, _, before, after = rotate(platform, "redis_password", "all")
    for service, new in after["vault_redis_passwords"].items():
        user = service.replace("-", "_")
        assert new != before["vault_redis_passwords"][service]
        assert platform.redis_ping(user, new) == "PONG", service
        assert platform.redis_ping(user, before["vault_redis_passwords"][service]) != "PONG", service
    assert after["vault_redis_passwords"]["auth-service"] in platform.secret_data("auth-service")["redis_url"]
    assert "new Redis passwords accepted, old ones refused" in result.stdout


def test_jwt_signing_key_rotation_with_overlap(platform: RotationEnv):
    revision = platform.revision("auth-service")
    _, watcher, before, after = rotate(platform, "jwt_signing_key", "all")
    assert after["vault_jwt_signing_key"] != before["vault_jwt_signing_key"]
    assert after["vault_jwt_previous_public_key"] == ""
    data = platform.secret_data("auth-service")
    assert data["jwt_signing_key"] == after["vault_jwt_signing_key"]
    assert data["jwt_public_keys"] == after["vault_jwt_public_key"]
    # The overlap: between the two rollouts the Secret offered the new and the previous public key.
    assert watcher.most_public_keys == 2
    assert platform.revision("auth-service") == revision + 2, "two rollouts: with both keys, then with the new one"


def test_unknown_service_fails_in_one_line(platform: RotationEnv):
    before = platform.vault.read_bytes()
    result = platform.play("rotate_secrets.yml", kind="database_password", service="api-gateway")
    assert result.returncode != 0
    assert "service: api-gateway has no database_password to rotate; one of: all, auth-service" in result.stdout
    assert platform.vault.read_bytes() == before
