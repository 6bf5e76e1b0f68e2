"""An environment of the nine services in its own namespace of the session's cluster, driven
the way an operator drives it: deploy.yml and rollback.yml against inventories/local.

Each test module that deploys makes one (its own namespace and baseline release) and removes
it at the end, so modules do not depend on each other.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import Kube, failure_messages, recap, run_playbook, toolchain_env

SERVICES = (
    "api-gateway",
    "auth-service",
    "config-service",
    "policy-service",
    "search-service",
    "notification-service",
    "health-service",
    "etl-service",
    "scraper-service",
)
# What may not change when a run fails before it starts: every kind the releases create.
KINDS = "deploy,rs,pods,svc,cm,secrets,sa,netpol,jobs,cronjobs,pdb,ingress,hpa"
FAILED_UPGRADE = re.compile(
    r"service (?P<service>\S+): revision (?P<failed>\d+) failed, revision (?P<serving>\d+) is serving"
    r" \((?P<how>[^)]*)\): (?P<why>.+)$"
)


@dataclass
class DeployEnv:
    kube: Kube
    cluster_vars: dict
    namespace: str
    credentials: Path
    runs: list[subprocess.CompletedProcess] = field(default_factory=list)

    @property
    def base_vars(self) -> dict:
        return {
            **self.cluster_vars,
            "openpolicy_namespace": self.namespace,
            "service_releases_credentials_dir": str(self.credentials),
            # The tests' own vault, encrypted with their throwaway password (tests/helpers.py).
            "secrets_vault_file": str(self.credentials / "vault.yml"),
            # No backup host runs for these modules; test_restore_point.py starts one and takes it.
            "service_releases_restore_point": False,
        }

    def playbook(
        self, name: str, *args: str, inventory: str = "inventories/local", **extra
    ) -> subprocess.CompletedProcess:
        result = run_playbook(name, *args, inventory=inventory, extra_vars={**self.base_vars, **extra})
        self.runs.append(result)
        return result

    def deploy(self, *args: str, **extra) -> subprocess.CompletedProcess:
        return self.playbook("deploy.yml", *args, **extra)

    def rollback(self, *args: str, **extra) -> subprocess.CompletedProcess:
        return self.playbook("rollback.yml", *args, **extra)

    @property
    def baseline_release(self) -> str:
        return "openpolicy-platform-" + self.namespace.removeprefix("openpolicy-")

    def helm(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["helm", "--kubeconfig", str(self.kube.kubeconfig), "--kube-context", self.kube.context, *args],
            text=True,
            capture_output=True,
            check=False,
            env=toolchain_env(),
        )

    def history(self) -> dict[str, list[tuple[int, str]]]:
        """Helm's history of every release in the namespace, from its release records."""
        secrets = self.kube.json("get", "secrets", "-n", self.namespace, "-l", "owner=helm")["items"]
        out: dict[str, list[tuple[int, str]]] = {}
        for secret in secrets:
            labels = secret["metadata"]["labels"]
            out.setdefault(labels["name"], []).append((int(labels["version"]), labels["status"]))
        return {name: sorted(entries) for name, entries in sorted(out.items())}

    def serving(self) -> dict[str, int]:
        """The deployed revision of every release."""
        return {
            name: max(rev for rev, status in entries if status == "deployed")
            for name, entries in self.history().items()
            if any(status == "deployed" for _, status in entries)
        }

    def descriptions(self, service: str) -> dict[int, str]:
        result = self.helm("history", service, "-n", self.namespace, "-o", "json")
        assert result.returncode == 0, result.stderr
        return {int(e["revision"]): e["description"] for e in json.loads(result.stdout)}

    def resource_versions(self) -> dict[str, str]:
        """Every object of the namespace (and the baseline's records) with its resourceVersion."""
        items = self.kube.json("get", KINDS, "-n", self.namespace)["items"]
        items += self.kube.json("get", "secrets", "-n", "openpolicy-system", "-l", f"name={self.baseline_release}")[
            "items"
        ]
        return {f"{i['kind']}/{i['metadata']['name']}": i["metadata"]["resourceVersion"] for i in items}

    def snapshot(self) -> tuple[dict, dict]:
        return self.history(), self.resource_versions()

    def settled_snapshot(self, quiet: float = 3.0, timeout: float = 90.0) -> tuple[dict, dict]:
        """The snapshot once nothing in the namespace has changed for `quiet` seconds: after a
        rollback the controllers and kwok still scale down and delete the replaced pods for a
        while, and a no-op proof taken in the middle of that would blame the rerun for them."""
        last: list = []

        def unchanged_since_the_last_look():
            current = self.snapshot()
            settled = last == [current]
            last[:] = [current]
            return current if settled else None

        what = f"the namespace {self.namespace} to settle"
        return self.kube.wait_for(unchanged_since_the_last_look, timeout=timeout, interval=quiet, what=what)

    def release_sets(self) -> list[dict]:
        items = self.kube.json("get", "configmaps", "-n", self.namespace, "-l", "openpolicy.dev/release-set")["items"]
        sets = [
            {
                "number": int(i["data"]["set"]),
                "previous": int(i["data"]["previous"]),
                "reason": i["data"]["reason"],
                "services": json.loads(i["data"]["services.json"]),
            }
            for i in items
        ]
        return sorted(sets, key=lambda s: s["number"])

    def image_tag(self, service: str) -> str:
        deployment = self.kube.json("get", "deployment", service, "-n", self.namespace)
        return deployment["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]

    def ready(self) -> dict[str, tuple[int, int]]:
        items = self.kube.json("get", "deployments", "-n", self.namespace)["items"]
        return {d["metadata"]["name"]: (d["status"].get("readyReplicas", 0), d["spec"]["replicas"]) for d in items}

    def remove(self) -> None:
        self.helm("uninstall", self.baseline_release, "-n", "openpolicy-system", "--wait", "--timeout", "60s")
        self.kube.run("delete", "namespace", self.namespace, "--ignore-not-found", "--wait=false", check=False)


def shown(result: subprocess.CompletedProcess) -> str:
    """The run's output with white space folded: a debug message as one line, however the YAML
    result format wrapped and quoted it."""
    return " ".join(result.stdout.replace("'", " ").split())


def output(result: subprocess.CompletedProcess) -> str:
    return result.stdout[-4000:] + result.stderr[-2000:]


def release_hosts_changed(result: subprocess.CompletedProcess) -> dict[str, int]:
    return {host: counts["changed"] for host, counts in recap(result).items()}


__all__ = ["FAILED_UPGRADE", "SERVICES", "DeployEnv", "failure_messages", "output", "release_hosts_changed", "shown"]
