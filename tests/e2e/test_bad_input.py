"""Bad settings fail in the preflight with one line naming the setting; nothing starts."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.topology import inventory_hosts
from tests.helpers import REPO, failure_messages, run_playbook, toolchain_env

CASES = {
    "unknown provider": ({"k8s_cluster_provider": "gke"}, "k8s_cluster_provider"),
    "zero nodes": ({"k8s_cluster_nodes": 0}, "k8s_cluster_nodes"),
    "nodes not a number": ({"k8s_cluster_nodes": "abc"}, "k8s_cluster_nodes"),
    "too many nodes": ({"k8s_cluster_nodes": 5000}, "k8s_cluster_nodes"),
    "bad cluster name": ({"k8s_cluster_name": "Open_Policy"}, "k8s_cluster_name"),
    "existing without kubeconfig": (
        {"k8s_cluster_provider": "existing", "k8s_cluster_kubeconfig": "/nonexistent/kubeconfig"},
        "k8s_cluster_kubeconfig",
    ),
    "unknown host flavor": ({"podman_host_flavor": "ubuntu"}, "podman_host_flavor"),
    # More cases, pure Python, in tests/unit/test_inputs.py; these prove nothing starts.
    "typo in a service's settings": (
        {"service_releases_service_settings": {"auth-service": {"replicsa": 3}}},
        "service_releases_service_settings.auth-service.replicsa",
    ),
    "services of commas only": ({"services": ",,,"}, "services"),
    "nodes spelled out": ({"k8s_cluster_nodes": "three"}, "k8s_cluster_nodes"),
}


# The containers this run could start: one per host of the local inventory, named after it.
# Other modules (and other checkouts) start and remove containers of their own meanwhile.
LOCAL_HOSTS = set(inventory_hosts(REPO / "inventories" / "local" / "hosts.yml"))


def podman_containers() -> list[str]:
    result = subprocess.run(
        ["podman", "ps", "-a", "--format", "json"], env=toolchain_env(), text=True, capture_output=True, check=False
    )
    if result.returncode != 0:
        return []
    return sorted(name for c in json.loads(result.stdout or "[]") if (name := c["Names"][0]) in LOCAL_HOSTS)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_setting_fails_before_anything_starts(case: str, tmp_path):
    extra, setting = CASES[case]
    state = tmp_path / "state"
    before = podman_containers()
    result = run_playbook(
        "site.yml",
        extra_vars={
            "k8s_cluster_name": "openpolicy-badinput",
            "k8s_cluster_workdir": str(state / "cluster"),
            "k8s_cluster_kubeconfig": str(state / "kubeconfig"),
            # The secrets come first (roles/secrets): into a vault of the test's, never inventories/local's.
            "secrets_vault_file": str(tmp_path / "vault.yml"),
            **extra,
        },
    )
    assert result.returncode != 0, result.stdout[-2000:]
    messages = [m for m in failure_messages(result) if m.startswith(("preflight:", setting))]
    assert messages, result.stdout[-3000:]
    final = messages[-1]
    assert setting in final, final
    assert "\\n" not in final and "\n" not in final, f"not one line: {final!r}"
    assert not state.exists(), "the cluster must not have been started"
    assert podman_containers() == before, "no podman host may have been started"
    assert (REPO / "playbooks" / "site.yml").exists()
