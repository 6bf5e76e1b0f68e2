"""Helpers the pytest suites share: running playbooks and kubectl the way an operator does."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The restore plan's warning when the primary's current WAL did not reach the repository
# (roles/pgbackrest/tasks/restore_plan.yml): the restore then goes on to the end of the archive.
WAL_NOT_PUSHED = "did not reach the repository"
RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


def test_vault_password() -> Path:
    """The tests' throwaway vault password (outside git, 0600): it encrypts the vaults they write."""
    path = Path(tempfile.gettempdir()) / f"openpolicy-tests-vault-password-{os.getuid()}"
    if not path.exists():
        # O_EXCL: of two pytest workers that get here at once, one writes and the other keeps it.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def vault_identities() -> str:
    """ANSIBLE_VAULT_IDENTITY_LIST of a test run: the tests' password first (it encrypts), and the
    local environment's when `make up` made one, since inventories/local then loads its vault.yml."""
    ids = [f"tests@{test_vault_password()}"]
    local = REPO / ".local" / "vault-password"
    if local.exists():
        ids.append(f"local@{local}")
    return ",".join(ids)


def toolchain_env(**extra: str) -> dict[str, str]:
    """The environment `make` gives every command: pinned tools first on PATH."""
    toolchain = REPO / ".toolchain"
    env = dict(os.environ)
    env["PATH"] = f"{toolchain / 'bin'}:{toolchain / 'venv' / 'bin'}:{env.get('PATH', '')}"
    env["ANSIBLE_CONFIG"] = str(REPO / "ansible.cfg")
    env.setdefault("CONTAINERS_CONF", str(REPO / "images" / "containers.conf"))
    # Vault passwords of the tests, never the operator's: make exports the local one for ENV=local.
    env.pop("ANSIBLE_VAULT_PASSWORD_FILE", None)
    env["ANSIBLE_VAULT_IDENTITY_LIST"] = vault_identities()
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env.update(extra)
    return env


def run_playbook(
    playbook: str, *args: str, inventory: str = "inventories/local", extra_vars: dict | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    cmd = ["ansible-playbook", "-i", inventory, f"playbooks/{playbook}", *args]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    return subprocess.run(
        cmd, cwd=REPO, env=toolchain_env(), text=True, capture_output=True, timeout=timeout, check=False
    )


def recap(result: subprocess.CompletedProcess) -> dict[str, dict[str, int]]:
    """PLAY RECAP counts per host, e.g. {'localhost': {'ok': 5, 'changed': 0, ...}}."""
    return {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"} for m in RECAP.finditer(result.stdout)
    }


def failure_messages(result: subprocess.CompletedProcess) -> list[str]:
    """The message of each failed task, from ansible-core's one-line `[ERROR]: Task failed:` report."""
    text = result.stdout + "\n" + result.stderr
    return [m.strip() for m in re.findall(r"^\[ERROR\]: Task failed: (?:Action failed: )?(.+)$", text, re.MULTILINE)]


def load_plugin(kind: str, name: str):
    """Import a plugin of the collection (plugins/<kind>/<name>.py) by its collection path, as
    Ansible does: ansible_collections.openpolicy.deploy resolves through .collections/ (the
    link to this checkout that pyproject.toml puts on the tests' path)."""
    import importlib

    return importlib.import_module(f"ansible_collections.openpolicy.deploy.plugins.{kind}.{name}")


def load_filter_plugin(name: str):
    """Import a filter plugin module of plugins/filter."""
    return load_plugin("filter", name)


class Kube:
    """kubectl against one kubeconfig and context."""

    def __init__(self, kubeconfig: Path, context: str):
        self.kubeconfig = kubeconfig
        self.context = context

    def run(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["kubectl", "--kubeconfig", str(self.kubeconfig), "--context", self.context, *args]
        result = subprocess.run(cmd, input=stdin, env=toolchain_env(), text=True, capture_output=True, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed: {result.stderr.strip()}")
        return result

    def with_token(self, token: str, path: Path) -> Kube:
        """A Kube that authenticates with a bearer token only (no admin client certificate)."""
        raw = json.loads(self.run("config", "view", "--minify", "--raw", "-o", "json").stdout)
        cluster = raw["clusters"][0]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "token",
            "clusters": [cluster],
            "users": [{"name": "token", "user": {"token": token}}],
            "contexts": [{"name": "token", "context": {"cluster": cluster["name"], "user": "token"}}],
        }
        path.write_text(json.dumps(config))
        path.chmod(0o600)
        return Kube(path, "token")

    def json(self, *args: str) -> dict:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: dict | list, namespace: str | None = None) -> None:
        items = manifest if isinstance(manifest, list) else [manifest]
        extra = ["-n", namespace] if namespace else []
        self.run("apply", *extra, "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def wait_for(self, predicate, timeout: float = 60, interval: float = 0.5, what: str = "condition"):
        """Poll until predicate() returns something truthy; return it or fail naming `what`."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(interval)
